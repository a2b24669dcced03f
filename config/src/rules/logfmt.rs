//! Format strings for header values, redirect targets and return bodies: literal text with
//! `%[fetch,converter...]` samples, as in HAProxy's log-format; `%%` is a literal `%`.

use super::fetch::{SampleExpr, parse_sample};

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Lit(String),
    Sample(SampleExpr),
}

/// A parsed format string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogFormat(pub Vec<Segment>);

impl LogFormat {
    /// Literal text only, when the string has no samples.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Segment::Lit(s)] => Some(s),
            _ => None,
        }
    }
}

/// Parses `s`; errors carry the character offset within `s`.
/// `files` reads the map files converters name.
pub fn parse_logformat(
    s: &str,
    files: &dyn super::acl::PatternFiles,
) -> Result<LogFormat, (usize, String)> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut chars = s.char_indices().peekable();
    let mut char_pos = 0usize;
    while let Some((i, c)) = chars.next() {
        let here = char_pos;
        char_pos += 1;
        if c != '%' {
            lit.push(c);
            continue;
        }
        match chars.peek() {
            Some((_, '%')) => {
                chars.next();
                char_pos += 1;
                lit.push('%');
            }
            Some((_, '[')) => {
                let start = i + 2;
                let Some(rel) = s[start..].find(']') else {
                    return Err((here, "missing ']' after '%['".into()));
                };
                let inner = &s[start..start + rel];
                let (expr, _) = parse_sample(inner, files).map_err(|m| (here + 2, m))?;
                if !lit.is_empty() {
                    segs.push(Segment::Lit(std::mem::take(&mut lit)));
                }
                segs.push(Segment::Sample(expr));
                let consumed = inner.chars().count() + 2;
                for _ in 0..consumed {
                    chars.next();
                }
                char_pos += consumed;
            }
            _ => {
                return Err((
                    here,
                    "'%' starts a sample like %[src] or %[hdr(host)]; write %% for a literal '%'"
                        .into(),
                ));
            }
        }
    }
    if !lit.is_empty() {
        segs.push(Segment::Lit(lit));
    }
    Ok(LogFormat(segs))
}

#[cfg(test)]
mod tests {
    use super::super::fetch::Fetch;
    use super::*;
    use crate::rules::acl::NoFiles;

    fn parse_logformat(s: &str) -> Result<LogFormat, (usize, String)> {
        super::parse_logformat(s, &NoFiles)
    }

    #[test]
    fn parse_logformat_mixes_text_and_samples() {
        let f = parse_logformat("ip=%[src] host=%[hdr(host),lower] 100%%").unwrap();
        assert_eq!(f.0.len(), 5);
        assert_eq!(f.0[0], Segment::Lit("ip=".into()));
        let Segment::Sample(e) = &f.0[1] else {
            panic!()
        };
        assert_eq!(e.fetch, Fetch::Src);
        assert_eq!(f.0[4], Segment::Lit(" 100%".into()));
        assert_eq!(
            parse_logformat("plain").unwrap().as_literal(),
            Some("plain")
        );
    }

    #[test]
    fn parse_logformat_errors_have_offsets() {
        assert_eq!(parse_logformat("ab%[src").unwrap_err().0, 2);
        assert_eq!(parse_logformat("x %ci").unwrap_err().0, 2);
        let (off, msg) = parse_logformat("a%[nope]").unwrap_err();
        assert_eq!(off, 3);
        assert!(msg.contains("unknown fetch"));
    }
}
