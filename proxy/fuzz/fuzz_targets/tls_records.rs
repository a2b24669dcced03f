//! The record layer a client's TLS connection is handed to after its handshake, fed what a
//! peer holding the keys could send: records of any content type, padding and size,
//! alerts, handshake messages whole or split, key updates, and bytes that are no record.
//! Every input is opened or refused, never a panic; key updates keep both ends in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_proxy::tls::records::{self, Event, Opened};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let Some((mut ours, mut peer)) = records::testing_pair(first & 1 == 1, &[1; 32], &[2; 32])
    else {
        return;
    };
    // The input: pieces of [kind, length, bytes...]; kind's low bits pick what the peer
    // sends: a sealed record of that content type (0: the bytes end with their own type
    // and padding), or the bytes as they are.
    let mut wire = Vec::new();
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len()) * if kind & 0x80 != 0 { 64 } else { 1 };
        let n = n.min(tail.len());
        let (piece, after) = tail.split_at(n);
        rest = after;
        match kind & 3 {
            0 => wire.extend_from_slice(piece),
            1 => {
                let _ = peer.testing_seal(0, piece, &mut wire);
            }
            2 => {
                let _ = peer.testing_seal((kind >> 2) & 0x1f, piece, &mut wire);
            }
            _ => {
                let _ = peer.testing_seal(records::APPLICATION_DATA, piece, &mut wire);
            }
        }
    }
    let mut answer = vec![0u8; 1 << 12];
    let mut at = 0;
    let mut buf = &mut wire[..];
    loop {
        match ours.open(buf) {
            Ok(Opened::Partial) | Err(_) => break,
            Ok(Opened::Record { len, typ, range }) => {
                assert!(range.end <= len && len <= buf.len());
                if typ != records::APPLICATION_DATA {
                    if at + 64 > answer.len() {
                        break;
                    }
                    let plain = buf[range].to_vec();
                    match ours.control(typ, &plain, &mut answer, &mut at) {
                        Ok(Event::Nothing) => {}
                        Ok(Event::Closed) | Err(_) => break,
                    }
                }
                buf = &mut buf[len..];
            }
        }
    }
    // What went back (key updates) opens at the peer, which follows them.
    let mut back = answer[..at].to_vec();
    let mut buf = &mut back[..];
    let mut scratch = vec![0u8; 256];
    while !buf.is_empty() {
        match peer.open(buf) {
            Ok(Opened::Record { len, typ, range }) => {
                if typ != records::APPLICATION_DATA {
                    let plain = buf[range].to_vec();
                    let mut n = 0;
                    assert!(
                        matches!(
                            peer.control(typ, &plain, &mut scratch, &mut n),
                            Ok(Event::Nothing)
                        ),
                        "our own key update refused"
                    );
                }
                buf = &mut buf[len..];
            }
            other => panic!(
                "our own record refused: {}",
                matches!(other, Ok(Opened::Partial))
            ),
        }
    }
    // And the two ends still agree.
    let mut out = vec![0u8; 256];
    let mut n = 0;
    if ours
        .seal(records::APPLICATION_DATA, b"ok", &mut out, &mut n)
        .is_ok()
    {
        match peer.open(&mut out[..n]) {
            Ok(Opened::Record { typ, range, .. }) => {
                assert_eq!(typ, records::APPLICATION_DATA);
                assert_eq!(&out[range], b"ok");
            }
            _ => panic!("the ends disagree after the exchange"),
        }
    }
});
