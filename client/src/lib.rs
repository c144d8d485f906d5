//! A native Quire client: one tokio task drives a [`SyncSession`] over a
//! tokio-tungstenite WebSocket, carrying out its actions (connect, drop),
//! sending its frames and calling its timers. Everything the protocol
//! decides (backoff, heartbeat, offline edits, saves) is in the session;
//! this crate only moves bytes and time. Tests, benchmarks and the
//! `quire watch` / `quire cat` commands use it.
//!
//! Time is tokio's clock, so tests may pause it.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::SUBPROTOCOL;
use quire_protocol::session::{Action, EmitError};
use quire_protocol::{SessionConfig, SessionEvent, Status, SyncSession};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;
use yrs::{Doc, GetString, Transact, TransactionMut};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a socket to open before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events kept for subscribers that fall behind.
const EVENT_CAPACITY: usize = 4096;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the client has stopped")]
    Stopped,
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error("no acknowledgement in time")]
    AckTimedOut,
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

enum Command {
    Flush,
    SetToken(String),
    SetAwareness(Option<String>),
    Emit {
        name: String,
        payload: String,
        ack_timeout: Option<Duration>,
        reply: oneshot::Sender<Result<u64, EmitError>>,
    },
    NetworkOnline,
    Stop,
}

/// A handle to a running client. Dropping it stops the client.
pub struct NativeClient {
    doc: Doc,
    commands: mpsc::UnboundedSender<Command>,
    /// Commands sent so far; a status read waits until the driver has
    /// handled them all, so a caller always sees the effect of its own edits.
    commands_sent: std::sync::atomic::AtomicU64,
    status: watch::Receiver<(Status, u64)>,
    events: broadcast::Sender<SessionEvent>,
    /// A receiver made before the driver started, for a caller that needs
    /// every event from the very first one (see [`Self::take_all_events`]).
    first_events: std::sync::Mutex<Option<broadcast::Receiver<SessionEvent>>>,
    task: Option<JoinHandle<()>>,
}

impl NativeClient {
    /// Starts a client for the document at `url` (`ws://host/ws/doc`),
    /// offering the Quire extensions. It connects at once and keeps
    /// reconnecting until stopped.
    pub fn start(url: impl Into<String>, config: SessionConfig) -> Self {
        Self::start_with_doc(url, Doc::new(), config, true)
    }

    /// Like [`Self::start`], over an existing document; `extensions: false`
    /// behaves like a stock y-websocket client.
    pub fn start_with_doc(
        url: impl Into<String>,
        doc: Doc,
        config: SessionConfig,
        extensions: bool,
    ) -> Self {
        let session = SyncSession::with_doc(doc.clone(), config);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel((session.status(), 0));
        let (events, first_events) = broadcast::channel(EVENT_CAPACITY);
        let driver = Driver {
            url: url.into(),
            extensions,
            session,
            socket: None,
            commands: command_rx,
            status: status_tx,
            events: events.clone(),
            commands_done: 0,
            epoch: Instant::now(),
        };
        let task = tokio::spawn(driver.run());
        Self {
            doc,
            commands,
            commands_sent: std::sync::atomic::AtomicU64::new(0),
            status,
            events,
            first_events: std::sync::Mutex::new(Some(first_events)),
            task: Some(task),
        }
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The `Y.Text` named `content`, as text.
    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("content");
        text.get_string(&self.doc.transact())
    }

    /// Edits the document in one transaction and sends the change (or keeps
    /// it for the next connection, when offline).
    pub fn edit<R>(&self, f: impl FnOnce(&mut TransactionMut) -> R) -> R {
        let result = {
            let mut txn = self.doc.transact_mut();
            f(&mut txn)
        };
        self.command(Command::Flush);
        result
    }

    /// Appends to the `content` text.
    pub fn push(&self, chunk: &str) {
        let text = self.doc.get_or_insert_text("content");
        self.edit(|txn| {
            use yrs::Text;
            let len = text.len(txn);
            text.insert(txn, len, chunk);
        });
    }

