//! One server-side WebSocket (RFC 6455) over the socket the HTTP upgrade
//! hands over: the upgrade itself ([`Upgrade`]), frames read and decoded
//! into [`Incoming`] messages, frames written in front of their payloads.
//!
//! tungstenite parses and formats every frame header (`FrameHeader`); this
//! module keeps what one connection needs between frames, and **nothing
//! while it is idle** (issue 14, target 3: tungstenite's `WebSocket` keeps a
//! read buffer and a write buffer per connection for its whole life, and the
//! write buffer as large as the largest frame ever sent, e.g. an initial
//! sync):
//!
//! - Reading waits for the socket to be readable with no buffer at all, then
//!   reads into a buffer made for the occasion and given back as soon as it
//!   holds no unfinished frame. A payload smaller than the buffer is copied
//!   out, so nothing the room keeps (an awareness state) pins a read buffer.
//! - Writing takes each frame's payload as it is (a [`Bytes`] the room may
//!   share with every member), puts the 2–10 header bytes in front and
//!   writes all queued frames with one vectored write: no copy of a payload
//!   into a per-connection buffer, and one system call for a batch.
//! - The TCP stream is shared (`Arc`) with the connection's outbox, whose
//!   pushes write whole frames to it directly ([`SocketWriter`]) while the
//!   connection writes nothing; a frame such a write began is finished
//!   here first ([`WebSocket::resume_first`]).
//!
//! The rules a server must apply to a client's frames are checked here:
//! frames must be masked, reserved bits clear, control frames short and
//! whole, fragments in order; a violation is a [`ReadError::Protocol`]
//! (close code 1002), a message over the limit [`ReadError::TooBig`] (1009).
//! Ping frames are returned to the caller, which answers them (the pong
//! goes out among its control frames).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;
use tracing::warn;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::limits::{Metered, ReadMeter};

/// Close code for a frame that breaks the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// What a read asks the socket for at least; also the largest payload
/// copied out of the read buffer (larger ones take the buffer with them).
pub const READ_CHUNK: usize = 4 * 1024;
/// What one read asks for at most, even while a larger frame arrives.
const READ_MAX: usize = 1 << 20;
/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest header of a frame the server sends (no mask).
const MAX_HEAD: usize = 10;
/// Buffers handed to one vectored write (two per frame).
const WRITE_SLICES: usize = 128;

/// The socket under a WebSocket: the TCP stream itself when the upgrade
/// came through [`crate::serve`] (so readiness can be awaited without a
/// buffer, and the room can write to it directly: [`SocketWriter`]), else
/// hyper's upgraded connection.
pub enum Transport {
    /// The stream, shared with the outbox's direct writes, and the meter its
    /// reads are counted in (for the message timeout).
    Tcp {
        stream: Arc<TcpStream>,
        meter: Arc<ReadMeter>,
    },
    Upgraded(TokioIo<Upgraded>),
}

impl Transport {
    /// The TCP stream of [`crate::serve`]'s connections, its reads counted.
    pub fn tcp(tcp: Metered<TcpStream>) -> Self {
        let (stream, meter) = tcp.into_parts();
        Transport::Tcp {
            stream: Arc::new(stream),
            meter,
        }
    }

    /// Whether a read would find something (always "maybe" for hyper's
    /// upgraded connection, which cannot tell).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp { stream, .. } => stream.poll_read_ready(cx),
            Transport::Upgraded(_) => Poll::Ready(Ok(())),
        }
    }

    /// Reads into `buf`'s spare capacity (not zeroed first); 0 at the end.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp { stream, meter } => loop {
                ready!(stream.poll_read_ready(cx))?;
                match stream.try_read_buf(buf) {
                    Ok(read) => {
                        meter.add(read);
                        return Poll::Ready(Ok(read));
                    }
                    // Readiness was stale (and is now cleared): wait again.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Poll::Ready(Err(err)),
                }
            },
            Transport::Upgraded(io) => poll_read_buf(Pin::new(io), cx, buf),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp { stream, .. } => loop {
                ready!(stream.poll_write_ready(cx))?;
                match stream.try_write_vectored(bufs) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    written => return Poll::Ready(written),
                }
            },
            Transport::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}

