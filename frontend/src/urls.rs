//! URLs: document names in paths, the WebSocket address of a room.

use crate::browser::window;

/// `encodeURIComponent`, for a document name in a path segment.
pub fn encode_component(s: &str) -> String {
    js_sys::encode_uri_component(s).into()
}

/// `decodeURIComponent`, falling back to the raw text on malformed input.
pub fn decode_component(s: &str) -> String {
    js_sys::decode_uri_component(s)
        .map(String::from)
        .unwrap_or_else(|_| s.to_owned())
}

/// The editor's URL path for a document.
pub fn doc_path(name: &str) -> String {
    format!("/d/{}", encode_component(name))
}

/// The WebSocket URL of a document's room on the page's own host.
pub fn ws_url(name: &str) -> String {
    let location = window().location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}://{host}/ws/{}", encode_component(name))
}
