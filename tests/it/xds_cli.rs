//! The binary fed by a control plane: started from an Envoy bootstrap file as Envoy is,
//! `show xds` on the runtime socket, the configuration dump, metrics and the stats page.

use std::time::Duration;

use crate::cli::{bin, ctl, run_args, wait_log};
use crate::cp::*;
use crate::support::*;

/// A bootstrap file like the ones Envoy's own examples and sidecar injectors write.
fn bootstrap(cp: &Cp, api_type: &str) -> String {
    format!(
        r#"node:
  id: sidecar-1
  cluster: web
  metadata: {{ team: payments }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
      - envoy_grpc:
          cluster_name: xds_cluster
          retry_policy:
            retry_back_off: {{ base_interval: 0.05s, max_interval: 0.2s }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: xds_cluster
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: xds_cluster
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {port} }}
admin:
  access_log_path: /dev/null
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
layered_runtime:
  layers:
    - name: static_layer_0
      static_layer:
        overload: {{ global_downstream_max_connections: 50000 }}
"#,
        port = cp.addr.port()
    )
}

/// The admin listener's address, from the log.
fn admin_addr(lines: &[String]) -> std::net::SocketAddr {
    let l = lines
        .iter()
        .find(|l| l.contains("stats page on http://"))
        .unwrap();
    let rest = l.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_bootstrap_starts_rampart_as_it_starts_envoy() {
    for api in ["GRPC", "DELTA_GRPC"] {
        let a = Origin::named("a").await;
        let cp = Cp::start().await;
        cp.clusters(vec![eds_cluster("web")]);
        cp.endpoints(vec![cla_of("web", &[a.addr])]);
        cp.listeners(vec![listener("ingress", 0, "r1")]);
        cp.routes(vec![route_config("r1", vec![to_cluster("/", "web")])]);
        let dir = temp_dir("bootstrap");
        let file = dir.join("bootstrap.yaml");
        std::fs::write(&file, bootstrap(&cp, api)).unwrap();
        let check = bin()
            .arg("check")
            .arg("--envoy-bootstrap")
            .arg(&file)
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
        let r = run_args(
            &[
                "run".as_ref(),
                "--envoy-bootstrap".as_ref(),
                file.as_os_str(),
            ],
            1,
        );
        let addr = r.addrs[0];
        assert_eq!(get(addr, "/").await.text(), "a", "{api}");
        let first = cp.seen().into_iter().next().unwrap();
        assert_eq!(first.node.as_deref(), Some("sidecar-1"));
        // The admin listener: the configuration dump, metrics and the stats page.
        let admin = admin_addr(&wait_log(&r, "stats page on"));
        cp.acked(RDS).await;
        let dump = get(admin, "/config_dump").await;
        assert_eq!(dump.status, 200);
        let dump = dump.text();
        for needle in [
            "ListenersConfigDump",
            "\"name\": \"ingress\"",
            "dynamic_active_clusters",
            "\"route_config\"",
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ] {
            assert!(dump.contains(needle), "{api}: no {needle} in\n{dump}");
        }
        let metrics = get(admin, "/metrics").await.text();
        assert!(metrics.contains("rampart_xds_connected 1"), "{metrics}");
        assert!(
            metrics.contains("rampart_xds_resources{type=\"clusters\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("rampart_xds_updates_accepted_total{type=\"listeners\"}"),
            "{metrics}"
        );
        let csv = get(admin, "/stats;csv").await.text();
        assert!(csv.lines().any(|l| l.starts_with("web,BACKEND,")), "{csv}");
        assert!(
            csv.lines().any(|l| l.starts_with("ingress,FRONTEND,")),
            "{csv}"
        );
    }
}

#[test]
fn bootstrap_fields_rampart_cannot_honour_are_errors_with_their_path_and_line() {
    let dir = temp_dir("bootstrap-bad");
    let file = dir.join("bootstrap.yaml");
    std::fs::write(
        &file,
        "node: { id: n }\nstatic_resources:\n  clusters:\n    - name: web\n      connect_timeout: 1s\n      upstream_bind_config: { source_address: { address: 10.0.0.1, port_value: 0 } }\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--envoy-bootstrap")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:6:29: static_resources.clusters[0].upstream_bind_config: Cluster.upstream_bind_config is not supported by rampart",
            file.display()
        )),
        "{err}"
    );
    // A field Envoy does not know either.
    std::fs::write(
        &file,
        "node: { id: n }\nstatic_resources:\n  clusterz: []\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--envoy-bootstrap")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("static_resources") && err.contains("clusterz"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_xds_on_the_runtime_socket() {
    let a = Origin::named("a").await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("web")]);
    cp.endpoints(vec![cla_of("web", &[a.addr])]);
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config("r1", vec![to_cluster("/", "web")])]);
    let dir = temp_dir("xds-ctl");
    let cfg = dir.join("rampart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "admin: {{ socket: [{{ path: run/api.sock }}] }}\nxds:\n  server: {}\n  node: {{ id: sidecar-2 }}\n  mode: delta\n",
            cp.url()
        ),
    )
    .unwrap();
    let mut r = run_args(&["run".as_ref(), "-c".as_ref(), cfg.as_os_str()], 1);
    wait_log(&r, "runtime API on");
    assert_eq!(get(r.addrs[0], "/").await.text(), "a");
    cp.acked(RDS).await;
    let ctl = |args: &[&str]| ctl(&cfg, args);
    let shown = ctl(&["show", "xds"]);
    let mut lines = shown.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("# server mode node cluster state"),
        "{shown}"
    );
    let conn = lines.next().unwrap();
    assert!(
        conn.starts_with(&format!("{} delta sidecar-2 - connected ", cp.url())),
        "{shown}"
    );
    for t in ["clusters", "endpoints", "listeners", "routes"] {
        let l = shown
            .lines()
            .find(|l| l.starts_with(&format!("{t} ")))
            .unwrap();
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!((f[3], f[7]), ("1", "0"), "{t}: {l}");
    }
    let json = ctl(&["show", "xds", "json"]);
    assert!(
        json.contains("\"mode\": \"delta\"") && json.contains("\"connected\": true"),
        "{json}"
    );
    // A rejected update shows with its message.
    cp.endpoints(vec![cla(
        "web",
        vec![endpoint(
            a.addr,
            0,
            envoy_types::pb::envoy::config::core::v3::HealthStatus::Healthy,
        )],
    )]);
    cp.wait(Duration::from_secs(10), "NACK", |s| s.error.is_some())
        .await;
    let shown = ctl(&["show", "xds"]);
    let eds = shown.lines().find(|l| l.starts_with("endpoints ")).unwrap();
    assert!(eds.contains("load_balancing_weight"), "{shown}");
    // A stop while the stream is open: a clean exit.
    assert_eq!(r.stop("TERM").await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_beside_the_bootstrap_adds_static_frontends() {
    let a = Origin::named("a").await;
    let local = Origin::named("local").await;
    let cp = Cp::start().await;
    cp.clusters(vec![eds_cluster("web")]);
    cp.endpoints(vec![cla_of("web", &[a.addr])]);
    cp.listeners(vec![listener("ingress", 0, "r1")]);
    cp.routes(vec![route_config("r1", vec![to_cluster("/", "web")])]);
    let dir = temp_dir("bootstrap-and-file");
    let boot = dir.join("bootstrap.yaml");
    std::fs::write(&boot, bootstrap(&cp, "GRPC")).unwrap();
    let file = dir.join("rampart.yaml");
    std::fs::write(
        &file,
        format!(
            "global: {{ threads: 1 }}\nfrontends:\n  local: {{ bind: \"127.0.0.1:0\", default_backend: local }}\nbackends:\n  local: {{ servers: {{ s: {{ address: \"{}\" }} }} }}\n",
            local.addr
        ),
    )
    .unwrap();
    let r = run_args(
        &[
            "run".as_ref(),
            "-c".as_ref(),
            file.as_os_str(),
            "--envoy-bootstrap".as_ref(),
            boot.as_os_str(),
        ],
        2,
    );
    let mut answers = Vec::new();
    for addr in &r.addrs {
        answers.push(get(*addr, "/").await.text());
    }
    answers.sort();
    assert_eq!(answers, ["a", "local"]);
}
