//! Response compression, decoded by a real client (`curl --compressed`): gzip, brotli and
//! zstd by `Accept-Encoding` in the backend's order of preference, only for the listed
//! types above the size, never for encoded, partial, `no-transform` or HEAD responses;
//! counted in `show stat`'s `comp_*`; off at the CPU limit.

use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;

use crate::support::*;

/// An HTML page of 8 KiB, compressible.
fn page() -> String {
    (0..200)
        .map(|i| format!("<p>line {i} of the page</p>\n"))
        .collect::<String>()
}

fn reply(ct: &str, body: &str, extra: &[(&str, &str)]) -> http::Response<TestBody> {
    let mut b = http::Response::builder()
        .status(200)
        .header("content-type", ct)
        .header("content-length", body.len())
        .header("etag", "\"v1\"");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(full(body.to_owned())).unwrap()
}

/// `curl` for `url` with `args`: the response headers (lower-cased names) and the body,
/// decoded when `--compressed` is among the arguments.
fn curl(url: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?} {url}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_clients_ask_and_decoded_by_curl() {
    if !curl_present() {
        return;
    }
    let page = page();
    let p2 = page.clone();
    let o = Origin::start("o", move |s| {
        let path = s.uri.path().to_owned();
        match path.as_str() {
            "/page" => reply("text/html; charset=utf-8", &p2, &[]),
            "/json" => reply(
                "application/json",
                &format!("{{\"a\":\"{}\"}}", "x".repeat(2000)),
                &[],
            ),
            "/png" => reply("image/png", &p2, &[]),
            "/small" => reply("text/plain", "tiny", &[]),
            "/encoded" => reply("text/html", &p2, &[("content-encoding", "identity-ish")]),
            "/nt" => reply(
                "text/html",
                &p2,
                &[("cache-control", "public, no-transform")],
            ),
            _ => reply("text/html", &p2, &[("vary", "cookie")]),
        }
    })
    .await;
    let yaml = format!(
        r#"
frontends:
  fe:
    bind: ["127.0.0.1:0"]
    default_backend: web
    use_backend: ["busy if {{ path_beg /busy }}"]
backends:
  web:
    compression: {{ algorithms: [br, gzip, zstd], min_size: 100 }}
    servers: {{ s: {{ address: "{a}" }} }}
  busy:
    compression: {{ cpu_limit: 0 }}
    servers: {{ s: {{ address: "{a}" }} }}
"#,
        a = o.addr
    );
    let p = Proxy::start(&yaml);
    let base = format!("http://{}", p.addr("fe"));
    let get = |path: &str, args: &[&str]| {
        let url = format!("{base}{path}");
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                curl(&url, &a)
            })
            .await
            .unwrap()
        }
    };

    // Each algorithm, decoded by curl, gives the page back.
    for (accept, token) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, zstd", "gzip"),
        ("*", "br"),
    ] {
        let (h, body) = get(
            "/page",
            &["--compressed", "-H", &format!("accept-encoding: {accept}")],
        )
        .await;
        assert!(
            h.contains(&format!("\r\ncontent-encoding: {token}")),
            "{accept}: {h}"
        );
        assert!(!h.contains("content-length:"), "{accept}: {h}");
        assert!(h.contains("\r\nvary: accept-encoding"), "{h}");
        assert!(h.contains("\r\netag: w/\"v1\""), "{h}");
        assert_eq!(body, page, "{accept}");
    }
    // curl's own list (deflate, gzip, br, zstd): the backend prefers br.
    let (h, body) = get("/json", &["--compressed"]).await;
    assert!(h.contains("content-encoding: br"), "{h}");
    assert!(body.starts_with("{\"a\":\"xxx"));
    // Over HTTP/2 (h2c) alike.
    let (h, body) = get("/page", &["--compressed", "--http2-prior-knowledge"]).await;
    assert!(
        h.starts_with("http/2 200") && h.contains("content-encoding: br"),
        "{h}"
    );
    assert_eq!(body, page);
    // A Vary the server set keeps its value, with Accept-Encoding added.
    let (h, _) = get("/other", &["--compressed"]).await;
    assert!(
        h.contains("\r\nvary: cookie\r\nvary: accept-encoding"),
        "{h}"
    );

    // Not compressed: not asked for, refused with q=0, a type not listed, too small,
    // already encoded, no-transform, HEAD.
    for (path, args) in [
        ("/page", vec![]),
        (
            "/page",
            vec!["-H", "accept-encoding: gzip;q=0, br;q=0, zstd;q=0"],
        ),
        ("/png", vec!["--compressed"]),
        ("/small", vec!["--compressed"]),
        ("/encoded", vec!["-H", "accept-encoding: gzip"]),
        ("/nt", vec!["--compressed"]),
        ("/page", vec!["--compressed", "-I"]),
    ] {
        let (h, _) = get(path, &args).await;
        assert!(
            !h.contains("content-encoding: gzip")
                && !h.contains("content-encoding: br")
                && !h.contains("content-encoding: zstd"),
            "{path} {args:?}: {h}"
        );
        assert!(h.contains("content-length:"), "{path} {args:?}: {h}");
    }

    // Counted: 8 responses compressed on the frontend, 8 on backend web; fewer bytes out.
    let snap = p.handle().snapshot();
    let fe = &snap.frontends[0].live.comp;
    let web = &snap.backends[snap.backend_index("web").unwrap()].live.comp;
    assert_eq!(fe.responses.load(Relaxed), 8);
    assert_eq!(web.responses.load(Relaxed), 8);
    let (i, out) = (web.bytes_in.load(Relaxed), web.bytes_out.load(Relaxed));
    assert!(
        i >= 6 * page.len() as u64 && out * 5 < i,
        "in {i} out {out}"
    );

    // At the CPU limit (0 here: always), responses pass as they are, counted as bypassed.
    let (h, body) = get("/busy", &["--compressed"]).await;
    assert!(!h.contains("content-encoding"), "{h}");
    assert_eq!(body, page);
    let busy = &snap.backends[snap.backend_index("busy").unwrap()].live.comp;
    assert_eq!(busy.responses.load(Relaxed), 0);
    assert_eq!(busy.bypassed.load(Relaxed), page.len() as u64);
    p.stop().await;
}
