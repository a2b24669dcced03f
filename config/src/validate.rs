//! Checks that need the whole configuration: names that refer to other objects, ACLs used
//! in conditions, and values whose limits depend on other keys.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::decode::{NamedMap, Spanned};
use crate::error::{ConfigError, Pos, nearest};
use crate::model::{
    AclDef, BackendTarget, Balance, Config, DomainMatch, RuleDef, UseBackend, offset_pos,
};
use crate::resilience::{HealthCheck, Retries};
use crate::rules::acl::{Acl, AclRef, Condition, PREDEFINED, predefined};
use crate::rules::action::{ConnAction, HeaderAction, RequestAction, ResponseAction, StickAction};
use crate::rules::fetch::Layer;
use crate::rules::{Fetch, LogFormat, SampleExpr, ScOp, ScSource, Segment};
use crate::stick::{CookieMode, DataKind, KeyType, StickKind, StickTable};

struct V<'c> {
    cfg: &'c Config,
    errors: Vec<ConfigError>,
}

impl V<'_> {
    fn err(&mut self, pos: Pos, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(ConfigError::new(pos, path, msg));
    }

    fn backend_ref(&mut self, name: &Spanned<String>, path: &str) {
        if !self.cfg.backends.contains(&name.value) {
            let hint = nearest(&name.value, self.cfg.backends.names())
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            self.err(
                name.pos,
                path,
                format!("unknown backend {:?}{hint}", name.value),
            );
        }
    }

    fn sample(&mut self, e: &SampleExpr, pos: Pos, path: &str) {
        match &e.fetch {
            Fetch::NbSrv(b) => {
                let s = Spanned {
                    value: b.clone(),
                    pos,
                };
                self.backend_ref(&s, path);
            }
            Fetch::TableCnt(t) | Fetch::TableAvl(t) => {
                self.table_ref(t, pos, path);
            }
            Fetch::Sc(sc) => {
                let what = e.fetch.to_string();
                let table = match (&sc.table, sc.source) {
                    (Some(t), _) => self.table_ref(t, pos, path),
                    (None, ScSource::Src) => self.default_table(&what, pos, path),
                    // The table the slot tracks, known at run time.
                    (None, ScSource::Slot(_)) => None,
                };
                let needs = match sc.op {
                    ScOp::Get(k) => Some(k),
                    ScOp::IncGpc0 | ScOp::ClrGpc0 => Some(DataKind::Gpc0),
                    ScOp::Tracked => None,
                };
                if let (Some((name, t)), Some(k)) = (table, needs)
                    && !t.store.iter().any(|s| s.kind == k)
                {
                    self.err(
                        pos,
                        path,
                        format!("{what}: table {name:?} does not store {k}"),
                    );
                }
            }
            _ => {}
        }
    }

    /// Checks that table `name` exists.
    fn table_ref(&mut self, name: &str, pos: Pos, path: &str) -> Option<(String, &StickTable)> {
        let cfg = self.cfg;
        if let Some(t) = cfg.stick_tables.get(name) {
            return Some((name.to_owned(), t));
        }
        if !cfg.stick_tables.contains(name) {
            let hint = nearest(name, cfg.stick_tables.names())
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            self.err(pos, path, format!("unknown stick table {name:?}{hint}"));
        }
        None
    }

    /// The table used when a rule names none: the only one there is.
    fn default_table(&mut self, what: &str, pos: Pos, path: &str) -> Option<(String, &StickTable)> {
        let cfg = self.cfg;
        match cfg.stick_tables.entries() {
            [(n, t)] => Some((n.value.clone(), t)),
            [] if !cfg.stick_tables.invalid().is_empty() => None,
            [] => {
                self.err(
                    pos,
                    path,
                    format!("{what} needs a stick table, and none is declared in stick_tables"),
                );
                None
            }
            _ => {
                self.err(
                    pos,
                    path,
                    format!("{what}: name the table ('table NAME'), there are several"),
                );
                None
            }
        }
    }

    fn stick_action(&mut self, a: &StickAction, pos: Pos, path: &str) {
        if let StickAction::Track { slot, expr, table } = a {
            self.sample(expr, pos, path);
            match table {
                Some(t) => {
                    self.table_ref(t, pos, path);
                }
                None => {
                    self.default_table(&format!("track-sc{slot}"), pos, path);
                }
            }
        }
    }

    fn logformat(&mut self, f: &LogFormat, pos: Pos, path: &str) {
        for seg in &f.0 {
            if let Segment::Sample(e) = seg {
                self.sample(e, pos, path);
            }
        }
    }

    fn acl(&mut self, a: &Acl, pos: Pos, path: &str) {
        self.sample(&a.expr, pos, path);
    }

    fn condition(&mut self, c: &Condition, start: Pos, acls: &NamedMap<AclDef>, path: &str) {
        for term in c.alternatives.iter().flatten() {
            match &term.acl {
                AclRef::Named { name, offset } => {
                    if !acls.contains(name) && predefined(name).is_none() {
                        let candidates = acls.names().chain(PREDEFINED.iter().map(|(n, _)| *n));
                        let hint = nearest(name, candidates)
                            .map(|n| format!(" (did you mean {n:?}?)"))
                            .unwrap_or_default();
                        self.err(
                            offset_pos(start, *offset),
                            path,
                            format!("unknown ACL {name:?}{hint}"),
                        );
                    }
                }
                AclRef::Anonymous(a) => self.acl(a, start, path),
            }
        }
    }

    fn header_action(&mut self, h: &HeaderAction, pos: Pos, path: &str) {
        match h {
            HeaderAction::Set { value, .. } | HeaderAction::Add { value, .. } => {
                self.logformat(value, pos, path)
            }
            HeaderAction::Replace { replacement, .. }
            | HeaderAction::ReplaceValue { replacement, .. } => {
                self.logformat(replacement, pos, path)
            }
            HeaderAction::Del { .. } => {}
        }
    }

    fn request_rules(
        &mut self,
        rules: &[RuleDef<RequestAction>],
        acls: &NamedMap<AclDef>,
        path: &str,
    ) {
        for (i, r) in rules.iter().enumerate() {
            let p = format!("{path}.{i}");
            if let Some(c) = &r.rule.cond {
                self.condition(c, r.pos, acls, &p);
            }
            match &r.rule.action {
                RequestAction::Header(h) => self.header_action(h, r.pos, &p),
                RequestAction::SetPath(f) | RequestAction::SetQuery(f) => {
                    self.logformat(f, r.pos, &p)
                }
                RequestAction::ReplacePath { replacement, .. } => {
                    self.logformat(replacement, r.pos, &p)
                }
                RequestAction::Redirect(rd) => self.logformat(&rd.target, r.pos, &p),
                RequestAction::Deny(reply) | RequestAction::Return(reply) => {
                    for (_, v) in &reply.headers {
                        self.logformat(v, r.pos, &p);
                    }
                    if let Some(b) = &reply.body {
                        self.logformat(b, r.pos, &p);
                    }
                }
                RequestAction::Stick(a) => self.stick_action(a, r.pos, &p),
                RequestAction::Allow => {}
            }
        }
    }

    fn response_rules(
        &mut self,
        rules: &[RuleDef<ResponseAction>],
        acls: &NamedMap<AclDef>,
        path: &str,
    ) {
        for (i, r) in rules.iter().enumerate() {
            let p = format!("{path}.{i}");
            if let Some(c) = &r.rule.cond {
                self.condition(c, r.pos, acls, &p);
            }
            if let ResponseAction::Header(h) = &r.rule.action {
                self.header_action(h, r.pos, &p);
            }
        }
    }
}

