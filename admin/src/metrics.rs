//! `/metrics`: Prometheus text format, built with the `prometheus` crate in one explicit
//! registry per scrape from the live state. Labels come only from configured names
//! (frontend, backend, server) and closed sets (status class, limit, state, result).

use std::sync::atomic::Ordering::Relaxed;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use rampart_proxy::state::Refusal;

use crate::AdminCtx;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

struct Families {
    reg: Registry,
}

impl Families {
    // Names and labels are constants, so construction does not fail; if it did, that
    // family would be left out rather than failing the scrape.
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
        self.reg.register(Box::new(c.clone())).ok()?;
        Some(c)
    }
    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).ok()?;
        self.reg.register(Box::new(g.clone())).ok()?;
        Some(g)
    }
}

fn set_counter(c: &Option<IntCounterVec>, labels: &[&str], v: u64) {
    if let Some(m) = c
        .as_ref()
        .and_then(|c| c.get_metric_with_label_values(labels).ok())
    {
        m.inc_by(v);
    }
}

fn set_gauge(g: &Option<IntGaugeVec>, labels: &[&str], v: i64) {
    if let Some(m) = g
        .as_ref()
        .and_then(|g| g.get_metric_with_label_values(labels).ok())
    {
        m.set(v);
    }
}

/// Process figures read from /proc: resident bytes, CPU seconds, open descriptors.
fn process_figures() -> (i64, f64, i64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (rss, cpu, fds)
}

