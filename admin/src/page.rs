//! The HTML stats page, in the spirit of HAProxy's: one table per frontend and backend,
//! one row per server coloured by state, totals per backend, and (for an authenticated
//! admin) the form that sets selected servers ready, drain or maint.

use std::fmt::Write as _;

use crate::AdminCtx;
use crate::stat::{self, Filter, Row};

/// What the page shows.
pub struct PageOpts<'a> {
    pub uri: &'a str,
    pub refresh: Option<u64>,
    pub admin: bool,
    pub filter: Filter<'a>,
    /// The result of the last admin action (`;st=`).
    pub status: Option<&'a str>,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The CSS class of a server row, by status.
fn class_of(status: &str, backup: bool) -> &'static str {
    match status {
        "UP" if backup => "backup",
        "UP" | "no check" => {
            if backup {
                "backup"
            } else {
                "up"
            }
        }
        s if s.starts_with("UP ") => "going-down",
        s if s.starts_with("DOWN ") => "going-up",
        "DOWN" => "down",
        s if s.starts_with("DRAIN") => "drain",
        "MAINT" => "maint",
        _ => "nocheck",
    }
}

fn human_secs(s: &str) -> String {
    let Ok(n) = s.parse::<u64>() else {
        return s.to_owned();
    };
    if n < 60 {
        format!("{n}s")
    } else if n < 3600 {
        format!("{}m{}s", n / 60, n % 60)
    } else if n < 86400 {
        format!("{}h{}m", n / 3600, (n / 60) % 60)
    } else {
        format!("{}d{}h", n / 86400, (n / 3600) % 24)
    }
}

const STYLE: &str =
    "body{font-family:Arial,Helvetica,sans-serif;font-size:12px;margin:8px;background:#fff}
