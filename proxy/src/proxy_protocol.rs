//! The PROXY protocol, versions 1 (text) and 2 (binary): reading the header a load
//! balancer in front puts at the start of a connection, and writing one at the start of a
//! connection to a server.
//!
//! A header tells the addresses of the connection the sender accepted. Version 2 can add
//! type-length-value fields: the ALPN protocol and the authority (the TLS server name)
//! that the client asked for, a unique id, and a CRC-32C of the header.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The first 12 bytes of a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest version 2 header this side takes: HAProxy's buffer size.
pub const V2_MAX: usize = 16 * 1024;

const TLV_ALPN: u8 = 0x01;
const TLV_AUTHORITY: u8 = 0x02;
const TLV_CRC32C: u8 = 0x03;
const TLV_UNIQUE_ID: u8 = 0x05;

/// What a header said about the client's connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address and the address it connected to; `None` for a `LOCAL`
    /// (version 2) or `UNKNOWN` (version 1) header, or an address family other than IP:
    /// the connection's own addresses stand then.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Version 2 fields.
    pub alpn: Option<Box<[u8]>>,
    pub authority: Option<Box<str>>,
    pub unique_id: Option<Box<[u8]>>,
    /// Every TLV but the checksum, in order (`fc_pp_tlv`).
    pub tlvs: Vec<(u8, Box<[u8]>)>,
}

impl Proxied {
    /// The value of the first TLV of type `t`.
    pub fn tlv(&self, t: u8) -> Option<&[u8]> {
        self.tlvs.iter().find(|(k, _)| *k == t).map(|(_, v)| &**v)
    }
}

/// The outcome of parsing the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of this many bytes.
    Done(usize, Proxied),
    /// A header's beginning: more bytes are needed (at least this many in all).
    Partial(usize),
    /// Not a header, or a malformed one.
    Invalid(String),
}

/// Whether `buf`, the first bytes of a connection, begin with a PROXY header's
/// signature (`PROXY ` or the 12 bytes of version 2). Fewer bytes than a signature say
/// nothing: `PRO` may be a WebDAV `PROPFIND`.
pub fn looks_like_header(buf: &[u8]) -> bool {
    buf.starts_with(V1_PREFIX) || buf.starts_with(&V2_SIGNATURE)
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial(V1_PREFIX.len());
    }
    let v2 = buf.len().min(V2_SIGNATURE.len());
    if buf[..v2] == V2_SIGNATURE[..v2] {
        return parse_v2(buf);
    }
    let v1 = buf.len().min(V1_PREFIX.len());
    if buf[..v1] == V1_PREFIX[..v1] {
        return parse_v1(buf);
    }
    Parsed::Invalid("not a PROXY protocol header".into())
}

