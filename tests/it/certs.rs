//! Certificates changed at run time: `set ssl cert` / `commit ssl cert` under traffic with
//! no failed request, bad payloads refused with the loading's errors, and (through the
//! binary) a certificate file renewed in place picked up by the file watch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;

use crate::support::*;

/// A certificate file and its key file as one PEM, as HAProxy's `crt` has them.
fn pem_of(cert: &Path, key: &Path) -> String {
    std::fs::read_to_string(cert).unwrap() + &std::fs::read_to_string(key).unwrap()
}

fn leaf(pem_file: &Path) -> Vec<u8> {
    rustls_pki_types::CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The leaf certificate a new TLS connection to `addr` is served.
async fn served(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let s = tls_connect(addr, tls_client(ca_pem, &[b"http/1.1"]), "localhost").await;
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One request on a new TLS connection: its status.
async fn one(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    try_request(addr, Some(cfg), "/").await.map(|(s, _)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_ssl_cert_under_traffic_fails_no_request() {
    let origin = Origin::named("o").await;
    let pki = Pki::new();
    let (old, old_key) = pki.issue_for_days("old", &["localhost"], 30);
    let (new, new_key) = pki.issue_for_days("new", &["localhost"], 90);
    let (_, other_key) = pki.issue("other", &["localhost"], false);
    // One file holding the certificate and its key, as HAProxy's `crt` has it.
    let site = pki.dir.join("site.pem");
    std::fs::write(&site, pem_of(&old, &old_key)).unwrap();
    let yaml = format!(
        r#"
admin: {{ socket: {{ path: run/api.sock, level: admin }} }}
frontends:
  fe:
    bind: [{{ address: "127.0.0.1:0", tls: {{ certificates: [{{ cert: site.pem }}] }} }}]
    default_backend: o
backends:
  o: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        origin.addr
    );
    let p = Proxy::start_in(&yaml, pki.dir.clone());
    let (_ctx, _tasks) = serve_api(&p, &yaml).await;
    let sock: PathBuf = p.dir.join("run/api.sock");
    let fe = p.addr("fe");
    assert_eq!(served(fe, &pki.ca_pem).await, leaf(&old));

    // A connection opened before the change keeps its session after it.
    let kept = tls_connect(fe, tls_client(&pki.ca_pem, &[b"http/1.1"]), "localhost").await;
    let (mut kept, c) = hyper::client::conn::http1::handshake(TokioIo::new(kept))
        .await
        .unwrap();
    tokio::spawn(c);

    // Steady traffic, a new connection for every request, until told to stop (and at
    // most 20,000 requests or 60 s).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let cfg = tls_client(&pki.ca_pem, &[b"http/1.1"]);
        clients.push(tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) {
                    break;
                }
                match one(fe, cfg.clone()).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) | Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    assert!(eventually(Duration::from_secs(20), || ok.load(Ordering::Relaxed) >= 50).await);

    let pem = pem_of(&new, &new_key);
    // Bad payloads are refused with the loading's errors, and nothing changes.
    let answer = ask_api(&sock, "set ssl cert site.pem <<\ngarbage\n\n").await;
    assert!(
        answer.contains("no certificate found") && answer.ends_with("Can't update site.pem!\n\n"),
        "{answer}"
    );
    let mismatched = pem_of(&new, &other_key);
    let answer = ask_api(&sock, &format!("set ssl cert site.pem <<\n{mismatched}\n")).await;
    assert!(answer.contains("does not match certificate"), "{answer}");
    assert_eq!(
        ask_api(&sock, &format!("set ssl cert nosuch.pem <<\n{pem}\n")).await,
        "Can't replace a certificate which is not referenced by the configuration!\nCan't update nosuch.pem!\n\n"
    );
    assert_eq!(
        ask_api(&sock, "commit ssl cert site.pem").await,
        "No ongoing transaction! !\nCan't commit site.pem!\n\n"
    );

    // The transaction, shown, then committed.
    assert_eq!(
        ask_api(&sock, &format!("set ssl cert site.pem <<\n{pem}\n")).await,
        "Transaction created for certificate site.pem!\n\n"
    );
    assert_eq!(
        ask_api(&sock, &format!("set ssl cert site.pem <<\n{pem}\n")).await,
        "Transaction updated for certificate site.pem!\n\n"
    );
    assert_eq!(
        ask_api(&sock, "show ssl cert").await,
        "# transaction\n*site.pem\n# filename\nsite.pem\n\n"
    );
    let pending = ask_api(&sock, "show ssl cert *site.pem").await;
    assert!(
        pending.starts_with("Filename: *site.pem\nStatus: Unused\nSerial: "),
        "{pending}"
    );
    assert_eq!(
        served(fe, &pki.ca_pem).await,
        leaf(&old),
        "not before the commit"
    );
    assert_eq!(
        ask_api(&sock, "commit ssl cert site.pem").await,
        "Committing site.pem.\nSuccess!\n\n"
    );
    assert_eq!(served(fe, &pki.ca_pem).await, leaf(&new));
    let shown = ask_api(&sock, "show ssl cert site.pem").await;
    assert!(
        shown.starts_with("Filename: site.pem\nStatus: Used\nSerial: ")
            && shown.contains("\nSubject: /CN=localhost\nIssuer: /CN=rampart test CA\n"),
        "{shown}"
    );
    let before = ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(20), || ok.load(Ordering::Relaxed)
            >= before + 50)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    // The connection opened before still works, on its session.
    let r = kept
        .send_request(
            Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A reload keeps the committed certificate while the file is unchanged...
    p.reload(&yaml).unwrap();
    assert_eq!(served(fe, &pki.ca_pem).await, leaf(&new));
    // ... and serves the file once it changes.
    let (third, third_key) = pki.issue_for_days("third", &["localhost"], 60);
    std::fs::write(&site, pem_of(&third, &third_key)).unwrap();
    p.reload(&yaml).unwrap();
    assert_eq!(served(fe, &pki.ca_pem).await, leaf(&third));
    assert_eq!(
        ask_api(&sock, &format!("set ssl cert site.pem <<\n{pem}\n")).await,
        "Transaction created for certificate site.pem!\n\n"
    );
    assert_eq!(
        ask_api(&sock, "abort ssl cert site.pem").await,
        "Transaction aborted for certificate 'site.pem'!\n\n"
    );
    assert_eq!(
        ask_api(&sock, "abort ssl cert site.pem").await,
        "No ongoing transaction!\n\n"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_in_place_is_served_without_a_reload_by_hand() {
    let o = Origin::named("origin").await;
    let pki = Pki::new();
    let (_, _) = pki.issue_for_days("site", &["localhost"], 30);
    let first = leaf(&pki.dir.join("site.pem"));
    let cfg = pki.dir.join("rampart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "frontends:\n  fe:\n    bind: [{{ address: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: site.pem, key: site.key }}] }} }}]\n    default_backend: be\nbackends: {{ be: {{ servers: {{ s: {{ address: \"{}\" }} }} }} }}\n",
            o.addr
        ),
    )
    .unwrap();
    let mut r = crate::cli::run(&cfg, 1);
    let addr = r.addrs[0];
    assert_eq!(served(addr, &pki.ca_pem).await, first);
    // Renewed in place, as an ACME client does: the file watch reloads.
    pki.issue_for_days("site", &["localhost"], 90);
    let renewed = leaf(&pki.dir.join("site.pem"));
    assert_ne!(renewed, first);
    crate::cli::wait_log(&r, "a certificate file changed");
    crate::cli::wait_log(&r, "configuration reloaded");
    assert_eq!(served(addr, &pki.ca_pem).await, renewed);
    // A broken file is refused, and the certificate in use keeps serving.
    std::fs::write(pki.dir.join("site.key"), "not a key\n").unwrap();
    crate::cli::wait_log(&r, "reload refused");
    assert_eq!(served(addr, &pki.ca_pem).await, renewed);
    assert_eq!(r.stop("TERM").await.code(), Some(0));
}
