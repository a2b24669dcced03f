//! The runtime API's commands: HAProxy's syntax, answers and error strings, plus
//! rampart's own (`reload`, `show version`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rampart_config::model::CliLevel;
use rampart_proxy::resilience::health;
use rampart_proxy::snapshot::{Backend, Snapshot};
use rampart_proxy::state::AdminState;

use crate::AdminCtx;
use crate::cli::Session;
use crate::maps;
use crate::stat::{self, Filter, ProxyRef};
use rampart_proxy::rules::patref::RefKind;

/// A command: the words that name it, its usage and description for `help`, and the
/// level it needs.
struct Command {
    words: &'static [&'static str],
    usage: &'static str,
    desc: &'static str,
    level: CliLevel,
}

const fn cmd(
    words: &'static [&'static str],
    usage: &'static str,
    desc: &'static str,
    level: CliLevel,
) -> Command {
    Command {
        words,
        usage,
        desc,
        level,
    }
}

use CliLevel::{Admin, Operator, User};

static COMMANDS: &[Command] = &[
    cmd(
        &["abort", "ssl", "cert"],
        "abort ssl cert <certfile>",
        "abort a transaction for a certificate file",
        Admin,
    ),
    cmd(
        &["commit", "ssl", "cert"],
        "commit ssl cert <certfile>",
        "commit a certificate file",
        Admin,
    ),
    cmd(
        &["set", "ssl", "ocsp-response"],
        "set ssl ocsp-response <resp|payload>",
        "update a certificate's OCSP Response from a base64-encode DER",
        Admin,
    ),
    cmd(
        &["show", "ssl", "ocsp-response"],
        "show ssl ocsp-response",
        "display the IDs of the OCSP responses used in memory",
        Operator,
    ),
    cmd(
        &["set", "ssl", "cert"],
        "set ssl cert <certfile> <payload>",
        "replace a certificate file",
        Admin,
    ),
    cmd(
        &["add", "acl"],
        "add acl [@<ver>] <acl> <pattern>",
        "add an acl entry",
        Operator,
    ),
    cmd(
        &["add", "map"],
        "add map [@<ver>] <map> <key> <val>",
        "add a map entry (payload supported instead of key/val)",
        Operator,
    ),
    cmd(
        &["clear", "acl"],
        "clear acl [@<ver>] <acl>",
        "clear the contents of this acl",
        Operator,
    ),
    cmd(
        &["clear", "map"],
        "clear map [@<ver>] <map>",
        "clear the contents of this map",
        Operator,
    ),
    cmd(
        &["commit", "acl"],
        "commit acl @<ver> <acl>",
        "commit the ACL at this version",
        Operator,
    ),
    cmd(
        &["commit", "map"],
        "commit map @<ver> <map>",
        "commit the map at this version",
        Operator,
    ),
    cmd(
        &["del", "acl"],
        "del acl <acl> [<key>|#<ref>]",
        "delete acl entries matching <key>",
        Operator,
    ),
    cmd(
        &["del", "map"],
        "del map <map> [<key>|#<ref>]",
        "delete map entries matching <key>",
        Operator,
    ),
    cmd(
        &["get", "acl"],
        "get acl <acl> <value>",
        "report the patterns matching a sample for an ACL",
        Operator,
    ),
    cmd(
        &["get", "map"],
        "get map <map> <value>",
        "report the keys and values matching a sample for a map",
        Operator,
    ),
    cmd(
        &["prepare", "acl"],
        "prepare acl <acl>",
        "prepare a new version for atomic ACL replacement",
        Operator,
    ),
    cmd(
        &["prepare", "map"],
        "prepare map <map>",
        "prepare a new version for atomic map replacement",
        Operator,
    ),
    cmd(
        &["set", "map"],
        "set map <map> [<key>|#<ref>] <value>",
        "modify a map entry",
        Operator,
    ),
    cmd(
        &["show", "acl"],
        "show acl [@<ver>] <acl>]",
        "report available acls or dump an acl's contents",
        Operator,
    ),
    cmd(
        &["show", "map"],
        "show map [@ver] [map]",
        "report available maps or dump a map's contents",
        Operator,
    ),
    cmd(
        &["clear", "counters"],
        "clear counters [all]",
        "clear max statistics counters (or all counters)",
        Operator,
    ),
    cmd(
        &["clear", "table"],
        "clear table <table> [<filter>]*",
        "remove an entry from a table (filter: data/key)",
        Operator,
    ),
    cmd(
        &["disable", "health"],
        "disable health <bk>/<srv>",
        "disable health checks on a server",
        Admin,
    ),
    cmd(
        &["disable", "server"],
        "disable server  (DEPRECATED)",
        "disable a server for maintenance (use 'set server' instead)",
        Admin,
    ),
    cmd(
        &["enable", "health"],
        "enable health <bk>/<srv>",
        "enable health checks on a server",
        Admin,
    ),
    cmd(
        &["enable", "server"],
        "enable server  (DEPRECATED)",
        "enable a disabled server (use 'set server' instead)",
        Admin,
    ),
    cmd(
        &["get", "weight"],
        "get weight <bk>/<srv>",
        "report a server's current weight",
        User,
    ),
    cmd(
        &["help"],
        "help [<command>]",
        "list matching or all commands",
        User,
    ),
    cmd(
        &["operator"],
        "operator",
        "lower the level of the current CLI session to operator",
        User,
    ),
    cmd(
        &["prompt"],
        "prompt",
        "toggle interactive mode with prompt",
        User,
    ),
    cmd(&["quit"], "quit", "disconnect", User),
    cmd(
        &["reload"],
        "reload",
        "reload the configuration file (rampart)",
        Admin,
    ),
    cmd(
        &["upgrade"],
        "upgrade",
        "start the binary at this process's path, hand it the listening sockets, drain (rampart)",
        Admin,
    ),
    cmd(
        &["set", "server"],
        "set server <bk>/<srv> [opts]",
        "change a server's state or weight",
        Admin,
    ),
    cmd(
        &["set", "table"],
        "set table <table> key <k> [data.* <v>]*",
        "update or create a table entry's data",
        Admin,
    ),
    cmd(
        &["set", "timeout"],
        "set timeout cli <delay>",
        "change this session's idle timeout (seconds)",
        User,
    ),
    cmd(
        &["set", "weight"],
        "set weight <bk>/<srv>  (DEPRECATED)",
        "change a server's weight (use 'set server' instead)",
        Admin,
    ),
    cmd(
        &["show", "backend"],
        "show backend",
        "list backends in the current running config",
        User,
    ),
    cmd(
        &["show", "cli", "level"],
        "show cli level",
        "display the level of the current CLI session",
        User,
    ),
    cmd(
        &["show", "config"],
        "show config",
        "show the configuration in use, secrets redacted",
        Admin,
    ),
    cmd(
        &["show", "info"],
        "show info",
        "report information about the running process",
        User,
    ),
    cmd(
        &["show", "servers", "state"],
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
        User,
    ),
    cmd(
        &["show", "sess"],
        "show sess",
        "report the list of current sessions",
        Operator,
    ),
    cmd(
        &["shutdown", "sessions", "server"],
        "shutdown sessions server <bk>/<srv>",
        "kill sessions on a server",
        Admin,
    ),
    cmd(
        &["show", "ssl", "cert"],
        "show ssl cert [<certfile>]",
        "display the SSL certificates used in memory, or the details of a file",
        Operator,
    ),
    cmd(
        &["show", "stat"],
        "show stat [<iid> <type> <sid>] [up|no-maint|typed|json]",
        "report counters for each proxy and server",
        User,
    ),
    cmd(
        &["show", "table"],
        "show table [<table> [<filter>]*]",
        "report table usage stats or dump this table's contents (filter: data/key)",
        Operator,
    ),
    cmd(
        &["show", "peers"],
        "show peers",
        "dump peers contents",
        Operator,
    ),
    cmd(
        &["show", "version"],
        "show version",
        "show the version of the current process",
        User,
    ),
    cmd(
        &["show", "vrrp"],
        "show vrrp [json]",
        "report VRRP instances: state, priorities, master, counters (rampart)",
        User,
    ),
    cmd(
        &["show", "xds"],
        "show xds [json]",
        "report the xDS control plane stream: state, versions, nonces, NACKs (rampart)",
        User,
    ),
    cmd(
        &["user"],
        "user",
        "lower the level of the current CLI session to user",
        User,
    ),
];

