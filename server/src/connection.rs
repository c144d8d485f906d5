//! One WebSocket connection: decode what the client sends and hand it to the
//! room; write what the room queues for it; keep checking the link is alive;
//! close with a clear code when either side says so.
//!
//! A connection goes through three steps, one function each:
//!
//! 1. [`handshake`]: the document name is checked and the token found (in
//!    the URL, or in-band as the first message of a Quire client) and
//!    checked;
//! 2. [`join`]: the outbound queues are made, Quire clients get their
//!    Welcome, and the room takes the connection in;
//! 3. [`read_loop`]: until the end, each binary frame is decoded
//!    ([`decode`]) into an [`Inbound`] (malformed input is refused here,
//!    before it costs the room anything) and handed to the room, whose
//!    mailbox slows down a client that sends faster than its room can
//!    merge; application pings are answered; a ping goes out every
//!    interval and the connection is dropped when one goes unanswered for
//!    the timeout.
//!
//! Every way this ends early is an [`Ending`], which carries its close code.
//!
//! The **writer** runs beside the read loop and sends, in this priority: a
//! close (preceded by a typed error for Quire clients), control frames
//! (welcome, pings, pongs), then the room's frames. For Quire clients a
//! large frame goes out in fragments with control frames in between, so a
//! 50 MB initial sync does not starve the heartbeat.
//!
//! Stock y-websocket clients get WebSocket ping frames and no extension
//! message ever; Quire clients (subprotocol `quire.v1`) get the extensions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::{self, Ext, SUBPROTOCOL, Welcome};
use quire_protocol::{DocName, DocNameError, Message, SyncMessage, close};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info_span, warn};

use crate::auth::{self, AuthError, Permission};
use crate::limits::{Admitted, MessageProgress, RateLimit, ReadMeter, RoomTime};
use crate::outbox::{OutboxReceiver, outbox};
use crate::room::{Close, ConnId, Inbound, MemberChannels, RoomError, RoomHandle};
use crate::{AppState, unix_ms};

