//! Targets `frame_decoder` and `extensions`: pure decoding, no yrs.
//! Any panic here is a bug in `quire-protocol`.

use quire_protocol::awareness::AwarenessTable;
use quire_protocol::ext::{self, Ext, Reassembly};
use quire_protocol::lib0::{Cursor, write_var_string, write_var_uint};
use quire_protocol::{ClientId, DecodeError, Message};

/// A comparable picture of a table: (client, clock, state) of every entry
/// `encode` reports for `ids`, sorted.
fn picture(table: &AwarenessTable, ids: &[ClientId]) -> Vec<u8> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    table.encode(ids)
}

/// Client ids mentioned by a well-formed awareness update (for pictures).
fn mentioned(update: &[u8]) -> Vec<ClientId> {
    let mut c = Cursor::new(update);
    let mut ids = Vec::new();
    let Ok(n) = c.read_var_uint("n") else {
        return ids;
    };
    for _ in 0..n.min(10_000) {
        let (Ok(id), Ok(_), Ok(_)) = (
            c.read_var_uint("id"),
            c.read_var_uint("clock"),
            c.read_var_bytes("state"),
        ) else {
            break;
        };
        ids.push(id);
    }
    ids
}

/// A table that already lists a few clients, so updates meet known entries.
fn populated_table() -> AwarenessTable {
    let mut update = Vec::new();
    write_var_uint(&mut update, 3);
    for (id, clock, state) in [
        (1u64, 3u64, "{}"),
        (2, 1, r#"{"user":{"name":"ann"}}"#),
        (7, 9, "[1]"),
    ] {
        write_var_uint(&mut update, id);
        write_var_uint(&mut update, clock);
        write_var_string(&mut update, state);
    }
    let mut table = AwarenessTable::new();
    table.apply(&update, 0).expect("valid seed state");
    table
}

/// Checks the awareness merge rules on one update against `table`.
fn check_awareness(table: &mut AwarenessTable, update: &[u8], now_ms: u64) {
    let mut ids = mentioned(update);
    ids.extend(table.clients());
    ids.extend([1, 2, 7]);
    let before = picture(table, &ids);
    let live_before = table.len();
    match table.apply(update, now_ms) {
        Err(_) => {
            // Invalid input changes nothing at all.
            assert_eq!(
                picture(table, &ids),
                before,
                "a rejected update changed the table"
            );
            assert_eq!(table.len(), live_before);
        }
        Ok(change) => {
            assert_eq!(table.len(), table.clients().count());
            for id in table.clients() {
                assert!(table.state(id).is_some());
            }
            // Applying the same update again is a no-op (idempotence).
            let again = table
                .apply(update, now_ms + 1)
                .expect("accepted once, accepted twice");
            assert!(again.is_empty(), "re-applying an update changed {again:?}");
            // What the table encodes is valid and reproduces its live states.
            let all = table.encode_all();
            let mut copy = AwarenessTable::new();
            copy.apply(&all, now_ms)
                .expect("the table encodes valid updates");
            let mut live: Vec<ClientId> = table.clients().collect();
            live.sort_unstable();
            let mut copied: Vec<ClientId> = copy.clients().collect();
            copied.sort_unstable();
            assert_eq!(live, copied);
            for id in live {
                assert_eq!(table.state(id), copy.state(id));
            }
            // Every reported client was in the update.
            for id in change.accepted() {
                assert!(ids.contains(&id));
            }
            // Removing everyone empties the table; a sweep after that is a no-op.
            let everyone: Vec<ClientId> = table.clients().collect();
            let removed = table.remove(everyone.clone(), now_ms + 2);
            assert_eq!(removed.len(), everyone.len());
            assert!(table.is_empty());
            assert!(table.sweep(u64::MAX, 0).is_empty());
        }
    }
}

/// Target `frame_decoder`: `Message::decode` on arbitrary bytes, the encode
/// round trip of what decodes, and `AwarenessTable::apply` on the bytes
/// themselves and on any awareness payload.
pub fn frame_decoder(data: &[u8]) {
    match Message::decode(data) {
        Ok(message) => {
            let encoded = message.encode();
            assert_eq!(
                Message::decode(&encoded).as_ref(),
                Ok(&message),
                "round trip"
            );
            // lib0 accepts non-minimal varints; our encoding is minimal, so
            // it is never longer and re-encodes to itself.
            assert!(encoded.len() <= data.len());
            assert_eq!(Message::decode(&encoded).unwrap().encode(), encoded);
            assert!(!Ext::is_ext(&encoded));
            if let Message::Awareness(update) = message {
                check_awareness(&mut populated_table(), update, 1_000);
            }
        }
        Err(err) => {
            // A truncated frame never decodes to a message with trailing bytes.
            if let DecodeError::TrailingBytes(n) = err {
                assert!(n > 0 && n < data.len());
            }
        }
    }
    check_awareness(&mut AwarenessTable::new(), data, 0);
    check_awareness(&mut populated_table(), data, 5);
}

/// Limits a reassembly may be given (bounded: a real client uses 256 MiB,
/// which libFuzzer's allocation limit would flag as `reserve` up front).
const LIMITS: [usize; 5] = [0, 1, 16, 4096, 1 << 20];

/// Target `extensions`: `Ext::decode` + round trip on the whole input, then
/// the input as a sequence of frames fed to one `Reassembly` (checked
/// against a model), then a fragment / reassemble round trip.
///
/// Layout after the first frame check: `limit_selector, (len, frame)*`.
pub fn extensions(data: &[u8]) {
    if let Ok(ext) = Ext::decode(data) {
        assert!(Ext::is_ext(data));
        let encoded = ext.encode();
        assert!(encoded.len() <= data.len());
        assert_eq!(Ext::decode(&encoded).as_ref(), Ok(&ext), "round trip");
        assert_eq!(
            Message::decode(&encoded),
            Err(DecodeError::UnknownMessageType(ext::MSG_QUIRE))
        );
    }
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(selector) % LIMITS.len()];
    let mut reassembly = Reassembly::default();
    // Model: bytes accepted since the last completed frame, and their total.
    let mut model: Vec<u8> = Vec::new();
    let mut model_total = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let Ok(Ext::Fragment { total, data: piece }) = Ext::decode(frame) else {
            continue;
        };
        let expected = if usize::try_from(total).map_or(true, |t| t > limit) {
            Err(DecodeError::FragmentTooLarge)
        } else {
            let total = total as usize;
            // Another total mid-frame, or more bytes than announced.
            if (!model.is_empty() && model_total != total) || model.len() + piece.len() > total {
                Err(DecodeError::FragmentMismatch)
            } else {
                model_total = total;
                model.extend_from_slice(piece);
                if model.len() == total {
                    Ok(Some(std::mem::take(&mut model)))
                } else {
                    Ok(None)
                }
            }
        };
        let got = reassembly.push(total, piece, limit);
        assert_eq!(got, expected, "reassembly disagrees with the model");
        if let Ok(Some(whole)) = got {
            assert!(whole.len() <= limit);
        }
    }
    // Whatever the input, fragmenting it and reassembling gives it back.
    let piece = usize::from(selector % 7) * 3 + 1;
    let mut fresh = Reassembly::default();
    let mut out = None;
    let pieces = ext::fragment(data, piece);
    assert_eq!(pieces.len(), data.len().div_ceil(piece));
    for (i, frame) in pieces.iter().enumerate() {
        let Ok(Ext::Fragment { total, data: piece }) = Ext::decode(frame) else {
            panic!("fragment() produced a frame that does not decode");
        };
        let got = fresh
            .push(total, piece, data.len())
            .expect("own fragments are accepted");
        assert_eq!(got.is_some(), i + 1 == pieces.len());
        out = got;
    }
    assert_eq!(out.as_deref(), Some(data));
}