/// The whole exposition.
pub fn render(ctx: &AdminCtx) -> String {
    let f = Families {
        reg: Registry::new(),
    };
    let shared = ctx.control.shared();
    let live = &shared.live;
    let snap = shared.snapshot.load_full();

    // Process and configuration.
    let start = f.gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch.",
        &[],
    );
    let start_s = ctx
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    set_gauge(&start, &[], start_s);
    let (rss, cpu, fds) = process_figures();
    set_gauge(
        &f.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[],
        ),
        &[],
        rss,
    );
    set_gauge(
        &f.gauge("process_open_fds", "Open file descriptors.", &[]),
        &[],
        fds,
    );
    let cpu_c = prometheus::Counter::with_opts(Opts::new(
        "process_cpu_seconds_total",
        "User and system CPU time spent in seconds.",
    ));
    if let Ok(c) = cpu_c {
        c.inc_by(cpu);
        let _ = f.reg.register(Box::new(c));
    }
    let g = &live.global;
    set_gauge(
        &f.gauge(
            "rampart_config_generation",
            "Generation of the configuration in use (1 at start, +1 per reload).",
            &[],
        ),
        &[],
        g.generation.load(Relaxed) as i64,
    );
    let reloads = f.counter(
        "rampart_reloads_total",
        "Configuration reloads by result.",
        &["result"],
    );
    set_counter(&reloads, &["ok"], g.reloads_ok.load(Relaxed));
    set_counter(&reloads, &["failed"], g.reloads_failed.load(Relaxed));
    let refused = f.counter(
        "rampart_runtime_changes_refused_total",
        "Changes refused over the runtime API (a bad map or ACL entry, a bad certificate or OCSP response), by what they would have changed.",
        &["kind"],
    );
    set_counter(&refused, &["map"], ctx.refused.map.load(Relaxed));
    set_counter(&refused, &["acl"], ctx.refused.acl.load(Relaxed));
    set_counter(&refused, &["ssl"], ctx.refused.ssl.load(Relaxed));
    set_gauge(
        &f.gauge(
            "rampart_current_connections",
            "Client connections open.",
            &[],
        ),
        &[],
        g.conns_cur.load(Relaxed) as i64,
    );
    set_gauge(
        &f.gauge(
            "rampart_parked_connections",
            "Idle keep-alive client connections set aside until their next request (part of rampart_current_connections).",
            &[],
        ),
        &[],
        g.conns_parked.load(Relaxed) as i64,
    );
    set_counter(
        &f.counter(
            "rampart_connections_total",
            "Client connections accepted.",
            &[],
        ),
        &[],
        g.conns_total.load(Relaxed),
    );
    set_counter(
        &f.counter("rampart_requests_total", "Requests received.", &[]),
        &[],
        g.requests.load(Relaxed),
    );
    set_counter(
        &f.counter(
            "rampart_dropped_logs_total",
            "Access log records dropped because a writer fell behind.",
            &[],
        ),
        &[],
        live.dropped_logs(),
    );
    if let Some(t) = live.current_tracer() {
        let spans = f.counter(
            "rampart_tracing_spans_total",
            "OpenTelemetry spans: exported, dropped (the export queue was full) or failed (the collector refused or could not be reached).",
            &["result"],
        );
        let c = &t.counters;
        set_counter(&spans, &["exported"], c.exported.load(Relaxed));
        set_counter(&spans, &["dropped"], c.dropped.load(Relaxed));
        set_counter(&spans, &["failed"], c.failed.load(Relaxed));
    }

    // Frontends.
    let l = ["frontend"];
    let fe_req = f.counter(
        "rampart_frontend_requests_total",
        "Requests received by the frontend.",
        &l,
    );
    let fe_resp = f.counter(
        "rampart_frontend_responses_total",
        "Responses sent by the frontend, by status class.",
        &["frontend", "code"],
    );
    let fe_in = f.counter(
        "rampart_frontend_bytes_in_total",
        "Request bytes received.",
        &l,
    );
    let fe_out = f.counter(
        "rampart_frontend_bytes_out_total",
        "Response bytes sent.",
        &l,
    );
    let fe_cur = f.gauge(
        "rampart_frontend_current_sessions",
        "Client connections open on the frontend.",
        &l,
    );
    let fe_max = f.gauge(
        "rampart_frontend_max_sessions",
        "Most client connections open at once.",
        &l,
    );
    let fe_lim = f.gauge(
        "rampart_frontend_limit_sessions",
        "Connection limit of the frontend (0: none).",
        &l,
    );
    let fe_tot = f.counter(
        "rampart_frontend_sessions_total",
        "Client connections accepted by the frontend.",
        &l,
    );
    let fe_den = f.counter(
        "rampart_frontend_denied_requests_total",
        "Requests denied by rules.",
        &l,
    );
    let fe_err = f.counter(
        "rampart_frontend_request_errors_total",
        "Malformed or refused client requests.",
        &l,
    );
    let fe_int = f.counter(
        "rampart_frontend_intercepted_requests_total",
        "Requests answered by rampart itself (return, redirect).",
        &l,
    );
    let fe_refused = f.counter(
        "rampart_frontend_refused_requests_total",
        "Requests refused, and responses cut, for the client's fault, by reason.",
        &["frontend", "reason"],
    );
    let fe_removed = f.counter(
        "rampart_frontend_removed_headers_total",
        "Header fields removed from requests: names with an underscore, and forwarding \
         headers from untrusted peers.",
        &["frontend", "reason"],
    );
    for fe in &snap.frontends {
        let n = [&*fe.name];
        let x = &fe.live;
        set_counter(&fe_req, &n, x.requests.load(Relaxed));
        for (i, c) in CLASSES.iter().enumerate() {
            set_counter(&fe_resp, &[&fe.name, c], x.responses.get(i));
        }
        set_counter(&fe_in, &n, x.bytes_in.load(Relaxed));
        set_counter(&fe_out, &n, x.bytes_out.load(Relaxed));
        set_gauge(&fe_cur, &n, x.conns_cur.load(Relaxed) as i64);
        set_gauge(&fe_max, &n, x.conns_max.load(Relaxed) as i64);
        set_gauge(&fe_lim, &n, x.limit.load(Relaxed) as i64);
        set_counter(&fe_tot, &n, x.conns_total.load(Relaxed));
        set_counter(&fe_den, &n, x.denied.load(Relaxed));
        set_counter(&fe_err, &n, x.errors.load(Relaxed));
        set_counter(&fe_int, &n, x.intercepted.load(Relaxed));
        for r in Refusal::ALL {
            set_counter(&fe_refused, &[&fe.name, r.name()], x.refused.get(r));
        }
        let removed = [
            ("underscore", &x.removed_underscore),
            ("forwarding", &x.removed_forwarding),
        ];
        for (why, v) in removed {
            set_counter(&fe_removed, &[&fe.name, why], v.load(Relaxed));
        }
    }

    // Backends.
    let l = ["backend"];
    let be_req = f.counter(
        "rampart_backend_requests_total",
        "Requests sent to the backend.",
        &l,
    );
    let be_resp = f.counter(
        "rampart_backend_responses_total",
        "Responses from the backend, by status class.",
        &["backend", "code"],
    );
    let be_in = f.counter(
        "rampart_backend_bytes_in_total",
        "Request bytes sent to the backend.",
        &l,
    );
    let be_out = f.counter(
        "rampart_backend_bytes_out_total",
        "Response bytes received from the backend.",
        &l,
    );
    let be_cur = f.gauge(
        "rampart_backend_current_requests",
        "Requests in flight to the backend.",
        &l,
    );
    let be_max = f.gauge(
        "rampart_backend_max_requests",
        "Most requests in flight to the backend at once.",
        &l,
    );
    let be_abrt = f.counter(
        "rampart_backend_aborted_requests_total",
        "Exchanges broken off, by the side that broke them off (client or server).",
        &["backend", "side"],
    );
    let be_econ = f.counter(
        "rampart_backend_connection_errors_total",
        "Failed connections to servers.",
        &l,
    );
    let be_eresp = f.counter(
        "rampart_backend_response_errors_total",
        "Failed responses from servers.",
        &l,
    );
    let be_retr = f.counter(
        "rampart_backend_retries_total",
        "Requests sent again after a failure.",
        &l,
    );
    let be_redis = f.counter(
        "rampart_backend_redispatches_total",
        "Retries sent to another server.",
        &l,
    );
    let be_nosrv = f.counter(
        "rampart_backend_no_server_total",
        "Requests answered 503 because no server was usable.",
        &l,
    );
    let be_brk = f.counter(
        "rampart_backend_breaker_rejections_total",
        "Requests refused by a circuit breaker, by limit.",
        &["backend", "limit"],
    );
    let be_q = f.gauge(
        "rampart_backend_current_queue",
        "Requests waiting in the backend's queue.",
        &l,
    );
    let be_qmax = f.gauge(
        "rampart_backend_max_queue",
        "Most requests waiting at once.",
        &l,
    );
    let be_conns = f.gauge(
        "rampart_backend_open_connections",
        "Open connections to the backend's servers.",
        &l,
    );
    let be_ej = f.gauge(
        "rampart_backend_ejected_servers",
        "Servers ejected by outlier detection.",
        &l,
    );
    let be_up = f.gauge(
        "rampart_backend_active_servers",
        "Servers the balancer may use.",
        &l,
    );
    // Servers.
    let sl = ["backend", "server"];
    let s_req = f.counter(
        "rampart_server_requests_total",
        "Requests sent to the server.",
        &sl,
    );
    let s_resp = f.counter(
        "rampart_server_responses_total",
        "Responses from the server, by status class.",
        &["backend", "server", "code"],
    );
    let s_cur = f.gauge(
        "rampart_server_current_requests",
        "Requests in flight to the server.",
        &sl,
    );
    let s_max = f.gauge(
        "rampart_server_max_requests",
        "Most requests in flight at once.",
        &sl,
    );
    let s_abrt = f.counter(
        "rampart_server_aborted_requests_total",
        "Exchanges broken off, by the side that broke them off (client or server).",
        &["backend", "server", "side"],
    );
    let s_econ = f.counter(
        "rampart_server_connection_errors_total",
        "Failed connections to the server.",
        &sl,
    );
    let s_eresp = f.counter(
        "rampart_server_response_errors_total",
        "Failed responses from the server.",
        &sl,
    );
    let s_retr = f.counter(
        "rampart_server_retries_total",
        "Retries sent to the server.",
        &sl,
    );
    let s_w = f.gauge("rampart_server_weight", "Current weight.", &sl);
    let s_up = f.gauge(
        "rampart_server_up",
        "1 when the balancer may use the server.",
        &sl,
    );
    let s_state = f.gauge(
        "rampart_server_check_state",
        "Health state from active checks (1 for the current one).",
        &["backend", "server", "state"],
    );
    let s_admin = f.gauge(
        "rampart_server_admin_state",
        "Administrative state (1 for the current one).",
        &["backend", "server", "state"],
    );
    let s_chk = f.counter(
        "rampart_server_check_failures_total",
        "Failed health checks.",
        &sl,
    );
    let s_down = f.counter(
        "rampart_server_check_down_transitions_total",
        "Transitions from UP to DOWN.",
        &sl,
    );
    let s_ej = f.counter(
        "rampart_server_ejections_total",
        "Ejections by outlier detection.",
        &sl,
    );
    let s_ejd = f.gauge(
        "rampart_server_ejected",
        "1 while ejected by outlier detection.",
        &sl,
    );
    for be in &snap.backends {
        let n = [&*be.name];
        let x = &be.live;
        set_counter(&be_req, &n, x.requests.load(Relaxed));
        for (i, c) in CLASSES.iter().enumerate() {
            set_counter(&be_resp, &[&be.name, c], x.responses.get(i));
        }
        set_counter(&be_in, &n, x.bytes_in.load(Relaxed));
        set_counter(&be_out, &n, x.bytes_out.load(Relaxed));
        set_gauge(&be_cur, &n, x.active.load(Relaxed) as i64);
        set_gauge(&be_max, &n, x.active_max.load(Relaxed) as i64);
        for (side, v) in x.aborts.by_side() {
            set_counter(&be_abrt, &[&be.name, side], v);
        }
        set_counter(&be_econ, &n, x.errors_conn.load(Relaxed));
        set_counter(&be_eresp, &n, x.errors_resp.load(Relaxed));
        set_counter(&be_retr, &n, x.retries.load(Relaxed));
        set_counter(&be_redis, &n, x.redispatches.load(Relaxed));
        set_counter(&be_nosrv, &n, x.no_server.load(Relaxed));
        let o = &x.overflow;
        for limit in rampart_proxy::state::Limit::ALL {
            set_counter(
                &be_brk,
                &[&be.name, limit.as_str()],
                o.get(limit).load(Relaxed),
            );
        }
        set_gauge(&be_q, &n, x.gate.pending() as i64);
        set_gauge(&be_qmax, &n, x.gate.pending_max.load(Relaxed) as i64);
        set_gauge(&be_conns, &n, x.conns_open.load(Relaxed) as i64);
        set_gauge(&be_ej, &n, x.ejected.load(Relaxed) as i64);
        set_gauge(&be_up, &n, be.balancer.usable_count() as i64);
        for s in &be.servers {
            let l = [&*be.name, &*s.name];
            let y = &s.live;
            set_counter(&s_req, &l, y.requests.load(Relaxed));
            for (i, c) in CLASSES.iter().enumerate() {
                set_counter(&s_resp, &[&be.name, &s.name, c], y.responses.get(i));
            }
            set_gauge(&s_cur, &l, y.active.load(Relaxed) as i64);
            set_gauge(&s_max, &l, y.active_max.load(Relaxed) as i64);
            for (side, v) in y.aborts.by_side() {
                set_counter(&s_abrt, &[&be.name, &s.name, side], v);
            }
            set_counter(&s_econ, &l, y.errors_conn.load(Relaxed));
            set_counter(&s_eresp, &l, y.errors_resp.load(Relaxed));
            set_counter(&s_retr, &l, y.retries.load(Relaxed));
            set_gauge(&s_w, &l, i64::from(y.weight()));
            set_gauge(&s_up, &l, i64::from(y.usable()));
            let info = y.check_info();
            let checked = info.enabled && !info.paused;
            let state = if !checked {
                "unchecked"
            } else if info.counter.up() {
                "up"
            } else {
                "down"
            };
            for st in ["up", "down", "unchecked"] {
                set_gauge(&s_state, &[&be.name, &s.name, st], i64::from(st == state));
            }
            let admin = match y.admin() {
                rampart_proxy::state::AdminState::Ready => "ready",
                rampart_proxy::state::AdminState::Drain => "drain",
                rampart_proxy::state::AdminState::Maint => "maint",
            };
            for st in ["ready", "drain", "maint"] {
                set_gauge(&s_admin, &[&be.name, &s.name, st], i64::from(st == admin));
            }
            set_counter(&s_chk, &l, info.failures);
            set_counter(&s_down, &l, info.downs);
            set_counter(&s_ej, &l, y.outlier.ejections.load(Relaxed));
            set_gauge(&s_ejd, &l, i64::from(y.ejected()));
        }
    }

    vrrp(ctx, &f);
    tables(ctx, &f);
    certificates(ctx, &f);
    xds(ctx, &f);

    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&f.reg.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Seconds until each served certificate expires (negative once it has).
