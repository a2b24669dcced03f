//! OCSP stapling: a response next to the certificate (`<file>.ocsp`) is stapled, as
//! `openssl s_client -status` sees; `set ssl ocsp-response` replaces it at run time; a
//! response that is not one, or is about another certificate, is refused at load.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a certificate for localhost signed by it, and its serial number (hex).
fn pki(dir: &Path, stem: &str) -> String {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=ocsp test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &format!("{stem}.key"),
            "-out",
            &format!("{stem}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{stem}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "ext",
            "-out",
            &format!("{stem}.pem"),
        ],
    );
    openssl(
        dir,
        &["x509", "-in", &format!("{stem}.pem"), "-noout", "-serial"],
    )
    .trim()
    .trim_start_matches("serial=")
    .to_owned()
}

/// An OCSP response from the CA about `stem`'s certificate, good or revoked, valid for a
/// week, written to `out`.
fn response(dir: &Path, stem: &str, serial: &str, revoked: bool, out: &str) {
    response_for(dir, stem, serial, revoked, out, &["-ndays", "7"]);
}

/// [`response`] valid for `validity` (`-ndays N` or `-nmin N`).
fn response_for(dir: &Path, stem: &str, serial: &str, revoked: bool, out: &str, validity: &[&str]) {
    let exp = "351231235959Z";
    let line = if revoked {
        format!("R\t{exp}\t250101000000Z\t{serial}\tunknown\t/CN=localhost\n")
    } else {
        format!("V\t{exp}\t\t{serial}\tunknown\t/CN=localhost\n")
    };
    std::fs::write(dir.join("index.txt"), line).unwrap();
    openssl(
        dir,
        &[
            "ocsp",
            "-issuer",
            "ca.pem",
            "-cert",
            &format!("{stem}.pem"),
            "-no_nonce",
            "-reqout",
            "req.der",
        ],
    );
    openssl(
        dir,
        &[
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "ca.pem",
            "-rkey",
            "ca.key",
            "-CA",
            "ca.pem",
            "-reqin",
            "req.der",
            "-respout",
            out,
            validity[0],
            validity[1],
        ],
    );
}

/// What `openssl s_client -status` says of the server's OCSP staple.
fn s_client_status(port: u16) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-status",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stapled_response_is_seen_by_openssl_and_replaced_at_run_time() {
    if !have_openssl() {
        assert!(!required(), "openssl is needed for the OCSP stapling test");
        eprintln!("skipped: no openssl binary");
        return;
    }
    let origin = Origin::named("o").await;
    let dir: PathBuf = temp_dir("ocsp");
    let serial = pki(&dir, "site");
    pki(&dir, "plain");
    response(&dir, "site", &serial, false, "site.pem.ocsp");
    let yaml = format!(
        r#"
admin: {{ socket: {{ path: run/api.sock, level: admin }} }}
frontends:
  stapled:
    bind: [{{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: site.pem, key: site.key }}] }} }}]
    default_backend: o
  plain:
    bind: [{{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: plain.pem, key: plain.key }}] }} }}]
    default_backend: o
backends:
  o: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        origin.addr
    );
    let p = Proxy::start_in(&yaml, dir.clone());
    let (_ctx, _tasks) = serve_api(&p, &yaml).await;
    let sock = dir.join("run/api.sock");
    let (stapled, plain) = (p.addr("stapled").port(), p.addr("plain").port());

    let seen = tokio::task::spawn_blocking(move || s_client_status(stapled))
        .await
        .unwrap();
    assert!(
        seen.contains("OCSP Response Status: successful") && seen.contains("Cert Status: good"),
        "{seen}"
    );
    let seen = tokio::task::spawn_blocking(move || s_client_status(plain))
        .await
        .unwrap();
    assert!(seen.contains("OCSP response: no response sent"), "{seen}");
    let shown = ask_api(&sock, "show ssl ocsp-response").await;
    assert!(
        shown.starts_with("# Certificate IDs\nCertificate ID key : ")
            && shown.contains(&format!("   Serial Number: {serial}\n")),
        "{shown}"
    );

    // At run time: a new response for the same certificate (here, one saying it was
    // revoked) is stapled from the next handshake.
    response(&dir, "site", &serial, true, "revoked.ocsp");
    let der = std::fs::read(dir.join("revoked.ocsp")).unwrap();
    assert_eq!(
        ask_api(&sock, &format!("set ssl ocsp-response {}", base64(&der))).await,
        "OCSP Response updated!\n\n"
    );
    let seen = tokio::task::spawn_blocking(move || s_client_status(stapled))
        .await
        .unwrap();
    assert!(seen.contains("Cert Status: revoked"), "{seen}");
    assert_eq!(
        ask_api(&sock, "set ssl ocsp-response AAAA").await,
        "Unable to parse OCSP response.\n\n"
    );
    // A response about a certificate nobody serves.
    let other = pki(&dir, "other");
    response(&dir, "other", &other, false, "other.ocsp");
    let der = std::fs::read(dir.join("other.ocsp")).unwrap();
    assert_eq!(
        ask_api(&sock, &format!("set ssl ocsp-response {}", base64(&der))).await,
        "OCSP single response: Certificate ID does not match any certificate or issuer.\n\n"
    );
    p.stop().await;

    // At load: a response about another certificate, and one that is no response, are
    // refused with the file's name.
    let plain_serial = openssl(&dir, &["x509", "-in", "plain.pem", "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned();
    // One that expires within the hour is served with a warning.
    response_for(
        &dir,
        "plain",
        &plain_serial,
        false,
        "plain.pem.ocsp",
        &["-nmin", "30"],
    );
    let cfg =
        rampart_config::load_str(&yaml, Some(&dir), &rampart_config::yaml::ProcessEnv).unwrap();
    let warnings = rampart_proxy::runtime::check(cfg, &dir).unwrap().join("\n");
    assert!(
        warnings.contains("plain.pem.ocsp expires in 0 hours") && warnings.contains("refresh it"),
        "{warnings}"
    );
    std::fs::copy(dir.join("other.ocsp"), dir.join("plain.pem.ocsp")).unwrap();
    let check = |yaml: &str| {
        let cfg =
            rampart_config::load_str(yaml, Some(&dir), &rampart_config::yaml::ProcessEnv).unwrap();
        rampart_proxy::runtime::check(cfg, &dir)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = check(&yaml);
    assert!(
        e.contains("plain.pem.ocsp is about another certificate"),
        "{e}"
    );
    std::fs::write(dir.join("plain.pem.ocsp"), b"garbage").unwrap();
    let e = check(&yaml);
    assert!(e.contains("plain.pem.ocsp: not an OCSP response"), "{e}");
}
