//! WebSocket close codes Quire uses, and why each is sent.
//!
//! Codes below 4000 are the standard ones (RFC 6455 §7.4.1); 4000–4999 are
//! Quire's own and mirror the HTTP status a REST API would answer with.

/// The server is shutting down; reconnect later.
pub const GOING_AWAY: u16 = 1001;
/// A text frame arrived; the protocol is binary only.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A frame did not decode, or an update or state vector was rejected by yrs,
/// or an awareness update was malformed. Nothing of it was applied.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A frame exceeded the configured maximum message size.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server could not load or store the document; nothing was written.
pub const INTERNAL_ERROR: u16 = 1011;
/// The server is at a capacity limit (documents in memory); retry later.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// No sign of life within the ping interval plus the ping timeout.
pub const PING_TIMEOUT: u16 = 4000;
/// The document name in the URL is not acceptable.
pub const BAD_DOCUMENT_NAME: u16 = 4400;
/// A token is required and was missing, malformed or expired.
pub const UNAUTHORIZED: u16 = 4401;
/// The token is valid but does not grant this document or action.
pub const FORBIDDEN: u16 = 4403;
/// The document was deleted while the connection was open.
pub const DOCUMENT_DELETED: u16 = 4404;
/// The document is larger than the server's maximum document size, or an
/// update would make it so.
pub const DOCUMENT_TOO_LARGE: u16 = 4413;
/// The connection did not read its messages fast enough and its outbound
/// queue filled up. The client should reconnect; it will resync by state
/// vector, so nothing is lost (Quire never drops a message silently).
pub const TOO_SLOW: u16 = 4408;

/// Whether a client should give up instead of reconnecting after this close:
/// retrying would only be refused again (or resend the same bad input).
pub fn is_fatal(code: u16) -> bool {
    matches!(
        code,
        UNSUPPORTED_DATA
            | INVALID_PAYLOAD
            | MESSAGE_TOO_BIG
            | BAD_DOCUMENT_NAME
            | UNAUTHORIZED
            | FORBIDDEN
            | DOCUMENT_DELETED
            | DOCUMENT_TOO_LARGE
    )
}
