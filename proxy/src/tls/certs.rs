//! Loading certificate chains and keys from PEM files (or PEM text written in the
//! configuration), with the checks an operator wants at load time: the key must match the
//! certificate, and an expired certificate is reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate ready to serve.
#[derive(Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// SNI names it serves: those configured, or the certificate's own.
    pub names: Vec<String>,
    /// The leaf certificate's DNS names (or common name).
    pub own_names: Vec<String>,
    /// When the leaf certificate expires (Unix seconds), if it says.
    pub not_after: Option<i64>,
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

    /// Where the data comes from, as a key: the path, or the text itself.
    fn key(&self) -> String {
        match self {
            Pem::File(p) => format!("f{}", p.display()),
            Pem::Inline(t) => format!("i{t}"),
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

/// Certificate files replaced at run time (`set ssl cert` then `commit ssl cert`): the PEM
/// served in place of each file, while the file on disk holds what it held at the commit
/// (a file changed since is read again, and the replacement dropped).
#[derive(Default)]
pub struct Overrides(std::sync::Mutex<HashMap<PathBuf, Override>>);

struct Override {
    pem: Arc<[u8]>,
    /// The file's content when the replacement was committed.
    disk: Option<Vec<u8>>,
}

impl Overrides {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Override>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves `pem` in place of the file at `path`; returns what it replaced, to put back
    /// when the configuration with it fails.
    pub fn set(&self, path: PathBuf, pem: Arc<[u8]>) -> Option<Arc<[u8]>> {
        let disk = std::fs::read(&path).ok();
        self.lock()
            .insert(path, Override { pem, disk })
            .map(|o| o.pem)
    }

    /// Puts back what [`Overrides::set`] replaced (`None`: the file itself).
    pub fn restore(&self, path: PathBuf, previous: Option<Arc<[u8]>>) {
        match previous {
            Some(pem) => {
                self.set(path, pem);
            }
            None => {
                self.lock().remove(&path);
            }
        }
    }

    /// The replacement of `path` if there is one and the file did not change since.
    fn get(&self, path: &Path) -> Option<Arc<[u8]>> {
        let mut m = self.lock();
        let o = m.get(path)?;
        if std::fs::read(path).ok() == o.disk {
            return Some(o.pem.clone());
        }
        tracing::info!(
            "{} changed on disk since its certificate was replaced at run time: the file is served",
            path.display()
        );
        m.remove(path);
        None
    }
}

/// What one compilation loads from PEM: each file read once and each certificate loaded
/// once, however many binds and backends name them, within the bounds of
/// [`rampart_config::limits`] on PEM files and certificates.
pub struct Loader {
    files: HashMap<PathBuf, Result<Arc<[u8]>, String>>,
    overrides: Option<Arc<Overrides>>,
    /// Files served from `overrides`.
    replaced: Vec<PathBuf>,
    /// Optional files looked for and not found (watched for their arrival).
    absent: Vec<PathBuf>,
    certs: HashMap<(String, String), Result<LoadedCert, String>>,
    /// Bytes of the files read so far.
    bytes: u64,
    /// Certificates loaded so far, each by its key's cost (see [`key_cost`]).
    cost: u64,
    /// How much cost the configuration may spend.
    allowed: u64,
}

impl Loader {
    /// A loader that may spend `allowed` (a count of certificates; see
    /// [`rampart_config::validate::certificate_allowance`]).
    pub fn new(allowed: u64) -> Self {
        Self::with_overrides(allowed, None)
    }

    /// A loader that serves the certificates replaced at run time in `overrides`.
    pub fn with_overrides(allowed: u64, overrides: Option<Arc<Overrides>>) -> Self {
        Self {
            files: HashMap::new(),
            overrides,
            replaced: Vec::new(),
            absent: Vec::new(),
            certs: HashMap::new(),
            bytes: 0,
            cost: 0,
            allowed,
        }
    }

    fn read(&mut self, src: &Pem<'_>, what: &str) -> Result<Arc<[u8]>, String> {
        use rampart_config::limits::{MAX_PEM_FILE_BYTES, MAX_PEM_TOTAL_BYTES};
        let path = match src {
            Pem::Inline(t) => return Ok(Arc::from(t.as_bytes())),
            Pem::File(p) => p,
        };
        if let Some(r) = self.files.get(path) {
            return r.clone();
        }
        if let Some(pem) = self.overrides.as_ref().and_then(|o| o.get(path)) {
            self.files.insert(path.clone(), Ok(pem.clone()));
            self.replaced.push(path.clone());
            return Ok(pem);
        }
        let r = rampart_config::limits::read_bounded_among(
            path,
            MAX_PEM_FILE_BYTES,
            MAX_PEM_TOTAL_BYTES,
            &mut self.bytes,
            "PEM file",
        )
        .map(Arc::<[u8]>::from)
        .map_err(|e| format!("cannot read {what} {src}: {e}"));
        self.files.insert(path.clone(), r.clone());
        r
    }

    /// All certificates in PEM data (a chain, or trusted CAs).
    pub fn certs(&mut self, src: &Pem<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
        let data = self.read(src, "certificate file")?;
        let certs = CertificateDer::pem_slice_iter(&data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid PEM in {src}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("no certificate found in {src}"));
        }
        Ok(certs)
    }

    /// All certificate revocation lists in PEM data.
    pub fn crls(
        &mut self,
        src: &Pem<'_>,
    ) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, String> {
        let data = self.read(src, "CRL file")?;
        let crls = rustls_pki_types::CertificateRevocationListDer::pem_slice_iter(&data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid PEM in {src}: {e}"))?;
        if crls.is_empty() {
            return Err(format!("no certificate revocation list found in {src}"));
        }
        Ok(crls)
    }

    /// Whether PEM data holds a private key.
    pub fn has_private_key(pem: &[u8]) -> bool {
        PrivateKeyDer::from_pem_slice(pem).is_ok()
    }

    /// The files read so far, and those looked for and not found (to watch for changes).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys().chain(self.absent.iter())
    }

    /// The content of a file that may not exist (an OCSP response next to a certificate).
    pub fn optional(&mut self, path: &Path, what: &str) -> Result<Option<Arc<[u8]>>, String> {
        let replaced = self.overrides.as_ref().and_then(|o| o.get(path));
        if replaced.is_none() && !self.files.contains_key(path) && !path.exists() {
            self.absent.push(path.to_path_buf());
            return Ok(None);
        }
        if let Some(der) = replaced {
            self.files.insert(path.to_path_buf(), Ok(der.clone()));
            return Ok(Some(der));
        }
        self.read(&Pem::File(path.to_path_buf()), what).map(Some)
    }

    /// The private key in PEM data.
    pub fn key(&mut self, src: &Pem<'_>) -> Result<PrivateKeyDer<'static>, String> {
        let data = self.read(src, "private key")?;
        PrivateKeyDer::from_pem_slice(&data)
            .map_err(|e| format!("cannot read private key {src}: {e}"))
    }

    /// Loads a chain and its key, checks they match, and reads the names and expiry.
    pub fn load(
        &mut self,
        cert_path: &Pem<'_>,
        key_path: &Pem<'_>,
        names: &[String],
        provider: &CryptoProvider,
    ) -> Result<LoadedCert, String> {
        let id = (cert_path.key(), key_path.key());
        let r = match self.certs.get(&id) {
            Some(r) => r.clone(),
            None => {
                let r = self.load_new(cert_path, key_path, provider);
                self.certs.insert(id, r.clone());
                r
            }
        };
        r.map(|mut l| {
            if !names.is_empty() {
                l.names = names.to_vec();
            }
            l
        })
    }

    fn load_new(
        &mut self,
        cert_path: &Pem<'_>,
        key_path: &Pem<'_>,
        provider: &CryptoProvider,
    ) -> Result<LoadedCert, String> {
        let chain = self.certs(cert_path)?;
        // A certificate replaced at run time with its key in the same PEM brings the key.
        let key_path = match cert_path {
            Pem::File(p)
                if self.replaced.contains(p)
                    && PrivateKeyDer::from_pem_slice(
                        &self.read(cert_path, "certificate file")?,
                    )
                    .is_ok() =>
            {
                cert_path
            }
            _ => key_path,
        };
        let key_data = self.read(key_path, "private key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_data).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!("no private key found in {key_path}")
            }
            other => format!("cannot read private key {key_path}: {other}"),
        })?;
        // Counted before the costly step.
        let cost = key_cost(key.secret_der().len());
        self.cost += cost;
        if self.cost > self.allowed {
            return Err(format!(
                "too many certificates to load: {} counted by their keys' sizes at {key_path}, \
                 more than the {} this configuration may load (at most {} certificates; an \
                 RSA key larger than 2048 bits counts as (bits / 2048)² certificates, this \
                 one as {cost}); refused",
                self.cost,
                self.allowed,
                rampart_config::limits::MAX_CERTIFICATES,
            ));
        }
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
        Ok(LoadedCert {
            key: Arc::new(certified),
            names: found.clone(),
            own_names: found,
            not_after,
        })
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A time as OpenSSL and HAProxy print certificate dates: `Dec  4 20:03:50 2027 GMT`.
pub fn gmt(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {d:>2} {:02}:{:02}:{:02} {y} GMT",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What loading a private key of `der_len` bytes costs, in certificates: proving a key
/// takes a signature, whose cost grows with the square of an RSA modulus at least. An
/// RSA-2048 key is about 1,220 bytes of PKCS#8 DER (4096 bits: about 2,380); EC and Ed25519
/// keys are far smaller and count 1.
pub fn key_cost(der_len: usize) -> u64 {
    const RSA_2048: u64 = 1_250;
    let n = der_len as u64;
    (n * n).div_ceil(RSA_2048 * RSA_2048).max(1)
}

/// Names from the certificate: DNS subject alternative names, or the common name when
/// there are none.
pub fn cert_names(der: &[u8]) -> (Vec<String>, Option<i64>) {
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
