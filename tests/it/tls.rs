//! TLS termination (certificates by SNI, versions, resumption, load-time errors) and TLS
//! and HTTP/2 towards servers.

use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;

use crate::support::*;

fn tls_proxy(pki: &Pki, certs: &[(&std::path::Path, &std::path::Path)], tls_extra: &str) -> Proxy {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| format!("{{ cert: \"{}\", key: \"{}\" }}", c.display(), k.display()))
        .collect();
    let _ = pki;
    Proxy::start(&format!(
        r#"
frontends:
  fe:
    bind:
      - {{ address: "127.0.0.1:0", tls: {{ certificates: [{}] {tls_extra} }} }}
    http_request: ["return status 200 lf-string %[ssl_fc_sni]"]
"#,
        list.join(", ")
    ))
}

fn peer_names(conn: &rustls::ClientConnection) -> Vec<String> {
    let der = &conn.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_with_a_default() {
    let pki = Pki::new();
    let (c1, k1) = pki.issue("one", &["one.test"], false);
    let (c2, k2) = pki.issue("two", &["two.test", "*.wild.test"], false);
    let p = tls_proxy(&pki, &[(&c1, &k1), (&c2, &k2)], "");
    let a = p.bound(0);
    // (An unknown name gets the first certificate: see the resolver's unit test; a verifying
    // client would refuse it here.)
    for (sni, want) in [
        ("one.test", "one.test"),
        ("two.test", "two.test"),
        ("x.wild.test", "two.test"),
    ] {
        let s = tls_connect(a, tls_client(&pki.ca_pem, &[b"http/1.1"]), sni).await;
        let names = peer_names(s.get_ref().1);
        assert!(names.contains(&want.to_owned()), "SNI {sni}: got {names:?}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_negotiate_and_resumption_works() {
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let p = tls_proxy(&pki, &[(&c, &k)], "");
    let a = p.bound(0);
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            rustls_pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes())
                .map(|c| c.unwrap()),
        );
        let cfg = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_protocol_versions(&[v])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let first = tls_connect(a, cfg.clone(), "localhost").await;
        assert_eq!(first.get_ref().1.protocol_version(), Some(v.version));
        // TLS 1.3 tickets arrive after the handshake: exchange a request first.
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(first))
            .await
            .unwrap();
        tokio::spawn(c);
        let r = s
            .send_request(
                Request::get("/")
                    .header("host", "localhost")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        drop(s);
        let second = tls_connect(a, cfg, "localhost").await;
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{:?}",
            v.version
        );
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_can_be_turned_off() {
    let pki = Pki::new();
    let (c, k) = pki.issue("site", &["localhost"], false);
    let p = tls_proxy(
        &pki,
        &[(&c, &k)],
        ", session_tickets: false, session_cache: 0",
    );
    let cfg = tls_client(&pki.ca_pem, &[b"http/1.1"]);
    let first = tls_connect(p.bound(0), cfg.clone(), "localhost").await;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(first))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = s
        .send_request(Request::get("/").header("host", "x").body(empty()).unwrap())
        .await
        .unwrap();
    r.into_body().collect().await.unwrap();
    let second = tls_connect(p.bound(0), cfg, "localhost").await;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    p.stop().await;
}

