//! Loading certificate chains and keys from PEM files (or PEM text written in the
//! configuration), with the checks an operator wants at load time: the key must match the
//! certificate, and an expired certificate is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate ready to serve.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// SNI names it serves.
    pub names: Vec<String>,
    /// A warning when the leaf certificate has expired.
    pub expired: Option<String>,
}

/// Where PEM data comes from: a file, or the text itself when a configuration value
/// starts with `-----BEGIN` (certificates an xDS control plane sends inline).
#[derive(Debug, Clone)]
pub enum Pem<'a> {
    File(PathBuf),
    Inline(&'a str),
}

impl<'a> Pem<'a> {
    /// `value` as written in the configuration; file names are relative to `base`.
    pub fn of(value: &'a str, base: &Path) -> Self {
        if value.trim_start().starts_with("-----BEGIN") {
            Pem::Inline(value)
        } else {
            Pem::File(base.join(value))
        }
    }

    fn read(&self) -> std::io::Result<std::borrow::Cow<'a, [u8]>> {
        match self {
            Pem::Inline(t) => Ok(std::borrow::Cow::Borrowed(t.as_bytes())),
            Pem::File(p) => rampart_config::limits::read_bounded_bytes(
                p,
                rampart_config::limits::MAX_PEM_FILE_BYTES,
                "PEM file",
            )
            .map(std::borrow::Cow::Owned)
            .map_err(std::io::Error::other),
        }
    }
}

impl std::fmt::Display for Pem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(p) => write!(f, "{}", p.display()),
            Pem::Inline(_) => f.write_str("(inline PEM)"),
        }
    }
}

/// All certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_certs_from(&Pem::File(path.to_path_buf()))
}

/// All certificates in PEM data.
pub fn read_certs_from(src: &Pem<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = src
        .read()
        .map_err(|e| format!("cannot read certificate file {src}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {src}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {src}"));
    }
    Ok(certs)
}

/// Names from the certificate: DNS subject alternative names, or the common name when
/// there are none.
fn cert_names(der: &[u8]) -> (Vec<String>, Option<i64>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (Vec::new(), None);
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_owned());
            }
        }
    }
    (names, Some(cert.validity().not_after.timestamp()))
}

/// Loads a chain and its key, checks they match, and reads the names and expiry.
pub fn load(
    cert_path: &Pem<'_>,
    key_path: &Pem<'_>,
    names: &[String],
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let chain = read_certs_from(cert_path)?;
    let key_data = key_path
        .read()
        .map_err(|e| format!("cannot read private key {key_path}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_data).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no private key found in {key_path}")
        }
        other => format!("cannot read private key {key_path}: {other}"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key {key_path}: {e}"))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(format!(
                "private key {key_path} does not match certificate {cert_path}"
            ));
        }
    }
    let (found, not_after) = cert_names(&chain[0]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expired = not_after.filter(|t| *t < now).map(|t| {
        format!(
            "certificate {cert_path} expired {} days ago",
            (now - t) / 86400
        )
    });
    Ok(LoadedCert {
        key: Arc::new(certified),
        names: if names.is_empty() {
            found
        } else {
            names.to_vec()
        },
        expired,
    })
}