/// Longest close reason a WebSocket close frame can carry, in bytes.
const MAX_REASON_BYTES: usize = 123;
/// Control frames that may wait for the writer (pings are skipped beyond).
const CONTROL_CAPACITY: usize = 64;
/// Room frames written with one flush, at most.
const BATCH_FRAMES: usize = 64;
/// Read buffer of each socket. tungstenite's default (128 KiB) would make
/// every idle connection cost that much memory; larger messages still
/// arrive whole, read in more steps.
pub(crate) const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes a socket's writer gathers before writing (it also writes on flush,
/// after every batch).
pub(crate) const WRITE_BUFFER_BYTES: usize = 16 * 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Why the server ends a connection, each with its close code.
#[derive(Debug, thiserror::Error)]
pub enum Ending {
    /// The document name in the URL is not acceptable (4400).
    #[error(transparent)]
    BadName(#[from] DocNameError),
    /// No valid token for this document, or it expired (4401, 4403).
    #[error(transparent)]
    Access(#[from] AuthError),
    /// The room would not take the connection.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// A text frame (1003).
    #[error("text frames are not part of the protocol; send binary")]
    TextFrame,
    /// A message over the size limit, in bytes (1009).
    #[error("message larger than the limit of {0} bytes")]
    TooBig(usize),
    /// A frame that does not decode, or one a client may not send (1007).
    #[error(transparent)]
    Undecodable(#[from] DecodeError),
    /// No answer to a ping within the timeout, in milliseconds (4000).
    #[error("no answer to ping within {0} ms")]
    PingTimeout(u128),
    /// A message still incomplete after the timeout, in milliseconds (4408).
    #[error("a message was not completed within {0} ms")]
    MessageTimeout(u128),
}

impl Ending {
    /// The close frame (and, for Quire clients, typed error) sent for it.
    pub fn close(&self) -> Close {
        let code = match self {
            Ending::BadName(_) => close::BAD_DOCUMENT_NAME,
            Ending::Access(err) => err.close_code(),
            Ending::Room(err) => return err.close(),
            Ending::TextFrame => close::UNSUPPORTED_DATA,
            Ending::TooBig(_) => close::MESSAGE_TOO_BIG,
            Ending::Undecodable(_) => close::INVALID_PAYLOAD,
            Ending::PingTimeout(_) => close::PING_TIMEOUT,
            Ending::MessageTimeout(_) => close::TOO_SLOW,
        };
        Close::new(code, self.to_string())
    }

    /// Whether the client sent something it must not (counted in
    /// `quire_rejected_inputs`, as is a connection refused access).
    fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Ending::BadName(_) | Ending::TextFrame | Ending::TooBig(_) | Ending::Undecodable(_)
        )
    }
}

/// What the upgrade request settled about a WebSocket.
pub struct Opening {
    /// The document name as the URL gave it.
    pub raw_name: String,
    /// The `?token=` of the URL.
    pub token: Option<String>,
    /// The connection's place under the connection limits until it ends.
    pub admitted: Admitted,
    /// Bytes read from its socket (`None` when the router runs without
    /// `serve`: then no message timeout applies).
    pub meter: Option<Arc<ReadMeter>>,
}

/// Serves one upgraded WebSocket until it closes.
pub async fn serve(socket: WebSocket, opening: Opening, state: AppState) {
    let Opening {
        raw_name,
        token,
        admitted,
        meter,
    } = opening;
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let extensions = socket
        .protocol()
        .is_some_and(|p| p.as_bytes() == SUBPROTOCOL.as_bytes());
    let span = info_span!("conn", doc = %raw_name, conn, quire = extensions);
    async move {
        state.metrics.connections.inc();
        state.metrics.connections_opened.inc();
        run(socket, conn, extensions, &raw_name, token, meter, &state).await;
        drop(admitted);
        state.metrics.connections.dec();
        debug!("connection closed");
    }
    .instrument(span)
    .await
}

/// The three steps of a connection (see the module docs).
async fn run(
    socket: WebSocket,
    conn: ConnId,
    extensions: bool,
    raw_name: &str,
    token: Option<String>,
    meter: Option<Arc<ReadMeter>>,
    state: &AppState,
) {
    let (mut sink, mut stream) = socket.split();
    let opened = match handshake(&mut stream, raw_name, token, extensions, state).await {
        Ok(opened) => opened,
        Err(ending) => {
            if let Ending::Access(err) = &ending
                && !extensions
            {
                // Stock y-websocket clients understand the auth message.
                let denied = Message::PermissionDenied(&err.to_string()).encode();
                let _ = sink.send(WsMessage::Binary(denied.into())).await;
            }
            refuse(sink, stream, &ending, extensions, state).await;
            return;
        }
    };
    let joined = match join(conn, extensions, &opened, state).await {
        Ok(joined) => joined,
        Err(ending) => {
            refuse(sink, stream, &ending, extensions, state).await;
            return;
        }
    };
    let writer = Writer {
        sink,
        frames: joined.frames,
        close: joined.close,
        control: joined.control,
        extensions,
        fragment_bytes: state.config.fragment_bytes,
    };
    let writer = tokio::spawn(writer.run());
    let link = Link {
        conn,
        extensions,
        name: opened.name,
        access: opened.access,
        room: joined.room,
        close_tx: joined.close_tx,
        control_tx: joined.control_tx,
        room_time: Arc::default(),
        state,
    };
    let progress = meter.map(|meter| MessageProgress::new(meter, state.config.message_timeout));
    link.read_loop(stream, writer, progress).await;
}

/// Closes a connection that never joined its room (with a typed error
/// first for Quire clients), then waits for the client's answer.
async fn refuse(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut stream: SplitStream<WebSocket>,
    ending: &Ending,
    extensions: bool,
    state: &AppState,
) {
    if ending.is_bad_input() || matches!(ending, Ending::Access(_)) {
        warn!(%ending, "refusing the connection");
        state.metrics.rejected_inputs.inc();
    } else {
        warn!(%ending, "could not join the room");
    }
    send_close(&mut sink, &ending.close(), extensions).await;
    drain(&mut stream).await;
}

/// What the handshake settled.
struct Opened {
    name: DocName,
    access: Access,
}

/// Step 1: the document name and the token.
async fn handshake(
    stream: &mut SplitStream<WebSocket>,
    raw_name: &str,
    token: Option<String>,
    extensions: bool,
    state: &AppState,
) -> Result<Opened, Ending> {
    let name = DocName::parse(raw_name)?;
    let access = authenticate(stream, token, &name, extensions, state).await?;
    Ok(Opened { name, access })
}

/// What joining set up.
struct Joined {
    room: RoomHandle,
    frames: OutboxReceiver,
    close: mpsc::Receiver<Close>,
    close_tx: mpsc::Sender<Close>,
    control: mpsc::Receiver<WsMessage>,
    control_tx: mpsc::Sender<WsMessage>,
}

/// Step 2: the outbound queues, the Welcome, and a place in the room.
async fn join(
    conn: ConnId,
    extensions: bool,
    opened: &Opened,
    state: &AppState,
) -> Result<Joined, Ending> {
    let config = &state.config;
    let (frames_tx, frames) = outbox(
        config.outbox_capacity,
        config.outbox_bytes,
        state.metrics.clone(),
    );
    let (close_tx, close) = mpsc::channel::<Close>(1);
    let (control_tx, control) = mpsc::channel::<WsMessage>(CONTROL_CAPACITY);
    if extensions {
        let welcome = Ext::Welcome(Welcome {
            conn_id: conn,
            server_time_ms: unix_ms(),
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_message_bytes: config.max_message_bytes as u64,
            max_document_bytes: config.max_document_bytes,
        });
        let _ = control_tx.try_send(WsMessage::Binary(welcome.encode().into()));
    }
    let member = MemberChannels {
        frames: frames_tx,
        close: close_tx.clone(),
        extensions,
        can_write: opened.access.can_write,
    };
    let room = state
        .rooms
        .with_room(&opened.name, |room| {
            let member = member.clone();
            async move { room.join(conn, member).await.map(|()| room) }
        })
        .await?;
    Ok(Joined {
        room,
        frames,
        close,
        close_tx,
        control,
        control_tx,
    })
}

/// A joined connection's reading side.
struct Link<'a> {
    conn: ConnId,
    extensions: bool,
    name: DocName,
    access: Access,
    room: RoomHandle,
    /// The writer's close queue (the room holds the other sender).
    close_tx: mpsc::Sender<Close>,
    /// The writer's control queue: pings, pongs.
    control_tx: mpsc::Sender<WsMessage>,
    /// The room's time spent on this connection's messages (the room adds
    /// to it; the room-time rate limit reads it).
    room_time: Arc<RoomTime>,
    state: &'a AppState,
}

