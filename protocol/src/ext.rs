//! Quire's extensions to the y-websocket protocol.
//!
//! A client asks for them by offering the WebSocket subprotocol
//! [`SUBPROTOCOL`]; the server agrees by selecting it. Only then does the
//! server send any of these messages. A stock Yjs client never offers the
//! subprotocol and never sees one.
//!
//! Every extension message is one frame of outer type [`MSG_QUIRE`] (100)
//! followed by a varUint kind and the kind's fields, all lib0-encoded:
//!
//! ```text
//! kind  name      direction  fields
//! 0     Welcome   s → c      conn_id, server_time_ms, ping_interval_ms, ping_timeout_ms,
//!                            max_message_bytes, max_document_bytes
//! 1     Ping      both       nonce
//! 2     Pong      both       nonce
//! 3     Saved     s → c      through   (this connection's update messages 1..=through are on disk)
//! 4     Emit      c → s      name, payload (JSON text), ack (0 = no acknowledgement wanted)
//! 5     Event     s → c      name, payload (JSON text), sender (conn id, 0 = server),
//!                            sender_name, at_ms (server time)
//! 6     EmitAck   s → c      ack, delivered (how many connections received it)
//! 7     Error     s → c      code (a close code, see `close`), message
//! 8     Fragment  s → c      total (bytes of the whole frame), data
//! 9     Auth      c → s      token (first message when the URL carries none;
//!                            again later to refresh an expiring token)
//! ```
//!
//! `Fragment` carries a large frame in pieces so that pings keep flowing
//! while a big document is sent: the receiver appends `data` until it holds
//! `total` bytes and then handles the result as one frame.
//!
//! "Update messages" are sync step 2 and sync update frames, counted from 1
//! on each connection by both sides; `Saved { through }` covers every update
//! message up to that number.

use crate::lib0::{Cursor, DecodeError, write_var_bytes, write_var_string, write_var_uint};

/// The WebSocket subprotocol that switches the extensions on.
pub const SUBPROTOCOL: &str = "quire.v1";

/// Outer message type of every extension frame.
pub const MSG_QUIRE: u64 = 100;

/// Name of the chat event: the server stamps, stores and relays it.
pub const CHAT_EVENT: &str = "chat";
/// Name of the event carrying recent chat messages, sent once on join.
pub const CHAT_HISTORY_EVENT: &str = "chat.history";

const WELCOME: u64 = 0;
const PING: u64 = 1;
const PONG: u64 = 2;
const SAVED: u64 = 3;
const EMIT: u64 = 4;
const EVENT: u64 = 5;
const EMIT_ACK: u64 = 6;
const ERROR: u64 = 7;
const FRAGMENT: u64 = 8;
const AUTH: u64 = 9;

/// What the server tells a client right after the connection opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub conn_id: u64,
    pub server_time_ms: u64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_message_bytes: u64,
    pub max_document_bytes: u64,
}

/// One extension message. Strings borrow from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ext<'a> {
    Welcome(Welcome),
    Ping(u64),
    Pong(u64),
    Saved {
        through: u64,
    },
    Emit {
        name: &'a str,
        payload: &'a str,
        ack: u64,
    },
    Event {
        name: &'a str,
        payload: &'a str,
        sender: u64,
        sender_name: &'a str,
        at_ms: u64,
    },
    EmitAck {
        ack: u64,
        delivered: u64,
    },
    Error {
        code: u64,
        message: &'a str,
    },
    Fragment {
        total: u64,
        data: &'a [u8],
    },
    Auth {
        token: &'a str,
    },
}

impl<'a> Ext<'a> {
    /// Whether `frame` is an extension frame (without decoding the rest).
    pub fn is_ext(frame: &[u8]) -> bool {
        Cursor::new(frame).read_var_uint("message type") == Ok(MSG_QUIRE)
    }

