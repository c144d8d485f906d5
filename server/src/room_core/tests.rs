//! The room's rules, one test each, through the synchronous harness: no
//! socket, no task, no timed wait.

use std::time::Duration;

use bytes::Bytes;
use quire_protocol::ext::{CHAT_EVENT, CHAT_HISTORY_EVENT, Ext};
use quire_protocol::lib0::{write_var_string, write_var_uint};
use quire_protocol::{Message, SyncMessage, close};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

use super::harness::Harness;
use super::{Inbound, RoomError};
use crate::config::Config;

/// What a member received, in a form tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Step1,
    Step2,
    Update,
    Awareness(Vec<(u64, String)>),
    PermissionDenied,
    Saved(u64),
    Event { name: String, payload: String },
    EmitAck { ack: u64, delivered: u64 },
    Error(u64),
}

fn read(frame: &Bytes) -> Got {
    if Ext::is_ext(frame) {
        return match Ext::decode(frame).expect("extension frames decode") {
            Ext::Saved { through } => Got::Saved(through),
            Ext::Event { name, payload, .. } => Got::Event {
                name: name.to_owned(),
                payload: payload.to_owned(),
            },
            Ext::EmitAck { ack, delivered } => Got::EmitAck { ack, delivered },
            Ext::Error { code, .. } => Got::Error(code),
            other => panic!("the room queued {other:?}"),
        };
    }
    match Message::decode(frame).expect("frames decode") {
        Message::Sync(SyncMessage::Step1(_)) => Got::Step1,
        Message::Sync(SyncMessage::Step2(_)) => Got::Step2,
        Message::Sync(SyncMessage::Update(_)) => Got::Update,
        Message::Awareness(update) => {
            let mut cursor = quire_protocol::lib0::Cursor::new(update);
            let n = cursor.read_var_uint("count").unwrap();
            let entries = (0..n)
                .map(|_| {
                    let client = cursor.read_var_uint("client").unwrap();
                    let _clock = cursor.read_var_uint("clock").unwrap();
                    (client, cursor.read_var_string("state").unwrap().to_owned())
                })
                .collect();
            Got::Awareness(entries)
        }
        Message::PermissionDenied(_) => Got::PermissionDenied,
        Message::QueryAwareness => panic!("the room queued a query"),
    }
}

fn got(room: &mut Harness, conn: u64) -> Vec<Got> {
    room.frames(conn).iter().map(read).collect()
}

/// A room whose members have room for every frame.
fn room() -> Harness {
    Harness::new(Harness::config())
}

fn room_with(tune: impl FnOnce(&mut Config)) -> Harness {
    let mut config = Harness::config();
    tune(&mut config);
    Harness::new(config)
}