impl Link<'_> {
    /// Step 3: reads until the client leaves, the link dies, the token
    /// expires or the input is refused; then leaves the room and lets the
    /// writer send its close.
    async fn read_loop(
        mut self,
        mut stream: SplitStream<WebSocket>,
        mut writer: JoinHandle<()>,
        mut progress: Option<MessageProgress>,
    ) {
        let config = &self.state.config;
        // Set once the writer has ended (it sent a close or the socket
        // failed), so it is not awaited twice.
        let mut writer_done = false;
        // Heartbeat: a ping every interval; the oldest unanswered one must
        // be answered (by anything at all) within the timeout.
        let mut nonce = 0u64;
        let mut next_ping = Instant::now() + config.ping_interval;
        let mut unanswered_since: Option<Instant> = None;
        let burst = config.rate_burst;
        let mut messages = RateLimit::new(f64::from(config.max_messages_per_sec), burst);
        let mut bytes_rate = RateLimit::new(config.max_bytes_per_sec as f64, burst);
        // In milliseconds of room time per second.
        let mut room_rate = RateLimit::new(f64::from(config.max_room_ms_per_sec), burst);
        // How much of the room's time on this connection has been charged.
        let mut charged = Duration::ZERO;
        // A message in progress must complete in time (the heartbeat alone
        // does not keep it open); checked this often.
        let check_every = progress.as_ref().map(MessageProgress::check_every);
        let mut next_check = check_every.map(|every| Instant::now() + every);
        // One timer for all of the connection's deadlines, moved only when
        // the earliest one moves: a message does not cost timer
        // registrations, and an idle connection holds one timer, not four.
        let timer = sleep_until(next_ping);
        tokio::pin!(timer);
        let mut timer_at = next_ping;
        loop {
            let ping_deadline = unanswered_since.map(|t| t + config.ping_timeout);
            let expiry = self.access.expires_at;
            let due = [ping_deadline, expiry, next_check]
                .into_iter()
                .flatten()
                .fold(next_ping, Instant::min);
            if due != timer_at || timer.is_elapsed() {
                timer.as_mut().reset(due);
                timer_at = due;
            }
            let frame = tokio::select! {
                frame = stream.next() => frame,
                _ = &mut writer => {
                    // The writer sent a close: wait for the client's reply.
                    writer_done = true;
                    drain(&mut stream).await;
                    break;
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if expiry.is_some_and(|at| now >= at) {
                        self.end(Ending::Access(AuthError::Expired));
                        break;
                    }
                    if ping_deadline.is_some_and(|at| now >= at) {
                        self.end(Ending::PingTimeout(config.ping_timeout.as_millis()));
                        break;
                    }
                    if next_check.is_some_and(|at| now >= at) {
                        if progress.as_mut().is_some_and(|p| p.stalled(now)) {
                            self.end(Ending::MessageTimeout(config.message_timeout.as_millis()));
                            break;
                        }
                        next_check = check_every.map(|every| now + every);
                    }
                    if now >= next_ping {
                        nonce += 1;
                        let ping = if self.extensions {
                            WsMessage::Binary(Ext::Ping(nonce).encode().into())
                        } else {
                            WsMessage::Ping(Bytes::from(nonce.to_be_bytes().to_vec()))
                        };
                        // A writer too busy to take a ping is not dead; skip this one.
                        let _ = self.control_tx.try_send(ping);
                        unanswered_since.get_or_insert(now);
                        next_ping = now + config.ping_interval;
                    }
                    continue;
                }
            };
            // Anything from the client proves the link is alive.
            unanswered_since = None;
            if let (Some(progress), Some(Ok(message))) = (progress.as_mut(), &frame) {
                let (len, data) = match message {
                    WsMessage::Binary(bytes) => (bytes.len(), true),
                    WsMessage::Text(text) => (text.len(), true),
                    WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => (bytes.len(), false),
                    WsMessage::Close(_) => (0, false),
                };
                progress.delivered(len, data);
            }
            let bytes = match frame {
                None | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(WsMessage::Binary(bytes))) => bytes,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Text(_))) => {
                    self.end(Ending::TextFrame);
                    break;
                }
                Some(Err(err)) => {
                    let err = err.into_inner();
                    match err.downcast_ref::<tungstenite::Error>() {
                        Some(tungstenite::Error::Capacity(_)) => {
                            self.end(Ending::TooBig(config.max_message_bytes));
                        }
                        _ => debug!(%err, "read failed"),
                    }
                    break;
                }
            };
            self.state.metrics.bytes_in.inc_by(bytes.len() as u64);
            let inbound = match decode(&bytes, self.extensions) {
                Ok(Decoded::Room(inbound)) => inbound,
                Ok(Decoded::Ping(nonce)) => {
                    let pong = WsMessage::Binary(Ext::Pong(nonce).encode().into());
                    let _ = self.control_tx.try_send(pong);
                    continue;
                }
                Ok(Decoded::Nothing) => continue,
                Ok(Decoded::Auth(token)) => match self.refresh(&token).await {
                    Ok(()) => continue,
                    Err(ending) => {
                        if let Some(ending) = ending {
                            self.end(ending);
                        }
                        break;
                    }
                },
                Err(err) => {
                    self.end(err.into());
                    break;
                }
            };
            // A connection over its rate is slowed down (not read from), never
            // cut. The room's time is charged as it is reported, a few
            // messages late: the debt is waited off all the same.
            let now = Instant::now();
            let spent = self.room_time.total();
            let wait = messages
                .take(1.0, now)
                .max(bytes_rate.take(bytes.len() as f64, now))
                .max(room_rate.take((spent - charged).as_secs_f64() * 1000.0, now));
            charged = spent;
            if !wait.is_zero() {
                self.state.metrics.throttled.inc();
                tokio::time::sleep(wait).await;
            }
            if self
                .room
                .deliver(self.conn, inbound, &self.room_time)
                .await
                .is_err()
            {
                break;
            }
        }

        self.room.leave(self.conn).await;
        // Let the writer send its close frame; the room has dropped our queue.
        drop(self.close_tx);
        drop(self.control_tx);
        if !writer_done
            && tokio::time::timeout(Duration::from_secs(5), &mut writer)
                .await
                .is_err()
        {
            writer.abort();
        }
    }

    /// A token presented in-band mid-connection: same document, new expiry
    /// (and maybe permission). `Err(None)`: the room is gone.
    async fn refresh(&mut self, token: &str) -> Result<(), Option<Ending>> {
        let refreshed = check_token(self.state, Some(token), &self.name)
            .map_err(|err| Some(Ending::Access(err)))?;
        if refreshed.can_write != self.access.can_write {
            let writable = Inbound::SetWritable(refreshed.can_write);
            self.room
                .deliver(self.conn, writable, &self.room_time)
                .await
                .map_err(|_| None)?;
        }
        self.access = refreshed;
        Ok(())
    }

    /// Asks the writer to close the connection for `ending`.
    fn end(&self, ending: Ending) {
        if ending.is_bad_input() {
            warn!(%ending, "closing connection for bad input");
            self.state.metrics.rejected_inputs.inc();
        } else {
            warn!(%ending, "closing connection");
        }
        let _ = self.close_tx.try_send(ending.close());
    }
}

