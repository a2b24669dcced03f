//! What `ssl_c_*` fetches read of a client certificate, taken from it once per
//! handshake: its distinguished names in OpenSSL's one-line form (`/C=FR/O=Org/CN=name`,
//! as HAProxy prints them), their entries, its serial number, validity and digests.

use rampart_config::rules::{CertField, DnEntry};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// A client certificate, verified by the bind's verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    subject: Dn,
    issuer: Dn,
    serial: Vec<u8>,
    sha1: Vec<u8>,
    sha256: Vec<u8>,
    not_before: String,
    not_after: String,
}

/// A distinguished name: its entries in order, by short name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dn(Vec<(String, String)>);

impl Dn {
    fn of(n: &X509Name<'_>) -> Self {
        let reg = x509_parser::objects::oid_registry();
        let mut out = Vec::new();
        for rdn in n.iter() {
            for a in rdn.iter() {
                let name = x509_parser::objects::oid2abbrev(a.attr_type(), reg)
                    .map(str::to_owned)
                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = match a.as_str() {
                    Ok(v) => v.to_owned(),
                    Err(_) => String::from_utf8_lossy(a.attr_value().data).into_owned(),
                };
                out.push((name, value));
            }
        }
        Dn(out)
    }

    /// The whole name, `/C=FR/O=Org/CN=name`.
    fn line(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.0 {
            s.push('/');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }

    /// The value of `e`: its nth occurrence from the start (from the end when negative).
    fn entry(&self, e: &DnEntry) -> Option<&str> {
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&e.name))
            .map(|(_, v)| v.as_str());
        if e.occurrence > 0 {
            found.nth(usize::try_from(e.occurrence - 1).ok()?)
        } else {
            let all: Vec<&str> = found.collect();
            let back = usize::try_from(-e.occurrence).ok()?;
            all.len().checked_sub(back).map(|i| all[i])
        }
    }
}

/// `YYMMDDhhmmssZ`, as HAProxy's `ssl_c_notafter` gives it.
fn utc_short(t: x509_parser::time::ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        d.year().rem_euclid(100),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

impl ClientCert {
    /// Reads `der`; `None` when it does not parse (the verifier accepted it, so it does).
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        use aws_lc_rs::digest;
        Some(Self {
            subject: Dn::of(c.subject()),
            issuer: Dn::of(c.issuer()),
            serial: c.raw_serial().to_vec(),
            sha1: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                .as_ref()
                .to_vec(),
            sha256: digest::digest(&digest::SHA256, der).as_ref().to_vec(),
            not_before: utc_short(c.validity().not_before),
            not_after: utc_short(c.validity().not_after),
        })
    }

    /// What `field` reads: `Err` for the fields that are not text (`ssl_c_used`,
    /// `ssl_c_verify`), which the caller answers.
    pub fn text(&self, field: &CertField) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        let s = |x: &str| Some(Cow::Owned(x.as_bytes().to_vec()));
        match field {
            CertField::SubjectDn(None) => s(&self.subject.line()),
            CertField::IssuerDn(None) => s(&self.issuer.line()),
            CertField::SubjectDn(Some(e)) => self.subject.entry(e).and_then(s),
            CertField::IssuerDn(Some(e)) => self.issuer.entry(e).and_then(s),
            CertField::Serial => Some(Cow::Borrowed(&self.serial)),
            CertField::Sha1 => Some(Cow::Borrowed(&self.sha1)),
            CertField::Sha256 => Some(Cow::Borrowed(&self.sha256)),
            CertField::NotBefore => Some(Cow::Borrowed(self.not_before.as_bytes())),
            CertField::NotAfter => Some(Cow::Borrowed(self.not_after.as_bytes())),
            CertField::Used | CertField::Verify => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_entries_and_digests() {
        let mut p = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CountryName, "FR");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "a");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x02, 0x03]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let c = ClientCert::parse(cert.der()).unwrap();
        let text = |f: CertField| String::from_utf8(c.text(&f).unwrap().into_owned()).unwrap();
        assert_eq!(
            text(CertField::SubjectDn(None)),
            "/C=FR/O=Example/OU=a/CN=alice"
        );
        assert_eq!(
            text(CertField::SubjectDn(Some(DnEntry {
                name: "CN".into(),
                occurrence: 1
            }))),
            "alice"
        );
        assert_eq!(
            text(CertField::IssuerDn(Some(DnEntry {
                name: "O".into(),
                occurrence: -1
            }))),
            "Example"
        );
        assert!(
            c.text(&CertField::SubjectDn(Some(DnEntry {
                name: "CN".into(),
                occurrence: 2
            })))
            .is_none()
        );
        assert_eq!(c.text(&CertField::Serial).unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(c.text(&CertField::Sha1).unwrap().len(), 20);
        assert_eq!(c.text(&CertField::Sha256).unwrap().len(), 32);
        assert_eq!(text(CertField::NotAfter).len(), 13);
        assert!(ClientCert::parse(b"junk").is_none());
    }
}