impl V<'_> {
    /// A `use_backend` entry or a virtual host's route.
    fn route(&mut self, ub: &UseBackend, acls: &NamedMap<AclDef>, p: &str) {
        match &ub.target {
            BackendTarget::One(b) => self.backend_ref(b, p),
            BackendTarget::Split(parts) => {
                for (b, w) in parts {
                    self.backend_ref(b, &format!("{p}.split.{}", b.value));
                    if *w == 0 || *w > 1_000_000 {
                        self.err(
                            b.pos,
                            format!("{p}.split.{}", b.value),
                            format!("split weight must be between 1 and 1000000, found {w}"),
                        );
                    }
                }
            }
            BackendTarget::Dynamic(_) | BackendTarget::None => {}
        }
        if let Some(c) = &ub.cond {
            self.condition(c, ub.pos, acls, p);
        }
        if let Some(r) = &ub.retries {
            self.retries(r, ub.pos, &format!("{p}.retries"));
        }
        if ub.timeout.is_some_and(|t| t.is_zero()) {
            self.err(ub.pos, format!("{p}.timeout"), "timeout must be above 0");
        }
        self.request_rules(&ub.http_request, acls, &format!("{p}.http_request"));
        self.response_rules(&ub.http_response, acls, &format!("{p}.http_response"));
        for k in &ub.hash_key {
            self.sample(&k.value.0, k.pos, &format!("{p}.hash_key"));
        }
    }
}

impl V<'_> {
    fn health_check(&mut self, hc: &HealthCheck, pos: Pos, path: &str) {
        let kinds = [hc.tcp.is_some(), hc.http.is_some(), hc.grpc.is_some()];
        if kinds.iter().filter(|k| **k).count() > 1 {
            self.err(
                pos,
                path,
                "a health check is one of tcp, http or grpc, not several",
            );
        }
        for (key, n) in [("rise", hc.rise), ("fall", hc.fall)] {
            if !(1..=1000).contains(&n) {
                self.err(
                    pos,
                    format!("{path}.{key}"),
                    format!("{key} must be between 1 and 1000, found {n}"),
                );
            }
        }
        for (key, d) in [
            ("interval", Some(hc.interval)),
            ("timeout", Some(hc.timeout)),
            ("fast_interval", hc.fast_interval),
            ("down_interval", hc.down_interval),
        ] {
            if d.is_some_and(|d| d < std::time::Duration::from_millis(10)) {
                self.err(
                    pos,
                    format!("{path}.{key}"),
                    format!("{key} must be at least 10ms"),
                );
            }
        }
        if hc.port == Some(0) {
            self.err(
                pos,
                format!("{path}.port"),
                "port must be between 1 and 65535",
            );
        }
        if let Some(a) = &hc.address
            && a.parse::<std::net::IpAddr>().is_err()
        {
            self.err(
                pos,
                format!("{path}.address"),
                format!("invalid check address {a:?}: expected an IP address"),
            );
        }
        if let Some(h) = &hc.http {
            if http_method_ok(&h.method).is_err() {
                self.err(
                    pos,
                    format!("{path}.http.method"),
                    format!("invalid HTTP method {:?}", h.method),
                );
            }
            if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                self.err(
                    pos,
                    format!("{path}.http.path"),
                    format!(
                        "a check path starts with '/' and has no spaces, found {:?}",
                        h.path
                    ),
                );
            }
        }
    }

    fn retries(&mut self, r: &Retries, pos: Pos, path: &str) {
        if r.attempts > 10 {
            self.err(
                pos,
                format!("{path}.attempts"),
                format!("attempts must be at most 10, found {}", r.attempts),
            );
        }
        if r.per_try_timeout.is_some_and(|t| t.is_zero()) {
            self.err(
                pos,
                format!("{path}.per_try_timeout"),
                "per_try_timeout must be above 0",
            );
        }
        if r.backoff.max < r.backoff.base {
            self.err(
                pos,
                format!("{path}.backoff.max"),
                "backoff max is below base",
            );
        }
    }
}

fn http_method_ok(m: &str) -> Result<(), ()> {
    if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        Ok(())
    } else {
        Err(())
    }
}

fn valid_server_address(s: &str) -> Result<(), String> {
    let bad =
        || format!("invalid server address {s:?}: expected host:port, ip:port or [ipv6]:port");
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.contains(':') || host.contains('[') {
        return Err(bad());
    }
    Ok(())
}

/// Checks `cfg` as a whole; returns every problem found. `partial` says that decoding
/// already failed somewhere, so emptiness checks are skipped (what is missing may just
/// have been invalid).
pub fn validate(cfg: &Config, partial: bool) -> Vec<ConfigError> {
    validate_with(cfg, partial, crate::Load::default())
}

/// A count of something the configuration holds, against its bound in [`crate::limits`].
struct Tally {
    what: &'static str,
    max: usize,
    n: usize,
}

impl Tally {
    fn new(what: &'static str, max: usize) -> Self {
        Self { what, max, n: 0 }
    }

    /// Adds `k`; the one that crosses the bound is reported, at `pos`.
    fn add(&mut self, k: usize, v: &mut V<'_>, pos: Pos, path: &str) {
        let before = self.n;
        self.n = self.n.saturating_add(k);
        if before <= self.max && self.n > self.max {
            v.err(pos, path, crate::limits::too_many(self.what, self.max));
        }
    }
}

/// Patterns and regular expressions in ACLs.
#[derive(Clone, Copy, Default)]
struct AclCount {
    patterns: usize,
    regexes: usize,
}

impl std::ops::Add for AclCount {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            patterns: self.patterns + o.patterns,
            regexes: self.regexes + o.regexes,
        }
    }
}

fn acl_count(a: &Acl) -> AclCount {
    use crate::rules::acl::Patterns;
    let (patterns, regexes) = match &a.patterns {
        Patterns::None => (0, 0),
        Patterns::Str(v) => (v.len(), 0),
        Patterns::Int(v) => (v.len(), 0),
        Patterns::Ip(v) => (v.len(), 0),
        Patterns::Reg(v) => (v.len(), v.len()),
    };
    AclCount { patterns, regexes }
}

/// What a condition's own (anonymous) ACLs hold.
fn cond_count(c: Option<&Condition>) -> AclCount {
    c.map_or(AclCount::default(), |c| {
        c.alternatives
            .iter()
            .flatten()
            .map(|t| match &t.acl {
                AclRef::Anonymous(a) => acl_count(a),
                AclRef::Named { .. } => AclCount::default(),
            })
            .fold(AclCount::default(), |a, b| a + b)
    })
}

fn header_regexes(h: &HeaderAction) -> usize {
    match h {
        HeaderAction::Replace { .. } | HeaderAction::ReplaceValue { .. } => 1,
        HeaderAction::Del { method, .. } => usize::from(*method == crate::rules::MatchMethod::Reg),
        HeaderAction::Set { .. } | HeaderAction::Add { .. } => 0,
    }
}

fn request_count(r: &RuleDef<RequestAction>) -> AclCount {
    let own = match &r.rule.action {
        RequestAction::Header(h) => header_regexes(h),
        RequestAction::ReplacePath { .. } => 1,
        _ => 0,
    };
    cond_count(r.rule.cond.as_ref())
        + AclCount {
            patterns: 0,
            regexes: own,
        }
}