fn certificates(ctx: &AdminCtx, f: &Families) {
    let snap = ctx.control.shared().snapshot.load();
    if snap.certificates.is_empty() {
        return;
    }
    let g = f.gauge(
        "rampart_certificate_expiry_seconds",
        "Seconds until the certificate expires; negative once it has.",
        &["frontend", "file"],
    );
    let now = rampart_proxy::tls::certs::now();
    for c in &snap.certificates {
        if let Some(t) = c.cert.not_after {
            set_gauge(&g, &[&c.frontend, &c.cert.file], t - now);
        }
    }
}

/// VRRP instances: state (one series per state, 1 for the current one), priorities and
/// counters. Families appear only when instances are configured.
fn tables(ctx: &AdminCtx, f: &Families) {
    let snap = ctx.control.shared().snapshot.load();
    if snap.tables.is_empty() {
        return;
    }
    let l = &["table"];
    let used = f.gauge("rampart_stick_table_used", "Entries in the stick table.", l);
    let size = f.gauge(
        "rampart_stick_table_size",
        "Entries the stick table can hold.",
        l,
    );
    for t in &snap.tables {
        set_gauge(&used, &[&t.name], t.used() as i64);
        set_gauge(&size, &[&t.name], t.size() as i64);
    }
    let (_, peers) = ctx.control.shared().live.peers.views();
    if peers.is_empty() {
        return;
    }
    let l = &["peer"];
    let up = f.gauge(
        "rampart_peer_connected",
        "1 while this node's connection to the peer is established.",
        l,
    );
    let pending = f.gauge(
        "rampart_peer_pending_batches",
        "Update batches queued for the peer.",
        l,
    );
    let sent = f.counter(
        "rampart_peer_updates_sent_total",
        "Table entries sent to the peer.",
        l,
    );
    let recv = f.counter(
        "rampart_peer_updates_received_total",
        "Table entries received from the peer.",
        l,
    );
    for p in &peers {
        set_gauge(&up, &[&p.name], i64::from(p.state == "ESTABLISHED"));
        set_gauge(&pending, &[&p.name], p.pending as i64);
        set_counter(&sent, &[&p.name], p.updates_sent);
        set_counter(&recv, &[&p.name], p.updates_received);
    }
}

