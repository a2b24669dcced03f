//! The string converters of sample expressions, as HAProxy has them: `field`, `word`,
//! `bytes`, `hex`, `base64`, `url_dec`, `regsub`, `json`.

use rampart_config::rules::JsonInput;

/// Fields (`words`: false) or words (true) of `s` split at any byte of `delims`, from the
/// `index`th (1-based; negative counts from the end, and `count` then goes towards the
/// start), `count` of them (0: all the way), with the delimiters between them as they
/// were. Out of range: empty.
pub fn fields(s: &[u8], index: i64, delims: &[u8], count: u64, words: bool) -> Vec<u8> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, b) in s.iter().enumerate() {
        if delims.contains(b) {
            if !words || i > start {
                spans.push((start, i));
            }
            start = i + 1;
        }
    }
    if !words || s.len() > start {
        spans.push((start, s.len()));
    }
    let n = spans.len() as i64;
    let more = i64::try_from(count).unwrap_or(i64::MAX).saturating_sub(1);
    let (first, last) = if index > 0 {
        let first = index - 1;
        let last = if count == 0 {
            n - 1
        } else {
            first.saturating_add(more).min(n - 1)
        };
        (first, last)
    } else {
        let last = n + index;
        let first = if count == 0 {
            0
        } else {
            last.saturating_sub(more).max(0)
        };
        (first, last)
    };
    if first < 0 || last < 0 || first >= n || last < first {
        return Vec::new();
    }
    s[spans[first as usize].0..spans[last as usize].1].to_vec()
}

/// `length` bytes of `s` from `offset` (all the rest when `None`); empty past the end.
pub fn bytes(s: &[u8], offset: u64, length: Option<u64>) -> &[u8] {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(s.len());
    let end = match length {
        None => s.len(),
        Some(l) => start
            .saturating_add(usize::try_from(l).unwrap_or(usize::MAX))
            .min(s.len()),
    };
    &s[start..end]
}