fn response_count(r: &RuleDef<ResponseAction>) -> AclCount {
    let own = match &r.rule.action {
        ResponseAction::Header(h) => header_regexes(h),
        _ => 0,
    };
    cond_count(r.rule.cond.as_ref())
        + AclCount {
            patterns: 0,
            regexes: own,
        }
}

/// The counts bounded by [`crate::limits`], each reported where it crosses its limit.
struct Tallies {
    frontends: Tally,
    binds: Tally,
    backends: Tally,
    servers: Tally,
    rules: Tally,
    patterns: Tally,
    regexes: Tally,
    certificates: Tally,
}

impl Tallies {
    fn acls(&mut self, c: AclCount, v: &mut V<'_>, pos: Pos, path: &str) {
        self.patterns.add(c.patterns, v, pos, path);
        self.regexes.add(c.regexes, v, pos, path);
    }

    /// A frontend's or backend's `http_request` and `http_response` rules.
    fn http_rules(
        &mut self,
        v: &mut V<'_>,
        path: &str,
        request: &[RuleDef<RequestAction>],
        response: &[RuleDef<ResponseAction>],
    ) {
        let p = format!("{path}.http_request");
        for r in request {
            self.rules.add(1, v, r.pos, &p);
            self.acls(request_count(r), v, r.pos, &p);
        }
        let p = format!("{path}.http_response");
        for r in response {
            self.rules.add(1, v, r.pos, &p);
            self.acls(response_count(r), v, r.pos, &p);
        }
    }

    fn route(&mut self, ub: &UseBackend, v: &mut V<'_>, path: &str) {
        self.rules.add(
            1 + ub.http_request.len() + ub.http_response.len(),
            v,
            ub.pos,
            path,
        );
        let c = ub
            .http_request
            .iter()
            .map(request_count)
            .chain(ub.http_response.iter().map(response_count))
            .fold(cond_count(ub.cond.as_ref()), |a, b| a + b);
        self.acls(c, v, ub.pos, path);
    }
}

/// The bounds of [`crate::limits`] on counts: frontends, listening addresses, backends,
/// servers, rules, ACL patterns, regular expressions and certificates, each alone and
/// all together. Returns what is left of the shares, and the certificates counted.
/// (YAML nodes are counted while the file is read, and ACL patterns from files before
/// they are kept.)
fn bounds(v: &mut V<'_>) -> (f64, usize) {
    use crate::limits::{
        MAX_ACL_PATTERNS, MAX_BACKENDS, MAX_BINDS, MAX_CERTIFICATES, MAX_FRONTENDS, MAX_REGEXES,
        MAX_RULES, MAX_SERVERS, MAX_SHARES,
    };
    let cfg = v.cfg;
    let mut t = Tallies {
        frontends: Tally::new("frontends", MAX_FRONTENDS),
        binds: Tally::new("listening addresses", MAX_BINDS),
        backends: Tally::new("backends", MAX_BACKENDS),
        servers: Tally::new("servers", MAX_SERVERS),
        rules: Tally::new("rules", MAX_RULES),
        patterns: Tally::new("ACL patterns", MAX_ACL_PATTERNS),
        regexes: Tally::new("regular expressions", MAX_REGEXES),
        certificates: Tally::new("certificates", MAX_CERTIFICATES),
    };
    // A certificate named by several binds is loaded once.
    let mut certs = std::collections::HashSet::new();
    for (k, fe) in cfg.frontends.entries() {
        let path = format!("frontends.{}", k.value);
        t.frontends.add(1, v, k.pos, &path);
        for b in &fe.bind {
            t.binds.add(1, v, b.address.pos, &format!("{path}.bind"));
            for c in b.tls.iter().flat_map(|t| &t.certificates) {
                let key = c.key.as_ref().map(|k| k.value.as_str());
                if certs.insert((c.cert.value.as_str(), key)) {
                    t.certificates
                        .add(1, v, c.cert.pos, &format!("{path}.bind.tls.certificates"));
                }
            }
        }
        for (acl, def) in fe.acls.entries() {
            let c = def
                .0
                .iter()
                .map(|(a, _)| acl_count(a))
                .fold(AclCount::default(), |a, b| a + b);
            t.acls(c, v, acl.pos, &format!("{path}.acls.{}", acl.value));
        }
        t.http_rules(v, &path, &fe.http_request, &fe.http_response);
        for r in &fe.tcp_request.connection {
            let p = format!("{path}.tcp_request.connection");
            t.rules.add(1, v, r.pos, &p);
            t.acls(cond_count(r.rule.cond.as_ref()), v, r.pos, &p);
        }
        for ub in &fe.use_backend {
            t.route(ub, v, &format!("{path}.use_backend"));
        }
        for (vname, vh) in fe.virtual_hosts.iter() {
            for r in &vh.routes {
                t.route(r, v, &format!("{path}.virtual_hosts.{vname}.routes"));
            }
        }
    }
    for (k, b) in cfg.backends.entries() {
        let path = format!("backends.{}", k.value);
        t.backends.add(1, v, k.pos, &path);
        if t.servers.n <= t.servers.max {
            for (s, _) in b.servers.entries() {
                t.servers
                    .add(1, v, s.pos, &format!("{path}.servers.{}", s.value));
            }
        } else {
            t.servers.n += b.servers.len();
        }
        t.http_rules(v, &path, &b.http_request, &b.http_response);
        for r in &b.stick {
            let p = format!("{path}.stick");
            t.rules.add(1, v, r.pos, &p);
            t.acls(cond_count(r.cond.as_ref()), v, r.pos, &p);
        }
    }
    // Together: each count is a share of its limit, and the shares are bounded too, so
    // that a file at several limits at once is not slower to load than one at a single
    // limit and a half.
    if [&t.frontends, &t.binds].iter().any(|x| x.n > x.max) {
        return (0.0, t.certificates.n);
    }
    // Frontends and their addresses are cheap next to these, and left out.
    let all = [
        &t.backends,
        &t.servers,
        &t.rules,
        &t.patterns,
        &t.regexes,
        &t.certificates,
    ];
    if all.iter().any(|x| x.n > x.max) {
        return (0.0, t.certificates.n);
    }
    let share = |x: &Tally| x.n as f64 / x.max as f64;
    let total: f64 = all.iter().map(|x| share(x)).sum();
    if total > MAX_SHARES {
        // Those that round to 0% would only be noise.
        let mut parts: Vec<_> = all.iter().filter(|x| share(x) >= 0.005).collect();
        parts.sort_by(|a, b| share(b).total_cmp(&share(a)));
        let list: Vec<String> = parts
            .iter()
            .map(|x| format!("{} {} ({:.0}%)", x.n, x.what, share(x) * 100.0))
            .collect();
        v.err(
            Pos { line: 1, col: 1 },
            "",
            format!(
                "the configuration is too large as a whole: {} make {:.0}% of their limits \
                 together, more than the {:.0}% allowed; refused",
                list.join(", "),
                total * 100.0,
                MAX_SHARES * 100.0
            ),
        );
    }
    ((MAX_SHARES - total).max(0.0), t.certificates.n)
}

/// How many certificates the proxy may load for `cfg`, each counted by its key's cost
/// (an RSA-4096 key costs 4): the certificates counted here, and what is left of
/// [`crate::limits::MAX_SHARES`] spent on keys that cost more than one, which only
/// reading them tells.
pub fn certificate_allowance(cfg: &Config) -> u64 {
    let mut v = V {
        cfg,
        errors: Vec::new(),
    };
    let (spare, n) = bounds(&mut v);
    let extra = (spare * crate::limits::MAX_CERTIFICATES as f64).round() as u64;
    (n.min(crate::limits::MAX_CERTIFICATES) as u64 + extra).max(1)
}

