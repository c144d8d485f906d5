//! One WebSocket connection: decode what the client sends and hand it to the
//! room; write what the room queues for it; keep checking the link is alive;
//! close with a clear code when either side says so.
//!
//! **Architecture Invariant:** one task per connection, reading and writing
//! in one poll loop, and an idle connection holds no buffer: the socket
//! ([`WebSocket`]) reads into a buffer only while a frame arrives and writes
//! the room's shared frames as they are, the outbox is empty, and the task's
//! idle state is the [`Live`] struct plus one timer (the setup and closing
//! steps, whose futures are larger, are boxed and freed after use).
//!
//! A connection goes through four steps, one function each:
//!
//! 1. [`handshake`]: the document name is checked and the token found (in
//!    the URL, or in-band as the first message of a Quire client) and
//!    checked;
//! 2. [`join`]: the outbox is made, Quire clients get their Welcome, and the
//!    room takes the connection in;
//! 3. [`Live::run`]: until the end, each binary message is decoded
//!    ([`decode`]) into an [`Inbound`] (malformed input is refused here,
//!    before it costs the room anything) and handed to the room, whose
//!    mailbox slows down a client that sends faster than its room can
//!    merge; application pings are answered; a ping goes out every
//!    interval and the connection is dropped when one goes unanswered for
//!    the timeout. Between messages, and while a message waits for the
//!    room's mailbox or for the rate limits, the same loop writes;
//! 4. [`Live::finish`]: the room is left, the close written and the client's
//!    answer awaited.
//!
//! Every way this ends early is an [`Ending`], which carries its close code.
//!
//! The loop writes, in this priority: a close (preceded by a typed error for
//! Quire clients), control frames (welcome, pings, pongs), then the room's
//! frames, each batch of them with one vectored write. Most room frames never
//! reach the loop: while it has nothing to write, the room writes them to
//! the socket itself ([`crate::outbox`], direct writes); the loop claims
//! writing back ([`Wire::claim`]) before it writes anything, and finishes
//! first a frame the room began. For Quire clients a
//! large frame goes out in fragments with control frames in between, so a
//! 50 MB initial sync does not starve the heartbeat.
//!
//! Stock y-websocket clients get WebSocket ping frames and no extension
//! message ever; Quire clients (subprotocol `quire.v1`) get the extensions.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quire_protocol::ext::{self, Ext, Welcome};
use quire_protocol::{DocName, DocNameError, Message, SyncMessage, close};
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tracing::{Instrument, debug, info_span, warn};

use crate::auth::{self, AuthError, Permission};
use crate::config::Config;
use crate::limits::{Admitted, MessageProgress, RateLimit, ReadMeter, RoomTime};
use crate::metrics::Metrics;
use crate::outbox::{Direct, OutboxReceiver, outbox};
use crate::room::{Close, ConnId, Inbound, MemberChannels, RoomError, RoomHandle};
use crate::websocket::{Incoming, PROTOCOL_ERROR, ReadError, WebSocket};
use crate::{AppState, unix_ms};

/// Control frames (pings, pongs) that may wait on the socket beyond a batch
/// of room frames; more are skipped (a ping is skipped, not the link).
const CONTROL_CAPACITY: usize = 64;
/// Room frames written with one vectored write, at most.
const BATCH_FRAMES: usize = 64;
/// Room frames up to this long are written by the room's task itself when
/// the connection is writing nothing (see [`crate::outbox`]); a larger one
/// (an initial sync) is left to the connection, so one member's frame does
/// not hold the room's task for a large copy.
const DIRECT_MAX_BYTES: usize = 64 * 1024;
/// How long the last frames and the close may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client's answer to a close is waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// A text message that is not UTF-8 (1007).
    #[error("a text message that is not UTF-8")]
    TextNotUtf8,
    /// A frame that breaks the WebSocket protocol (1002).
    #[error("WebSocket protocol violation: {0}")]
    Protocol(&'static str),
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
            Ending::TextNotUtf8 => close::INVALID_PAYLOAD,
            Ending::TooBig(_) => close::MESSAGE_TOO_BIG,
            Ending::Undecodable(_) => close::INVALID_PAYLOAD,
            Ending::Protocol(_) => PROTOCOL_ERROR,
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
            Ending::BadName(_)
                | Ending::TextFrame
                | Ending::TextNotUtf8
                | Ending::TooBig(_)
                | Ending::Undecodable(_)
                | Ending::Protocol(_)
        )
    }
}