    /// The status, including the effect of every call made before this one.
    pub async fn status(&self) -> Status {
        self.wait_status("the status", Duration::from_secs(10), |_| true)
            .await
            .unwrap_or_else(|_| self.status.borrow().0.clone())
    }

    /// Waits until the status satisfies `condition` (after every earlier
    /// call of this handle has taken effect).
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&Status) -> bool,
    ) -> Result<Status, ClientError> {
        let mut status = self.status.clone();
        let sent = self.commands_sent.load(std::sync::atomic::Ordering::SeqCst);
        let waited = tokio::time::timeout(
            timeout,
            status.wait_for(|(s, done)| *done >= sent && condition(s)),
        )
        .await;
        match waited {
            Ok(Ok(s)) => Ok(s.0.clone()),
            Ok(Err(_)) => Err(ClientError::Stopped),
            Err(_) => Err(ClientError::Timeout(what.to_owned())),
        }
    }

    /// Waits until connected and caught up.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<Status, ClientError> {
        self.wait_status("synced", timeout, |s| {
            s.connection == quire_protocol::Connection::Synced
        })
        .await
    }

    /// Waits until the server confirmed every local edit durable.
    pub async fn wait_saved(&self, timeout: Duration) -> Result<Status, ClientError> {
        self.wait_status("all changes saved", timeout, |s| s.all_saved())
            .await
    }

    /// Every event since the client started (once; later calls get `None`).
    pub fn take_all_events(&self) -> Option<broadcast::Receiver<SessionEvent>> {
        self.first_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Subscribes to session events from now on.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Replaces the access token; an open connection presents it at once
    /// (refreshing an expiring one without reconnecting).
    pub fn set_token(&self, token: String) {
        self.command(Command::SetToken(token));
    }

    pub fn set_awareness(&self, json: Option<String>) {
        self.command(Command::SetAwareness(json));
    }

    fn command(&self, command: Command) -> bool {
        self.commands_sent
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.commands.send(command).is_ok()
    }

    /// Emits a named event without waiting for an acknowledgement.
    pub async fn emit(&self, name: &str, payload_json: &str) -> Result<(), ClientError> {
        self.send_emit(name, payload_json, None).await.map(|_| ())
    }

    /// Emits and waits for the server's acknowledgement; returns how many
    /// connections received the event.
    pub async fn emit_with_ack(
        &self,
        name: &str,
        payload_json: &str,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let mut events = self.events.subscribe();
        let ack = self.send_emit(name, payload_json, Some(timeout)).await?;
        loop {
            match events.recv().await {
                Ok(SessionEvent::EmitAcked { ack: a, delivered }) if a == ack => {
                    return Ok(delivered);
                }
                Ok(SessionEvent::EmitTimedOut { ack: a }) if a == ack => {
                    return Err(ClientError::AckTimedOut);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(ClientError::Stopped),
            }
        }
    }

    async fn send_emit(
        &self,
        name: &str,
        payload: &str,
        ack_timeout: Option<Duration>,
    ) -> Result<u64, ClientError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.command(Command::Emit {
            name: name.to_owned(),
            payload: payload.to_owned(),
            ack_timeout,
            reply,
        });
        if !sent {
            return Err(ClientError::Stopped);
        }
        Ok(answer.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Tells the client the network is back (reconnect now, not at the
    /// backoff time).
    pub fn network_online(&self) {
        self.command(Command::NetworkOnline);
    }

    /// Closes the connection for good and waits for the driver to end.
    pub async fn stop(mut self) {
        self.command(Command::Stop);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Driver {
    url: String,
    extensions: bool,
    session: SyncSession,
    socket: Option<(SplitSink<Socket, WsMessage>, SplitStream<Socket>)>,
    commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<(Status, u64)>,
    events: broadcast::Sender<SessionEvent>,
    /// Commands handled so far, published with the status.
    commands_done: u64,
    /// Origin of the session's millisecond clock.
    epoch: Instant,
}

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn run(mut self) {
        let now = self.now();
        self.session.start(now);
        loop {
            self.carry_out().await;
            if matches!(
                self.session.status().connection,
                quire_protocol::Connection::Stopped { .. }
            ) && self.socket.is_none()
            {
                // Nothing more will happen; wait to be told to finish.
                self.publish();
                let command = self.commands.recv().await;
                self.commands_done += 1;
                match command {
                    Some(Command::Stop) | None => return,
                    Some(_) => continue,
                }
            }
            let deadline = self
                .session
                .next_deadline()
                .map(|ms| self.epoch + Duration::from_millis(ms));
            tokio::select! {
                frame = next_frame(&mut self.socket) => {
                    let now = self.now();
                    match frame {
                        Some(Ok(WsMessage::Binary(bytes))) => self.session.on_message(&bytes, now),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                                .unwrap_or((None, String::new()));
                            debug!(?code, %reason, "server closed the connection");
                            self.socket = None;
                            self.session.on_close(code, &reason, now);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            debug!(%err, "connection failed");
                            self.socket = None;
                            self.session.on_close(None, &err.to_string(), now);
                        }
                        None => {
                            self.socket = None;
                            self.session.on_close(None, "connection ended", now);
                        }
                    }
                }
                command = self.commands.recv() => {
                    let now = self.now();
                    self.commands_done += 1;
                    match command {
                        Some(Command::Flush) => self.session.flush(now),
                        Some(Command::SetToken(token)) => self.session.set_token(token),
                        Some(Command::SetAwareness(json)) => self.session.set_awareness(json, now),
                        Some(Command::Emit { name, payload, ack_timeout, reply }) => {
                            let timeout = ack_timeout.map(|d| d.as_millis() as u64);
                            let _ = reply.send(self.session.emit(&name, &payload, timeout, now));
                        }
                        Some(Command::NetworkOnline) => self.session.network_online(now),
                        Some(Command::Stop) | None => {
                            self.session.stop();
                            self.carry_out().await;
                            if let Some((mut sink, _)) = self.socket.take() {
                                let _ = sink.close().await;
                            }
                            self.publish();
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let now = self.now();
                    self.session.tick(now);
                }
            }
        }
    }

    /// Performs the session's actions, sends its frames, publishes events.
    async fn carry_out(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.session.poll_action() {
                progressed = true;
                match action {
                    Action::Connect => self.connect().await,
                    Action::Disconnect { reason } => {
                        debug!(%reason, "dropping the connection");
                        self.socket = None;
                    }
                }
            }
            while let Some(frame) = self.session.poll_transmit() {
                progressed = true;
                let Some((sink, _)) = &mut self.socket else {
                    break;
                };
                if let Err(err) = sink.send(WsMessage::Binary(frame.into())).await {
                    let now = self.now();
                    self.socket = None;
                    self.session.on_close(None, &err.to_string(), now);
                }
            }
            self.publish();
            if !progressed {
                return;
            }
        }
    }

    async fn connect(&mut self) {
        let attempt = async {
            let mut request = self.url.as_str().into_client_request()?;
            if self.extensions {
                request.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
            }
            // No Nagle: every frame is a keystroke or an acknowledgement.
            tokio_tungstenite::connect_async_with_config(request, None, true).await
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
        let now = self.now();
        match result {
            Ok(Ok((socket, _))) => {
                self.socket = Some(socket.split());
                self.session.on_open(now);
            }
            Ok(Err(err)) => {
                debug!(%err, "could not connect");
                self.session.on_close(None, &err.to_string(), now);
            }
            Err(_) => self.session.on_close(None, "connecting took too long", now),
        }
    }

    fn publish(&mut self) {
        while let Some(event) = self.session.poll_event() {
            if let SessionEvent::Status(status) = &event {
                self.status
                    .send_replace((status.clone(), self.commands_done));
            }
            let _ = self.events.send(event);
        }
        if self.status.borrow().1 != self.commands_done {
            let status = self.session.status();
            self.status.send_replace((status, self.commands_done));
        }
    }
}

/// The next frame of the socket, or never when there is none.
async fn next_frame(
    socket: &mut Option<(SplitSink<Socket, WsMessage>, SplitStream<Socket>)>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match socket {
        Some((_, stream)) => stream.next().await,
        None => std::future::pending().await,
    }
}
