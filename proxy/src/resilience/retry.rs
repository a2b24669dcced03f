//! Retry policies: which failures may be retried, for which methods, and how the request
//! is kept so that it can be sent again.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::Method;
use rampart_config::resilience::{Retries, RetryOn};

use crate::error::ErrorKind;

/// A compiled retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    on_connect: bool,
    on_empty: bool,
    on_junk: bool,
    on_timeout: bool,
    on_refused: bool,
    on_reset: bool,
    on_5xx: bool,
    on_gateway: bool,
    statuses: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub redispatch: bool,
    pub budget_ratio: f64,
    pub budget_min_per_second: u32,
    pub non_idempotent: bool,
    pub max_body: u64,
}

impl From<&Retries> for RetryPolicy {
    fn from(r: &Retries) -> Self {
        let on = r.conditions();
        let has = |c: RetryOn| on.contains(&c);
        Self {
            attempts: r.attempts,
            on_connect: has(RetryOn::ConnectFailure),
            on_empty: has(RetryOn::EmptyResponse),
            on_junk: has(RetryOn::JunkResponse),
            on_timeout: has(RetryOn::ResponseTimeout),
            on_refused: has(RetryOn::RefusedStream),
            on_reset: has(RetryOn::Reset),
            on_5xx: has(RetryOn::Status5xx),
            on_gateway: has(RetryOn::GatewayError),
            statuses: on
                .iter()
                .filter_map(|c| match c {
                    RetryOn::Status(s) => Some(*s),
                    _ => None,
                })
                .collect(),
            per_try_timeout: r.per_try_timeout,
            backoff_base: r.backoff.base,
            backoff_max: r.backoff.max,
            redispatch: r.redispatch,
            budget_ratio: r.budget.0.ratio.fraction(),
            budget_min_per_second: r.budget.0.min_per_second,
            non_idempotent: r.non_idempotent,
            max_body: r.max_body.0,
        }
    }
}

/// Methods that may be sent twice (RFC 9110 section 9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl RetryPolicy {
    /// Whether a request that failed with `kind` may be retried.
    /// Whether a request that failed with `e` is retried: the policy must name the failure,
    /// and the method must allow a second send unless the server never saw the request
    /// (`e.retryable`: a failed connect, a refused stream).
    pub fn retries_error(&self, e: &crate::error::ProxyError, method: &Method) -> bool {
        use ErrorKind::*;
        let any = self.on_5xx || self.on_gateway;
        let named = match e.kind {
            ConnectFailed | ConnectTimeout => self.on_connect || any,
            RefusedStream => self.on_refused || any,
            EmptyResponse => self.on_empty || any,
            JunkResponse | BadResponse => self.on_junk || any,
            Reset => self.on_reset || any,
            ResponseTimeout => self.on_timeout || any,
            _ => false,
        };
        named && (e.retryable || self.non_idempotent || idempotent(method))
    }

    /// Whether a response with `status` is retried.
    pub fn retries_status(&self, status: u16, method: &Method) -> bool {
        if !(self.non_idempotent || idempotent(method)) {
            return false;
        }
        (self.on_5xx && (500..600).contains(&status))
            || (self.on_gateway && matches!(status, 502..=504))
            || self.statuses.contains(&status)
    }

    /// Whether any response status can cause a retry (so responses must be looked at).
    pub fn by_status(&self) -> bool {
        self.on_5xx || self.on_gateway || !self.statuses.is_empty()
    }
}

/// Seconds since the process started, for retry budgets.
pub fn now_secs() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_config::decode::{Decode, Spanned};

    fn policy(on: &[RetryOn]) -> RetryPolicy {
        let mut r = Retries::fallback().unwrap();
        r.on = on
            .iter()
            .map(|c| Spanned {
                value: *c,
                pos: Default::default(),
            })
            .collect();
        RetryPolicy::from(&r)
    }

    fn err(kind: ErrorKind) -> crate::error::ProxyError {
        crate::error::ProxyError::new(kind, "test")
    }

    #[test]
    fn default_retries_only_unsent_requests() {
        let p = policy(&[]);
        assert!(p.retries_error(&err(ErrorKind::ConnectFailed), &Method::POST));
        assert!(p.retries_error(&err(ErrorKind::RefusedStream), &Method::POST));
        assert!(!p.retries_error(&err(ErrorKind::Reset), &Method::GET));
        assert!(!p.retries_status(503, &Method::GET));
    }

    #[test]
    fn conditions_and_methods() {
        let p = policy(&[RetryOn::Reset, RetryOn::GatewayError, RetryOn::Status(429)]);
        assert!(p.retries_error(&err(ErrorKind::Reset), &Method::GET));
        assert!(!p.retries_error(&err(ErrorKind::Reset), &Method::POST));
        assert!(p.retries_error(&err(ErrorKind::ResponseTimeout), &Method::GET));
        assert!(p.retries_status(503, &Method::GET));
        assert!(!p.retries_status(500, &Method::GET));
        assert!(p.retries_status(429, &Method::PUT));
        assert!(!p.retries_status(429, &Method::POST));
        assert!(!p.retries_error(&err(ErrorKind::ClientAbort), &Method::GET));
        let p = policy(&[RetryOn::EmptyResponse]);
        assert!(!p.retries_error(&err(ErrorKind::JunkResponse), &Method::GET));
        assert!(p.retries_error(&err(ErrorKind::EmptyResponse), &Method::GET));
        assert!(!p.retries_error(&err(ErrorKind::ConnectFailed), &Method::GET));
    }
}
