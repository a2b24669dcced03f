//! A route's match as a condition of anonymous ACLs: the path (prefix, exact, regex,
//! separated prefix), headers, query parameters, gRPC.

use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use rampart_config::rules::{
    Acl, AclRef, Condition, Fetch, IntMatch, MatchMethod, Patterns, SampleExpr, Term,
};

use super::{Res, at, bad};

pub(crate) fn acl(fetch: Fetch, method: MatchMethod, icase: bool, patterns: Patterns) -> Acl {
    Acl {
        expr: SampleExpr {
            fetch,
            converters: Vec::new(),
        },
        method,
        icase,
        patterns,
        files: Vec::new(),
    }
}

pub(crate) fn term(a: Acl, negate: bool) -> Term {
    Term {
        negate,
        acl: AclRef::Anonymous(Box::new(a)),
    }
}

/// A condition in disjunctive form: any of these lists of terms, all of whose terms hold.
pub(crate) type Dnf = Vec<Vec<Term>>;

/// `a AND b` in disjunctive form.
/// Alternatives one route's matchers may expand to (inverted and optional header matches
/// multiply them).
const MAX_ALTERNATIVES: usize = 256;

fn and(path: &str, a: Dnf, b: Dnf) -> Res<Dnf> {
    if a.len().saturating_mul(b.len()) > MAX_ALTERNATIVES {
        return bad(
            path,
            format!("these matchers expand to more than {MAX_ALTERNATIVES} alternatives; refused"),
        );
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in &b {
            out.push(x.iter().chain(y).cloned().collect());
        }
    }
    Ok(out)
}

