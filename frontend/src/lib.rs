//! Quire's web app: a Leptos (client-side rendered) application compiled to
//! wasm32. Documents are edited through `quire-protocol`'s `SyncSession`,
//! the same protocol implementation the native client and the tests use;
//! this crate only drives it with browser I/O.
//!
//! # Layout
//!
//! - [`app`]: the shell: routing (`/` and `/d/{doc}`), the user menu.
//! - [`home`]: the document list (create, rename, delete, filter).
//! - [`page`]: the editor page: status badge, presence, export, chat.
//! - [`runtime`]: one open document: session, textarea, local copy, tabs.
//! - [`net`]: the `WebSocket` + timer driver of a `SyncSession`.
//! - [`editor`]: the textarea ⇄ `Y.Text` binding (diff, IME, undo, selection).
//! - [`overlay`]: remote carets and selections (mirror div).
//! - [`presence`]: local user and remote peers (awareness states).
//! - [`idb`]: the IndexedDB copy of each document.
//! - [`tabs`]: `BroadcastChannel` sync between tabs.
//! - [`api`]: the HTTP API.
//! - [`diff`], [`util`]: pure helpers.

pub mod api;
pub mod app;
pub mod diff;
pub mod editor;
pub mod home;
pub mod idb;
pub mod net;
pub mod overlay;
pub mod page;
pub mod presence;
pub mod runtime;
pub mod tabs;
pub mod util;

use wasm_bindgen::prelude::*;

/// Entry point, called by the generated JS once the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    util::capture_token();
    app::register_service_worker();
    leptos::mount::mount_to_body(app::App);
}
