//! The record layer of a client's TLS connection once its handshake is done.
//!
//! rustls keeps, for the life of a connection, its whole state machine: the connection
//! (about 1,100 bytes), a handshake buffer (640) and the traffic state (320), on top of
//! the keys. A front door's clients are mostly idle keep-alive connections, and after the
//! handshake all they need is the keys, two sequence numbers and, under TLS 1.3, the two
//! traffic secrets that key updates are derived from. So once rustls has finished the
//! handshake, the stream takes the keys out of it (rustls's `dangerous_into_kernel_connection`,
//! made for kernel TLS, which this is the user-space equivalent of) and protects the
//! records itself, with the same AEAD implementation rustls uses (aws-lc).
//!
//! What it does, as RFC 8446 (TLS 1.3) and RFC 5246/5288/7905 (TLS 1.2) ask:
//! - application data, alerts and handshake messages, each sealed with the nonce of its
//!   sequence number, never reused: a direction's sequence number only grows, and starts
//!   again at zero only with a new key;
//! - TLS 1.3 key updates: the peer's (its receiving keys follow; when it asks, an update
//!   of ours goes back), and ours before the sending key's confidentiality limit;
//! - `close_notify` both ways; any other alert from the peer ends the connection, except
//!   TLS 1.2 warnings and TLS 1.3 `user_canceled`;
//! - anything else (a bad tag, an oversized or malformed record, a handshake message
//!   other than a key update, a renegotiation) is an error with the fatal alert RFC 8446
//!   names for it.
//!
//! TLS 1.3's traffic secrets are not part of what rustls hands over; they are learnt
//! while rustls derives them, through its key log hook ([`Capture`]), which records them
//! for the connection whose handshake the current thread is processing and for nothing
//! else.

use std::cell::RefCell;
use std::io;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::crypto::tls13::{Hkdf, OkmBlock};
use zeroize::Zeroize;

use rustls::{
    ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite,
    Tls13CipherSuite,
};

/// Record content types.
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;
const CHANGE_CIPHER_SPEC: u8 = 20;

/// The most plaintext one record carries.
pub const MAX_FRAGMENT: usize = 16 * 1024;
const HEADER: usize = 5;
const TAG: usize = 16;
/// TLS 1.2 AES-GCM records carry their nonce's last 8 bytes ahead of the ciphertext.
const EXPLICIT_NONCE: usize = 8;

/// Alert descriptions sent or understood.
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const ILLEGAL_PARAMETER: u8 = 47;
const USER_CANCELED: u8 = 90;
const INTERNAL_ERROR: u8 = 80;

/// A key update record: header, message (5), content type and tag.
const KEY_UPDATE_RECORD: usize = HEADER + 5 + 1 + TAG;

/// Handshake message types after the handshake.
const KEY_UPDATE: u8 = 24;

/// Records sent under one TLS 1.3 key before it is replaced: rustls's limit for AES-GCM
/// (2^24, below RFC 8446's 2^24.5). TLS 1.2 cannot replace its keys: the connection ends
/// there instead (2^48 records, as rustls).
const TLS13_KEY_LIMIT: u64 = 1 << 24;
const TLS12_KEY_LIMIT: u64 = 1 << 48;

/// Handshake bytes of a message split across records, at most (a key update is 5).
const MAX_HANDSHAKE: usize = 1024;

/// A failure with the alert the peer is sent for it.
#[derive(Debug)]
pub struct Fatal {
    /// The alert to send, if any (none after the peer's own fatal alert).
    pub alert: Option<u8>,
    pub why: &'static str,
}

impl From<Fatal> for io::Error {
    fn from(f: Fatal) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {}", f.why))
    }
}

fn fatal(alert: Option<u8>, why: &'static str) -> Fatal {
    Fatal { alert, why }
}

/// One direction's AEAD context and IV, made from its [`Keys`].
struct Live {
    key: LessSafeKey,
    iv: [u8; 12],
}

impl Drop for Live {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

impl Live {
    fn new(
        alg: &'static aead::Algorithm,
        key: &[u8],
        iv: [u8; 12],
    ) -> Result<Box<Live>, &'static str> {
        let key = UnboundKey::new(alg, key).map_err(|_| "a key of the wrong length")?;
        Ok(Box::new(Live {
            key: LessSafeKey::new(key),
            iv,
        }))
    }

