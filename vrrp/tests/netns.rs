//! Two speakers in network namespaces on a private bridge: who holds the virtual address,
//! and how fast it moves on a crash, a clean stop and a return, with and without
//! preemption, with equal priorities, and across a VRRP-dropping firewall. Root only: the
//! tests skip with a reason when not root, and fail instead when
//! RAMPART_REQUIRE_PRIVILEGED=1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lab;

use std::time::{Duration, Instant};

use lab::stall::Budget;
use lab::{Lab, Proc, privileged};

const BIN: &str = env!("CARGO_BIN_EXE_rampart-vrrp-speaker");

fn speaker(lab: &Lab, i: usize, priority: u8, extra: &[&str]) -> Proc {
    lab.speaker(BIN, i, priority, extra)
}

// v3, 0.1 s adverts: MDI(100) = 0.361 s, Skew(100) = 0.061 s, MDI(150) = 0.341 s.
const SLACK: Duration = Duration::from_millis(400);

#[test]
fn crash_clean_stop_and_preemption() {
    if !privileged(&[]) {
        return;
    }
    let lab = Lab::new(2);
    let mut a = speaker(&lab, 1, 150, &[]);
    let mut b = speaker(&lab, 2, 100, &[]);
    a.wait_state("MASTER", Duration::from_secs(5));
    lab.until_holder(1, Duration::from_secs(5));
    b.wait_state("BACKUP", Duration::from_secs(1));

    // Crash: b takes over within Master_Down_Interval (the VIP stays on a, as with
    // keepalived after SIGKILL, so only b is checked here).
    a.stop("KILL");
    let crash = lab.until_holds(2, Duration::from_millis(361) + SLACK);

    // a returns: it removes its stale address at start and preempts after MDI(150).
    let mut a = speaker(&lab, 1, 150, &[]);
    let back = lab.until_holder(1, Duration::from_millis(341) + Duration::from_secs(2));
    a.wait_state("MASTER", Duration::from_secs(1));

    // Clean stop: priority 0, b takes over after Skew_Time.
    let t = Instant::now();
    a.stop("TERM");
    lab.until_holder(2, Duration::from_millis(61) + SLACK);
    let clean = t.elapsed();
    println!("takeover after crash {crash:?}, preemption {back:?}, clean stop {clean:?}");
    drop(b);
}

#[test]
fn nopreempt_keeps_the_master() {
    if !privileged(&[]) {
        return;
    }
    let lab = Lab::new(2);
    let _b = speaker(&lab, 2, 100, &[]);
    lab.until_holder(2, Duration::from_secs(3));
    // A higher priority with nopreempt does not take over.
    let mut a = speaker(&lab, 1, 150, &["--nopreempt"]);
    a.wait_state("BACKUP", Duration::from_secs(2));
    let quiet = Budget::new(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    // A Master held off the CPU past Master_Down_Interval is rightly taken over.
    if quiet.stall() < Duration::from_millis(200) {
        assert!(lab.holds(2) && !lab.holds(1), "nopreempt took over");
    } else {
        println!("stalled {:?}: nopreempt check skipped", quiet.stall());
    }
}

/// A firewall that drops IP protocol 112 between the nodes (nftables on the bridge) makes
/// both Master; once it is lifted, equal priorities resolve to the higher address (b)
/// within one advert interval.
#[test]
fn split_brain_from_a_vrrp_drop_heals_by_address() {
    if !privileged(&["nft"]) {
        return;
    }
    let lab = Lab::new(2);
    lab.drop_vrrp(true);
    let mut a = speaker(&lab, 1, 100, &[]);
    let mut b = speaker(&lab, 2, 100, &[]);
    a.wait_state("MASTER", Duration::from_secs(3));
    b.wait_state("MASTER", Duration::from_secs(3));
    assert!(
        lab.holds(1) && lab.holds(2),
        "both hold the address while VRRP is dropped"
    );
    lab.drop_vrrp(false);
    let t = Instant::now();
    lab.until_holder(2, Duration::from_secs(2));
    println!(
        "double master resolved {:?} after the firewall rule was removed",
        t.elapsed()
    );
    a.wait_state("BACKUP", Duration::from_secs(1));
}