/// A WebSocket's TCP stream as the room's task writes to it directly,
/// without waking the connection's task (see [`crate::outbox`]): whole
/// binary frames, never waiting. The outbox decides when this may write
/// (nothing else is being written on the socket) and under its lock, so
/// every write to one socket is ordered.
#[derive(Debug, Clone)]
pub struct SocketWriter(Arc<TcpStream>);

/// What a direct write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// The whole frame is on the socket.
    Whole,
    /// This many bytes of the frame (header included; maybe none) are:
    /// the rest is the connection's to write, before anything else
    /// ([`WebSocket::resume_first`]).
    Part(usize),
}

impl SocketWriter {
    /// Writes `payload` as one binary frame, as far as the socket takes it
    /// now (one system call).
    pub fn try_write_binary(&self, payload: &[u8]) -> io::Result<Wrote> {
        let (head, head_len) = head(OpCode::Data(Data::Binary), payload.len());
        let slices = [
            IoSlice::new(&head[..usize::from(head_len)]),
            IoSlice::new(payload),
        ];
        match self.0.try_write_vectored(&slices) {
            Ok(written) if written == usize::from(head_len) + payload.len() => Ok(Wrote::Whole),
            Ok(written) => Ok(Wrote::Part(written)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Wrote::Part(0)),
            Err(err) => Err(err),
        }
    }
}

