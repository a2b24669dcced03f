//! RouteConfiguration to rampart virtual hosts and routes.
//!
//! A route's match becomes a condition of anonymous ACLs (path, headers, query
//! parameters); its action becomes the route's backend (or split), and its rewrites,
//! header changes, redirects and direct responses become the route's own rules.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rt;
use rampart_config::model::{self, BackendTarget, DomainMatch, RuleDef, UseBackend, VirtualHost};
use rampart_config::resilience::{Backoff, Budget, Percent, Retries, RetryBudget, RetryOn};
use rampart_config::rules::{
    Condition, Fetch, HeaderAction, IntMatch, MatchMethod, Patterns, Redirect, RedirectKind, Reply,
    RequestAction, ResponseAction, Rule, SampleExpr,
};
use rampart_config::{NamedMap, Spanned};

use super::listener::rule;
use super::matches::{acl, regex_ok, route_match, term};
use super::{Res, at, bad, defaults, duration, fields, literal, spanned};

/// Which clusters exist now: routes to others answer 503 (Envoy's `NC`) until they do.
pub struct Known<'a> {
    pub cluster: &'a dyn Fn(&str) -> bool,
}

/// Checks a route configuration; with `validate_clusters`, every cluster it names must be
/// known now.
pub fn check_routes(rc: &rt::RouteConfiguration) -> Res<()> {
    fields(rc)?;
    super::name(&rc.name, "name").or_else(|e| if rc.name.is_empty() { Ok(()) } else { Err(e) })?;
    let all = |_: &str| true;
    virtual_hosts(rc, &Known { cluster: &all }).map(|_| ())
}

/// Checks that every cluster the routes name is known (`validate_clusters: true`).
pub fn check_clusters_known(rc: &rt::RouteConfiguration, known: &Known<'_>) -> Res<()> {
    if rc.validate_clusters.as_ref().is_none_or(|v| !v.value) {
        return Ok(());
    }
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        for (ri, r) in vh.routes.iter().enumerate() {
            let Some(rt::route::Action::Route(a)) = &r.action else {
                continue;
            };
            let p = format!("virtual_hosts[{vi}].routes[{ri}].route");
            for (c, cp) in clusters_of(a, &p) {
                if !(known.cluster)(&c) {
                    return bad(
                        cp,
                        format!("unknown cluster {c:?} (validate_clusters is on)"),
                    );
                }
            }
        }
    }
    Ok(())
}