fn help(level: CliLevel, prefix: Option<&str>) -> String {
    let mut out = String::from("The following commands are valid at this level:\n");
    let mut lines: Vec<String> = COMMANDS
        .iter()
        .filter(|c| c.level <= level)
        .filter(|c| prefix.is_none_or(|p| c.words[0] == p))
        .map(|c| format!("  {:<40}: {}\n", c.usage, c.desc))
        .collect();
    lines.sort();
    for l in lines {
        out.push_str(&l);
    }
    out
}

/// Runs one command (its words) and returns the answer, without the final empty line.
pub async fn run(ctx: &Arc<AdminCtx>, s: &mut Session, words: &[String]) -> String {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let found = COMMANDS
        .iter()
        .filter(|c| w.len() >= c.words.len() && c.words.iter().zip(&w).all(|(a, b)| a == b))
        .max_by_key(|c| c.words.len());
    let Some(c) = found else {
        let first = w.first().copied().unwrap_or("");
        let mut out = format!(
            "Unknown command: '{first}'. Please enter one of the following commands only:\n"
        );
        let body = help(s.level, None);
        out.push_str(body.trim_start_matches("The following commands are valid at this level:\n"));
        return out;
    };
    if c.level > s.level {
        return "Permission denied\n".into();
    }
    let args = &w[c.words.len()..];
    let answer = dispatch(ctx, s, c, args).await;
    let mutating = matches!(
        c.words,
        ["set", "server"] | ["set", "weight"] | ["enable", _] | ["disable", _]
    );
    if mutating {
        ctx.persist();
    }
    answer
}

