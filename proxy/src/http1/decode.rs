//! Incremental body decoding: `Content-Length`, chunked (with trailers) and read-to-close.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::Framing;

/// What the decoder produced from the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    Done,
    /// More input is needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid chunked encoding")]
    Chunk,
    #[error("invalid trailers")]
    Trailers,
    #[error("body larger than allowed")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the chunk-size line.
    Size,
    /// Reading chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Reading trailer fields after the last chunk.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// Decodes one body from a connection's read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Body bytes seen so far.
    pub seen: u64,
    /// Largest body allowed.
    limit: u64,
}

const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

impl Decoder {
    pub fn new(framing: Framing, limit: Option<u64>) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        Self {
            state,
            seen: 0,
            limit: limit.unwrap_or(u64::MAX),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends when the connection closes.
    pub fn is_close_delimited(&self) -> bool {
        self.state == State::Close
    }

    /// Bytes still expected for a `Content-Length` body.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    fn count(&mut self, n: usize) -> Result<(), DecodeError> {
        self.seen += n as u64;
        if self.seen > self.limit {
            Err(DecodeError::TooLarge)
        } else {
            Ok(())
        }
    }

    /// The connection reached end of file. Completes a read-to-close body; for any other
    /// unfinished body it returns false (the body was cut short).
    pub fn on_eof(&mut self) -> bool {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                true
            }
            _ => false,
        }
    }

    /// Takes what it can from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Length(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = (buf.len() as u64).min(n) as usize;
                    self.count(take)?;
                    let data = buf.split_to(take).freeze();
                    self.state = if n == take as u64 {
                        State::Done
                    } else {
                        State::Length(n - take as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = buf.len();
                    self.count(n)?;
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::Chunked(Chunk::Size) => {
                    let Some(nl) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(DecodeError::Chunk);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    // Lines end with CRLF: a bare LF is where parsers disagree.
                    let size = buf[..nl]
                        .strip_suffix(b"\r")
                        .and_then(chunk_size)
                        .ok_or(DecodeError::Chunk)?;
                    buf.advance(nl + 1);
                    self.state = if size == 0 {
                        State::Chunked(Chunk::Trailers)
                    } else {
                        State::Chunked(Chunk::Data(size))
                    };
                }
                State::Chunked(Chunk::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = (buf.len() as u64).min(n) as usize;
                    self.count(take)?;
                    let data = buf.split_to(take).freeze();
                    self.state = if n == take as u64 {
                        State::Chunked(Chunk::DataEnd)
                    } else {
                        State::Chunked(Chunk::Data(n - take as u64))
                    };
                    return Ok(Decoded::Data(data));
                }
                State::Chunked(Chunk::DataEnd) => {
                    match buf.as_ref() {
                        [] | [b'\r'] => return Ok(Decoded::NeedMore),
                        [b'\r', b'\n', ..] => buf.advance(2),
                        _ => return Err(DecodeError::Chunk),
                    }
                    self.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers) => {
                    let out = trailers(buf)?;
                    if !matches!(out, Decoded::NeedMore) {
                        self.state = State::Done;
                    }
                    return Ok(out);
                }
            }
        }
    }
}

/// The trailer section after the last chunk, ended by an empty line: `Done` when it is
/// empty, the fields otherwise, `NeedMore` until it is whole.
fn trailers(buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
    match buf.as_ref() {
        [] | [b'\r'] => return Ok(Decoded::NeedMore),
        [b'\r', b'\n', ..] => {
            buf.advance(2);
            return Ok(Decoded::Done);
        }
        [b'\r', ..] | [b'\n', ..] => return Err(DecodeError::Trailers),
        _ => {}
    }
    let end = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    let Some(end) = end else {
        if buf.len() > MAX_TRAILERS {
            return Err(DecodeError::Trailers);
        }
        return Ok(Decoded::NeedMore);
    };
    let block = buf.split_to(end).freeze();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let parsed = match httparse::parse_headers(&block, &mut headers) {
        Ok(httparse::Status::Complete((_, h))) => h,
        _ => return Err(DecodeError::Trailers),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name =
            http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| DecodeError::Trailers)?;
        let value = http::HeaderValue::from_bytes(h.value).map_err(|_| DecodeError::Trailers)?;
        map.append(name, value);
    }
    Ok(Decoded::Trailers(map))
}