fn clusters_of(a: &rt::RouteAction, p: &str) -> Vec<(String, String)> {
    use rt::route_action::ClusterSpecifier as C;
    match &a.cluster_specifier {
        Some(C::Cluster(c)) => vec![(c.clone(), at(p, "cluster"))],
        Some(C::WeightedClusters(w)) => w
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.name.clone(),
                    format!("{p}.weighted_clusters.clusters[{i}].name"),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The virtual hosts of a route configuration.
pub fn virtual_hosts(
    rc: &rt::RouteConfiguration,
    known: &Known<'_>,
) -> Res<(NamedMap<VirtualHost>, Vec<RuleDef<RequestAction>>)> {
    let mut out = NamedMap::default();
    let mut seen_domains: std::collections::HashMap<String, usize> = Default::default();
    let mut any = None;
    let global = Mutations::of(
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
        "",
    )?;
    let specific_first = !rc.most_specific_header_mutations_wins;
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let vp = format!("virtual_hosts[{vi}]");
        if vh.domains.is_empty() {
            return bad(
                at(&vp, "domains"),
                "a virtual host needs at least one domain",
            );
        }
        let mut domains = Vec::new();
        for (di, d) in vh.domains.iter().enumerate() {
            let dp = format!("{vp}.domains[{di}]");
            match DomainMatch::parse(d) {
                Ok(DomainMatch::Any) => {
                    if any.replace(vi).is_some() {
                        return bad(dp, "only one virtual host may have the domain \"*\"");
                    }
                }
                Ok(_) => {
                    if let Some(other) = seen_domains.insert(d.to_ascii_lowercase(), vi) {
                        return bad(
                            dp,
                            format!("domain {d:?} is also in virtual_hosts[{other}]"),
                        );
                    }
                }
                Err(e) => return bad(dp, e),
            }
            domains.push(spanned(d.clone()));
        }
        let host = Mutations::of(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            &vp,
        )?;
        let mut routes = Vec::new();
        use rt::virtual_host::TlsRequirementType as Tls;
        match Tls::try_from(vh.require_tls) {
            Ok(Tls::None) => {}
            Ok(Tls::All | Tls::ExternalOnly) => routes.push(https_only()),
            Err(_) => return bad(at(&vp, "require_tls"), "unknown TLS requirement"),
        }
        for (ri, r) in vh.routes.iter().enumerate() {
            let rp = format!("{vp}.routes[{ri}]");
            let mine = Mutations::of(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                &rp,
            )?;
            let levels = if specific_first {
                [&mine, &host, &global]
            } else {
                [&global, &host, &mine]
            };
            routes.push(route(r, &rp, vh.retry_policy.as_ref(), levels, known)?);
        }
        let name = if vh.name.is_empty() || out.contains(&vh.name) {
            format!("{}#{vi}", vh.name)
        } else {
            vh.name.clone()
        };
        out.push(spanned(name), VirtualHost { domains, routes });
    }
    Ok((out, Vec::new()))
}

/// `redirect scheme https code 301` for requests without TLS (`require_tls`).
fn https_only() -> UseBackend {
    let mut r = UseBackend::to("");
    r.target = BackendTarget::None;
    r.cond = Some(Condition {
        unless: true,
        alternatives: vec![vec![term(
            acl(Fetch::SslFc, MatchMethod::Bool, false, Patterns::None),
            false,
        )]],
    });
    r.http_request = vec![rule(RequestAction::Redirect(Redirect {
        kind: RedirectKind::Scheme,
        target: literal("https"),
        code: 301,
        drop_query: false,
        append_slash: false,
    }))];
    r
}

/// One route.
fn route(
    r: &rt::Route,
    path: &str,
    vhost_retry: Option<&rt::RetryPolicy>,
    levels: [&Mutations; 3],
    known: &Known<'_>,
) -> Res<UseBackend> {
    let m = r.r#match.as_ref().ok_or_else(|| super::Bad {
        path: at(path, "match"),
        message: "a route needs a match".to_owned(),
    })?;
    let (cond, path_rewrite) = route_match(m, &at(path, "match"))?;
    let mut u = UseBackend::to("");
    u.cond = cond;
    let mut request: Vec<RuleDef<RequestAction>> = Vec::new();
    let mut response: Vec<RuleDef<ResponseAction>> = Vec::new();
    for l in levels {
        request.extend(l.request.iter().cloned());
        response.extend(l.response.iter().cloned());
    }
    use rt::route::Action;
    match &r.action {
        Some(Action::Route(a)) => {
            let ap = at(path, "route");
            u.target = target(a, &ap, known)?;
            if let BackendTarget::None = u.target {
                let code = match a.cluster_not_found_response_code {
                    1 => 404,
                    2 => 500,
                    _ => 503,
                };
                request.push(reply_rule(code, None));
            }
            // Rewrites come after the header changes, as Envoy applies them.
            if !a.prefix_rewrite.is_empty() {
                let Some((regex, icase)) = &path_rewrite else {
                    return bad(
                        at(&ap, "prefix_rewrite"),
                        "prefix_rewrite needs a prefix, path or path_separated_prefix match",
                    );
                };
                let re = if *icase {
                    format!("(?i){regex}")
                } else {
                    regex.clone()
                };
                request.push(rule(RequestAction::ReplacePath {
                    regex: re,
                    replacement: literal(&format!("{}\\1", a.prefix_rewrite)),
                }));
            }
            if let Some(rw) = &a.regex_rewrite {
                let rp = at(&ap, "regex_rewrite");
                let pattern = rw.pattern.as_ref().map(|p| p.regex.as_str()).unwrap_or("");
                regex_ok(pattern, &at(&rp, "pattern.regex"))?;
                request.push(rule(RequestAction::ReplacePath {
                    regex: pattern.to_owned(),
                    replacement: literal(&rw.substitution),
                }));
            }
            use rt::route_action::HostRewriteSpecifier as H;
            match &a.host_rewrite_specifier {
                None => {}
                Some(H::HostRewriteLiteral(h)) => {
                    http::HeaderValue::from_str(h).or_else(|_| {
                        bad(
                            at(&ap, "host_rewrite_literal"),
                            format!("invalid host {h:?}"),
                        )
                    })?;
                    request.push(rule(RequestAction::Header(HeaderAction::Set {
                        name: "host".to_owned(),
                        value: literal(h),
                    })));
                }
                Some(_) => {
                    return bad(
                        at(&ap, "host_rewrite_specifier"),
                        "only host_rewrite_literal is supported by rampart",
                    );
                }
            }
            let t = match &a.idle_timeout {
                Some(d) => Some(duration(d, &at(&ap, "idle_timeout"))?),
                None => match &a.timeout {
                    Some(d) => Some(duration(d, &at(&ap, "timeout"))?),
                    // Envoy's default route timeout.
                    None => Some(std::time::Duration::from_secs(15)),
                },
            };
            u.timeout = t.map(|t| if t.is_zero() { super::NO_TIMEOUT } else { t });
            let retry = a.retry_policy.as_ref().or(vhost_retry);
            let retry_path = if a.retry_policy.is_some() {
                at(&ap, "retry_policy")
            } else {
                path.rsplit_once(".routes")
                    .map_or(String::new(), |(v, _)| at(v, "retry_policy"))
            };
            u.retries = retry.map(|p| retries(p, &retry_path)).transpose()?;
            u.hash_key = hash_policy(&a.hash_policy, &at(&ap, "hash_policy"))?;
        }
        Some(Action::Redirect(rd)) => {
            u.target = BackendTarget::None;
            request.extend(redirect(rd, &at(path, "redirect"))?);
        }
        Some(Action::DirectResponse(d)) => {
            u.target = BackendTarget::None;
            let dp = at(path, "direct_response");
            if !(200..=599).contains(&d.status) {
                return bad(
                    at(&dp, "status"),
                    format!("status {} is out of range (200-599)", d.status),
                );
            }
            let body = d
                .body
                .as_ref()
                .map(|b| {
                    super::data_source(b, &at(&dp, "body")).and_then(|t| t.text(&at(&dp, "body")))
                })
                .transpose()?;
            request.push(reply_rule(d.status as u16, body.as_deref()));
        }
        _ => return bad(path, "a route needs route, redirect or direct_response"),
    }
    u.http_request = request;
    u.http_response = response;
    Ok(u)
}