    /// The nonce of sequence number `seq`: the IV with the number XORed into its last 8
    /// bytes (TLS 1.3, and TLS 1.2's ChaCha20-Poly1305 and AES-GCM as rustls sends it).
    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

/// One direction's keys: 64 bytes while the connection is parked.
struct Keys {
    /// The AEAD context (aws-lc's, about 600 bytes) and the IV, made from `material`;
    /// `None` while the connection is parked.
    live: Option<Box<Live>>,
    seq: u64,
    /// What the context and the IV are made from. Under TLS 1.3 the traffic secret (also
    /// the base of the next key update), as long as the suite's hash; under TLS 1.2 the
    /// key followed by the IV. At most 48 bytes either way (SHA-384's; a 32-byte key and
    /// a 12-byte IV).
    material: [u8; 48],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.material.zeroize();
    }
}

/// How long a direction's material is: the TLS 1.3 suite's hash, or a TLS 1.2 key and IV.
fn material_len(
    alg: &'static aead::Algorithm,
    suite13: Option<&'static Tls13CipherSuite>,
) -> usize {
    match suite13 {
        Some(s) => s.common.hash_provider.output_len(),
        None => alg.key_len() + 12,
    }
}

impl Keys {
    /// The keys `key` and `iv` at sequence number `seq`, made again when parked from the
    /// TLS 1.3 traffic `secret` (`Some`), or under TLS 1.2 (`None`) from the key and IV.
    fn new(
        alg: &'static aead::Algorithm,
        secret: Option<&[u8]>,
        key: &[u8],
        iv: [u8; 12],
        seq: u64,
    ) -> Result<Keys, &'static str> {
        let mut keys = Keys {
            live: None,
            seq,
            material: [0; 48],
        };
        let fits = match secret {
            Some(secret) => keys
                .material
                .get_mut(..secret.len())
                .map(|m| m.copy_from_slice(secret)),
            None => keys.material.get_mut(..key.len() + 12).map(|m| {
                m[..key.len()].copy_from_slice(key);
                m[key.len()..].copy_from_slice(&iv);
            }),
        };
        if fits.is_none() {
            return Err("a secret longer than SHA-384's");
        }
        keys.live = Some(Live::new(alg, key, iv)?);
        Ok(keys)
    }

    /// The TLS 1.3 traffic secret, or the TLS 1.2 key and IV.
    fn material(
        &self,
        alg: &'static aead::Algorithm,
        suite13: Option<&'static Tls13CipherSuite>,
    ) -> &[u8] {
        &self.material[..material_len(alg, suite13).min(48)]
    }

    /// The AEAD context and IV, made again if the connection was parked.
    fn live(
        &mut self,
        alg: &'static aead::Algorithm,
        suite13: Option<&'static Tls13CipherSuite>,
    ) -> Result<&Live, Fatal> {
        if self.live.is_none() {
            let material = self.material(alg, suite13);
            let mut bytes = [0u8; 32];
            let made = match suite13 {
                Some(s) => {
                    let key = &mut bytes[..alg.key_len()];
                    let (k, iv) = derive(s.hkdf_provider, material, key)?;
                    Live::new(alg, k, iv)
                }
                None => {
                    let (key, iv) = material.split_at(alg.key_len().min(material.len()));
                    iv.try_into()
                        .map_err(|_| "an IV of the wrong length")
                        .and_then(|iv| Live::new(alg, key, iv))
                }
            };
            bytes.zeroize();
            self.live = Some(made.map_err(|why| fatal(Some(INTERNAL_ERROR), why))?);
        }
        self.live
            .as_deref()
            .ok_or(fatal(Some(INTERNAL_ERROR), "no key"))
    }
}

/// A TLS 1.3 key and IV from a traffic secret (RFC 8446, 7.3): the key into `key` (as
/// long as the AEAD's), returned with the IV.
fn derive<'k>(
    hkdf: &'static dyn Hkdf,
    secret: &[u8],
    key: &'k mut [u8],
) -> Result<(&'k [u8], [u8; 12]), Fatal> {
    let expander = hkdf.expander_for_okm(&OkmBlock::new(secret));
    expand_label(expander.as_ref(), b"key", key)?;
    let mut iv = [0u8; 12];
    expand_label(expander.as_ref(), b"iv", &mut iv)?;
    Ok((key, iv))
}

