//! Header work at the backend's edge: hop-by-hop headers off the request (an upgrade is
//! kept for an HTTP/1.1 server) and off the response (but a `101`'s), `Expect:
//! 100-continue` answered here rather than passed on, and the forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `Via`) the frontend asks for.

use std::task::{Context, Poll};

use http::header::EXPECT;
use http::{Request, Response, StatusCode, Version};
use tower::Service;

use super::Outcome;
use super::future::{After, Hook};
use crate::body::Body;
use crate::error::ProxyError;
use crate::headers::{Present, forwarding_headers, strip_hop_by_hop, strip_present};
use crate::upstream::Proto;

super::layer!(HeadersLayer => Headers);

impl<'a, S> Service<Request<Body>> for Headers<'a, S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = After<S::Future, HopByHop>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let x = self.x;
        // One pass over the names says which of the headers below are there at all.
        let present = Present::of(req.headers());
        let upgrade = present.has(Present::UPGRADE)
            && req.version() != Version::HTTP_2
            && x.be.proto == Proto::Http1;
        let h = req.headers_mut();
        strip_present(h, present, upgrade, true);
        if present.has(Present::EXPECT)
            && h.get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            h.remove(EXPECT);
        }
        forwarding_headers(x.from.fe, x.from.env.conn, h, present);
        After::new(self.inner.call(req), HopByHop)
    }
}

/// Takes the hop-by-hop headers off a server's response.
pub struct HopByHop;

impl Hook for HopByHop {
    fn after(self, out: &mut Outcome) {
        if let Ok(resp) = out
            && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            strip_hop_by_hop(resp.headers_mut(), false, false);
        }
    }
}