/// `return status N [content-type text/plain string BODY]`.
pub(crate) fn reply_rule(status: u16, body: Option<&str>) -> RuleDef<RequestAction> {
    rule(RequestAction::Return(Reply {
        status,
        content_type: body.map(|_| "text/plain".to_owned()),
        body: body.map(literal),
        headers: Vec::new(),
    }))
}

/// Where a route action sends requests.
fn target(a: &rt::RouteAction, path: &str, known: &Known<'_>) -> Res<BackendTarget> {
    use rt::route_action::ClusterSpecifier as C;
    match &a.cluster_specifier {
        Some(C::Cluster(c)) => {
            if c.is_empty() {
                return bad(at(path, "cluster"), "empty cluster name");
            }
            Ok(if (known.cluster)(c) {
                BackendTarget::One(spanned(c.clone()))
            } else {
                BackendTarget::None
            })
        }
        Some(C::WeightedClusters(w)) => {
            let wp = at(path, "weighted_clusters");
            let mut sum: u64 = 0;
            let mut parts = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                let cp = format!("{wp}.clusters[{i}]");
                if c.name.is_empty() {
                    return bad(at(&cp, "name"), "empty cluster name");
                }
                let weight = c.weight.as_ref().map_or(0, |v| v.value);
                sum += u64::from(weight);
                if weight > 0 && (known.cluster)(&c.name) {
                    parts.push((spanned(c.name.clone()), weight.min(1_000_000)));
                }
            }
            if w.clusters.is_empty() || sum == 0 {
                return bad(
                    at(&wp, "clusters"),
                    "cluster weights must sum to more than 0",
                );
            }
            if let Some(t) = &w.total_weight
                && u64::from(t.value) != sum
            {
                return bad(
                    at(&wp, "total_weight"),
                    format!(
                        "total_weight {} is not the sum of the weights ({sum})",
                        t.value
                    ),
                );
            }
            Ok(if parts.is_empty() {
                BackendTarget::None
            } else {
                BackendTarget::Split(parts)
            })
        }
        _ => bad(path, "a route needs cluster or weighted_clusters"),
    }
}

