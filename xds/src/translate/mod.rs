//! Envoy resources to rampart's configuration model.
//!
//! Each resource is checked when it arrives ([`check_listener`], [`check_routes`],
//! [`check_cluster`], [`check_endpoints`]): its fields against [`crate::check`], then its
//! values (durations, ports, regexes, weights, names). A resource that passes is stored;
//! when the whole configuration is assembled, the same functions build the model values
//! (`Frontend`, `VirtualHost`, `Backend`, `Server`) from it, so a stored resource always
//! translates.
//!
//! docs/xds.md has the field-by-field mapping.

// Control planes still send Envoy's deprecated fields (`append`, `exact_match`,
// `total_weight`...): they are read like the fields that replace them.
#![allow(deprecated)]

mod cluster;
mod listener;
mod matches;
mod route;

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf;
use rampart_config::rules::{LogFormat, Segment};

pub use cluster::{ClusterShape, Endpoints, backend, check_cluster, check_endpoints, servers};
pub use listener::{
    ListenerShape, RouteSource, check_listener, config_source, frontend, tcp_backends,
};
pub use route::{Known, check_clusters_known, check_routes, virtual_hosts};

/// A problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    /// The field's path in the resource, like `virtual_hosts[0].routes[2].match.safe_regex`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

pub type Res<T> = Result<T, Bad>;

pub(crate) fn bad<T>(path: impl Into<String>, message: impl Into<String>) -> Res<T> {
    Err(Bad {
        path: path.into(),
        message: message.into(),
    })
}

/// `base.name` or `name`.
pub(crate) fn at(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else if name.starts_with('[') {
        format!("{base}{name}")
    } else {
        format!("{base}.{name}")
    }
}

/// Checks a resource's fields against the table of what rampart supports.
pub(crate) fn fields<T: prost::Message + prost::Name>(msg: &T) -> Res<()> {
    let d = crate::proto::dynamic(&T::full_name(), &msg.encode_to_vec()).map_err(|e| Bad {
        path: String::new(),
        message: e,
    })?;
    match crate::check::unsupported(&d).into_iter().next() {
        None => Ok(()),
        Some(u) => bad(u.path, u.message),
    }
}

/// A name rampart can use for a frontend, backend or server (it appears in the runtime
/// API, whose commands split on `/` and spaces, and in CSV).
pub(crate) fn name(n: &str, path: &str) -> Res<()> {
    if n.is_empty() {
        return bad(path, "the name is empty");
    }
    if n.len() > 256 {
        return bad(path, format!("name of {} bytes (at most 256)", n.len()));
    }
    if let Some(c) = n
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | ',' | '"' | '\''))
    {
        return bad(
            path,
            format!("name {n:?} has {c:?}, which rampart cannot use in names"),
        );
    }
    Ok(())
}