/// The sending half of the socket and its three queues.
struct Writer {
    sink: SplitSink<WebSocket, WsMessage>,
    frames: OutboxReceiver,
    close: mpsc::Receiver<Close>,
    control: mpsc::Receiver<WsMessage>,
    extensions: bool,
    fragment_bytes: usize,
}

impl Writer {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                Some(close) = self.close.recv() => {
                    send_close(&mut self.sink, &close, self.extensions).await;
                    break;
                }
                Some(control) = self.control.recv() => {
                    if self.sink.send(control).await.is_err() {
                        break;
                    }
                }
                frame = self.frames.recv() => match frame {
                    Some(frame) => {
                        if !self.send_batch(frame).await {
                            break;
                        }
                    }
                    // The room let go of us: the connection is over.
                    None => break,
                },
            }
        }
        let _ = self.sink.close().await;
    }

    /// Sends `first` and whatever else the room has queued by now (up to
    /// [`BATCH_FRAMES`]) with one flush: under load a busy room's frames leave
    /// in few writes instead of one system call each.
    async fn send_batch(&mut self, first: Bytes) -> bool {
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(frame) = next.take() {
            if self.extensions && frame.len() > self.fragment_bytes {
                if !self.send_fragments(frame).await {
                    return false;
                }
            } else if self.sink.feed(WsMessage::Binary(frame)).await.is_err() {
                return false;
            }
            batched += 1;
            if batched < BATCH_FRAMES && self.control.is_empty() && self.close.is_empty() {
                next = self.frames.try_recv();
            }
        }
        self.sink.flush().await.is_ok()
    }

    /// Sends one large frame in fragments, letting a close or control frames
    /// through between pieces; returns false once the socket is gone or a
    /// close was sent.
    async fn send_fragments(&mut self, frame: Bytes) -> bool {
        for piece in ext::fragment(&frame, self.fragment_bytes) {
            if self
                .sink
                .send(WsMessage::Binary(piece.into()))
                .await
                .is_err()
            {
                return false;
            }
            // Between pieces: a close wins, control frames go first.
            if let Ok(close) = self.close.try_recv() {
                send_close(&mut self.sink, &close, true).await;
                return false;
            }
            while let Ok(control) = self.control.try_recv() {
                if self.sink.send(control).await.is_err() {
                    return false;
                }
            }
        }
        true
    }
}