h1{font-size:18px;margin:4px 0;color:#fff;background:#20435c;padding:6px}
h2{font-size:14px;margin:14px 0 2px 0}
table.px{border-collapse:collapse;margin-bottom:6px;min-width:900px}
table.px th,table.px td{border:1px solid #999;padding:1px 4px;text-align:right;white-space:nowrap}
table.px th{background:#20435c;color:#fff;font-weight:normal}
table.px th.name{text-align:left;background:#b00040;font-weight:bold}
table.px td.name{text-align:left}
tr.frontend td,tr.backend td{background:#e8e8d0;font-weight:bold}
tr.up td{background:#c0ffc0} tr.backup td{background:#b0d0ff}
tr.going-down td{background:#ffffa0} tr.going-up td{background:#ffd020}
tr.down td{background:#ff9090} tr.drain td{background:#b0b0ff}
tr.maint td{background:#c0c0c0} tr.nocheck td{background:#e0e0e0}
table.legend td{padding:1px 6px;border:1px solid #999}
div.info{margin:6px 0} div.status{padding:4px;margin:6px 0;background:#d0ffd0;border:1px solid #080}
div.status.failed{background:#ffd0d0;border-color:#800}";

/// The whole page.
pub fn render(ctx: &AdminCtx, o: &PageOpts<'_>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    let rows = stat::rows(ctx, &snap, &o.filter);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Statistics Report for rampart on {}</title>\n",
        esc(&ctx.node)
    );
    if let Some(r) = o.refresh {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{r}\">");
    }
    let _ = writeln!(out, "<style>{STYLE}</style></head><body>");
    let _ = writeln!(
        out,
        "<h1>rampart {} on {} (pid {})</h1>",
        env!("CARGO_PKG_VERSION"),
        esc(&ctx.node),
        ctx.pid
    );
    let g = &ctx.control.shared().live.global;
    let up = ctx.started_at.elapsed().as_secs();
    let _ = writeln!(
        out,
        "<div class=\"info\">uptime = {}; current connections = {}; total connections = {}; requests = {}; configuration generation = {}</div>",
        human_secs(&up.to_string()),
        g.conns_cur.load(std::sync::atomic::Ordering::Relaxed),
        g.conns_total.load(std::sync::atomic::Ordering::Relaxed),
        g.requests.load(std::sync::atomic::Ordering::Relaxed),
        g.generation.load(std::sync::atomic::Ordering::Relaxed),
    );
    let base = o.uri;
    let _ = writeln!(
        out,
        "<div class=\"info\">Display: <a href=\"{base}{}\">{}</a> · <a href=\"{base};csv\">CSV export</a> · <a href=\"{base};json\">JSON export</a> · {} </div>",
        if o.refresh.is_some() {
            ";norefresh"
        } else {
            ""
        },
        if o.refresh.is_some() {
            "Disable refresh"
        } else {
            "Enable refresh"
        },
        if o.filter.up_only {
            format!("<a href=\"{base}\">Show all servers</a>")
        } else {
            format!("<a href=\"{base};up\">Hide DOWN servers</a>")
        },
    );
    out.push_str("<table class=\"legend\"><tr><td style=\"background:#c0ffc0\">active UP</td><td style=\"background:#b0d0ff\">backup UP</td><td style=\"background:#ffffa0\">UP, going down</td><td style=\"background:#ffd020\">DOWN, going up</td><td style=\"background:#ff9090\">DOWN</td><td style=\"background:#b0b0ff\">DRAIN</td><td style=\"background:#c0c0c0\">MAINT</td><td style=\"background:#e0e0e0\">no check</td></tr></table>\n");
    if let Some(st) = o.status {
        let (msg, failed) = match st {
            "DONE" => ("Action processed successfully.", false),
            "NONE" => ("Nothing has changed.", false),
            "PART" => ("Action not processed for some servers.", true),
            "DENY" => ("Action denied.", true),
            "ERRP" => ("Action not processed because of invalid parameters.", true),
            _ => ("Unexpected result.", true),
        };
        let _ = writeln!(
            out,
            "<div class=\"status{}\">{msg}</div>",
            if failed { " failed" } else { "" }
        );
    }
    vrrp_section(ctx, &mut out);
    tables_section(ctx, &mut out);
    // Frontends.
    for r in rows.iter().filter(|r| r.get("type") == "0") {
        let _ = writeln!(
            out,
            "<h2>Frontend {}{}</h2>",
            esc(r.get("pxname")),
            mode_note(r.get("mode"))
        );
        out.push_str("<table class=\"px\">");
        header(&mut out, false);
        row_html(&mut out, r, "frontend", false, None);
        out.push_str("</table>\n");
    }
    // Backends: their servers, then the totals row.
    let mut i = 0;
    while i < rows.len() {
        if rows[i].get("type") == "0" {
            i += 1;
            continue;
        }
        let name = rows[i].get("pxname").to_owned();
        let _ = writeln!(
            out,
            "<h2>Backend {}{}</h2>",
            esc(&name),
            mode_note(rows[i].get("mode"))
        );
        let admin_form = o.admin;
        if admin_form {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{base}\"><input type=\"hidden\" name=\"b\" value=\"{}\">",
                esc(&name)
            );
        }
        out.push_str("<table class=\"px\">");
        header(&mut out, admin_form);
        while i < rows.len() && rows[i].get("pxname") == name && rows[i].get("type") != "0" {
            let r = &rows[i];
            if r.get("type") == "2" {
                let class = class_of(r.get("status"), r.get("bck") == "1");
                row_html(&mut out, r, class, admin_form, Some(r.get("svname")));
            } else {
                row_html(&mut out, r, "backend", admin_form, None);
            }
            i += 1;
        }
        out.push_str("</table>\n");
        if admin_form {
            out.push_str("Choose the action to perform on the checked servers: <select name=\"action\"><option value=\"\"></option><option value=\"ready\">Set state to READY</option><option value=\"drain\">Set state to DRAIN</option><option value=\"maint\">Set state to MAINT</option><option value=\"dhlth\">Health: disable checks</option><option value=\"ehlth\">Health: enable checks</option><option value=\"hrunn\">Health: force UP</option><option value=\"hdown\">Health: force DOWN</option></select> <input type=\"submit\" value=\"Apply\"></form>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, admin: bool) {
    out.push_str("<tr>");
    if admin {
        out.push_str("<th rowspan=\"2\"></th>");
    }
    out.push_str("<th class=\"name\" rowspan=\"2\">Name</th><th colspan=\"3\">Queue</th><th colspan=\"4\">Sessions</th><th colspan=\"2\">Bytes</th><th colspan=\"2\">Denied</th><th colspan=\"3\">Errors</th><th colspan=\"2\">Warnings</th><th colspan=\"9\">Server</th></tr>\n<tr><th>Cur</th><th>Max</th><th>Limit</th><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th><th>In</th><th>Out</th><th>Req</th><th>Resp</th><th>Req</th><th>Conn</th><th>Resp</th><th>Retr</th><th>Redis</th><th>Status</th><th>LastChk</th><th>Wght</th><th>Act</th><th>Bck</th><th>Chk</th><th>Dwn</th><th>Dwntme</th><th>Thrtle</th></tr>\n");
}

fn row_html(out: &mut String, r: &Row, class: &str, admin: bool, server: Option<&str>) {
    let _ = write!(out, "<tr class=\"{class}\">");
    if admin {
        match server {
            Some(s) => {
                let _ = write!(
                    out,
                    "<td><input type=\"checkbox\" name=\"s\" value=\"{}\"></td>",
                    esc(s)
                );
            }
            None => out.push_str("<td></td>"),
        }
    }
    let name = match r.get("type") {
        "0" => "Frontend".to_owned(),
        "1" => "Backend".to_owned(),
        _ => r.get("svname").to_owned(),
    };
    let _ = write!(out, "<td class=\"name\">{}</td>", esc(&name));
    let status = match r.get("type") {
        "2" => format!("{} {}", human_secs(r.get("lastchg")), r.get("status")),
        _ => r.get("status").to_owned(),
    };
    let last_chk = match r.get("check_status") {
        "" => String::new(),
        st => {
            let code = r.get("check_code");
            let dur = r.get("check_duration");
            let mut s = st.to_owned();
            if !code.is_empty() {
                s.push_str(&format!("/{code}"));
            }
            if !dur.is_empty() {
                s.push_str(&format!(" in {dur}ms"));
            }
            s
        }
    };
    for v in [
        r.get("qcur"),
        r.get("qmax"),
        r.get("qlimit"),
        r.get("scur"),
        r.get("smax"),
        r.get("slim"),
        r.get("stot"),
        r.get("bin"),
        r.get("bout"),
        r.get("dreq"),
        r.get("dresp"),
        r.get("ereq"),
        r.get("econ"),
        r.get("eresp"),
        r.get("wretr"),
        r.get("wredis"),
        &status,
        &last_chk,
        r.get("weight"),
        if r.get("type") == "2" {
            if r.get("act") == "1" { "Y" } else { "-" }
        } else {
            r.get("act")
        },
        if r.get("type") == "2" {
            if r.get("bck") == "1" { "Y" } else { "-" }
        } else {
            r.get("bck")
        },
        r.get("chkfail"),
        r.get("chkdown"),
        &human_secs(r.get("downtime")),
        "-",
    ] {
        let _ = write!(out, "<td>{}</td>", esc(v));
    }
    out.push_str("</tr>\n");
}

/// The VRRP instances, when there are any.
fn tables_section(ctx: &AdminCtx, out: &mut String) {
    let snap = ctx.control.shared().snapshot.load();
    if snap.tables.is_empty() {
        return;
    }
    out.push_str("<h2>Stick tables</h2>\n<table class=\"px\"><tr><th>Table</th><th>Type</th><th>Used</th><th>Size</th><th>Expire</th><th>Stores</th><th>Peers</th></tr>\n");
    for t in &snap.tables {
        let stores: Vec<&str> = t.layout.order.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.name),
            t.key_type.name(),
            t.used(),
            t.size(),
            t.expire()
                .map_or("-".to_owned(), |e| format!("{} s", e.as_secs_f64())),
            esc(&stores.join(", ")),
            if t.peers { "yes" } else { "no" },
        );
    }
    out.push_str("</table>\n");
}

fn vrrp_section(ctx: &AdminCtx, out: &mut String) {
    let views = ctx.vrrp.views();
    if views.is_empty() {
        return;
    }
    out.push_str("<h2>VRRP</h2>\n<table class=\"px\"><tr>");
    for h in [
        "Instance",
        "State",
        "Priority",
        "Effective",
        "Interface",
        "VRID",
        "Version",
        "Interval",
        "Master",
        "Last change",
        "Sent",
        "Received",
        "Errors",
        "Transitions",
        "Addresses",
        "Tracking failed",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>\n");
    for v in &views {
        let class = match v.state.as_str() {
            "MASTER" => "up",
            "BACKUP" => "backup",
            "FAULT" => "down",
            _ => "nocheck",
        };
        let vals = crate::vrrp::values(v);
        let _ = write!(out, "<tr class=\"{class}\">");
        for (i, val) in vals.iter().enumerate() {
            let shown = match i {
                7 => format!("{val} ms"),
                9 if val != "-" => human_secs(val),
                _ => val.clone(),
            };
            if i == 0 {
                let _ = write!(out, "<td class=\"name\">{}</td>", esc(&shown));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(&shown));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Said after a proxy's name when it relays bytes rather than HTTP.
fn mode_note(mode: &str) -> &'static str {
    if mode == "tcp" { " (mode tcp)" } else { "" }
}
