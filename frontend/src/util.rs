//! Small browser helpers: time, storage, formatting, base64, timers.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

pub fn window() -> web_sys::Window {
    web_sys::window().expect("running in a browser window")
}

pub fn document() -> web_sys::Document {
    window().document().expect("the window has a document")
}

/// Wall-clock milliseconds (`Date.now()`), the session's clock.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A uniformly random 64-bit number (from `Math.random`, good enough for jitter).
pub fn random_u64() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}

pub fn local_get(key: &str) -> Option<String> {
    window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(key).ok().flatten())
}

pub fn local_set(key: &str, value: &str) {
    if let Some(storage) = window().local_storage().ok().flatten() {
        let _ = storage.set_item(key, value);
    }
}

/// `sessionStorage` key of the access token taken from a `?token=` link.
const TOKEN_KEY: &str = "quire.token";

/// Takes `?token=...` out of the page URL (if present): remembers it in
/// `sessionStorage` and removes it from the address bar, so it does not
/// linger there (or in the history) while links between pages keep working.
pub fn capture_token() {
    let location = window().location();
    let Ok(href) = location.href() else { return };
    let Ok(url) = web_sys::Url::new(&href) else {
        return;
    };
    let params = url.search_params();
    let Some(token) = params.get("token") else {
        return;
    };
    if !token.is_empty()
        && let Some(storage) = window().session_storage().ok().flatten()
    {
        let _ = storage.set_item(TOKEN_KEY, &token);
    }
    params.delete("token");
    url.set_search(&String::from(params.to_string()));
    if let Ok(history) = window().history() {
        let state = history.state().unwrap_or(JsValue::NULL);
        let _ = history.replace_state_with_url(&state, "", Some(&url.href()));
    }
}

/// The access token remembered by [`capture_token`], if any.
pub fn token() -> Option<String> {
    window()
        .session_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(TOKEN_KEY).ok().flatten())
        .filter(|t| !t.is_empty())
}

/// What the user is told when the server refuses the access token.
pub const TOKEN_REFUSED: &str =
    "This link's access token is missing, expired or does not allow this";

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

/// `1.2 KB`, `3.4 MB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// How long ago, for the document list: `just now`, `5 min ago`, `3 h ago`, or a date.
pub fn format_ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..=44 => "just now".into(),
        45..=3_599 => format!("{} min ago", ((secs + 30) / 60).max(1)),
        3_600..=86_399 => format!("{} h ago", secs / 3_600),
        86_400..=172_799 => "yesterday".into(),
        _ => {
            let date = js_sys::Date::new(&JsValue::from_f64(then_ms as f64));
            String::from(date.to_locale_date_string("default", &JsValue::UNDEFINED))
        }
    }
}

/// Local time of day, `14:05`.
pub fn format_clock(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}

/// Full local date and time, for tooltips.
pub fn format_datetime(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A name for a new document when the user gives none: `quiet-harbor-42`.
pub fn generated_doc_name(random: u64) -> String {
    const ADJECTIVES: [&str; 16] = [
        "amber", "brisk", "calm", "daring", "eager", "gentle", "golden", "hidden", "lively",
        "mellow", "nimble", "quiet", "rapid", "silver", "sunny", "vivid",
    ];
    const NOUNS: [&str; 16] = [
        "atlas", "brook", "canyon", "delta", "ember", "fjord", "grove", "harbor", "island",
        "meadow", "orchard", "prairie", "river", "summit", "valley", "willow",
    ];
    format!(
        "{}-{}-{}",
        ADJECTIVES[(random & 15) as usize],
        NOUNS[((random >> 4) & 15) as usize],
        (random >> 8) % 90 + 10
    )
}

/// A one-shot browser timer that owns its callback; dropping it cancels the timer.
pub struct Timer {
    id: Rc<Cell<Option<i32>>>,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `f` once after `ms`.
    pub fn once(ms: u32, f: impl FnOnce() + 'static) -> Self {
        let id: Rc<Cell<Option<i32>>> = Rc::default();
        let fired = id.clone();
        let mut f = Some(f);
        let callback = Closure::<dyn FnMut()>::new(move || {
            fired.set(None);
            if let Some(f) = f.take() {
                f();
            }
        });
        let handle = window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms as i32,
            )
            .ok();
        id.set(handle);
        Self {
            id,
            _callback: callback,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.id.get().is_some()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            window().clear_timeout_with_handle(id);
        }
    }
}

/// An event listener that is removed when dropped.
pub struct Listener {
    target: web_sys::EventTarget,
    event: &'static str,
    callback: Closure<dyn FnMut(web_sys::Event)>,
}

impl Listener {
    pub fn new(
        target: &web_sys::EventTarget,
        event: &'static str,
        f: impl FnMut(web_sys::Event) + 'static,
    ) -> Self {
        let callback = Closure::<dyn FnMut(web_sys::Event)>::new(f);
        let _ = target.add_event_listener_with_callback(event, callback.as_ref().unchecked_ref());
        Self {
            target: target.clone(),
            event,
            callback,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.target.remove_event_listener_with_callback(
            self.event,
            self.callback.as_ref().unchecked_ref(),
        );
    }
}

/// Starts a download of `bytes` named `filename`.
pub fn download(bytes: &[u8], filename: &str, mime: &str) -> Result<(), JsValue> {
    let array = js_sys::Uint8Array::from(bytes);
    let parts = js_sys::Array::of1(&array);
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    let anchor: web_sys::HtmlAnchorElement = document().create_element("a")?.unchecked_into();
    anchor.set_href(&url);
    anchor.set_download(filename);
    anchor.set_attribute("hidden", "")?;
    document()
        .body()
        .ok_or_else(|| JsValue::from_str("no body"))?
        .append_child(&anchor)?;
    anchor.click();
    anchor.remove();
    // Let the download start before the URL goes away.
    let revoke = Timer::once(10_000, move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    std::mem::forget(revoke);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = b64_encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(b64_decode(&text).unwrap(), bytes);
        }
        assert_eq!(b64_encode(b"Man"), "TWFu");
        assert_eq!(b64_encode(b"Ma"), "TWE=");
        assert_eq!(b64_decode("!!"), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(1_234), "1.2 KB");
        assert_eq!(format_bytes(45_000), "45 KB");
        assert_eq!(format_bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn generated_names_are_valid_document_names() {
        for seed in [0, 1, 12345, u64::MAX] {
            let name = generated_doc_name(seed);
            assert!(quire_protocol::DocName::parse(&name).is_ok(), "{name}");
        }
    }
}
