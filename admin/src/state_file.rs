//! The server state file: HAProxy's `show servers state` format 1, written after each
//! runtime change and at stop, read at start (HAProxy's `server-state-file`).

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use rampart_proxy::resilience::health;
use rampart_proxy::state::AdminState;

use crate::AdminCtx;

/// Writes the current server states to `path` (through a temporary file, so a reader
/// never sees half a file).
pub fn save(ctx: &AdminCtx, path: &Path) -> std::io::Result<()> {
    let text = crate::commands::servers_state_text(ctx, None);
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// What loading restored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub servers: usize,
    /// Lines naming servers that no longer exist, or unreadable lines.
    pub skipped: usize,
}

/// Restores admin state, weight and health from `path`, for servers that still exist.
pub fn load(ctx: &AdminCtx, path: &Path) -> std::io::Result<Loaded> {
    load_text(ctx, &std::fs::read_to_string(path)?)
}

/// The current server states in the state file's format (what a binary upgrade hands
/// to the new process).
pub fn text(ctx: &AdminCtx) -> String {
    crate::commands::servers_state_text(ctx, None)
}

/// Restores admin state, weight and health from `text` (the state file's format).
pub fn load_text(ctx: &AdminCtx, text: &str) -> std::io::Result<Loaded> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("1") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a server state file (format 1)",
        ));
    }
    let snap = ctx.control.shared().snapshot.load_full();
    let mut out = Loaded::default();
    let mut moved = false;
    for line in lines.filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            let (be, srv) = (*f.get(1)?, *f.get(3)?);
            let ip: std::net::IpAddr = f.get(4)?.parse().ok()?;
            let op: u8 = f.get(5)?.parse().ok()?;
            let admin: u32 = f.get(6)?.parse().ok()?;
            let weight: u32 = f.get(7)?.parse().ok()?;
            let port: u16 = f.get(18)?.parse().ok()?;
            Some((
                be,
                srv,
                std::net::SocketAddr::new(ip, port),
                op,
                admin,
                weight,
            ))
        })();
        let Some((be, srv, addr, op, admin, weight)) = parsed else {
            out.skipped += 1;
            continue;
        };
        let Some(b) = snap.backend_index(be).map(|i| &snap.backends[i]) else {
            out.skipped += 1;
            continue;
        };
        let Some(s) = b.servers.iter().find(|s| &*s.name == srv) else {
            out.skipped += 1;
            continue;
        };
        let state = if admin & 0x01 != 0 {
            AdminState::Maint
        } else if admin & 0x08 != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        };
        s.live.set_admin(state, &b.live);
        if weight <= 256 {
            s.live.set_weight(weight, &b.live);
        }
        if addr != s.upstream.addr {
            ctx.control.shared().live.set_addr_override(
                rampart_proxy::state::ServerKey {
                    backend: be,
                    server: srv,
                },
                addr,
            );
            moved = true;
        }
        let checked = s.live.has_checks();
        if checked {
            health::force(&s.live, &b.live, op != 0, std::time::Instant::now());
        }
        out.servers += 1;
    }
    let _ = Relaxed;
    if moved && let Err(e) = ctx.control.reapply() {
        tracing::warn!("cannot apply restored server addresses: {e}");
    }
    Ok(out)
}
