//! VRRP advertisements on the wire: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) over IPv4.
//!
//! [`encode`] builds the VRRP message (the kernel adds the IP header); [`decode`] takes a
//! whole received IPv4 datagram and checks every field RFC 5798 section 7.1 and
//! keepalived check: TTL 255, protocol 112, version, type, lengths, checksum (v3 with or
//! without the pseudo-header), v2 authentication type and interval.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The IPv4 multicast group of VRRP.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// Protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// One advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds).
    pub interval_cs: u16,
    /// v2 only: authentication type (0 none, 1 simple text, 2 AH).
    pub auth_type: u8,
    /// v2 only: 8 bytes of authentication data.
    pub auth_data: [u8; 8],
    pub addrs: Vec<Ipv4Addr>,
}

/// How the v3 checksum is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Over the VRRP message and the IPv4 pseudo-header (RFC 5798, keepalived, FRR).
    PseudoHeader,
    /// Over the VRRP message only, as VRRPv2 does (some vendors' v3).
    MessageOnly,
}

/// The RFC 1071 Internet checksum of `parts` taken as one byte string.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in *p {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&src.octets());
    h[4..8].copy_from_slice(&dst.octets());
    h[9] = PROTO;
    h[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    h
}

fn checksum_of(a: &Advert, msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr, mode: Checksum) -> u16 {
    match (a.version, mode) {
        (Version::V3, Checksum::PseudoHeader) => {
            internet_checksum(&[&pseudo_header(src, dst, msg.len()), msg])
        }
        _ => internet_checksum(&[msg]),
    }
}

/// The VRRP message for `a`, sent from `src` to `dst` (the checksum of v3 covers them).
pub fn encode(a: &Advert, src: Ipv4Addr, dst: Ipv4Addr, mode: Checksum) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 4 * a.addrs.len());
    let count = a.addrs.len().min(255) as u8;
    match a.version {
        Version::V2 => {
            let secs = (a.interval_cs / 100).clamp(1, 255) as u8;
            m.extend_from_slice(&[0x21, a.vrid, a.priority, count, a.auth_type, secs, 0, 0]);
        }
        Version::V3 => {
            let cs = a.interval_cs.min(0x0fff);
            m.extend_from_slice(&[0x31, a.vrid, a.priority, count]);
            m.extend_from_slice(&cs.to_be_bytes());
            m.extend_from_slice(&[0, 0]);
        }
    }
    for ip in a.addrs.iter().take(255) {
        m.extend_from_slice(&ip.octets());
    }
    if a.version == Version::V2 {
        m.extend_from_slice(&a.auth_data);
    }
    let c = checksum_of(a, &m, src, dst, mode);
    m[6..8].copy_from_slice(&c.to_be_bytes());
    m
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated packet ({0} bytes)")]
    Truncated(usize),
    #[error("not IPv4")]
    NotIpv4,
    #[error("IP total length {ip} does not match the {got} bytes received")]
    IpLength { ip: usize, got: usize },
    #[error("IP protocol {0}, not VRRP")]
    Protocol(u8),
    #[error("TTL {0}, must be 255")]
    Ttl(u8),
    #[error("VRRP version {got}, expected {want}")]
    Version { got: u8, want: u8 },
    #[error("VRRP type {0}, expected 1 (advertisement)")]
    Type(u8),
    #[error("message length {got} for {count} addresses")]
    Length { got: usize, count: u8 },
    #[error("bad checksum")]
    Checksum,
    #[error("advertisement interval of 0")]
    ZeroInterval,
}

/// A decoded advertisement and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub advert: Advert,
}