/// Header changes of one level (route configuration, virtual host, route).
#[derive(Default)]
struct Mutations {
    request: Vec<RuleDef<RequestAction>>,
    response: Vec<RuleDef<ResponseAction>>,
}

impl Mutations {
    fn of(
        req_add: &[core::HeaderValueOption],
        req_del: &[String],
        resp_add: &[core::HeaderValueOption],
        resp_del: &[String],
        path: &str,
    ) -> Res<Self> {
        let mut m = Mutations::default();
        for (i, n) in req_del.iter().enumerate() {
            header_name(
                n,
                &format!("{}[{i}]", at(path, "request_headers_to_remove")),
            )?;
            m.request
                .push(rule(RequestAction::Header(HeaderAction::Del {
                    name: n.clone(),
                    method: MatchMethod::Str,
                })));
        }
        for (i, h) in req_add.iter().enumerate() {
            let p = format!("{}[{i}]", at(path, "request_headers_to_add"));
            if let Some((action, cond)) = header_add(h, &p)? {
                let mut r = rule(RequestAction::Header(action));
                r.rule.cond = cond;
                m.request.push(r);
            }
        }
        for (i, n) in resp_del.iter().enumerate() {
            header_name(
                n,
                &format!("{}[{i}]", at(path, "response_headers_to_remove")),
            )?;
            m.response.push(response_rule(
                HeaderAction::Del {
                    name: n.clone(),
                    method: MatchMethod::Str,
                },
                None,
            ));
        }
        for (i, h) in resp_add.iter().enumerate() {
            let p = format!("{}[{i}]", at(path, "response_headers_to_add"));
            if let Some((action, cond)) = header_add(h, &p)? {
                m.response.push(response_rule(action, cond));
            }
        }
        Ok(m)
    }
}

fn response_rule(action: HeaderAction, cond: Option<Condition>) -> RuleDef<ResponseAction> {
    RuleDef {
        text: super::listener::describe(&RequestAction::Header(action.clone())),
        rule: Rule {
            action: ResponseAction::Header(action),
            cond,
        },
        pos: Default::default(),
    }
}

fn header_name(n: &str, path: &str) -> Res<()> {
    if n.starts_with(':') || n.eq_ignore_ascii_case("host") {
        return bad(path, format!("header {n:?} cannot be changed this way"));
    }
    http::HeaderName::from_bytes(n.as_bytes())
        .map(|_| ())
        .or_else(|_| bad(path, format!("invalid header name {n:?}")))
}

/// A header to add, with its append action (Envoy's `append_action`, or the older
/// `append`), as a rule and its condition.
fn header_add(
    h: &core::HeaderValueOption,
    path: &str,
) -> Res<Option<(HeaderAction, Option<Condition>)>> {
    use core::header_value_option::HeaderAppendAction as A;
    let Some(hv) = &h.header else {
        return bad(at(path, "header"), "a header is needed");
    };
    header_name(&hv.key, &at(path, "header.key"))?;
    let value = if hv.value.is_empty() && !hv.raw_value.is_empty() {
        String::from_utf8(hv.raw_value.clone())
            .or_else(|_| bad(at(path, "header.raw_value"), "the value is not text"))?
    } else {
        hv.value.clone()
    };
    if value.is_empty() && !h.keep_empty_value {
        return Ok(None);
    }
    let fmt = super::header_format(&value, &at(path, "header.value"))?;
    let name = hv.key.to_ascii_lowercase();
    let present = || Condition {
        unless: false,
        alternatives: vec![vec![term(
            acl(
                Fetch::HdrCnt(name.clone()),
                MatchMethod::Int,
                false,
                Patterns::Int(vec![IntMatch::Gt(0)]),
            ),
            false,
        )]],
    };
    let action = match (&h.append, A::try_from(h.append_action)) {
        (Some(a), _) if a.value => A::AppendIfExistsOrAdd,
        (Some(_), _) => A::OverwriteIfExistsOrAdd,
        (None, Ok(a)) => a,
        (None, Err(_)) => return bad(at(path, "append_action"), "unknown append action"),
    };
    Ok(Some(match action {
        A::AppendIfExistsOrAdd => (HeaderAction::Add { name, value: fmt }, None),
        A::AddIfAbsent => {
            let mut c = present();
            c.unless = true;
            (HeaderAction::Add { name, value: fmt }, Some(c))
        }
        A::OverwriteIfExistsOrAdd => (HeaderAction::Set { name, value: fmt }, None),
        A::OverwriteIfExists => {
            let c = present();
            (HeaderAction::Set { name, value: fmt }, Some(c))
        }
    }))
}