pub(crate) fn regex_ok(re: &str, path: &str) -> Res<()> {
    if re.is_empty() {
        return bad(path, "empty regex");
    }
    // Syntax and size, before anything compiles it.
    rampart_config::rules::check_regex(re, false).or_else(|e| bad(path, e))?;
    regex::Regex::new(re).map(|_| ()).or_else(|e| {
        bad(
            path,
            format!("invalid regex {re:?}: {}", first_line(&e.to_string())),
        )
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

/// Envoy's regexes match the whole value.
fn full(re: &str) -> String {
    format!("^(?:{re})$")
}

/// A route's match: its condition, and for path rewrites the regex that captures what
/// follows the matched prefix, with whether it ignores case.
pub(crate) type Matched = (Option<Condition>, Option<(String, bool)>);

/// A route's match as a condition.
pub(crate) fn route_match(m: &rt::RouteMatch, path: &str) -> Res<Matched> {
    use rt::route_match::PathSpecifier as P;
    let icase = m.case_sensitive.as_ref().is_some_and(|v| !v.value);
    let mut dnf: Dnf = vec![Vec::new()];
    let mut rewrite = None;
    let path_acl = |method, pats: Vec<String>| acl(Fetch::Path, method, icase, Patterns::Str(pats));
    match &m.path_specifier {
        Some(P::Prefix(p)) => {
            if !p.is_empty() && !p.starts_with('/') {
                return bad(
                    at(path, "prefix"),
                    format!("prefix {p:?} does not start with '/'"),
                );
            }
            if p.len() > 1 {
                // A prefix with a query part compares with the whole target, as Envoy does.
                let fetch = if p.contains('?') {
                    Fetch::Url
                } else {
                    Fetch::Path
                };
                dnf = and(
                    path,
                    dnf,
                    vec![vec![term(
                        acl(
                            fetch,
                            MatchMethod::Beg,
                            icase,
                            Patterns::Str(vec![p.clone()]),
                        ),
                        false,
                    )]],
                )?;
            }
            rewrite = Some((format!("^{}(.*)$", regex::escape(p)), icase));
        }
        Some(P::Path(p)) => {
            if !p.starts_with('/') {
                return bad(
                    at(path, "path"),
                    format!("path {p:?} does not start with '/'"),
                );
            }
            dnf = and(
                path,
                dnf,
                vec![vec![term(
                    path_acl(MatchMethod::Str, vec![p.clone()]),
                    false,
                )]],
            )?;
            rewrite = Some((format!("^{}()$", regex::escape(p)), icase));
        }
        Some(P::SafeRegex(r)) => {
            regex_ok(&r.regex, &at(path, "safe_regex.regex"))?;
            dnf = and(
                path,
                dnf,
                vec![vec![term(
                    acl(
                        Fetch::Path,
                        MatchMethod::Reg,
                        false,
                        Patterns::Reg(vec![full(&r.regex)]),
                    ),
                    false,
                )]],
            )?;
        }
        Some(P::PathSeparatedPrefix(p)) => {
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']) {
                return bad(
                    at(path, "path_separated_prefix"),
                    format!(
                        "{p:?}: a path separated prefix starts with '/', does not end with one and has no '?' or '#'"
                    ),
                );
            }
            dnf = and(
                path,
                dnf,
                vec![
                    vec![term(path_acl(MatchMethod::Str, vec![p.clone()]), false)],
                    vec![term(
                        path_acl(MatchMethod::Beg, vec![format!("{p}/")]),
                        false,
                    )],
                ],
            )?;
            rewrite = Some((format!("^{}(/.*|)$", regex::escape(p)), icase));
        }
        _ => {
            return bad(
                path,
                "a route match needs prefix, path, safe_regex or path_separated_prefix",
            );
        }
    }
    for (i, h) in m.headers.iter().enumerate() {
        dnf = and(path, dnf, header_match(h, &format!("{path}.headers[{i}]"))?)?;
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        let qp = format!("{path}.query_parameters[{i}]");
        if q.name.is_empty() {
            return bad(at(&qp, "name"), "a query parameter needs a name");
        }
        use rt::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
        let fetch = Fetch::UrlParam(q.name.clone());
        let t = match &q.query_parameter_match_specifier {
            Some(Q::StringMatch(s)) => string_match(fetch, s, &at(&qp, "string_match"))?,
            Some(Q::PresentMatch(true)) => vec![vec![term(
                acl(fetch, MatchMethod::Found, false, Patterns::None),
                false,
            )]],
            Some(Q::PresentMatch(false)) | None => {
                vec![vec![term(
                    acl(fetch, MatchMethod::Found, false, Patterns::None),
                    false,
                )]]
            }
        };
        dnf = and(path, dnf, t)?;
    }
    if m.grpc.is_some() {
        dnf = and(
            path,
            dnf,
            vec![vec![term(
                acl(
                    Fetch::Hdr {
                        name: "content-type".into(),
                        occurrence: None,
                    },
                    MatchMethod::Beg,
                    false,
                    Patterns::Str(vec!["application/grpc".into()]),
                ),
                false,
            )]],
        )?;
    }
    if let Some(f) = &m.runtime_fraction {
        let v = f.default_value.unwrap_or_default();
        let denom = match v.denominator {
            0 => 100,
            1 => 10_000,
            _ => 1_000_000,
        };
        if v.numerator < denom {
            return bad(
                at(path, "runtime_fraction"),
                "routes taken by a fraction of requests are not supported by rampart (use weighted_clusters)",
            );
        }
    }
    let cond = if dnf.iter().all(Vec::is_empty) {
        None
    } else {
        Some(Condition {
            unless: false,
            alternatives: dnf,
        })
    };
    Ok((cond, rewrite))
}

/// A string matcher on a sample, as terms.
fn string_match(fetch: Fetch, s: &matcher::StringMatcher, path: &str) -> Res<Dnf> {
    use matcher::string_matcher::MatchPattern as M;
    let icase = s.ignore_case;
    let a = match &s.match_pattern {
        Some(M::Exact(v)) => acl(
            fetch,
            MatchMethod::Str,
            icase,
            Patterns::Str(vec![v.clone()]),
        ),
        Some(M::Prefix(v)) => acl(
            fetch,
            MatchMethod::Beg,
            icase,
            Patterns::Str(vec![v.clone()]),
        ),
        Some(M::Suffix(v)) => acl(
            fetch,
            MatchMethod::End,
            icase,
            Patterns::Str(vec![v.clone()]),
        ),
        Some(M::Contains(v)) => acl(
            fetch,
            MatchMethod::Sub,
            icase,
            Patterns::Str(vec![v.clone()]),
        ),
        Some(M::SafeRegex(r)) => {
            regex_ok(&r.regex, &at(path, "safe_regex.regex"))?;
            acl(
                fetch,
                MatchMethod::Reg,
                false,
                Patterns::Reg(vec![full(&r.regex)]),
            )
        }
        _ => {
            return bad(
                path,
                "a string matcher needs exact, prefix, suffix, contains or safe_regex",
            );
        }
    };
    Ok(vec![vec![term(a, false)]])
}

/// A header matcher. Pseudo-headers `:method`, `:authority` and `:path` read the method,
/// the host and the request target.
fn header_match(h: &rt::HeaderMatcher, path: &str) -> Res<Dnf> {
    use rt::header_matcher::HeaderMatchSpecifier as H;
    let fetch = match h.name.to_ascii_lowercase().as_str() {
        "" => return bad(at(path, "name"), "a header matcher needs a name"),
        ":method" => Fetch::Method,
        ":authority" | "host" => Fetch::Hdr {
            name: "host".into(),
            occurrence: None,
        },
        ":path" => Fetch::Url,
        n if n.starts_with(':') => {
            return bad(
                at(path, "name"),
                format!("pseudo-header {n} is not supported by rampart"),
            );
        }
        n => {
            http::HeaderName::from_bytes(n.as_bytes())
                .or_else(|_| bad(at(path, "name"), format!("invalid header name {n:?}")))?;
            Fetch::Hdr {
                name: n.to_owned(),
                occurrence: None,
            }
        }
    };
    let name = h.name.to_ascii_lowercase();
    let str_acl = |m, v: &str| acl(fetch.clone(), m, false, Patterns::Str(vec![v.to_owned()]));
    let (mut dnf, empty_matches) = match &h.header_match_specifier {
        Some(H::ExactMatch(v)) => (
            vec![vec![term(str_acl(MatchMethod::Str, v), false)]],
            v.is_empty(),
        ),
        Some(H::PrefixMatch(v)) => (
            vec![vec![term(str_acl(MatchMethod::Beg, v), false)]],
            v.is_empty(),
        ),
        Some(H::SuffixMatch(v)) => (
            vec![vec![term(str_acl(MatchMethod::End, v), false)]],
            v.is_empty(),
        ),
        Some(H::ContainsMatch(v)) => (
            vec![vec![term(str_acl(MatchMethod::Sub, v), false)]],
            v.is_empty(),
        ),
        Some(H::SafeRegexMatch(r)) => {
            regex_ok(&r.regex, &at(path, "safe_regex_match.regex"))?;
            let empty = regex::Regex::new(&full(&r.regex)).is_ok_and(|re| re.is_match(""));
            (
                vec![vec![term(
                    acl(
                        fetch.clone(),
                        MatchMethod::Reg,
                        false,
                        Patterns::Reg(vec![full(&r.regex)]),
                    ),
                    false,
                )]],
                empty,
            )
        }
        Some(H::StringMatch(s)) => {
            use matcher::string_matcher::MatchPattern as M;
            // Checked (and its regex bounded) first.
            let dnf = string_match(fetch.clone(), s, &at(path, "string_match"))?;
            let empty = match &s.match_pattern {
                Some(M::Exact(v) | M::Prefix(v) | M::Suffix(v) | M::Contains(v)) => v.is_empty(),
                Some(M::SafeRegex(r)) => {
                    regex::Regex::new(&full(&r.regex)).is_ok_and(|re| re.is_match(""))
                }
                _ => false,
            };
            (dnf, empty)
        }
        Some(H::PresentMatch(p)) => {
            let t = term(
                acl(fetch.clone(), MatchMethod::Found, false, Patterns::None),
                !*p,
            );
            return Ok(vec![vec![if h.invert_match {
                Term {
                    negate: !t.negate,
                    ..t
                }
            } else {
                t
            }]]);
        }
        Some(H::RangeMatch(r)) => {
            if r.end <= r.start {
                return bad(
                    at(path, "range_match"),
                    "the range is empty (end must be above start)",
                );
            }
            let f = match &fetch {
                Fetch::Hdr { name, .. } => Fetch::HdrVal(name.clone()),
                _ => return bad(at(path, "range_match"), "a range needs a header"),
            };
            (
                vec![vec![term(
                    acl(
                        f,
                        MatchMethod::Int,
                        false,
                        Patterns::Int(vec![IntMatch::Range(Some(r.start), Some(r.end - 1))]),
                    ),
                    false,
                )]],
                false,
            )
        }
        None => (
            vec![vec![term(
                acl(fetch.clone(), MatchMethod::Found, false, Patterns::None),
                false,
            )]],
            false,
        ),
    };
    if h.treat_missing_header_as_empty && empty_matches && !name.starts_with(':') {
        dnf.push(vec![term(
            acl(
                Fetch::HdrCnt(name.clone()),
                MatchMethod::Int,
                false,
                Patterns::Int(vec![IntMatch::Eq(0)]),
            ),
            false,
        )]);
    }
    if h.invert_match {
        // NOT (a OR b) = NOT a AND NOT b, each alternative being one term here.
        let mut out: Dnf = vec![Vec::new()];
        for alt in dnf {
            let [t] = <[Term; 1]>::try_from(alt).or_else(|_| {
                bad::<[Term; 1]>(
                    at(path, "invert_match"),
                    "this match cannot be inverted by rampart",
                )
            })?;
            out = and(
                path,
                out,
                vec![vec![Term {
                    negate: !t.negate,
                    ..t
                }]],
            )?;
        }
        return Ok(out);
    }
    Ok(dnf)
}
