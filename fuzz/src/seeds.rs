//! Seed corpora: a few valid inputs per target, so the fuzzer starts from
//! well-formed frames instead of discovering the format byte by byte.
//!
//! Regenerate with `cargo test --lib -- --ignored write_seed_corpus` from
//! `fuzz/`; `cargo test` also runs every seed through its target.

use quire_protocol::ext::{self, Ext, Welcome};
use quire_protocol::lib0::{write_var_string, write_var_uint};
use quire_protocol::{Message, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::room::kind;

fn awareness(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    write_var_uint(&mut buf, entries.len() as u64);
    for (id, clock, state) in entries {
        write_var_uint(&mut buf, *id);
        write_var_uint(&mut buf, *clock);
        write_var_string(&mut buf, state);
    }
    buf
}

/// A real update and a real state vector.
fn sample_update() -> (Vec<u8>, Vec<u8>) {
    let doc = Doc::with_client_id(42);
    let text = doc.get_or_insert_text("content");
    let update = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello wörld");
        text.remove_range(&mut txn, 1, 2);
        txn.encode_update_v1()
    };
    let sv = doc.transact().state_vector().encode_v1();
    (update, sv)
}

pub fn frame_decoder() -> Vec<Vec<u8>> {
    let (update, sv) = sample_update();
    let presence = awareness(&[(5, 1, r#"{"user":{"name":"ann"}}"#), (7, 9, "null")]);
    vec![
        Message::Sync(SyncMessage::Step1(&sv)).encode(),
        Message::Sync(SyncMessage::Step1(&StateVector::default().encode_v1())).encode(),
        Message::Sync(SyncMessage::Step2(&update)).encode(),
        Message::Sync(SyncMessage::Update(&update)).encode(),
        Message::Awareness(&presence).encode(),
        Message::PermissionDenied("no token").encode(),
        Message::QueryAwareness.encode(),
        // Bare awareness updates (the target also applies the raw input).
        presence,
        awareness(&[(1, 4, "{}"), (2, 2, "[1]"), (1, 4, "null")]),
    ]
}

pub fn extensions() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        Ext::Welcome(Welcome {
            conn_id: 7,
            server_time_ms: 1_700_000_000_000,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_message_bytes: 32 << 20,
            max_document_bytes: 64 << 20,
        })
        .encode(),
        Ext::Ping(1).encode(),
        Ext::Pong(1).encode(),
        Ext::Saved { through: 42 }.encode(),
        Ext::Emit {
            name: "chat",
            payload: r#"{"text":"hi"}"#,
            ack: 3,
        }
        .encode(),
        Ext::Event {
            name: "chat",
            payload: "{}",
            sender: 9,
            sender_name: "ann",
            at_ms: 5,
        }
        .encode(),
        Ext::EmitAck {
            ack: 3,
            delivered: 2,
        }
        .encode(),
        Ext::Error {
            code: 4413,
            message: "too large",
        }
        .encode(),
    ];
    // A reassembly sequence: limit selector 3 (4096 bytes), then the
    // fragments of a sync update, each with its length byte.
    let (update, _) = sample_update();
    let frame = Message::Sync(SyncMessage::Update(&update)).encode();
    let mut sequence = vec![3u8];
    for piece in ext::fragment(&frame, 16) {
        sequence.push(piece.len() as u8);
        sequence.extend_from_slice(&piece);
    }
    seeds.push(sequence);
    seeds
}

/// One op byte for `room_sequence`.
fn op(conn: u8, kind: u8) -> u8 {
    (kind << 2) | conn
}

pub fn room_sequence() -> Vec<Vec<u8>> {
    let (update, sv) = sample_update();
    let mut seeds = Vec::new();

    // Two Quire clients and a stock one: handshakes, edits, presence, chat.
    let mut s = vec![0u8];
    for c in 0..3 {
        s.extend([op(c, kind::PUMP)]);
    }
    s.extend([
        op(0, kind::EDIT),
        0,
        0,
        3,
        op(1, kind::PUMP),
        op(1, kind::EDIT),
        0,
        2,
        4,
    ]);
    s.extend([
        op(2, kind::EDIT),
        2,
        1,
        3,
        op(0, kind::PUMP),
        op(2, kind::PUMP),
    ]);
    s.extend([op(0, kind::AWARENESS), 1, 0, 1, 2, op(1, kind::QUERY)]);
    s.extend([
        op(0, kind::EMIT),
        0,
        0,
        1,
        op(1, kind::PUMP),
        op(0, kind::CHECK),
    ]);
    seeds.push(s);

    // Held-back edits delivered out of order and twice, then a reconnect.
    let mut s = vec![0x01];
    s.extend([op(0, kind::EDIT), 0x80, 0, 2, op(0, kind::EDIT), 0x80, 3, 1]);
    s.extend([op(0, kind::EDIT), 0x83, 1, 7, op(0, kind::RESEND), 2]);
    s.extend([
        op(0, kind::RESEND),
        1,
        op(0, kind::RESEND),
        0,
        op(0, kind::RESEND),
        2,
    ]);
    s.extend([
        op(0, kind::PUMP),
        op(0, kind::LEAVE),
        op(0, kind::EDIT),
        0x80,
        0,
        1,
    ]);
    s.extend([
        op(0, kind::PUMP),
        op(0, kind::PUMP),
        op(1, kind::PUMP),
        op(1, kind::CHECK),
    ]);
    seeds.push(s);

    // Corrupted updates and state vectors, an import, a slow reader.
    let mut s = vec![0x00];
    s.extend([
        op(3, kind::EDIT),
        1,
        5,
        5,
        op(3, kind::MUTATE),
        0,
        3,
        0xff,
        0,
    ]);
    s.extend([
        op(2, kind::MUTATE),
        0,
        1,
        0,
        3,
        op(1, kind::STEP1),
        2,
        3,
        0xff,
        0xff,
        0xff,
    ]);
    s.extend([op(1, kind::IMPORT), 0, op(0, kind::EDIT), 0, 9, 1]);
    for _ in 0..6 {
        s.extend([op(1, kind::EDIT), 0, 4, 1]);
    }
    // Read-only: the edit is refused; writable again after a reconnect.
    s.extend([
        op(0, kind::PUMP),
        op(0, kind::TOGGLE),
        3,
        op(0, kind::EDIT),
        0,
        1,
        1,
    ]);
    s.extend([
        op(0, kind::PUMP),
        op(0, kind::TOGGLE),
        1,
        op(0, kind::PUMP),
        op(0, kind::PUMP),
    ]);
    s.extend([op(0, kind::SET_WRITABLE), 1, op(2, kind::CHECK)]);
    seeds.push(s);

    // Raw frames: a real update and state vector as connection 2 would send them.
    let mut s = vec![0x10];
    for frame in [
        Message::Sync(SyncMessage::Update(&update)).encode(),
        Message::Sync(SyncMessage::Step1(&sv)).encode(),
        Message::Awareness(&awareness(&[(102, 1, "{}")])).encode(),
    ] {
        s.push(op(2, kind::RAW));
        s.push(frame.len() as u8);
        s.extend_from_slice(&frame);
    }
    s.extend([op(2, kind::PUMP), op(2, kind::YIELD), op(0, kind::PUMP)]);
    seeds.push(s);
    seeds
}

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("frame_decoder", frame_decoder()),
        ("extensions", extensions()),
        ("room_sequence", room_sequence()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_their_targets() {
        for seed in frame_decoder() {
            crate::frame_decoder(&seed);
        }
        for seed in extensions() {
            crate::extensions(&seed);
        }
        for seed in room_sequence() {
            crate::room_sequence(&seed);
        }
    }

    /// Replays whatever is stored under `corpus/` and `artifacts/` (fixed
    /// crashes stay fixed).
    #[test]
    fn stored_inputs_pass_their_targets() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (target, _) in all() {
            for folder in ["corpus", "artifacts"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if folder == "artifacts" && !name.starts_with("fixed-") {
                        continue;
                    }
                    let data = std::fs::read(entry.path()).unwrap();
                    match target {
                        "frame_decoder" => crate::frame_decoder(&data),
                        "extensions" => crate::extensions(&data),
                        _ => crate::room_sequence(&data),
                    }
                }
            }
        }
    }

    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus/"]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (target, seeds) in all() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
            }
        }
    }
}