/// Only the bounds of [`crate::limits`] on counts: for a configuration assembled from
/// elsewhere (a control plane's resources), each error at the item that crossed a bound.
pub fn bounds_of(cfg: &Config) -> Vec<ConfigError> {
    let mut v = V {
        cfg,
        errors: Vec::new(),
    };
    bounds(&mut v);
    v.errors
}

/// [`validate`] with the options the file was loaded with.
pub fn validate_with(cfg: &Config, partial: bool, opts: crate::Load) -> Vec<ConfigError> {
    let mut v = V {
        cfg,
        errors: Vec::new(),
    };
    bounds(&mut v);
    if !(Duration::from_millis(100)..=Duration::from_secs(3600))
        .contains(&cfg.global.reload_timeout)
    {
        v.err(
            Pos::default(),
            "global.reload_timeout",
            "reload_timeout must be between 100ms and 1h",
        );
    }
    if let Some(t) = cfg.global.threads
        && !(1..=1024).contains(&t)
    {
        v.err(
            Pos::default(),
            "global.threads",
            format!("threads must be between 1 and 1024, found {t}"),
        );
    }
    if let Some(t) = &cfg.tracing {
        let ok = t
            .endpoint
            .value
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
        if !ok {
            v.err(
                t.endpoint.pos,
                "tracing.endpoint",
                format!(
                    "invalid collector address {:?}: expected host:port",
                    t.endpoint.value
                ),
            );
        }
        if !t.path.starts_with('/') {
            v.err(Pos::default(), "tracing.path", "the path starts with '/'");
        }
        if t.batch == 0 || t.batch > 10_000 {
            v.err(Pos::default(), "tracing.batch", "batch is 1 to 10000 spans");
        }
        if t.max_queue < t.batch || t.max_queue > 1_000_000 {
            v.err(
                Pos::default(),
                "tracing.max_queue",
                "max_queue is at least batch and at most 1000000 spans",
            );
        }
        if t.interval.is_zero() || t.timeout.is_zero() {
            v.err(
                Pos::default(),
                "tracing",
                "interval and timeout must be more than 0",
            );
        }
    }
    if cfg.frontends.is_empty()
        && cfg.frontends.invalid().is_empty()
        && !partial
        && cfg.xds.is_none()
        && !opts.frontends_elsewhere
    {
        v.err(
            Pos { line: 1, col: 1 },
            "frontends",
            "no frontends: the configuration would serve nothing",
        );
    }
    for (i, sock) in cfg.admin.socket.iter().enumerate() {
        let path = format!("admin.socket.{i}");
        match (&sock.path, &sock.address) {
            (Some(_), Some(a)) => v.err(a.pos, &path, "a socket has either 'path' or 'address', not both"),
            (None, None) => v.err(Pos { line: 1, col: 1 }, &path, "a socket needs 'path' (Unix socket) or 'address' (TCP on loopback)"),
            (None, Some(a)) => match a.value.parse::<SocketAddr>() {
                Ok(sa) if sa.ip().is_loopback() => {}
                Ok(_) => v.err(a.pos, format!("{path}.address"), format!("{} is not a loopback address: the runtime API has no authentication, so it only listens on 127.0.0.0/8 or ::1", a.value)),
                Err(_) => v.err(a.pos, format!("{path}.address"), format!("invalid address {:?}: expected ip:port", a.value)),
            },
            (Some(p), None) if p.value.is_empty() => v.err(p.pos, format!("{path}.path"), "empty socket path"),
            _ => {}
        }
    }
    if let Some(h) = &cfg.admin.http
        && h.value.parse::<SocketAddr>().is_err()
    {
        v.err(
            h.pos,
            "admin.http",
            format!("invalid address {:?}: expected ip:port", h.value),
        );
    }
    if cfg.admin.stats.admin && cfg.admin.stats.auth.is_none() {
        v.err(
            Pos { line: 1, col: 1 },
            "admin.stats.admin",
            "the stats page's admin form needs admin.stats.auth",
        );
    }
    if !cfg.admin.stats.uri.starts_with('/') || cfg.admin.stats.uri.contains([';', '?', ' ']) {
        v.err(
            Pos { line: 1, col: 1 },
            "admin.stats.uri",
            format!(
                "a stats path starts with '/' and has no ';', '?' or space, found {:?}",
                cfg.admin.stats.uri
            ),
        );
    }
    vrrp(&mut v, partial);
    if let Some(x) = &cfg.xds {
        xds(&mut v, x);
    }
    let empty = NamedMap::default();
    let mut bound: HashMap<SocketAddr, String> = HashMap::new();
    for (name, fe) in cfg.frontends.iter() {
        let path = format!("frontends.{name}");
        let fe_pos = cfg.frontends.pos_of(name).unwrap_or_default();
        if fe.bind.is_empty() && !partial {
            v.err(
                fe_pos,
                format!("{path}.bind"),
                "a frontend needs at least one bind address",
            );
        }
        for (i, b) in fe.bind.iter().enumerate() {
            let bpath = format!("{path}.bind.{i}");
            if b.address.value.port() != 0 {
                if let Some(other) = bound.insert(b.address.value, name.to_owned()) {
                    v.err(
                        b.address.pos,
                        &bpath,
                        format!("{} is already bound by frontend {other:?}", b.address.value),
                    );
                }
            }
            if let Some(tls) = &b.tls {
                if tls.certificates.is_empty() && !partial {
                    v.err(
                        b.address.pos,
                        format!("{bpath}.tls.certificates"),
                        "TLS needs at least one certificate",
                    );
                }
                if tls.min_version > tls.max_version {
                    v.err(
                        b.address.pos,
                        format!("{bpath}.tls"),
                        "min_version is above max_version",
                    );
                }
                if tls.verify != crate::model::ClientVerify::None && tls.ca.is_none() {
                    v.err(
                        b.address.pos,
                        format!("{bpath}.tls.ca"),
                        "verify optional or required needs ca: the CA certificates client certificates must chain to",
                    );
                }
                if let Some(c) = tls.ca.as_ref().or(tls.crl.as_ref())
                    && tls.verify == crate::model::ClientVerify::None
                {
                    v.err(
                        c.pos,
                        format!("{bpath}.tls"),
                        "ca and crl check client certificates: set verify to optional or required",
                    );
                }
                for a in &tls.alpn {
                    if a != "h2" && a != "http/1.1" {
                        v.err(
                            b.address.pos,
                            format!("{bpath}.tls.alpn"),
                            format!("unsupported ALPN protocol {a:?} (supported: h2, http/1.1)"),
                        );
                    }
                }
            }
        }
        for (acl_name, def) in fe.acls.entries() {
            if predefined(&acl_name.value).is_some() {
                v.err(
                    acl_name.pos,
                    format!("{path}.acls.{}", acl_name.value),
                    format!(
                        "{:?} is a predefined ACL and cannot be redefined",
                        acl_name.value
                    ),
                );
            }
            for (a, pos) in &def.0 {
                v.acl(a, *pos, &format!("{path}.acls.{}", acl_name.value));
            }
        }
        v.request_rules(&fe.http_request, &fe.acls, &format!("{path}.http_request"));
        v.response_rules(
            &fe.http_response,
            &fe.acls,
            &format!("{path}.http_response"),
        );
        if fe.tracing.is_some() && cfg.tracing.is_none() {
            v.err(
                fe_pos,
                format!("{path}.tracing"),
                "tracing needs the top-level tracing section (the collector spans go to)",
            );
        }
        if let Some(l) = &fe.access_log {
            if let Err(e) = crate::model::LogTarget::parse(&l.to) {
                v.err(fe_pos, format!("{path}.access_log.to"), e);
            }
            if let Some(f) = &l.log_format {
                if let Err(e) = crate::logformat::parse(&f.value) {
                    v.err(f.pos, format!("{path}.access_log.log_format"), e);
                } else if l.format.is_some() {
                    v.err(
                        f.pos,
                        format!("{path}.access_log.log_format"),
                        "either format or log_format, not both",
                    );
                }
            }
            if !(64..=65535).contains(&l.max_length) {
                v.err(
                    fe_pos,
                    format!("{path}.access_log.max_length"),
                    format!("max_length is 64 to 65535 bytes, found {}", l.max_length),
                );
            }
            if l.tag.is_empty()
                || l.tag.len() > 48
                || !l
                    .tag
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':' && b != b'[')
            {
                v.err(
                    fe_pos,
                    format!("{path}.access_log.tag"),
                    "the tag is 1 to 48 printable characters, without blanks, ':' or '['",
                );
            }
        }
        for (i, r) in fe.tcp_request.connection.iter().enumerate() {
            let p = format!("{path}.tcp_request.connection.{i}");
            if let Some(c) = &r.rule.cond {
                v.condition(c, r.pos, &fe.acls, &p);
                for (acl, offset) in c.named() {
                    let http = fe.acls.get(acl).and_then(|d| {
                        d.0.iter()
                            .find(|(a, _)| !a.expr.fetch.is_layer4())
                            .map(|(a, _)| a.expr.fetch.to_string())
                    });
                    if let Some(f) = http {
                        v.err(
                            offset_pos(r.pos, offset),
                            &p,
                            format!("ACL {acl:?} uses {f}, which needs an HTTP request; connection rules can use src, dst, ports and stick counters only"),
                        );
                    }
                }
            }
            if let ConnAction::Stick(a) = &r.rule.action {
                v.stick_action(a, r.pos, &p);
            }
        }
        for (i, ub) in fe.use_backend.iter().enumerate() {
            v.route(ub, &fe.acls, &format!("{path}.use_backend.{i}"));
        }
        let mut any_host: Option<String> = None;
        let mut domains: HashMap<String, String> = HashMap::new();
        for (vname, vh) in fe.virtual_hosts.iter() {
            let vp = format!("{path}.virtual_hosts.{vname}");
            let vpos = fe.virtual_hosts.pos_of(vname).unwrap_or(fe_pos);
            if vh.domains.is_empty() {
                v.err(
                    vpos,
                    format!("{vp}.domains"),
                    "a virtual host needs at least one domain",
                );
            }
            for d in &vh.domains {
                match DomainMatch::parse(&d.value) {
                    Ok(DomainMatch::Any) => {
                        if let Some(other) = any_host.replace(vname.to_owned()) {
                            v.err(d.pos, format!("{vp}.domains"), format!("only one virtual host may serve \"*\" (virtual host {other:?} does)"));
                        }
                    }
                    Ok(_) => {
                        if let Some(other) =
                            domains.insert(d.value.to_ascii_lowercase(), vname.to_owned())
                        {
                            v.err(
                                d.pos,
                                format!("{vp}.domains"),
                                format!("domain {:?} is also in virtual host {other:?}", d.value),
                            );
                        }
                    }
                    Err(e) => v.err(d.pos, format!("{vp}.domains"), e),
                }
            }
            for (i, r) in vh.routes.iter().enumerate() {
                v.route(r, &fe.acls, &format!("{vp}.routes.{i}"));
            }
        }
        if let Some(d) = &fe.default_backend {
            v.backend_ref(d, &format!("{path}.default_backend"));
        }
        if fe.limits.max_headers == 0 {
            v.err(
                fe_pos,
                format!("{path}.limits.max_headers"),
                "max_headers must be at least 1",
            );
        }
        if fe.limits.max_header_size.0 < 1024 {
            v.err(
                fe_pos,
                format!("{path}.limits.max_header_size"),
                "max_header_size must be at least 1k",
            );
        }
        if fe.http2.max_concurrent_streams == 0 {
            v.err(
                fe_pos,
                format!("{path}.http2.max_concurrent_streams"),
                "max_concurrent_streams must be at least 1",
            );
        }
    }
    for (name, be) in cfg.backends.iter() {
        let path = format!("backends.{name}");
        let be_pos = cfg.backends.pos_of(name).unwrap_or_default();
        if be.source_mask.ipv4 > 32 {
            v.err(
                be_pos,
                format!("{path}.source_mask.ipv4"),
                format!(
                    "an IPv4 prefix length is at most 32, found {}",
                    be.source_mask.ipv4
                ),
            );
        }
        if be.source_mask.ipv6 > 128 {
            v.err(
                be_pos,
                format!("{path}.source_mask.ipv6"),
                format!(
                    "an IPv6 prefix length is at most 128, found {}",
                    be.source_mask.ipv6
                ),
            );
        }
        match (&be.hash_key, &be.balance) {
            (Some(k), Balance::Maglev) => v.sample(&k.value.0, k.pos, &format!("{path}.hash_key")),
            (Some(k), _) => v.err(
                k.pos,
                format!("{path}.hash_key"),
                "hash_key applies only to balance: maglev",
            ),
            _ => {}
        }
        for (sname, s) in be.servers.iter() {
            let sp = format!("{path}.servers.{sname}");
            if let Err(e) = valid_server_address(&s.address.value) {
                v.err(s.address.pos, format!("{sp}.address"), e);
            }
            if s.weight.value > 256 {
                v.err(
                    s.weight.pos,
                    format!("{sp}.weight"),
                    format!("weight must be between 0 and 256, found {}", s.weight.value),
                );
            }
            if let Some(hc) = &s.health_check {
                v.health_check(hc, be_pos, &format!("{sp}.health_check"));
            }
            if s.send_proxy && s.send_proxy_v2 {
                v.err(
                    s.address.pos,
                    format!("{sp}.send_proxy_v2"),
                    "send_proxy and send_proxy_v2 are exclusive: choose one version",
                );
            }
            if !s.proxy_v2_options.is_empty() && !s.send_proxy_v2 {
                v.err(
                    s.address.pos,
                    format!("{sp}.proxy_v2_options"),
                    "proxy_v2_options need send_proxy_v2: true",
                );
            }
            if s.max_connections == Some(0) {
                v.err(
                    s.address.pos,
                    format!("{sp}.max_connections"),
                    "max_connections must be at least 1",
                );
            }
        }
        if let Some(hc) = &be.health_check {
            v.health_check(hc, be_pos, &format!("{path}.health_check"));
        }
        if let Some(r) = &be.retries {
            v.retries(r, be_pos, &format!("{path}.retries"));
        }
        if let Some(o) = &be.outlier_detection {
            if o.interval.is_zero() {
                v.err(
                    be_pos,
                    format!("{path}.outlier_detection.interval"),
                    "interval must be above 0",
                );
            }
            if o.max_ejection_time < o.base_ejection_time {
                v.err(
                    be_pos,
                    format!("{path}.outlier_detection.max_ejection_time"),
                    "max_ejection_time is below base_ejection_time",
                );
            }
        }
        if let Some(cb) = &be.circuit_breaker {
            for (key, n) in [
                ("max_connections", cb.max_connections),
                ("max_requests", cb.max_requests),
            ] {
                if n == 0 {
                    v.err(
                        be_pos,
                        format!("{path}.circuit_breaker.{key}"),
                        format!("{key} must be at least 1"),
                    );
                }
            }
        }
        if let Some(q) = &be.queue
            && q.timeout.is_zero()
        {
            v.err(
                be_pos,
                format!("{path}.queue.timeout"),
                "a queue timeout must be above 0 (remove `queue` for immediate 503s)",
            );
        }
        v.request_rules(&be.http_request, &empty, &format!("{path}.http_request"));
        v.response_rules(&be.http_response, &empty, &format!("{path}.http_response"));
        for (i, r) in be.stick.iter().enumerate() {
            let p = format!("{path}.stick.{i}");
            v.sample(&r.expr, r.pos, &p);
            if let Some(c) = &r.cond {
                v.condition(c, r.pos, &empty, &p);
            }
            let kind = match r.kind {
                StickKind::On => "stick on",
                StickKind::Match => "stick match",
                StickKind::StoreRequest => "stick store-request",
            };
            let t = match &r.table {
                Some(t) => v.table_ref(&t.value, t.pos, &p),
                None => v.default_table(kind, r.pos, &p),
            };
            if let Some((name, t)) = t
                && !t.store.iter().any(|s| s.kind == DataKind::ServerId)
            {
                v.err(
                    r.pos,
                    &p,
                    format!("{kind}: table {name:?} must store server_id"),
                );
            }
        }
        if let Some(c) = &be.compression {
            let p = format!("{path}.compression");
            if c.algorithms.is_empty() {
                v.err(
                    be_pos,
                    format!("{p}.algorithms"),
                    "name at least one algorithm (gzip, br, zstd)",
                );
            }
            if c.types
                .iter()
                .any(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
            {
                v.err(
                    be_pos,
                    format!("{p}.types"),
                    "a content type is one word, like text/html or text/",
                );
            }
            if !(1..=19).contains(&c.level) {
                v.err(
                    be_pos,
                    format!("{p}.level"),
                    format!("the level is 1 to 19, found {}", c.level),
                );
            }
        }
        if let Some(c) = &be.cookie {
            let p = format!("{path}.cookie");
            if c.name.is_empty()
                || !c
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                v.err(
                    c.name.pos,
                    format!("{p}.name"),
                    format!("invalid cookie name {:?}", c.name.value),
                );
            }
            if c.mode != CookieMode::Insert && (c.max_idle.is_some() || c.max_life.is_some()) {
                v.err(c.name.pos, &p, "max_idle and max_life need mode insert");
            }
            let mut seen: HashMap<String, &str> = HashMap::new();
            for (sname, s) in be.servers.iter() {
                let value = s.cookie.clone().unwrap_or_else(|| sname.to_owned());
                let bad = value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b";,\\\"|~".contains(&b));
                if bad {
                    v.err(
                        be.servers.pos_of(sname).unwrap_or(be_pos),
                        format!("{path}.servers.{sname}.cookie"),
                        format!("invalid cookie value {value:?} (no spaces, ';', ',', '|', '~' or quotes)"),
                    );
                }
                if let Some(other) = seen.insert(value.clone(), sname) {
                    v.err(
                        be.servers.pos_of(sname).unwrap_or(be_pos),
                        format!("{path}.servers.{sname}.cookie"),
                        format!("cookie value {value:?} is also server {other:?}'s"),
                    );
                }
            }
        }
    }
    stick_tables(&mut v);
    modes(&mut v);
    v.errors
}

