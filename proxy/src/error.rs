//! Every data-path error, whose fault it is, whether it may be retried, and the one place
//! where errors become responses.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something malformed.
    BadRequest,
    /// The client did not send a complete request head in time.
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    /// A transfer coding or method this proxy does not handle.
    NotImplemented,
    VersionNotSupported,
    /// The client went away or reset the stream.
    ClientAbort,
    /// The client stopped sending the request body.
    ClientTimeout,
    /// No backend matched the request.
    NoBackend,
    /// The backend has no usable server.
    NoServer,
    /// Could not connect to the server.
    ConnectFailed,
    /// The connection to the server took too long.
    ConnectTimeout,
    /// The server answered something that is not HTTP, or closed mid-message.
    BadResponse,
    /// The server closed the connection before sending any byte of a response.
    EmptyResponse,
    /// The server sent bytes that are not an HTTP response head, or cut the head short.
    JunkResponse,
    /// The server reset the connection or the stream before the response head.
    Reset,
    /// A circuit breaker limit (named) was reached; the request was not sent.
    Overloaded(crate::state::Limit),
    /// The request waited in the backend's queue for longer than its timeout.
    QueueTimeout,
    /// The server did not answer in time.
    ResponseTimeout,
    /// An HTTP/2 server refused the stream before processing it.
    RefusedStream,
    Internal,
}

/// A data-path error.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} ({side:?}): {detail}")]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    /// Whether the server never saw the request, so that sending it again (elsewhere) is
    /// safe whatever its method: a failed connect or a refused stream. The upstream
    /// client also sets it for a reused connection the server had closed, and clears it
    /// once it has sent the request again on a new one.
    pub retryable: bool,
    pub detail: String,
}

impl ProxyError {
    /// An error on `side` (a body's error names the side whose connection failed, which
    /// its kind alone does not say).
    pub fn on(side: Side, kind: ErrorKind, detail: impl Into<String>) -> Self {
        let mut e = Self::new(kind, detail);
        e.side = side;
        e
    }

    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        use ErrorKind::*;
        let side = match kind {
            BadRequest | RequestTimeout | PayloadTooLarge | UriTooLong | HeadersTooLarge
            | NotImplemented | VersionNotSupported | ClientAbort | ClientTimeout => Side::Client,
            NoBackend | Internal => Side::Internal,
            NoServer | ConnectFailed | ConnectTimeout | BadResponse | ResponseTimeout
            | RefusedStream | EmptyResponse | JunkResponse | Reset | Overloaded(_)
            | QueueTimeout => Side::Server,
        };
        let retryable = matches!(kind, ConnectFailed | ConnectTimeout | RefusedStream);
        Self {
            kind,
            side,
            retryable,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.kind)
    }

    /// The termination code of a body that failed while its response was being sent: the
    /// client's doing, the server's timeout, or the server's.
    pub fn data_termination(&self) -> Termination {
        match (self.side, self.kind) {
            (Side::Client, _) => Termination::CLIENT_ABORT_DATA,
            (_, ErrorKind::ResponseTimeout) => Termination::SERVER_TIMEOUT_DATA,
            _ => Termination::SERVER_DATA,
        }
    }

    /// The HAProxy-style termination flag pair for the access log (`SC`, `sH`, `CD`, ...).
    pub fn termination(&self) -> Termination {
        use ErrorKind::*;
        match self.kind {
            BadRequest | UriTooLong | HeadersTooLarge | NotImplemented | VersionNotSupported
            | PayloadTooLarge => Termination::REFUSED,
            RequestTimeout => Termination::CLIENT_TIMEOUT_REQUEST,
            ClientAbort => Termination::CLIENT_ABORT_DATA,
            ClientTimeout => Termination::CLIENT_TIMEOUT_DATA,
            NoBackend | NoServer => Termination::SERVER_CONNECT,
            ConnectFailed | RefusedStream => Termination::SERVER_CONNECT,
            ConnectTimeout => Termination::SERVER_CONNECT_TIMEOUT,
            BadResponse | EmptyResponse | JunkResponse | Reset => Termination::SERVER_HEADERS,
            ResponseTimeout => Termination::SERVER_TIMEOUT_HEADERS,
            Overloaded(_) => Termination::OVERLOADED,
            QueueTimeout => Termination::QUEUE_TIMEOUT,
            Internal => Termination::INTERNAL,
        }
    }

    /// The response a client gets. A breaker's 503 names the limit it hit.
    pub fn to_response(&self) -> Response<Body> {
        let mut r = error_response(self.status());
        match self.kind {
            ErrorKind::Overloaded(limit) => {
                r.headers_mut()
                    .insert(&OVERLOADED, HeaderValue::from_static(limit.as_str()));
            }
            ErrorKind::QueueTimeout => {
                r.headers_mut()
                    .insert(&OVERLOADED, HeaderValue::from_static("queue_timeout"));
            }
            _ => {}
        }
        r
    }
}

