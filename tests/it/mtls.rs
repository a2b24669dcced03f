//! Client certificates: `verify: required|optional` with `ca` and `crl` on a bind, the
//! `ssl_c_*` fetches passed to servers as headers, refusals counted, and a backend that
//! presents its own certificate to a server that requires one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_proxy::state::Refusal;
use rustls_pki_types::pem::PemObject as _;

use crate::support::*;

fn client(ca_pem: &str, id: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    tls_client_as(ca_pem, &[b"http/1.1"], id)
}

async fn request(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(u16, String), String> {
    try_request(addr, Some(cfg), "/").await
}

const HEADERS: &str = r#"      - set-header x-used %[ssl_c_used]
      - set-header x-verify %[ssl_c_verify]
      - set-header x-dn %[ssl_c_s_dn]
      - set-header x-cn %[ssl_c_s_dn(cn)]
      - set-header x-issuer %[ssl_c_i_dn(CN)]
      - set-header x-serial %[ssl_c_serial,hex]
      - set-header x-sha1 %[ssl_c_sha1,hex]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_optional_and_refused_client_certificates() {
    let origin = Origin::named("o").await;
    let pki = Pki::new();
    let other = Pki::new();
    let (srv, srv_key) = pki.issue("server", &["localhost"], false);
    let (alice, alice_key) = pki.issue("alice", &["alice"], false);
    let (old, old_key) = pki.issue("old", &["old"], true);
    let (mallory, mallory_key) = other.issue("mallory", &["mallory"], false);
    let (bob, bob_key) = pki.issue("bob", &["bob"], false);
    let crl = pki.crl("revoked", &[&bob]);
    let ca = pki.dir.join("ca.pem");
    let yaml = format!(
        r#"
frontends:
  req:
    bind:
      - address: "127.0.0.1:0"
        tls: {{ certificates: [{{ cert: "{srv}", key: "{srv_key}" }}], verify: required, ca: "{ca}", crl: "{crl}" }}
    http_request:
{HEADERS}      - deny if !{{ ssl_c_s_dn(cn) -m str alice bob }}
    default_backend: o
  opt:
    bind:
      - address: "127.0.0.1:0"
        tls: {{ certificates: [{{ cert: "{srv}", key: "{srv_key}" }}], verify: optional, ca: "{ca}" }}
    http_request:
{HEADERS}      - return status 200 string anonymous if !{{ ssl_c_used }}
    default_backend: o
backends:
  o: {{ servers: {{ s: {{ address: "{}" }} }} }}
"#,
        origin.addr,
        srv = srv.display(),
        srv_key = srv_key.display(),
        ca = ca.display(),
        crl = crl.display(),
    );
    let p = Proxy::start(&yaml);
    let (req, opt) = (p.addr("req"), p.addr("opt"));
    let with = |c: &Path, k: &Path| client(&pki.ca_pem, Some((c, k)));

    // A certificate from the bind's CA: the request goes through with its identity.
    assert_eq!(
        request(req, with(&alice, &alice_key)).await,
        Ok((200, "o".into()))
    );
    let h = origin.last().headers;
    assert_eq!(h["x-used"], "1");
    assert_eq!(h["x-verify"], "0");
    assert_eq!(h["x-dn"], "/CN=alice");
    assert_eq!(h["x-cn"], "alice");
    assert_eq!(h["x-issuer"], "rampart test CA");
    assert_eq!(h["x-sha1"].len(), 40);
    let der = rustls_pki_types::CertificateDer::pem_file_iter(&alice)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) =
        <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(
            &der,
        )
        .unwrap();
    let serial: String = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(h["x-serial"], serial.as_str());

    // Refused: no certificate, another CA's, an expired one, a revoked one; each counted.
    let refused = |r: Result<(u16, String), String>| r.is_err();
    assert!(refused(request(req, client(&pki.ca_pem, None)).await));
    assert!(refused(request(req, with(&mallory, &mallory_key)).await));
    assert!(refused(request(req, with(&old, &old_key)).await));
    assert!(refused(request(req, with(&bob, &bob_key)).await));
    let live = p.handle().snapshot().frontend("req").unwrap().live.clone();
    assert!(
        eventually(Duration::from_secs(5), || live
            .refused
            .get(Refusal::ClientCert)
            == 4)
        .await,
        "refusals counted: {}",
        live.refused.get(Refusal::ClientCert)
    );
    assert_eq!(origin.count(), 1);

    // Optional: without a certificate the request goes through, unauthenticated; with a
    // bad one it is still refused; with a good one its identity is passed on.
    assert_eq!(
        request(opt, client(&pki.ca_pem, None)).await,
        Ok((200, "anonymous".into()))
    );
    assert!(refused(request(opt, with(&mallory, &mallory_key)).await));
    assert_eq!(
        request(opt, with(&alice, &alice_key)).await,
        Ok((200, "o".into()))
    );
    assert_eq!(origin.last().headers["x-cn"], "alice");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_presents_its_client_certificate() {
    let origin = Origin::named("o").await;
    let pki = Pki::new();
    let (srv, srv_key) = pki.issue("server", &["localhost"], false);
    let (edge, edge_key) = pki.issue("edge", &["edge.internal"], false);
    let ca = pki.dir.join("ca.pem");
    let inner = free_port();
    // `inner` requires a client certificate, as a server behind mutual TLS does; `edge`
    // forwards plain requests to it with its own certificate; `nocert` without one.
    let yaml = format!(
        r#"
frontends:
  inner:
    bind:
      - address: "127.0.0.1:{inner}"
        tls: {{ certificates: [{{ cert: "{srv}", key: "{srv_key}" }}], verify: required, ca: "{ca}" }}
    http_request: ["set-header x-cn %[ssl_c_s_dn(cn)]"]
    default_backend: o
  edge:
    bind: ["127.0.0.1:0"]
    default_backend: inner
  nocert:
    bind: ["127.0.0.1:0"]
    default_backend: inner_nocert
backends:
  o: {{ servers: {{ s: {{ address: "{}" }} }} }}
  inner:
    tls: {{ ca: "{ca}", sni: localhost, cert: "{edge}", key: "{edge_key}" }}
    servers: {{ s: {{ address: "127.0.0.1:{inner}" }} }}
  inner_nocert:
    tls: {{ ca: "{ca}", sni: localhost }}
    servers: {{ s: {{ address: "127.0.0.1:{inner}" }} }}
"#,
        origin.addr,
        srv = srv.display(),
        srv_key = srv_key.display(),
        ca = ca.display(),
        edge = edge.display(),
        edge_key = edge_key.display(),
    );
    let p = Proxy::start(&yaml);
    let g = get(p.addr("edge"), "/").await;
    assert_eq!(g.status, 200);
    assert_eq!(origin.last().headers["x-cn"], "edge.internal");
    let g = get(p.addr("nocert"), "/").await;
    // With TLS 1.3 the server's refusal arrives after the handshake, with the request.
    assert!(
        matches!(g.status.as_u16(), 502 | 503),
        "a server that requires a certificate refuses none: {}",
        g.status
    );
    p.stop().await;
}

#[test]
fn client_certificate_settings_are_checked() {
    let load = |tls: &str| {
        let yaml = format!(
            "frontends:\n  f:\n    bind:\n      - address: \"127.0.0.1:0\"\n        tls: {{ certificates: [{{ cert: c.pem }}], {tls} }}\n    default_backend: b\nbackends:\n  b: {{ servers: {{ s: {{ address: \"127.0.0.1:9\" }} }} }}\n"
        );
        load_errors(&yaml, None)
    };
    assert!(
        load("verify: required").contains(
            "verify optional or required needs ca: the CA certificates client certificates must chain to"
        )
    );
    assert!(load("ca: x.pem").contains("ca and crl check client certificates"));
    assert!(load("verify: sometimes").contains("client certificate verification"));
}