async fn dispatch(ctx: &Arc<AdminCtx>, s: &mut Session, c: &Command, args: &[&str]) -> String {
    match c.words {
        ["help"] => help(s.level, args.first().copied()),
        ["operator"] => {
            s.level = s.level.min(Operator);
            String::new()
        }
        ["user"] => {
            s.level = User;
            String::new()
        }
        ["show", "cli", "level"] => format!("{}\n", s.level.as_str()),
        ["set", "timeout"] => match args {
            ["cli", secs] => match secs.parse::<u64>() {
                Ok(n) if n > 0 => {
                    s.timeout = Duration::from_secs(n);
                    String::new()
                }
                _ => "Expects an integer value.\n".into(),
            },
            _ => "'set timeout' only supports 'cli'.\n".into(),
        },
        ["show", "info"] => {
            if args.contains(&"typed") {
                stat::show_info_typed(ctx)
            } else {
                stat::show_info(ctx)
            }
        }
        ["show", "config"] => match ctx.config_text.lock().ok().and_then(|t| t.clone()) {
            Some(t) => redact(&t),
            None => "The configuration in use did not come from a file.\n".into(),
        },
        ["show", "version"] => format!("{}\n", env!("CARGO_PKG_VERSION")),
        ["show", "stat"] => show_stat(ctx, args),
        ["show", "ssl", "cert"] => crate::ssl::show(ctx, args.first().copied()),
        ["set", "ssl", "cert"] => crate::ssl::set(ctx, args, s.payload.take().as_deref()),
        ["commit", "ssl", "cert"] => crate::ssl::commit(ctx, args),
        ["abort", "ssl", "cert"] => crate::ssl::abort(ctx, args),
        ["set", "ssl", "ocsp-response"] => {
            crate::ssl::set_ocsp(ctx, args, s.payload.take().as_deref())
        }
        ["show", "ssl", "ocsp-response"] => crate::ssl::show_ocsp(ctx),
        ["show", "vrrp"] => crate::vrrp::show(ctx, args),
        ["show", "xds"] => match (ctx.xds.get(), args) {
            (None, _) => "No xDS control plane is configured.\n".to_owned(),
            (Some(x), []) => x.show(false),
            (Some(x), ["json"]) => x.show(true),
            _ => "Usage: show xds [json]\n".to_owned(),
        },
        ["show", "table"] => crate::table::show(ctx, args),
        ["show", "map"] => maps::show(ctx, RefKind::Map, args),
        ["show", "acl"] => maps::show(ctx, RefKind::Acl, args),
        ["get", "map"] => maps::get(ctx, RefKind::Map, args),
        ["get", "acl"] => maps::get(ctx, RefKind::Acl, args),
        ["add", "map"] => maps::add(ctx, RefKind::Map, args, s.payload.take().as_deref()),
        ["add", "acl"] => maps::add(ctx, RefKind::Acl, args, s.payload.take().as_deref()),
        ["set", "map"] => maps::set(ctx, args),
        ["del", "map"] => maps::del(ctx, RefKind::Map, args),
        ["del", "acl"] => maps::del(ctx, RefKind::Acl, args),
        ["clear", "map"] => maps::clear(ctx, RefKind::Map, args),
        ["clear", "acl"] => maps::clear(ctx, RefKind::Acl, args),
        ["prepare", "map"] => maps::prepare(ctx, RefKind::Map, args),
        ["prepare", "acl"] => maps::prepare(ctx, RefKind::Acl, args),
        ["commit", "map"] => maps::commit(ctx, RefKind::Map, args),
        ["commit", "acl"] => maps::commit(ctx, RefKind::Acl, args),
        ["clear", "table"] => crate::table::clear(ctx, args),
        ["set", "table"] => crate::table::set(ctx, args),
        ["show", "peers"] => crate::peers_view::show(ctx),
        ["show", "sess"] => {
            let mut out = String::new();
            let snap = ctx.control.shared().snapshot.load_full();
            for c in ctx.control.shared().live.sessions.list() {
                let s = &c.session;
                let at = snap.backends.iter().find_map(|b| {
                    b.servers
                        .iter()
                        .find(|x| s.is_at(&x.live))
                        .map(|x| (b.name.to_string(), x.name.to_string()))
                });
                let (be, srv) = at.unwrap_or_else(|| ("<NONE>".to_owned(), "<none>".to_owned()));
                let _ = writeln!(
                    out,
                    "0x{:x}: proto=tcpv{} src={} fe={} be={be} srv={srv} ssl={} age={}s reqs={}",
                    s.id,
                    if c.info.client().is_ipv4() { 4 } else { 6 },
                    c.info.client(),
                    c.frontend.name,
                    u8::from(c.info.tls),
                    c.accepted.elapsed().as_secs(),
                    s.requests.load(Relaxed),
                );
            }
            out
        }
        ["shutdown", "sessions", "server"] => {
            with_server(ctx, args.first().copied(), |_, be, si| {
                let n = ctx
                    .control
                    .shared()
                    .live
                    .sessions
                    .shutdown_server(&be.servers[si].live);
                tracing::info!(backend = %be.name, server = %be.servers[si].name, "runtime API: shut down {n} sessions");
                String::new()
            })
        }
        ["show", "backend"] => {
            let snap = ctx.control.shared().snapshot.load_full();
            let mut out = String::from("# name\n");
            for b in &snap.backends {
                let _ = writeln!(out, "{}", b.name);
            }
            out
        }
        ["show", "servers", "state"] => servers_state(ctx, args.first().copied()),
        ["get", "weight"] => with_server(ctx, args.first().copied(), |_, be, si| {
            let l = &be.servers[si].live;
            format!(
                "{} (initial {})\n",
                l.weight(),
                l.initial_weight.load(Relaxed)
            )
        }),
        ["set", "weight"] => match args {
            [target, weight] => {
                with_server(ctx, Some(target), |_, be, si| set_weight(be, si, weight))
            }
            _ => "Require 'backend/server' and 'weight' or 'weight%'.\n".into(),
        },
        ["enable", "server"] => with_server(ctx, args.first().copied(), |_, be, si| {
            be.servers[si].live.set_admin(AdminState::Ready, &be.live);
            String::new()
        }),
        ["disable", "server"] => with_server(ctx, args.first().copied(), |_, be, si| {
            be.servers[si].live.set_admin(AdminState::Maint, &be.live);
            String::new()
        }),
        ["enable", "health"] | ["disable", "health"] => {
            let pause = c.words[0] == "disable";
            with_server(ctx, args.first().copied(), |_, be, si| {
                if health::set_paused(&be.servers[si].live, &be.live, pause) {
                    String::new()
                } else {
                    "Health checks are not configured on this server, cannot enable.\n".into()
                }
            })
        }
        ["set", "server"] => set_server(ctx, args),
        ["clear", "counters"] => {
            clear_counters(ctx, args.first() == Some(&"all"));
            String::new()
        }
        ["reload"] => match &ctx.reload {
            None => "Reload is not available: no configuration file.\n".into(),
            Some(r) => {
                let r = r.clone();
                match tokio::task::spawn_blocking(move || r()).await {
                    Ok(Ok(msg)) => format!("{msg}\n"),
                    Ok(Err(e)) => {
                        format!("Reload failed, the running configuration is unchanged:\n{e}\n")
                    }
                    Err(e) => format!("Reload failed: {e}\n"),
                }
            }
        },
        ["upgrade"] => match ctx.upgrade.get() {
            None => {
                "Upgrade is not available: this process was not started by `rampart run`.\n".into()
            }
            Some(u) => match u().await {
                Ok(Ok(msg)) => format!("{msg}\n"),
                Ok(Err(e)) => format!("Upgrade failed, this process keeps serving: {e}\n"),
                Err(_) => "Upgrade failed: the upgrade was abandoned.\n".into(),
            },
        },
        _ => String::new(),
    }
}