/// What the upgrade request settled about a WebSocket.
pub struct Opening {
    /// The document name as the URL gave it.
    pub raw_name: String,
    /// The `?token=` of the URL.
    pub token: Option<String>,
    /// Whether the client asked for Quire's extensions (`quire.v1`).
    pub extensions: bool,
    /// The connection's place under the connection limits until it ends.
    pub admitted: Admitted,
    /// Bytes read from its socket (`None` when the router runs without
    /// `serve`: then no message timeout applies).
    pub meter: Option<Arc<ReadMeter>>,
    pub state: AppState,
}

/// Serves one upgraded WebSocket until it closes.
///
/// The task's future is what an idle connection costs, so everything the
/// setup needs travels boxed (a future keeps its arguments for its whole
/// life) and the setup and closing steps are boxed futures of their own.
pub fn serve(socket: WebSocket, opening: Box<Opening>) -> impl Future<Output = ()> + Send {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("conn", doc = %opening.raw_name, conn, quire = opening.extensions);
    run(conn, Box::new((socket, opening))).instrument(span)
}

/// The steps of a connection (see the module docs).
async fn run(conn: ConnId, start: Box<(WebSocket, Box<Opening>)>) {
    let metrics = start.1.state.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    if let Some(mut live) = Box::pin(open(conn, start)).await {
        let exit = live.run().await;
        Box::pin(live.finish(exit)).await;
    }
    metrics.connections.dec();
    debug!("connection closed");
}

/// Steps 1 and 2; a connection refused is closed here.
async fn open(conn: ConnId, start: Box<(WebSocket, Box<Opening>)>) -> Option<Live> {
    let (mut socket, opening) = *start;
    let Opening {
        raw_name,
        token,
        extensions,
        admitted,
        meter,
        state,
    } = *opening;
    let joined = match handshake(&mut socket, &raw_name, token, extensions, &state).await {
        Ok(opened) => join(&mut socket, conn, extensions, &opened, &state)
            .await
            .map(|joined| (opened, joined)),
        Err(ending) => Err(ending),
    };
    let (opened, joined) = match joined {
        Ok(joined) => joined,
        Err(ending) => {
            refuse(socket, &ending, extensions, &state).await;
            return None;
        }
    };
    let progress = meter.map(|meter| MessageProgress::new(meter, state.config.message_timeout));
    Some(Live {
        wire: Wire {
            socket,
            frames: joined.frames,
            extensions,
            fragment_bytes: state.config.fragment_bytes,
            pieces: None,
            closing: false,
            claimed: true,
            ended: None,
        },
        link: Link {
            conn,
            extensions,
            name: opened.name,
            access: opened.access,
            room: joined.room,
            room_time: Arc::default(),
            config: state.config.clone(),
            metrics: state.metrics.clone(),
        },
        progress,
        _admitted: admitted,
    })
}

/// Closes a connection that never joined its room (with a typed error
/// first for Quire clients), then waits for the client's answer.
async fn refuse(mut socket: WebSocket, ending: &Ending, extensions: bool, state: &AppState) {
    if ending.is_bad_input() || matches!(ending, Ending::Access(_)) {
        warn!(%ending, "refusing the connection");
        state.metrics.rejected_inputs.inc();
    } else {
        warn!(%ending, "could not join the room");
    }
    if let Ending::Access(err) = ending
        && !extensions
    {
        // Stock y-websocket clients understand the auth message.
        let denied = Message::PermissionDenied(&err.to_string()).encode();
        socket.queue_binary(denied.into());
    }
    queue_close(&mut socket, &ending.close(), extensions);
    if let Ok(Ok(())) = timeout(CLOSE_WRITE_TIMEOUT, socket.write_out()).await {
        drain(&mut socket).await;
    }
}

/// What the handshake settled.
struct Opened {
    name: DocName,
    access: Access,
}

/// Step 1: the document name and the token.
async fn handshake(
    socket: &mut WebSocket,
    raw_name: &str,
    token: Option<String>,
    extensions: bool,
    state: &AppState,
) -> Result<Opened, Ending> {
    let name = DocName::parse(raw_name)?;
    let access = authenticate(socket, token, &name, extensions, state).await?;
    Ok(Opened { name, access })
}

/// What joining set up.
struct Joined {
    room: RoomHandle,
    frames: OutboxReceiver,
}

