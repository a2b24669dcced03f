//! Access log: one line per request in HAProxy's `httplog` layout or as JSON, formatted
//! and written on a thread of its own. The request path only sends a record into a bounded
//! channel; when the writer falls behind, records are dropped and counted, never waited on.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use http::{Method, Uri, Version};
use rampart_config::logformat::{Piece, Var};
use rampart_config::model::{AccessLog, LogFormatKind, LogTarget, SyslogFormat};

use crate::http1::encode::version_str;

/// How a frontend's lines are written: a standard layout, or a custom `log_format`.
#[derive(Debug, Clone)]
pub struct LogFormat {
    pub kind: LogFormatKind,
    pub custom: Option<Arc<[Piece]>>,
}

impl From<LogFormatKind> for LogFormat {
    fn from(kind: LogFormatKind) -> Self {
        Self { kind, custom: None }
    }
}

/// One finished request.
pub struct Record {
    pub format: LogFormat,
    pub client: SocketAddr,
    pub accepted: SystemTime,
    pub frontend: Arc<str>,
    pub tls: bool,
    pub backend: Option<Arc<str>>,
    pub server: Option<Arc<str>>,
    /// Milliseconds: request head received, queue, connect, response head, total; -1 when
    /// the phase did not happen.
    pub t_request: i64,
    pub t_queue: i64,
    pub t_connect: i64,
    pub t_response: i64,
    pub t_total: i64,
    /// -1 when no response was sent.
    pub status: i32,
    pub bytes_out: u64,
    /// Bytes received from the client (mode tcp).
    pub bytes_in: u64,
    /// A mode tcp session: no request line or status.
    pub tcp: bool,
    /// HAProxy termination state (`----`, `SC--`, `CD--`...).
    pub termination: [u8; 4],
    pub global_conns: u64,
    pub frontend_conns: u64,
    pub backend_active: u64,
    pub server_active: u64,
    pub retries: u32,
    /// The request's trace, when it is traced.
    pub trace_id: Option<[u8; 16]>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
}

/// Where access log lines go.
pub struct LogSink {
    tx: SyncSender<Record>,
    /// Records dropped: the queue was full, or syslog did not take them.
    pub dropped: Arc<AtomicU64>,
}

const QUEUE: usize = 16 * 1024;

/// How syslog messages are framed: the layout, the priority (facility and severity), the
/// tag, the host name (RFC 5424), the process id and the longest message.
struct SyslogHead {
    format: SyslogFormat,
    pri: u8,
    tag: String,
    host: String,
    pid: u32,
    max: usize,
}