/// The key and IV rustls extracted.
fn extracted(s: &ConnectionTrafficSecrets) -> Result<(&[u8], [u8; 12]), &'static str> {
    let (key, iv) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => return Err("a cipher suite without an AEAD of aws-lc"),
    };
    let iv = iv
        .as_ref()
        .try_into()
        .map_err(|_| "an IV of the wrong length")?;
    Ok((key.as_ref(), iv))
}

/// What [`Records::open`] found at the start of the received bytes.
pub enum Opened {
    /// Not a whole record yet.
    Partial,
    /// A record of `len` bytes whose plaintext, of content type `typ`, is
    /// `buf[range]` (decrypted in place).
    Record {
        len: usize,
        typ: u8,
        range: std::ops::Range<usize>,
    },
}

/// What a received record asks of the stream.
pub enum Event {
    /// Nothing to pass on (an empty record, a key update, an ignored warning).
    Nothing,
    /// The peer's `close_notify`.
    Closed,
}

/// A TLS connection's record protection after the handshake.
pub struct Records {
    alg: &'static aead::Algorithm,
    /// The suite under TLS 1.3, for its HKDF (parked keys, key updates); `None` under
    /// TLS 1.2. A thin reference rather than the HKDF's own (two words), so that the
    /// record layer fits jemalloc's 160-byte class.
    suite13: Option<&'static Tls13CipherSuite>,
    tx: Keys,
    rx: Keys,
    /// A handshake message split across records, until it is whole.
    handshake: Option<Box<[u8]>>,
}

/// A TLS 1.3 suite (`Some`), or `None` for a TLS 1.2 one.
fn suite13_of(
    version: ProtocolVersion,
    suite: SupportedCipherSuite,
) -> Result<Option<&'static Tls13CipherSuite>, &'static str> {
    match (version, suite) {
        (ProtocolVersion::TLSv1_3, SupportedCipherSuite::Tls13(s)) => Ok(Some(s)),
        (ProtocolVersion::TLSv1_2, SupportedCipherSuite::Tls12(_)) => Ok(None),
        _ => Err("a protocol version the record layer does not know"),
    }
}

impl Records {
    fn tls13(&self) -> bool {
        self.suite13.is_some()
    }

