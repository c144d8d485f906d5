//! A native y-websocket client: a yrs document synced with a Quire room over
//! tokio-tungstenite, the way a stock Yjs client behaves.
//!
//! A background task reads the socket, applies document and awareness
//! updates, answers the server's sync step 1, and bumps a change counter
//! that [`Client::wait_until`] waits on. Local edits made while disconnected
//! stay in the document and cross on the next [`Client::connect`], by state
//! vector, exactly like a browser tab coming back online.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::lib0::write_var_uint;
use quire_protocol::{AwarenessTable, Message, SyncMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

use crate::WAIT;

/// What the reader task learned, shared with the test.
#[derive(Default)]
struct Seen {
    /// Remote presence as the server relayed it.
    awareness: AwarenessTable,
    /// Whether the server's sync step 2 arrived on the current connection.
    synced: bool,
    /// The close frame the server sent, if any.
    closed: Option<(u16, String)>,
    /// Raw frames received, for tests that inspect the wire.
    frames: Vec<Vec<u8>>,
}

pub struct Client {
    url: String,
    /// Offer the `quire.v1` subprotocol (see [`Client::new_quire`]).
    quire: bool,
    pub doc: Doc,
    text: TextRef,
    /// This client's awareness id and clock.
    pub client_id: u64,
    awareness_clock: u64,
    seen: Arc<Mutex<Seen>>,
    /// Bumped on every received frame and on disconnect.
    changes: watch::Receiver<u64>,
    changes_tx: Arc<watch::Sender<u64>>,
    outgoing: Option<mpsc::UnboundedSender<WsMessage>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Client {
    /// A client for `url` (ws://host/ws/doc) that is not connected yet.
    pub fn new(url: impl Into<String>) -> Self {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        let client_id = doc.client_id().get();
        let (changes_tx, changes) = watch::channel(0);
        Self {
            url: url.into(),
            quire: false,
            doc,
            text,
            client_id,
            awareness_clock: 0,
            seen: Arc::default(),
            changes,
            changes_tx: Arc::new(changes_tx),
            outgoing: None,
            tasks: Vec::new(),
        }
    }

    /// A raw client that offers the `quire.v1` subprotocol, to see the
    /// extension frames on the wire (it answers nothing but sync).
    pub fn new_quire(url: impl Into<String>) -> Self {
        let mut client = Self::new(url);
        client.quire = true;
        client
    }

    /// Connects and waits until the initial sync completed.
    pub async fn connect_synced(url: impl Into<String>) -> Self {
        let mut client = Self::new(url);
        client.connect().await;
        client.wait_synced().await;
        client
    }

    /// Opens the WebSocket and starts the sync handshake (sends step 1).
    pub async fn connect(&mut self) {
        self.disconnect();
        let mut request = self.url.as_str().into_client_request().expect("valid URL");
        if self.quire {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                quire_protocol::ext::SUBPROTOCOL
                    .parse()
                    .expect("header value"),
            );
        }
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("connect");
        let (mut sink, mut stream) = socket.split();
        {
            let mut seen = self.seen.lock().unwrap();
            seen.synced = false;
            seen.closed = None;
        }
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let closing = matches!(message, WsMessage::Close(_));
                if sink.send(message).await.is_err() || closing {
                    break;
                }
            }
        });
        let doc = self.doc.clone();
        let seen = self.seen.clone();
        let changes = self.changes_tx.clone();
        let replies = out_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    WsMessage::Binary(frame) => {
                        handle_frame(&doc, &seen, &replies, &frame);
                    }
                    WsMessage::Close(frame) => {
                        let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        seen.lock().unwrap().closed = Some(close.unwrap_or((1005, String::new())));
                        break;
                    }
                    _ => {}
                }
                changes.send_modify(|n| *n += 1);
            }
            let mut seen = seen.lock().unwrap();
            if seen.closed.is_none() {
                seen.closed = Some((1006, "connection dropped".into()));
            }
            drop(seen);
            changes.send_modify(|n| *n += 1);
        });
        let sv = self.doc.transact().state_vector().encode_v1();
        let _ = out_tx.send(WsMessage::Binary(
            Message::Sync(SyncMessage::Step1(&sv)).encode().into(),
        ));
        self.outgoing = Some(out_tx);
        self.tasks = vec![reader, writer];
    }

    /// Drops the connection abruptly (no close frame), keeping the document.
    pub fn disconnect(&mut self) {
        self.outgoing = None;
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Sends a close frame and forgets the connection.
    pub async fn close(&mut self) {
        if let Some(out) = &self.outgoing {
            let _ = out.send(WsMessage::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                },
            )));
        }
        self.outgoing = None;
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    pub fn is_connected(&self) -> bool {
        self.outgoing.is_some() && self.seen.lock().unwrap().closed.is_none()
    }

    /// Waits until `condition` holds over this client, or panics after [`WAIT`].
    pub async fn wait_until(&mut self, what: &str, mut condition: impl FnMut(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if condition(self) {
                return;
            }
            let mut changes = self.changes.clone();
            changes.borrow_and_update();
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
                && !condition(self)
            {
                let text = self.text();
                let shown: String = text.chars().take(200).collect();
                panic!(
                    "timed out waiting until {what}; text ({} bytes) starts {shown:?}",
                    text.len()
                );
            }
        }
    }

    pub async fn wait_synced(&mut self) {
        self.wait_until("synced", |c| c.seen.lock().unwrap().synced)
            .await;
    }

    /// Waits for the text to equal `expected`.
    pub async fn wait_text(&mut self, expected: &str) {
        let expected = expected.to_owned();
        self.wait_until(&format!("text is {expected:?}"), |c| c.text() == expected)
            .await;
    }

    /// Waits for the server to close the connection; returns code and reason.
    pub async fn wait_closed(&mut self) -> (u16, String) {
        self.wait_until("the server closes the connection", |c| {
            c.seen.lock().unwrap().closed.is_some()
        })
        .await;
        self.seen.lock().unwrap().closed.clone().expect("closed")
    }

    pub fn closed(&self) -> Option<(u16, String)> {
        self.seen.lock().unwrap().closed.clone()
    }

    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Inserts `chunk` at `index` (in UTF-8 bytes, yrs' default) and sends
    /// the update if connected; offline edits wait for the next sync.
    pub fn insert(&mut self, index: u32, chunk: &str) {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, index, chunk);
            txn.encode_update_v1()
        };
        self.send_update(&update);
    }

    /// Appends at the end of the text.
    pub fn push(&mut self, chunk: &str) {
        let len = self.text.len(&self.doc.transact());
        self.insert(len, chunk);
    }

    /// Removes `len` bytes at `index`.
    pub fn remove(&mut self, index: u32, len: u32) {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.remove_range(&mut txn, index, len);
            txn.encode_update_v1()
        };
        self.send_update(&update);
    }

    /// Applies an update that reached this client another way (another
    /// tab over `BroadcastChannel`, say) without sending it: the server
    /// only learns of it when it asks.
    pub fn receive_elsewhere(&mut self, update: &[u8]) {
        apply(&self.doc, update);
    }

    /// Sends an update message with arbitrary payload.
    pub fn send_update(&self, update: &[u8]) {
        self.send_raw(Message::Sync(SyncMessage::Update(update)).encode());
    }

    /// Sends any bytes as one binary frame.
    pub fn send_raw(&self, frame: Vec<u8>) {
        if let Some(out) = &self.outgoing {
            let _ = out.send(WsMessage::Binary(frame.into()));
        }
    }

    /// Sends a WebSocket message as is (text frames, oversize frames...).
    pub fn send_ws(&self, message: WsMessage) {
        if let Some(out) = &self.outgoing {
            let _ = out.send(message);
        }
    }

    /// Publishes this client's presence (JSON), bumping its clock.
    pub fn set_awareness(&mut self, json: &str) {
        self.awareness_clock += 1;
        let mut update = Vec::new();
        write_var_uint(&mut update, 1);
        write_var_uint(&mut update, self.client_id);
        write_var_uint(&mut update, self.awareness_clock);
        quire_protocol::lib0::write_var_string(&mut update, json);
        self.send_raw(Message::Awareness(&update).encode());
    }

    /// The presence of `client` as this client last heard it.
    pub fn awareness_of(&self, client: u64) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .awareness
            .state(client)
            .map(str::to_owned)
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().frames.clone()
    }

    /// The whole document as a Yjs update.
    pub fn state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn handle_frame(
    doc: &Doc,
    seen: &Mutex<Seen>,
    replies: &mpsc::UnboundedSender<WsMessage>,
    frame: &[u8],
) {
    let mut seen = seen.lock().unwrap();
    seen.frames.push(frame.to_vec());
    if quire_protocol::ext::Ext::is_ext(frame) {
        // Extension frames are kept in `frames` for the test to inspect.
        return;
    }
    let message = Message::decode(frame).expect("the server sends well-formed frames");
    match message {
        Message::Sync(SyncMessage::Step1(sv)) => {
            let sv = StateVector::decode_v1(sv).expect("valid state vector");
            let diff = doc.transact().encode_diff_v1(&sv);
            let _ = replies.send(WsMessage::Binary(
                Message::Sync(SyncMessage::Step2(&diff)).encode().into(),
            ));
        }
        Message::Sync(SyncMessage::Step2(update)) => {
            apply(doc, update);
            seen.synced = true;
        }
        Message::Sync(SyncMessage::Update(update)) => apply(doc, update),
        Message::Awareness(update) => {
            seen.awareness.apply(update, 0).expect("valid awareness");
        }
        // Like y-websocket, a permission-denied message is only reported
        // (kept in `frames`); the server decides whether to close.
        Message::PermissionDenied(_) => {}
        Message::QueryAwareness => {}
    }
}

fn apply(doc: &Doc, update: &[u8]) {
    let update = Update::decode_v1(update).expect("the server relays valid updates");
    doc.transact_mut()
        .apply_update(update)
        .expect("update applies");
}