/// What a client frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// For the room.
    Room(Inbound),
    /// An application ping, answered by the connection itself.
    Ping(u64),
    /// Nothing a server acts on (a pong, an auth message from a client).
    Nothing,
    /// A token presented in-band (Quire clients).
    Auth(String),
}

/// Why a client frame was refused (the connection closes with 1007).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a frame of the protocol.
    #[error("malformed message: {0}")]
    Malformed(#[from] quire_protocol::DecodeError),
    /// An extension message only a server sends (shown as decoded).
    #[error("a client may not send {0}")]
    ServerOnly(String),
}

/// Turns one frame into what the room needs. Extension frames are only
/// understood on connections that negotiated them.
pub fn decode(frame: &Bytes, extensions: bool) -> Result<Decoded, DecodeError> {
    let part = |slice: &[u8]| frame.slice_ref(slice);
    if extensions && Ext::is_ext(frame) {
        return match Ext::decode(frame)? {
            Ext::Ping(nonce) => Ok(Decoded::Ping(nonce)),
            Ext::Pong(_) => Ok(Decoded::Nothing),
            Ext::Auth { token } => Ok(Decoded::Auth(token.to_owned())),
            Ext::Emit { name, payload, ack } => Ok(Decoded::Room(Inbound::Emit {
                name: name.to_owned(),
                payload: payload.to_owned(),
                ack,
            })),
            other => Err(DecodeError::ServerOnly(format!("{other:?}"))),
        };
    }
    Ok(match Message::decode(frame)? {
        Message::Sync(SyncMessage::Step1(sv)) => Decoded::Room(Inbound::StateVector(part(sv))),
        Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
            Decoded::Room(Inbound::Update(part(update)))
        }
        Message::Awareness(update) => Decoded::Room(Inbound::Awareness(part(update))),
        Message::QueryAwareness => Decoded::Room(Inbound::QueryAwareness),
        Message::PermissionDenied(_) => Decoded::Nothing,
    })
}

