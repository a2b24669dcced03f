//! Backend resilience settings: active health checks, passive outlier detection, circuit
//! breakers with an optional queue, and retries with a budget.

use std::time::Duration;

use crate::config_struct;
use crate::decode::{Cx, Decode, Size, Spanned};
use crate::yaml::{Node, NodeKind};

/// A percentage, written `20%` or `20`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    /// The fraction (0.2 for 20%).
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl Decode for Percent {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a percentage", |s| {
            let t = s.trim().trim_end_matches('%').trim();
            t.parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .map(Percent)
                .ok_or_else(|| format!("expected a percentage between 0% and 100%, found {s:?}"))
        })
    }
}

/// HTTP statuses: single codes and `lo-hi` ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

fn parse_status_part(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected an HTTP status or a range like 200-399, found {s:?}");
    let code = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(bad)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => code(s).map(|c| (c, c)),
    }
}

impl Decode for StatusSet {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            let parsed = cx.parse_scalar(item, "an HTTP status", |s| {
                s.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(parse_status_part)
                    .collect::<Result<Vec<_>, _>>()
            })?;
            out.extend(parsed);
        }
        Some(StatusSet(out))
    }
}

config_struct! {
    /// An HTTP check.
    pub struct HttpCheck {
        pub method: String = "GET".to_owned(),
        pub path: String = "/".to_owned(),
        /// Host header; default: the server's address.
        pub host: Option<String>,
        /// Statuses that pass.
        pub expect_status: StatusSet = StatusSet(vec![(200, 399)]),
        /// A string the body must contain.
        pub expect_body: Option<String>,
    }
}

config_struct! {
    /// A gRPC health check (`grpc.health.v1.Health/Check` over HTTP/2).
    pub struct GrpcCheck {
        /// The service to ask about; empty asks about the server as a whole.
        pub service: String = String::new(),
    }
}

config_struct! {
    /// An empty mapping: a TCP connect check has no settings.
    pub struct TcpCheck {}
}

/// Where a server's health comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Tcp,
    Http(HttpCheck),
    Grpc(GrpcCheck),
}

config_struct! {
    /// Active health checks of a backend's servers (or of one server).
    pub struct HealthCheck {
        /// A TCP connect check (the default when no kind is given).
        pub tcp: Option<TcpCheck>,
        pub http: Option<HttpCheck>,
        pub grpc: Option<GrpcCheck>,
        pub interval: Duration = Duration::from_secs(2),
        pub timeout: Duration = Duration::from_secs(1),
        /// Consecutive successes for a down server to come up.
        pub rise: u32 = 2,
        /// Consecutive failures for an up server to go down.
        pub fall: u32 = 3,
        /// Interval while a server is changing state; default: `interval`.
        pub fast_interval: Option<Duration>,
        /// Interval while a server is down; default: `interval`.
        pub down_interval: Option<Duration>,
        /// Random spread of each interval, so checks do not align.
        pub jitter: Percent = Percent(10.0),
        /// Port to check; default: the server's port.
        pub port: Option<u16>,
        /// Address to check; default: the server's address.
        pub address: Option<String>,
        /// State before the first check: `up` (one failure takes it down), `fully-up`
        /// (`fall` failures), `down` (one success brings it up) or `fully-down`.
        pub init_state: InitState = InitState::Up,
    }
}

impl HealthCheck {
    /// The kind of check, tcp when none is given.
    pub fn kind(&self) -> CheckKind {
        match (&self.http, &self.grpc) {
            (Some(h), _) => CheckKind::Http(h.clone()),
            (None, Some(g)) => CheckKind::Grpc(g.clone()),
            _ => CheckKind::Tcp,
        }
    }
}

/// A server's health before its first check (HAProxy's `init-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    Up,
    FullyUp,
    Down,
    FullyDown,
}

impl Decode for InitState {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "an initial state", |s| match s {
            "up" => Ok(InitState::Up),
            "fully-up" => Ok(InitState::FullyUp),
            "down" => Ok(InitState::Down),
            "fully-down" => Ok(InitState::FullyDown),
            _ => Err(format!(
                "unknown initial state {s:?} (expected up, fully-up, down or fully-down)"
            )),
        })
    }
}

config_struct! {
    /// Failure percentage detection.
    pub struct FailurePercentage {
        /// A server failing at least this share of its requests in an interval is ejected.
        pub threshold: Percent = Percent(85.0),
        /// Requests a server must have had in the interval to be judged.
        pub request_volume: u32 = 50,
        /// Servers in the backend that must have that volume for any to be judged.
        pub minimum_hosts: u32 = 3,
    }
}

config_struct! {
    /// Passive outlier detection, with Envoy's semantics.
    pub struct OutlierDetection {
        /// Consecutive 5xx answers (and connection failures) that eject a server; 0: off.
        pub consecutive_5xx: u32 = 5,
        /// Consecutive gateway failures (502, 503, 504, connection failures); 0: off.
        pub consecutive_gateway_failure: u32 = 0,
        pub failure_percentage: Option<FailurePercentage>,
        /// How often failure percentages are judged and ejections reconsidered.
        pub interval: Duration = Duration::from_secs(10),
        /// Ejection time the first time; it grows with each ejection of the same server.
        pub base_ejection_time: Duration = Duration::from_secs(30),
        pub max_ejection_time: Duration = Duration::from_secs(300),
        /// At most this share of the backend's servers are ejected at once.
        pub max_ejection_percent: Percent = Percent(10.0),
    }
}