    fn hkdf(&self) -> Option<&'static dyn Hkdf> {
        self.suite13.map(|s| s.hkdf_provider)
    }

    /// TLS 1.2 AES-GCM: the nonce's last 8 bytes are on the wire.
    fn explicit_nonce(&self) -> bool {
        !self.tls13() && !std::ptr::eq(self.alg, &aead::CHACHA20_POLY1305)
    }

    /// Whether a connection of `version` and `suite` can be taken over: TLS 1.2 or 1.3
    /// with an AEAD suite of aws-lc, and for TLS 1.3 its traffic secrets learnt.
    pub fn takes(version: ProtocolVersion, suite: SupportedCipherSuite, traffic: bool) -> bool {
        algorithm(suite).is_some()
            && match suite13_of(version, suite) {
                Ok(Some(_)) => traffic,
                Ok(None) => true,
                Err(_) => false,
            }
    }

    /// Takes over from rustls: `secrets` as rustls extracted them, and for TLS 1.3 the
    /// traffic secrets of both directions (`(ours, the peer's)`) as [`Capture`] learnt them.
    pub fn new(
        version: ProtocolVersion,
        suite: SupportedCipherSuite,
        secrets: ExtractedSecrets,
        traffic: Option<(OkmBlock, OkmBlock)>,
    ) -> Result<Records, &'static str> {
        let alg = algorithm(suite).ok_or("a cipher suite the record layer does not know")?;
        let suite13 = suite13_of(version, suite)?;
        let hkdf = suite13.map(|s| s.hkdf_provider);
        let keys = |(seq, s): (u64, ConnectionTrafficSecrets), secret: Option<OkmBlock>| {
            let (key, iv) = extracted(&s)?;
            match (hkdf, secret) {
                (None, _) => Keys::new(alg, None, key, iv, seq),
                (Some(hkdf), Some(secret)) => {
                    // The key is made again from the secret when a parked connection
                    // wakes: the secret must be the connection's, which its IV tells.
                    let expander = hkdf.expander_for_okm(&secret);
                    let mut mine = [0u8; 12];
                    expand_label(expander.as_ref(), b"iv", &mut mine).map_err(|f| f.why)?;
                    if mine != iv {
                        return Err("the learnt traffic secret is not the connection's");
                    }
                    Keys::new(alg, Some(secret.as_ref()), key, iv, seq)
                }
                (Some(_), None) => Err("TLS 1.3 traffic secrets were not learnt"),
            }
        };
        let (ours, theirs) = match traffic {
            Some((o, t)) => (Some(o), Some(t)),
            None => (None, None),
        };
        Ok(Records {
            alg,
            suite13,
            tx: keys(secrets.tx, ours)?,
            rx: keys(secrets.rx, theirs)?,
            handshake: None,
        })
    }

    /// Lets the AEAD contexts and IVs go (about 1.2 KB with AES-GCM) until the next
    /// record either way, which makes them again from the material kept.
    pub fn park(&mut self) -> bool {
        let was = self.tx.live.is_some() || self.rx.live.is_some();
        self.tx.live = None;
        self.rx.live = None;
        was
    }

    /// Seals `data` as records of type `typ` into `out` from `*at` on, which must have
    /// [`Records::sealed_len`] bytes of room; `*at` moves past them.
    pub fn seal(
        &mut self,
        typ: u8,
        data: &[u8],
        out: &mut [u8],
        at: &mut usize,
    ) -> Result<(), Fatal> {
        let mut chunks = data.chunks(MAX_FRAGMENT);
        // An empty message is one empty record.
        let first = chunks.next().unwrap_or(&[]);
        for chunk in std::iter::once(first).chain(chunks) {
            let limit = if self.tls13() {
                TLS13_KEY_LIMIT
            } else {
                TLS12_KEY_LIMIT
            };
            if self.tx.seq >= limit {
                if !self.tls13() {
                    return Err(fatal(Some(CLOSE_NOTIFY), "the sending key is used up"));
                }
                self.update_ours(out, at, false)?;
            }
            self.seal_record(typ, chunk, out, at)?;
        }
        Ok(())
    }

    /// The room `n` bytes of plaintext take once sealed: the records' headers, tags and
    /// nonces, and a key update of ours.
    pub fn sealed_len(&self, n: usize) -> usize {
        let per = HEADER + TAG + 1 + EXPLICIT_NONCE;
        n + (n / MAX_FRAGMENT + 1) * per + KEY_UPDATE_RECORD
    }

    /// One record under the current sending key, whatever its count.
    fn seal_record(
        &mut self,
        typ: u8,
        data: &[u8],
        out: &mut [u8],
        at: &mut usize,
    ) -> Result<(), Fatal> {
        let (tls13, explicit_nonce, seq) = (self.tls13(), self.explicit_nonce(), self.tx.seq);
        let live = self.tx.live(self.alg, self.suite13)?;
        let nonce = live.nonce(seq);
        let explicit = if explicit_nonce { EXPLICIT_NONCE } else { 0 };
        let inner = data.len() + usize::from(tls13);
        let wire_len = explicit + inner + TAG;
        let rec = out
            .get_mut(*at..*at + HEADER + wire_len)
            .ok_or(fatal(Some(INTERNAL_ERROR), "no room for a record"))?;
        // Under TLS 1.3 the header says application data, and the real type is inside.
        rec[0] = if tls13 { APPLICATION_DATA } else { typ };
        rec[1..3].copy_from_slice(&[3, 3]);
        rec[3..HEADER].copy_from_slice(&(wire_len as u16).to_be_bytes());
        if explicit_nonce {
            rec[HEADER..HEADER + EXPLICIT_NONCE].copy_from_slice(&nonce[4..]);
        }
        let body = HEADER + explicit;
        rec[body..body + data.len()].copy_from_slice(data);
        if tls13 {
            rec[body + data.len()] = typ;
        }
        let aad = if tls13 {
            let mut h = [0u8; 13];
            h[..HEADER].copy_from_slice(&rec[..HEADER]);
            (h, HEADER)
        } else {
            (tls12_aad(seq, typ, [3, 3], data.len()), 13)
        };
        let (text, tag_room) = rec[body..].split_at_mut(inner);
        let tag = live
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad.0[..aad.1]),
                text,
            )
            .map_err(|_| fatal(Some(INTERNAL_ERROR), "sealing a record failed"))?;
        tag_room.copy_from_slice(tag.as_ref());
        self.tx.seq += 1;
        *at += HEADER + wire_len;
        Ok(())
    }

    /// Looks at the start of `buf`: a whole record there is decrypted in place.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, Fatal> {
        if buf.len() < HEADER {
            return Ok(Opened::Partial);
        }
        let (typ, major, len) = (
            buf[0],
            buf[1],
            u16::from_be_bytes([buf[3], buf[4]]) as usize,
        );
        if major != 3 {
            return Err(fatal(Some(DECODE_ERROR), "a record that is not TLS"));
        }
        match typ {
            ALERT | HANDSHAKE | APPLICATION_DATA => {}
            CHANGE_CIPHER_SPEC => {
                return Err(fatal(
                    Some(UNEXPECTED_MESSAGE),
                    "change_cipher_spec after the handshake",
                ));
            }
            _ => {
                return Err(fatal(
                    Some(UNEXPECTED_MESSAGE),
                    "a record of an unknown type",
                ));
            }
        }
        if self.tls13() && typ != APPLICATION_DATA {
            return Err(fatal(
                Some(UNEXPECTED_MESSAGE),
                "an unprotected record after the handshake",
            ));
        }
        let max = MAX_FRAGMENT + if self.tls13() { 256 } else { 2048 };
        if len > max {
            return Err(fatal(
                Some(RECORD_OVERFLOW),
                "a record longer than TLS allows",
            ));
        }
        if buf.len() < HEADER + len {
            return Ok(Opened::Partial);
        }
        let explicit = if self.explicit_nonce() {
            EXPLICIT_NONCE
        } else {
            0
        };
        if len < explicit + TAG {
            return Err(fatal(Some(BAD_RECORD_MAC), "a record shorter than its tag"));
        }
        let (tls13, explicit_nonce, seq) = (self.tls13(), self.explicit_nonce(), self.rx.seq);
        let live = self.rx.live(self.alg, self.suite13)?;
        let mut nonce = live.nonce(seq);
        if explicit_nonce {
            nonce[4..].copy_from_slice(&buf[HEADER..HEADER + EXPLICIT_NONCE]);
        }
        let header: [u8; HEADER] = buf[..HEADER].try_into().unwrap_or_default();
        let aad = if tls13 {
            let mut h = [0u8; 13];
            h[..HEADER].copy_from_slice(&header);
            (h, HEADER)
        } else {
            (
                tls12_aad(seq, typ, [buf[1], buf[2]], len - explicit - TAG),
                13,
            )
        };
        let body = HEADER + explicit;
        let plain_len = live
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad.0[..aad.1]),
                &mut buf[body..HEADER + len],
            )
            .map_err(|_| fatal(Some(BAD_RECORD_MAC), "a record that does not authenticate"))?
            .len();
        self.rx.seq += 1;
        let mut end = body + plain_len;
        let mut inner = typ;
        if self.tls13() {
            // The content type is the last byte that is not padding.
            match buf[body..end].iter().rposition(|&b| b != 0) {
                Some(i) => {
                    inner = buf[body + i];
                    end = body + i;
                }
                None => {
                    return Err(fatal(
                        Some(UNEXPECTED_MESSAGE),
                        "a record without a content type",
                    ));
                }
            }
        }
        if end - body > MAX_FRAGMENT {
            return Err(fatal(
                Some(RECORD_OVERFLOW),
                "a record's plaintext is too long",
            ));
        }
        if self.handshake.is_some() && inner != HANDSHAKE {
            return Err(fatal(
                Some(UNEXPECTED_MESSAGE),
                "a record inside a split handshake message",
            ));
        }
        Ok(Opened::Record {
            len: HEADER + len,
            typ: inner,
            range: body..end,
        })
    }

    /// A record that is not application data: an alert or a handshake message. What must
    /// go back (an update of our keys) is sealed into `out`.
    pub fn control(
        &mut self,
        typ: u8,
        plain: &[u8],
        out: &mut [u8],
        at: &mut usize,
    ) -> Result<Event, Fatal> {
        match typ {
            ALERT => self.alert(plain),
            HANDSHAKE => self.handshake(plain, out, at),
            _ => Err(fatal(
                Some(UNEXPECTED_MESSAGE),
                "a record of an unknown type",
            )),
        }
    }

    fn alert(&mut self, plain: &[u8]) -> Result<Event, Fatal> {
        let &[level, what] = plain else {
            return Err(fatal(Some(DECODE_ERROR), "a malformed alert"));
        };
        if what == CLOSE_NOTIFY {
            return Ok(Event::Closed);
        }
        if (self.tls13() && what == USER_CANCELED) || (!self.tls13() && level == 1) {
            return Ok(Event::Nothing);
        }
        Err(fatal(None, "the peer sent a fatal alert"))
    }

    fn handshake(&mut self, plain: &[u8], out: &mut [u8], at: &mut usize) -> Result<Event, Fatal> {
        if !self.tls13() {
            return Err(fatal(
                Some(UNEXPECTED_MESSAGE),
                "renegotiation, which is refused",
            ));
        }
        if plain.is_empty() {
            return Err(fatal(Some(UNEXPECTED_MESSAGE), "an empty handshake record"));
        }
        // Rare (key updates only): joining costs an allocation.
        let mut data = self.handshake.take().map(Vec::from).unwrap_or_default();
        data.extend_from_slice(plain);
        let mut rest = &data[..];
        let mut update = None;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + len {
                break;
            }
            let (msg, after) = rest.split_at(4 + len);
            match (msg[0], &msg[4..]) {
                (KEY_UPDATE, &[request @ (0 | 1)]) => update = Some(request == 1),
                (KEY_UPDATE, _) => {
                    return Err(fatal(Some(ILLEGAL_PARAMETER), "a malformed key update"));
                }
                _ => {
                    return Err(fatal(
                        Some(UNEXPECTED_MESSAGE),
                        "a handshake message after the handshake",
                    ));
                }
            }
            rest = after;
            // Nothing may follow a key update under the old key.
            if !rest.is_empty() {
                return Err(fatal(
                    Some(UNEXPECTED_MESSAGE),
                    "a message behind a key update",
                ));
            }
        }
        if !rest.is_empty() {
            if rest.len() > MAX_HANDSHAKE {
                return Err(fatal(
                    Some(UNEXPECTED_MESSAGE),
                    "a handshake message too long",
                ));
            }
            self.handshake = Some(rest.into());
        }
        if let Some(requested) = update {
            self.update_theirs()?;
            if requested {
                self.update_ours(out, at, false)?;
            }
        }
        Ok(Event::Nothing)
    }

    /// The peer's key update: the next traffic secret and key for reading.
    fn update_theirs(&mut self) -> Result<(), Fatal> {
        self.rx = self.next(&self.rx)?;
        Ok(())
    }

    /// Ours: a `KeyUpdate` under the current key, then the next key for writing. We never
    /// ask the peer to update its keys (`request` is for tests, as a peer would).
    fn update_ours(&mut self, out: &mut [u8], at: &mut usize, request: bool) -> Result<(), Fatal> {
        let msg = [KEY_UPDATE, 0, 0, 1, u8::from(request)];
        // Under the current key even at its limit: one record past 2^24 is within
        // RFC 8446's margin (2^24.5).
        self.seal_record(HANDSHAKE, &msg, out, at)?;
        self.tx = self.next(&self.tx)?;
        Ok(())
    }

    /// The keys after `k`'s: `traffic upd` from its secret (RFC 8446, 7.2), sequence 0.
    fn next(&self, k: &Keys) -> Result<Keys, Fatal> {
        let Some(hkdf) = self.hkdf() else {
            return Err(fatal(
                Some(UNEXPECTED_MESSAGE),
                "a key update outside TLS 1.3",
            ));
        };
        let expander = hkdf.expander_for_okm(&OkmBlock::new(k.material(self.alg, self.suite13)));
        let mut next = [0u8; 48];
        let next = &mut next[..expander.hash_len().min(48)];
        expand_label(expander.as_ref(), b"traffic upd", next)?;
        let mut key = [0u8; 32];
        let (k, iv) = derive(hkdf, next, &mut key[..self.alg.key_len()])?;
        let keys = Keys::new(self.alg, Some(next), k, iv, 0);
        key.zeroize();
        next.zeroize();
        keys.map_err(|why| fatal(Some(INTERNAL_ERROR), why))
    }
}

