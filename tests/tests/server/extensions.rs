//! The quire.v1 extensions: negotiation, save acknowledgements, named
//! events, chat, typed errors, fragments for large documents, size limit.

use std::time::Duration;

use quire_client::NativeClient;
use quire_protocol::ext::{self, CHAT_EVENT, CHAT_HISTORY_EVENT, Ext};
use quire_protocol::{Connection, SessionConfig, SessionEvent};
use quire_tests::{Client, TestServer, WAIT};
use serde_json::Value;
use tokio::sync::broadcast;
use yrs::{Doc, Text, Transact};

fn quire(server: &TestServer, doc: &str) -> NativeClient {
    NativeClient::start(server.ws_url(doc), SessionConfig::default())
}

/// The next named event called `name`, skipping everything else.
async fn next_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    name: &str,
) -> (String, u64, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(SessionEvent::Event {
                name: n,
                payload,
                sender,
                sender_name,
                ..
            }) = events.recv().await
                && n == name
            {
                return (payload, sender, sender_name);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name:?} event"))
}

#[tokio::test]
async fn a_client_that_does_not_ask_never_receives_an_extension_message() {
    let server = TestServer::start().await;
    let mut stock = Client::connect_synced(server.ws_url("mixed")).await;
    let native = quire(&server, "mixed");
    native.wait_synced(WAIT).await.unwrap();
    native.set_awareness(Some(r#"{"user":{"name":"nat"}}"#.into()));
    native.push("from a quire client");
    native.wait_saved(WAIT).await.unwrap();
    native
        .emit_with_ack("wave", r#"{"hand":"left"}"#, WAIT)
        .await
        .unwrap();
    native
        .emit_with_ack(CHAT_EVENT, r#"{"text":"hello"}"#, WAIT)
        .await
        .unwrap();
    stock.wait_text("from a quire client").await;
    stock.push(" and a stock one");
    native.wait_saved(WAIT).await.unwrap();

    assert!(
        stock.frames().iter().all(|f| !Ext::is_ext(f)),
        "a stock client saw an extension frame"
    );
    // While the Quire client did get them (welcome, saves, acks, chat).
    let mut raw_quire = Client::new_quire(server.ws_url("mixed"));
    raw_quire.connect().await;
    raw_quire.wait_synced().await;
    raw_quire
        .wait_until("welcome and chat history", |c| {
            c.frames().iter().filter(|f| Ext::is_ext(f)).count() >= 2
        })
        .await;
}

#[tokio::test]
async fn saved_means_on_disk_not_merely_applied() {
    // A store that holds durability back keeps "applied and relayed" and
    // "durable" apart until it is released.
    let (server, held) = TestServer::start_held(|_| {}).await;
    held.release();
    let writer = quire(&server, "careful");
    writer.wait_synced(WAIT).await.unwrap();
    let mut reader = Client::connect_synced(server.ws_url("careful")).await;

    held.hold();
    writer.push("precious words");
    reader.wait_text("precious words").await;
    assert_eq!(
        writer.status().await.unsaved,
        1,
        "relayed, but not yet acknowledged as saved"
    );
    held.release();
    let saved = writer.wait_saved(WAIT).await.unwrap();
    assert!(saved.all_saved());
    // The acknowledgement came after the flush: the store says it is durable.
    let durable = server.state.store.durability().borrow().ticket;
    assert!(durable >= 1);
}

#[tokio::test]
async fn named_events_reach_the_others_with_sender_and_server_time() {
    let server = TestServer::start().await;
    let ann = quire(&server, "events");
    let bob = quire(&server, "events");
    let cat = quire(&server, "events");
    for c in [&ann, &bob, &cat] {
        c.wait_synced(WAIT).await.unwrap();
    }
    ann.set_awareness(Some(r#"{"user":{"name":"ann"}}"#.into()));
    // Awareness is processed before the event, in order, by the same room.
    let mut bob_events = bob.events();
    let mut ann_events = ann.events();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let delivered = ann
        .emit_with_ack("cursor", r#"{"line":3}"#, WAIT)
        .await
        .unwrap();
    assert_eq!(delivered, 2, "bob and cat received it");

    let event = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(SessionEvent::Event {
                name,
                payload,
                sender_name,
                at_ms,
                ..
            }) = bob_events.recv().await
                && name == "cursor"
            {
                return (payload, sender_name, at_ms);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(event.0, r#"{"line":3}"#);
    assert_eq!(event.1, "ann");
    assert!(event.2 >= before, "stamped with server time");

    // The sender does not get its own event back. An echo would have been
    // queued to Ann before the acknowledgement she already received.
    while let Ok(e) = ann_events.try_recv() {
        assert!(
            !matches!(e, SessionEvent::Event { ref name, .. } if name == "cursor"),
            "echoed: {e:?}"
        );
    }
}

#[tokio::test]
async fn an_unacknowledged_emit_times_out() {
    let server = TestServer::start().await;
    let proxy = quire_tests::proxy::FaultProxy::start(server.addr).await;
    let client = NativeClient::start(
        format!("ws://{}/ws/quiet", proxy.addr()),
        SessionConfig::default(),
    );
    client.wait_synced(WAIT).await.unwrap();
    proxy.blackhole();
    let result = client
        .emit_with_ack("hello", "{}", Duration::from_millis(300))
        .await;
    assert_eq!(result, Err(quire_client::ClientError::AckTimedOut));
}

#[tokio::test]
async fn chat_is_stamped_stored_and_replayed_on_join_and_after_a_restart() {
    let server = TestServer::start().await;
    let ann = quire(&server, "lounge");
    let bob = quire(&server, "lounge");
    ann.wait_synced(WAIT).await.unwrap();
    bob.wait_synced(WAIT).await.unwrap();
    ann.set_awareness(Some(r#"{"user":{"name":"ann","color":"red"}}"#.into()));
    let mut bob_events = bob.events();
    let mut ann_events = ann.events();
    ann.emit_with_ack(CHAT_EVENT, r#"{"text":"hello, lounge"}"#, WAIT)
        .await
        .unwrap();

    for events in [&mut bob_events, &mut ann_events] {
        let (payload, _, sender_name) = next_event(events, CHAT_EVENT).await;
        let message: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(message["user"], "ann");
        assert_eq!(message["text"], "hello, lounge");
        assert!(message["at_ms"].as_u64().unwrap() > 0);
        assert_eq!(sender_name, "ann");
    }

    let server = {
        drop(ann);
        drop(bob);
        server.restart().await
    };
    let late = NativeClient::start(server.ws_url("lounge"), SessionConfig::default());
    let mut late_events = late.take_all_events().unwrap();
    let (history, sender, _) = next_event(&mut late_events, CHAT_HISTORY_EVENT).await;
    assert_eq!(sender, 0, "history comes from the server");
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["text"], "hello, lounge");
    assert_eq!(history[0]["user"], "ann");
}

#[tokio::test]
async fn a_quire_client_gets_a_typed_error_before_the_close() {
    let server = TestServer::start().await;
    let mut raw = Client::new_quire(server.ws_url("strict"));
    raw.connect().await;
    raw.wait_synced().await;
    raw.send_update(&[0xff, 0xff, 0xff, 0xff]);
    let (code, _) = raw.wait_closed().await;
    assert_eq!(code, 1007);
    let errors: Vec<(u64, String)> = raw
        .frames()
        .iter()
        .filter_map(|f| match Ext::decode(f) {
            Ok(Ext::Error { code, message }) => Some((code, message.to_owned())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 1007);
    assert!(errors[0].1.contains("invalid update"), "{}", errors[0].1);
}

fn big_text_update(bytes: usize) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    let line = "All work and no play makes a very large document indeed.\n";
    let body = line.repeat(bytes / line.len() + 1);
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &body[..bytes]);
    txn.encode_update_v1()
}

#[tokio::test]
async fn a_fifty_megabyte_document_syncs_in_fragments_under_a_two_second_ping_timeout() {
    let server = TestServer::start_with(|c| {
        c.ping_interval = Duration::from_millis(500);
        c.ping_timeout = Duration::from_secs(2);
    })
    .await;
    let size = 50 * 1024 * 1024;
    server
        .state
        .store
        .append("atlas", &big_text_update(size))
        .unwrap();
    // A link slow enough that the document takes longer than the ping
    // timeout to cross: only pings sent between fragments keep it alive.
    let proxy = quire_tests::proxy::FaultProxy::start(server.addr).await;
    proxy.throttle(15 * 1024 * 1024);

    let client = NativeClient::start(
        format!("ws://{}/ws/atlas", proxy.addr()),
        SessionConfig::default(),
    );
    let started = std::time::Instant::now();
    client.wait_synced(Duration::from_secs(60)).await.unwrap();
    eprintln!(
        "50 MB initial sync through a 15 MB/s link took {:?}",
        started.elapsed()
    );
    assert_eq!(client.text().len(), size);
    // Keep the link open for a few ping rounds: nothing times out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.status().await.connection, Connection::Synced);
    assert_eq!(
        server.state.metrics.connections_opened.get(),
        1,
        "never reconnected"
    );
}

/// A server limited to 1 MiB documents, holding "huge" of 2 MiB.
async fn server_with_an_oversized_document() -> TestServer {
    let server = TestServer::start_with(|c| c.max_document_bytes = 1024 * 1024).await;
    let update = big_text_update(2 * 1024 * 1024);
    server.state.store.append("huge", &update).unwrap();
    server
}

/// A document past the limit is still served (issue 12: what yrs stores
/// can outgrow the update that was checked, and the document must not
/// become unjoinable); a write to it is refused.
#[tokio::test]
async fn a_document_over_the_size_limit_is_a_clear_error_not_a_retry_loop() {
    let server = server_with_an_oversized_document().await;
    let client = quire(&server, "huge");
    let mut events = client.take_all_events().unwrap();
    client.wait_synced(WAIT).await.unwrap();
    client.push("more");
    let stopped = client
        .wait_status("stopped", WAIT, |s| {
            matches!(s.connection, Connection::Stopped { .. })
        })
        .await
        .unwrap();
    let Connection::Stopped { code, reason } = stopped.connection else {
        unreachable!()
    };
    assert_eq!(code, 4413);
    assert!(reason.contains("limit"), "{reason}");
    let error = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(SessionEvent::ServerError { code, message }) => return (code, message),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("a typed error arrives");
    assert_eq!(error.0, 4413);
    assert!(error.1.contains("limit"), "{}", error.1);
    // Longer than the first backoff: still one connection attempt.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.state.metrics.connections_opened.get(), 1);

    // And an update that would cross the limit is refused the same way.
    let writer = quire(&server, "growing");
    writer.wait_synced(WAIT).await.unwrap();
    let text = writer.doc().get_or_insert_text("content");
    writer.edit(|txn| text.insert(txn, 0, &"x".repeat(1024 * 1024 + 1)));
    let stopped = writer
        .wait_status("stopped", WAIT, |s| {
            matches!(s.connection, Connection::Stopped { .. })
        })
        .await
        .unwrap();
    assert!(matches!(
        stopped.connection,
        Connection::Stopped { code: 4413, .. }
    ));
}

/// The server used to close the socket right after the close frame while
/// the client's first messages sat unread; the kernel then reset the
/// connection and the client saw 1006 instead of the close code.
#[tokio::test]
async fn regression_close_code_survives_unread_client_input() {
    // No room may open: every join is refused with 1013.
    let server = TestServer::start_with(|c| c.max_rooms = 0).await;
    for _ in 0..5 {
        let mut raw = Client::new_quire(server.ws_url("huge"));
        // connect() sends sync step 1 at once; the server never reads it.
        raw.connect().await;
        let (code, reason) = raw.wait_closed().await;
        assert_eq!(code, 1013, "{reason}");
    }
}

/// Every extension message, as the wire has it: kind number (encoded) and
/// name. The match is exhaustive, so a new message does not compile until
/// it is listed here, and then the two tables below must list it too.
fn every_extension() -> Vec<(u64, &'static str)> {
    let welcome = quire_protocol::ext::Welcome {
        conn_id: 1,
        server_time_ms: 2,
        ping_interval_ms: 3,
        ping_timeout_ms: 4,
        max_message_bytes: 5,
        max_document_bytes: 6,
    };
    let samples = [
        Ext::Welcome(welcome),
        Ext::Ping(1),
        Ext::Pong(1),
        Ext::Saved { through: 1 },
        Ext::Emit {
            name: "n",
            payload: "{}",
            ack: 1,
        },
        Ext::Event {
            name: "n",
            payload: "{}",
            sender: 1,
            sender_name: "s",
            at_ms: 1,
        },
        Ext::EmitAck {
            ack: 1,
            delivered: 1,
        },
        Ext::Error {
            code: 1,
            message: "m",
        },
        Ext::Fragment {
            total: 1,
            data: b"d",
        },
        Ext::Auth { token: "t" },
    ];
    samples
        .iter()
        .map(|ext| {
            let name = match ext {
                Ext::Welcome(_) => "Welcome",
                Ext::Ping(_) => "Ping",
                Ext::Pong(_) => "Pong",
                Ext::Saved { .. } => "Saved",
                Ext::Emit { .. } => "Emit",
                Ext::Event { .. } => "Event",
                Ext::EmitAck { .. } => "EmitAck",
                Ext::Error { .. } => "Error",
                Ext::Fragment { .. } => "Fragment",
                Ext::Auth { .. } => "Auth",
            };
            let frame = ext.encode();
            let mut cursor = quire_protocol::lib0::Cursor::new(&frame);
            assert_eq!(cursor.read_var_uint("type").unwrap(), ext::MSG_QUIRE);
            (cursor.read_var_uint("kind").unwrap(), name)
        })
        .collect()
}

/// The `kind name` rows of a table: lines whose first two cells are a
/// number and a word, from `from` to the next heading or code fence.
fn table_rows(text: &str, from: &str, cells: impl Fn(&str) -> Vec<String>) -> Vec<(u64, String)> {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} not found"));
    text[start..]
        .lines()
        .skip(1)
        .map(|line| line.trim_start_matches("//!").trim_start())
        .take_while(|line| !line.starts_with('#') && !line.starts_with("```"))
        .filter_map(|line| {
            let cells = cells(line);
            Some((cells.first()?.parse().ok()?, cells.get(1)?.clone()))
        })
        .collect()
}

/// ARCHITECTURE.md's extension table and ext.rs's own say what the code
/// encodes: the same kinds, numbers and names.
#[test]
fn the_extension_tables_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let code: Vec<(u64, String)> = every_extension()
        .into_iter()
        .map(|(kind, name)| (kind, name.to_owned()))
        .collect();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let documented = table_rows(&architecture, "### Quire extensions", |line| {
        line.split('|')
            .map(|c| c.trim().to_owned())
            .skip(1)
            .collect()
    });
    assert_eq!(documented, code, "ARCHITECTURE.md's extension table");
    let source = std::fs::read_to_string(root.join("protocol/src/ext.rs")).unwrap();
    let in_source = table_rows(&source, "//! kind  name", |line| {
        line.split_whitespace().map(str::to_owned).collect()
    });
    assert_eq!(in_source, code, "the table in protocol/src/ext.rs");
}