config_struct! {
    /// Backend limits, with Envoy's semantics and defaults.
    pub struct CircuitBreaker {
        /// Open connections to the backend's servers.
        pub max_connections: u32 = 1024,
        /// Requests waiting in the queue (with `queue`).
        pub max_pending_requests: u32 = 1024,
        /// Requests in flight to the backend.
        pub max_requests: u32 = 1024,
        /// Retries in flight.
        pub max_retries: u32 = 3,
    }
}

config_struct! {
    /// Waiting for a free slot instead of an immediate 503 (HAProxy's `timeout queue`).
    pub struct Queue {
        pub timeout: Duration = Duration::from_secs(5),
    }
}

/// A condition that makes a request eligible for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    EmptyResponse,
    JunkResponse,
    ResponseTimeout,
    RefusedStream,
    Reset,
    /// Any 5xx answer.
    Status5xx,
    /// 502, 503 and 504.
    GatewayError,
    Status(u16),
}

impl Decode for RetryOn {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        cx.parse_scalar(node, "a retry condition", |s| {
            Ok(match s {
                "connect-failure" => RetryOn::ConnectFailure,
                "empty-response" => RetryOn::EmptyResponse,
                "junk-response" => RetryOn::JunkResponse,
                "response-timeout" => RetryOn::ResponseTimeout,
                "refused-stream" => RetryOn::RefusedStream,
                "reset" => RetryOn::Reset,
                "5xx" => RetryOn::Status5xx,
                "gateway-error" => RetryOn::GatewayError,
                _ => match s.parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) => RetryOn::Status(c),
                    _ => {
                        let known = [
                            "connect-failure",
                            "empty-response",
                            "junk-response",
                            "response-timeout",
                            "refused-stream",
                            "reset",
                            "5xx",
                            "gateway-error",
                        ];
                        let hint = crate::error::nearest(s, known)
                            .map(|n| format!("did you mean {n:?}?"))
                            .unwrap_or_else(|| {
                                format!("expected one of {} or a status code", known.join(", "))
                            });
                        return Err(format!("unknown retry condition {s:?} ({hint})"));
                    }
                },
            })
        })
    }
}

config_struct! {
    /// Delay between attempts: `base` doubled each time, up to `max`, with full jitter.
    pub struct Backoff {
        pub base: Duration = Duration::from_millis(25),
        pub max: Duration = Duration::from_millis(250),
    }
}

config_struct! {
    /// How many retries the backend may send compared with requests (a retry budget).
    pub struct RetryBudget {
        /// Retries allowed as a share of requests over the last ten seconds.
        pub ratio: Percent = Percent(20.0),
        /// Retries allowed per second in any case.
        pub min_per_second: u32 = 10,
    }
}

/// A budget written as a mapping or as a bare percentage (`budget: 20%`).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget(pub RetryBudget);

impl Decode for Budget {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.kind {
            NodeKind::Scalar { .. } => Percent::decode(node, cx).map(|ratio| {
                Budget(RetryBudget {
                    ratio,
                    min_per_second: 10,
                })
            }),
            _ => RetryBudget::decode(node, cx).map(Budget),
        }
    }
    fn absent(_: &mut Cx, _: &Node, _: &str) -> Option<Self> {
        Some(Budget(RetryBudget {
            ratio: Percent(20.0),
            min_per_second: 10,
        }))
    }
    fn fallback() -> Option<Self> {
        Self::absent(
            &mut Cx::new(),
            &Node {
                pos: Default::default(),
                kind: NodeKind::Null,
            },
            "",
        )
    }
    fn schema() -> crate::decode::Schema {
        RetryBudget::schema()
    }
}

config_struct! {
    /// Retries of failed requests.
    pub struct Retries {
        /// Retries after the first attempt.
        pub attempts: u32 = 3,
        /// What may be retried.
        pub on: Vec<Spanned<RetryOn>>,
        /// Time allowed for each attempt's response head; default: the server timeout.
        pub per_try_timeout: Option<Duration>,
        pub backoff: Backoff,
        /// Send each retry to another server when there is one.
        pub redispatch: bool = true,
        pub budget: Budget,
        /// Also retry methods that are not idempotent (POST, PATCH). Connection failures
        /// and refused streams are retried for every method regardless.
        pub non_idempotent: bool = false,
        /// Request bodies up to this size are kept in memory so they can be sent again;
        /// larger ones are streamed and not retried.
        pub max_body: Size = Size(64 << 10),
    }
}

impl Retries {
    /// The conditions, with the default (`connect-failure`, `refused-stream`) when none are given.
    pub fn conditions(&self) -> Vec<RetryOn> {
        if self.on.is_empty() {
            vec![RetryOn::ConnectFailure, RetryOn::RefusedStream]
        } else {
            self.on.iter().map(|o| o.value).collect()
        }
    }
}