    /// Decodes a whole extension frame (outer type included).
    pub fn decode(frame: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(frame);
        let outer = c.read_var_uint("message type")?;
        if outer != MSG_QUIRE {
            return Err(DecodeError::UnknownMessageType(outer));
        }
        let ext = match c.read_var_uint("extension kind")? {
            WELCOME => Ext::Welcome(Welcome {
                conn_id: c.read_var_uint("conn id")?,
                server_time_ms: c.read_var_uint("server time")?,
                ping_interval_ms: c.read_var_uint("ping interval")?,
                ping_timeout_ms: c.read_var_uint("ping timeout")?,
                max_message_bytes: c.read_var_uint("max message bytes")?,
                max_document_bytes: c.read_var_uint("max document bytes")?,
            }),
            PING => Ext::Ping(c.read_var_uint("nonce")?),
            PONG => Ext::Pong(c.read_var_uint("nonce")?),
            SAVED => Ext::Saved {
                through: c.read_var_uint("saved watermark")?,
            },
            EMIT => Ext::Emit {
                name: c.read_var_string("event name")?,
                payload: c.read_var_string("event payload")?,
                ack: c.read_var_uint("ack id")?,
            },
            EVENT => Ext::Event {
                name: c.read_var_string("event name")?,
                payload: c.read_var_string("event payload")?,
                sender: c.read_var_uint("sender")?,
                sender_name: c.read_var_string("sender name")?,
                at_ms: c.read_var_uint("event time")?,
            },
            EMIT_ACK => Ext::EmitAck {
                ack: c.read_var_uint("ack id")?,
                delivered: c.read_var_uint("delivered")?,
            },
            ERROR => Ext::Error {
                code: c.read_var_uint("error code")?,
                message: c.read_var_string("error message")?,
            },
            FRAGMENT => Ext::Fragment {
                total: c.read_var_uint("fragment total")?,
                data: c.read_var_bytes("fragment data")?,
            },
            AUTH => Ext::Auth {
                token: c.read_var_string("token")?,
            },
            other => return Err(DecodeError::UnknownExtension(other)),
        };
        c.finish()?;
        Ok(ext)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        write_var_uint(&mut b, MSG_QUIRE);
        match self {
            Ext::Welcome(w) => {
                write_var_uint(&mut b, WELCOME);
                for v in [
                    w.conn_id,
                    w.server_time_ms,
                    w.ping_interval_ms,
                    w.ping_timeout_ms,
                    w.max_message_bytes,
                    w.max_document_bytes,
                ] {
                    write_var_uint(&mut b, v);
                }
            }
            Ext::Ping(nonce) => {
                write_var_uint(&mut b, PING);
                write_var_uint(&mut b, *nonce);
            }
            Ext::Pong(nonce) => {
                write_var_uint(&mut b, PONG);
                write_var_uint(&mut b, *nonce);
            }
            Ext::Saved { through } => {
                write_var_uint(&mut b, SAVED);
                write_var_uint(&mut b, *through);
            }
            Ext::Emit { name, payload, ack } => {
                write_var_uint(&mut b, EMIT);
                write_var_string(&mut b, name);
                write_var_string(&mut b, payload);
                write_var_uint(&mut b, *ack);
            }
            Ext::Event {
                name,
                payload,
                sender,
                sender_name,
                at_ms,
            } => {
                write_var_uint(&mut b, EVENT);
                write_var_string(&mut b, name);
                write_var_string(&mut b, payload);
                write_var_uint(&mut b, *sender);
                write_var_string(&mut b, sender_name);
                write_var_uint(&mut b, *at_ms);
            }
            Ext::EmitAck { ack, delivered } => {
                write_var_uint(&mut b, EMIT_ACK);
                write_var_uint(&mut b, *ack);
                write_var_uint(&mut b, *delivered);
            }
            Ext::Error { code, message } => {
                write_var_uint(&mut b, ERROR);
                write_var_uint(&mut b, *code);
                write_var_string(&mut b, message);
            }
            Ext::Fragment { total, data } => {
                write_var_uint(&mut b, FRAGMENT);
                write_var_uint(&mut b, *total);
                write_var_bytes(&mut b, data);
            }
            Ext::Auth { token } => {
                write_var_uint(&mut b, AUTH);
                write_var_string(&mut b, token);
            }
        }
        b
    }
}

