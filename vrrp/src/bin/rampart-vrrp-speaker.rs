//! A VRRP speaker on its own, without the proxy: for nodes that only need a floating
//! address, and for testing. One instance from the command line; each state change is
//! printed as `STATE <instance> <from> <to> <priority>`; SIGTERM or SIGINT stop it cleanly
//! (priority 0 advert, addresses released).
//!
//!     rampart-vrrp-speaker --interface eth0 --vrid 51 --priority 150 --vip 10.0.0.100/24 \
//!         [--version 2|3] [--interval-ms 1000] [--nopreempt] [--preempt-delay-ms N]
//!         [--unicast-peer IP]... [--checksum pseudo|message] [--notify SCRIPT]

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use rampart_vrrp::packet::{Checksum, Version};
use rampart_vrrp::speaker::{InstanceConfig, spawn};

fn parse(args: &[String]) -> Result<InstanceConfig, String> {
    let mut c = InstanceConfig {
        name: "vrrp".into(),
        interface: String::new(),
        version: Version::V3,
        vrid: 0,
        priority: 100,
        interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        vips: Vec::new(),
        checksum: Checksum::PseudoHeader,
        unicast_peers: Vec::new(),
        garp_repeat: 5,
        garp_delay: Duration::from_secs(5),
        garp_refresh: None,
        notify: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--name" => c.name = val()?,
            "--interface" => c.interface = val()?,
            "--vrid" => c.vrid = num(val()?)?.clamp(1, 255) as u8,
            "--priority" => c.priority = num(val()?)?.clamp(1, 255) as u8,
            "--interval-ms" => c.interval = Duration::from_millis(num(val()?)?.max(10)),
            "--preempt-delay-ms" => c.preempt_delay = Duration::from_millis(num(val()?)?),
            "--nopreempt" => c.preempt = false,
            "--version" => {
                c.version = match val()?.as_str() {
                    "2" => Version::V2,
                    "3" => Version::V3,
                    v => return Err(format!("--version: 2 or 3, not {v}")),
                }
            }
            "--checksum" => {
                c.checksum = match val()?.as_str() {
                    "pseudo" => Checksum::PseudoHeader,
                    "message" => Checksum::MessageOnly,
                    v => return Err(format!("--checksum: pseudo or message, not {v}")),
                }
            }
            "--vip" => {
                let v = val()?;
                let (ip, prefix) = v.split_once('/').unwrap_or((&v, "32"));
                let ip: Ipv4Addr = ip.parse().map_err(|_| format!("--vip: bad address {v}"))?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or(format!("--vip: bad prefix {v}"))?;
                c.vips.push((ip, prefix));
            }
            "--unicast-peer" => c
                .unicast_peers
                .push(val()?.parse().map_err(|_| format!("{a}: bad address"))?),
            "--notify" => c.notify = Some(val()?.into()),
            "--garp-repeat" => c.garp_repeat = num(val()?)? as u32,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if c.interface.is_empty() || c.vrid == 0 || c.vips.is_empty() {
        return Err("--interface, --vrid and at least one --vip are required".into());
    }
    Ok(c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rampart-vrrp-speaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rampart-vrrp-speaker: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (tx, mut rx) = tokio::sync::broadcast::channel(64);
        let handle = match spawn(cfg, tx, false).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("rampart-vrrp-speaker: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                println!(
                    "STATE {} {} {} {}",
                    e.instance,
                    e.from.as_str(),
                    e.to.as_str(),
                    e.priority
                );
            }
        });
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("rampart-vrrp-speaker: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}