/// Step 2: the outbox, the Welcome, and a place in the room.
async fn join(
    socket: &mut WebSocket,
    conn: ConnId,
    extensions: bool,
    opened: &Opened,
    state: &AppState,
) -> Result<Joined, Ending> {
    let config = &state.config;
    // Frames a Quire client gets in fragments are the connection's to write.
    let max_frame = if extensions {
        config.fragment_bytes.min(DIRECT_MAX_BYTES)
    } else {
        DIRECT_MAX_BYTES
    };
    let direct = socket.writer().map(|writer| Direct { writer, max_frame });
    let (frames_tx, frames) = outbox(
        config.outbox_capacity,
        config.outbox_bytes,
        direct,
        state.metrics.clone(),
    );
    if extensions {
        let welcome = Ext::Welcome(Welcome {
            conn_id: conn,
            server_time_ms: unix_ms(),
            ping_interval_ms: config.ping_interval.as_millis() as u64,
            ping_timeout_ms: config.ping_timeout.as_millis() as u64,
            max_message_bytes: config.max_message_bytes as u64,
            max_document_bytes: config.max_document_bytes,
        });
        // Queued before the room's first frame can be taken.
        socket.queue_binary(welcome.encode().into());
    }
    let member = MemberChannels {
        close: frames_tx.closer(),
        frames: frames_tx,
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
    Ok(Joined { room, frames })
}

/// A joined connection: its socket and what it writes, and its place in
/// the room.
struct Live {
    wire: Wire,
    link: Link,
    /// Whether a message has been arriving for too long.
    progress: Option<MessageProgress>,
    /// The connection's place under the connection limits, given back last.
    _admitted: Admitted,
}

/// The socket and what is to be written on it.
struct Wire {
    socket: WebSocket,
    /// The room's frames and the close slot (the room's and ours).
    frames: OutboxReceiver,
    extensions: bool,
    /// Quire clients get frames larger than this in fragments.
    fragment_bytes: usize,
    /// What is left of a large frame going out in fragments.
    pieces: Option<std::vec::IntoIter<Vec<u8>>>,
    /// A close frame is queued: nothing more is written after it.
    closing: bool,
    /// Whether this side owns writing ([`OutboxReceiver::claim`]): the
    /// outbox's flag as last set from here (the room never clears it).
    claimed: bool,
    /// Why writing ended, once it has (asked again, the same answer).
    ended: Option<WireEnd>,
}

/// Why the writing side stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireEnd {
    /// A close (the room's or ours) is queued.
    Closing,
    /// The socket failed.
    Gone,
    /// The room let go of the connection without a close (1011 is sent).
    RoomLeft,
}

/// What woke the loop.
enum Event {
    Wire(WireEnd),
    Read(Option<Result<Incoming, ReadError>>),
    Timer,
}

/// How the loop ended, and so what closing takes.
enum Exit {
    /// A close is asked for: write it, then (when the room asked for it)
    /// wait for the client's answer. A close the connection decides itself
    /// (a dead link, bad input) is not waited on.
    Closing { drain: bool },
    /// The client sent a close (with this code): answer it.
    ClientClosed(Option<u16>),
    /// The room is gone or let go: close with 1011.
    RoomLeft,
    /// The socket ended or failed.
    Gone,
}

