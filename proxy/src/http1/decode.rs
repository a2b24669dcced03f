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
                    let line = &buf[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    // chunk-size [ chunk-ext ]
                    let size_part = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    if size_part.is_empty()
                        || size_part.len() > 15
                        || !size_part.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(DecodeError::Chunk);
                    }
                    let mut size = 0u64;
                    for d in size_part {
                        size = size * 16 + u64::from((*d as char).to_digit(16).unwrap_or(0));
                    }
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
                    if buf.len() < 2 {
                        match buf.first() {
                            Some(b'\n') => {
                                buf.advance(1);
                                self.state = State::Chunked(Chunk::Size);
                                continue;
                            }
                            None | Some(b'\r') => return Ok(Decoded::NeedMore),
                            Some(_) => return Err(DecodeError::Chunk),
                        }
                    }
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf[0] == b'\n' {
                        buf.advance(1);
                    } else {
                        return Err(DecodeError::Chunk);
                    }
                    self.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers) => {
                    // Trailer section ends with an empty line.
                    if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
                        buf.advance(if buf[0] == b'\r' { 2 } else { 1 });
                        self.state = State::Done;
                        return Ok(Decoded::Done);
                    }
                    let end = memchr::memmem::find(buf, b"\r\n\r\n")
                        .map(|i| i + 4)
                        .or_else(|| memchr::memmem::find(buf, b"\n\n").map(|i| i + 2));
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
                        let name = http::HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| DecodeError::Trailers)?;
                        let value = http::HeaderValue::from_bytes(h.value)
                            .map_err(|_| DecodeError::Trailers)?;
                        map.append(name, value);
                    }
                    self.state = State::Done;
                    return Ok(Decoded::Trailers(map));
                }
            }
        }
    }
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