fn vrrp(ctx: &AdminCtx, f: &Families) {
    let views = ctx.vrrp.views();
    if views.is_empty() {
        return;
    }
    let l = &["instance"];
    let state = f.gauge(
        "rampart_vrrp_state",
        "VRRP instance state: 1 for the current state.",
        &["instance", "state"],
    );
    let prio = f.gauge("rampart_vrrp_priority", "Configured VRRP priority.", l);
    let eff = f.gauge(
        "rampart_vrrp_effective_priority",
        "Advertised VRRP priority after tracking weights.",
        l,
    );
    let sent = f.counter(
        "rampart_vrrp_adverts_sent_total",
        "VRRP advertisements sent.",
        l,
    );
    let recv = f.counter(
        "rampart_vrrp_adverts_received_total",
        "Valid VRRP advertisements received for the instance.",
        l,
    );
    let errs = f.counter(
        "rampart_vrrp_errors_total",
        "VRRP packets dropped as invalid or not matching, and send failures.",
        l,
    );
    let trans = f.counter("rampart_vrrp_transitions_total", "VRRP state changes.", l);
    let tracked = f.gauge(
        "rampart_vrrp_tracking_failed",
        "Tracked objects (and the instance interface) currently failed.",
        l,
    );
    for v in &views {
        let name = v.name.as_str();
        for st in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            set_gauge(
                &state,
                &[name, &st.to_ascii_lowercase()],
                i64::from(v.state.as_str() == st),
            );
        }
        set_gauge(&prio, &[name], i64::from(v.priority));
        set_gauge(&eff, &[name], i64::from(v.effective_priority));
        set_counter(&sent, &[name], v.adverts_sent);
        set_counter(&recv, &[name], v.adverts_received);
        set_counter(&errs, &[name], v.errors);
        set_counter(&trans, &[name], v.transitions);
        set_gauge(&tracked, &[name], v.failed.len() as i64);
    }
}

