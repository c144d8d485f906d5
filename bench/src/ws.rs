//! The load generator's y-websocket client pieces: connecting, the sync
//! handshake, classifying frames, and the edit tokens that carry a writer id
//! and sequence number through the servers.
//!
//! Clients are stock y-websocket clients (no `quire.v1` subprotocol) unless
//! a scenario asks for Quire's extensions (durability).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::ext::Ext;
use quire_protocol::lib0::{write_var_bytes, write_var_uint};
use quire_protocol::{Message, SyncMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sync step 2 carrying an empty update (what an empty document answers).
pub const EMPTY_STEP2: [u8; 5] = [0, 1, 2, 0, 0];
/// Sync step 1 with an empty state vector ("send me everything").
pub const EMPTY_STEP1: [u8; 4] = [0, 0, 1, 0];

/// Longest wait for a connection plus its handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a WebSocket with small buffers (idle scenario: 10k of them) and
/// Nagle off. `subprotocol` asks for Quire's extensions.
pub async fn connect(url: &str, subprotocol: Option<&'static str>) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(protocol) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("connect {url}: {e}")),
        Err(_) => Err(format!("connect {url}: timed out")),
    }
}

/// A sync update frame around a Yjs update.
pub fn update_frame(update: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(update.len() + 8);
    write_var_uint(&mut frame, 0);
    write_var_uint(&mut frame, 2);
    write_var_bytes(&mut frame, update);
    frame
}

/// What a received frame is, as far as the bench cares.
pub enum Frame<'a> {
    Step1,
    Step2(&'a [u8]),
    Update(&'a [u8]),
    Ext(Ext<'a>),
    Other,
}

pub fn classify(frame: &[u8]) -> Frame<'_> {
    // Fast path for the hot case: [0, 2, len..., update].
    if Ext::is_ext(frame) {
        return Ext::decode(frame).map_or(Frame::Other, Frame::Ext);
    }
    match Message::decode(frame) {
        Ok(Message::Sync(SyncMessage::Step1(_))) => Frame::Step1,
        Ok(Message::Sync(SyncMessage::Step2(u))) => Frame::Step2(u),
        Ok(Message::Sync(SyncMessage::Update(u))) => Frame::Update(u),
        _ => Frame::Other,
    }
}

/// Length of an edit token: `<` 6 hex digits `:` 8 hex digits `>`.
pub const TOKEN_LEN: usize = 17;

/// The text a writer inserts: its global id and the edit's sequence number.
pub fn token(writer: u32, seq: u32) -> String {
    format!("<{writer:06x}:{seq:08x}>")
}

fn hex(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u32::from(digit);
    }
    Some(value)
}

/// Calls `found(writer, seq)` for every token in a (relayed) update. The
/// update encodes inserted text verbatim, so a byte scan finds it without
/// decoding; the pattern cannot arise from the binary parts by accident in
/// practice (17 bytes of fixed shape).
pub fn scan_tokens(update: &[u8], mut found: impl FnMut(u32, u32)) {
    let mut i = 0;
    while i + TOKEN_LEN <= update.len() {
        if update[i] == b'<'
            && update[i + 7] == b':'
            && update[i + 16] == b'>'
            && let (Some(w), Some(s)) = (hex(&update[i + 1..i + 7]), hex(&update[i + 8..i + 16]))
        {
            found(w, s);
            i += TOKEN_LEN;
            continue;
        }
        i += 1;
    }
}

/// The stock client handshake on a fresh connection with an empty
/// document: send step 1, answer the server's step 1 with an empty step 2,
/// wait for the server's step 2. The step 2 and every frame other than
/// these are passed to `other` (e.g. what the room already holds, an update
/// that raced the handshake).
pub async fn handshake_empty(ws: &mut Ws, mut other: impl FnMut(&[u8])) -> Result<(), String> {
    ws.send(WsMessage::Binary(EMPTY_STEP1.to_vec().into()))
        .await
        .map_err(|e| e.to_string())?;
    let waiting = async {
        while let Some(message) = ws.next().await {
            let message = message.map_err(|e| e.to_string())?;
            match message {
                WsMessage::Binary(bytes) => match classify(&bytes) {
                    Frame::Step1 => ws
                        .send(WsMessage::Binary(EMPTY_STEP2.to_vec().into()))
                        .await
                        .map_err(|e| e.to_string())?,
                    Frame::Step2(_) => {
                        other(&bytes);
                        return Ok(());
                    }
                    Frame::Ext(Ext::Ping(nonce)) => ws
                        .send(WsMessage::Binary(Ext::Pong(nonce).encode().into()))
                        .await
                        .map_err(|e| e.to_string())?,
                    _ => other(&bytes),
                },
                WsMessage::Close(frame) => {
                    return Err(format!("closed during handshake: {frame:?}"));
                }
                _ => {}
            }
        }
        Err("connection ended during handshake".to_owned())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, waiting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
}

/// Connects a fresh client with an empty document and applies what the
/// server sends (step 2 and updates) until `done(text length)` holds.
/// Returns the document and the time from starting to connect until then.
/// Works for servers that send the stored document after step 2 too (the
/// reference server loads from leveldb asynchronously and sends it as an
/// update).
pub async fn sync_until(
    url: &str,
    timeout: Duration,
    done: impl Fn(u32) -> bool,
) -> Result<(yrs::Doc, Duration, Ws), String> {
    use yrs::updates::decoder::Decode;
    use yrs::{Text as _, Transact as _, Update};
    let started = tokio::time::Instant::now();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut ws = connect(url, None).await?;
    ws.send(WsMessage::Binary(EMPTY_STEP1.to_vec().into()))
        .await
        .map_err(|e| e.to_string())?;
    let waiting = async {
        while let Some(message) = ws.next().await {
            let bytes = match message.map_err(|e| e.to_string())? {
                WsMessage::Binary(bytes) => bytes,
                WsMessage::Close(frame) => return Err(format!("closed while syncing: {frame:?}")),
                _ => continue,
            };
            let update = match classify(&bytes) {
                Frame::Step1 => {
                    ws.send(WsMessage::Binary(EMPTY_STEP2.to_vec().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                Frame::Step2(u) | Frame::Update(u) => u,
                _ => continue,
            };
            let update = Update::decode_v1(update).map_err(|e| format!("bad update: {e}"))?;
            let mut txn = doc.transact_mut();
            txn.apply_update(update)
                .map_err(|e| format!("cannot apply: {e}"))?;
            if done(text.len(&txn)) {
                return Ok(());
            }
        }
        Err("connection ended while syncing".to_owned())
    };
    tokio::time::timeout(timeout, waiting)
        .await
        .map_err(|_| "sync timed out".to_owned())??;
    Ok((doc, started.elapsed(), ws))
}

/// The `content` text of a document.
pub fn text_of(doc: &yrs::Doc) -> String {
    use yrs::{GetString as _, Transact as _};
    doc.get_or_insert_text("content")
        .get_string(&doc.transact())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, Text, Transact};

    #[test]
    fn tokens_survive_a_yrs_update() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &token(0x12, 0x3456));
        let update = txn.encode_update_v1();
        let mut seen = Vec::new();
        scan_tokens(&update_frame(&update), |w, s| seen.push((w, s)));
        assert_eq!(seen, [(0x12, 0x3456)]);
    }

    #[test]
    fn frames_are_classified() {
        assert!(matches!(classify(&EMPTY_STEP1), Frame::Step1));
        assert!(matches!(classify(&EMPTY_STEP2), Frame::Step2(_)));
        assert!(matches!(classify(&update_frame(&[0, 0])), Frame::Update(_)));
    }
}