/// A retry policy.
fn retries(p: &rt::RetryPolicy, path: &str) -> Res<Retries> {
    let mut r: Retries = defaults()?;
    let mut on: Vec<RetryOn> = Vec::new();
    for cond in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match cond {
            "5xx" => on.extend([
                RetryOn::Status5xx,
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::EmptyResponse,
                RetryOn::ResponseTimeout,
                RetryOn::RefusedStream,
            ]),
            "gateway-error" => on.extend([
                RetryOn::GatewayError,
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::EmptyResponse,
                RetryOn::ResponseTimeout,
            ]),
            "reset" => on.extend([
                RetryOn::Reset,
                RetryOn::EmptyResponse,
                RetryOn::ResponseTimeout,
            ]),
            "connect-failure" => on.push(RetryOn::ConnectFailure),
            "refused-stream" => on.push(RetryOn::RefusedStream),
            "retriable-4xx" => on.push(RetryOn::Status(409)),
            "retriable-status-codes" => {
                for c in &p.retriable_status_codes {
                    if !(100..=599).contains(c) {
                        return bad(
                            at(path, "retriable_status_codes"),
                            format!("status {c} is out of range"),
                        );
                    }
                    on.push(RetryOn::Status(*c as u16));
                }
            }
            "http3-post-connect-failure" => {}
            other => {
                return bad(
                    at(path, "retry_on"),
                    format!("retry condition {other:?} is not supported by rampart"),
                );
            }
        }
    }
    on.dedup();
    r.on = on.into_iter().map(spanned).collect();
    r.attempts = p.num_retries.as_ref().map_or(1, |v| v.value).min(10);
    if let Some(t) = &p.per_try_timeout {
        let d = duration(t, &at(path, "per_try_timeout"))?;
        r.per_try_timeout = (!d.is_zero()).then_some(d);
    }
    let mut backoff = Backoff {
        base: std::time::Duration::from_millis(25),
        max: std::time::Duration::from_millis(250),
    };
    if let Some(b) = &p.retry_back_off {
        let bp = at(path, "retry_back_off");
        if let Some(base) = &b.base_interval {
            backoff.base = duration(base, &at(&bp, "base_interval"))?;
            if backoff.base.is_zero() {
                return bad(at(&bp, "base_interval"), "base_interval must be above 0");
            }
            backoff.max = backoff.base * 10;
        }
        if let Some(max) = &b.max_interval {
            backoff.max = duration(max, &at(&bp, "max_interval"))?;
            if backoff.max < backoff.base {
                return bad(
                    at(&bp, "max_interval"),
                    "max_interval is below base_interval",
                );
            }
        }
    }
    r.backoff = backoff;
    // Envoy retries any method, to another host when there is one; its limit is the
    // cluster's max_retries breaker, not a budget.
    r.non_idempotent = true;
    r.redispatch = true;
    r.budget = Budget(RetryBudget {
        ratio: Percent(100.0),
        min_per_second: 10,
    });
    for (i, pred) in p.retry_host_predicate.iter().enumerate() {
        if pred.name != "envoy.retry_host_predicates.previous_hosts" {
            return bad(
                format!("{path}.retry_host_predicate[{i}]"),
                format!(
                    "retry host predicate {:?} is not supported by rampart",
                    pred.name
                ),
            );
        }
    }
    Ok(r)
}

