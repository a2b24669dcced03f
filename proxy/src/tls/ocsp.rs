//! OCSP stapling: the DER response in `<certificate file>.ocsp` (HAProxy's convention) is
//! stapled to handshakes that ask for it. The response is read far enough to check it
//! (a successful basic response about this certificate's serial number) and to tell when
//! it stops being valid (`nextUpdate`): an expired response is not stapled, and one that
//! expires soon is warned about, at load and at each reload.

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspInfo {
    /// The certificate ID (DER), as `show ssl ocsp-response` prints it.
    pub cert_id: Vec<u8>,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    /// The serial number it is about.
    pub serial: Vec<u8>,
    pub status: CertStatus,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked,
    Unknown,
}

/// One DER element: its tag, its content and what follows it.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (usize::from(l), rest)
    } else {
        let n = usize::from(l & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The element of `tag` at the start of `b`: its content and what follows.
fn expect(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, c, r) = tlv(b)?;
    (t == tag).then_some((c, r))
}

/// `YYYYMMDDHHMMSS[.f]Z` to Unix seconds.
fn generalized_time(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let s = s.strip_suffix('Z')?;
    let s = s.split('.').next()?;
    if s.len() != 14 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (h, mi, se) = (n(8, 10)?, n(10, 12)?, n(12, 14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + mi * 60 + se)
}

/// Reads an OCSPResponse (RFC 6960): `Err` says why it is not a usable one.
pub fn parse(der: &[u8]) -> Result<OcspInfo, String> {
    let bad = |what: &str| format!("not an OCSP response ({what})");
    let (resp, _) = expect(der, 0x30).ok_or_else(|| bad("outer sequence"))?;
    let (status, rest) = expect(resp, 0x0a).ok_or_else(|| bad("response status"))?;
    if status != [0] {
        return Err(format!(
            "the OCSP response's status is {} (not successful)",
            status.first().copied().unwrap_or(255)
        ));
    }
    let (bytes, _) = expect(rest, 0xa0).ok_or_else(|| bad("response bytes"))?;
    let (bytes, _) = expect(bytes, 0x30).ok_or_else(|| bad("response bytes"))?;
    let (oid, rest) = expect(bytes, 0x06).ok_or_else(|| bad("response type"))?;
    // id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1.
    if oid != [0x2b, 6, 1, 5, 5, 7, 48, 1, 1] {
        return Err("the OCSP response is not a basic response".into());
    }
    let (basic, _) = expect(rest, 0x04).ok_or_else(|| bad("response"))?;
    let (basic, _) = expect(basic, 0x30).ok_or_else(|| bad("basic response"))?;
    let (tbs, _) = expect(basic, 0x30).ok_or_else(|| bad("response data"))?;
    let mut rest = tbs;
    // [0] version, then the responder ID ([1] or [2]), then producedAt.
    if let Some((0xa0, _, r)) = tlv(rest) {
        rest = r;
    }
    let (t, _, r) = tlv(rest).ok_or_else(|| bad("responder"))?;
    if t != 0xa1 && t != 0xa2 {
        return Err(bad("responder"));
    }
    let (_, r) = expect(r, 0x18).ok_or_else(|| bad("produced at"))?;
    let (responses, _) = expect(r, 0x30).ok_or_else(|| bad("responses"))?;
    let (single, _) = expect(responses, 0x30).ok_or_else(|| bad("no single response"))?;
    let (t, id_content, r) = tlv(single).ok_or_else(|| bad("certificate ID"))?;
    if t != 0x30 {
        return Err(bad("certificate ID"));
    }
    let cert_id = single[..single.len() - r.len()].to_vec();
    let (_, idr) = expect(id_content, 0x30).ok_or_else(|| bad("hash algorithm"))?;
    let (name_hash, idr) = expect(idr, 0x04).ok_or_else(|| bad("issuer name hash"))?;
    let (key_hash, idr) = expect(idr, 0x04).ok_or_else(|| bad("issuer key hash"))?;
    let (serial, _) = expect(idr, 0x02).ok_or_else(|| bad("serial number"))?;
    let (t, _, r) = tlv(r).ok_or_else(|| bad("certificate status"))?;
    let status = match t {
        0x80 => CertStatus::Good,
        0xa1 => CertStatus::Revoked,
        0x82 => CertStatus::Unknown,
        _ => return Err(bad("certificate status")),
    };
    let (this, r) = expect(r, 0x18).ok_or_else(|| bad("this update"))?;
    let this_update = generalized_time(this).ok_or_else(|| bad("this update"))?;
    let next_update = match expect(r, 0xa0) {
        Some((n, _)) => Some(
            expect(n, 0x18)
                .and_then(|(t, _)| generalized_time(t))
                .ok_or_else(|| bad("next update"))?,
        ),
        None => None,
    };
    Ok(OcspInfo {
        cert_id,
        issuer_name_hash: name_hash.to_vec(),
        issuer_key_hash: key_hash.to_vec(),
        serial: serial.to_vec(),
        status,
        this_update,
        next_update,
    })
}

/// Standard base64 (with or without padding, blanks ignored), for `set ssl ocsp-response`.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_base64() {
        assert_eq!(generalized_time(b"19700101000000Z"), Some(0));
        assert_eq!(generalized_time(b"20261213021313Z"), Some(1_797_127_993));
        assert_eq!(generalized_time(b"20000229120000.5Z"), Some(951_825_600));
        assert_eq!(generalized_time(b"2026121302131Z"), None);
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn refuses_what_is_not_a_response() {
        assert!(parse(b"").is_err());
        assert!(
            parse(&[0x30, 0x03, 0x0a, 0x01, 0x01])
                .unwrap_err()
                .contains("status is 1")
        );
        // Every truncation of a plausible header is refused without a panic.
        let head = [
            0x30, 0x82, 0x01, 0x00, 0x0a, 0x01, 0x00, 0xa0, 0x82, 0x00, 0xf0,
        ];
        for n in 0..head.len() {
            assert!(parse(&head[..n]).is_err());
        }
    }
}