fn stick_tables(v: &mut V) {
    let cfg = v.cfg;
    for (name, t) in cfg.stick_tables.iter() {
        let path = format!("stick_tables.{name}");
        let pos = cfg.stick_tables.pos_of(name).unwrap_or_default();
        if t.size.value.0 == 0 || t.size.value.0 > 1 << 30 {
            v.err(
                t.size.pos,
                format!("{path}.size"),
                "size must be between 1 and 1g entries",
            );
        }
        match (t.key_type.value, &t.len) {
            (KeyType::String | KeyType::Binary, Some(l)) if !(1..=1024).contains(&l.value) => {
                v.err(
                    l.pos,
                    format!("{path}.len"),
                    "len must be between 1 and 1024",
                );
            }
            (KeyType::Ip | KeyType::Ipv6 | KeyType::Integer, Some(l)) => {
                v.err(
                    l.pos,
                    format!("{path}.len"),
                    format!(
                        "len applies to string and binary tables, not {}",
                        t.key_type.value.name()
                    ),
                );
            }
            _ => {}
        }
        if t.expire
            .is_some_and(|e| e.is_zero() || e.as_millis() > i32::MAX as u128)
        {
            v.err(
                pos,
                format!("{path}.expire"),
                "expire must be between 1ms and 24 days",
            );
        }
        let mut kinds: Vec<DataKind> = Vec::new();
        for s in &t.store {
            if kinds.contains(&s.kind) {
                v.err(
                    s.pos,
                    format!("{path}.store"),
                    format!("{} is stored twice", s.kind),
                );
            }
            kinds.push(s.kind);
        }
        if t.peers && cfg.peers.is_none() {
            v.err(
                pos,
                format!("{path}.peers"),
                "peers: true needs a peers section",
            );
        }
    }
    let Some(p) = &cfg.peers else {
        return;
    };
    if !p.nodes.contains(&p.local.value) {
        let hint = nearest(&p.local.value, p.nodes.names())
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        v.err(
            p.local.pos,
            "peers.local",
            format!("{:?} is not one of peers.nodes{hint}", p.local.value),
        );
    }
    for (name, addr) in p.nodes.iter() {
        if addr.value.parse::<SocketAddr>().is_err() {
            v.err(
                addr.pos,
                format!("peers.nodes.{name}"),
                format!("invalid address {:?}: expected ip:port", addr.value),
            );
        }
    }
    if p.secret.value.len() < 8 {
        v.err(
            p.secret.pos,
            "peers.secret",
            "the secret must be at least 8 characters",
        );
    }
}

