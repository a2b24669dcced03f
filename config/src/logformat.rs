//! Custom access log lines (`access_log.log_format`), in HAProxy's `log-format` syntax:
//! text with `%` variables (`%ci`, `%ST`, `%{+Q}r`...), `%[trace_id]`, and `%%` for a
//! percent sign.

/// One piece of a custom log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A variable, quoted (`%{+Q}`) or not.
    Var(Var, bool),
}

/// The variables a log line may hold: HAProxy's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `%ci`, `%cp`: the client's address and port.
    ClientIp,
    ClientPort,
    /// `%t`, `%tr`: the date the request was received, as `option httplog` writes it.
    Date,
    /// `%T`: the same date in GMT, HTTP style.
    DateGmt,
    /// `%ft`: the frontend, `~` after it over TLS; `%f`: the frontend.
    FrontendTransport,
    Frontend,
    /// `%b`, `%s`: backend and server (`<NOSRV>` without).
    Backend,
    Server,
    /// `%TR`, `%Tw`, `%Tc`, `%Tr`, `%Ta`/`%Tt`: the timers in milliseconds.
    TRequest,
    TQueue,
    TConnect,
    TResponse,
    TTotal,
    /// `%ST`: the status; `%B`: bytes sent to the client; `%U`: bytes received.
    Status,
    BytesOut,
    BytesIn,
    /// `%ts`, `%tsc`: the termination state, 2 and 4 characters.
    Term,
    TermCookie,
    /// `%ac`, `%fc`, `%bc`, `%sc`, `%rc`: process, frontend, backend and server
    /// connections, retries.
    ActConn,
    FeConn,
    BeConn,
    SrvConn,
    Retries,
    /// `%r`: the request line; `%HM`, `%HU`, `%HP`, `%HV`: method, URI, path, version.
    RequestLine,
    Method,
    Uri,
    Path,
    Version,
    /// `%pid`: the process id.
    Pid,
    /// `%[trace_id]`: the request's trace id (OpenTelemetry), `-` when untraced.
    TraceId,
}

const NAMES: &[(&str, Var)] = &[
    ("tsc", Var::TermCookie),
    ("pid", Var::Pid),
    ("ci", Var::ClientIp),
    ("cp", Var::ClientPort),
    ("tr", Var::Date),
    ("ft", Var::FrontendTransport),
    ("TR", Var::TRequest),
    ("Tw", Var::TQueue),
    ("Tc", Var::TConnect),
    ("Tr", Var::TResponse),
    ("Ta", Var::TTotal),
    ("Tt", Var::TTotal),
    ("ST", Var::Status),
    ("ts", Var::Term),
    ("ac", Var::ActConn),
    ("fc", Var::FeConn),
    ("bc", Var::BeConn),
    ("sc", Var::SrvConn),
    ("rc", Var::Retries),
    ("HM", Var::Method),
    ("HU", Var::Uri),
    ("HP", Var::Path),
    ("HV", Var::Version),
    ("t", Var::Date),
    ("T", Var::DateGmt),
    ("f", Var::Frontend),
    ("b", Var::Backend),
    ("s", Var::Server),
    ("B", Var::BytesOut),
    ("U", Var::BytesIn),
    ("r", Var::RequestLine),
];

/// Fetches available at log time, by name.
const FETCHES: &[(&str, Var)] = &[("trace_id", Var::TraceId)];

/// Parses a `log-format` string; the error names what is wrong and where.
pub fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            text.push('%');
            rest = r;
            continue;
        }
        let mut quote = false;
        if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed '%{{' at {:?}", &s[s.len() - rest.len() - 1..]))?;
            for flag in r[..end].split(',') {
                match flag {
                    "+Q" => quote = true,
                    "-Q" => quote = false,
                    other => {
                        return Err(format!("unknown log-format flag {other:?} (known: +Q, -Q)"));
                    }
                }
            }
            rest = &r[end + 1..];
        }
        let var = if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("unclosed '%[' in the log format")?;
            let name = r[..end].trim();
            rest = &r[end + 1..];
            FETCHES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    format!(
                        "unknown fetch '%[{name}]' in the log format (available at log time: {})",
                        FETCHES.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
                    )
                })?
        } else {
            let (name, var) = NAMES
                .iter()
                .find(|(n, _)| {
                    rest.starts_with(n)
                        && !rest[n.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
                })
                .ok_or_else(|| {
                    let word: String = rest
                        .chars()
                        .take_while(char::is_ascii_alphanumeric)
                        .collect();
                    format!("unknown log-format variable '%{word}'")
                })?;
            rest = &rest[name.len()..];
            *var
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Var(var, quote));
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_variables_flags_and_fetches() {
        let p = parse("%ci:%cp [%tr] %ft %b/%s %ST %{+Q}r %[trace_id] 100%%").unwrap();
        assert_eq!(p[0], Piece::Var(Var::ClientIp, false));
        assert_eq!(p[1], Piece::Text(":".into()));
        assert!(p.contains(&Piece::Var(Var::RequestLine, true)));
        assert!(p.contains(&Piece::Var(Var::TraceId, false)));
        assert_eq!(p.last(), Some(&Piece::Text(" 100%".into())));
        // Longest names first: %tsc is not %ts followed by "c".
        assert_eq!(
            parse("%tsc").unwrap(),
            vec![Piece::Var(Var::TermCookie, false)]
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("%zz").unwrap_err().contains("'%zz'"));
        assert!(parse("%[req.hdr(host)]").unwrap_err().contains("trace_id"));
        assert!(parse("%{+X}r").unwrap_err().contains("+X"));
        assert!(parse("%{+Q").is_err());
        assert!(parse("%[trace_id").is_err());
        assert!(parse("%").is_err());
    }
}
