//! Loading certificate chains and keys from PEM files, with the checks an operator wants at
//! load time: the key must match the certificate, and an expired certificate is reported.

use std::path::Path;
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

/// All certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
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
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let chain = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no private key found in {}", key_path.display())
        }
        other => format!("cannot read private key {}: {other}", key_path.display()),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key {}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(format!(
                "private key {} does not match certificate {}",
                key_path.display(),
                cert_path.display()
            ));
        }
    }
    let (found, not_after) = cert_names(&chain[0]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expired = not_after.filter(|t| *t < now).map(|t| {
        format!(
            "certificate {} expired {} days ago",
            cert_path.display(),
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