fn bad(what: impl Into<String>) -> Parsed {
    Parsed::Invalid(what.into())
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= V1_MAX {
            return bad("PROXY v1 header longer than 107 bytes");
        }
        if window.contains(&b'\n') {
            return bad("PROXY v1 header without CRLF");
        }
        return Parsed::Partial(window.len() + 1);
    };
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return bad("PROXY v1 header is not text");
    };
    let len = end + 2;
    let mut f = line.split(' ');
    let proto = f.next().unwrap_or_default();
    if proto == "UNKNOWN" {
        return Parsed::Done(len, Proxied::default());
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return bad(format!("PROXY v1: unknown protocol {proto:?}")),
    };
    let fields: Vec<&str> = f.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return bad("PROXY v1: expected source, destination and two ports");
    };
    let ip = |s: &str| -> Option<IpAddr> {
        if v6 {
            s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
    };
    // Decimal, no sign, no leading zero (the specification's form).
    let port = |s: &str| -> Option<u16> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits && (s == "0" || !s.starts_with('0')))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(s), Some(d), Some(sp), Some(dp)) => Parsed::Done(
            len,
            Proxied {
                addrs: Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp))),
                ..Proxied::default()
            },
        ),
        (None, ..) | (_, None, ..) => bad(format!("PROXY v1: bad {proto} address")),
        _ => bad("PROXY v1: bad port"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Partial(16);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return bad(format!("PROXY v2: unsupported version {}", ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return bad(format!("PROXY v2: unknown command {c}")),
    };
    let fam = buf[13];
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return bad(format!("PROXY v2 header of {len} bytes (at most {V2_MAX})"));
    }
    if buf.len() < len {
        return Parsed::Partial(len);
    }
    let body = &buf[16..len];
    let addr_len = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        f => return bad(format!("PROXY v2: unknown address family {f}")),
    };
    if fam & 0x0f > 2 {
        return bad(format!("PROXY v2: unknown transport {}", fam & 0x0f));
    }
    if body.len() < addr_len {
        return bad("PROXY v2: address block shorter than its family needs");
    }
    let mut out = Proxied::default();
    // Addresses count for a PROXY command over TCP (STREAM); LOCAL, UNSPEC and UNIX
    // leave the connection's own.
    if !local && fam & 0x0f == 1 {
        let a = &body[..addr_len];
        out.addrs = match fam >> 4 {
            1 => {
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some((
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                ))
            }
            2 => {
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                Some((
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                ))
            }
            _ => None,
        };
    }
    let mut tlvs = &body[addr_len..];
    let mut at = 16 + addr_len;
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return bad("PROXY v2: truncated TLV");
        }
        let kind = tlvs[0];
        let n = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() < 3 + n {
            return bad("PROXY v2: TLV longer than the header");
        }
        let value = &tlvs[3..3 + n];
        match kind {
            TLV_ALPN => out.alpn = Some(value.into()),
            TLV_AUTHORITY => match std::str::from_utf8(value) {
                Ok(s) => out.authority = Some(s.into()),
                Err(_) => return bad("PROXY v2: authority is not UTF-8"),
            },
            TLV_CRC32C => {
                if n != 4 {
                    return bad("PROXY v2: CRC32C TLV of the wrong size");
                }
                let want = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                let mut c = Crc32c::new();
                c.update(&buf[..at + 3]);
                c.update(&[0; 4]);
                c.update(&buf[at + 7..len]);
                if c.finish() != want {
                    return bad("PROXY v2: CRC32C mismatch");
                }
            }
            TLV_UNIQUE_ID => {
                if n > 128 {
                    return bad("PROXY v2: unique id longer than 128 bytes");
                }
                out.unique_id = Some(value.into());
            }
            // NOOP, SSL, NETNS and custom types: kept for `fc_pp_tlv`.
            _ => {}
        }
        if kind != TLV_CRC32C && kind != 0x04 {
            out.tlvs.push((kind, value.into()));
        }
        tlvs = &tlvs[3 + n..];
        at += 3 + n;
    }
    Parsed::Done(len, out)
}

/// Why a connection's header was refused.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not a valid header (or a header came from an untrusted source).
    Invalid(String),
    /// The connection ended or failed before a whole header.
    Closed,
    /// No whole header within the time allowed.
    Timeout,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Invalid(m) => f.write_str(m),
            ReadError::Closed => f.write_str("connection closed before the PROXY header ended"),
            ReadError::Timeout => f.write_str("no PROXY header in time"),
        }
    }
}

/// Reads the header at the start of `tcp`, taking exactly its bytes from the socket: the
/// bytes after it (a TLS hello, a request) stay for whoever reads next.
///
/// It peeks to find where the header ends; bytes seen that cannot hold the whole header
/// are all header bytes, so they are taken and the next peek waits for more.
pub async fn read_header(tcp: &mut TcpStream, within: Duration) -> Result<Proxied, ReadError> {
    let work = async {
        // Bytes taken from the socket, then the ones only peeked at after them.
        let mut seen: Vec<u8> = Vec::new();
        let mut peek = vec![0u8; 256];
        loop {
            let n = tcp.peek(&mut peek).await.map_err(|_| ReadError::Closed)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            let taken = seen.len();
            seen.extend_from_slice(&peek[..n]);
            let take = match parse(&seen) {
                Parsed::Done(len, p) => Ok((len - taken, p)),
                Parsed::Invalid(m) => return Err(ReadError::Invalid(m)),
                Parsed::Partial(need) => Err(need),
            };
            let n = take.as_ref().map_or(n, |(rest, _)| *rest);
            tcp.read_exact(&mut peek[..n])
                .await
                .map_err(|_| ReadError::Closed)?;
            match take {
                Ok((_, p)) => return Ok(p),
                Err(need) => {
                    let left = need.saturating_sub(seen.len()).max(1);
                    if peek.len() < left {
                        peek.resize(left.min(V2_MAX), 0);
                    }
                }
            }
        }
    };
    tokio::time::timeout(within, work)
        .await
        .unwrap_or(Err(ReadError::Timeout))
}

/// Reads the header at the start of `tcp` into `buf`, with whatever follows it in the
/// same reads left in `buf` for the next reader: one read where the header and the
/// request arrive together. For connections whose next reader takes such bytes (the
/// HTTP/1.1 server's read buffer); [`read_header`] takes exactly the header instead.
pub async fn read_header_into(
    tcp: &mut TcpStream,
    within: Duration,
    buf: &mut bytes::BytesMut,
) -> Result<Proxied, ReadError> {
    let work = async {
        loop {
            match crate::io::read_buf(tcp, buf).await {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {}
            }
            match parse(buf) {
                Parsed::Done(len, p) => {
                    bytes::Buf::advance(buf, len);
                    return Ok(p);
                }
                Parsed::Invalid(m) => return Err(ReadError::Invalid(m)),
                // The header is bounded (`V2_MAX`); the read makes room as it goes.
                Parsed::Partial(_) => {}
            }
        }
    };
    tokio::time::timeout(within, work)
        .await
        .unwrap_or(Err(ReadError::Timeout))
}

