//! `show stat` and `show info` in HAProxy's layouts: the 3.2 CSV columns (fields 0 to 112,
//! then `-`), row kinds and status strings, and the `show info` field names in order.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rampart_proxy::snapshot::{Backend, Frontend, Snapshot};
use rampart_proxy::state::{AdminState, StatusCounters};

use crate::AdminCtx;

/// The CSV columns, in order.
pub const STAT_FIELDS: [&str; 113] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
    "srid",
    "sess_other",
    "h1sess",
    "h2sess",
    "h3sess",
    "req_other",
    "h1req",
    "h2req",
    "h3req",
    "proto",
];

fn idx(name: &str) -> usize {
    STAT_FIELDS
        .iter()
        .position(|f| *f == name)
        .unwrap_or(STAT_FIELDS.len())
}

/// One row: its values by [`STAT_FIELDS`] position.
pub struct Row(pub Vec<String>);

impl Row {
    fn new() -> Self {
        Row(vec![String::new(); STAT_FIELDS.len()])
    }
    /// The value of the column `name`.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(idx(name)).map_or("", String::as_str)
    }

    fn set(&mut self, name: &str, v: impl ToString) -> &mut Self {
        let i = idx(name);
        if let Some(slot) = self.0.get_mut(i) {
            *slot = v.to_string();
        }
        self
    }
    fn hrsp(&mut self, c: &StatusCounters) -> &mut Self {
        for (i, name) in [
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
        ]
        .iter()
        .enumerate()
        {
            self.set(name, c.get(i));
        }
        self
    }
}

/// Which objects a `show stat` asks for.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    /// A proxy id, a proxy name, or all.
    pub proxy: Option<ProxyRef<'a>>,
    /// Bit mask: 1 frontends, 2 backends, 4 servers.
    pub types: i64,
    /// A server id, or all.
    pub sid: Option<usize>,
    pub up_only: bool,
    pub no_maint: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum ProxyRef<'a> {
    Id(usize),
    Name(&'a str),
}

impl Default for Filter<'_> {
    fn default() -> Self {
        Self {
            proxy: None,
            types: -1,
            sid: None,
            up_only: false,
            no_maint: false,
        }
    }
}

/// Proxy ids: frontends from 1 in configuration order, then backends.
pub fn frontend_id(snap: &Snapshot, i: usize) -> usize {
    let _ = snap;
    i + 1
}

pub fn backend_id(snap: &Snapshot, i: usize) -> usize {
    snap.frontends.len() + i + 1
}

/// `show stat json`: HAProxy's layout, one array of fields per row.
pub fn show_stat_json(ctx: &AdminCtx, f: &Filter<'_>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    let mut out = String::from("[");
    for (ri, row) in rows(ctx, &snap, f).iter().enumerate() {
        if ri > 0 {
            out.push(',');
        }
        let obj = match row.get("type") {
            "0" => "Frontend",
            "1" => "Backend",
            _ => "Server",
        };
        out.push('[');
        let mut first = true;
        for (pos, v) in row.0.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            let (ty, val) = if v.parse::<u64>().is_ok() {
                ("u64", v.clone())
            } else if v.parse::<i64>().is_ok() {
                ("s64", v.clone())
            } else {
                ("str", json_string(v))
            };
            let _ = write!(
                out,
                "{{\"objType\":\"{obj}\",\"proxyId\":{},\"id\":{},\"field\":{{\"pos\":{pos},\"name\":\"{}\"}},\"processNum\":1,\"tags\":{{\"origin\":\"Metric\",\"nature\":\"Output\",\"scope\":\"Process\"}},\"value\":{{\"type\":\"{ty}\",\"value\":{val}}}}}",
                row.get("iid"),
                row.get("sid"),
                STAT_FIELDS[pos]
            );
        }
        out.push(']');
    }
    out.push_str("]\n");
    out
}

fn typed_type(v: &str) -> &'static str {
    if v.parse::<u64>().is_ok() {
        "u64"
    } else if v.parse::<i64>().is_ok() {
        "s64"
    } else {
        "str"
    }
}

