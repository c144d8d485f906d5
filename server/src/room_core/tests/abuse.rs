//! The room's abuse-resistance rules (issue 12), one test each, named
//! after what they pin: each failed on the code before its fix.

use super::*;
use quire_protocol::session;

/// Finding 7: the read permission says events need write.
#[test]
fn read_only_members_cannot_send_named_events() {
    let mut room = room();
    room.join(1, true, false).unwrap();
    room.join(2, true, true).unwrap();
    room.frames(1);
    room.frames(2);
    room.deliver(1, emit("cursor", r#"{"at":3}"#, 7));
    assert_eq!(
        got(&mut room, 1),
        [
            Got::Error(u64::from(close::FORBIDDEN)),
            Got::EmitAck {
                ack: 7,
                delivered: 0
            }
        ]
    );
    assert_eq!(got(&mut room, 2), [], "nothing is relayed");
    assert!(room.is_member(1), "a read-only member stays");
}

/// Finding 6: a room reopened on a log whose last writes are not on disk
/// yet (the old room was evicted during a flush stall) acknowledged a
/// reconnecting client's empty sync step 2 at once.
#[test]
fn a_reloaded_room_does_not_acknowledge_before_earlier_writes_are_durable() {
    let mut room = room();
    room.hold_durability(true);
    room.join(1, true, true).unwrap();
    room.send_update(1, &edit(&Doc::with_client_id(7), "typed"));
    room.frames(1);
    room.leave(1);
    let mut reopened = room.reopen();
    reopened.join(2, true, true).unwrap();
    reopened.frames(2);
    reopened.send_update(2, &[0, 0]);
    assert_eq!(got(&mut reopened, 2), [], "not saved before the flush");
    reopened.flush();
    assert_eq!(got(&mut reopened, 2), [Got::Saved(1)]);
}

/// Finding 6: when the store stops confirming writes, Quire members are
/// told (once, and again when they join meanwhile) and nothing is
/// acknowledged; once it resumes, everyone gets a `Saved`.
#[test]
fn a_save_stall_is_told_to_quire_members_and_its_end_shown_by_saved() {
    let stall = session::SAVES_STALLED;
    let mut room = room_with(|c| c.save_stall_timeout = Duration::from_millis(1_000));
    room.hold_durability(true);
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.join(3, false, true).unwrap();
    room.send_update(2, &[0, 0]);
    room.flush();
    for conn in [1, 2, 3] {
        room.frames(conn);
    }
    room.send_update(1, &edit(&Doc::with_client_id(7), "typed"));
    room.advance(999);
    assert_eq!(got(&mut room, 1), []);
    room.advance(1);
    assert_eq!(got(&mut room, 1), [Got::Error(u64::from(stall))]);
    assert_eq!(
        got(&mut room, 2),
        [Got::Update, Got::Error(u64::from(stall))]
    );
    assert_eq!(
        got(&mut room, 3),
        [Got::Update],
        "stock clients get no extension frames"
    );
    room.advance(5_000);
    assert_eq!(got(&mut room, 1), [], "told once");
    room.join(4, true, true).unwrap();
    assert!(got(&mut room, 4).contains(&Got::Error(u64::from(stall))));
    room.flush();
    assert_eq!(got(&mut room, 1), [Got::Saved(1)]);
    assert_eq!(
        got(&mut room, 2),
        [Got::Saved(1)],
        "its earlier message again"
    );
    assert_eq!(got(&mut room, 4), [Got::Saved(0)]);
    assert_eq!(got(&mut room, 3), []);
}

/// Finding 2: a member could erase or rewrite another member's presence,
/// and leaving took only what it had touched.
#[test]
fn presence_belongs_to_the_connection_that_introduced_it() {
    let mut room = room();
    for conn in [1, 2, 3] {
        room.join(conn, true, true).unwrap();
    }
    room.deliver(1, awareness(10, 1, r#"{"user":{"name":"ann"}}"#));
    room.deliver(2, awareness(20, 1, "{}"));
    for conn in [1, 2, 3] {
        room.frames(conn);
    }
    room.deliver(2, awareness(10, 2, r#"{"user":{"name":"eve"}}"#));
    room.deliver(2, awareness(10, 3, "null"));
    assert_eq!(got(&mut room, 3), [], "nothing relayed");
    room.deliver(1, emit(CHAT_EVENT, r#"{"text":"hi"}"#, 0));
    let Got::Event { payload, .. } = &got(&mut room, 3)[0] else {
        panic!()
    };
    assert!(payload.contains(r#""user":"ann""#), "{payload}");
    room.leave(2);
    assert_eq!(
        got(&mut room, 3),
        [Got::Awareness(vec![(20, "null".into())])]
    );
    room.leave(1);
    assert_eq!(
        got(&mut room, 3),
        [Got::Awareness(vec![(10, "null".into())])]
    );
    assert_eq!(room.core().presence().entries(), 0, "nothing left behind");
}

/// Finding 2: one connection could list any number of awareness clients.
#[test]
fn presence_is_bounded_per_connection_per_room_and_in_bytes() {
    let mut room = room_with(|c| {
        c.max_presence_per_connection = 2;
        c.max_presence_per_room = 3;
        c.max_presence_state_bytes = 100;
    });
    for conn in [1, 2, 3, 4] {
        room.join(conn, true, true).unwrap();
    }
    room.deliver(1, awareness(10, 1, "{}"));
    room.deliver(1, awareness(11, 1, "{}"));
    room.deliver(1, awareness(12, 1, "{}"));
    assert_eq!(
        room.close_of(1).map(|c| c.code),
        Some(close::INVALID_PAYLOAD)
    );
    room.deliver(2, awareness(20, 1, "{}"));
    room.deliver(2, awareness(21, 1, "{}"));
    room.deliver(3, awareness(30, 1, "{}"));
    room.deliver(4, awareness(40, 1, "{}"));
    assert_eq!(
        room.close_of(4).map(|c| c.code),
        Some(close::TRY_AGAIN_LATER)
    );
    room.deliver(3, awareness(30, 2, &format!(r#""{}""#, "x".repeat(100))));
    assert_eq!(
        room.close_of(3).map(|c| c.code),
        Some(close::MESSAGE_TOO_BIG)
    );
    assert_eq!(
        room.core().presence().entries(),
        2,
        "only member 2's remain"
    );
}

fn chat(text: &str) -> Inbound {
    emit(
        CHAT_EVENT,
        &serde_json::json!({ "text": text }).to_string(),
        1,
    )
}

/// Finding 3: any message up to the frame limit was stored and replayed.
#[test]
fn a_chat_message_over_the_size_cap_is_refused_and_the_sender_stays() {
    let mut room = room_with(|c| c.max_chat_message_bytes = 10);
    room.join(1, true, true).unwrap();
    room.join(2, true, true).unwrap();
    room.frames(1);
    room.frames(2);
    room.deliver(1, chat(&"x".repeat(11)));
    assert_eq!(
        got(&mut room, 1),
        [
            Got::Error(u64::from(close::MESSAGE_TOO_BIG)),
            Got::EmitAck {
                ack: 1,
                delivered: 0
            }
        ]
    );
    assert_eq!(got(&mut room, 2), []);
    assert!(room.chat().is_empty());
    room.deliver(1, chat(&"x".repeat(10)));
    assert_eq!(room.chat().len(), 1);
}

/// Finding 3: the history was kept forever; it is bounded in bytes too,
/// in the room (what joiners get) and in the store.
#[test]
fn chat_history_is_bounded_in_bytes_oldest_dropped() {
    let mut room = room_with(|c| c.chat_history_bytes = 300);
    room.join(1, true, true).unwrap();
    for n in 0..10 {
        room.deliver(1, chat(&format!("message {n} {}", "y".repeat(50))));
    }
    let stored: usize = room.chat().iter().map(String::len).sum();
    assert!(stored <= 300, "{stored}");
    assert!(room.chat().last().unwrap().contains("message 9"));
    room.join(2, true, true).unwrap();
    let history = got(&mut room, 2)
        .into_iter()
        .find_map(|g| match g {
            Got::Event { name, payload } if name == CHAT_HISTORY_EVENT => Some(payload),
            _ => None,
        })
        .expect("history");
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.len(), room.chat().len());
    // A room reopened on the stored chat keeps within the bound too.
    let reopened = Harness::on_log(
        Config {
            chat_history_bytes: 200,
            ..Harness::config()
        },
        Vec::new(),
        room.chat().to_vec(),
    );
    let bytes = reopened.core().chat_bytes();
    assert!((1..=200).contains(&bytes), "{bytes}");
}

/// Finding 3: chat bytes count with the document's for the size limit.
#[test]
fn chat_counts_towards_the_document_size_limit() {
    let mut room = room_with(|c| c.max_document_bytes = 400);
    room.join(1, true, true).unwrap();
    room.deliver(1, chat(&"z".repeat(200)));
    room.frames(1);
    room.deliver(1, chat(&"z".repeat(200)));
    assert_eq!(
        got(&mut room, 1),
        [
            Got::Error(u64::from(close::DOCUMENT_TOO_LARGE)),
            Got::EmitAck {
                ack: 1,
                delivered: 0
            }
        ]
    );
    let update = edit(&Doc::with_client_id(3), &"w".repeat(200));
    room.send_update(1, &update);
    assert_eq!(
        room.close_of(1).map(|c| c.code),
        Some(close::DOCUMENT_TOO_LARGE)
    );
    assert_eq!(room.chat().len(), 1);
    assert!(room.log().is_empty());
}

/// Finding 4: every incomplete update was answered with a fresh sync
/// step 1 at once: a client could keep the room encoding state vectors.
#[test]
fn incomplete_updates_ask_for_what_is_missing_with_backoff() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.frames(1);
    let doc = Doc::with_client_id(7);
    let first = edit(&doc, "a");
    let later: Vec<Vec<u8>> = (0..20).map(|n| edit(&doc, &n.to_string())).collect();
    let step1s = |room: &mut Harness| got(room, 1).iter().filter(|g| **g == Got::Step1).count();
    for update in &later[..10] {
        room.send_update(1, update);
    }
    assert_eq!(step1s(&mut room), 1, "one step 1 for a burst");
    room.advance(99);
    room.send_update(1, &later[10]);
    assert_eq!(step1s(&mut room), 0);
    room.advance(1);
    room.send_update(1, &later[11]);
    assert_eq!(step1s(&mut room), 1, "after 100 ms");
    room.advance(150);
    room.send_update(1, &later[12]);
    assert_eq!(step1s(&mut room), 0, "the wait doubled to 200 ms");
    room.advance(50);
    room.send_update(1, &later[13]);
    assert_eq!(step1s(&mut room), 1);
    // Once the document has it all, the next gap is asked about at once.
    let mut all = vec![first.as_slice()];
    all.extend(later.iter().map(Vec::as_slice));
    room.send_update(1, &yrs::merge_updates_v1(all).unwrap());
    assert!(got(&mut room, 1).contains(&Got::Saved(15)));
    let other = Doc::with_client_id(8);
    edit(&other, "x");
    room.send_update(1, &edit(&other, "y"));
    assert_eq!(step1s(&mut room), 1);
}

/// Found by `clients_converge_under_any_schedule` while adding the
/// backoff: an incomplete update dropped while step 1 waited, then an
/// answer (reordered before it) that did not carry it: the room must ask
/// again at once, or it never learns what was dropped.
#[test]
fn a_step1_owed_goes_out_when_an_answer_leaves_something_missing() {
    let mut room = room();
    room.join(1, true, true).unwrap();
    room.frames(1);
    let doc = Doc::with_client_id(7);
    let first = edit(&doc, "a");
    let second = edit(&doc, "b");
    let third = edit(&doc, "c");
    room.send_update(1, &second);
    room.send_update(1, &third);
    assert_eq!(got(&mut room, 1), [Got::Step1], "the second one waits");
    // An answer computed before the third edit: the first two only.
    room.send_update(
        1,
        &yrs::merge_updates_v1([first.as_slice(), second.as_slice()]).unwrap(),
    );
    assert_eq!(got(&mut room, 1), [Got::Step1], "asked again at once");
    room.send_update(1, &third);
    assert_eq!(got(&mut room, 1), [Got::Saved(4)]);
    assert_eq!(text_of(&room), "cba");
}