fn vrrp(v: &mut V, partial: bool) {
    let cfg = v.cfg;
    let mut routers: HashMap<(&str, u8), &str> = HashMap::new();
    let mut vips: HashMap<std::net::Ipv4Addr, &str> = HashMap::new();
    for (name, inst) in cfg.vrrp.instances.iter() {
        let path = format!("vrrp.instances.{name}");
        let pos = cfg.vrrp.instances.pos_of(name).unwrap_or_default();
        let ifname = &inst.interface;
        if ifname.value.is_empty()
            || ifname.value.len() > 15
            || ifname.value.contains(['/', ' ', '\0'])
        {
            v.err(
                ifname.pos,
                format!("{path}.interface"),
                format!(
                    "{:?} is not an interface name (1-15 characters, no '/' or space)",
                    ifname.value
                ),
            );
        }
        if inst.vrid.value == 0 {
            v.err(
                inst.vrid.pos,
                format!("{path}.vrid"),
                "vrid must be between 1 and 255",
            );
        } else if let Some(other) = routers.insert((ifname.value.as_str(), inst.vrid.value), name) {
            v.err(
                inst.vrid.pos,
                format!("{path}.vrid"),
                format!(
                    "VRID {} on {} is already used by instance {other:?}",
                    inst.vrid.value, ifname.value
                ),
            );
        }
        if inst.priority.value == 0 {
            v.err(
                inst.priority.pos,
                format!("{path}.priority"),
                "priority must be between 1 and 255 (0 is only sent when leaving)",
            );
        }
        let version = inst.version.value;
        let iv = inst.interval.value;
        match version {
            2 => {
                if iv.subsec_nanos() != 0 || !(1..=255).contains(&iv.as_secs()) {
                    v.err(
                        inst.interval.pos,
                        format!("{path}.interval"),
                        format!(
                            "VRRPv2 intervals are whole seconds from 1s to 255s, found {iv:?}; use version 3 for sub-second adverts"
                        ),
                    );
                }
            }
            3 => {
                let ms = iv.as_millis();
                if iv.subsec_nanos() % 10_000_000 != 0 || !(10..=40_950).contains(&ms) {
                    v.err(
                        inst.interval.pos,
                        format!("{path}.interval"),
                        format!(
                            "VRRPv3 intervals are from 10ms to 40.95s in steps of 10ms, found {iv:?}"
                        ),
                    );
                }
            }
            _ => v.err(
                inst.version.pos,
                format!("{path}.version"),
                format!("version must be 2 or 3, found {version}"),
            ),
        }
        if !matches!(inst.checksum.value.as_str(), "pseudo_header" | "message") {
            v.err(
                inst.checksum.pos,
                format!("{path}.checksum"),
                format!(
                    "unknown checksum {:?} (expected pseudo_header or message)",
                    inst.checksum.value
                ),
            );
        }
        if inst.addresses.is_empty() && !partial {
            v.err(
                pos,
                format!("{path}.addresses"),
                "an instance needs at least one virtual address",
            );
        }
        if inst.addresses.len() > 255 {
            v.err(
                pos,
                format!("{path}.addresses"),
                "an advert carries at most 255 addresses",
            );
        }
        for a in &inst.addresses {
            if let Some(other) = vips.insert(a.value.ip, name) {
                v.err(
                    a.pos,
                    format!("{path}.addresses"),
                    format!(
                        "{} is already a virtual address of instance {other:?}",
                        a.value.ip
                    ),
                );
            }
        }
        if !inst.preempt && !inst.preempt_delay.is_zero() {
            v.err(
                pos,
                format!("{path}.preempt_delay"),
                "preempt_delay needs preempt: true",
            );
        }
        for (i, t) in inst.track.iter().enumerate() {
            let tpath = format!("{path}.track.{i}");
            let set = [
                t.backend.as_ref(),
                t.frontend.as_ref(),
                t.interface.as_ref(),
            ];
            let tpos = set
                .iter()
                .flatten()
                .map(|s| s.pos)
                .next()
                .or(t.weight.as_ref().map(|w| w.pos))
                .unwrap_or(pos);
            if set.iter().flatten().count() != 1 {
                v.err(
                    tpos,
                    &tpath,
                    "a tracked object is exactly one of backend, frontend or interface",
                );
            }
            if let Some(b) = &t.backend {
                v.backend_ref(b, &format!("{tpath}.backend"));
            }
            if let Some(f) = &t.frontend
                && !cfg.frontends.contains(&f.value)
            {
                let hint = nearest(&f.value, cfg.frontends.names())
                    .map(|n| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                v.err(
                    f.pos,
                    format!("{tpath}.frontend"),
                    format!("unknown frontend {:?}{hint}", f.value),
                );
            }
            if let Some(w) = &t.weight {
                if w.value == 0 || !(-254..=254).contains(&w.value) {
                    v.err(
                        w.pos,
                        format!("{tpath}.weight"),
                        format!(
                            "weight must be between -254 and 254 and not 0, found {}; leave it out to go to FAULT instead",
                            w.value
                        ),
                    );
                } else if inst.priority.value == 255 {
                    v.err(
                        w.pos,
                        format!("{tpath}.weight"),
                        "an address owner (priority 255) keeps its priority: track without a weight (FAULT) or lower the priority",
                    );
                }
            }
        }
    }
}

fn xds(v: &mut V, x: &crate::xds::Xds) {
    let s = &x.server;
    let tls = match s.value.split_once("://") {
        Some(("http", rest)) if !rest.is_empty() => false,
        Some(("https", rest)) if !rest.is_empty() => true,
        _ => {
            v.err(
                s.pos,
                "xds.server",
                format!(
                    "invalid control plane address {:?}: expected http://host:port or https://host:port",
                    s.value
                ),
            );
            return;
        }
    };
    if x.tls.is_some() && !tls {
        v.err(s.pos, "xds.tls", "TLS settings need an https:// server");
    }
    if x.node.id.value.is_empty() {
        v.err(
            x.node.id.pos,
            "xds.node.id",
            "the node id must not be empty",
        );
    }
    if x.backoff.base.is_zero() || x.backoff.max < x.backoff.base {
        v.err(
            s.pos,
            "xds.backoff",
            "backoff.base must be above 0 and backoff.max at least backoff.base",
        );
    }
}

/// What each mode may use: `mode: tcp` frontends send their connections to `mode: tcp`
/// backends and decide with the connection, its TLS handshake and the payload only;
/// payload inspection is theirs alone.
fn modes(v: &mut V) {
    use crate::model::{LogFormatKind, Mode};
    let cfg = v.cfg;
    for (name, fe) in cfg.frontends.iter() {
        let path = format!("frontends.{name}");
        let fe_pos = cfg.frontends.pos_of(name).unwrap_or_default();
        let mode = fe.mode.as_str();
        let mut targets: Vec<(&Spanned<String>, String)> = Vec::new();
        if let Some(d) = &fe.default_backend {
            targets.push((d, format!("{path}.default_backend")));
        }
        let routes = fe
            .use_backend
            .iter()
            .enumerate()
            .map(|(i, u)| (u, format!("{path}.use_backend.{i}")))
            .chain(fe.virtual_hosts.iter().flat_map(|(vn, vh)| {
                let path = &path;
                vh.routes
                    .iter()
                    .enumerate()
                    .map(move |(i, u)| (u, format!("{path}.virtual_hosts.{vn}.routes.{i}")))
            }));
        for (u, p) in routes {
            match &u.target {
                BackendTarget::One(b) => targets.push((b, p)),
                BackendTarget::Split(parts) => {
                    targets.extend(parts.iter().map(|(b, _)| (b, p.clone())));
                }
                BackendTarget::Dynamic(_) | BackendTarget::None => {}
            }
        }
        for (b, p) in targets {
            if let Some(be) = cfg.backends.get(&b.value)
                && be.mode != fe.mode
            {
                v.err(
                    b.pos,
                    p,
                    format!(
                        "backend {:?} is mode {}, and frontend {name:?} is mode {mode}: a frontend sends its traffic to backends of its own mode",
                        b.value,
                        be.mode.as_str()
                    ),
                );
            }
        }
        // Named ACLs by what their fetches read.
        let acl_needs = |acl: &str, pred: &dyn Fn(Layer) -> bool| -> Option<String> {
            fe.acls.get(acl).and_then(|d| {
                d.0.iter()
                    .find(|(a, _)| pred(a.expr.fetch.layer()))
                    .map(|(a, _)| a.expr.fetch.to_string())
            })
        };
        let log_format = fe.access_log.as_ref().and_then(|l| l.format);
        if fe.mode == Mode::Tcp {
            let http_only = [
                ("http_request", !fe.http_request.is_empty()),
                ("http_response", !fe.http_response.is_empty()),
                ("virtual_hosts", !fe.virtual_hosts.is_empty()),
            ];
            for (key, used) in http_only {
                if used {
                    v.err(
                        fe_pos,
                        format!("{path}.{key}"),
                        format!("{key} needs mode http; frontend {name:?} is mode tcp"),
                    );
                }
            }
            if log_format == Some(LogFormatKind::Httplog) {
                v.err(
                    fe_pos,
                    format!("{path}.access_log.format"),
                    "httplog needs mode http; a mode tcp frontend logs tcplog or json",
                );
            }
            for (i, u) in fe.use_backend.iter().enumerate() {
                let p = format!("{path}.use_backend.{i}");
                if u.retries.is_some()
                    || u.timeout.is_some()
                    || !u.http_request.is_empty()
                    || !u.http_response.is_empty()
                    || !u.hash_key.is_empty()
                {
                    v.err(
                        u.pos,
                        &p,
                        "in mode tcp a use_backend entry takes only a backend and its condition",
                    );
                }
                if let BackendTarget::Dynamic(f) = &u.target {
                    let http = f.value.0.iter().find_map(|s| match s {
                        crate::rules::Segment::Sample(e) if e.fetch.layer() == Layer::Http => {
                            Some(&e.fetch)
                        }
                        _ => None,
                    });
                    if let Some(f) = http {
                        v.err(
                            u.pos,
                            &p,
                            format!("{f} needs an HTTP request; frontend {name:?} is mode tcp"),
                        );
                    }
                }
                if let Some(c) = &u.cond {
                    if let Some(f) = c.fetch_where(|l| l == Layer::Http) {
                        v.err(
                            u.pos,
                            &p,
                            format!("{f} needs an HTTP request; frontend {name:?} is mode tcp"),
                        );
                    }
                    for (acl, offset) in c.named() {
                        if let Some(f) = acl_needs(acl, &|l| l == Layer::Http) {
                            v.err(
                                offset_pos(u.pos, offset),
                                &p,
                                format!("ACL {acl:?} uses {f}, which needs an HTTP request; frontend {name:?} is mode tcp"),
                            );
                        }
                    }
                }
            }
            for (i, r) in fe.tcp_request.content.iter().enumerate() {
                let r = &r.0;
                let p = format!("{path}.tcp_request.content.{i}");
                if let Some(c) = &r.rule.cond {
                    v.condition(c, r.pos, &fe.acls, &p);
                    for (acl, offset) in c.named() {
                        if let Some(f) = acl_needs(acl, &|l| l == Layer::Http) {
                            v.err(
                                offset_pos(r.pos, offset),
                                &p,
                                format!("ACL {acl:?} uses {f}, which needs an HTTP request; content rules can use the connection, its TLS handshake and the payload"),
                            );
                        }
                    }
                }
                if let ConnAction::Stick(a) = &r.rule.action {
                    v.stick_action(a, r.pos, &p);
                }
            }
            if fe.tcp_request.inspect_delay > Duration::from_secs(3600) {
                v.err(
                    fe_pos,
                    format!("{path}.tcp_request.inspect_delay"),
                    "inspect_delay must be at most 1h",
                );
            }
        } else {
            if !fe.tcp_request.content.is_empty() || !fe.tcp_request.inspect_delay.is_zero() {
                v.err(
                    fe_pos,
                    format!("{path}.tcp_request"),
                    "tcp_request.content and inspect_delay need mode tcp (HTTP frontends decide with http_request rules)",
                );
            }
            if log_format == Some(LogFormatKind::Tcplog) {
                v.err(
                    fe_pos,
                    format!("{path}.access_log.format"),
                    "tcplog needs mode tcp; a mode http frontend logs httplog or json",
                );
            }
            let payload = |l: Layer| l == Layer::Payload;
            for (acl_name, def) in fe.acls.entries() {
                if let Some((a, pos)) = def.0.iter().find(|(a, _)| payload(a.expr.fetch.layer())) {
                    v.err(
                        *pos,
                        format!("{path}.acls.{}", acl_name.value),
                        format!("{} reads the payload before HTTP, which only mode tcp frontends inspect", a.expr.fetch),
                    );
                }
            }
            let conds = fe
                .use_backend
                .iter()
                .enumerate()
                .filter_map(|(i, u)| {
                    Some((u.cond.as_ref()?, u.pos, format!("{path}.use_backend.{i}")))
                })
                .chain(fe.http_request.iter().enumerate().filter_map(|(i, r)| {
                    Some((
                        r.rule.cond.as_ref()?,
                        r.pos,
                        format!("{path}.http_request.{i}"),
                    ))
                }));
            for (c, pos, p) in conds {
                if let Some(f) = c.fetch_where(payload) {
                    v.err(
                        pos,
                        p,
                        format!("{f} reads the payload before HTTP, which only mode tcp frontends inspect"),
                    );
                }
            }
        }
    }
    for (name, be) in cfg.backends.iter() {
        let path = format!("backends.{name}");
        let pos = cfg.backends.pos_of(name).unwrap_or_default();
        if be.mode == crate::model::Mode::Http {
            if be.timeouts.tunnel.is_some() {
                v.err(
                    pos,
                    format!("{path}.timeouts.tunnel"),
                    "timeouts.tunnel applies to mode tcp backends",
                );
            }
            continue;
        }
        let http_only = [
            ("http_request", "http_request", !be.http_request.is_empty()),
            (
                "http_response",
                "http_response",
                !be.http_response.is_empty(),
            ),
            ("cookie", "cookie persistence", be.cookie.is_some()),
            (
                "compression",
                "response compression",
                be.compression.is_some(),
            ),
            ("proto", "proto h2", be.proto != crate::model::Proto::Http1),
            (
                "balance",
                "hashing a request (balance uri or hdr)",
                matches!(be.balance, Balance::Uri | Balance::Hdr(_)),
            ),
        ];
        for (key, what, used) in http_only {
            if used {
                v.err(
                    pos,
                    format!("{path}.{key}"),
                    format!("{what} needs mode http; backend {name:?} is mode tcp"),
                );
            }
        }
        let mut samples: Vec<(&SampleExpr, Pos, String)> = Vec::new();
        if let Some(k) = &be.hash_key {
            samples.push((&k.value.0, k.pos, format!("{path}.hash_key")));
        }
        for (i, st) in be.stick.iter().enumerate() {
            samples.push((&st.expr, st.pos, format!("{path}.stick.{i}")));
            if let Some(f) = st.cond.as_ref().and_then(|c| c.fetch_above(Layer::Session)) {
                v.err(
                    st.pos,
                    format!("{path}.stick.{i}"),
                    format!("{f} is not known in mode tcp, where a backend sees the connection and its TLS handshake"),
                );
            }
        }
        for (e, pos, p) in samples {
            if e.fetch.layer() > Layer::Session {
                v.err(
                    pos,
                    p,
                    format!("{} is not known in mode tcp, where a backend sees the connection and its TLS handshake", e.fetch),
                );
            }
        }
        if let Some(r) = &be.retries
            && let Some(on) =
                r.on.iter()
                    .find(|o| o.value != crate::resilience::RetryOn::ConnectFailure)
        {
            v.err(
                on.pos,
                format!("{path}.retries.on"),
                "mode tcp retries connection failures only (connect-failure)",
            );
        }
    }
}
