//! Interoperation with keepalived: rampart-vrrp-speaker and keepalived as the two routers
//! of one virtual router, for VRRPv2 at 1 s and VRRPv3 at 1 s and 0.1 s, each side
//! winning in turn; the adverts on the bridge, captured by tshark, decode cleanly with good
//! checksums. Root only, and needs keepalived, tshark and nft; skips with a reason
//! otherwise, and fails instead when RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lab;

use std::time::Duration;

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
    std::thread::sleep(mdi + ai);
    assert!(
        !k.seen.iter().any(|l| l.contains("Entering MASTER STATE")),
        "keepalived became Master beside a higher-priority rampart:\n{}",
        k.seen.join("\n")
    );
    assert!(lab.holds(1) && !lab.holds(2));

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
    std::thread::sleep(mdi + ai);
    assert!(
        !r.seen.iter().any(|l| l.contains(" MASTER ")),
        "rampart became Master beside a higher-priority keepalived:\n{}",
        r.seen.join("\n")
    );
    assert!(lab.holds(2) && !lab.holds(1));

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
