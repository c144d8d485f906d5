//! Quire's web app: a Leptos (client-side rendered) application compiled to
//! wasm32. Documents are edited through `quire-protocol`'s `SyncSession`,
//! the same protocol implementation the native client and the tests use;
//! this crate only drives it with browser I/O.
//!
//! # Layout
//!
//! - [`app`]: the shell: routing between the pages, the service worker.
//! - [`nav`], [`widgets`]: navigation and the small UI pieces pages share.
//! - [`home`]: the document list (create, import, rename, delete, filter).
//! - [`export`]: the Export menu's formats, and exporting the tab's own copy.
//! - [`import`], [`files`]: files in (import as new documents) and out (download names).
//! - [`page`]: the editor page: toolbar, status badge, presence, export, chat.
//! - [`toolbar`]: the formatting toolbar and the link dialog.
//! - [`runtime`]: one open document: session, editor, local copy, tabs.
//! - [`net`]: the `WebSocket` + timer driver of a `SyncSession`.
//! - [`rich`]: the rich-text editor (contenteditable ⇄ `Y.XmlFragment`).
//! - [`plain`]: the plain-text editor (textarea ⇄ `Y.Text`), for plain-text documents.
//! - [`overlay`], [`carets`]: remote carets over the plain and the rich editor.
//! - [`presence`], [`relpos`]: local user, remote peers, cursor positions.
//! - [`idb`]: the IndexedDB copy of each document.
//! - [`tabs`]: `BroadcastChannel` sync between tabs.
//! - [`api`]: the HTTP API.
//! - [`browser`], [`token`], [`urls`], [`format`], [`diff`]: helpers, one concern each.

pub mod api;
pub mod app;
pub mod browser;
pub mod carets;
pub mod diff;
pub mod export;
pub mod files;
pub mod format;
pub mod home;
pub mod idb;
pub mod import;
pub mod nav;
pub mod net;
pub mod overlay;
pub mod page;
pub mod plain;
pub mod presence;
pub mod relpos;
pub mod rich;
pub mod runtime;
pub mod tabs;
pub mod token;
pub mod toolbar;
pub mod urls;
pub mod widgets;

use wasm_bindgen::prelude::*;

/// Entry point, called by the generated JS once the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    token::capture_token();
    app::register_service_worker();
    leptos::mount::mount_to_body(app::App);
}
