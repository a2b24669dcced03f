//! Balancing algorithms through the proxy, with real servers: weights, stickiness,
//! backups, disabled servers.

use std::net::IpAddr;

use crate::support::*;

async fn origins(names: &[&str]) -> Vec<Origin> {
    let mut v = Vec::new();
    for n in names {
        v.push(Origin::named(n).await);
    }
    v
}

fn proxy(balance: &str, extra: &str, servers: &[(&Origin, &str)]) -> Proxy {
    let list: String = servers
        .iter()
        .map(|(o, opts)| format!("      {}: {{ address: \"{}\"{} }}\n", o.name, o.addr, opts))
        .collect();
    Proxy::start(&format!(
        "frontends:\n  fe:\n    bind: [\"127.0.0.1:0\"]\n    default_backend: be\nbackends:\n  be:\n    balance: {balance}\n{extra}    servers:\n{list}"
    ))
}

async fn run(p: &Proxy, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(p.addr("fe"), "/").await.text());
    }
    tally(out.iter().map(String::as_str))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_and_static_rr_honour_weights() {
    let o = origins(&["a", "b", "c"]).await;
    for algo in ["roundrobin", "static-rr"] {
        let p = proxy(
            algo,
            "",
            &[
                (&o[0], ", weight: 3"),
                (&o[1], ", weight: 1"),
                (&o[2], ", weight: 0"),
            ],
        );
        let t = run(&p, 400).await;
        // Two worker threads each keep their own rotation: within one round of exact.
        let a = t.get("a").copied().unwrap_or(0);
        let b = t.get("b").copied().unwrap_or(0);
        assert!(
            (296..=304).contains(&a) && (96..=104).contains(&b),
            "{algo}: {t:?}"
        );
        assert!(!t.contains_key("c"), "{algo}: weight 0 gets nothing: {t:?}");
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_and_random_spread_requests() {
    let o = origins(&["a", "b"]).await;
    for algo in ["leastconn", "random"] {
        let p = proxy(algo, "", &[(&o[0], ""), (&o[1], "")]);
        let t = run(&p, 200).await;
        for n in ["a", "b"] {
            let c = t.get(n).copied().unwrap_or(0);
            assert!(c >= 50, "{algo}: {t:?}");
        }
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_is_sticky_per_client_and_spreads_clients() {
    let o = origins(&["a", "b", "c"]).await;
    let p = proxy("source", "", &[(&o[0], ""), (&o[1], ""), (&o[2], "")]);
    let mut per_client = Vec::new();
    for i in 1..=60u8 {
        let src: IpAddr = format!("127.0.{i}.1").parse().unwrap();
        let first = get_from(src, p.addr("fe"), "/", &[]).await.text();
        for _ in 0..3 {
            assert_eq!(
                get_from(src, p.addr("fe"), "/", &[]).await.text(),
                first,
                "client {src} moved"
            );
        }
        per_client.push(first);
    }
    let t = tally(per_client.iter().map(String::as_str));
    assert_eq!(t.len(), 3, "60 clients over 3 servers: {t:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_mask_groups_a_network_on_one_server() {
    let o = origins(&["a", "b", "c", "d"]).await;
    let p = proxy(
        "source",
        "    source_mask: { ipv4: 16 }\n",
        &[(&o[0], ""), (&o[1], ""), (&o[2], ""), (&o[3], "")],
    );
    for net in 1..=8u8 {
        let first = get_from(
            format!("127.{net}.0.1").parse().unwrap(),
            p.addr("fe"),
            "/",
            &[],
        )
        .await
        .text();
        for host in 2..6u8 {
            let src: IpAddr = format!("127.{net}.{host}.9").parse().unwrap();
            assert_eq!(
                get_from(src, p.addr("fe"), "/", &[]).await.text(),
                first,
                "{src} left its /16"
            );
        }
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_hdr_and_maglev_are_sticky_per_key() {
    let o = origins(&["a", "b", "c"]).await;
    let servers = [(&o[0], ""), (&o[1], ""), (&o[2], "")];
    for (algo, extra) in [
        ("uri", ""),
        ("hdr(x-user)", ""),
        ("maglev", "    hash_key: hdr(x-user)\n"),
    ] {
        let p = proxy(algo, extra, &servers);
        let mut seen = Vec::new();
        for k in 0..40 {
            let path = format!("/item/{k}?v={}", k * 7);
            let user = format!("user{k}");
            let first = get_from(
                "127.0.0.1".parse().unwrap(),
                p.addr("fe"),
                &path,
                &[("x-user", &user)],
            )
            .await
            .text();
            for v in 0..3 {
                // The query string does not count for `uri`.
                let again = format!("/item/{k}?other={v}");
                let got = get_from(
                    "127.0.0.1".parse().unwrap(),
                    p.addr("fe"),
                    &again,
                    &[("x-user", &user)],
                )
                .await
                .text();
                assert_eq!(got, first, "{algo}: key {k} moved");
            }
            seen.push(first);
        }
        let t = tally(seen.iter().map(String::as_str));
        assert_eq!(t.len(), 3, "{algo}: 40 keys over 3 servers: {t:?}");
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_when_actives_are_unavailable_and_disabled_never() {
    let o = origins(&["active", "spare", "off"]).await;
    let p = proxy(
        "roundrobin",
        "",
        &[
            (&o[0], ""),
            (&o[1], ", backup: true"),
            (&o[2], ", disabled: true"),
        ],
    );
    let t = run(&p, 20).await;
    assert_eq!(t.get("active"), Some(&20), "{t:?}");
    // The active server goes into maintenance: the backup takes over.
    let snap = p.handle().snapshot();
    let be = &snap.backends[0];
    be.servers[0]
        .live
        .set_admin(rampart_proxy::state::AdminState::Maint, &be.live);
    let t = run(&p, 10).await;
    assert_eq!(t.get("spare"), Some(&10), "{t:?}");
    be.servers[1]
        .live
        .set_admin(rampart_proxy::state::AdminState::Maint, &be.live);
    let g = get(p.addr("fe"), "/").await;
    assert_eq!(
        g.status, 503,
        "no usable server left, not even the disabled one"
    );
    assert_eq!(
        be.live.no_server.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    p.stop().await;
}