/// Which header a server is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2 {
        /// Add the client's server name as the authority TLV.
        authority: bool,
        /// Add a CRC-32C of the header.
        crc32c: bool,
    },
}

/// What a header sent to a server describes: the client's connection, or nothing (a
/// health check: `UNKNOWN` / `LOCAL`).
#[derive(Debug, Default)]
pub struct Source<'a> {
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    pub alpn: Option<&'a [u8]>,
    pub authority: Option<&'a str>,
}

/// Writes the header for `src` in `version` to `out`.
pub fn encode(version: Version, src: &Source<'_>, out: &mut Vec<u8>) {
    match version {
        Version::V1 => encode_v1(src.addrs, out),
        Version::V2 { authority, crc32c } => {
            let start = out.len();
            out.extend_from_slice(&V2_SIGNATURE);
            match src.addrs {
                None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
                Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                    out.extend_from_slice(&[0x21, 0x11, 0, 0]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                // IPv6, or mixed families with the IPv4 address mapped.
                Some((s, d)) => {
                    out.extend_from_slice(&[0x21, 0x21, 0, 0]);
                    out.extend_from_slice(&v6_octets(s.ip()));
                    out.extend_from_slice(&v6_octets(d.ip()));
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
            }
            let tlv = |out: &mut Vec<u8>, kind: u8, v: &[u8]| {
                // Names and protocols are short; a longer value is cut, not refused.
                let n = v.len().min(1024);
                out.push(kind);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                out.extend_from_slice(&v[..n]);
            };
            if src.addrs.is_some() {
                if let Some(a) = src.alpn {
                    tlv(out, TLV_ALPN, a);
                }
                if authority && let Some(a) = src.authority {
                    tlv(out, TLV_AUTHORITY, a.as_bytes());
                }
            }
            let crc_at = crc32c.then(|| {
                tlv(out, TLV_CRC32C, &[0; 4]);
                out.len() - 4
            });
            let len = (out.len() - start - 16) as u16;
            out[start + 14..start + 16].copy_from_slice(&len.to_be_bytes());
            if let Some(at) = crc_at {
                let mut c = Crc32c::new();
                c.update(&out[start..]);
                out[at..at + 4].copy_from_slice(&c.finish().to_be_bytes());
            }
        }
    }
}

fn v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v => v,
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn encode_v1(addrs: Option<(SocketAddr, SocketAddr)>, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(64);
    match addrs {
        None => s.push_str("PROXY UNKNOWN\r\n"),
        Some((src, dst)) => {
            let (src_ip, dst_ip, fam) = match (src.ip(), dst.ip()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => (IpAddr::V4(a), IpAddr::V4(b), "TCP4"),
                (a, b) => (v6(a), v6(b), "TCP6"),
            };
            let _ = write!(
                s,
                "PROXY {fam} {src_ip} {dst_ip} {} {}\r\n",
                src.port(),
                dst.port()
            );
        }
    }
    out.extend_from_slice(s.as_bytes());
}

/// CRC-32C (Castagnoli), as version 2's checksum TLV has it.
struct Crc32c(u32);

const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32c {
    fn new() -> Self {
        Self(!0)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = CRC32C_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }
    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (usize, Proxied) {
        match parse(buf) {
            Parsed::Done(n, p) => (n, p),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn invalid(buf: &[u8]) -> String {
        match parse(buf) {
            Parsed::Invalid(m) => m,
            other => panic!("{:?} parsed: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn crc32c_check_value() {
        let mut c = Crc32c::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let (n, p) = done(line);
        assert_eq!(n, 45);
        assert_eq!(
            p.addrs,
            Some((sa("192.0.2.1:56324"), sa("198.51.100.2:443")))
        );
        let (_, p) = done(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
        assert_eq!(
            p.addrs,
            Some((sa("[2001:db8::1]:1"), sa("[2001:db8::2]:65535")))
        );
        let (n, p) = done(b"PROXY UNKNOWN ffff::1 whatever\r\n");
        assert_eq!((n, p.addrs), (32, None));
        assert_eq!(done(b"PROXY UNKNOWN\r\n").0, 15);
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 65536\r\n",
            b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            invalid(bad);
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(invalid(&long).contains("107"));
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let mut v2 = Vec::new();
        encode(
            Version::V2 {
                authority: true,
                crc32c: true,
            },
            &Source {
                addrs: Some((sa("[2001:db8::7]:5000"), sa("[2001:db8::1]:443"))),
                alpn: Some(b"h2"),
                authority: Some("example.com"),
            },
            &mut v2,
        );
        for h in [&b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"[..], &v2] {
            for cut in 0..h.len() {
                match parse(&h[..cut]) {
                    Parsed::Partial(need) => {
                        assert!(need > cut && need <= h.len(), "{cut}: {need}")
                    }
                    other => panic!("prefix of {cut} bytes: {other:?}"),
                }
            }
            assert_eq!(done(h).0, h.len());
        }
    }

    #[test]
    fn v2_round_trips_with_tlvs() {
        for (s, d) in [
            (sa("192.0.2.1:56324"), sa("198.51.100.2:443")),
            (sa("[2001:db8::7]:5000"), sa("[2001:db8::1]:443")),
        ] {
            let mut b = Vec::new();
            let src = Source {
                addrs: Some((s, d)),
                alpn: Some(b"http/1.1"),
                authority: Some("www.example.com"),
            };
            encode(
                Version::V2 {
                    authority: true,
                    crc32c: true,
                },
                &src,
                &mut b,
            );
            b.extend_from_slice(b"GET /");
            let (n, p) = done(&b);
            assert_eq!(n, b.len() - 5);
            assert_eq!(p.addrs, Some((s, d)));
            assert_eq!(p.alpn.as_deref(), Some(&b"http/1.1"[..]));
            assert_eq!(p.authority.as_deref(), Some("www.example.com"));
            // A flipped bit anywhere after the signature fails the checksum (or the
            // framing).
            for i in 16..n {
                let mut c = b.clone();
                c[i] ^= 0x01;
                assert!(
                    !matches!(parse(&c), Parsed::Done(_, ref q) if *q == p),
                    "byte {i}"
                );
            }
        }
        // Mixed families go out as IPv6.
        let mut b = Vec::new();
        encode(
            Version::V2 {
                authority: false,
                crc32c: false,
            },
            &Source {
                addrs: Some((sa("192.0.2.1:1"), sa("[2001:db8::1]:2"))),
                ..Source::default()
            },
            &mut b,
        );
        assert_eq!(
            done(&b).1.addrs,
            Some((sa("[::ffff:192.0.2.1]:1"), sa("[2001:db8::1]:2")))
        );
    }

    #[test]
    fn v2_local_and_unknown_keep_the_connection_addresses() {
        let mut b = Vec::new();
        encode(
            Version::V2 {
                authority: true,
                crc32c: false,
            },
            &Source::default(),
            &mut b,
        );
        assert_eq!(b.len(), 16);
        assert_eq!(done(&b), (16, Proxied::default()));
        let mut b = Vec::new();
        encode(Version::V1, &Source::default(), &mut b);
        assert_eq!(b, b"PROXY UNKNOWN\r\n");
        // A PROXY command over UDP or UNIX: taken, addresses not used.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x12, 0, 12]);
        h.extend_from_slice(&[0; 12]);
        assert_eq!(done(&h).1.addrs, None);
    }

    #[test]
    fn v2_refusals() {
        let head = |ver: u8, fam: u8, len: u16| {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[ver, fam]);
            h.extend_from_slice(&len.to_be_bytes());
            h
        };
        invalid(&head(0x11, 0x11, 0));
        invalid(&head(0x22, 0x11, 0));
        invalid(&head(0x21, 0x51, 0));
        let mut h = head(0x21, 0x13, 12);
        h.extend_from_slice(&[0; 12]);
        invalid(&h);
        // Address block too short for IPv4.
        let mut h = head(0x21, 0x11, 4);
        h.extend_from_slice(&[0; 4]);
        invalid(&h);
        // A TLV running past the end.
        let mut h = head(0x21, 0x11, 16);
        h.extend_from_slice(&[0; 12]);
        h.extend_from_slice(&[TLV_ALPN, 0, 9, b'h']);
        invalid(&h);
        // Too large.
        assert!(invalid(&head(0x21, 0x11, u16::MAX)).contains("at most"));
    }

    #[test]
    fn recognises_the_beginning_of_a_header() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(b"PROXY "));
        assert!(looks_like_header(&V2_SIGNATURE));
        assert!(!looks_like_header(b"PRO"));
        assert!(!looks_like_header(b"PROPFIND / HTTP/1.1"));
        assert!(!looks_like_header(b"\r\n\r\n\0"));
        assert!(!looks_like_header(b"GET / HTTP/1.1"));
        assert!(!looks_like_header(b"\r\n\r\nGET"));
        assert!(!looks_like_header(b"\x16\x03\x01"));
        assert!(!looks_like_header(b""));
    }
}