/// `show stat typed`: `<F|B|S>.<proxy id>.<object id>.<position>.<name>.<process>:<tags>:<type>:<value>`.
pub fn show_stat_typed(ctx: &AdminCtx, f: &Filter<'_>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    let mut out = String::new();
    for row in rows(ctx, &snap, f) {
        let kind = match row.get("type") {
            "0" => 'F',
            "1" => 'B',
            _ => 'S',
        };
        for (pos, v) in row.0.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "{kind}.{}.{}.{pos}.{}.1:MGP:{}:{v}",
                row.get("iid"),
                row.get("sid"),
                STAT_FIELDS[pos],
                typed_type(v)
            );
        }
    }
    out
}

/// `show info typed`: `<position>.<name>.<process>:<tags>:<type>:<value>`.
pub fn show_info_typed(ctx: &AdminCtx) -> String {
    let mut out = String::new();
    for (pos, line) in show_info(ctx).lines().enumerate() {
        if let Some((k, v)) = line.split_once(": ") {
            let _ = writeln!(out, "{pos}.{k}.1:MGP:{}:{v}", typed_type(v));
        }
    }
    out
}

/// A JSON string literal.
pub fn json_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    rampart_proxy::log::json_str(v, &mut out);
    out
}

fn quote(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// `show stat` as CSV: the header, then frontends, then each backend's servers and its
/// own row, each line ending with a comma.
pub fn show_stat(ctx: &AdminCtx, f: &Filter<'_>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    let mut out = String::from("# ");
    for name in STAT_FIELDS {
        out.push_str(name);
        out.push(',');
    }
    out.push_str("-,\n");
    for row in rows(ctx, &snap, f) {
        for v in &row.0 {
            out.push_str(&quote(v));
            out.push(',');
        }
        out.push_str(",\n");
    }
    out
}

fn wanted(f: &Filter<'_>, id: usize, name: &str) -> bool {
    match f.proxy {
        None => true,
        Some(ProxyRef::Id(i)) => i == id,
        Some(ProxyRef::Name(n)) => n == name,
    }
}

/// The rows `f` selects, in HAProxy's order.
pub fn rows(ctx: &AdminCtx, snap: &Snapshot, f: &Filter<'_>) -> Vec<Row> {
    let mut rows = Vec::new();
    let pid = 1;
    let now = Instant::now();
    if f.types & 1 != 0 {
        for (i, fe) in snap.frontends.iter().enumerate() {
            let id = frontend_id(snap, i);
            if wanted(f, id, &fe.name) {
                rows.push(frontend_row(fe, id, pid));
            }
        }
    }
    for (i, be) in snap.backends.iter().enumerate() {
        let id = backend_id(snap, i);
        if !wanted(f, id, &be.name) {
            continue;
        }
        if f.types & 4 != 0 {
            for (si, s) in be.servers.iter().enumerate() {
                if f.sid.is_some_and(|sid| sid != si + 1) {
                    continue;
                }
                let admin = s.live.admin();
                if f.no_maint && admin == AdminState::Maint {
                    continue;
                }
                let status = s.live.status_text();
                if f.up_only && !(status.starts_with("UP") || status == "no check") {
                    continue;
                }
                rows.push(server_row(be, si, id, pid, &status, now));
            }
        }
        if f.types & 2 != 0 {
            rows.push(backend_row(be, id, pid));
        }
    }
    let _ = ctx;
    rows
}

fn frontend_row(fe: &Frontend, id: usize, pid: u32) -> Row {
    let l = &fe.live;
    let mut r = Row::new();
    r.set("pxname", &fe.name)
        .set("svname", "FRONTEND")
        .set("scur", l.conns_cur.load(Relaxed))
        .set("smax", l.conns_max.load(Relaxed))
        .set("slim", l.limit.load(Relaxed))
        .set("stot", l.conns_total.load(Relaxed))
        .set("bin", l.bytes_in.load(Relaxed))
        .set("bout", l.bytes_out.load(Relaxed))
        .set("dreq", l.denied.load(Relaxed))
        .set("dresp", 0)
        .set("ereq", l.errors.load(Relaxed))
        .set("status", "OPEN")
        .set("pid", pid)
        .set("iid", id)
        .set("sid", 0)
        .set("type", 0)
        .set("rate", 0)
        .set("rate_lim", 0)
        .set("rate_max", 0)
        .set("req_rate", 0)
        .set("req_rate_max", 0)
        .set("req_tot", l.requests.load(Relaxed))
        .set("comp_in", l.comp.bytes_in.load(Relaxed))
        .set("comp_out", l.comp.bytes_out.load(Relaxed))
        .set("comp_byp", l.comp.bypassed.load(Relaxed))
        .set("comp_rsp", l.comp.responses.load(Relaxed))
        .set("mode", fe.mode.as_str())
        .set("conn_rate", 0)
        .set("conn_rate_max", 0)
        .set("conn_tot", l.conns_total.load(Relaxed))
        .set("intercepted", l.intercepted.load(Relaxed))
        .set("dcon", l.denied_conns.load(Relaxed))
        .set("dses", 0)
        .set("wrew", 0)
        .set("eint", 0)
        .hrsp(&l.responses);
    r
}

fn backend_row(be: &Backend, id: usize, pid: u32) -> Row {
    let l = &be.live;
    let usable: Vec<_> = be.servers.iter().filter(|s| s.live.usable()).collect();
    let act = usable.iter().filter(|s| !s.backup).count();
    let bck = usable.iter().filter(|s| s.backup).count();
    let weight: u64 = usable.iter().map(|s| u64::from(s.live.weight())).sum();
    let algo = match be.balancer.algo() {
        rampart_proxy::balance::Algo::RoundRobin => "roundrobin",
        rampart_proxy::balance::Algo::StaticRr => "static-rr",
        rampart_proxy::balance::Algo::LeastConn => "leastconn",
        rampart_proxy::balance::Algo::Source { .. } => "source",
        rampart_proxy::balance::Algo::Uri => "uri",
        rampart_proxy::balance::Algo::Hdr(_) => "hdr",
        rampart_proxy::balance::Algo::Random => "random",
        rampart_proxy::balance::Algo::Maglev => "maglev",
    };
    let mut r = Row::new();
    r.set("pxname", &be.name)
        .set("svname", "BACKEND")
        .set("qcur", l.gate.pending())
        .set("qmax", l.gate.pending_max.load(Relaxed))
        .set("scur", l.active.load(Relaxed))
        .set("smax", l.active_max.load(Relaxed))
        .set(
            "slim",
            be.gate
                .map_or(0, |g| g.max_requests.min(u64::from(u32::MAX))),
        )
        .set("stot", l.requests.load(Relaxed))
        .set("bin", l.bytes_in.load(Relaxed))
        .set("bout", l.bytes_out.load(Relaxed))
        .set("dreq", 0)
        .set("dresp", 0)
        .set("econ", l.errors_conn.load(Relaxed))
        .set("eresp", l.errors_resp.load(Relaxed))
        .set("wretr", l.retries.load(Relaxed))
        .set("wredis", l.redispatches.load(Relaxed))
        .set("status", if act + bck > 0 { "UP" } else { "DOWN" })
        .set("weight", weight)
        .set("act", act)
        .set("bck", bck)
        .set("chkdown", 0)
        .set("lastchg", 0)
        .set("downtime", 0)
        .set("pid", pid)
        .set("iid", id)
        .set("sid", 0)
        .set("lbtot", l.requests.load(Relaxed))
        .set("type", 1)
        .set("rate", 0)
        .set("rate_max", 0)
        .set("req_tot", l.requests.load(Relaxed))
        .set("cli_abrt", l.aborts.client.load(Relaxed))
        .set("srv_abrt", l.aborts.server.load(Relaxed))
        .set("comp_in", l.comp.bytes_in.load(Relaxed))
        .set("comp_out", l.comp.bytes_out.load(Relaxed))
        .set("comp_byp", l.comp.bypassed.load(Relaxed))
        .set("comp_rsp", l.comp.responses.load(Relaxed))
        .set("lastsess", -1)
        .set("qtime", 0)
        .set("ctime", 0)
        .set("rtime", 0)
        .set("ttime", 0)
        .set("mode", be.mode.as_str())
        .set("algo", algo)
        .set("conn_tot", l.requests.load(Relaxed))
        .set("intercepted", 0)
        .set("wrew", 0)
        .set("eint", 0)
        .set("uweight", weight)
        .hrsp(&l.responses);
    r
}

fn server_row(be: &Backend, si: usize, id: usize, pid: u32, status: &str, now: Instant) -> Row {
    let s = &be.servers[si];
    let l = &s.live;
    let info = l.check_info();
    let checked = info.enabled && !info.paused;
    let mut r = Row::new();
    r.set("pxname", &be.name)
        .set("svname", &s.name)
        .set("qcur", 0)
        .set("qmax", 0)
        .set("scur", l.active.load(Relaxed))
        .set("smax", l.active_max.load(Relaxed))
        .set("stot", l.requests.load(Relaxed))
        .set("bin", l.bytes_in.load(Relaxed))
        .set("bout", l.bytes_out.load(Relaxed))
        .set("dresp", 0)
        .set("econ", l.errors_conn.load(Relaxed))
        .set("eresp", l.errors_resp.load(Relaxed))
        .set("wretr", l.retries.load(Relaxed))
        .set("wredis", 0)
        .set("status", status)
        .set("weight", l.weight())
        .set("act", u8::from(!s.backup))
        .set("bck", u8::from(s.backup))
        .set(
            "lastchg",
            now.saturating_duration_since(info.last_change).as_secs(),
        )
        .set("pid", pid)
        .set("iid", id)
        .set("sid", si + 1)
        .set("lbtot", l.requests.load(Relaxed))
        .set("type", 2)
        .set("rate", 0)
        .set("rate_max", 0)
        .set("cli_abrt", l.aborts.client.load(Relaxed))
        .set("srv_abrt", l.aborts.server.load(Relaxed))
        .set("lastsess", -1)
        .set("qtime", 0)
        .set("ctime", 0)
        .set("rtime", 0)
        .set("ttime", 0)
        .set("addr", s.upstream.addr)
        .set("mode", be.mode.as_str())
        .set("wrew", 0)
        .set("eint", 0)
        .set("uweight", l.weight())
        .set("srid", 1)
        .hrsp(&l.responses);
    let max = l.max_active.load(Relaxed);
    if max > 0 {
        r.set("slim", max);
    }
    if checked {
        r.set("chkfail", info.failures)
            .set("chkdown", info.downs)
            .set("downtime", info.downtime_at(now).as_secs())
            .set("check_rise", info.counter.rise)
            .set("check_fall", info.counter.fall)
            .set("check_health", info.counter.health);
        match &info.last {
            Some(o) => {
                r.set("check_status", o.status.as_str())
                    .set("check_duration", o.duration.as_millis())
                    .set("check_desc", &o.desc);
                if let Some(c) = o.code {
                    r.set("check_code", c);
                }
            }
            None => {
                r.set("check_status", "INI");
            }
        }
    }
    r
}

/// `show info`: (name, value) in HAProxy's order; fields without a value are left out.
pub fn show_info(ctx: &AdminCtx) -> String {
    let g = &ctx.control.shared().live.global;
    let up = ctx.started_at.elapsed().as_secs();
    let snap = ctx.control.shared().snapshot.load_full();
    let uptime = format!(
        "{}d {}h{:02}m{:02}s",
        up / 86400,
        (up / 3600) % 24,
        (up / 60) % 60,
        up % 60
    );
    let start = ctx
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let listeners = ctx.control.bound().len();
    let fields: Vec<(&str, String)> = vec![
        // Tools check `Name` (haproxyadmin accepts only HAProxy) and read `Version` as the
        // API level: the HAProxy release whose runtime API this is, then rampart's own.
        ("Name", "HAProxy".into()),
        (
            "Version",
            format!("3.2.0-rampart-{}", env!("CARGO_PKG_VERSION")),
        ),
        ("Release_date", "2026/11/22".into()),
        ("Nbthread", snap.global.threads.to_string()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", ctx.pid.to_string()),
        ("Uptime", uptime),
        ("Uptime_sec", up.to_string()),
        ("Memmax_MB", "0".into()),
        ("PoolAlloc_MB", "0".into()),
        ("PoolUsed_MB", "0".into()),
        ("PoolFailed", "0".into()),
        ("Ulimit-n", "0".into()),
        ("Maxsock", "0".into()),
        ("Maxconn", g.limit.load(Relaxed).to_string()),
        ("Hard_maxconn", g.limit.load(Relaxed).to_string()),
        ("CurrConns", g.conns_cur.load(Relaxed).to_string()),
        ("CumConns", g.conns_total.load(Relaxed).to_string()),
        ("CumReq", g.requests.load(Relaxed).to_string()),
        ("MaxSslConns", "0".into()),
        ("CurrSslConns", "0".into()),
        ("CumSslConns", "0".into()),
        ("Maxpipes", "0".into()),
        ("PipesUsed", "0".into()),
        ("PipesFree", "0".into()),
        ("ConnRate", "0".into()),
        ("ConnRateLimit", "0".into()),
        ("MaxConnRate", "0".into()),
        ("SessRate", "0".into()),
        ("SessRateLimit", "0".into()),
        ("MaxSessRate", "0".into()),
        ("SslRate", "0".into()),
        ("SslRateLimit", "0".into()),
        ("MaxSslRate", "0".into()),
        ("SslFrontendKeyRate", "0".into()),
        ("SslFrontendMaxKeyRate", "0".into()),
        ("SslFrontendSessionReuse_pct", "0".into()),
        ("SslBackendKeyRate", "0".into()),
        ("SslBackendMaxKeyRate", "0".into()),
        ("SslCacheLookups", "0".into()),
        ("SslCacheMisses", "0".into()),
        ("CompressBpsIn", "0".into()),
        ("CompressBpsOut", "0".into()),
        ("CompressBpsRateLim", "0".into()),
        ("ZlibMemUsage", "0".into()),
        ("MaxZlibMemUsage", "0".into()),
        ("Tasks", "0".into()),
        ("Run_queue", "0".into()),
        ("Idle_pct", "100".into()),
        ("node", ctx.node.clone()),
        ("description", "rampart".into()),
        ("Stopping", "0".into()),
        ("Jobs", g.conns_cur.load(Relaxed).to_string()),
        ("Unstoppable", "0".into()),
        ("Listeners", listeners.to_string()),
        ("ActivePeers", "0".into()),
        ("ConnectedPeers", "0".into()),
        (
            "DroppedLogs",
            ctx.control.shared().live.dropped_logs().to_string(),
        ),
        ("BusyPolling", "0".into()),
        ("FailedResolutions", "0".into()),
        ("TotalBytesOut", "0".into()),
        ("TotalSplicedBytesOut", "0".into()),
        ("BytesOutRate", "0".into()),
        ("DebugCommandsIssued", "0".into()),
        ("CumRecvLogs", "0".into()),
        ("Build", format!("rampart {}", env!("CARGO_PKG_VERSION"))),
        ("Memmax_bytes", "0".into()),
        ("PoolAlloc_bytes", "0".into()),
        ("PoolUsed_bytes", "0".into()),
        ("Start_time_sec", start.to_string()),
        ("Tainted", "0".into()),
        ("TotalWarnings", "0".into()),
        ("MaxconnReached", "0".into()),
        ("BootTime_ms", "0".into()),
        ("Niced_tasks", "0".into()),
        ("CurrStreams", "0".into()),
        ("CumStreams", "0".into()),
        ("BlockedTrafficWarnings", "0".into()),
        ("PatternsAdded", "0".into()),
        ("PatternsFreed", "0".into()),
        ("NbThreadGroups", "1".into()),
    ];
    let mut out = String::new();
    for (k, v) in fields {
        if !v.is_empty() {
            let _ = writeln!(out, "{k}: {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_match_haproxy_positions() {
        assert_eq!(STAT_FIELDS.len(), 113);
        assert_eq!(STAT_FIELDS[17], "status");
        assert_eq!(STAT_FIELDS[32], "type");
        assert_eq!(STAT_FIELDS[36], "check_status");
        assert_eq!(STAT_FIELDS[48], "req_tot");
        assert_eq!(STAT_FIELDS[73], "addr");
        assert_eq!(STAT_FIELDS[79], "conn_tot");
        assert_eq!(STAT_FIELDS[89], "src_ilim");
        assert_eq!(STAT_FIELDS[99], "uweight");
        assert_eq!(STAT_FIELDS[112], "proto");
    }
}