/// `doc` types `text` at the start of the shared text; the update.
fn edit(doc: &Doc, text: &str) -> Vec<u8> {
    let content = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    content.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

fn text_of(room: &Harness) -> String {
    let document = room.document().expect("the room is available");
    let content = document.doc().get_or_insert_text("content");
    content.get_string(&document.doc().transact())
}

fn awareness(client: u64, clock: u64, state: &str) -> Inbound {
    let mut update = Vec::new();
    write_var_uint(&mut update, 1);
    write_var_uint(&mut update, client);
    write_var_uint(&mut update, clock);
    write_var_string(&mut update, state);
    Inbound::Awareness(update.into())
}

fn emit(name: &str, payload: &str, ack: u64) -> Inbound {
    Inbound::Emit {
        name: name.into(),
        payload: payload.into(),
        ack,
    }
}

#[test]
fn a_joining_member_gets_step1_then_presence_then_chat_history() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
    room.deliver(1, emit(CHAT_EVENT, r#"{"text":"hi"}"#, 0));
    room.frames(1);
    room.join(2, true, true).unwrap();
    let first = got(&mut room, 2);
    assert_eq!(first[0], Got::Step1);
    assert_eq!(
        first[1],
        Got::Awareness(vec![(10, r#"{"user":{"name":"ann"}}"#.into())])
    );
    assert!(matches!(&first[2], Got::Event { name, .. } if name == CHAT_HISTORY_EVENT));
    assert_eq!(first.len(), 3);
    // A stock client never sees an extension frame.
    room.join(3, false, true).unwrap();
    assert_eq!(got(&mut room, 3).len(), 2);
}

/// Issue 12, finding 11: a document over the limit was refused at join,
/// so one that grew past it (the stored delta can outgrow the raw update)
/// became unjoinable. It is served; its writes are refused.
#[test]
fn a_document_over_the_limit_is_joined_but_not_written() {
    let source = Doc::with_client_id(5);
    let big = edit(&source, &"x".repeat(2_000));
    let mut room = Harness::on_log(
        Config {
            max_document_bytes: 1_000,
            ..Harness::config()
        },
        vec![big],
        Vec::new(),
    );
    room.join(1, true, true).unwrap();
    assert_eq!(got(&mut room, 1), [Got::Step1]);
    room.send_update(1, &[0, 0]);
    assert_eq!(got(&mut room, 1), [Got::Saved(1)], "nothing new is fine");
    room.send_update(1, &edit(&source, "more"));
    assert_eq!(
        room.close_of(1).map(|c| c.code),
        Some(close::DOCUMENT_TOO_LARGE)
    );
    assert_eq!(room.log().len(), 1, "nothing stored");
}

#[test]
fn an_update_is_stored_relayed_to_the_others_and_saved_once_durable() {
    let mut room = room();
    room.hold_durability(true);
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.frames(1);
    room.frames(2);
    let update = edit(&Doc::with_client_id(7), "hello");
    room.send_update(1, &update);
    assert_eq!(room.log().len(), 1, "stored before it is relayed");
    assert_eq!(got(&mut room, 2), [Got::Update]);
    assert_eq!(
        got(&mut room, 1),
        [],
        "not echoed, not saved before the flush"
    );
    room.flush();
    assert_eq!(got(&mut room, 1), [Got::Saved(1)]);
    // A duplicate holds nothing new: acknowledged, not stored or relayed.
    room.send_update(1, &update);
    assert_eq!(got(&mut room, 1), [Got::Saved(2)]);
    assert_eq!(got(&mut room, 2), []);
    assert_eq!(room.log().len(), 1);
    assert_eq!(text_of(&room), "hello");
}

#[test]
fn saved_waits_for_every_write_stored_before_the_message() {
    let mut room = room();
    room.hold_durability(true);
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.send_update(1, &edit(&Doc::with_client_id(7), "a"));
    // Member 2's duplicate-free message carries nothing new, yet an earlier
    // write of the room is not on disk: its Saved waits for that too.
    room.send_update(2, &[0, 0]);
    room.frames(2);
    assert_eq!(got(&mut room, 2), []);
    room.flush();
    assert_eq!(got(&mut room, 2), [Got::Saved(1)]);
}

#[test]
fn read_only_members_are_told_once_and_never_saved_after_a_refusal() {
    let mut room = room();
    room.join(1, true, false).unwrap();
    room.join(2, false, false).unwrap();
    room.frames(1);
    room.frames(2);
    // The empty step 2 every client sends on connect is not an attempt.
    room.send_update(1, &[0, 0]);
    assert_eq!(got(&mut room, 1), [Got::Saved(1)]);
    let doc = Doc::with_client_id(7);
    room.send_update(1, &edit(&doc, "no"));
    room.send_update(1, &edit(&doc, "still no"));
    assert_eq!(got(&mut room, 1), [Got::Error(u64::from(close::FORBIDDEN))]);
    room.deliver(1, Inbound::SetWritable(true));
    room.send_update(1, &edit(&Doc::with_client_id(8), "yes"));
    assert_eq!(
        got(&mut room, 1),
        [],
        "a Saved would claim the refused edits"
    );
    assert_eq!(text_of(&room), "yes");
    // Stock clients hear it as y-protocols' permission-denied.
    room.send_update(2, &edit(&Doc::with_client_id(9), "no"));
    assert_eq!(got(&mut room, 2), [Got::Update, Got::PermissionDenied]);
    assert!(room.is_member(2), "a read-only member stays");
}

#[test]
fn an_update_past_a_gap_is_dropped_and_the_sender_asked_for_what_is_missing() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.frames(1);
    let doc = Doc::with_client_id(7);
    let first = edit(&doc, "a");
    let second = edit(&doc, "b");
    room.send_update(1, &second);
    assert_eq!(got(&mut room, 1), [Got::Step1]);
    assert!(room.log().is_empty());
    // Its answer brings both; only then is anything saved.
    let answer = yrs::merge_updates_v1([first.as_slice(), second.as_slice()]).unwrap();
    room.send_update(1, &answer);
    assert_eq!(got(&mut room, 1), [Got::Saved(2)]);
    assert_eq!(text_of(&room), "ba");
}

#[test]
fn a_member_whose_queue_is_full_is_cut_off_and_its_presence_removed() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.join_with_capacity(2, true, true, 2).unwrap();
    room.deliver(2, awareness(20, 1, "{}"));
    room.frames(1);
    let doc = Doc::with_client_id(7);
    for text in ["a", "b", "c"] {
        room.send_update(1, &edit(&doc, text));
    }
    assert_eq!(
        room.close_of(2).map(|c| c.code),
        Some(close::TOO_SLOW),
        "cut off, never silently dropped"
    );
    assert!(!room.is_member(2));
    assert!(got(&mut room, 1).contains(&Got::Awareness(vec![(20, "null".into())])));
    assert_eq!(room.metrics().slow_consumers_cut.get(), 1);
}

#[test]
fn a_storage_failure_closes_everyone_relays_nothing_and_serves_nobody() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.frames(2);
    room.fail_next_append("disk on fire");
    room.send_update(1, &edit(&Doc::with_client_id(7), "lost"));
    for conn in [1, 2] {
        assert_eq!(
            room.close_of(conn).map(|c| c.code),
            Some(close::INTERNAL_ERROR)
        );
    }
    assert_eq!(got(&mut room, 2), [], "nothing storage lost was relayed");
    assert!(matches!(
        room.join(3, true, true),
        Err(RoomError::Unavailable(_))
    ));
    assert!(matches!(
        room.import(&edit(&Doc::with_client_id(8), "x")),
        Err(RoomError::Unavailable(_))
    ));
}

#[test]
fn an_import_that_storage_loses_is_an_error() {
    let mut room = room();
    room.fail_next_append("disk on fire");
    let result = room.import(&edit(&Doc::with_client_id(7), "x"));
    assert!(
        matches!(&result, Err(RoomError::Unavailable(reason)) if reason.contains("disk on fire")),
        "{result:?}"
    );
}

#[test]
fn presence_is_relayed_removed_on_leave_and_swept_when_stale() {
    let mut room = room_with(|c| c.awareness_timeout = Duration::from_millis(600));
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.join(3, true, true).unwrap();
    room.deliver(1, awareness(10, 1, "{}"));
    room.deliver(2, awareness(20, 1, "{}"));
    for conn in [1, 2, 3] {
        room.frames(conn);
    }
    room.leave(1);
    assert_eq!(
        got(&mut room, 3),
        [Got::Awareness(vec![(10, "null".into())])]
    );
    room.advance(700);
    assert_eq!(
        got(&mut room, 3),
        [Got::Awareness(vec![(20, "null".into())])]
    );
}

/// Issue 13, fix 1: a stock y-websocket client alone in a quiet room was
/// closed and reconnected every 30 s (y-websocket's
/// `messageReconnectTimeout`): its own presence renewals were relayed to
/// everyone but it, so it heard nothing. A stock sender gets them back (as
/// from the Yjs reference server); a Quire sender, which gets application
/// pings, does not.
#[test]
fn presence_renewals_are_echoed_to_a_stock_sender_and_not_to_a_quire_one() {
    let mut room = room();
    room.join(1, false, true).unwrap();
    room.frames(1);
    room.deliver(1, awareness(10, 1, "{}"));
    assert_eq!(
        got(&mut room, 1),
        [Got::Awareness(vec![(10, "{}".into())])],
        "alone in the room, the stock client hears its own presence"
    );
    room.deliver(1, awareness(10, 2, "{}"));
    assert_eq!(got(&mut room, 1), [Got::Awareness(vec![(10, "{}".into())])]);

    room.join(2, true, true).unwrap();
    room.frames(2);
    room.deliver(2, awareness(20, 1, "{}"));
    assert_eq!(got(&mut room, 2), [], "a Quire sender is not echoed");
    assert_eq!(got(&mut room, 1), [Got::Awareness(vec![(20, "{}".into())])]);
    room.deliver(1, awareness(10, 3, "{}"));
    assert_eq!(got(&mut room, 1), [Got::Awareness(vec![(10, "{}".into())])]);
    assert_eq!(got(&mut room, 2), [Got::Awareness(vec![(10, "{}".into())])]);
    // A renewal the room ignores (an old clock) is not echoed either.
    room.deliver(1, awareness(10, 1, "{}"));
    assert_eq!(got(&mut room, 1), []);
}

#[test]
fn chat_is_stamped_stored_sent_to_everyone_and_kept_to_the_history_length() {
    let mut room = room_with(|c| c.chat_history = 2);
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.join(3, false, true).unwrap();
    room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
    for conn in [1, 2, 3] {
        room.frames(conn);
    }
    for n in 0..3 {
        room.deliver(1, emit(CHAT_EVENT, &format!(r#"{{"text":"m{n}"}}"#), 9));
    }
    // Issue 12, finding 3: the store keeps the history's length too.
    assert_eq!(room.chat().len(), 2, "the oldest is dropped from the store");
    let to_sender = got(&mut room, 1);
    assert_eq!(
        to_sender[1],
        Got::EmitAck {
            ack: 9,
            delivered: 2
        }
    );
    let Got::Event { payload, .. } = &to_sender[0] else {
        panic!("{to_sender:?}")
    };
    let record: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(record["user"], "ann");
    assert_eq!(record["text"], "m0");
    assert_eq!(got(&mut room, 2).len(), 3);
    assert_eq!(got(&mut room, 3), [], "stock clients get no events");
    room.join(4, true, true).unwrap();
    let history = got(&mut room, 4)
        .into_iter()
        .find_map(|g| match g {
            Got::Event { name, payload } if name == CHAT_HISTORY_EVENT => Some(payload),
            _ => None,
        })
        .expect("history");
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m1", "m2"]);
}

#[test]
fn bad_events_close_the_sender_and_read_only_chat_is_refused() {
    let mut room = room();
    room.join(1, true, false).unwrap();
    room.frames(1);
    room.deliver(1, emit(CHAT_EVENT, r#"{"text":"hi"}"#, 0));
    assert_eq!(got(&mut room, 1), [Got::Error(u64::from(close::FORBIDDEN))]);
    assert!(room.chat().is_empty());
    for (n, (name, payload)) in [
        (CHAT_HISTORY_EVENT, "[]"),
        ("cursor", "not json"),
        (CHAT_EVENT, r#"{"text":"  "}"#),
    ]
    .into_iter()
    .enumerate()
    {
        let conn = 10 + n as u64;
        room.join(conn, true, true).unwrap();
        room.deliver(conn, emit(name, payload, 0));
        assert_eq!(
            room.close_of(conn).map(|c| c.code),
            Some(close::INVALID_PAYLOAD),
            "{name} {payload}"
        );
    }
}

#[test]
fn a_long_log_is_compacted_into_one_entry_holding_the_same_document() {
    let mut room = room_with(|c| c.compact_after = 3);
    room.join(1, true, true).unwrap();
    let doc = Doc::with_client_id(7);
    for text in ["a", "b"] {
        room.send_update(1, &edit(&doc, text));
    }
    assert_eq!(room.log().len(), 2);
    room.send_update(1, &edit(&doc, "c"));
    assert_eq!(room.log().len(), 1);
    assert_eq!(
        room.stored().encode_state().unwrap(),
        room.document().unwrap().encode_state().unwrap()
    );
    let mut reopened = room.reopen();
    reopened.join(1, true, true).unwrap();
    assert_eq!(text_of(&reopened), "cba");
}

/// Issue 14, target 2: compacting every `compact_after` entries encoded
/// the whole document each time, O(n²) over a growing document. After a
/// compaction, the live room waits until the entries after the state hold
/// as many bytes as it, or until the log is 16 times `compact_after` long.
#[test]
fn a_live_room_compacts_again_once_the_log_after_the_state_is_as_big_as_the_state() {
    let mut room = room_with(|c| c.compact_after = 3);
    room.join(1, true, true).unwrap();
    let doc = Doc::with_client_id(7);
    let big = "x".repeat(2_000);
    for text in [big.as_str(), "a", "b"] {
        room.send_update(1, &edit(&doc, text));
    }
    assert_eq!(room.log().len(), 1, "the first compaction (no state yet)");
    let state = room.log()[0].len();
    assert!(state > 2_000);
    for i in 0..10 {
        room.send_update(1, &edit(&doc, &format!("{i}")));
    }
    assert_eq!(room.log().len(), 11, "small edits next to the state wait");
    room.send_update(1, &edit(&doc, &"y".repeat(state)));
    assert_eq!(room.log().len(), 1, "as many bytes as the state: compacted");
    for i in 0..46 {
        room.send_update(1, &edit(&doc, &format!("{i}")));
    }
    assert_eq!(room.log().len(), 47);
    room.send_update(1, &edit(&doc, "z"));
    assert_eq!(room.log().len(), 1, "16 × compact_after entries: compacted");
    let mut reopened = room.reopen();
    reopened.join(1, true, true).unwrap();
    assert_eq!(text_of(&reopened), text_of(&room));
}

#[test]
fn an_empty_room_asks_to_be_evicted_after_the_grace_period() {
    let mut room = room_with(|c| c.room_grace = Duration::from_millis(1_000));
    room.join(1, true, true).unwrap();
    room.advance(5_000);
    assert_eq!(room.evictions(), 0, "never while someone is in it");
    room.leave(1);
    room.advance(999);
    assert_eq!(room.evictions(), 0);
    room.advance(1);
    assert_eq!(room.evictions(), 1);
    // If it could not leave, it asks again a grace period later.
    room.advance(1_000);
    assert_eq!(room.evictions(), 2);
}

#[test]
fn deletion_and_shutdown_close_every_member_with_their_codes() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.send_update(1, &edit(&Doc::with_client_id(7), "gone"));
    room.delete();
    assert_eq!(
        room.close_of(1).map(|c| c.code),
        Some(close::DOCUMENT_DELETED)
    );
    assert!(room.log().is_empty());
    room.join(2, true, true).unwrap();
    assert_eq!(text_of(&room), "", "a deleted document starts afresh");
    let doc = Doc::with_client_id(8);
    room.send_update(2, &edit(&doc, "a"));
    room.send_update(2, &edit(&doc, "b"));
    room.shutdown();
    assert_eq!(room.close_of(2).map(|c| c.code), Some(close::GOING_AWAY));
    assert_eq!(room.log().len(), 1, "compacted on the way out");
}

#[test]
fn invalid_input_closes_only_its_sender_and_changes_nothing() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.send_update(1, &edit(&Doc::with_client_id(7), "kept"));
    room.frames(2);
    room.deliver(2, Inbound::Update(Bytes::from_static(b"\xff\xff\xff")));
    assert_eq!(
        room.close_of(2).map(|c| c.code),
        Some(close::INVALID_PAYLOAD)
    );
    room.deliver(
        1,
        Inbound::StateVector(Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01])),
    );
    assert_eq!(
        room.close_of(1).map(|c| c.code),
        Some(close::INVALID_PAYLOAD)
    );
    assert_eq!(room.metrics().rejected_inputs.get(), 2);
    assert_eq!(text_of(&room), "kept");
    assert_eq!(room.log().len(), 1);
}

/// The payload of every `sync update` frame among `frames`.
fn relayed_updates(frames: &[Bytes]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter_map(|frame| match Message::decode(frame) {
            Ok(Message::Sync(SyncMessage::Update(update))) => Some(update.to_vec()),
            _ => None,
        })
        .collect()
}

/// Issue 13, fix 3: the room relayed and stored a delta re-encoded by
/// yrs, which writes a map-valued attribute (a link mark's attrs) with its
/// keys in hash order, so the other clients saw another key order than the
/// sender wrote. An update that is all new goes out and to storage as it
/// came; one that is partly known still gives only what is new.
#[test]
fn an_update_all_new_is_relayed_and_stored_as_sent_and_a_partly_known_one_only_in_its_new_part() {
    let mut room = room();
    room.join(1, false, true).unwrap();
    room.join(2, false, true).unwrap();
    room.frames(1);
    room.frames(2);
    let source = Doc::with_client_id(9);
    let text = source.get_or_insert_text("content");
    let attrs: yrs::types::Attrs = [(
        "link".into(),
        yrs::Any::from(std::collections::HashMap::from(
            ["href", "target", "rel", "class", "title"]
                .map(|k| (k.to_owned(), yrs::Any::from(format!("{k} value")))),
        )),
    )]
    .into();
    let linked = {
        let mut txn = source.transact_mut();
        text.insert_with_attributes(&mut txn, 0, "a link", attrs);
        txn.encode_update_v1()
    };
    room.send_update(1, &linked);
    assert_eq!(
        relayed_updates(&room.frames(2)),
        std::slice::from_ref(&linked),
        "relayed as sent"
    );
    assert_eq!(room.log(), std::slice::from_ref(&linked), "stored as sent");

    let clock = || source.transact().state_vector().get(&yrs::ClientID::new(9));
    let before = clock();
    text.insert(&mut source.transact_mut(), 6, " and more");
    let after = clock();
    let whole = source
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    room.send_update(1, &whole);
    let relayed = relayed_updates(&room.frames(2));
    assert_eq!(relayed.len(), 1);
    assert_ne!(relayed[0], whole, "the known part is not relayed again");
    let delta = yrs::Update::decode_v1(&relayed[0]).unwrap();
    let blocks: Vec<_> = delta
        .insertions(true)
        .iter()
        .flat_map(|(client, ranges)| {
            ranges
                .iter()
                .map(|r| (client.get(), r.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(blocks, [(9, before..after)], "only the new blocks");
    assert_eq!(text_of(&room), "a link and more");
}

#[test]
fn step1_is_answered_with_what_the_member_lacks() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.send_update(1, &edit(&Doc::with_client_id(7), "hello"));
    room.join(2, false, true).unwrap();
    room.frames(2);
    let empty = yrs::StateVector::default().encode_v1();
    room.deliver(2, Inbound::StateVector(empty.into()));
    assert_eq!(got(&mut room, 2), [Got::Step2]);
}

mod abuse;

// ----- cluster mode (room_core/remote.rs) -----------------------------------

mod cluster {
    use super::*;
    use crate::fanout::{NodeKey, NodeMessage, RemoteEvent};

    fn clustered() -> Harness {
        let mut room = room();
        room.cluster();
        room
    }

    fn updates(published: &[NodeMessage]) -> usize {
        published
            .iter()
            .filter(|m| matches!(m, NodeMessage::Update(_)))
            .count()
    }

    #[test]
    fn an_update_is_published_to_other_nodes_only_once_durable() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.hold_durability(true);
        room.send_update(1, &edit(&Doc::with_client_id(7), "hi"));
        assert_eq!(updates(&room.published()), 0, "published before durable");
        room.hold_durability(false);
        room.flush();
        assert_eq!(updates(&room.published()), 1);
    }

    /// Before: the publish a durable write hands out waited in the core
    /// until the room's next event (a client's next message, or the
    /// presence sweep up to 5 s later), since the shell carries out
    /// outputs after events and learning of durability is not one.
    #[test]
    fn a_durable_writes_publish_is_due_at_once() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        // A tick: nothing is due until the next presence sweep.
        room.advance(1);
        assert!(room.core().deadline() > room.now().ms);
        room.hold_durability(true);
        room.send_update(1, &edit(&Doc::with_client_id(7), "hi"));
        room.flush_unsettled();
        assert!(
            room.core().deadline() <= room.now().ms,
            "the publish waits for the next event"
        );
        room.advance(0);
        assert_eq!(updates(&room.published()), 1);
        assert!(room.core().deadline() > room.now().ms);
    }

    /// Another node's presence update announcing `client` at `clock`.
    fn remote_presence(client: u64, clock: u64, state: &str) -> NodeMessage {
        let Inbound::Awareness(update) = awareness(client, clock, state) else {
            unreachable!("awareness() builds presence")
        };
        NodeMessage::Awareness(update)
    }

    #[test]
    fn other_nodes_clients_that_leave_or_go_stale_leave_no_entry_and_may_come_back_or_move_here() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        // Removed by its node: announced, then forgotten.
        room.remote(remote_presence(9, 1, "{}"));
        room.frames(1);
        room.remote(remote_presence(9, 1, "null"));
        assert_eq!(
            got(&mut room, 1),
            [Got::Awareness(vec![(9, "null".into())])]
        );
        assert_eq!(room.core().presence().owner_of(9), None);
        // Back at the clock it had (through its restarted node).
        room.remote(remote_presence(9, 1, r#"{"back":true}"#));
        assert_eq!(room.core().presence().state(9), Some(r#"{"back":true}"#));
        // Moved here: the member's announcement takes the entry over.
        room.deliver(1, awareness(9, 1, r#"{"moved":true}"#));
        assert_eq!(room.core().presence().owner_of(9), Some(1));
        assert_eq!(room.core().presence().state(9), Some(r#"{"moved":true}"#));
        // Not renewed (its node died): swept, announced, forgotten.
        room.remote(remote_presence(10, 1, "{}"));
        room.advance(Harness::config().awareness_timeout.as_millis() as u64 + 1_000);
        assert_eq!(room.core().presence().owner_of(10), None);
        assert_eq!(
            room.core().presence().owner_of(9),
            Some(1),
            "a member's own entry stays (removed) while it is connected"
        );
    }

    /// Issue 15's note: a client that moved from node A to node B at the
    /// clock it had vanished from a third node when A's removal came
    /// after B's announcement, until its next renewal (up to 15 s).
    #[test]
    fn a_client_moving_between_two_other_nodes_stays_listed_whatever_order_their_news_comes_in() {
        let (a, b) = (NodeKey(1), NodeKey(2));
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.remote_from(a, remote_presence(9, 3, r#"{"at":"a"}"#));
        room.frames(1);
        // B's announcement first, at the same clock: the client moved.
        room.remote_from(b, remote_presence(9, 3, r#"{"at":"b"}"#));
        assert_eq!(
            got(&mut room, 1),
            [Got::Awareness(vec![(9, r#"{"at":"b"}"#.into())])]
        );
        // Then A's removal, from the node the client left: ignored.
        room.remote_from(a, remote_presence(9, 3, "null"));
        assert!(got(&mut room, 1).is_empty(), "A's late removal was relayed");
        assert_eq!(room.core().presence().state(9), Some(r#"{"at":"b"}"#));
        // B's own removal still removes it.
        room.remote_from(b, remote_presence(9, 3, "null"));
        assert_eq!(
            got(&mut room, 1),
            [Got::Awareness(vec![(9, "null".into())])]
        );
        assert_eq!(room.core().presence().owner_of(9), None);
        // The other order: A's removal first, then B's announcement.
        room.remote_from(a, remote_presence(11, 5, "{}"));
        room.remote_from(a, remote_presence(11, 5, "null"));
        room.remote_from(b, remote_presence(11, 5, r#"{"at":"b"}"#));
        room.frames(1);
        assert_eq!(room.core().presence().state(11), Some(r#"{"at":"b"}"#));
    }

    #[test]
    fn a_single_node_room_publishes_nothing() {
        let mut room = room();
        room.join(1, true, true).unwrap();
        room.send_update(1, &edit(&Doc::with_client_id(7), "hi"));
        room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
        assert!(room.published().is_empty());
    }

    #[test]
    fn an_update_from_another_node_is_relayed_to_every_member_and_never_stored() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.join(2, false, true).unwrap();
        room.frames(1);
        room.frames(2);
        let log_before = room.log().len();
        room.remote(NodeMessage::Update(
            edit(&Doc::with_client_id(7), "remote").into(),
        ));
        assert_eq!(text_of(&room), "remote");
        assert_eq!(got(&mut room, 1), vec![Got::Update]);
        assert_eq!(got(&mut room, 2), vec![Got::Update]);
        assert_eq!(
            room.log().len(),
            log_before,
            "stored by its origin, not here"
        );
        assert!(room.published().is_empty(), "never published back");
        // The same update again holds nothing new: nothing relayed.
        room.remote(NodeMessage::Update(
            edit(&Doc::with_client_id(7), "remote").into(),
        ));
        assert!(got(&mut room, 1).is_empty(), "a duplicate is not relayed");
    }

    #[test]
    fn an_update_from_another_node_that_needs_what_the_room_lacks_asks_for_a_resync() {
        let mut room = clustered();
        let source = Doc::with_client_id(7);
        let _missed = edit(&source, "first ");
        let after = edit(&source, "second");
        room.remote(NodeMessage::Update(after.into()));
        assert_eq!(room.resyncs(), 1);
        assert_eq!(text_of(&room), "", "nothing applied");
    }

    #[test]
    fn presence_events_and_chat_cross_nodes_and_a_dead_nodes_presence_is_swept() {
        let mut room = room_with(|c| c.awareness_timeout = Duration::from_secs(1));
        room.cluster();
        room.join(1, true, true).unwrap();
        room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
        room.deliver(1, emit("cursor", r#"{"at":1}"#, 0));
        room.deliver(1, emit(CHAT_EVENT, r#"{"text":"hi"}"#, 0));
        let published = room.published();
        assert!(matches!(&published[0], NodeMessage::Awareness(_)));
        assert!(matches!(&published[1], NodeMessage::Event(e) if e.name == "cursor"));
        assert!(matches!(&published[2], NodeMessage::Chat(e) if e.payload.contains("hi")));
        room.frames(1);

        // From another node: presence, an event and chat reach the member.
        let mut presence = Vec::new();
        write_var_uint(&mut presence, 1);
        write_var_uint(&mut presence, 20);
        write_var_uint(&mut presence, 1);
        write_var_string(&mut presence, r#"{"user":{"name":"bob"}}"#);
        room.remote(NodeMessage::Awareness(presence.into()));
        let event = RemoteEvent {
            name: "cursor".into(),
            payload: r#"{"at":2}"#.into(),
            sender: 99,
            sender_name: "bob".into(),
            at_ms: 1,
        };
        room.remote(NodeMessage::Event(event.clone()));
        room.remote(NodeMessage::Chat(RemoteEvent {
            name: CHAT_EVENT.into(),
            payload: r#"{"user":"bob","text":"yo"}"#.into(),
            ..event
        }));
        let received = got(&mut room, 1);
        assert_eq!(
            received[0],
            Got::Awareness(vec![(20, r#"{"user":{"name":"bob"}}"#.into())])
        );
        assert!(matches!(&received[1], Got::Event { name, .. } if name == "cursor"));
        assert!(matches!(&received[2], Got::Event { name, .. } if name == CHAT_EVENT));

        // Bob's node dies: nobody refreshes his presence; it is swept.
        // Ann renews hers (her client would), so only Bob's goes.
        room.advance(600);
        room.deliver(1, awareness(10, 2, r#"{"user":{"name":"ann"}}"#));
        room.frames(1);
        room.advance(600);
        let swept = got(&mut room, 1);
        assert!(
            swept.contains(&Got::Awareness(vec![(20, "null".into())])),
            "{swept:?}"
        );
    }

    #[test]
    fn a_room_opening_elsewhere_gets_this_nodes_presence_and_makes_this_room_resync() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
        room.published();
        room.remote(NodeMessage::RoomOpened);
        let published = room.published();
        assert_eq!(published.len(), 1);
        assert!(matches!(&published[0], NodeMessage::Awareness(_)));
        assert_eq!(room.resyncs(), 1);
    }

    #[test]
    fn a_member_leaving_publishes_its_presence_removal() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
        room.published();
        room.leave(1);
        let published = room.published();
        assert!(
            matches!(&published[..], [NodeMessage::Awareness(_)]),
            "{published:?}"
        );
    }

    #[test]
    fn a_deletion_through_another_node_closes_every_member() {
        let mut room = clustered();
        room.join(1, true, true).unwrap();
        room.remote(NodeMessage::Deleted);
        assert_eq!(
            room.close_of(1).map(|c| c.code),
            Some(close::DOCUMENT_DELETED)
        );
    }
}