/// Two ends of one connection from made-up secrets, for tests and the fuzzer: what the
/// first seals the second opens, and the other way. TLS 1.3 when `tls13`, else TLS 1.2;
/// AES-128-GCM.
#[doc(hidden)]
pub fn testing_pair(tls13: bool, a: &[u8; 32], b: &[u8; 32]) -> Option<(Records, Records)> {
    let alg = &aead::AES_128_GCM;
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let suite13 = match suite {
        SupportedCipherSuite::Tls13(s) if tls13 => Some(s),
        _ => None,
    };
    let hkdf = suite13.map(|s| s.hkdf_provider);
    let end = |tx: &[u8; 32], rx: &[u8; 32]| {
        let keys = |secret: &[u8; 32]| {
            let secret = if tls13 { &secret[..] } else { &secret[..16] };
            let mut k = [0u8; 16];
            let iv = match hkdf {
                Some(h) => derive(h, secret, &mut k).map(|(_, iv)| iv).ok()?,
                None => {
                    k.copy_from_slice(secret);
                    [7; 12]
                }
            };
            Keys::new(alg, tls13.then_some(secret), &k, iv, 0).ok()
        };
        Some(Records {
            alg,
            suite13,
            tx: keys(tx)?,
            rx: keys(rx)?,
            handshake: None,
        })
    };
    Some((end(a, b)?, end(b, a)?))
}