impl Wire {
    /// Writes what is queued, taking the close first and then batches of
    /// the room's frames; `Ready` once writing has ended (see [`WireEnd`]).
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<WireEnd> {
        if let Some(end) = self.ended {
            return Poll::Ready(end);
        }
        let end = loop {
            self.claim();
            if self.queue_close() {
                break WireEnd::Closing;
            }
            if !self.socket.is_writing() && !self.fill() {
                match self.frames.poll_idle(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => break WireEnd::RoomLeft,
                    Poll::Pending => {
                        // The room writes directly until we claim again.
                        self.claimed = false;
                        return Poll::Pending;
                    }
                }
            }
            match self.socket.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => {
                    debug!(%err, "write failed");
                    break WireEnd::Gone;
                }
                Poll::Pending => {
                    // A close must still be noticed while the socket is full.
                    self.frames.register(cx);
                    return Poll::Pending;
                }
            }
        };
        self.ended = Some(end);
        Poll::Ready(end)
    }

    /// Takes writing over from the room before anything is written here;
    /// the rest of a frame the room began goes out first.
    fn claim(&mut self) {
        if !self.claimed {
            self.claimed = true;
            if let Some((frame, sent)) = self.frames.claim() {
                self.socket.resume_first(frame, sent);
            }
        }
    }

    /// Queues the close asked for (by the room or by us), if any and not
    /// yet done: a typed error first for Quire clients. Whether a close is
    /// queued now.
    fn queue_close(&mut self) -> bool {
        self.claim();
        if !self.closing
            && let Some(close) = self.frames.take_close()
        {
            self.pieces = None;
            queue_close(&mut self.socket, &close, self.extensions);
            self.closing = true;
        }
        self.closing
    }

    /// Queues the next piece of a large frame, or else a batch of the
    /// room's frames; whether anything was queued.
    fn fill(&mut self) -> bool {
        if let Some(pieces) = &mut self.pieces {
            if let Some(piece) = pieces.next() {
                self.socket.queue_binary(piece.into());
                return true;
            }
            self.pieces = None;
        }
        let mut taken = 0;
        while taken < BATCH_FRAMES
            && let Some((frame, sent)) = self.frames.try_recv()
        {
            taken += 1;
            if sent > 0 {
                // Begun by the room (when this side had claimed nothing).
                self.socket.resume_first(frame, sent);
                continue;
            }
            if self.extensions && frame.len() > self.fragment_bytes {
                let mut pieces = ext::fragment(&frame, self.fragment_bytes).into_iter();
                if let Some(piece) = pieces.next() {
                    self.socket.queue_binary(piece.into());
                }
                self.pieces = Some(pieces);
                break;
            }
            self.socket.queue_binary(frame);
        }
        taken > 0
    }

    /// Whether a control frame may be queued now (not after a close, and
    /// not beyond [`CONTROL_CAPACITY`]).
    fn takes_control(&self) -> bool {
        !self.closing && self.socket.queued_frames() < BATCH_FRAMES + CONTROL_CAPACITY
    }

    /// Waits for the next event: writing ended, a message (when `reading`),
    /// or the timer.
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        timer: Pin<&mut Sleep>,
        reading: bool,
    ) -> Poll<Event> {
        if let Poll::Ready(end) = self.poll_writes(cx) {
            return Poll::Ready(Event::Wire(end));
        }
        if reading && let Poll::Ready(read) = self.socket.poll_next(cx) {
            return Poll::Ready(Event::Read(read));
        }
        if timer.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Poll::Pending
    }
}