/// The xDS client: connection state, resources held and updates accepted or rejected per
/// type, time of the last update. Families appear only with a control plane.
fn xds(ctx: &AdminCtx, f: &Families) {
    let Some(x) = ctx.xds.get() else {
        return;
    };
    let m = x.metrics();
    let up = f.gauge(
        "rampart_xds_connected",
        "1 while the stream to the xDS control plane is open.",
        &[],
    );
    set_gauge(&up, &[], i64::from(m.connected));
    let conns = f.counter(
        "rampart_xds_connects_total",
        "Streams opened to the xDS control plane.",
        &[],
    );
    set_counter(&conns, &[], m.connects);
    let l = &["type"];
    let res = f.gauge(
        "rampart_xds_resources",
        "Resources held from the control plane, by type.",
        l,
    );
    let warm = f.gauge(
        "rampart_xds_warming_resources",
        "Listeners and clusters waiting for their routes or endpoints.",
        l,
    );
    let ok = f.counter(
        "rampart_xds_updates_accepted_total",
        "Responses from the control plane accepted whole (ACK).",
        l,
    );
    let bad = f.counter(
        "rampart_xds_updates_rejected_total",
        "Responses from the control plane with a rejected resource (NACK).",
        l,
    );
    let last = f.gauge(
        "rampart_xds_last_update_timestamp_seconds",
        "When resources of the type last changed (Unix time; 0: never).",
        l,
    );
    for t in &m.types {
        set_gauge(&res, &[t.kind], t.resources as i64);
        set_gauge(&warm, &[t.kind], t.warming as i64);
        set_counter(&ok, &[t.kind], t.accepted);
        set_counter(&bad, &[t.kind], t.rejected);
        let ts = t
            .last_update
            .and_then(|w| w.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        set_gauge(&last, &[t.kind], ts);
    }
}
