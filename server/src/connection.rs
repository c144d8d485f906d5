//! One WebSocket connection: decode what the client sends and hand it to the
//! room; write what the room queues for it; keep checking the link is alive;
//! close with a clear code when either side says so.
//!
//! Two halves run concurrently. The **reader** decodes each binary frame
//! into an [`Inbound`] (malformed input is refused here, before it costs the
//! room anything), waits for the room's mailbox (which slows down a client
//! that sends faster than its room can merge), answers application pings,
//! and sends a ping every interval, dropping the connection when one goes
//! unanswered for the timeout. The **writer** sends, in this priority:
//! a close (preceded by a typed error for Quire clients), control frames
//! (welcome, pings, pongs), then the room's frames. For Quire clients a
//! large frame goes out in fragments with control frames in between, so a
//! 50 MB initial sync does not starve the heartbeat.
//!
//! Stock y-websocket clients get WebSocket ping frames and no extension
//! message ever; Quire clients (subprotocol `quire.v1`) get the extensions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::{self, Ext, SUBPROTOCOL, Welcome};
use quire_protocol::{DocName, Message, SyncMessage, close};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info_span, warn};

use crate::auth::{self, AuthError, Permission};
use crate::limits::{Admitted, RateLimit};
use crate::room::{Close, ConnId, Inbound, MemberChannels};
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

/// How long a Quire client has to present its token in-band.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serves one upgraded WebSocket for document `raw_name` until it closes.
/// `token` is the `?token=` of the URL; `admitted` holds the connection's
/// place under the connection limits until it ends.
pub async fn serve(
    socket: WebSocket,
    raw_name: String,
    token: Option<String>,
    admitted: Admitted,
    state: AppState,
) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let extensions = socket
        .protocol()
        .is_some_and(|p| p.as_bytes() == SUBPROTOCOL.as_bytes());
    let span = info_span!("conn", doc = %raw_name, conn, quire = extensions);
    async move {
        state.metrics.connections.inc();
        state.metrics.connections_opened.inc();
        run(socket, conn, extensions, &raw_name, token, &state).await;
        drop(admitted);
        state.metrics.connections.dec();
        debug!("connection closed");
    }
    .instrument(span)
    .await
}