/// Decodes one IPv4 datagram (header included, as a raw socket delivers it), expecting
/// `version`. TTL is checked only when `check_ttl` (multicast; unicast peers may be
/// routed).
pub fn decode(
    dgram: &[u8],
    version: Version,
    mode: Checksum,
    check_ttl: bool,
) -> Result<Received, DecodeError> {
    if dgram.len() < 20 {
        return Err(DecodeError::Truncated(dgram.len()));
    }
    if dgram[0] >> 4 != 4 {
        return Err(DecodeError::NotIpv4);
    }
    let ihl = usize::from(dgram[0] & 0x0f) * 4;
    if ihl < 20 || dgram.len() < ihl {
        return Err(DecodeError::Truncated(dgram.len()));
    }
    let total = usize::from(u16::from_be_bytes([dgram[2], dgram[3]]));
    if total != dgram.len() {
        return Err(DecodeError::IpLength {
            ip: total,
            got: dgram.len(),
        });
    }
    if dgram[9] != PROTO {
        return Err(DecodeError::Protocol(dgram[9]));
    }
    if check_ttl && dgram[8] != 255 {
        return Err(DecodeError::Ttl(dgram[8]));
    }
    let src = Ipv4Addr::new(dgram[12], dgram[13], dgram[14], dgram[15]);
    let dst = Ipv4Addr::new(dgram[16], dgram[17], dgram[18], dgram[19]);
    let m = &dgram[ihl..];
    if m.len() < 8 {
        return Err(DecodeError::Truncated(dgram.len()));
    }
    let (v, ty) = (m[0] >> 4, m[0] & 0x0f);
    let want = match version {
        Version::V2 => 2,
        Version::V3 => 3,
    };
    if v != want {
        return Err(DecodeError::Version { got: v, want });
    }
    if ty != 1 {
        return Err(DecodeError::Type(ty));
    }
    let count = m[3];
    let expected = 8 + 4 * usize::from(count) + if version == Version::V2 { 8 } else { 0 };
    if m.len() != expected {
        return Err(DecodeError::Length {
            got: m.len(),
            count,
        });
    }
    let mut addrs = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let o = 8 + 4 * i;
        addrs.push(Ipv4Addr::new(m[o], m[o + 1], m[o + 2], m[o + 3]));
    }
    let (interval_cs, auth_type, auth_data) = match version {
        Version::V2 => {
            let mut data = [0u8; 8];
            data.copy_from_slice(&m[m.len() - 8..]);
            (u16::from(m[5]) * 100, m[4], data)
        }
        Version::V3 => (u16::from_be_bytes([m[4], m[5]]) & 0x0fff, 0, [0u8; 8]),
    };
    let advert = Advert {
        version,
        vrid: m[1],
        priority: m[2],
        interval_cs,
        auth_type,
        auth_data,
        addrs,
    };
    // The checksum field is part of the sum: a good message sums to zero.
    let ok = match (version, mode) {
        (Version::V3, Checksum::PseudoHeader) => {
            internet_checksum(&[&pseudo_header(src, dst, m.len()), m]) == 0
        }
        _ => internet_checksum(&[m]) == 0,
    };
    if !ok {
        return Err(DecodeError::Checksum);
    }
    if interval_cs == 0 {
        return Err(DecodeError::ZeroInterval);
    }
    Ok(Received { src, dst, advert })
}

