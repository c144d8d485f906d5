//! One WebSocket connection: decode what the client sends and hand it to the
//! room; write what the room queues for it; close with a clear code when
//! either side says so.
//!
//! Two halves run concurrently. The reader decodes each binary frame into an
//! [`Inbound`] (so malformed input is refused here, before it costs the room
//! anything) and waits for the room's mailbox, which slows down a client that
//! sends faster than its room can merge. The writer drains the connection's
//! bounded outbound queue and performs a [`Close`] when one arrives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quire_protocol::{DocName, Message, SyncMessage, close};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use crate::AppState;
use crate::room::{Close, ConnId, Inbound, MemberChannels};

/// Longest close reason a WebSocket close frame can carry, in bytes.
const MAX_REASON_BYTES: usize = 123;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serves one upgraded WebSocket for document `raw_name` until it closes.
pub async fn serve(socket: WebSocket, raw_name: String, state: AppState) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("conn", doc = %raw_name, conn);
    async move {
        state.metrics.connections.inc();
        state.metrics.connections_opened.inc();
        run(socket, conn, &raw_name, &state).await;
        state.metrics.connections.dec();
        debug!("connection closed");
    }
    .instrument(span)
    .await
}

async fn run(socket: WebSocket, conn: ConnId, raw_name: &str, state: &AppState) {
    let (mut sink, mut stream) = socket.split();
    let name = match DocName::parse(raw_name) {
        Ok(name) => name,
        Err(err) => {
            warn!(%err, "refusing document name");
            state.metrics.rejected_inputs.inc();
            let _ = sink
                .send(close_message(&Close::new(
                    close::BAD_DOCUMENT_NAME,
                    err.to_string(),
                )))
                .await;
            return;
        }
    };

    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(state.config.outbox_capacity);
    let (close_tx, mut close_rx) = mpsc::channel::<Close>(1);
    let member = MemberChannels {
        frames: frames_tx,
        close: close_tx.clone(),
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
            let _ = sink.send(close_message(&err.close())).await;
            return;
        }
    };
    drop(member);

    let metrics = state.metrics.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                Some(close) = close_rx.recv() => {
                    let _ = sink.send(close_message(&close)).await;
                    break;
                }
                frame = frames_rx.recv() => match frame {
                    Some(frame) => {
                        if sink.send(WsMessage::Binary(frame)).await.is_err() {
                            break;
                        }
                    }
                    // The room let go of us: the connection is over.
                    None => break,
                },
            }
        }
        let _ = sink.close().await;
    });

    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = &mut writer => break,
        };
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
                    let limit = state.config.max_message_bytes;
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
        metrics.bytes_in.inc_by(bytes.len() as u64);
        let inbound = match decode(&bytes) {
            Ok(Some(inbound)) => inbound,
            Ok(None) => continue,
            Err(err) => {
                reject(
                    state,
                    &close_tx,
                    close::INVALID_PAYLOAD,
                    format!("malformed message: {err}"),
                );
                break;
            }
        };
        if room.deliver(conn, inbound).await.is_err() {
            break;
        }
    }

    room.leave(conn).await;
    // Let the writer send its close frame; the room has dropped our queue.
    drop(close_tx);
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Turns one frame into what the room needs; `None` for messages a server
/// ignores (an auth message from a client).
fn decode(frame: &Bytes) -> Result<Option<Inbound>, quire_protocol::DecodeError> {
    let part = |slice: &[u8]| frame.slice_ref(slice);
    Ok(Some(match Message::decode(frame)? {
        Message::Sync(SyncMessage::Step1(sv)) => Inbound::StateVector(part(sv)),
        Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
            Inbound::Update(part(update))
        }
        Message::Awareness(update) => Inbound::Awareness(part(update)),
        Message::QueryAwareness => Inbound::QueryAwareness,
        Message::PermissionDenied(_) => return Ok(None),
    }))
}

fn reject(state: &AppState, close_tx: &mpsc::Sender<Close>, code: u16, reason: String) {
    warn!(code, %reason, "closing connection for bad input");
    state.metrics.rejected_inputs.inc();
    let _ = close_tx.try_send(Close::new(code, reason));
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