impl Records {
    /// Seals one record of content type `typ` (TLS 1.3: the byte after the data, so 0 lets
    /// the data's own last bytes say the type and the padding), for tests and the fuzzer.
    #[doc(hidden)]
    pub fn testing_seal(&mut self, typ: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), Fatal> {
        let at = out.len();
        out.resize(at + self.sealed_len(data.len()), 0);
        let mut end = at;
        let r = self.seal_record(typ, data, out, &mut end);
        out.truncate(end);
        r
    }

    /// A key update of ours asking the peer for one too, for tests and the fuzzer.
    #[doc(hidden)]
    pub fn testing_key_update(&mut self, out: &mut Vec<u8>) -> Result<(), Fatal> {
        let at = out.len();
        out.resize(at + KEY_UPDATE_RECORD, 0);
        let mut end = at;
        let r = self.update_ours(out, &mut end, true);
        out.truncate(end);
        r
    }
}

/// The AEAD of a cipher suite.
fn algorithm(suite: SupportedCipherSuite) -> Option<&'static aead::Algorithm> {
    use rustls::CipherSuite as S;
    Some(match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => &aead::AES_128_GCM,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => &aead::AES_256_GCM,
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => &aead::CHACHA20_POLY1305,
        _ => return None,
    })
}