fn show_stat(ctx: &AdminCtx, args: &[&str]) -> String {
    let mut f = Filter::default();
    let mut rest = args;
    // `show stat <iid|name> <type> <sid>`
    if rest.len() >= 3 && rest[1].parse::<i64>().is_ok() {
        f.proxy = match rest[0].parse::<i64>() {
            Ok(-1) => None,
            Ok(n) if n > 0 => Some(ProxyRef::Id(n as usize)),
            Ok(_) => return "Invalid proxy id.\n".into(),
            Err(_) => Some(ProxyRef::Name(rest[0])),
        };
        f.types = rest[1].parse().unwrap_or(-1);
        f.sid = match rest[2].parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            _ => None,
        };
        if let Some(ProxyRef::Name(n)) = f.proxy {
            let snap = ctx.control.shared().snapshot.load_full();
            if snap.frontend(n).is_none() && snap.backend_index(n).is_none() {
                return format!("No such proxy: '{n}'.\n");
            }
        }
        rest = &rest[3..];
    }
    let (mut json, mut typed) = (false, false);
    for a in rest {
        match *a {
            "up" => f.up_only = true,
            "no-maint" => f.no_maint = true,
            "json" => json = true,
            "typed" => typed = true,
            _ => {}
        }
    }
    if json {
        stat::show_stat_json(ctx, &f)
    } else if typed {
        stat::show_stat_typed(ctx, &f)
    } else {
        stat::show_stat(ctx, &f)
    }
}