/// What a connection may do, and until when.
#[derive(Debug, Clone, Copy)]
struct Access {
    can_write: bool,
    /// When the token expires (never without `--auth-key`).
    expires_at: Option<Instant>,
}

/// Checks a token for `doc` (anyone may do anything without `--auth-key`).
fn check_token(state: &AppState, token: Option<&str>, doc: &DocName) -> Result<Access, AuthError> {
    let Some(key) = &state.config.auth_key else {
        return Ok(Access {
            can_write: true,
            expires_at: None,
        });
    };
    let now = auth::now_secs();
    let claims = key.authorize(token, doc.as_str(), Permission::Read, now)?;
    let left = Duration::from_secs(claims.exp.saturating_sub(now));
    Ok(Access {
        can_write: claims.perm >= Permission::Write,
        // An expiry beyond what the clock can represent never comes.
        expires_at: Instant::now().checked_add(left),
    })
}

/// Finds the connection's token: in the URL, or else (Quire clients, which
/// send it in-band so it stays out of URLs and logs) as the first message.
async fn authenticate(
    stream: &mut SplitStream<WebSocket>,
    token: Option<String>,
    doc: &DocName,
    extensions: bool,
    state: &AppState,
) -> Result<Access, AuthError> {
    if state.config.auth_key.is_none() || token.is_some() || !extensions {
        return check_token(state, token.as_deref(), doc);
    }
    let first = tokio::time::timeout(state.config.auth_timeout, stream.next()).await;
    let token = match first {
        Ok(Some(Ok(WsMessage::Binary(frame)))) => match Ext::decode(&frame) {
            Ok(Ext::Auth { token }) => Some(token.to_owned()),
            _ => None,
        },
        _ => None,
    };
    check_token(state, token.as_deref(), doc)
}

/// After sending a close frame, reads (and ignores) what the client still
/// sends until it answers the close, for at most a second. Closing a socket
/// with unread input makes the kernel reset it, and a reset can destroy the
/// close frame (and typed error) before the client reads them.
async fn drain(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, WsMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Sends a typed error (Quire clients) and then the close frame.
async fn send_close(sink: &mut SplitSink<WebSocket, WsMessage>, close: &Close, extensions: bool) {
    if extensions {
        let error = Ext::Error {
            code: u64::from(close.code),
            message: &close.reason,
        };
        let _ = sink.send(WsMessage::Binary(error.encode().into())).await;
    }
    let _ = sink.send(close_message(close)).await;
}

fn close_message(close: &Close) -> WsMessage {
    let mut reason = close.reason.as_str();
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    WsMessage::Close(Some(CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}