/// The size of a chunk from its line without CRLF: `chunk-size [ chunk-ext ]`, exactly as
/// RFC 9112 section 7.1 writes it: `1*HEXDIG`, then `*( BWS ";" BWS chunk-ext-name
/// [ BWS "=" BWS chunk-ext-val ] )` with tokens or quoted strings. Anything else (a space
/// before the size, a `0x`, trailing garbage) is refused: where a front and a back end
/// read a chunk line differently, requests can be smuggled.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let size = line[..digits].iter().fold(0u64, |n, d| {
        n * 16 + u64::from(char::from(*d).to_digit(16).unwrap_or(0))
    });
    let mut rest = &line[digits..];
    while !rest.is_empty() {
        rest = ows(rest).strip_prefix(b";")?;
        rest = ows(rest);
        let name = token_len(rest);
        if name == 0 {
            return None;
        }
        rest = &rest[name..];
        if let Some(v) = ows(rest).strip_prefix(b"=") {
            let v = ows(v);
            let n = if v.first() == Some(&b'"') {
                quoted_len(v)?
            } else {
                token_len(v)
            };
            if n == 0 {
                return None;
            }
            rest = &v[n..];
        }
    }
    Some(size)
}

fn ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

/// The length of the token at the start of `s` (RFC 9110 section 5.6.2).
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        .count()
}

/// The length of the quoted string at the start of `s`, quotes included (RFC 9110
/// section 5.6.4).
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let c = *s.get(i + 1)?;
                if !(c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80.. => i += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(
        framing: Framing,
        input: &[&[u8]],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), DecodeError> {
        let mut d = Decoder::new(framing, None);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut trailers = None;
        for part in input {
            buf.extend_from_slice(part);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::Done | Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, trailers, d.is_done()))
    }

    #[test]
    fn chunked_across_split_reads_with_extensions_and_trailers() {
        let parts: &[&[u8]] = &[
            b"5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r",
            b"\n0\r\nX-Sum: 9\r\n",
            b"\r\n",
        ];
        let (body, trailers, done) = all(Framing::Chunked, parts).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "9");
        assert!(done);
    }

    #[test]
    fn chunk_lines_follow_the_grammar_exactly() {
        for ok in [
            "5\r\nhello\r\n0\r\n\r\n",
            "5;a\r\nhello\r\n0\r\n\r\n",
            "5 ; a = b ;c=\"q \\\" ;\"\r\nhello\r\n0\r\n\r\n",
            "00005\r\nhello\r\n0\r\n\r\n",
            "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        ] {
            assert_eq!(
                all(Framing::Chunked, &[ok.as_bytes()]).map(|r| r.0),
                Ok(b"hello".to_vec()),
                "{ok:?}"
            );
        }
        for bad in [
            " 5\r\nhello\r\n0\r\n\r\n",
            "5 \r\nhello\r\n0\r\n\r\n",
            "\t5\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "+5\r\nhello\r\n0\r\n\r\n",
            "5;\r\nhello\r\n0\r\n\r\n",
            "5;a=\r\nhello\r\n0\r\n\r\n",
            "5;a=\"open\r\nhello\r\n0\r\n\r\n",
            "5;a b\r\nhello\r\n0\r\n\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5\r\nhelloXY0\r\n\r\n",
            "5\r\nhello\r\n0\r\n\n",
            "1000000000000000\r\n",
        ] {
            assert!(all(Framing::Chunked, &[bad.as_bytes()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunked_byte_by_byte() {
        let msg = b"3\r\nabc\r\n0\r\n\r\n";
        let parts: Vec<&[u8]> = msg.chunks(1).collect();
        let (body, trailers, done) = all(Framing::Chunked, &parts).unwrap();
        assert_eq!(body, b"abc");
        assert!(trailers.is_none());
        assert!(done);
    }

    #[test]
    fn chunked_rejects_garbage() {
        assert_eq!(
            all(Framing::Chunked, &[b"zz\r\n"]).unwrap_err(),
            DecodeError::Chunk
        );
        assert_eq!(
            all(Framing::Chunked, &[b"3\r\nabcX"]).unwrap_err(),
            DecodeError::Chunk
        );
        assert_eq!(
            all(Framing::Chunked, &[b"fffffffffffffffff\r\n"]).unwrap_err(),
            DecodeError::Chunk
        );
    }

    #[test]
    fn length_stops_at_boundary_and_limit_applies() {
        let mut d = Decoder::new(Framing::Length(3), None);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"def");
        let mut d = Decoder::new(Framing::Chunked, Some(4));
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err(), DecodeError::TooLarge);
    }

    #[test]
    fn close_delimited_ends_at_eof() {
        let mut d = Decoder::new(Framing::Close, None);
        let mut buf = BytesMut::from(&b"xy"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"xy"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::NeedMore);
        assert!(d.on_eof());
        let mut d = Decoder::new(Framing::Length(5), None);
        assert!(!d.on_eof());
    }
}
