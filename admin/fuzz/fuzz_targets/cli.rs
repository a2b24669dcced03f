//! Any bytes sent to the runtime API at the admin level, against a running proxy with a
//! frontend, two backends, servers and a stick table: each session is answered and ends,
//! never a panic, and the proxy's state stays usable for the next input.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rampart_admin::AdminCtx;
use rampart_config::model::CliLevel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
global: { threads: 1 }
stick_tables:
  per_ip: { type: ip, size: 1k, expire: 10m, store: [gpc0, http_req_rate(10s)] }
frontends:
  fe:
    bind: "127.0.0.1:0"
    default_backend: app
    use_backend: ["api if { path_beg /api }"]
backends:
  app:
    servers:
      web1: { address: "127.0.0.1:9" }
      web2: { address: "127.0.0.1:9", weight: 3 }
  api:
    balance: leastconn
    servers: { a: { address: "127.0.0.1:9" } }
"#;

struct World {
    rt: tokio::runtime::Runtime,
    ctx: Arc<AdminCtx>,
    _proxy: rampart_proxy::ProxyHandle,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let cfg = rampart_config::load_str(
            CONFIG,
            None,
            &std::collections::HashMap::<String, String>::new(),
        )
        .unwrap();
        let proxy = rampart_proxy::start(cfg, std::path::Path::new(".")).unwrap();
        let ctx = AdminCtx::new(proxy.control().clone(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            rt,
            ctx,
            _proxy: proxy,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let session = tokio::spawn(rampart_admin::cli::session(
            server,
            w.ctx.clone(),
            CliLevel::Admin,
        ));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        // A session ends at the end of its input (or `quit`); the answer is bounded by
        // what was asked.
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
            .await
            .expect("the session did not end")
            .unwrap();
        session.await.unwrap();
    });
});
