//! TLS with rustls on the aws-lc-rs provider: server configurations for binds (several
//! certificates chosen by SNI, resumption with tickets and a session cache, ALPN for
//! HTTP/2), and client configurations for TLS to servers.

pub mod certs;
pub mod client_cert;
pub mod ocsp;
pub mod records;
pub mod stream;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rampart_config::model::{BindTls, ClientVerify, TlsVersion, UpstreamTls as UpstreamTlsConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

pub use certs::LoadedCert;

/// The crypto provider every TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

/// Values by server name: exact names, wildcards one label deep, and a default (the
/// first entry).
#[derive(Debug)]
pub struct SniMap<T> {
    exact: HashMap<String, T>,
    wildcard: HashMap<String, T>,
    default: T,
}

impl<T: Clone> SniMap<T> {
    /// Entries are (names, value); for a name listed twice the first entry wins.
    pub fn new(entries: Vec<(Vec<String>, T)>) -> Option<Self> {
        let default = entries.first()?.1.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (names, v) in entries {
            for n in names {
                let n = n.to_ascii_lowercase();
                match n.strip_prefix("*.") {
                    Some(rest) => {
                        wildcard.entry(rest.to_owned()).or_insert_with(|| v.clone());
                    }
                    None => {
                        exact.entry(n).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    pub fn lookup(&self, sni: Option<&str>) -> &T {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(v) = self.exact.get(&name) {
                return v;
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(v) = self.wildcard.get(parent)
            {
                return v;
            }
        }
        &self.default
    }
}

/// Chooses the certificate for a TLS handshake by SNI.
#[derive(Debug)]
pub struct SniResolver(SniMap<Arc<CertifiedKey>>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lookup(hello.server_name()).clone())
    }
}

/// A problem with a bind's TLS: the index of the certificate it concerns, if one.
pub type TlsError = (Option<usize>, String);

/// A certificate a bind serves, as `show ssl cert` and the metrics tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The file as written in the configuration (`(inline PEM)` for PEM text).
    pub file: String,
    /// The certificate's own DNS names (or common name).
    pub names: Vec<String>,
    /// When it expires (Unix seconds).
    pub not_after: Option<i64>,
    /// The leaf certificate.
    pub leaf: Option<CertificateDer<'static>>,
    /// The OCSP response stapled, if any.
    pub ocsp: Option<ocsp::OcspInfo>,
}

/// A bind's TLS: its configuration, warnings (certificates that expire soon, or expired
/// ones served because `allow_expired` says so) and its certificates.
pub type ServerTls = (Arc<rustls::ServerConfig>, Vec<String>, Vec<CertInfo>);

/// Builds the server configuration of a TLS bind. Certificate files are relative to
/// `base`. An expired certificate is refused unless `allow_expired`.
pub fn server_config(
    tls: &BindTls,
    base: &Path,
    h2: bool,
    loader: &mut certs::Loader,
) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let mut loaded = Vec::new();
    let mut warnings = Vec::new();
    let mut infos = Vec::new();
    let now = certs::now();
    for (i, c) in tls.certificates.iter().enumerate() {
        let cert_path = certs::Pem::of(&c.cert.value, base);
        let key_path = c
            .key
            .as_ref()
            .map_or_else(|| cert_path.clone(), |k| certs::Pem::of(&k.value, base));
        let mut l = loader
            .load(&cert_path, &key_path, &c.names, &provider)
            .map_err(|e| (Some(i), e))?;
        let stapled =
            staple(&mut l, &cert_path, loader, now, &mut warnings).map_err(|e| (Some(i), e))?;
        if let Some(t) = l.not_after {
            let left = t - now;
            if left < 0 && !tls.allow_expired {
                return Err((
                    Some(i),
                    format!(
                        "certificate {cert_path} expired {} days ago ({}); refused \
                         (tls.allow_expired: true serves it anyway)",
                        -left / 86400,
                        certs::gmt(t)
                    ),
                ));
            } else if left < 0 {
                warnings.push(format!(
                    "certificate {cert_path} expired {} days ago ({}), served because \
                     tls.allow_expired is set",
                    -left / 86400,
                    certs::gmt(t)
                ));
            } else if (left as u64) < tls.expiry_warning.as_secs() {
                warnings.push(format!(
                    "certificate {cert_path} expires in {} days ({})",
                    left / 86400,
                    certs::gmt(t)
                ));
            }
        }
        infos.push(CertInfo {
            file: match &cert_path {
                certs::Pem::File(_) => c.cert.value.clone(),
                certs::Pem::Inline(_) => "(inline PEM)".to_owned(),
            },
            names: l.own_names.clone(),
            not_after: l.not_after,
            leaf: l.key.cert.first().cloned(),
            ocsp: stapled,
        });
        loaded.push(l);
    }
    let resolver = SniMap::new(loaded.into_iter().map(|l| (l.names, l.key)).collect())
        .map(SniResolver)
        .ok_or((None, "TLS needs at least one certificate".to_owned()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(tls.min_version, tls.max_version))
        .map_err(|e| (None, format!("TLS versions: {e}")))?;
    let builder = match client_verifier(tls, base, loader, provider)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = tls
        .alpn
        .iter()
        .filter(|p| h2 || p.as_str() != "h2")
        .map(|p| p.as_bytes().to_vec())
        .collect();
    cfg.ignore_client_order = true;
    if tls.session_tickets {
        cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| (None, format!("session tickets: {e}")))?;
    }
    if tls.session_cache > 0 {
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(tls.session_cache);
    } else {
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    if !tls.session_tickets && tls.session_cache == 0 {
        cfg.send_tls13_tickets = 0;
    }
    stream::prepare(&mut cfg);
    Ok((Arc::new(cfg), warnings, infos))
}

/// Staples the OCSP response found next to a certificate file (`<file>.ocsp`, DER), after
/// checking it is a successful response about this certificate. An expired response is
/// left out with a warning; one that expires within a day, or says the certificate is
/// revoked, is warned about.
fn staple(
    l: &mut certs::LoadedCert,
    cert_path: &certs::Pem<'_>,
    loader: &mut certs::Loader,
    now: i64,
    warnings: &mut Vec<String>,
) -> Result<Option<ocsp::OcspInfo>, String> {
    let certs::Pem::File(p) = cert_path else {
        return Ok(None);
    };
    let mut path = p.clone().into_os_string();
    path.push(".ocsp");
    let path = std::path::PathBuf::from(path);
    let Some(der) = loader.optional(&path, "OCSP response")? else {
        return Ok(None);
    };
    let info = ocsp::parse(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    let serial = l
        .key
        .cert
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.raw_serial().to_vec())
        .unwrap_or_default();
    let trim = |b: &[u8]| {
        b.iter()
            .skip_while(|x| **x == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    if trim(&serial) != trim(&info.serial) {
        return Err(format!(
            "OCSP response {} is about another certificate (serial {}) than {cert_path} (serial {})",
            path.display(),
            hex(&info.serial),
            hex(&serial)
        ));
    }
    if info.status == ocsp::CertStatus::Revoked {
        warnings.push(format!(
            "OCSP response {} says certificate {cert_path} is revoked",
            path.display()
        ));
    }
    if let Some(next) = info.next_update {
        if next <= now {
            warnings.push(format!(
                "OCSP response {} expired on {}; not stapled",
                path.display(),
                certs::gmt(next)
            ));
            return Ok(None);
        }
        if next - now < 86400 {
            warnings.push(format!(
                "OCSP response {} expires in {} hours ({}); refresh it",
                path.display(),
                (next - now) / 3600,
                certs::gmt(next)
            ));
        }
    }
    let mut key = (*l.key).clone();
    key.ocsp = Some(der.to_vec());
    l.key = Arc::new(key);
    Ok(Some(info))
}

/// Upper-case hexadecimal.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The verifier of client certificates a bind with `verify: optional|required` uses:
/// chains to its `ca`, not revoked by its `crl`.
fn client_verifier(
    tls: &BindTls,
    base: &Path,
    loader: &mut certs::Loader,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    if tls.verify == ClientVerify::None {
        return Ok(None);
    }
    let Some(ca) = &tls.ca else {
        return Err((None, "verify needs ca".to_owned()));
    };
    let path = certs::Pem::of(&ca.value, base);
    let mut roots = rustls::RootCertStore::empty();
    for c in loader.certs(&path).map_err(|e| (None, e))? {
        roots
            .add(c)
            .map_err(|e| (None, format!("CA certificate in {path}: {e}")))?;
    }
    let mut b =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crl) = &tls.crl {
        let path = certs::Pem::of(&crl.value, base);
        b = b.with_crls(loader.crls(&path).map_err(|e| (None, e))?);
    }
    if tls.verify == ClientVerify::Optional {
        b = b.allow_unauthenticated();
    }
    b.build()
        .map(Some)
        .map_err(|e| (None, format!("client certificate verification: {e}")))
}

/// Accepts any server certificate (`verify: false`).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate chain and key a backend presents to servers that ask (`tls.cert`),
/// checked as a bind's certificates are.
#[allow(clippy::type_complexity)]
fn client_identity(
    t: &UpstreamTlsConfig,
    base: &Path,
    loader: &mut certs::Loader,
    provider: &Arc<CryptoProvider>,
) -> Result<
    Option<(
        Vec<CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    String,
> {
    let Some(cert) = &t.cert else {
        if t.key.is_some() {
            return Err("tls.key needs tls.cert: the client certificate it goes with".into());
        }
        return Ok(None);
    };
    let cert_path = certs::Pem::of(&cert.value, base);
    let key_path = t
        .key
        .as_ref()
        .map_or_else(|| cert_path.clone(), |k| certs::Pem::of(&k.value, base));
    let l = loader.load(&cert_path, &key_path, &[], provider)?;
    let key = loader.key(&key_path)?;
    Ok(Some((l.key.cert.clone(), key)))
}

/// Builds the client configuration for TLS to a backend's servers.
pub fn client_config(
    t: &UpstreamTlsConfig,
    base: &Path,
    h2: bool,
    loader: &mut certs::Loader,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut cfg = if t.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &t.ca {
            Some(ca) => {
                let path = certs::Pem::of(&ca.value, base);
                for c in loader.certs(&path)? {
                    roots.add(c).map_err(|e| format!("{path}: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let b = builder.with_root_certificates(roots);
        match client_identity(t, base, loader, &provider)? {
            Some((chain, key)) => b
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?,
            None => b.with_no_client_auth(),
        }
    } else {
        let b = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())));
        match client_identity(t, base, loader, &provider)? {
            Some((chain, key)) => b
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?,
            None => b.with_no_client_auth(),
        }
    };
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_lookup_exact_wildcard_and_default() {
        let m = SniMap::new(vec![
            (vec!["one.test".to_owned()], 1),
            (vec!["Two.Test".to_owned(), "*.wild.test".to_owned()], 2),
            (vec!["one.test".to_owned()], 3),
        ])
        .unwrap();
        assert_eq!(
            *m.lookup(Some("one.test")),
            1,
            "the first certificate for a name wins"
        );
        assert_eq!(*m.lookup(Some("TWO.test")), 2);
        assert_eq!(*m.lookup(Some("a.wild.test")), 2);
        assert_eq!(
            *m.lookup(Some("a.b.wild.test")),
            1,
            "a wildcard covers one label"
        );
        assert_eq!(
            *m.lookup(Some("other.test")),
            1,
            "unknown names get the first certificate"
        );
        assert_eq!(*m.lookup(None), 1);
        assert!(SniMap::<u8>::new(vec![]).is_none());
    }
}