/// Upper-case hexadecimal.
pub fn hex(s: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(s.len() * 2);
    for b in s {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    out
}

/// Standard base64 (RFC 4648, section 4) with padding.
pub fn base64(s: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len().div_ceil(3) * 4);
    for chunk in s.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// Percent-decoding; `+` becomes a space when `in_form` (a form's encoding). A `%` not
/// followed by two hexadecimal digits fails the conversion.
pub fn url_dec(s: &[u8], in_form: bool) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = digit(*s.get(i + 1)?)?;
                let lo = digit(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if in_form => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// `s` with the first match of `re` (every match when `global`) replaced by `subst`, in
/// which `\\1` to `\\9` stand for the groups (`\\0` for the whole match) and a backslash
/// before any other character keeps that character.
pub fn regsub(re: &regex::bytes::Regex, s: &[u8], subst: &[u8], global: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + subst.len());
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(m) = caps.get(0) else { continue };
        out.extend_from_slice(&s[last..m.start()]);
        let mut i = 0;
        while i < subst.len() {
            match (subst[i], subst.get(i + 1)) {
                (b'\\', Some(d)) if d.is_ascii_digit() => {
                    if let Some(g) = caps.get(usize::from(d - b'0')) {
                        out.extend_from_slice(g.as_bytes());
                    }
                    i += 2;
                }
                (b'\\', Some(c)) => {
                    out.push(*c);
                    i += 2;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        last = m.end();
        if !global {
            break;
        }
    }
    out.extend_from_slice(&s[last..]);
    out
}

/// `s` escaped for a JSON string, as HAProxy's `json` converter does: quotes, backslashes
/// and slashes escaped, control characters as `\\uXXXX`; bytes above 127 as `\\u00XX`
/// for ASCII input, or UTF-8 characters as `\\uXXXX` (surrogate pairs above U+FFFF).
/// Invalid UTF-8 fails (`Utf8`), is dropped (`Utf8Skip`) or becomes U+FFFD.
pub fn json(s: &[u8], input: JsonInput) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(s.len() + 8);
    let esc = |out: &mut Vec<u8>, u: u32| {
        let _ = write!(out, "\\u{u:04x}");
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 || c == 0x7f => esc(&mut out, u32::from(c)),
            c if c < 0x80 => out.push(c),
            c if input == JsonInput::Ascii => esc(&mut out, u32::from(c)),
            _ => {
                let len = match c {
                    0xc2..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf4 => 4,
                    _ => 0,
                };
                let ch = s
                    .get(i..i + len)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.chars().next());
                match ch {
                    Some(ch) => {
                        let mut units = [0u16; 2];
                        for u in ch.encode_utf16(&mut units) {
                            esc(&mut out, u32::from(*u));
                        }
                        i += len;
                        continue;
                    }
                    None => match input {
                        JsonInput::Utf8 => return None,
                        JsonInput::Utf8Skip => {}
                        _ => esc(&mut out, 0xfffd),
                    },
                }
            }
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str, index: i64, d: &str, count: u64) -> String {
        String::from_utf8(fields(s.as_bytes(), index, d.as_bytes(), count, false)).unwrap()
    }

    fn w(s: &str, index: i64, d: &str, count: u64) -> String {
        String::from_utf8(fields(s.as_bytes(), index, d.as_bytes(), count, true)).unwrap()
    }

    /// The examples of HAProxy's configuration manual.
    #[test]
    fn field_and_word_as_haproxy_documents_them() {
        assert_eq!(f("f1_f2_f3__f5", 2, "_", 1), "f2");
        assert_eq!(f("f1_f2_f3__f5", 2, "_", 2), "f2_f3");
        assert_eq!(f("f1_f2_f3__f5", -2, "_", 3), "f2_f3_");
        assert_eq!(f("f1_f2_f3__f5", -3, "_", 0), "f1_f2_f3");
        assert_eq!(w("f1_f2_f3__f5", 4, "_", 1), "f5");
        assert_eq!(w("f1_f2_f3__f5", 2, "_", 0), "f2_f3__f5");
        assert_eq!(w("f1_f2_f3__f5", 3, "_", 2), "f3__f5");
        assert_eq!(w("f1_f2_f3__f5", -2, "_", 3), "f1_f2_f3");
        assert_eq!(w("f1_f2_f3__f5", -3, "_", 0), "f1_f2");
        assert_eq!(w("/f1/f2/f3/f4", 1, "/", 1), "f1");
        assert_eq!(w("/f1////f2/f3/f4", 1, "/", 1), "f1");
    }

    #[test]
    fn fields_out_of_range_and_several_delimiters() {
        assert_eq!(f("a.b:c", 3, ".:", 1), "c");
        assert_eq!(f("a.b:c", 4, ".:", 1), "");
        assert_eq!(f("a.b:c", -4, ".:", 1), "");
        assert_eq!(f("", 1, ".", 1), "");
        assert_eq!(w("", 1, ".", 1), "");
        assert_eq!(w("...", 1, ".", 1), "");
        assert_eq!(f("www.example.com:8080", 1, ":", 1), "www.example.com");
        assert_eq!(f("a.b.c", 2, ".", u64::MAX), "b.c");
        assert_eq!(f("a.b.c", i64::MIN + 1, ".", 1), "");
    }

    #[test]
    fn bytes_hex_base64_url_dec() {
        assert_eq!(bytes(b"abcdef", 2, Some(3)), b"cde");
        assert_eq!(bytes(b"abcdef", 2, None), b"cdef");
        assert_eq!(bytes(b"abcdef", 4, Some(10)), b"ef");
        assert_eq!(bytes(b"abcdef", 9, Some(1)), b"");
        assert_eq!(bytes(b"abcdef", u64::MAX, Some(u64::MAX)), b"");
        assert_eq!(hex(b"\x00\x7f\xab"), b"007FAB");
        // RFC 4648's test vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o.as_bytes(), "{i}");
        }
        assert_eq!(url_dec(b"a%20b+c%2F", false).unwrap(), b"a b+c/");
        assert_eq!(url_dec(b"a%20b+c", true).unwrap(), b"a b c");
        assert_eq!(url_dec(b"%e2%82%AC", false).unwrap(), "€".as_bytes());
        assert_eq!(url_dec(b"bad%2", false), None);
        assert_eq!(url_dec(b"bad%zz", false), None);
    }

    #[test]
    fn regsub_and_json() {
        let re = regex::bytes::Regex::new("([a-z]+)-([0-9]+)").unwrap();
        assert_eq!(regsub(&re, b"a-1 b-2", b"\\2_\\1", false), b"1_a b-2");
        assert_eq!(regsub(&re, b"a-1 b-2", b"\\2_\\1", true), b"1_a 2_b");
        assert_eq!(regsub(&re, b"none", b"x", true), b"none");
        let dots = regex::bytes::Regex::new("\\.").unwrap();
        assert_eq!(regsub(&dots, b"a.b.c", b"\\\\", true), b"a\\b\\c");
        assert_eq!(
            json(b"say \"hi\"\n/\x01", JsonInput::Ascii).unwrap(),
            b"say \\\"hi\\\"\\n\\/\\u0001"
        );
        assert_eq!(
            json("é".as_bytes(), JsonInput::Ascii).unwrap(),
            b"\\u00c3\\u00a9"
        );
        assert_eq!(
            json("é😀".as_bytes(), JsonInput::Utf8).unwrap(),
            b"\\u00e9\\ud83d\\ude00"
        );
        assert_eq!(json(b"a\xffb", JsonInput::Utf8), None);
        assert_eq!(json(b"a\xffb", JsonInput::Utf8Skip).unwrap(), b"ab");
        assert_eq!(
            json(b"a\xffb", JsonInput::Utf8Replace).unwrap(),
            b"a\\ufffdb"
        );
    }
}
