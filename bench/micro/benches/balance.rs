//! A server pick from a backend of 1,000 servers (and of 10, for comparison), for each
//! balancing algorithm, as the request path makes it: one worker, the balancer's
//! structure built, a hash key per request for the hashing algorithms, and for
//! `leastconn` the pick released again as the request ends.
//!
//! `cargo bench --manifest-path bench/micro/Cargo.toml --bench balance`

#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rampart_proxy::snapshot::{CompileEnv, Snapshot, compile, install};
use rampart_proxy::state::Live;

const ALGOS: [&str; 8] = [
    "roundrobin",
    "static-rr",
    "leastconn",
    "source",
    "uri",
    "hdr(x-user)",
    "random",
    "maglev",
];

/// A backend of `n` servers with weights 1 to 4, balanced by `algo`.
fn snapshot(algo: &str, n: usize) -> (Arc<Snapshot>, Arc<Live>) {
    let mut yaml = format!(
        "frontends: {{ f: {{ bind: ':1', default_backend: b }} }}\n\
         backends:\n  b:\n    balance: \"{algo}\"\n    servers:\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "      s{i}: {{ address: \"10.{}.{}.{}:80\", weight: {} }}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256,
            1 + i % 4
        ));
    }
    let cfg = rampart_config::load_str(&yaml, None, &HashMap::<String, String>::new())
        .expect("the bench backend parses");
    let live = Live::new();
    let env = CompileEnv {
        base_dir: Path::new("."),
        live: &live,
        generation: 1,
        workers: 1,
        open_logs: false,
        previous: None,
    };
    let snap = Arc::new(compile(Arc::new(cfg), &env).expect("the bench backend compiles"));
    install(&snap, &live);
    (snap, live)
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [10usize, 1000] {
        for algo in ALGOS {
            let (snap, _live) = snapshot(algo, n);
            let b = &snap.backends[0].balancer;
            let hashes = b.algo().hashes();
            let mut key = 0x9e37_79b9_7f4a_7c15u64;
            g.bench_with_input(BenchmarkId::new(algo, n), &n, |bench, _| {
                bench.iter(|| {
                    key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let s = b.pick(hashes.then_some(key), None);
                    if let Some(i) = s {
                        b.released(i);
                    }
                    black_box(s)
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