impl SyslogHead {
    /// `msg` (one formatted line, without its newline) as one syslog message.
    fn frame(&self, at: SystemTime, msg: &str, out: &mut String) {
        out.clear();
        match self.format {
            SyslogFormat::Rfc3164 => {
                let _ = write!(out, "<{}>", self.pri);
                rampart_config::time::rfc3164(at, out);
                let _ = write!(out, " {}[{}]: {msg}", self.tag, self.pid);
            }
            SyslogFormat::Rfc5424 => {
                let _ = write!(out, "<{}>1 ", self.pri);
                rfc3339(at, out);
                let _ = write!(out, " {} {} {} - - {msg}", self.host, self.tag, self.pid);
            }
        }
        if out.len() > self.max {
            let mut cut = self.max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
    }
}

/// Where syslog messages are sent: a UDP address, or a Unix datagram socket (sent to by
/// path each time, so that a restarted syslog daemon is found again).
enum SyslogTo {
    Udp(std::net::UdpSocket, SocketAddr),
    Unix(std::os::unix::net::UnixDatagram, std::path::PathBuf),
}

impl SyslogTo {
    fn send(&self, msg: &[u8]) -> std::io::Result<usize> {
        match self {
            SyslogTo::Udp(s, to) => s.send_to(msg, to),
            SyslogTo::Unix(s, to) => s.send_to(msg, to),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

impl LogSink {
    /// Opens the target of `l` (`stdout`, `stderr`, a file appended to, or syslog) and
    /// starts its writer.
    pub fn open(l: &AccessLog) -> Result<Arc<Self>, String> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name("rampart-log".into())
                .spawn(f)
                .map(|_| ())
                .map_err(|e| format!("cannot start the access log writer: {e}"))
        };
        // Syslog's priority: the facility, and severity 6 (info), as HAProxy logs
        // traffic.
        let head = SyslogHead {
            format: l.syslog_format,
            pri: l.facility.0 * 8 + 6,
            tag: l.tag.clone(),
            host: host_name(),
            pid: std::process::id(),
            max: l.max_length,
        };
        match LogTarget::parse(&l.to)? {
            LogTarget::Stdout => spawn(Box::new(move || writer(rx, Box::new(std::io::stdout()))))?,
            LogTarget::Stderr => spawn(Box::new(move || writer(rx, Box::new(std::io::stderr()))))?,
            LogTarget::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open access log {path}: {e}"))?;
                spawn(Box::new(move || writer(rx, Box::new(f))))?;
            }
            LogTarget::Udp(hp) => {
                use std::net::ToSocketAddrs;
                let to = hp
                    .to_socket_addrs()
                    .map_err(|e| format!("syslog {hp}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("syslog {hp}: no address"))?;
                let bind: SocketAddr = if to.is_ipv4() {
                    "0.0.0.0:0".parse().map_err(|_| "bind")?
                } else {
                    "[::]:0".parse().map_err(|_| "bind")?
                };
                let s = std::net::UdpSocket::bind(bind).map_err(|e| format!("syslog {hp}: {e}"))?;
                let to = SyslogTo::Udp(s, to);
                spawn(Box::new(move || syslog_writer(rx, head, to, lost)))?;
            }
            LogTarget::Unix(path) => {
                let s = std::os::unix::net::UnixDatagram::unbound()
                    .map_err(|e| format!("syslog {path}: {e}"))?;
                let to = SyslogTo::Unix(s, path.into());
                spawn(Box::new(move || syslog_writer(rx, head, to, lost)))?;
            }
        }
        Ok(Arc::new(Self { tx, dropped }))
    }

    /// Queues a record; drops it when the queue is full.
    pub fn send(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Sends each record as one datagram. A send that fails (no daemon listening, a full
/// socket buffer) loses that line, logged once in a while; the request path never waits
/// on it (its queue drops when full).
fn syslog_writer(rx: Receiver<Record>, head: SyslogHead, to: SyslogTo, lost: Arc<AtomicU64>) {
    let mut line = String::with_capacity(512);
    let mut msg = String::with_capacity(512);
    let mut failed = 0u64;
    while let Ok(r) = rx.recv() {
        line.clear();
        format_record(&r, &mut line);
        head.frame(r.accepted, line.trim_end_matches('\n'), &mut msg);
        if let Err(e) = to.send(msg.as_bytes()) {
            lost.fetch_add(1, Relaxed);
            failed += 1;
            if failed.is_power_of_two() {
                tracing::warn!("syslog: {failed} access log lines not sent: {e}");
            }
        }
    }
}

fn writer(rx: Receiver<Record>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::with_capacity(512);
    while let Ok(r) = rx.recv() {
        let mut next = Some(r);
        // Write what is queued, then flush once.
        while let Some(r) = next {
            line.clear();
            format_record(&r, &mut line);
            let _ = out.write_all(line.as_bytes());
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

pub use rampart_config::time::{haproxy_date, rfc3339};

/// Appends `s` as a JSON string literal.
pub fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The request target as the client wrote it: origin form for HTTP/2, whose URI carries
/// scheme and authority separately.
fn target(r: &Record) -> std::borrow::Cow<'_, str> {
    if r.version == Version::HTTP_2 {
        std::borrow::Cow::Borrowed(r.uri.path_and_query().map_or("/", |p| p.as_str()))
    } else {
        std::borrow::Cow::Owned(r.uri.to_string())
    }
}

/// Formats one record as a custom line (with its newline).
fn format_custom(pieces: &[Piece], r: &Record, out: &mut String) {
    let term = std::str::from_utf8(&r.termination).unwrap_or("----");
    let mut field = String::new();
    for p in pieces {
        let (var, quote) = match p {
            Piece::Text(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Var(v, q) => (*v, *q),
        };
        field.clear();
        let f = &mut field;
        let _ = match var {
            Var::ClientIp => write!(f, "{}", r.client.ip()),
            Var::ClientPort => write!(f, "{}", r.client.port()),
            Var::Date => {
                haproxy_date(r.accepted, f);
                Ok(())
            }
            Var::DateGmt => {
                f.push_str(&httpdate(r.accepted));
                Ok(())
            }
            Var::FrontendTransport => {
                write!(f, "{}{}", r.frontend, if r.tls { "~" } else { "" })
            }
            Var::Frontend => write!(f, "{}", r.frontend),
            Var::Backend => write!(f, "{}", r.backend.as_deref().unwrap_or(r.frontend.as_ref())),
            Var::Server => write!(f, "{}", r.server.as_deref().unwrap_or("<NOSRV>")),
            Var::TRequest => write!(f, "{}", r.t_request),
            Var::TQueue => write!(f, "{}", r.t_queue),
            Var::TConnect => write!(f, "{}", r.t_connect),
            Var::TResponse => write!(f, "{}", r.t_response),
            Var::TTotal => write!(f, "{}", r.t_total),
            Var::Status => write!(f, "{}", r.status),
            Var::BytesOut => write!(f, "{}", r.bytes_out),
            Var::BytesIn => write!(f, "{}", r.bytes_in),
            Var::Term => write!(f, "{}", &term[..2]),
            Var::TermCookie => write!(f, "{term}"),
            Var::ActConn => write!(f, "{}", r.global_conns),
            Var::FeConn => write!(f, "{}", r.frontend_conns),
            Var::BeConn => write!(f, "{}", r.backend_active),
            Var::SrvConn => write!(f, "{}", r.server_active),
            Var::Retries => write!(f, "{}", r.retries),
            Var::RequestLine if r.tcp => write!(f, "-"),
            Var::RequestLine => write!(
                f,
                "{} {} HTTP/{}",
                r.method,
                target(r),
                version_str(r.version)
            ),
            Var::Method => write!(f, "{}", r.method),
            Var::Uri => write!(f, "{}", target(r)),
            Var::Path => write!(f, "{}", r.uri.path()),
            Var::Version => write!(f, "HTTP/{}", version_str(r.version)),
            Var::Pid => write!(f, "{}", std::process::id()),
            Var::TraceId => match &r.trace_id {
                Some(id) => write!(f, "{}", crate::trace::hex(id)),
                None => write!(f, "-"),
            },
        };
        if quote {
            out.push('"');
            // As HAProxy does, a quote inside a quoted field is escaped.
            for c in field.chars() {
                if c == '"' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push('\n');
}

/// An HTTP date (`%T`): `06/Dec/2026:04:32:12 +0000`, as HAProxy's GMT date.
fn httpdate(t: SystemTime) -> String {
    let mut s = String::new();
    haproxy_date(t, &mut s);
    // haproxy_date writes milliseconds; %T has none and a zone.
    if let Some(i) = s.rfind('.') {
        s.truncate(i);
    }
    s.push_str(" +0000");
    s
}

/// Formats one record as a line (with its newline).
pub fn format_record(r: &Record, out: &mut String) {
    if let Some(c) = &r.format.custom {
        format_custom(c, r, out);
        return;
    }
    let backend = r.backend.as_deref().unwrap_or("<NOSRV>");
    let server = r.server.as_deref().unwrap_or("<NOSRV>");
    let term = std::str::from_utf8(&r.termination).unwrap_or("----");
    match r.format.kind {
        LogFormatKind::Tcplog => {
            // %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
            let _ = write!(out, "{}:{} [", r.client.ip(), r.client.port());
            haproxy_date(r.accepted, out);
            let backend = if r.backend.is_some() {
                backend
            } else {
                r.frontend.as_ref()
            };
            let _ = writeln!(
                out,
                "] {}{} {}/{} {}/{}/{} {} {} {}/{}/{}/{}/{} 0/0",
                r.frontend,
                if r.tls { "~" } else { "" },
                backend,
                server,
                r.t_queue,
                r.t_connect,
                r.t_total,
                r.bytes_out,
                &term[..2],
                r.global_conns,
                r.frontend_conns,
                r.backend_active,
                r.server_active,
                r.retries,
            );
        }
        LogFormatKind::Json if r.tcp => {
            json_head(r, out);
            let _ = writeln!(
                out,
                ",\"bytes_in\":{},\"bytes_out\":{},\"t_queue_ms\":{},\"t_connect_ms\":{},\"t_total_ms\":{},\"termination\":\"{}\",\"retries\":{}}}",
                r.bytes_in,
                r.bytes_out,
                r.t_queue,
                r.t_connect,
                r.t_total,
                &term[..2],
                r.retries
            );
        }
        LogFormatKind::Httplog => {
            // %ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq {%hr} "%r"
            let _ = write!(out, "{}:{} [", r.client.ip(), r.client.port());
            haproxy_date(r.accepted, out);
            let backend = if r.backend.is_some() {
                backend
            } else {
                r.frontend.as_ref()
            };
            let _ = writeln!(
                out,
                "] {}{} {}/{} {}/{}/{}/{}/{} {} {} - - {} {}/{}/{}/{}/{} 0/0 \"{} {} HTTP/{}\"",
                r.frontend,
                if r.tls { "~" } else { "" },
                backend,
                server,
                r.t_request,
                r.t_queue,
                r.t_connect,
                r.t_response,
                r.t_total,
                r.status,
                r.bytes_out,
                term,
                r.global_conns,
                r.frontend_conns,
                r.backend_active,
                r.server_active,
                r.retries,
                r.method,
                target(r),
                version_str(r.version),
            );
        }
        LogFormatKind::Json => {
            json_head(r, out);
            out.push_str(",\"method\":");
            json_str(r.method.as_str(), out);
            out.push_str(",\"uri\":");
            json_str(&target(r), out);
            let _ = writeln!(
                out,
                ",\"version\":\"{}\",\"status\":{},\"bytes_out\":{},\"t_request_ms\":{},\"t_queue_ms\":{},\"t_connect_ms\":{},\"t_response_ms\":{},\"t_total_ms\":{},\"termination\":\"{}\",\"retries\":{}}}",
                version_str(r.version),
                r.status,
                r.bytes_out,
                r.t_request,
                r.t_queue,
                r.t_connect,
                r.t_response,
                r.t_total,
                term,
                r.retries
            );
        }
    }
}

/// The fields a JSON line starts with: time, (mode tcp,) client, frontend, TLS, backend
/// and server.
fn json_head(r: &Record, out: &mut String) {
    out.push_str("{\"time\":\"");
    rfc3339(r.accepted, out);
    out.push_str("\",");
    if r.tcp {
        out.push_str("\"mode\":\"tcp\",");
    }
    if let Some(id) = &r.trace_id {
        let _ = write!(out, "\"trace_id\":\"{}\",", crate::trace::hex(id));
    }
    let _ = write!(
        out,
        "\"client_ip\":\"{}\",\"client_port\":{},\"frontend\":",
        r.client.ip(),
        r.client.port()
    );
    json_str(&r.frontend, out);
    let _ = write!(out, ",\"tls\":{},\"backend\":", r.tls);
    match &r.backend {
        Some(b) => json_str(b, out),
        None => out.push_str("null"),
    }
    out.push_str(",\"server\":");
    match &r.server {
        Some(s) => json_str(s, out),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(format: LogFormatKind) -> Record {
        Record {
            format: format.into(),
            client: "10.0.1.2:33317".parse().unwrap(),
            accepted: UNIX_EPOCH + Duration::from_millis(1_233_922_454_655),
            frontend: "http-in".into(),
            tls: false,
            backend: Some("static".into()),
            server: Some("srv1".into()),
            t_request: 10,
            t_queue: 0,
            t_connect: 30,
            t_response: 69,
            t_total: 109,
            status: 200,
            bytes_out: 2750,
            bytes_in: 0,
            tcp: false,
            termination: *b"----",
            global_conns: 1,
            frontend_conns: 1,
            backend_active: 1,
            server_active: 1,
            retries: 0,
            trace_id: None,
            method: Method::GET,
            uri: "/index.html".parse().unwrap(),
            version: Version::HTTP_11,
        }
    }

    #[test]
    fn a_custom_format_writes_haproxy_variables_and_the_trace_id() {
        let mut r = record(LogFormatKind::Httplog);
        let pieces = rampart_config::logformat::parse(
            "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %{+Q}r trace=%[trace_id]",
        )
        .unwrap();
        r.format.custom = Some(pieces.into());
        let mut s = String::new();
        format_record(&r, &mut s);
        assert_eq!(
            s,
            "10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 ---- 1/1/1/1/0 \"GET /index.html HTTP/1.1\" trace=-\n"
        );
        r.trace_id = Some([0xab; 16]);
        s.clear();
        format_record(&r, &mut s);
        assert!(s.ends_with(&format!("trace={}\n", "ab".repeat(16))), "{s}");
        // JSON carries it too.
        r.format = LogFormatKind::Json.into();
        s.clear();
        format_record(&r, &mut s);
        assert!(
            s.contains(&format!("\"trace_id\":\"{}\",", "ab".repeat(16))),
            "{s}"
        );
    }

    #[test]
    fn httplog_matches_haproxy_layout() {
        let mut s = String::new();
        format_record(&record(LogFormatKind::Httplog), &mut s);
        assert_eq!(
            s,
            "10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 \"GET /index.html HTTP/1.1\"\n"
        );
    }

    /// HAProxy's manual's tcplog example:
    /// `10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0`.
    #[test]
    fn tcplog_matches_haproxy_layout() {
        let mut r = record(LogFormatKind::Tcplog);
        r.accepted = UNIX_EPOCH + Duration::from_millis(1_233_922_371_443);
        r.frontend = "fnt".into();
        r.backend = Some("bck".into());
        r.t_connect = 0;
        r.t_total = 5007;
        r.bytes_out = 212;
        r.tcp = true;
        (
            r.global_conns,
            r.frontend_conns,
            r.backend_active,
            r.server_active,
        ) = (0, 0, 0, 0);
        r.retries = 3;
        let mut s = String::new();
        format_record(&r, &mut s);
        assert_eq!(
            s,
            "10.0.1.2:33317 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0\n"
        );
        r.format = LogFormatKind::Json.into();
        s.clear();
        format_record(&r, &mut s);
        assert!(s.contains("\"mode\":\"tcp\""), "{s}");
        assert!(!s.contains("method"), "{s}");
    }

    #[test]
    fn json_is_one_object_per_line() {
        let mut s = String::new();
        let mut r = record(LogFormatKind::Json);
        r.uri = "/a\"b".parse().unwrap_or_else(|_| "/a".parse().unwrap());
        format_record(&r, &mut s);
        assert!(
            s.starts_with("{\"time\":\"2009-02-06T12:14:14.655Z\""),
            "{s}"
        );
        assert!(s.ends_with("}\n"));
        assert!(s.contains("\"server\":\"srv1\""));
    }
}