/// An IPv4 header for `payload` (for tests and for sockets that need one).
pub fn ipv4_datagram(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, PROTO, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v3() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            auth_type: 0,
            auth_data: [0; 8],
            addrs: vec![ip("10.0.0.100")],
        }
    }

    #[test]
    fn v3_layout_and_round_trip() {
        let a = v3();
        let m = encode(&a, ip("10.0.0.1"), GROUP, Checksum::PseudoHeader);
        assert_eq!(m.len(), 12);
        assert_eq!(&m[..6], &[0x31, 51, 150, 1, 0x00, 100]);
        assert_eq!(&m[8..], &[10, 0, 0, 100]);
        let d = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &m);
        assert_eq!(d.len(), 32);
        let r = decode(&d, Version::V3, Checksum::PseudoHeader, true).unwrap();
        assert_eq!(r.advert, a);
        assert_eq!(r.src, ip("10.0.0.1"));
        // Without the pseudo-header the same bytes do not check out.
        assert_eq!(
            decode(&d, Version::V3, Checksum::MessageOnly, true),
            Err(DecodeError::Checksum)
        );
        let plain = encode(&a, ip("10.0.0.1"), GROUP, Checksum::MessageOnly);
        let d = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &plain);
        assert!(decode(&d, Version::V3, Checksum::MessageOnly, true).is_ok());
    }

    #[test]
    fn v2_layout_and_round_trip() {
        let a = Advert {
            version: Version::V2,
            interval_cs: 100,
            ..v3()
        };
        let m = encode(&a, ip("10.0.0.1"), GROUP, Checksum::PseudoHeader);
        assert_eq!(m.len(), 20);
        assert_eq!(&m[..6], &[0x21, 51, 150, 1, 0, 1]);
        // The v2 checksum covers the message only.
        assert_eq!(internet_checksum(&[&m]), 0);
        let d = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &m);
        assert_eq!(d.len(), 40);
        assert_eq!(
            decode(&d, Version::V2, Checksum::PseudoHeader, true)
                .unwrap()
                .advert,
            a
        );
        // Sub-second intervals are rounded up to one second on the wire, as keepalived does.
        let fast = Advert {
            interval_cs: 10,
            ..a.clone()
        };
        assert_eq!(
            encode(&fast, ip("10.0.0.1"), GROUP, Checksum::PseudoHeader)[5],
            1
        );
    }

    #[test]
    fn ttl_is_checked_only_for_multicast() {
        // Multicast adverts must arrive with TTL 255; unicast peers may be routed.
        let m = encode(
            &Advert {
                priority: 100,
                addrs: vec![ip("10.10.0.100")],
                ..v3()
            },
            ip("10.10.0.2"),
            GROUP,
            Checksum::PseudoHeader,
        );
        let mut d = ipv4_datagram(ip("10.10.0.2"), GROUP, 255, &m);
        assert!(decode(&d, Version::V3, Checksum::PseudoHeader, true).is_ok());
        d[8] = 64;
        assert_eq!(
            decode(&d, Version::V3, Checksum::PseudoHeader, true),
            Err(DecodeError::Ttl(64))
        );
        assert!(decode(&d, Version::V3, Checksum::PseudoHeader, false).is_ok());
    }

    #[test]
    fn every_field_is_checked() {
        let m = encode(&v3(), ip("10.0.0.1"), GROUP, Checksum::PseudoHeader);
        let good = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &m);
        let check = |d: &[u8]| decode(d, Version::V3, Checksum::PseudoHeader, true);
        assert_eq!(
            decode(&good, Version::V2, Checksum::PseudoHeader, true),
            Err(DecodeError::Version { got: 3, want: 2 })
        );
        let mut d = good.clone();
        d[20] = 0x32;
        assert_eq!(check(&d), Err(DecodeError::Type(2)));
        let mut d = good.clone();
        d[23] = 2;
        assert_eq!(check(&d), Err(DecodeError::Length { got: 12, count: 2 }));
        let mut d = good.clone();
        d[31] ^= 1;
        assert_eq!(check(&d), Err(DecodeError::Checksum));
        let mut d = good.clone();
        d[9] = 6;
        assert_eq!(check(&d), Err(DecodeError::Protocol(6)));
        assert_eq!(
            check(&good[..31]),
            Err(DecodeError::IpLength { ip: 32, got: 31 })
        );
        assert_eq!(check(&good[..10]), Err(DecodeError::Truncated(10)));
        let zero = Advert {
            interval_cs: 0,
            ..v3()
        };
        let z = encode(&zero, ip("10.0.0.1"), GROUP, Checksum::PseudoHeader);
        let d = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &z);
        assert_eq!(check(&d), Err(DecodeError::ZeroInterval));
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let m = encode(&v3(), ip("10.0.0.1"), GROUP, Checksum::PseudoHeader);
        let good = ipv4_datagram(ip("10.0.0.1"), GROUP, 255, &m);
        for i in 0..200_000 {
            let mut d = if i % 2 == 0 {
                good.clone()
            } else {
                (0..(next() % 80) as usize).map(|_| next() as u8).collect()
            };
            if !d.is_empty() {
                let n = (next() % d.len() as u64) as usize;
                d[n] = next() as u8;
            }
            for v in [Version::V2, Version::V3] {
                let _ = decode(&d, v, Checksum::PseudoHeader, true);
                let _ = decode(&d, v, Checksum::MessageOnly, false);
            }
        }
    }
}