/// Hash policies as the route's hash keys.
fn hash_policy(
    policies: &[rt::route_action::HashPolicy],
    path: &str,
) -> Res<Vec<Spanned<model::SampleDef>>> {
    use rt::route_action::hash_policy::PolicySpecifier as P;
    let mut out = Vec::new();
    for (i, h) in policies.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if h.terminal && i + 1 < policies.len() {
            return bad(
                at(&p, "terminal"),
                "terminal hash policies before others are not supported by rampart",
            );
        }
        let fetch = match &h.policy_specifier {
            Some(P::Header(hd)) => {
                http::HeaderName::from_bytes(hd.header_name.as_bytes()).or_else(|_| {
                    bad(
                        at(&p, "header.header_name"),
                        format!("invalid header name {:?}", hd.header_name),
                    )
                })?;
                Fetch::Hdr {
                    name: hd.header_name.to_ascii_lowercase(),
                    occurrence: Some(1),
                }
            }
            Some(P::Cookie(c)) => Fetch::Cook(c.name.clone()),
            Some(P::ConnectionProperties(c)) if c.source_ip => Fetch::Src,
            Some(P::ConnectionProperties(_)) => continue,
            Some(P::QueryParameter(q)) => Fetch::UrlParam(q.name.clone()),
            _ => return bad(p, "this hash policy is not supported by rampart"),
        };
        out.push(spanned(model::SampleDef(SampleExpr {
            fetch,
            converters: Vec::new(),
        })));
    }
    Ok(out)
}