/// A message from the client.
#[derive(Debug)]
pub enum Incoming {
    Binary(Bytes),
    /// A text message (not part of Quire's protocol), of this many bytes.
    Text(usize),
    /// A ping frame, to be answered with its payload.
    Ping(Bytes),
    /// A pong frame, of this many bytes.
    Pong(usize),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("message larger than the limit of {0} bytes")]
    TooBig(usize),
    #[error("WebSocket protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message that is not UTF-8 (close code 1007).
    #[error("a text message that is not UTF-8")]
    TextNotUtf8,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A fragmented message being put together (browsers send whole frames;
/// other clients may not).
struct Partial {
    text: bool,
    data: BytesMut,
}

/// A frame being written: its header and its payload.
struct Outgoing {
    head: [u8; MAX_HEAD],
    head_len: u8,
    payload: Bytes,
    /// Bytes of header and payload already written.
    sent: usize,
}

impl Outgoing {
    /// A frame of `opcode` carrying `payload`, header formatted.
    fn new(opcode: OpCode, payload: Bytes) -> Self {
        let (head, head_len) = head(opcode, payload.len());
        Self {
            head,
            head_len,
            payload,
            sent: 0,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }

    /// What is still to write, as up to two slices.
    fn unsent(&self) -> [&[u8]; 2] {
        let head_len = usize::from(self.head_len);
        if self.sent < head_len {
            [&self.head[self.sent..head_len], &self.payload[..]]
        } else {
            [&[], &self.payload[self.sent - head_len..]]
        }
    }
}

/// The header of a server frame (no mask) of `opcode` carrying `len`
/// bytes, and its length.
fn head(opcode: OpCode, len: usize) -> ([u8; MAX_HEAD], u8) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut head = [0u8; MAX_HEAD];
    let mut cursor = Cursor::new(&mut head[..]);
    header
        .format(len as u64, &mut cursor)
        .expect("an unmasked header fits in 10 bytes");
    let head_len = cursor.position() as u8;
    (head, head_len)
}

/// One WebSocket, server side. Every field is empty (no allocation) while
/// the connection is idle.
pub struct WebSocket {
    io: Transport,
    /// Bytes read and not yet part of a whole frame.
    read: BytesMut,
    /// The header of the frame whose payload is still arriving, and the
    /// payload's length.
    header: Option<(FrameHeader, usize)>,
    /// A fragmented message in progress.
    partial: Option<Box<Partial>>,
    /// The largest message (and frame) accepted, in bytes.
    max_message: usize,
    /// The socket ended (no more reads).
    eof: bool,
    /// Frames queued and not yet fully written, oldest first.
    out: VecDeque<Outgoing>,
}

impl WebSocket {
    /// A WebSocket over `io`, starting with what was read past the upgrade
    /// request (`read_ahead`).
    pub fn new(io: Transport, read_ahead: Bytes, max_message: usize) -> Self {
        Self {
            io,
            read: BytesMut::from(&read_ahead[..]),
            header: None,
            partial: None,
            max_message,
            eof: false,
            out: VecDeque::new(),
        }
    }

    /// The next message; `None` once the socket has ended.
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next message. Cancel-safe: a frame read in part stays
    /// in the buffer.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ReadError>>> {
        loop {
            match self.take_frame() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
            if self.eof {
                return Poll::Ready(None);
            }
            if self.read.is_empty() {
                // Nothing unfinished: wait for the socket with no buffer.
                self.read = BytesMut::new();
                if let Err(err) = ready!(self.io.poll_read_ready(cx)) {
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
            let missing = match &self.header {
                Some((_, len)) => len.saturating_sub(self.read.len()),
                None => 0,
            };
            let filled = self.read.len();
            // Grows once nearly full, by what arrived (doubling), never by
            // what a header announces: a silent client that announced a
            // large frame pins about twice what it sent, no more.
            if self.read.capacity() - filled < READ_CHUNK {
                let want = missing
                    .min(filled.max(READ_CHUNK))
                    .clamp(READ_CHUNK, READ_MAX);
                self.read.reserve(want);
            }
            // Into spare capacity, not zeroed first.
            let polled = self.io.poll_read_buf(cx, &mut self.read);
            let got = self.read.len() - filled;
            match polled {
                Poll::Pending => {
                    if self.read.is_empty() {
                        self.read = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                Poll::Ready(Ok(_)) if got == 0 => self.eof = true,
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Takes whole frames out of the buffer until one completes a message
    /// (returned) or none is left whole.
    fn take_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if self.header.is_none() {
                let mut cursor = Cursor::new(&self.read[..]);
                let parsed = FrameHeader::parse(&mut cursor)
                    .map_err(|_| ReadError::Protocol("reserved opcode"))?;
                let Some((header, len)) = parsed else {
                    return Ok(None);
                };
                let used = cursor.position() as usize;
                let len = self.check(&header, len)?;
                self.read.advance(used);
                self.header = Some((header, len));
            }
            let len = self.header.as_ref().map_or(0, |(_, len)| *len);
            if self.read.len() < len {
                return Ok(None);
            }
            let (header, len) = self.header.take().expect("a header was parsed");
            if let Some(mask) = header.mask {
                unmask(&mut self.read[..len], mask);
            }
            let payload = if len <= READ_CHUNK {
                let payload = Bytes::copy_from_slice(&self.read[..len]);
                self.read.advance(len);
                payload
            } else {
                self.read.split_to(len).freeze()
            };
            if let Some(message) = self.message(&header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Checks a client frame's header; its payload length.
    fn check(&self, header: &FrameHeader, len: u64) -> Result<usize, ReadError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        if header.mask.is_none() {
            return Err(ReadError::Protocol("unmasked client frame"));
        }
        if len > i64::MAX as u64 {
            return Err(ReadError::Protocol("64-bit length with the top bit set"));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        match header.opcode {
            OpCode::Control(_) if !header.is_final => {
                Err(ReadError::Protocol("fragmented control frame"))
            }
            OpCode::Control(_) if len > MAX_CONTROL_PAYLOAD => {
                Err(ReadError::Protocol("control frame over 125 bytes"))
            }
            OpCode::Data(_) => {
                let before = self.partial.as_ref().map_or(0, |p| p.data.len());
                if before.saturating_add(len) > self.max_message {
                    Err(ReadError::TooBig(self.max_message))
                } else {
                    Ok(len)
                }
            }
            OpCode::Control(_) => Ok(len),
        }
    }

    /// What a whole frame means: a message, or a piece of one.
    fn message(
        &mut self,
        header: &FrameHeader,
        payload: Bytes,
    ) -> Result<Option<Incoming>, ReadError> {
        let data = match header.opcode {
            OpCode::Control(Control::Close) => {
                return close_code(&payload).map(|code| Some(Incoming::Close(code)));
            }
            OpCode::Control(Control::Ping) => return Ok(Some(Incoming::Ping(payload))),
            OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong(payload.len()))),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(ReadError::Protocol("reserved opcode"));
            }
            OpCode::Data(data) => data,
        };
        let text = match (data, self.partial.as_mut()) {
            (Data::Continue, None) => {
                return Err(ReadError::Protocol("continuation without a message"));
            }
            (Data::Continue, Some(partial)) => {
                partial.data.extend_from_slice(&payload);
                if !header.is_final {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("a message in progress");
                return Ok(Some(if partial.text {
                    Incoming::Text(text_len(&partial.data)?)
                } else {
                    Incoming::Binary(partial.data.freeze())
                }));
            }
            (_, Some(_)) => return Err(ReadError::Protocol("new message inside a fragmented one")),
            (data, None) => data == Data::Text,
        };
        if header.is_final {
            return Ok(Some(if text {
                Incoming::Text(text_len(&payload)?)
            } else {
                Incoming::Binary(payload)
            }));
        }
        self.partial = Some(Box::new(Partial {
            text,
            data: BytesMut::from(&payload[..]),
        }));
        Ok(None)
    }

    /// Whether the socket has frames still to write.
    pub fn is_writing(&self) -> bool {
        !self.out.is_empty()
    }

    /// Frames queued and not yet fully written.
    pub fn queued_frames(&self) -> usize {
        self.out.len()
    }

    /// Queues a binary frame.
    pub fn queue_binary(&mut self, payload: Bytes) {
        self.queue(OpCode::Data(Data::Binary), payload);
    }

    /// Queues a ping frame (at most 125 bytes of payload).
    pub fn queue_ping(&mut self, payload: Bytes) {
        self.queue(OpCode::Control(Control::Ping), payload);
    }

    /// Queues a pong frame answering a ping's payload.
    pub fn queue_pong(&mut self, payload: Bytes) {
        self.queue(OpCode::Control(Control::Pong), payload);
    }

    /// Queues a close frame: with a code and a reason (cut to what a close
    /// frame holds), or empty.
    pub fn queue_close(&mut self, close: Option<(u16, &str)>) {
        let payload = match close {
            Some((code, reason)) => {
                let reason = cut_to_char(reason, MAX_CONTROL_PAYLOAD - 2);
                let mut payload = Vec::with_capacity(2 + reason.len());
                payload.extend_from_slice(&code.to_be_bytes());
                payload.extend_from_slice(reason.as_bytes());
                Bytes::from(payload)
            }
            None => Bytes::new(),
        };
        self.queue(OpCode::Control(Control::Close), payload);
    }

    /// Answers a ping when no more control frames may be queued: the
    /// newest pong not yet begun answers this ping instead (RFC 6455 §5.5.3
    /// lets a peer answer only the most recent ping); false if none waits.
    pub fn replace_waiting_pong(&mut self, payload: Bytes) -> bool {
        let pong = OpCode::Control(Control::Pong);
        let Some(waiting) = self
            .out
            .iter_mut()
            .rev()
            .find(|frame| frame.sent == 0 && frame.head[0] & 0x0f == u8::from(pong))
        else {
            return false;
        };
        *waiting = Outgoing::new(pong, payload);
        true
    }

    fn queue(&mut self, opcode: OpCode, payload: Bytes) {
        self.out.push_back(Outgoing::new(opcode, payload));
    }

    /// The room's direct writer for this socket, if it is a TCP stream.
    pub fn writer(&self) -> Option<SocketWriter> {
        match &self.io {
            Transport::Tcp { stream, .. } => Some(SocketWriter(stream.clone())),
            Transport::Upgraded(_) => None,
        }
    }

    /// Queues the rest of a binary frame a [`SocketWriter`] began (`sent`
    /// bytes of it, header included, are on the socket) ahead of every
    /// frame not yet begun. None may be begun: a frame begun here is
    /// finished before the socket is handed to the room again.
    pub fn resume_first(&mut self, payload: Bytes, sent: usize) {
        debug_assert!(self.out.front().is_none_or(|frame| frame.sent == 0));
        let mut frame = Outgoing::new(OpCode::Data(Data::Binary), payload);
        frame.sent = sent;
        self.out.push_front(frame);
    }

    /// Writes every queued frame, as few system calls as the socket takes;
    /// `Ready(Ok)` once all are written (the queue is then given back).
    pub fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut used = 0;
            for frame in &self.out {
                if used + 2 > WRITE_SLICES {
                    break;
                }
                for part in frame.unsent() {
                    if !part.is_empty() {
                        slices[used] = IoSlice::new(part);
                        used += 1;
                    }
                }
            }
            let mut written = ready!(self.io.poll_write_vectored(cx, &slices[..used]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let frame = self
                    .out
                    .front_mut()
                    .expect("written bytes belong to a frame");
                let left = frame.len() - frame.sent;
                if written >= left {
                    written -= left;
                    self.out.pop_front();
                } else {
                    frame.sent += written;
                    written = 0;
                }
            }
        }
        self.out = VecDeque::new();
        Poll::Ready(Ok(()))
    }

    /// Writes every queued frame.
    pub async fn write_out(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }
}

/// The length of a whole text message, which must be UTF-8 (RFC 6455 §8.1).
fn text_len(text: &[u8]) -> Result<usize, ReadError> {
    std::str::from_utf8(text).map_err(|_| ReadError::TextNotUtf8)?;
    Ok(text.len())
}

/// The code of a client's close frame, if it has one: a code a peer may
/// send (RFC 6455 §7.4: not 1004–1006, 1015 or outside 1000–4999; 1016–2999
/// are unassigned), followed by a UTF-8 reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    let [high, low, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(ReadError::Protocol("close frame of one byte")),
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(ReadError::Protocol("invalid close code"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(ReadError::Protocol("close reason not UTF-8"));
    }
    Ok(Some(code))
}

/// Unmasks a client payload in place (RFC 6455 §5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut_to_char(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A checked WebSocket upgrade request (RFC 6455 §4.2.1), as an extractor:
/// a request that is not one is answered 400 (405 for another method, 426
/// when the connection cannot be upgraded).
pub struct Upgrade {
    key: HeaderValue,
    protocols: Vec<HeaderValue>,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
pub enum NotAnUpgrade {
    /// Answered with this status and text.
    Refused(StatusCode, &'static str),
    /// A version other than 13: 426 naming the one spoken (RFC 6455 §4.4).
    Version,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        match self {
            NotAnUpgrade::Refused(status, text) => (status, text).into_response(),
            NotAnUpgrade::Version => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "Sec-WebSocket-Version must be 13",
            )
                .into_response(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |text| Err(NotAnUpgrade::Refused(StatusCode::BAD_REQUEST, text));
        if parts.method != Method::GET {
            return Err(NotAnUpgrade::Refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET request",
            ));
        }
        let headers = &parts.headers;
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return bad("Connection header did not include 'upgrade'");
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return bad("Upgrade header did not include 'websocket'");
        }
        match headers.get(header::SEC_WEBSOCKET_VERSION) {
            None => return bad("Sec-WebSocket-Version header missing"),
            Some(version) if version.as_bytes() != b"13" => return Err(NotAnUpgrade::Version),
            Some(_) => {}
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return bad("Sec-WebSocket-Key header missing");
        };
        // A nonce of 16 bytes in base64 (RFC 6455 §4.1).
        if BASE64
            .decode(key.as_bytes())
            .map_or(true, |nonce| nonce.len() != 16)
        {
            return bad("Sec-WebSocket-Key is not 16 bytes in base64");
        }
        let protocols = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|token| HeaderValue::from_bytes(token.trim_ascii()).ok())
            .collect();
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotAnUpgrade::Refused(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Self {
            key,
            protocols,
            on_upgrade,
        })
    }
}

impl Upgrade {
    /// Whether the client offered this subprotocol.
    pub fn offers(&self, protocol: &str) -> bool {
        self.protocols
            .iter()
            .any(|p| p.as_bytes() == protocol.as_bytes())
    }

    /// Answers 101 (naming `protocol` when chosen) and, once hyper hands
    /// the connection over, runs `serve` on its WebSocket in a new task.
    pub fn accept<F, Fut>(
        self,
        protocol: Option<&'static str>,
        max_message: usize,
        serve: F,
    ) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    warn!(%err, "WebSocket upgrade failed");
                    return;
                }
            };
            serve(socket_of(upgraded, max_message)).await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a header value"),
        );
        if let Some(protocol) = protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// The WebSocket over an upgraded connection: over its TCP stream when
/// [`crate::serve`] accepted it (hyper's wrapper and buffer dropped), else
/// over hyper's upgraded connection.
fn socket_of(upgraded: Upgraded, max_message: usize) -> WebSocket {
    match upgraded.downcast::<TokioIo<Metered<TcpStream>>>() {
        Ok(parts) => WebSocket::new(
            Transport::tcp(parts.io.into_inner()),
            parts.read_buf,
            max_message,
        ),
        Err(upgraded) => WebSocket::new(
            Transport::Upgraded(TokioIo::new(upgraded)),
            Bytes::new(),
            max_message,
        ),
    }
}

/// Whether a comma-separated header holds `token` (any case).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server-side socket and the client's end of it.
    async fn pair() -> (WebSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let tcp = Metered::new(accepted.unwrap().0, Arc::default());
        (
            WebSocket::new(Transport::tcp(tcp), Bytes::new(), 1 << 20),
            client.unwrap(),
        )
    }

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = FrameHeader {
            opcode: OpCode::from(opcode),
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        let mask = header.mask.take().unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[tokio::test]
    async fn an_idle_socket_holds_no_buffer_after_reading_and_writing() {
        let (mut socket, mut client) = pair().await;
        let big = vec![7u8; 3 * READ_CHUNK + 5];
        let mut sent = masked(2, b"small");
        sent.extend(masked(2, &big));
        client.write_all(&sent).await.unwrap();
        match socket.next().await {
            Some(Ok(Incoming::Binary(bytes))) => assert_eq!(&bytes[..], b"small"),
            other => panic!("{other:?}"),
        }
        match socket.next().await {
            Some(Ok(Incoming::Binary(bytes))) => assert_eq!(bytes, big),
            other => panic!("{other:?}"),
        }
        // Nothing more to read: the read buffer is given back.
        let polled = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
        assert!(polled, "nothing else arrived");
        assert_eq!(socket.read.capacity(), 0, "no read buffer while idle");
        socket.queue_binary(Bytes::from_static(b"one"));
        socket.queue_binary(Bytes::from(vec![9u8; 70_000]));
        socket.write_out().await.unwrap();
        assert_eq!(socket.out.capacity(), 0, "no write queue while idle");
        let mut got = vec![0u8; 2 + 3 + 10 + 70_000];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..5], &[0x82, 3, b'o', b'n', b'e']);
        assert_eq!(&got[5..15], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert!(got[15..].iter().all(|&b| b == 9));
    }

    /// Review finding: after a frame's header the buffer grew to the
    /// announced length (up to 1 MiB per read), so 15 bytes pinned 1 MiB.
    #[tokio::test]
    async fn a_frame_start_announcing_a_large_payload_pins_only_what_arrived() {
        let (socket, mut client) = pair().await;
        let mut socket = WebSocket {
            max_message: 64 << 20,
            ..socket
        };
        let announced = (32 << 20) + 1;
        let mut start = Vec::new();
        FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::default()
        }
        .format(announced, &mut start)
        .unwrap();
        start.push(0);
        client.write_all(&start).await.unwrap();
        // Read until the header is taken and the byte after it is held.
        while socket.header.is_none() || socket.read.is_empty() {
            let polled = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
            assert!(polled, "the frame is not whole");
            tokio::task::yield_now().await;
        }
        assert!(
            socket.read.capacity() <= 4 * READ_CHUNK,
            "{} bytes held for one byte of payload",
            socket.read.capacity()
        );
        // What arrives later is read all the same, the buffer growing with it.
        let mut arrived = 1;
        let piece = vec![0u8; 64 * 1024];
        for _ in 0..8 {
            client.write_all(&piece).await.unwrap();
            arrived += piece.len();
            while socket.read.len() < arrived {
                let polled = poll_fn(|cx| Poll::Ready(socket.poll_next(cx).is_pending())).await;
                assert!(polled, "the frame is not whole");
                tokio::task::yield_now().await;
            }
            assert!(
                socket.read.capacity() <= 2 * arrived + 4 * READ_CHUNK,
                "{} bytes held for {arrived}",
                socket.read.capacity()
            );
        }
    }

    #[tokio::test]
    async fn client_frames_that_break_the_protocol_are_refused() {
        for (frame, what) in [
            (
                {
                    let mut f = masked(2, b"x");
                    f[1] &= 0x7f; // unmasked (and the mask bytes read as payload)
                    f
                },
                "unmasked client frame",
            ),
            (masked(0, b"x"), "continuation without a message"),
            (
                {
                    let mut f = masked(9, b"x");
                    f[0] &= 0x7f; // a fragmented ping
                    f
                },
                "fragmented control frame",
            ),
            (masked(9, &[0; 126]), "control frame over 125 bytes"),
            (masked(3, b"x"), "reserved opcode"),
            (
                // A length of 2^63: the top bit of a 64-bit length set.
                [
                    &[0x82, 0xff][..],
                    &(1u64 << 63).to_be_bytes(),
                    &[1, 2, 3, 4],
                ]
                .concat(),
                "64-bit length with the top bit set",
            ),
        ] {
            let (mut socket, mut client) = pair().await;
            client.write_all(&frame).await.unwrap();
            match socket.next().await {
                Some(Err(ReadError::Protocol(got))) => assert_eq!(got, what),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// Review finding: text frames were answered 1003 whatever they held;
    /// one that is not UTF-8 is invalid data (1007), whole or in pieces.
    #[tokio::test]
    async fn text_frames_that_are_not_utf8_are_refused_as_invalid() {
        let (mut socket, mut client) = pair().await;
        client
            .write_all(&masked(1, "fine ✓".as_bytes()))
            .await
            .unwrap();
        assert!(matches!(socket.next().await, Some(Ok(Incoming::Text(8)))));
        // "✓" split between two fragments is still UTF-8 once whole.
        let check = "✓".as_bytes();
        let mut first = masked(1, &check[..1]);
        first[0] &= 0x7f; // more to come
        client.write_all(&first).await.unwrap();
        client.write_all(&masked(0, &check[1..])).await.unwrap();
        assert!(matches!(socket.next().await, Some(Ok(Incoming::Text(3)))));
        client.write_all(&masked(1, &[b'a', 0xff])).await.unwrap();
        assert!(matches!(
            socket.next().await,
            Some(Err(ReadError::TextNotUtf8))
        ));
    }

    /// Review finding: with the control queue full, the newest ping went
    /// unanswered and older answers went out; the most recent ping is the
    /// one answered.
    #[tokio::test]
    async fn with_the_queue_full_the_most_recent_ping_is_answered() {
        let (mut socket, mut client) = pair().await;
        assert!(!socket.replace_waiting_pong(Bytes::from_static(b"none")));
        socket.queue_pong(Bytes::from_static(b"old"));
        socket.queue_binary(Bytes::from_static(b"data"));
        assert!(socket.replace_waiting_pong(Bytes::from_static(b"newest")));
        socket.write_out().await.unwrap();
        let mut got = vec![0u8; 2 + 6 + 2 + 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..8], &[0x8a, 6, b'n', b'e', b'w', b'e', b's', b't']);
        assert_eq!(&got[8..], &[0x82, 4, b'd', b'a', b't', b'a']);
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let (socket, mut client) = pair().await;
        let mut socket = WebSocket {
            max_message: 100,
            ..socket
        };
        let mut first = masked(2, &[0; 60]);
        first[0] &= 0x7f; // more to come
        client.write_all(&first).await.unwrap();
        // The header of the second piece announces more than the limit.
        client.write_all(&masked(0, &[0; 60])[..8]).await.unwrap();
        assert!(matches!(
            socket.next().await,
            Some(Err(ReadError::TooBig(100)))
        ));
    }
}
