//! The backend's rules: its `http_request` rules before anything else of the backend
//! path, and its `http_response` rules on the server's response, before the route's and
//! the frontend's (which the handler runs). A rule that answers the request (`deny`,
//! `return`, `redirect`) ends it here: it reaches no queue and no server, and response
//! rules do not run on the answer, as in HAProxy.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::future::{After, Hook, Maybe};
use super::{Exchange, Line, Outcome};
use crate::body::Body;
use crate::error::ProxyError;
use crate::rules::{run_request, run_response};

super::layer!(RulesLayer => Rules);

impl<'a, S> Service<Request<Body>> for Rules<'a, S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = ProxyError>,
{
    type Response = Response<Body>;
    type Error = ProxyError;
    type Future = Maybe<'a, After<S::Future, Respond<'a>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let x = self.x;
        let req = if x.be.request_rules.is_empty() {
            req
        } else {
            let (mut parts, body) = req.into_parts();
            let mut s = x.state();
            let s = &mut *s;
            let answer = run_request(
                &x.be.request_rules,
                &x.be.acls,
                &mut parts,
                x.from.env,
                &mut s.done.track,
            );
            if let Some((resp, kind)) = answer {
                s.done.answered(resp.status(), kind);
                s.answered = true;
                return Maybe::ready(Ok(resp));
            }
            Request::from_parts(parts, body)
        };
        // Response rules read the request line; keep it only when some will run.
        let route_rules = x.from.route.is_some_and(|r| !r.response_rules.is_empty());
        if route_rules || !x.be.response_rules.is_empty() || !x.from.fe.response_rules.is_empty() {
            x.state().line = Some(Line {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
            });
        }
        Maybe::inner(After::new(self.inner.call(req), Respond(x)))
    }
}

/// Runs the backend's response rules on the server's response.
pub struct Respond<'a>(&'a Exchange<'a>);

impl Hook for Respond<'_> {
    fn after(self, out: &mut Outcome) {
        let x = self.0;
        let Ok(resp) = out else {
            return;
        };
        if x.be.response_rules.is_empty() {
            return;
        }
        let mut s = x.state();
        let s = &mut *s;
        let Some(line) = &s.line else {
            return;
        };
        let rl = line.as_request_line();
        let env = x.from.env;
        if run_response(
            &x.be.response_rules,
            &x.be.acls,
            resp,
            &rl,
            env,
            &s.done.track,
        ) {
            s.done.response_denied();
        }
    }
}
