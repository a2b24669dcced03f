//! `show vrrp`: the VRRP instances, their state and counters, as a space-separated table
//! (one line per instance after a `#` header, like `show servers state`) or JSON.

use std::fmt::Write;
use std::time::SystemTime;

use rampart_vrrp::group::View;
use rampart_vrrp::packet::Version;

use crate::AdminCtx;

/// The columns of `show vrrp`.
pub const FIELDS: [&str; 16] = [
    "name",
    "state",
    "priority",
    "effective_priority",
    "interface",
    "vrid",
    "version",
    "interval_ms",
    "master",
    "last_change",
    "adverts_sent",
    "adverts_received",
    "errors",
    "transitions",
    "addresses",
    "tracking_failed",
];

/// Seconds since the last state change, or `-`.
pub fn last_change(v: &View) -> String {
    v.last_transition
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "-".to_owned(), |d| d.as_secs().to_string())
}

/// The values of one instance, in [`FIELDS`] order.
pub fn values(v: &View) -> [String; 16] {
    [
        v.name.clone(),
        v.state.as_str().to_owned(),
        v.priority.to_string(),
        v.effective_priority.to_string(),
        v.interface.clone(),
        v.vrid.to_string(),
        match v.version {
            Version::V2 => "2",
            Version::V3 => "3",
        }
        .to_owned(),
        v.interval.as_millis().to_string(),
        v.master.map_or_else(|| "-".to_owned(), |m| m.to_string()),
        last_change(v),
        v.adverts_sent.to_string(),
        v.adverts_received.to_string(),
        v.errors.to_string(),
        v.transitions.to_string(),
        v.vips
            .iter()
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect::<Vec<_>>()
            .join(","),
        if v.failed.is_empty() {
            "-".to_owned()
        } else {
            v.failed.join(",")
        },
    ]
}

pub fn show(ctx: &AdminCtx, args: &[&str]) -> String {
    let views = ctx.vrrp.views();
    match args {
        [] => {
            let mut out = format!("# {}\n", FIELDS.join(" "));
            for v in &views {
                let _ = writeln!(out, "{}", values(v).join(" "));
            }
            out
        }
        ["json"] => {
            let items: Vec<String> = views
                .iter()
                .map(|v| {
                    let vals = values(v);
                    let fields: Vec<String> = FIELDS
                        .iter()
                        .zip(vals.iter())
                        .map(|(k, val)| {
                            let numeric = !matches!(
                                *k,
                                "name"
                                    | "state"
                                    | "interface"
                                    | "master"
                                    | "addresses"
                                    | "tracking_failed"
                            ) && val != "-";
                            if numeric {
                                format!("\"{k}\":{val}")
                            } else {
                                let mut q = String::new();
                                rampart_proxy::log::json_str(val, &mut q);
                                format!("\"{k}\":{q}")
                            }
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                })
                .collect();
            format!("[{}]\n", items.join(","))
        }
        _ => "'show vrrp' only supports 'json'.\n".to_owned(),
    }
}