/// `rampart check` in process: the warnings, or the errors.
fn check(yaml: &str) -> Result<Vec<String>, String> {
    let dir = temp_dir("check");
    let cfg = rampart_config::load_str(yaml, Some(&dir), &rampart_config::yaml::ProcessEnv)
        .map_err(|e| e.to_string())?;
    rampart_proxy::check(cfg, &dir).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_load_errors_with_positions() {
    let pki = Pki::new();
    let (c1, _) = pki.issue("one", &["one.test"], false);
    let (_, k2) = pki.issue("two", &["two.test"], false);
    let yaml = |cert: &str, key: &str| {
        format!(
            "frontends:\n  fe:\n    bind:\n      - address: \"127.0.0.1:0\"\n        tls: {{ certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}] }}\n"
        )
    };
    let e = check(&yaml("/nonexistent/cert.pem", &k2.display().to_string())).unwrap_err();
    assert!(
        e.starts_with(
            "5:39: frontends.fe.bind.0.tls.certificates.0: cannot read certificate file /nonexistent/cert.pem"
        ),
        "{e}"
    );
    let e = check(&yaml(&c1.display().to_string(), &k2.display().to_string())).unwrap_err();
    assert!(e.contains("does not match certificate"), "{e}");
    assert!(
        e.starts_with("5:39: frontends.fe.bind.0.tls.certificates.0: private key"),
        "{e}"
    );
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = check(&yaml(
        &c1.display().to_string(),
        &empty.display().to_string(),
    ))
    .unwrap_err();
    assert!(e.contains("no private key found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_sends_sni_and_verifies_the_server() {
    let pki = Pki::new();
    let (c, k) = pki.issue("backend", &["backend.internal"], false);
    let (addr, snis) = tls_origin(&c, &k, |s| {
        text(200, &format!("tls origin {:?}", s.version))
    })
    .await;
    let ca = pki.dir.join("ca.pem");
    let yaml = |tls: &str| {
        format!(
            "frontends: {{ fe: {{ bind: \"127.0.0.1:0\", default_backend: be }} }}\nbackends:\n  be:\n    tls: {tls}\n    servers: {{ s: {{ address: \"{addr}\" }} }}\n"
        )
    };
    let p = Proxy::start(&yaml(&format!(
        "{{ sni: backend.internal, ca: \"{}\" }}",
        ca.display()
    )));
    let g = get(p.addr("fe"), "/").await;
    assert_eq!(
        (g.status.as_u16(), g.text().as_str()),
        (200, "tls origin HTTP/1.1")
    );
    assert_eq!(
        snis.lock().unwrap().last().map(String::as_str),
        Some("backend.internal")
    );
    p.stop().await;
    // The wrong name fails verification: 502.
    let p = Proxy::start(&yaml(&format!(
        "{{ sni: other.internal, ca: \"{}\" }}",
        ca.display()
    )));
    assert_eq!(get(p.addr("fe"), "/").await.status, 502);
    p.stop().await;
    // An unknown CA fails too, unless verification is off.
    let p = Proxy::start(&yaml("{ sni: backend.internal }"));
    assert_eq!(get(p.addr("fe"), "/").await.status, 502);
    p.stop().await;
    let p = Proxy::start(&yaml("{ sni: backend.internal, verify: false }"));
    assert_eq!(get(p.addr("fe"), "/").await.status, 200);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_carries_grpc_style_trailers() {
    let grpc = |s: &Seen| -> Response<TestBody> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t.insert("grpc-message", "ok".parse().unwrap());
        let body = [&b"\x00\x00\x00\x00\x05"[..], &s.body[5..]].concat();
        let mut r = Response::new(frames(Frames::data(&[&body], Some(t))));
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        r
    };
    // Cleartext h2 (prior knowledge) and h2 over TLS (ALPN).
    let plain = Origin::start("grpc", grpc).await;
    let pki = Pki::new();
    let (c, k) = pki.issue("g", &["grpc.internal"], false);
    let (tls_addr, _) = tls_origin(&c, &k, grpc).await;
    let p = Proxy::start(&format!(
        r#"
frontends: {{ fe: {{ bind: "127.0.0.1:0", use_backend: ["tls if {{ path_beg /tls }}"], default_backend: plain }} }}
backends:
  plain: {{ proto: h2, servers: {{ s: {{ address: "{}" }} }} }}
  tls: {{ proto: h2, tls: {{ sni: grpc.internal, ca: "{}" }}, servers: {{ s: {{ address: "{tls_addr}" }} }} }}
"#,
        plain.addr,
        pki.dir.join("ca.pem").display()
    ));
    for path in ["/pkg.Svc/Call", "/tls/pkg.Svc/Call"] {
        let tcp = tokio::net::TcpStream::connect(p.addr("fe")).await.unwrap();
        let (mut s, c) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(c);
        let req = Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(&b"\x00\x00\x00\x00\x05hello"[..]))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let c = resp.into_body().collect().await.unwrap();
        let t = c.trailers().cloned().expect("grpc trailers");
        assert_eq!(t.get("grpc-status").unwrap(), "0", "{path}");
        assert_eq!(&c.to_bytes()[5..], b"hello");
    }
    let seen = plain.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.headers.get("te").unwrap(), "trailers");
    p.stop().await;
}