/// The header naming the limit that made rampart answer 503 itself.
pub static OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-rampart-overloaded");

fn status_of(kind: ErrorKind) -> StatusCode {
    use ErrorKind::*;
    match kind {
        BadRequest => StatusCode::BAD_REQUEST,
        RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UriTooLong => StatusCode::URI_TOO_LONG,
        HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        NotImplemented => StatusCode::NOT_IMPLEMENTED,
        VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ClientAbort => StatusCode::BAD_REQUEST,
        ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        NoBackend | NoServer => StatusCode::SERVICE_UNAVAILABLE,
        ConnectFailed | BadResponse | RefusedStream | EmptyResponse | JunkResponse | Reset => {
            StatusCode::BAD_GATEWAY
        }
        Overloaded(_) | QueueTimeout => StatusCode::SERVICE_UNAVAILABLE,
        ConnectTimeout | ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The explanation line of HAProxy's built-in error pages.
fn explanation(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Your browser sent an invalid request.",
        401 => "You need a valid user and password to access this content.",
        403 => "Request forbidden by administrative rules.",
        404 => "The requested URL was not found on this server.",
        405 => {
            "A request was made of a resource using a request method not supported by that resource."
        }
        408 => "Your browser didn't send a complete request in time.",
        410 => "The requested resource is no longer available and will not be available again.",
        413 => "The request entity exceeds the maximum allowed.",
        414 => "The request URL is too long.",
        425 => "Your browser sent early data.",
        429 => "You have sent too many requests in a given amount of time.",
        431 => "The request header fields are too large.",
        500 => "An internal server error occurred.",
        501 => "The server does not support the functionality required to fulfill the request.",
        502 => "The server returned an invalid or incomplete response.",
        503 => "No server is available to handle this request.",
        504 => "The server didn't respond in time.",
        505 => "The HTTP version used in the request is not supported.",
        _ => "",
    }
}

/// A short HTML error page for `status`, like HAProxy's.
pub fn error_page(status: StatusCode) -> Bytes {
    Bytes::from(format!(
        "<html><body><h1>{} {}</h1>\n{}\n</body></html>\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        explanation(status)
    ))
}

/// An error response with the built-in page.
pub fn error_response(status: StatusCode) -> Response<Body> {
    let body = error_page(status);
    let mut r = Response::new(Body::full(body.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// HAProxy's two-letter termination state of a request, as its access log shows it: who
/// ended the exchange (`C` client, `S` server, `P` proxy, `I` internal; lower case for a
/// timeout), and in which phase (`R` request, `Q` queue, `C` connect, `H` headers, `D`
/// data); `--` for a normal end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination(pub [u8; 2]);

impl Termination {
    pub const NONE: Termination = Termination(*b"--");
    pub const REFUSED: Termination = Termination(*b"PR");
    pub const RESPONSE_DENIED: Termination = Termination(*b"PH");
    pub const OVERLOADED: Termination = Termination(*b"PC");
    pub const CLIENT_TIMEOUT_REQUEST: Termination = Termination(*b"cR");
    pub const CLIENT_TIMEOUT_DATA: Termination = Termination(*b"cD");
    pub const CLIENT_ABORT_REQUEST: Termination = Termination(*b"CR");
    pub const CLIENT_ABORT_QUEUE: Termination = Termination(*b"CQ");
    pub const CLIENT_ABORT_HEADERS: Termination = Termination(*b"CH");
    pub const CLIENT_ABORT_DATA: Termination = Termination(*b"CD");
    pub const SERVER_CONNECT: Termination = Termination(*b"SC");
    pub const SERVER_CONNECT_TIMEOUT: Termination = Termination(*b"sC");
    pub const SERVER_HEADERS: Termination = Termination(*b"SH");
    pub const SERVER_TIMEOUT_HEADERS: Termination = Termination(*b"sH");
    pub const SERVER_DATA: Termination = Termination(*b"SD");
    pub const SERVER_TIMEOUT_DATA: Termination = Termination(*b"sD");
    pub const QUEUE_TIMEOUT: Termination = Termination(*b"sQ");
    pub const INTERNAL: Termination = Termination(*b"IH");

    /// Whether the client ended the exchange (an abort or a timeout).
    pub fn by_client(self) -> bool {
        matches!(self.0[0], b'C' | b'c')
    }

    /// Whether the server ended the exchange (an abort or a timeout).
    pub fn by_server(self) -> bool {
        matches!(self.0[0], b'S' | b's')
    }

    /// Whether the exchange ended in the request phase.
    pub fn in_request(self) -> bool {
        self.0[1] == b'R'
    }
}