/// The configuration text with the values of secret keys replaced.
pub fn redact(text: &str) -> String {
    const SECRET: [&str; 4] = ["password", "secret", "token", "passphrase"];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut l = line.to_owned();
        for key in SECRET {
            // `key: value` in block style, or `key: value` inside a flow mapping.
            let mut from = 0;
            while let Some(i) = l[from..].find(&format!("{key}:")).map(|i| i + from) {
                let before_ok = i == 0
                    || !l.as_bytes()[i - 1].is_ascii_alphanumeric() && l.as_bytes()[i - 1] != b'_';
                let start = i + key.len() + 1;
                if !before_ok {
                    from = start;
                    continue;
                }
                let rest = &l[start..];
                let value_len = rest.find([',', '}']).unwrap_or(rest.len());
                let value = rest[..value_len].trim();
                if value.is_empty() {
                    from = start;
                    continue;
                }
                let region = &rest[..value_len];
                let trailing = &region[region.trim_end().len()..];
                l = format!("{} <redacted>{trailing}{}", &l[..start], &rest[value_len..]);
                from = start + " <redacted>".len();
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Finds `<backend>/<server>` (names or `#id`) and runs `f` on it, or answers HAProxy's
/// error.
fn with_server(
    ctx: &AdminCtx,
    target: Option<&str>,
    f: impl FnOnce(&Snapshot, &Backend, usize) -> String,
) -> String {
    let Some((b, s)) = target.and_then(|t| t.split_once('/')) else {
        return "Require 'backend/server'.\n".into();
    };
    let snap = ctx.control.shared().snapshot.load_full();
    let bi = match b.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
        Some(id) => (0..snap.backends.len()).find(|i| stat::backend_id(&snap, *i) == id),
        None => snap.backend_index(b),
    };
    let Some(bi) = bi else {
        return "No such backend.\n".into();
    };
    let be = snap.backends[bi].clone();
    let si = match s.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
        Some(id) => id.checked_sub(1).filter(|i| *i < be.servers.len()),
        None => be.servers.iter().position(|x| &*x.name == s),
    };
    let Some(si) = si else {
        return "No such server.\n".into();
    };
    f(&snap, &be, si)
}

fn set_weight(be: &Backend, si: usize, arg: &str) -> String {
    let live = &be.servers[si].live;
    let (num, pct) = match arg.strip_suffix('%') {
        Some(n) => (n, true),
        None => (arg, false),
    };
    let Ok(n) = num.parse::<i64>() else {
        return "Require <weight> or <weight%>.\n".into();
    };
    let w = if pct {
        if n < 0 {
            return "Relative weight must be positive.\n".into();
        }
        let init = i64::from(live.initial_weight.load(Relaxed));
        (init * n / 100).clamp(0, 256)
    } else {
        if !(0..=256).contains(&n) {
            return "Absolute weight can only be between 0 and 256 inclusive.\n".into();
        }
        n
    };
    let is_static = matches!(be.balancer.algo(), rampart_proxy::balance::Algo::StaticRr);
    if is_static && w != 0 && w != i64::from(live.initial_weight.load(Relaxed)) {
        return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n".into();
    }
    live.set_weight(w as u32, &be.live);
    String::new()
}

fn set_server(ctx: &AdminCtx, args: &[&str]) -> String {
    let usage = "usage: set server <backend>/<server> addr | health | state | weight\n";
    let Some(target) = args.first() else {
        return "Require 'backend/server'.\n".into();
    };
    let opts = &args[1..];
    with_server(ctx, Some(target), |_, be, si| {
        let live = &be.servers[si].live;
        match opts {
            ["state", st] => match *st {
                "ready" => {
                    live.set_admin(AdminState::Ready, &be.live);
                    String::new()
                }
                "drain" => {
                    live.set_admin(AdminState::Drain, &be.live);
                    String::new()
                }
                "maint" => {
                    live.set_admin(AdminState::Maint, &be.live);
                    String::new()
                }
                _ => "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".into(),
            },
            ["state"] => "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".into(),
            ["weight", w] => set_weight(be, si, w),
            ["addr", rest @ ..] => set_addr(ctx, be, si, rest),
            ["weight"] => "Require <weight> or <weight%>.\n".into(),
            ["health", h] => {
                let enabled = live.has_checks();
                match *h {
                    "up" | "down" if enabled => {
                        health::force(live, &be.live, *h == "up", std::time::Instant::now());
                        String::new()
                    }
                    "up" | "down" => "Health checks are not configured on this server, cannot change its health.\n".into(),
                    "stopping" if enabled => {
                        health::force(live, &be.live, true, std::time::Instant::now());
                        live.set_stopping(true, &be.live);
                        String::new()
                    }
                    "stopping" => "Health checks are not configured on this server, cannot change its health.\n".into(),
                    _ => "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n".into(),
                }
            }
            _ => usage.into(),
        }
    })
}

/// `set server <b>/<s> addr <ip> [port <port>]`: the server moves; the configuration is
/// compiled again with the new address (the old address's pooled connections drain).
fn set_addr(ctx: &AdminCtx, be: &Backend, si: usize, args: &[&str]) -> String {
    let (ip, port) = match args {
        [ip] => (*ip, None),
        [ip, "port", p] => (*ip, Some(*p)),
        _ => return "set server <b>/<s> addr requires an address and optionally a port.\n".into(),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return format!("Invalid addr '{ip}'\n");
    };
    let old = be.servers[si].upstream.addr;
    let port = match port.map(str::parse::<u16>) {
        None => old.port(),
        Some(Ok(p)) if p > 0 => p,
        Some(_) => return format!("Invalid port '{}'\n", port.unwrap_or_default()),
    };
    let new = std::net::SocketAddr::new(ip, port);
    if new == old {
        return "nothing changed\n".into();
    }
    let live = &ctx.control.shared().live;
    live.set_addr_override(
        rampart_proxy::state::ServerKey {
            backend: &be.name,
            server: &be.servers[si].name,
        },
        new,
    );
    if let Err(e) = ctx.control.reapply() {
        return format!("cannot apply the new address: {e}\n");
    }
    let mut msg = String::new();
    if new.ip() != old.ip() {
        msg.push_str(&format!("IP changed from '{}' to '{}'", old.ip(), new.ip()));
    }
    if new.port() != old.port() {
        if !msg.is_empty() {
            msg.push_str(", ");
        }
        msg.push_str(&format!(
            "port changed from '{}' to '{}'",
            old.port(),
            new.port()
        ));
    }
    msg.push_str(" by 'stats socket command'\n");
    msg
}

fn servers_state(ctx: &AdminCtx, backend: Option<&str>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    if let Some(b) = backend
        && snap.backend_index(b).is_none()
    {
        return format!("Can't find backend '{b}'.\n");
    }
    servers_state_text(ctx, backend)
}

/// `show servers state` for every backend or one.
pub fn servers_state_text(ctx: &AdminCtx, backend: Option<&str>) -> String {
    let snap = ctx.control.shared().snapshot.load_full();
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    let now = std::time::Instant::now();
    for (bi, be) in snap.backends.iter().enumerate() {
        if backend.is_some_and(|b| b != &*be.name) {
            continue;
        }
        for (si, s) in be.servers.iter().enumerate() {
            let l = &s.live;
            let info = l.check_info();
            let op = if l.check_down() { 0 } else { 2 };
            let admin = match l.admin() {
                AdminState::Ready => 0,
                AdminState::Maint => 0x01,
                AdminState::Drain => 0x08,
            };
            let check_state = if info.enabled {
                0x02 | if info.paused { 0x08 } else { 0x04 }
            } else {
                0
            };
            let (check_status, check_result) = match &info.last {
                None => (0, 0),
                Some(o) if o.status.passed() => (6, 3),
                Some(_) => (6, 1),
            };
            let _ = writeln!(
                out,
                "{} {} {} {} {} {} {} {} {} {} {} {} {} {} 0 0 0 - {} - 0 0 - - 0",
                stat::backend_id(&snap, bi),
                be.name,
                si + 1,
                s.name,
                s.upstream.addr.ip(),
                op,
                admin,
                l.weight(),
                l.initial_weight.load(Relaxed),
                now.saturating_duration_since(info.last_change).as_secs(),
                check_status,
                check_result,
                info.counter.health,
                check_state,
                s.upstream.addr.port(),
            );
        }
    }
    out
}

/// Zeroes counters and the responses by status class.
fn zero(
    counters: &[&std::sync::atomic::AtomicU64],
    responses: &rampart_proxy::state::StatusCounters,
) {
    for c in counters
        .iter()
        .chain(responses.by_class.iter().collect::<Vec<_>>().iter())
    {
        c.store(0, Relaxed);
    }
}

fn clear_counters(ctx: &AdminCtx, all: bool) {
    let snap = ctx.control.shared().snapshot.load_full();
    for fe in &snap.frontends {
        let l = &fe.live;
        l.conns_max.store(l.conns_cur.load(Relaxed), Relaxed);
        if all {
            zero(
                &[
                    &l.conns_total,
                    &l.requests,
                    &l.bytes_in,
                    &l.bytes_out,
                    &l.denied,
                    &l.errors,
                    &l.intercepted,
                ],
                &l.responses,
            );
        }
    }
    for be in &snap.backends {
        let l = &be.live;
        l.gate.pending_max.store(l.gate.pending(), Relaxed);
        if all {
            zero(
                &[
                    &l.requests,
                    &l.bytes_in,
                    &l.bytes_out,
                    &l.errors_conn,
                    &l.errors_resp,
                    &l.no_server,
                    &l.retries,
                    &l.redispatches,
                ],
                &l.responses,
            );
        }
        for s in &be.servers {
            let l = &s.live;
            l.active_max.store(l.active.load(Relaxed), Relaxed);
            if all {
                zero(
                    &[
                        &l.requests,
                        &l.bytes_in,
                        &l.bytes_out,
                        &l.errors_conn,
                        &l.errors_resp,
                        &l.retries,
                    ],
                    &l.responses,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command is documented in docs/runtime.md: a backquoted form starts with its
    /// words (`show map ...`; `enable\|disable server ...` stands for both).
    #[test]
    fn every_command_is_documented() {
        let doc = include_str!("../../docs/runtime.md");
        let mut forms = Vec::new();
        for span in doc.split('`').skip(1).step_by(2) {
            let (first, rest) = span.split_once(' ').unwrap_or((span, ""));
            for alt in first.split("\\|") {
                forms.push(format!("{alt} {rest}"));
            }
        }
        let missing: Vec<String> = super::COMMANDS
            .iter()
            .map(|c| c.words.join(" "))
            .filter(|w| {
                !forms
                    .iter()
                    .any(|f| f.trim_end() == w || f.starts_with(&format!("{w} ")))
            })
            .collect();
        assert!(missing.is_empty(), "not in docs/runtime.md: {missing:?}");
    }

    #[test]
    fn redaction() {
        let t = "stats: { auth: { user: ops, password: hunter2 } }\n  password: s3cret\nsecret_key: ok\npeers: { secret: abc, nodes: {} }\npasswords_file: x\n";
        assert_eq!(
            super::redact(t),
            "stats: { auth: { user: ops, password: <redacted> } }\n  password: <redacted>\nsecret_key: ok\npeers: { secret: <redacted>, nodes: {} }\npasswords_file: x\n"
        );
    }
}
