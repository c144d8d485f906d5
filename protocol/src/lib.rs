//! Quire's wire protocol, shared by the server, the native client, the tests
//! and (later) the browser. It does no I/O and reads no clock: callers pass
//! bytes in, get bytes out, and hand in `now` where time matters.
//!
//! # Layout
//!
//! - [`lib0`]: the variable-length integer and byte-string encoding that every
//!   Yjs message is built from.
//! - [`message`]: the y-websocket message set (sync step 1 / step 2 / update,
//!   awareness, auth, query-awareness) with exact encoders and a decoder that
//!   rejects malformed frames instead of guessing.
//! - [`awareness`]: the presence table a room keeps (who is here, their
//!   cursor, name and colour), with the y-protocols merge rules.
//! - [`close`]: the WebSocket close codes and what each means.
//! - [`doc_name`]: which document names are acceptable in a URL and on disk.

pub mod awareness;
pub mod close;
pub mod doc_name;
pub mod lib0;
pub mod message;

pub use awareness::{AwarenessChange, AwarenessTable, ClientId};
pub use doc_name::{DocName, DocNameError};
pub use lib0::DecodeError;
pub use message::{Message, SyncMessage};