/// A redirect as request rules.
fn redirect(rd: &rt::RedirectAction, path: &str) -> Res<Vec<RuleDef<RequestAction>>> {
    use rt::redirect_action::{
        PathRewriteSpecifier as PR, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let code = match C::try_from(rd.response_code) {
        Ok(C::MovedPermanently) => 301,
        Ok(C::Found) => 302,
        Ok(C::SeeOther) => 303,
        Ok(C::TemporaryRedirect) => 307,
        Ok(C::PermanentRedirect) => 308,
        Err(_) => return bad(at(path, "response_code"), "unknown response code"),
    };
    let scheme = match &rd.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_owned()),
        Some(S::SchemeRedirect(s)) if !s.is_empty() => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    let host = (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone());
    if rd.port_redirect > 65535 {
        return bad(
            at(path, "port_redirect"),
            format!("port {} is out of range", rd.port_redirect),
        );
    }
    if rd.port_redirect != 0 && host.is_none() {
        return bad(
            at(path, "port_redirect"),
            "port_redirect needs host_redirect in rampart",
        );
    }
    let path_to = match &rd.path_rewrite_specifier {
        None => None,
        Some(PR::PathRedirect(p)) => Some(p.clone()),
        Some(_) => {
            return bad(
                path,
                "redirects with prefix or regex rewrites are not supported by rampart",
            );
        }
    };
    // Just the scheme: HAProxy's `redirect scheme`.
    if host.is_none() && path_to.is_none() {
        let Some(s) = scheme else {
            return bad(path, "a redirect needs a scheme, host or path to change");
        };
        return Ok(vec![rule(RequestAction::Redirect(Redirect {
            kind: RedirectKind::Scheme,
            target: literal(&s),
            code,
            drop_query: rd.strip_query,
            append_slash: false,
        }))]);
    }
    // Otherwise build `scheme://host[:port]` (the scheme as requested unless set) and
    // keep or replace the path.
    let authority = match &host {
        Some(h) if rd.port_redirect != 0 => format!("{h}:{}", rd.port_redirect),
        Some(h) => h.clone(),
        None => String::new(),
    };
    let make = |s: &str| -> Res<RuleDef<RequestAction>> {
        let mut target = format!("{s}://");
        let mut segs = vec![];
        if authority.is_empty() {
            segs.push(rampart_config::rules::Segment::Lit(target.clone()));
            segs.push(rampart_config::rules::Segment::Sample(SampleExpr {
                fetch: Fetch::Hdr {
                    name: "host".into(),
                    occurrence: Some(1),
                },
                converters: Vec::new(),
            }));
            target.clear();
        } else {
            target.push_str(&authority);
        }
        let (kind, tail) = match &path_to {
            Some(p) => (RedirectKind::Location, p.clone()),
            None => (RedirectKind::Prefix, String::new()),
        };
        target.push_str(&tail);
        if !target.is_empty() {
            segs.push(rampart_config::rules::Segment::Lit(target));
        }
        Ok(rule(RequestAction::Redirect(Redirect {
            kind,
            target: rampart_config::rules::LogFormat(segs),
            code,
            drop_query: rd.strip_query,
            append_slash: false,
        })))
    };
    match scheme {
        Some(s) => Ok(vec![make(&s)?]),
        None => {
            let mut https = make("https")?;
            https.rule.cond = Some(Condition {
                unless: false,
                alternatives: vec![vec![term(
                    acl(Fetch::SslFc, MatchMethod::Bool, false, Patterns::None),
                    false,
                )]],
            });
            Ok(vec![https, make("http")?])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;

    fn rc(routes: Vec<rt::Route>) -> rt::RouteConfiguration {
        rt::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![rt::VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn to_cluster(m: rt::RouteMatch, c: &str) -> rt::Route {
        rt::Route {
            r#match: Some(m),
            action: Some(rt::route::Action::Route(rt::RouteAction {
                cluster_specifier: Some(rt::route_action::ClusterSpecifier::Cluster(c.into())),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn prefix(p: &str) -> rt::RouteMatch {
        rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix(p.into())),
            ..Default::default()
        }
    }

    #[test]
    fn routes_to_unknown_clusters_answer_503_unless_validated() {
        let none = |_: &str| false;
        let known = Known { cluster: &none };
        let cfg = rc(vec![to_cluster(prefix("/"), "missing")]);
        let (vh, _) = virtual_hosts(&cfg, &known).unwrap();
        let r = &vh.entries()[0].1.routes[0];
        assert_eq!(r.target, BackendTarget::None);
        assert!(matches!(
            &r.http_request.last().unwrap().rule.action,
            RequestAction::Return(Reply { status: 503, .. })
        ));
        let mut v = cfg.clone();
        v.validate_clusters = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
        let e = check_clusters_known(&v, &known).unwrap_err();
        assert_eq!(e.path, "virtual_hosts[0].routes[0].route.cluster");
    }

    #[test]
    fn bad_regexes_and_zero_weights_are_refused_with_their_path() {
        let m = rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(
                matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let e = check_routes(&rc(vec![to_cluster(m, "a")])).unwrap_err();
        assert_eq!(e.path, "virtual_hosts[0].routes[0].match.safe_regex.regex");
        let mut r = to_cluster(prefix("/"), "a");
        if let Some(rt::route::Action::Route(a)) = &mut r.action {
            a.cluster_specifier = Some(rt::route_action::ClusterSpecifier::WeightedClusters(
                rt::WeightedCluster {
                    clusters: vec![rt::weighted_cluster::ClusterWeight {
                        name: "a".into(),
                        weight: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 0 }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ));
        }
        let e = check_routes(&rc(vec![r])).unwrap_err();
        assert!(e.message.contains("sum"), "{e}");
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix() {
        let mut r = to_cluster(prefix("/api/"), "a");
        if let Some(rt::route::Action::Route(a)) = &mut r.action {
            a.prefix_rewrite = "/v2/".into();
        }
        let all = |_: &str| true;
        let (vh, _) = virtual_hosts(&rc(vec![r]), &Known { cluster: &all }).unwrap();
        let rw = vh.entries()[0].1.routes[0]
            .http_request
            .iter()
            .find_map(|r| match &r.rule.action {
                RequestAction::ReplacePath { regex, .. } => Some(regex.clone()),
                _ => None,
            })
            .unwrap();
        let re = regex::Regex::new(&rw).unwrap();
        assert_eq!(re.replace("/api/users", "/v2/${1}"), "/v2/users");
    }
}
