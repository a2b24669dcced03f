//! The payload fetches of mode tcp (`req.len`, `req.ssl_hello_type`, `req.ssl_sni`): what
//! the client's first bytes say before they are relayed, such as the server name of a TLS
//! ClientHello, read without terminating TLS.

use std::cell::Cell;

/// The bytes a client has sent so far, while content rules inspect them.
pub struct Payload<'a> {
    pub bytes: &'a [u8],
    /// No more bytes will come before the decision: the inspect delay is over, the
    /// buffer is full or the client has finished sending.
    pub last: bool,
    /// Set by a fetch whose answer may change once more bytes arrive: a rule it made
    /// false waits for them (HAProxy's "may change").
    pub short: Cell<bool>,
}

impl<'a> Payload<'a> {
    pub fn new(bytes: &'a [u8], last: bool) -> Self {
        Self {
            bytes,
            last,
            short: Cell::new(false),
        }
    }

    /// `req.len`: the bytes buffered, an answer that changes until the last byte.
    pub fn req_len(&self) -> i64 {
        if !self.last {
            self.short.set(true);
        }
        self.bytes.len() as i64
    }

    /// `req.ssl_hello_type`: the handshake message type of the TLS record the payload
    /// starts with (1 for a ClientHello).
    pub fn hello_type(&self) -> Option<i64> {
        match self.hello() {
            Hello::Message { kind, .. } => Some(i64::from(kind)),
            Hello::Short => {
                self.short.set(true);
                None
            }
            Hello::NotTls => None,
        }
    }

    /// `req.ssl_sni`: the server name of the ClientHello the payload starts with.
    pub fn sni(&self) -> Option<&'a [u8]> {
        match self.hello() {
            Hello::Message { kind: 1, body } => server_name(body),
            Hello::Short => {
                self.short.set(true);
                None
            }
            _ => None,
        }
    }

    fn hello(&self) -> Hello<'a> {
        let h = hello(self.bytes);
        if matches!(h, Hello::Short) && self.last {
            return Hello::NotTls;
        }
        h
    }
}

/// What the first bytes of a connection are, as TLS.
#[derive(Debug, PartialEq, Eq)]
enum Hello<'a> {
    /// Not a TLS handshake record.
    NotTls,
    /// The start of one, not yet whole.
    Short,
    /// A whole handshake record: its first message's type and body (cut to the record).
    Message { kind: u8, body: &'a [u8] },
}

/// The largest TLS record: 2^14 bytes of plaintext and 2,048 of expansion.
const MAX_RECORD: usize = (1 << 14) + 2048;

fn hello(b: &[u8]) -> Hello<'_> {
    // A handshake record (22) of TLS 1.x (major version 3).
    if b.first().is_some_and(|&t| t != 22) || b.get(1).is_some_and(|&v| v != 3) {
        return Hello::NotTls;
    }
    if b.len() < 5 {
        return Hello::Short;
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if !(4..=MAX_RECORD).contains(&len) {
        return Hello::NotTls;
    }
    let Some(record) = b.get(5..5 + len) else {
        return Hello::Short;
    };
    let msg_len =
        (usize::from(record[1]) << 16) | (usize::from(record[2]) << 8) | usize::from(record[3]);
    let body = &record[4..];
    Hello::Message {
        kind: record[0],
        body: &body[..msg_len.min(body.len())],
    }
}

/// Reads big-endian lengths and slices, failing on a short read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The host name in a ClientHello body's `server_name` extension (RFC 6066).
fn server_name(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 && !name.is_empty() {
                return Some(name);
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record as rustls sends it, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::io::Write;
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        let _ = out.flush();
        out
    }

    #[test]
    fn sni_and_hello_type_of_a_real_client_hello() {
        let b = client_hello("db.example.com");
        let p = Payload::new(&b, false);
        assert_eq!(p.sni(), Some(&b"db.example.com"[..]));
        assert_eq!(p.hello_type(), Some(1));
        assert!(!p.short.get());
    }

    #[test]
    fn every_prefix_of_a_hello_asks_for_more_until_the_last_byte() {
        let b = client_hello("a.example");
        for n in 0..b.len() {
            let p = Payload::new(&b[..n], false);
            assert_eq!(p.sni(), None, "{n}");
            assert!(p.short.get(), "prefix of {n} bytes should ask for more");
            // Once nothing more comes, it is no hello at all.
            let p = Payload::new(&b[..n], true);
            assert_eq!(p.sni(), None);
            assert!(!p.short.get());
        }
    }

    #[test]
    fn other_bytes_are_not_tls_at_once() {
        for b in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x02",
            b"\x17\x03\x03\x00\x10",
        ] {
            let p = Payload::new(b, false);
            assert_eq!(p.sni(), None);
            assert_eq!(p.hello_type(), None);
            assert!(!p.short.get(), "{b:?}");
        }
        let p = Payload::new(b"abc", false);
        assert_eq!(p.req_len(), 3);
        assert!(p.short.get());
        let p = Payload::new(b"abc", true);
        assert_eq!(p.req_len(), 3);
        assert!(!p.short.get());
    }

    #[test]
    fn garbage_inside_a_record_is_no_name_and_no_panic() {
        let mut b = client_hello("x.example");
        for i in 5..b.len() {
            let saved = b[i];
            for v in [0u8, 0xff] {
                b[i] = v;
                let _ = Payload::new(&b, false).sni();
            }
            b[i] = saved;
        }
        // A record that claims less than a handshake header.
        assert_eq!(hello(b"\x16\x03\x01\x00\x02\x01\x00"), Hello::NotTls);
    }
}
