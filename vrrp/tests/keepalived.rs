//! Interoperation with keepalived: rampart-vrrp-speaker and keepalived as the two routers
//! of one virtual router, for VRRPv2 at 1 s and VRRPv3 at 1 s and 0.1 s, each side
//! winning in turn; the adverts on the bridge, captured by tshark, decode cleanly with good
//! checksums. Root only, and needs keepalived, tshark and nft; skips with a reason
//! otherwise, and fails instead when RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lab;

use std::time::Duration;

use lab::stall::Budget;
use lab::{Keepalived, Lab, privileged};

const BIN: &str = env!("CARGO_BIN_EXE_rampart-vrrp-speaker");

fn interop(version: u8, interval_ms: u64) {
    if !privileged(&["keepalived", "tshark"]) {
        return;
    }
    let lab = Lab::new(2);
    let ai = Duration::from_millis(interval_ms);
    // Master_Down_Interval is at most 3 intervals plus one second (v2 skew).
    let mdi = ai * 3 + Duration::from_secs(1);
    let slack = Duration::from_millis(700);
    let (v, i) = (version.to_string(), interval_ms.to_string());
    let args = |prio: &'static str| -> Vec<String> {
        ["--version", &v, "--interval-ms", &i, "--garp-repeat", "1"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--name".to_string(), format!("prio{prio}")])
            .collect()
    };
    let rampart = |prio: u8| {
        let a = args("x");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        lab.speaker(BIN, 1, prio, &a)
    };
    let cap = lab.capture();

    // 1. rampart 150 beside keepalived 100: rampart is Master, keepalived Backup and stays
    //    so (it accepts rampart's adverts).
    let mut r = rampart(150);
    let mut k = lab.keepalived(
        2,
        &Keepalived {
            version,
            priority: 100,
            interval_ms,
            preempt: true,
        },
    );
    r.wait_state("MASTER", mdi + slack * 3);
    k.wait_line("Entering BACKUP STATE", mdi * 2 + slack);
    lab.until_holder(1, mdi + slack);
    let quiet = Budget::new(mdi);
    std::thread::sleep(mdi + ai);
    // A Master held off the CPU for longer than Master_Down_Interval is rightly taken
    // over; only a machine that kept running can show a wrong takeover.
    if quiet.stall() < mdi / 2 {
        assert!(
            !k.drain()
                .iter()
                .any(|l| l.contains("Entering MASTER STATE")),
            "keepalived became Master beside a higher-priority rampart:\n{}",
            k.seen.join("\n")
        );
        assert!(lab.holds(1) && !lab.holds(2));
    } else {
        println!("stalled {:?}: takeover check skipped", quiet.stall());
    }

    // 2. rampart stops cleanly: keepalived takes over after its Skew_Time.
    r.stop("TERM");
    k.wait_line("Entering MASTER STATE", Duration::from_secs(1) + slack);
    lab.until_holder(2, slack);

    // 3. rampart returns with 150 and preempts keepalived.
    let mut r = rampart(150);
    r.wait_state("MASTER", mdi + slack * 2);
    lab.until_holder(1, slack * 2);

    // 4. rampart 50 comes back behind keepalived: keepalived wins and rampart stays Backup.
    r.stop("TERM");
    lab.until_holder(2, Duration::from_secs(1) + slack);
    let mut r = rampart(50);
    r.wait_state("BACKUP", slack);
    let quiet = Budget::new(mdi);
    std::thread::sleep(mdi + ai);
    if quiet.stall() < mdi / 2 {
        assert!(
            !r.drain().iter().any(|l| l.contains(" MASTER ")),
            "rampart became Master beside a higher-priority keepalived:\n{}",
            r.seen.join("\n")
        );
        assert!(lab.holds(2) && !lab.holds(1));
    } else {
        println!("stalled {:?}: takeover check skipped", quiet.stall());
    }

    // 5. keepalived stops cleanly: rampart takes over after its Skew_Time.
    k.stop("TERM");
    r.wait_state("MASTER", Duration::from_secs(1) + slack);
    lab.until_holder(1, slack);
    drop(r);

    let ads = cap.finish();
    let ours = lab.addr(1);
    let theirs = lab.addr(2);
    let from = |src: &str| ads.iter().filter(|a| a.src == src).count();
    assert!(
        from(&ours) >= 3 && from(&theirs) >= 3,
        "too few adverts captured: {} from rampart, {} from keepalived",
        from(&ours),
        from(&theirs)
    );
    for a in &ads {
        assert_eq!(a.version, version, "{a:?}");
        assert_eq!(a.checksum, "Good", "tshark: bad checksum on {a:?}");
        assert_eq!(a.ttl, 255, "{a:?}");
        assert_eq!(a.addrs, lab.vip(), "{a:?}");
    }
    let clean_k = lab::gap(&ads, &ours, Some(0), &theirs);
    let clean_r = lab::gap(&ads, &theirs, Some(0), &ours);
    println!(
        "v{version} {interval_ms} ms: {} adverts from rampart and {} from keepalived, all Good; \
         priority 0 -> new master advert: keepalived after rampart {clean_k:?} s, rampart after keepalived {clean_r:?} s",
        from(&ours),
        from(&theirs)
    );
}