/// A joined connection's place in its room.
struct Link {
    conn: ConnId,
    extensions: bool,
    name: DocName,
    access: Access,
    room: RoomHandle,
    /// The room's time spent on this connection's messages (the room adds
    /// to it; the room-time rate limit reads it).
    room_time: Arc<RoomTime>,
    /// The server's settings and counters (not all of `AppState`: this is
    /// kept by every idle connection).
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Live {
    /// Step 3: reads and writes until the client leaves, the link dies,
    /// the token expires, the input is refused or the room closes it.
    async fn run(&mut self) -> Exit {
        let Live {
            wire,
            link,
            progress,
            ..
        } = self;
        let config = link.config.clone();
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
        // A message that waits out the rate limits (reading pauses
        // meanwhile; writing does not), and until when.
        let mut held: Option<Inbound> = None;
        let mut paused_until: Option<Instant> = None;
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
            // While paused the link is alive (we are the ones not reading
            // the client's pongs): no ping deadline, and no pings.
            let ping_deadline = unanswered_since
                .filter(|_| paused_until.is_none())
                .map(|t| t + config.ping_timeout);
            let expiry = link.access.expires_at;
            let due = [ping_deadline, expiry, next_check, paused_until]
                .into_iter()
                .flatten()
                .fold(next_ping, Instant::min);
            if due != timer_at || timer.is_elapsed() {
                timer.as_mut().reset(due);
                timer_at = due;
            }
            let reading = paused_until.is_none();
            let event = poll_fn(|cx| wire.poll_event(cx, timer.as_mut(), reading)).await;
            let incoming = match event {
                Event::Wire(WireEnd::Closing) => return Exit::Closing { drain: true },
                Event::Wire(WireEnd::Gone) => return Exit::Gone,
                Event::Wire(WireEnd::RoomLeft) => return Exit::RoomLeft,
                Event::Timer => {
                    let now = Instant::now();
                    if expiry.is_some_and(|at| now >= at) {
                        return link.end(wire, Ending::Access(AuthError::Expired));
                    }
                    if ping_deadline.is_some_and(|at| now >= at) {
                        return link
                            .end(wire, Ending::PingTimeout(config.ping_timeout.as_millis()));
                    }
                    if next_check.is_some_and(|at| now >= at) {
                        if progress.as_mut().is_some_and(|p| p.stalled(now)) {
                            let timeout = config.message_timeout.as_millis();
                            return link.end(wire, Ending::MessageTimeout(timeout));
                        }
                        next_check = check_every.map(|every| now + every);
                    }
                    if paused_until.is_some_and(|at| now >= at) {
                        paused_until = None;
                        // The heartbeat starts afresh with reading.
                        unanswered_since = None;
                        if let Some(inbound) = held.take()
                            && !deliver(wire, link, inbound).await
                        {
                            return Exit::RoomLeft;
                        }
                    }
                    if now >= next_ping {
                        if paused_until.is_none() {
                            nonce += 1;
                            // A socket too busy to take a ping is not dead; skip this one.
                            if wire.takes_control() {
                                if link.extensions {
                                    wire.socket.queue_binary(Ext::Ping(nonce).encode().into());
                                } else {
                                    wire.socket
                                        .queue_ping(Bytes::copy_from_slice(&nonce.to_be_bytes()));
                                }
                            }
                            unanswered_since.get_or_insert(now);
                        }
                        next_ping = now + config.ping_interval;
                    }
                    continue;
                }
                Event::Read(None) => return Exit::Gone,
                Event::Read(Some(Err(err))) => {
                    return match err {
                        ReadError::TooBig(_) => {
                            link.end(wire, Ending::TooBig(config.max_message_bytes))
                        }
                        ReadError::Protocol(what) => link.end(wire, Ending::Protocol(what)),
                        ReadError::TextNotUtf8 => link.end(wire, Ending::TextNotUtf8),
                        ReadError::Io(err) => {
                            debug!(%err, "read failed");
                            Exit::Gone
                        }
                    };
                }
                Event::Read(Some(Ok(incoming))) => incoming,
            };
            // Anything from the client proves the link is alive.
            unanswered_since = None;
            if let Some(progress) = progress.as_mut() {
                let (len, data) = match &incoming {
                    Incoming::Binary(bytes) => (bytes.len(), true),
                    Incoming::Text(len) => (*len, true),
                    Incoming::Ping(bytes) => (bytes.len(), false),
                    Incoming::Pong(len) => (*len, false),
                    Incoming::Close(_) => (0, false),
                };
                progress.delivered(len, data);
            }
            let bytes = match incoming {
                Incoming::Close(code) => return Exit::ClientClosed(code),
                Incoming::Binary(bytes) => bytes,
                Incoming::Ping(payload) => {
                    if wire.takes_control() {
                        wire.socket.queue_pong(payload);
                    } else if !wire.closing {
                        // Full: the most recent ping is the one answered.
                        wire.socket.replace_waiting_pong(payload);
                    }
                    continue;
                }
                Incoming::Pong(_) => continue,
                Incoming::Text(_) => return link.end(wire, Ending::TextFrame),
            };
            link.metrics.bytes_in.inc_by(bytes.len() as u64);
            let inbound = match decode(&bytes, link.extensions) {
                Ok(Decoded::Room(inbound)) => inbound,
                Ok(Decoded::Ping(nonce)) => {
                    if wire.takes_control() {
                        wire.socket.queue_binary(Ext::Pong(nonce).encode().into());
                    }
                    continue;
                }
                Ok(Decoded::Nothing) => continue,
                Ok(Decoded::Auth(token)) => match Box::pin(refresh(wire, link, &token)).await {
                    Ok(()) => continue,
                    Err(Some(ending)) => return link.end(wire, ending),
                    Err(None) => return Exit::RoomLeft,
                },
                Err(err) => return link.end(wire, err.into()),
            };
            // A connection over its rate is slowed down (not read from), never
            // cut. The room's time is charged as it is reported, a few
            // messages late: the debt is waited off all the same.
            let now = Instant::now();
            let spent = link.room_time.total();
            let wait = messages
                .take(1.0, now)
                .max(bytes_rate.take(bytes.len() as f64, now))
                .max(room_rate.take((spent - charged).as_secs_f64() * 1000.0, now));
            charged = spent;
            if !wait.is_zero() {
                link.metrics.throttled.inc();
                paused_until = Some(now + wait);
                held = Some(inbound);
                continue;
            }
            if !deliver(wire, link, inbound).await {
                return Exit::RoomLeft;
            }
        }
    }

