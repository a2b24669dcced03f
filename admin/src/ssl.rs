//! `show ssl cert`, `set ssl cert`, `commit ssl cert` and `abort ssl cert`: HAProxy's
//! transactions and answers. `set` checks the new PEM (chain, key, key matching the
//! certificate) with the errors the configuration's loading gives, and keeps it in a
//! transaction; `commit` serves it: the running configuration is compiled again with it
//! in place of the file, so new connections get it and open ones keep their session. It
//! stays served across reloads while the file on disk is unchanged; a file changed since is
//! served again.

use std::fmt::Write as _;
use std::sync::Arc;

use rampart_config::rules::CertField;
use rampart_proxy::snapshot::Snapshot;
use rampart_proxy::tls::certs::{self, Pem};
use rampart_proxy::tls::client_cert::ClientCert;

use crate::AdminCtx;

/// Transactions under way: the certificate file (as the configuration writes it) and its
/// new PEM.
pub type Transactions = std::sync::Mutex<std::collections::BTreeMap<String, Arc<str>>>;

fn tx(ctx: &AdminCtx) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Arc<str>>> {
    ctx.ssl_tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key file the configuration names for the certificate `file`, if apart from it.
fn key_of(snap: &Snapshot, file: &str) -> Option<String> {
    snap.config
        .frontends
        .iter()
        .flat_map(|(_, f)| f.bind.iter())
        .filter_map(|b| b.tls.as_ref())
        .flat_map(|t| t.certificates.iter())
        .find(|c| c.cert.value == file)
        .and_then(|c| c.key.as_ref().map(|k| k.value.clone()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The details HAProxy prints of a certificate: serial, validity, names, fingerprint,
/// subject and issuer.
fn details(out: &mut String, leaf: Option<&[u8]>, not_after: Option<i64>, names: &[String]) {
    let parsed = leaf.and_then(ClientCert::parse);
    let text = |f: CertField| {
        parsed
            .as_ref()
            .and_then(|c| c.text(&f))
            .map(|b| b.into_owned())
            .unwrap_or_default()
    };
    if parsed.is_some() {
        let _ = writeln!(out, "Serial: {}", hex(&text(CertField::Serial)));
    }
    if let Some(t) = not_after {
        let now = certs::now();
        let _ = writeln!(
            out,
            "notAfter: {}\nExpires in: {} days",
            certs::gmt(t),
            (t - now).div_euclid(86400)
        );
    }
    let names: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let _ = writeln!(out, "Subject Alternative Name: {}", names.join(", "));
    if parsed.is_some() {
        let _ = writeln!(out, "SHA1 FingerPrint: {}", hex(&text(CertField::Sha1)));
        let s = |f| String::from_utf8_lossy(&text(f)).into_owned();
        let _ = writeln!(out, "Subject: {}", s(CertField::SubjectDn(None)));
        let _ = writeln!(out, "Issuer: {}", s(CertField::IssuerDn(None)));
    }
}

/// `show ssl cert [[*]<certfile>]`.
pub fn show(ctx: &AdminCtx, file: Option<&str>) -> String {
    let snap = ctx.control.shared().snapshot.load();
    let Some(file) = file else {
        let mut out = String::new();
        let pending = tx(ctx);
        if !pending.is_empty() {
            out.push_str("# transaction\n");
            for f in pending.keys() {
                let _ = writeln!(out, "*{f}");
            }
        }
        out.push_str("# filename\n");
        let mut seen = std::collections::HashSet::new();
        for c in &snap.certificates {
            if seen.insert(c.cert.file.as_str()) {
                out.push_str(&c.cert.file);
                out.push('\n');
            }
        }
        return out;
    };
    if let Some(name) = file.strip_prefix('*') {
        let Some(pem) = tx(ctx).get(name).cloned() else {
            return "Can't display the certificate: Not found or the certificate is a bundle!\n"
                .into();
        };
        let mut loader = certs::Loader::new(u64::MAX);
        let leaf = loader
            .certs(&Pem::Inline(&pem))
            .ok()
            .and_then(|c| c.into_iter().next());
        let (names, not_after) = leaf
            .as_ref()
            .map(|l| certs::cert_names(l))
            .unwrap_or_default();
        let mut out = format!("Filename: *{name}\nStatus: Unused\n");
        details(&mut out, leaf.as_deref(), not_after, &names);
        return out;
    }
    let uses: Vec<_> = snap
        .certificates
        .iter()
        .filter(|c| c.cert.file == file)
        .collect();
    let Some(first) = uses.first() else {
        return "Can't display the certificate: Not found or the certificate is a bundle!\n".into();
    };
    let c = &first.cert;
    let mut out = format!("Filename: {}\nStatus: Used\n", c.file);
    details(&mut out, c.leaf.as_deref(), c.not_after, &c.names);
    let users: Vec<String> = uses
        .iter()
        .map(|u| format!("{} bind {}", u.frontend, u.bind))
        .collect();
    let _ = writeln!(out, "Used by: {}", users.join(", "));
    out
}

/// `set ssl cert <certfile> <payload>`.
pub fn set(ctx: &AdminCtx, args: &[&str], payload: Option<&str>) -> String {
    let (Some(file), Some(pem)) = (args.first(), payload) else {
        return "'set ssl cert expects a filename and a certificate as a payload\n".into();
    };
    let snap = ctx.control.shared().snapshot.load();
    if !snap.certificates.iter().any(|c| c.cert.file == *file) {
        return format!(
            "Can't replace a certificate which is not referenced by the configuration!\nCan't update {file}!\n"
        );
    }
    // Checked as the configuration's loading checks it: a chain, a key, and a key that
    // matches. Without a key in the payload, the configured key file is used.
    let base = ctx.control.base_dir();
    let provider = rampart_proxy::tls::provider();
    let mut loader = certs::Loader::new(u64::MAX);
    let has_key = certs::Loader::has_private_key(pem.as_bytes());
    let key_file = key_of(&snap, file);
    let key = match (&key_file, has_key) {
        (Some(k), false) => Pem::of(k, &base),
        _ => Pem::Inline(pem),
    };
    if let Err(e) = loader.load(&Pem::Inline(pem), &key, &[], &provider) {
        ctx.refused
            .ssl
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return format!("{e}\nCan't load the payload\nCan't update {file}!\n");
    }
    let created = tx(ctx).insert((*file).to_owned(), Arc::from(pem)).is_none();
    format!(
        "Transaction {} for certificate {file}!\n",
        if created { "created" } else { "updated" }
    )
}

/// `commit ssl cert <certfile>`.
pub fn commit(ctx: &AdminCtx, args: &[&str]) -> String {
    let Some(file) = args.first() else {
        return "'commit ssl cert' expects a filename\n".into();
    };
    let Some(pem) = tx(ctx).remove(*file) else {
        return format!("No ongoing transaction! !\nCan't commit {file}!\n");
    };
    let path = ctx.control.base_dir().join(file);
    let overrides = ctx.control.shared().live.certs.clone();
    let previous = overrides.set(path.clone(), Arc::from(pem.as_bytes()));
    match ctx.control.reapply() {
        Ok(_) => format!("Committing {file}.\nSuccess!\n"),
        Err(e) => {
            overrides.restore(path, previous);
            ctx.refused
                .ssl
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{e}\nCan't commit {file}!\n")
        }
    }
}

/// `abort ssl cert <certfile>`.
pub fn abort(ctx: &AdminCtx, args: &[&str]) -> String {
    let Some(file) = args.first() else {
        return "'abort ssl cert' expects a filename\n".into();
    };
    match tx(ctx).remove(*file) {
        Some(_) => format!("Transaction aborted for certificate '{file}'!\n"),
        None => "No ongoing transaction!\n".into(),
    }
}

/// `set ssl ocsp-response <base64>` (or the base64 as a payload): staples the response
/// to the certificate it is about, in place of its `.ocsp` file, kept while that file is
/// unchanged.
pub fn set_ocsp(ctx: &AdminCtx, args: &[&str], payload: Option<&str>) -> String {
    let Some(b64) = args.first().copied().or(payload) else {
        return "'set ssl ocsp-response' expects response in base64 encoding.\n".into();
    };
    let Some(der) = rampart_proxy::tls::ocsp::base64_decode(b64) else {
        return "'set ssl ocsp-response' received invalid base64 encoded response.\n".into();
    };
    let Ok(info) = rampart_proxy::tls::ocsp::parse(&der) else {
        ctx.refused
            .ssl
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return "Unable to parse OCSP response.\n".into();
    };
    let trim = |b: &[u8]| {
        b.iter()
            .skip_while(|x| **x == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    let snap = ctx.control.shared().snapshot.load();
    let file = snap.certificates.iter().find_map(|c| {
        let leaf = c.cert.leaf.as_deref()?;
        let parsed = ClientCert::parse(leaf)?;
        let serial = parsed.text(&CertField::Serial)?;
        (trim(&serial) == trim(&info.serial) && c.cert.file != "(inline PEM)")
            .then(|| c.cert.file.clone())
    });
    let Some(file) = file else {
        return "OCSP single response: Certificate ID does not match any certificate or issuer.\n"
            .into();
    };
    let path = std::path::PathBuf::from(format!(
        "{}.ocsp",
        ctx.control.base_dir().join(&file).display()
    ));
    let overrides = ctx.control.shared().live.certs.clone();
    let previous = overrides.set(path.clone(), Arc::from(der));
    match ctx.control.reapply() {
        Ok(_) => "OCSP Response updated!\n".into(),
        Err(e) => {
            overrides.restore(path, previous);
            ctx.refused
                .ssl
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{e}\n")
        }
    }
}

/// `show ssl ocsp-response`: the responses stapled, by certificate ID.
pub fn show_ocsp(ctx: &AdminCtx) -> String {
    let snap = ctx.control.shared().snapshot.load();
    let mut out = String::from("# Certificate IDs\n");
    let mut seen = std::collections::HashSet::new();
    for c in &snap.certificates {
        let Some(o) = &c.cert.ocsp else { continue };
        if !seen.insert(o.cert_id.clone()) {
            continue;
        }
        let lower: String = o.cert_id.iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(
            out,
            "Certificate ID key : {lower}\n Certificate ID:\n   Issuer Name Hash: {}\n   Issuer Key Hash: {}\n   Serial Number: {}\n",
            hex(&o.issuer_name_hash),
            hex(&o.issuer_key_hash),
            hex(&o.serial)
        );
        if let Some(n) = o.next_update {
            let _ = writeln!(out, "   Next Update: {} ({})", certs::gmt(n), c.cert.file);
        }
    }
    out
}
