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
//! - [`ext`]: Quire's negotiated extensions (heartbeat, save acks, named
//!   events, typed errors, fragments).
//! - [`session`]: the sans-IO client: connection state machine, backoff,
//!   heartbeat, offline edits, save tracking, presence and events.
//! - [`doc_name`]: which document names are acceptable in a URL and on disk.
//! - [`update`]: the checks every Yjs update passes before yrs decodes it
//!   (declared counts, nesting, origins, completeness against a document).

pub mod awareness;
pub mod close;
pub mod doc_name;
pub mod ext;
pub mod lib0;
pub mod message;
pub mod rich;
pub mod session;
pub mod update;

pub use awareness::{AwarenessChange, AwarenessTable, ClientId};
pub use doc_name::{DocName, DocNameError};
pub use lib0::DecodeError;
pub use message::{Message, SyncMessage};
pub use session::{Action, Connection, SessionConfig, SessionEvent, Status, SyncSession};
