//! `show peers`: each peer's connection state, last sync and pending updates.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::AdminCtx;

/// Seconds since `t`, or `-` when never.
fn ago(t: Option<SystemTime>) -> String {
    t.and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "-".to_owned(), |d| format!("{}ms", d.as_millis()))
}

pub fn show(ctx: &AdminCtx) -> String {
    let (local, peers) = ctx.control.shared().live.peers.views();
    let Some((name, addr)) = local else {
        return "No peers configured.\n".into();
    };
    let tables: Vec<String> = ctx
        .control
        .shared()
        .snapshot
        .load()
        .tables
        .iter()
        .filter(|t| t.peers)
        .map(|t| t.name.to_string())
        .collect();
    let mut out = format!(
        "local: {name} addr={addr} tables={}\n",
        if tables.is_empty() {
            "-".to_owned()
        } else {
            tables.join(",")
        }
    );
    for p in peers {
        let _ = writeln!(
            out,
            "  peer: {} addr={} state={} inbound={} last_sync={} pending={} sent={} received={} reconnects={} last_error={}",
            p.name,
            p.addr,
            p.state,
            if p.inbound { "ESTABLISHED" } else { "NONE" },
            ago(p.last_sync),
            p.pending,
            p.updates_sent,
            p.updates_received,
            p.reconnects,
            p.last_error
                .as_deref()
                .map_or("-".to_owned(), |e| format!("{e:?}")),
        );
    }
    out
}