    /// Step 4: leaves the room, writes what is queued and the close, and
    /// waits for the client's answer.
    async fn finish(self, exit: Exit) {
        let Live { mut wire, link, .. } = self;
        link.room.leave(link.conn).await;
        wire.claim();
        let drain_after = match exit {
            Exit::Gone => return,
            Exit::Closing { drain } => {
                wire.queue_close();
                drain
            }
            Exit::RoomLeft => {
                let reason = "the document's room let go of the connection";
                wire.socket
                    .queue_close(Some((close::INTERNAL_ERROR, reason)));
                true
            }
            Exit::ClientClosed(code) => {
                wire.socket.queue_close(code.map(|code| (code, "")));
                false
            }
        };
        let written = timeout(CLOSE_WRITE_TIMEOUT, wire.socket.write_out()).await;
        if let Ok(Ok(())) = written
            && drain_after
        {
            drain(&mut wire.socket).await;
        }
    }
}

impl Link {
    /// Asks for the connection to be closed for `ending`.
    fn end(&self, wire: &mut Wire, ending: Ending) -> Exit {
        if ending.is_bad_input() {
            warn!(%ending, "closing connection for bad input");
            self.metrics.rejected_inputs.inc();
        } else {
            warn!(%ending, "closing connection");
        }
        wire.frames.close(ending.close());
        Exit::Closing { drain: false }
    }
}

/// Hands a message to the room; false if the room is gone. While the
/// room's mailbox is full, what the room queued for us still goes out.
async fn deliver(wire: &mut Wire, link: &Link, inbound: Inbound) -> bool {
    // Boxed (one allocation per message): the loop's idle state does not
    // carry room for it.
    let mut delivering = Box::pin(link.room.deliver(link.conn, inbound, &link.room_time));
    poll_fn(|cx| {
        if let Poll::Ready(delivered) = delivering.as_mut().poll(cx) {
            return Poll::Ready(delivered.is_ok());
        }
        // Writing ending is seen by the loop after this message.
        let _ = wire.poll_writes(cx);
        Poll::Pending
    })
    .await
}

/// A token presented in-band mid-connection: same document, new expiry
/// (and maybe permission). `Err(None)`: the room is gone.
async fn refresh(wire: &mut Wire, link: &mut Link, token: &str) -> Result<(), Option<Ending>> {
    let refreshed = check_token(&link.config, Some(token), &link.name)
        .map_err(|err| Some(Ending::Access(err)))?;
    if refreshed.can_write != link.access.can_write
        && !deliver(wire, link, Inbound::SetWritable(refreshed.can_write)).await
    {
        return Err(None);
    }
    link.access = refreshed;
    Ok(())
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
fn check_token(config: &Config, token: Option<&str>, doc: &DocName) -> Result<Access, AuthError> {
    let Some(key) = &config.auth_key else {
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
    socket: &mut WebSocket,
    token: Option<String>,
    doc: &DocName,
    extensions: bool,
    state: &AppState,
) -> Result<Access, AuthError> {
    if state.config.auth_key.is_none() || token.is_some() || !extensions {
        return check_token(&state.config, token.as_deref(), doc);
    }
    let first = timeout(state.config.auth_timeout, socket.next()).await;
    let token = match first {
        Ok(Some(Ok(Incoming::Binary(frame)))) => match Ext::decode(&frame) {
            Ok(Ext::Auth { token }) => Some(token.to_owned()),
            _ => None,
        },
        _ => None,
    };
    check_token(&state.config, token.as_deref(), doc)
}

/// After sending a close frame, reads (and ignores) what the client still
/// sends until it answers the close, for at most a second. Closing a socket
/// with unread input makes the kernel reset it, and a reset can destroy the
/// close frame (and typed error) before the client reads them.
async fn drain(socket: &mut WebSocket) {
    let _ = timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Incoming::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Queues a typed error (Quire clients) and then the close frame.
fn queue_close(socket: &mut WebSocket, close: &Close, extensions: bool) {
    if extensions {
        let error = Ext::Error {
            code: u64::from(close.code),
            message: &close.reason,
        };
        socket.queue_binary(error.encode().into());
    }
    socket.queue_close(Some((close.code, &close.reason)));
}