/// A protobuf duration; negative ones are invalid (Envoy's validation rules).
pub fn duration(d: &protobuf::Duration, path: &str) -> Res<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return bad(
            path,
            format!("negative duration {}s {}ns", d.seconds, d.nanos),
        );
    }
    if d.nanos >= 1_000_000_000 || d.seconds > 315_576_000_000 {
        return bad(path, "duration out of range");
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration where zero means "no limit" (Envoy's timeouts): `None` then.
pub(crate) fn timeout(d: Option<&protobuf::Duration>, path: &str) -> Res<Option<Option<Duration>>> {
    match d {
        None => Ok(None),
        Some(d) => {
            let v = duration(d, path)?;
            Ok(Some((!v.is_zero()).then_some(v)))
        }
    }
}

/// What rampart uses for "no timeout": long enough never to fire in practice, short
/// enough for timer arithmetic.
pub(crate) const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The bytes of a data source: a file (relative names are read from the working
/// directory, as Envoy does), inline bytes or text, or an environment variable.
pub(crate) fn data_source(d: &core::DataSource, path: &str) -> Res<DataText> {
    use core::data_source::Specifier;
    match &d.specifier {
        Some(Specifier::Filename(f)) => {
            let p = std::path::Path::new(f);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map(|c| c.join(p))
                    .unwrap_or(p.to_path_buf())
            };
            Ok(DataText::File(abs.display().to_string()))
        }
        Some(Specifier::InlineString(s)) => Ok(DataText::Inline(s.clone())),
        Some(Specifier::InlineBytes(b)) => match String::from_utf8(b.clone()) {
            Ok(s) => Ok(DataText::Inline(s)),
            Err(_) => bad(path, "inline bytes that are not text (PEM expected)"),
        },
        Some(Specifier::EnvironmentVariable(v)) => match std::env::var(v) {
            Ok(s) => Ok(DataText::Inline(s)),
            Err(_) => bad(path, format!("environment variable {v} is not set")),
        },
        None => bad(path, "an empty data source"),
    }
}

/// Where data comes from once read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DataText {
    File(String),
    Inline(String),
}

impl DataText {
    /// For configuration values that take a file name or inline PEM text.
    pub(crate) fn pem(self, path: &str) -> Res<String> {
        match self {
            DataText::File(f) => Ok(f),
            DataText::Inline(s) if s.trim_start().starts_with("-----BEGIN") => Ok(s),
            DataText::Inline(_) => bad(path, "inline data is not PEM"),
        }
    }

    /// The text itself (a file is read now).
    pub(crate) fn text(self, path: &str) -> Res<String> {
        match self {
            DataText::File(f) => rampart_config::limits::read_bounded(
                std::path::Path::new(&f),
                rampart_config::limits::MAX_PEM_FILE_BYTES,
                "file",
            )
            .or_else(|e| bad(path, format!("cannot read {f}: {e}"))),
            DataText::Inline(s) => Ok(s),
        }
    }
}

/// A literal string as a format (so `%` stays a `%`).
pub(crate) fn literal(s: &str) -> LogFormat {
    if s.is_empty() {
        LogFormat(Vec::new())
    } else {
        LogFormat(vec![Segment::Lit(s.to_owned())])
    }
}

/// An Envoy header value: literal text with `%COMMAND%` substitutions. The commands that
/// have a rampart sample are translated; any other is an error.
pub(crate) fn header_format(s: &str, path: &str) -> Res<LogFormat> {
    use rampart_config::rules::fetch::parse_sample;
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            lit.push('%');
            rest = r;
            continue;
        }
        let Some(end) = rest.find('%') else {
            return bad(
                path,
                format!("unterminated %COMMAND% in header value {s:?}"),
            );
        };
        let cmd = &rest[..end];
        rest = &rest[end + 1..];
        let req_header = cmd
            .strip_prefix("REQ(")
            .and_then(|r| r.strip_suffix(')'))
            .filter(|h| !h.starts_with(':') && !h.contains('?'))
            .map(|h| format!("hdr({h})"));
        let samples: Vec<&str> = match cmd {
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
            | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => vec!["src"],
            "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
                vec!["src", ":", "src_port"]
            }
            "DOWNSTREAM_REMOTE_PORT" => vec!["src_port"],
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => vec!["dst"],
            "DOWNSTREAM_LOCAL_ADDRESS" => vec!["dst", ":", "dst_port"],
            "DOWNSTREAM_LOCAL_PORT" => vec!["dst_port"],
            "REQUESTED_SERVER_NAME" => vec!["ssl_fc_sni"],
            _ => match &req_header {
                Some(h) => vec![h.as_str()],
                None => {
                    return bad(
                        path,
                        format!("header value command %{cmd}% is not supported by rampart"),
                    );
                }
            },
        };
        for part in samples {
            if part == ":" {
                lit.push(':');
                continue;
            }
            let (e, _) =
                parse_sample(part, &rampart_config::rules::acl::NoFiles).map_err(|m| Bad {
                    path: path.to_owned(),
                    message: m,
                })?;
            if !lit.is_empty() {
                segs.push(Segment::Lit(std::mem::take(&mut lit)));
            }
            segs.push(Segment::Sample(e));
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        segs.push(Segment::Lit(lit));
    }
    Ok(LogFormat(segs))
}

/// The TLS context a transport socket holds, of type `T` (Downstream or Upstream).
pub(crate) fn tls_context<T: prost::Message + prost::Name + Default>(
    ts: &core::TransportSocket,
    path: &str,
) -> Res<(T, String)> {
    use core::transport_socket::ConfigType;
    let p = at(path, "typed_config");
    match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) if a.type_url == T::type_url() => {
            let ctx = crate::proto::unpack(a).or_else(|e| bad(&p, e))?;
            Ok((ctx, p))
        }
        Some(ConfigType::TypedConfig(a)) => bad(
            p,
            format!(
                "transport socket {} is not supported by rampart",
                a.type_url
            ),
        ),
        None => bad(p, "a transport socket needs a typed_config"),
    }
}

/// Defaults of a configuration struct (every field optional or defaulted).
pub(crate) fn defaults<T: rampart_config::decode::Decode>() -> Res<T> {
    T::fallback().ok_or_else(|| Bad {
        path: String::new(),
        message: "internal error: no defaults".to_owned(),
    })
}

/// A value with no position (it did not come from a file).
pub(crate) fn spanned<T>(value: T) -> rampart_config::Spanned<T> {
    rampart_config::Spanned {
        value,
        pos: rampart_config::Pos::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_format_translates_known_commands_and_refuses_others() {
        let f = header_format("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% x", "p").unwrap();
        assert_eq!(f.0.len(), 2);
        assert!(matches!(&f.0[1], Segment::Lit(s) if s == " 100% x"));
        let f = header_format("%REQ(x-user)%", "p").unwrap();
        assert!(matches!(&f.0[0], Segment::Sample(_)));
        let e = header_format("%START_TIME%", "h.value").unwrap_err();
        assert_eq!(e.path, "h.value");
        assert!(e.message.contains("START_TIME"), "{e}");
        assert!(header_format("50%", "p").is_err());
    }

    #[test]
    fn durations_must_not_be_negative() {
        let d = protobuf::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert!(duration(&d, "connect_timeout").is_err());
        let d = protobuf::Duration {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(duration(&d, "x").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn names_with_separators_are_refused() {
        assert!(name("outbound|8080||web.default.svc.cluster.local", "name").is_ok());
        assert!(name("a/b", "name").is_err());
        assert!(name("a b", "name").is_err());
        assert!(name("", "name").is_err());
    }
}
