//! Pattern and map files (`-f FILE` in ACLs, `map(FILE)` converters): their lines, and
//! the checks a key or a value must pass for the match method or output type that uses
//! it. The same checks refuse a bad line at load and a bad `add map` at run time.

use std::path::PathBuf;
use std::sync::Arc;

use super::acl::{IntMatch, IpNet};
use super::fetch::{MatchMethod, SampleType};

/// A pattern or map file as the configuration loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatFile {
    /// The name as written in the configuration (what the runtime API calls it).
    pub name: String,
    /// Where it was read.
    pub path: PathBuf,
    /// Its text when it was read.
    pub text: Arc<str>,
}

/// One entry of a file: its line number (1-based), its key and its value. In a map
/// (`map`), the key is the first word and the value the rest of the line, blanks around it
/// removed (empty when the line holds a key only); in an ACL file the whole line is the
/// pattern. Blank lines and lines starting with `#` are skipped.
pub fn entries(text: &str, map: bool) -> impl Iterator<Item = (usize, &str, &str)> {
    text.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (key, value) = match line.find(|c: char| c.is_ascii_whitespace()) {
            Some(at) if map => (&line[..at], line[at..].trim()),
            _ => (line, ""),
        };
        Some((i + 1, key, value))
    })
}

/// An integer pattern on its own: `N` or a range `LO:HI` (either bound may be missing).
pub fn parse_int_pattern(s: &str) -> Result<IntMatch, String> {
    let bad = || format!("'{s}' is not a valid integer pattern.");
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    match s.split_once(':') {
        Some((lo, hi)) => Ok(IntMatch::Range(
            (!lo.is_empty()).then(|| num(lo)).transpose()?,
            (!hi.is_empty()).then(|| num(hi)).transpose()?,
        )),
        None => Ok(IntMatch::Eq(num(s)?)),
    }
}

/// Whether `key` is a pattern `method` can use; the error is HAProxy's sentence for it.
/// Returns the regular expression's size for the configuration's budget (0 otherwise).
pub fn check_key(method: MatchMethod, icase: bool, key: &str) -> Result<u64, String> {
    match method {
        MatchMethod::Ip => IpNet::parse(key)
            .map(|_| 0)
            .map_err(|_| format!("'{key}' is not a valid IPv4 or IPv6 address.")),
        MatchMethod::Int | MatchMethod::Len => parse_int_pattern(key).map(|_| 0),
        MatchMethod::Reg => super::check_regex(key, icase),
        MatchMethod::Found | MatchMethod::Bool => {
            Err("this match method takes no patterns.".to_owned())
        }
        _ => Ok(0),
    }
}

/// Whether `value` can be a map's output of type `output`.
pub fn check_value(output: SampleType, value: &str) -> Result<(), String> {
    let ok = match output {
        SampleType::Int => value.parse::<i64>().is_ok(),
        SampleType::Ip => value.parse::<std::net::IpAddr>().is_ok(),
        SampleType::Str | SampleType::Bool => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("unable to parse '{value}'."))
    }
}

/// Checks every entry of `file` for `method` (and `output` for a map, `None` for an ACL
/// file); the first bad line
/// is the error, with its number. Returns the entries counted and the regular expression
/// states they need.
pub fn check_file(
    file: &PatFile,
    method: MatchMethod,
    icase: bool,
    output: Option<SampleType>,
) -> Result<(usize, u64), String> {
    let mut n = 0;
    let mut states = 0u64;
    for (line, key, value) in entries(&file.text, output.is_some()) {
        let at = |e: String| {
            format!(
                "{} at line {line} of file '{}'",
                e.trim_end_matches('.'),
                file.name
            )
        };
        states = states.saturating_add(check_key(method, icase, key).map_err(at)?);
        if let Some(o) = output {
            check_value(o, value).map_err(at)?;
        }
        n += 1;
    }
    Ok((n, states))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_checks() {
        let text = "# hosts\nwww.example.com be_a\n\n  api.example.com   be_b  \nexample.org be_c with spaces\nonlykey\n";
        let got: Vec<_> = entries(text, true).collect();
        assert_eq!(
            got,
            vec![
                (2, "www.example.com", "be_a"),
                (4, "api.example.com", "be_b"),
                (5, "example.org", "be_c with spaces"),
                (6, "onlykey", ""),
            ]
        );
        let acl: Vec<_> = entries("a b\n", false).collect();
        assert_eq!(acl, vec![(1, "a b", "")]);
        let f = |t: &str| PatFile {
            name: "m.map".into(),
            path: "m.map".into(),
            text: t.into(),
        };
        assert_eq!(
            check_file(
                &f("10.0.0.0/8 a\nbad x\n"),
                MatchMethod::Ip,
                false,
                Some(SampleType::Str)
            )
            .unwrap_err(),
            "'bad' is not a valid IPv4 or IPv6 address at line 2 of file 'm.map'"
        );
        assert_eq!(
            check_file(
                &f("a 1\nb notint\n"),
                MatchMethod::Str,
                false,
                Some(SampleType::Int)
            )
            .unwrap_err(),
            "unable to parse 'notint' at line 2 of file 'm.map'"
        );
        assert!(
            check_file(&f("(a x\n"), MatchMethod::Reg, false, None)
                .unwrap_err()
                .ends_with("at line 1 of file 'm.map'")
        );
        assert_eq!(
            check_file(&f("a\nb\n#c\n"), MatchMethod::Str, false, None).unwrap(),
            (2, 0)
        );
        assert_eq!(
            parse_int_pattern("10:").unwrap(),
            IntMatch::Range(Some(10), None)
        );
        assert!(parse_int_pattern("x").is_err());
    }
}