/// Splits `frame` into `Fragment` frames of at most `piece` payload bytes.
pub fn fragment(frame: &[u8], piece: usize) -> Vec<Vec<u8>> {
    frame
        .chunks(piece.max(1))
        .map(|data| {
            Ext::Fragment {
                total: frame.len() as u64,
                data,
            }
            .encode()
        })
        .collect()
}

/// Reassembles fragments; bounded by the size the sender announced, which
/// the caller checks against its own limit first.
#[derive(Debug, Default)]
pub struct Reassembly {
    total: usize,
    buf: Vec<u8>,
}

impl Reassembly {
    /// Adds one fragment; returns the whole frame once complete.
    pub fn push(
        &mut self,
        total: u64,
        data: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, DecodeError> {
        let total = usize::try_from(total).map_err(|_| DecodeError::FragmentTooLarge)?;
        if total > limit {
            return Err(DecodeError::FragmentTooLarge);
        }
        if self.buf.is_empty() {
            self.total = total;
            self.buf.reserve(total);
        } else if self.total != total {
            return Err(DecodeError::FragmentMismatch);
        }
        if self.buf.len() + data.len() > total {
            return Err(DecodeError::FragmentMismatch);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() == total {
            self.total = 0;
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        Ok(None)
    }

    /// Forgets a partial frame (the connection ended).
    pub fn clear(&mut self) {
        self.total = 0;
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extension_round_trips() {
        let cases = [
            Ext::Welcome(Welcome {
                conn_id: 7,
                server_time_ms: 1_700_000_000_000,
                ping_interval_ms: 25_000,
                ping_timeout_ms: 20_000,
                max_message_bytes: 32 << 20,
                max_document_bytes: 64 << 20,
            }),
            Ext::Ping(1),
            Ext::Pong(1),
            Ext::Saved { through: 42 },
            Ext::Emit {
                name: "cursor",
                payload: "{\"x\":1}",
                ack: 3,
            },
            Ext::Event {
                name: "chat",
                payload: "{}",
                sender: 9,
                sender_name: "ann",
                at_ms: 5,
            },
            Ext::EmitAck {
                ack: 3,
                delivered: 2,
            },
            Ext::Error {
                code: 4413,
                message: "too large",
            },
            Ext::Fragment {
                total: 3,
                data: &[1, 2, 3],
            },
            Ext::Auth { token: "abc.def" },
        ];
        for ext in cases {
            let frame = ext.encode();
            assert!(Ext::is_ext(&frame));
            assert_eq!(Ext::decode(&frame).unwrap(), ext);
        }
    }

    #[test]
    fn extension_frames_are_not_y_websocket_messages() {
        // A stock decoder sees an unknown outer type and can skip it.
        let frame = Ext::Ping(1).encode();
        assert_eq!(
            crate::Message::decode(&frame),
            Err(DecodeError::UnknownMessageType(MSG_QUIRE))
        );
    }

    #[test]
    fn fragments_reassemble_to_the_original_frame() {
        let frame: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let pieces = fragment(&frame, 4096);
        assert_eq!(pieces.len(), 3);
        let mut reassembly = Reassembly::default();
        let mut out = None;
        for piece in &pieces {
            let Ext::Fragment { total, data } = Ext::decode(piece).unwrap() else {
                panic!("not a fragment")
            };
            out = reassembly.push(total, data, 1 << 20).unwrap();
        }
        assert_eq!(out.unwrap(), frame);
    }

    #[test]
    fn oversized_or_inconsistent_fragments_are_refused() {
        let mut reassembly = Reassembly::default();
        assert_eq!(
            reassembly.push(100, &[0; 10], 50),
            Err(DecodeError::FragmentTooLarge)
        );
        reassembly.push(20, &[0; 10], 50).unwrap();
        assert_eq!(
            reassembly.push(30, &[0; 10], 50),
            Err(DecodeError::FragmentMismatch)
        );
    }
}