async fn run(
    socket: WebSocket,
    conn: ConnId,
    extensions: bool,
    raw_name: &str,
    token: Option<String>,
    state: &AppState,
) {
    let config = &state.config;
    let (mut sink, mut stream) = socket.split();
    let name = match DocName::parse(raw_name) {
        Ok(name) => name,
        Err(err) => {
            warn!(%err, "refusing document name");
            state.metrics.rejected_inputs.inc();
            let close = Close::new(close::BAD_DOCUMENT_NAME, err.to_string());
            send_close(&mut sink, &close, extensions).await;
            drain(&mut stream).await;
            return;
        }
    };

    let mut access = match authenticate(&mut stream, token, &name, extensions, state).await {
        Ok(access) => access,
        Err(err) => {
            warn!(%err, "refusing access");
            state.metrics.rejected_inputs.inc();
            if !extensions {
                // Stock y-websocket clients understand the auth message.
                let denied = Message::PermissionDenied(&err.to_string()).encode();
                let _ = sink.send(WsMessage::Binary(denied.into())).await;
            }
            send_close(
                &mut sink,
                &Close::new(err.close_code(), err.to_string()),
                extensions,
            )
            .await;
            drain(&mut stream).await;
            return;
        }
    };

    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(config.outbox_capacity);
    let (close_tx, close_rx) = mpsc::channel::<Close>(1);
    let (control_tx, control_rx) = mpsc::channel::<WsMessage>(CONTROL_CAPACITY);
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
        can_write: access.can_write,
    };
    let room = match state
        .rooms
        .with_room(&name, |room| {
            let member = member.clone();
            async move { room.join(conn, member).await.map(|()| room) }
        })
        .await
    {
        Ok(room) => room,
        Err(err) => {
            warn!(%err, "could not join the room");
            send_close(&mut sink, &err.close(), extensions).await;
            drain(&mut stream).await;
            return;
        }
    };
    drop(member);

    let writer = Writer {
        sink,
        frames: frames_rx,
        close: close_rx,
        control: control_rx,
        extensions,
        fragment_bytes: config.fragment_bytes,
    };
    let mut writer = tokio::spawn(writer.run());
    // Set once the writer has ended (it sent a close or the socket failed),
    // so it is not awaited twice.
    let mut writer_done = false;

    // Heartbeat: a ping every interval; the oldest unanswered one must be
    // answered (by anything at all) within the timeout.
    let mut nonce = 0u64;
    let mut next_ping = Instant::now() + config.ping_interval;
    let mut unanswered_since: Option<Instant> = None;
    let mut messages = RateLimit::per_second(f64::from(config.max_messages_per_sec));
    let mut bytes_rate = RateLimit::per_second(config.max_bytes_per_sec as f64);
    loop {
        let ping_deadline = unanswered_since.map(|t| t + config.ping_timeout);
        let expiry = access.expires_at;
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = &mut writer => {
                // The writer sent a close: wait for the client's reply.
                writer_done = true;
                drain(&mut stream).await;
                break;
            }
            _ = sleep_until(next_ping) => {
                nonce += 1;
                let ping = if extensions {
                    WsMessage::Binary(Ext::Ping(nonce).encode().into())
                } else {
                    WsMessage::Ping(Bytes::from(nonce.to_be_bytes().to_vec()))
                };
                // A writer too busy to take a ping is not dead; skip this one.
                let _ = control_tx.try_send(ping);
                unanswered_since.get_or_insert_with(Instant::now);
                next_ping = Instant::now() + config.ping_interval;
                continue;
            }
            _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let _ = close_tx.try_send(Close::new(close::UNAUTHORIZED, AuthError::Expired.to_string()));
                break;
            }
            _ = sleep_until(ping_deadline.unwrap_or_else(Instant::now)), if ping_deadline.is_some() => {
                warn!("no answer to ping; dropping the connection");
                let timeout = config.ping_timeout.as_millis();
                let _ = close_tx.try_send(Close::new(close::PING_TIMEOUT, format!("no answer to ping within {timeout} ms")));
                break;
            }
        };
        // Anything from the client proves the link is alive.
        unanswered_since = None;
        let bytes = match frame {
            None | Some(Ok(WsMessage::Close(_))) => break,
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(WsMessage::Text(_))) => {
                reject(
                    state,
                    &close_tx,
                    close::UNSUPPORTED_DATA,
                    "text frames are not part of the protocol; send binary".into(),
                );
                break;
            }
            Some(Err(err)) => {
                let text = err.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    let limit = config.max_message_bytes;
                    reject(
                        state,
                        &close_tx,
                        close::MESSAGE_TOO_BIG,
                        format!("message larger than the limit of {limit} bytes"),
                    );
                } else {
                    debug!(%text, "read failed");
                }
                break;
            }
        };
        state.metrics.bytes_in.inc_by(bytes.len() as u64);
        let inbound = match decode(&bytes, extensions) {
            Ok(Decoded::Room(inbound)) => inbound,
            Ok(Decoded::Ping(nonce)) => {
                let _ = control_tx.try_send(WsMessage::Binary(Ext::Pong(nonce).encode().into()));
                continue;
            }
            Ok(Decoded::Nothing) => continue,
            Ok(Decoded::Auth(token)) => {
                // A refreshed token: same document, new expiry (and maybe permission).
                match check_token(state, Some(&token), &name) {
                    Ok(refreshed) => {
                        if refreshed.can_write != access.can_write
                            && room
                                .deliver(conn, Inbound::SetWritable(refreshed.can_write))
                                .await
                                .is_err()
                        {
                            break;
                        }
                        access = refreshed;
                        continue;
                    }
                    Err(err) => {
                        let _ = close_tx.try_send(Close::new(err.close_code(), err.to_string()));
                        break;
                    }
                }
            }
            Err(reason) => {
                reject(state, &close_tx, close::INVALID_PAYLOAD, reason);
                break;
            }
        };
        // A connection over its rate is slowed down (not read from), never cut.
        let now = Instant::now();
        let wait = messages
            .take(1.0, now)
            .max(bytes_rate.take(bytes.len() as f64, now));
        if !wait.is_zero() {
            state.metrics.throttled.inc();
            tokio::time::sleep(wait).await;
        }
        if room.deliver(conn, inbound).await.is_err() {
            break;
        }
    }

    room.leave(conn).await;
    // Let the writer send its close frame; the room has dropped our queue.
    drop(close_tx);
    drop(control_tx);
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// The sending half of the socket and its three queues.
struct Writer {
    sink: SplitSink<WebSocket, WsMessage>,
    frames: mpsc::Receiver<Bytes>,
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
                next = self.frames.try_recv().ok();
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
enum Decoded {
    /// For the room.
    Room(Inbound),
    /// An application ping, answered by the connection itself.
    Ping(u64),
    /// Nothing a server acts on (a pong, an auth message from a client).
    Nothing,
    /// A token presented in-band (Quire clients).
    Auth(String),
}

/// Turns one frame into what the room needs. Extension frames are only
/// understood on connections that negotiated them.
fn decode(frame: &Bytes, extensions: bool) -> Result<Decoded, String> {
    let part = |slice: &[u8]| frame.slice_ref(slice);
    if extensions && Ext::is_ext(frame) {
        return match Ext::decode(frame).map_err(|e| format!("malformed message: {e}"))? {
            Ext::Ping(nonce) => Ok(Decoded::Ping(nonce)),
            Ext::Pong(_) => Ok(Decoded::Nothing),
            Ext::Auth { token } => Ok(Decoded::Auth(token.to_owned())),
            Ext::Emit { name, payload, ack } => Ok(Decoded::Room(Inbound::Emit {
                name: name.to_owned(),
                payload: payload.to_owned(),
                ack,
            })),
            other => Err(format!("a client may not send {other:?}")),
        };
    }
    let message = Message::decode(frame).map_err(|e| format!("malformed message: {e}"))?;
    Ok(match message {
        Message::Sync(SyncMessage::Step1(sv)) => Decoded::Room(Inbound::StateVector(part(sv))),
        Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
            Decoded::Room(Inbound::Update(part(update)))
        }
        Message::Awareness(update) => Decoded::Room(Inbound::Awareness(part(update))),
        Message::QueryAwareness => Decoded::Room(Inbound::QueryAwareness),
        Message::PermissionDenied(_) => Decoded::Nothing,
    })
}

fn reject(state: &AppState, close_tx: &mpsc::Sender<Close>, code: u16, reason: String) {
    warn!(code, %reason, "closing connection for bad input");
    state.metrics.rejected_inputs.inc();
    let _ = close_tx.try_send(Close::new(code, reason));
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
        expires_at: Some(Instant::now() + left),
    })
}

/// Finds the connection's token: in the URL, or else (Quire clients, which
/// send it in-band so it stays out of URLs and logs) as the first message.
async fn authenticate(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    token: Option<String>,
    doc: &DocName,
    extensions: bool,
    state: &AppState,
) -> Result<Access, AuthError> {
    if state.config.auth_key.is_none() || token.is_some() || !extensions {
        return check_token(state, token.as_deref(), doc);
    }
    let first = tokio::time::timeout(AUTH_TIMEOUT, stream.next()).await;
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
async fn drain(stream: &mut futures_util::stream::SplitStream<WebSocket>) {
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