#[test]
fn keepalived_v2_1s() {
    interop(2, 1000);
}

#[test]
fn keepalived_v3_1s() {
    interop(3, 1000);
}

#[test]
fn keepalived_v3_100ms() {
    interop(3, 100);
}

/// Takeover times side by side: a pair of rampart speakers and a pair of keepalived
/// daemons in the same lab, crash (SIGKILL) and clean stop (SIGTERM), at 1 s and 0.1 s
/// (VRRPv3), three times each. Measured on the wire as keepalived's reference figures
/// are: the last advert of the old Master (its priority-0 advert for a clean stop) to the
/// first advert of the new one. Run by hand for docs/BENCHMARKS.md:
/// `cargo test --release -p rampart-vrrp --test keepalived -- --ignored --nocapture`
#[test]
#[ignore = "a measurement (about 90 s), not a check"]
fn takeover_side_by_side() {
    if !privileged(&["keepalived", "tshark"]) {
        return;
    }
    let intervals: Vec<u64> = std::env::var("RAMPART_LAB_INTERVALS").map_or(vec![1000, 100], |v| {
        v.split(',').filter_map(|x| x.parse().ok()).collect()
    });
    for interval_ms in intervals {
        for kind in ["keepalived", "rampart"] {
            let lab = Lab::new(2);
            let i = interval_ms.to_string();
            let start = |node: usize, prio: u8| {
                if kind == "rampart" {
                    lab.speaker(BIN, node, prio, &["--version", "3", "--interval-ms", &i])
                } else {
                    lab.keepalived(
                        node,
                        &Keepalived {
                            version: 3,
                            priority: prio,
                            interval_ms,
                            preempt: true,
                        },
                    )
                }
            };
            let limit = Duration::from_millis(interval_ms * 4 + 3000);
            let now = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            };
            let (mut crashes, mut stops) = (Vec::new(), Vec::new());
            let cap = lab.capture();
            let _b = start(2, 100);
            for _ in 0..3 {
                let a = start(1, 150);
                lab.until_holder(1, limit * 2);
                std::thread::sleep(Duration::from_millis(interval_ms * 2));
                crashes.push(now());
                if kind == "rampart" {
                    a.stop("KILL");
                } else {
                    lab::signal_pid(lab::keepalived_vrrp_pid(&lab, 1), "KILL");
                    drop(a);
                }
                lab.until_holds(2, limit);
                std::thread::sleep(Duration::from_millis(interval_ms));
                // The VIP a crashed node leaves behind is removed at its next start.
                let a = start(1, 150);
                lab.until_holder(1, limit * 2);
                std::thread::sleep(Duration::from_millis(interval_ms * 2));
                stops.push(now());
                a.stop("TERM");
                lab.until_holder(2, limit);
                std::thread::sleep(Duration::from_millis(interval_ms));
            }
            // Let the capture write out the last takeover before it stops.
            std::thread::sleep(Duration::from_secs(1));
            let ads = cap.finish();
            let (a1, a2) = (lab.addr(1), lab.addr(2));
            // From the last advert of node 1 before the event (priority 0 for a clean
            // stop) to the first advert of node 2 after it.
            let takeover = |at: f64, prio0: bool| {
                let old = ads.iter().filter(|a| a.src == a1).map(|a| a.time);
                let last = if prio0 {
                    let zero = ads.iter().filter(|a| a.src == a1 && a.priority == 0);
                    zero.map(|a| a.time)
                        .filter(|t| *t >= at)
                        .fold(f64::MAX, f64::min)
                } else {
                    old.filter(|t| *t < at + 0.05).fold(f64::MIN, f64::max)
                };
                let first = ads
                    .iter()
                    .filter(|a| a.src == a2 && a.time > last)
                    .map(|a| a.time)
                    .fold(f64::MAX, f64::min);
                assert!(
                    first < f64::MAX && last > f64::MIN && last < f64::MAX,
                    "no takeover found in the capture at {at}: last {last}, first {first}: {:?}",
                    ads.iter()
                        .filter(|a| a.time > at - 0.3)
                        .map(|a| (a.time - at, a.src.clone(), a.priority))
                        .collect::<Vec<_>>()
                );
                first - last
            };
            let crash: Vec<f64> = crashes.iter().map(|t| takeover(*t, false)).collect();
            let clean: Vec<f64> = stops.iter().map(|t| takeover(*t, true)).collect();
            let f = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{:.3}", x))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            println!(
                "| {kind} | v3 {interval_ms} ms | crash: {} s | clean stop: {} s |",
                f(&crash),
                f(&clean)
            );
        }
    }
}
