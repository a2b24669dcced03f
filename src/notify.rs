//! systemd's service notifications (`sd_notify`, for `Type=notify` and
//! `Type=notify-reload`): `READY=1` once the listeners are bound and the configuration
//! applied, `RELOADING=1` then `READY=1` around each reload, `STOPPING=1` when the drain
//! starts, and `WATCHDOG=1` at half the `WatchdogSec` systemd set. Without
//! `NOTIFY_SOCKET` in the environment, nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

struct Notifier {
    sock: UnixDatagram,
    to: SocketAddr,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
            let to = match bytes.strip_prefix(b"@") {
                // An abstract socket (`@name`).
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name)
                }
                None => SocketAddr::from_pathname(&path),
            };
            let to = match to {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("NOTIFY_SOCKET {path:?} is not usable: {e}");
                    return None;
                }
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some(Notifier { sock, to }),
                Err(e) => {
                    tracing::warn!("cannot notify systemd: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// Sends `state` (newline-separated `KEY=value` lines); a failure is logged once in a
/// while, never fatal.
pub fn send(state: &str) {
    let Some(n) = notifier() else { return };
    if let Err(e) = n.sock.send_to_addr(state.as_bytes(), &n.to) {
        tracing::debug!("systemd notification {state:?} not sent: {e}");
    }
}

/// The monotonic clock in microseconds, as `RELOADING=1` carries it for
/// `Type=notify-reload`.
fn monotonic_usec() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let s = u64::try_from(t.tv_sec()).ok()?;
    let ns = u64::try_from(t.tv_nsec()).ok()?;
    Some(s * 1_000_000 + ns / 1000)
}

pub fn ready() {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving",
        std::process::id()
    ));
}

pub fn reloading() {
    match monotonic_usec() {
        Some(t) => send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={t}\nSTATUS=reloading"
        )),
        None => send("RELOADING=1\nSTATUS=reloading"),
    }
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set for this
/// process.
pub fn watchdog_interval() -> Option<Duration> {
    notifier()?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `every` while the main runtime runs: a runtime that stops
/// turning stops the keep-alives, and systemd restarts the service.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        send("WATCHDOG=1");
    }
}
