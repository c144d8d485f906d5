//! The y-websocket message set, byte-for-byte as `y-protocols` writes it.
//!
//! ```text
//! frame     = varUint(type) payload
//! type 0    sync:            varUint(sub) varBytes(data)
//!             sub 0 step 1:  data = state vector of the sender
//!             sub 1 step 2:  data = update with what the receiver lacks
//!             sub 2 update:  data = an incremental update
//! type 1    awareness:       varBytes(awareness update)
//! type 2    auth:            varUint(0 = permission denied) varString(reason)
//! type 3    query-awareness: (no payload)
//! ```
//!
//! Payloads are opaque here: a state vector or update is checked by yrs in the
//! room, an awareness update by [`crate::awareness`].

use crate::lib0::{Cursor, DecodeError, write_var_bytes, write_var_string, write_var_uint};

const MSG_SYNC: u64 = 0;
const MSG_AWARENESS: u64 = 1;
const MSG_AUTH: u64 = 2;
const MSG_QUERY_AWARENESS: u64 = 3;

const SYNC_STEP1: u64 = 0;
const SYNC_STEP2: u64 = 1;
const SYNC_UPDATE: u64 = 2;

const AUTH_PERMISSION_DENIED: u64 = 0;

/// One decoded y-websocket frame. Payloads borrow from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Sync(SyncMessage<'a>),
    /// An encoded awareness update (see [`crate::awareness`]).
    Awareness(&'a [u8]),
    /// The server refused the connection; stock clients log the reason.
    PermissionDenied(&'a str),
    /// "Send me everyone's awareness."
    QueryAwareness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage<'a> {
    /// The sender's state vector: "send me what I lack".
    Step1(&'a [u8]),
    /// The reply to step 1: everything the receiver lacked.
    Step2(&'a [u8]),
    /// An incremental update.
    Update(&'a [u8]),
}

impl<'a> Message<'a> {
    /// Decodes one whole frame; trailing bytes are an error.
    pub fn decode(frame: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(frame);
        let message = match cursor.read_var_uint("message type")? {
            MSG_SYNC => {
                let sub = cursor.read_var_uint("sync message type")?;
                let data = cursor.read_var_bytes("sync payload")?;
                Message::Sync(match sub {
                    SYNC_STEP1 => SyncMessage::Step1(data),
                    SYNC_STEP2 => SyncMessage::Step2(data),
                    SYNC_UPDATE => SyncMessage::Update(data),
                    other => return Err(DecodeError::UnknownSyncType(other)),
                })
            }
            MSG_AWARENESS => Message::Awareness(cursor.read_var_bytes("awareness update")?),
            MSG_AUTH => match cursor.read_var_uint("auth message type")? {
                AUTH_PERMISSION_DENIED => {
                    Message::PermissionDenied(cursor.read_var_string("denial reason")?)
                }
                other => return Err(DecodeError::UnknownAuthType(other)),
            },
            MSG_QUERY_AWARENESS => Message::QueryAwareness,
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        cursor.finish()?;
        Ok(message)
    }

    /// Encodes the frame exactly as y-protocols would.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Sync(SyncMessage::Step1(sv)) => encode_sync(SYNC_STEP1, sv),
            Message::Sync(SyncMessage::Step2(update)) => encode_sync(SYNC_STEP2, update),
            Message::Sync(SyncMessage::Update(update)) => encode_sync(SYNC_UPDATE, update),
            Message::Awareness(update) => {
                let mut buf = Vec::with_capacity(update.len() + 6);
                write_var_uint(&mut buf, MSG_AWARENESS);
                write_var_bytes(&mut buf, update);
                buf
            }
            Message::PermissionDenied(reason) => {
                let mut buf = Vec::with_capacity(reason.len() + 6);
                write_var_uint(&mut buf, MSG_AUTH);
                write_var_uint(&mut buf, AUTH_PERMISSION_DENIED);
                write_var_string(&mut buf, reason);
                buf
            }
            Message::QueryAwareness => vec![MSG_QUERY_AWARENESS as u8],
        }
    }
}

fn encode_sync(sub: u64, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(data.len() + 12);
    write_var_uint(&mut buf, MSG_SYNC);
    write_var_uint(&mut buf, sub);
    write_var_bytes(&mut buf, data);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let cases = [
            Message::Sync(SyncMessage::Step1(&[0])),
            Message::Sync(SyncMessage::Step2(&[0, 0])),
            Message::Sync(SyncMessage::Update(&[1, 2, 3])),
            Message::Awareness(&[1, 5, 0, 4, b'n', b'u', b'l', b'l']),
            Message::PermissionDenied("no token"),
            Message::QueryAwareness,
        ];
        for message in cases {
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
    }

    #[test]
    fn sync_step1_matches_y_protocols_bytes() {
        // y-protocols writeSyncStep1 for an empty document: [0, 0, 1, 0].
        assert_eq!(
            Message::Sync(SyncMessage::Step1(&[0])).encode(),
            [0, 0, 1, 0]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(
            Message::decode(&[]),
            Err(DecodeError::UnexpectedEnd("message type"))
        );
        assert_eq!(
            Message::decode(&[9]),
            Err(DecodeError::UnknownMessageType(9))
        );
        assert_eq!(
            Message::decode(&[0, 7, 0]),
            Err(DecodeError::UnknownSyncType(7))
        );
        assert_eq!(
            Message::decode(&[0, 2, 5, 1]),
            Err(DecodeError::UnexpectedEnd("sync payload"))
        );
        assert_eq!(Message::decode(&[3, 0]), Err(DecodeError::TrailingBytes(1)));
    }
}
