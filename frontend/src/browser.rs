//! The browser around the app: the window and document, the clock, local
//! storage, timers and event listeners that clean up after themselves,
//! downloads.

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