/// TLS 1.2's additional data: the sequence number, and the record's type, version and
/// plaintext length.
fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9..11].copy_from_slice(&version);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446, 7.1).
fn expand_label(
    expander: &dyn rustls::crypto::tls13::HkdfExpander,
    label: &[u8],
    out: &mut [u8],
) -> Result<(), Fatal> {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [6 + label.len() as u8];
    expander
        .expand_slice(&[&len, &label_len, b"tls13 ", label, &[0]], out)
        .map_err(|_| fatal(Some(INTERNAL_ERROR), "deriving a key failed"))
}

thread_local! {
    /// The TLS 1.3 traffic secrets rustls derives while this thread processes one
    /// connection's handshake: (client's, server's).
    static CAPTURED: RefCell<Option<(Option<OkmBlock>, Option<OkmBlock>)>> =
        const { RefCell::new(None) };
}

/// rustls's key log, made to learn the TLS 1.3 traffic secrets of the handshake the
/// current thread is processing (see [`capture`]); nothing is written anywhere.
#[derive(Debug)]
pub struct Capture;

impl rustls::KeyLog for Capture {
    fn will_log(&self, label: &str) -> bool {
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        CAPTURED.with(|c| {
            if let Some((client, server)) = c.borrow_mut().as_mut() {
                let slot = if label == "CLIENT_TRAFFIC_SECRET_0" {
                    client
                } else {
                    server
                };
                *slot = Some(OkmBlock::new(secret));
            }
        });
    }
}

/// Runs `f` (rustls processing one connection's handshake records) and adds to `into`
/// the traffic secrets rustls derived meanwhile.
pub fn capture<R>(
    into: &mut Option<Box<(Option<OkmBlock>, Option<OkmBlock>)>>,
    f: impl FnOnce() -> R,
) -> R {
    CAPTURED.with(|c| *c.borrow_mut() = Some((None, None)));
    let r = f();
    if let Some((client, server)) = CAPTURED.with(|c| c.borrow_mut().take())
        && (client.is_some() || server.is_some())
    {
        let slot = into.get_or_insert_with(|| Box::new((None, None)));
        if client.is_some() {
            slot.0 = client;
        }
        if server.is_some() {
            slot.1 = server;
        }
    }
    r
}
