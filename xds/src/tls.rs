//! TLS to the control plane: its certificate checked against a CA file (or the bundled
//! public roots), and a client certificate for control planes that require one.

use std::path::Path;
use std::sync::Arc;

use rampart_config::xds::XdsTls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A file's bytes, or the value itself when it is PEM text.
fn read(base: &Path, file: &str) -> Result<Vec<u8>, String> {
    if file.trim_start().starts_with("-----BEGIN") {
        return Ok(file.as_bytes().to_vec());
    }
    let p = base.join(file);
    rampart_config::limits::read_bounded_bytes(
        &p,
        rampart_config::limits::MAX_PEM_FILE_BYTES,
        "PEM file",
    )
    .map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// The client configuration (ALPN `h2`).
pub fn client_config(t: &XdsTls, base: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca {
        Some(ca) => {
            let pem = read(base, &ca.value)?;
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("invalid CA PEM: {e}"))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.value))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("no certificate found in {}", ca.value));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut cfg = match &t.cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let pem = read(base, &cert.value)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("invalid PEM in {}: {e}", cert.value))?;
            if chain.is_empty() {
                return Err(format!("no certificate found in {}", cert.value));
            }
            let key_file = t.key.as_ref().map_or(&cert.value, |k| &k.value);
            let key_pem = read(base, key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("cannot read private key {key_file}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.value))?
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}
