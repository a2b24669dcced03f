//! The stick table under contention: what a `track-sc0 src` rule does per request
//! (find or create the client's entry, count the request in its counter and its rate),
//! from 1, 2 and 4 threads at once, over many keys and over one hot key.
//!
//! `cargo bench --manifest-path bench/micro/Cargo.toml --bench stick_table`

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rampart_config::stick::DataKind;
use rampart_proxy::stick::{Key, Table};

fn table() -> Table {
    let cfg = rampart_config::load_str(
        "frontends: { f: { bind: ':1', default_backend: b } }\n\
         backends: { b: { servers: { s: { address: '127.0.0.1:1' } } } }\n\
         stick_tables:\n  t: { type: ip, size: 100k, expire: 10m, store: [http_req_cnt, \"http_req_rate(10s)\", conn_cur, gpc0] }\n",
        None,
        &std::collections::HashMap::<String, String>::new(),
    )
    .expect("the bench table parses");
    let (name, def) = cfg.stick_tables.iter().next().expect("one table");
    Table::new(name, def)
}

/// One request's work on its client's entry, as the request path does it.
fn touch(t: &Table, k: &Key) {
    t.with(k, true, 0, |e| {
        e.add(DataKind::HttpReqCnt, 1);
        e.add(DataKind::HttpReqRate, 1);
        black_box(e.get(DataKind::HttpReqRate));
    });
}

/// Runs `iters` touches split over `threads` threads; the wall time of the whole.
fn contended(t: &Table, keys: &[Key], threads: usize, iters: u64) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for n in 0..threads {
            let start = &start;
            s.spawn(move || {
                start.wait();
                // Each thread walks the keys from its own offset, so that threads meet
                // on shards, not in lockstep on the same entry.
                let mut i = n * keys.len() / threads;
                for _ in 0..per {
                    touch(t, &keys[i]);
                    i += 1;
                    if i == keys.len() {
                        i = 0;
                    }
                }
            });
        }
        start.wait();
        // The scope joins every thread before it returns: the time covers them all.
        Instant::now()
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    let t = table();
    let spread: Vec<Key> = (0..10_000u32)
        .map(|i| Key::new(&(0x0a00_0000 + i).to_be_bytes()))
        .collect();
    let hot = vec![Key::new(&[10, 0, 0, 1])];
    for (name, keys) in [("10k_clients", &spread), ("one_client", &hot)] {
        let mut g = c.benchmark_group(format!("stick_table_track/{name}"));
        g.throughput(Throughput::Elements(1));
        for threads in [1, 2, 4] {
            g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, &n| {
                b.iter_custom(|iters| contended(&t, keys, n, iters))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
