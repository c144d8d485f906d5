//! One open document: the yrs `Doc`, its `SyncSession` driver, the editor
//! (rich or plain text, whichever model the document uses; see
//! ARCHITECTURE.md, "Rich documents"), remote carets, the IndexedDB copy
//! and the tab channel, wired together and reporting to the page through
//! signals.
//!
//! Start-up order matters for offline work: the IndexedDB copy is loaded into
//! the document *before* the session connects, so edits made offline survive
//! reloads and browser restarts and reach the server in the first handshake.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use leptos::prelude::*;
use quire_protocol::close;
use quire_protocol::ext::{CHAT_EVENT, CHAT_HISTORY_EVENT};
use quire_protocol::session::{EmitError, Presence};
use quire_protocol::{Connection, SessionConfig, SessionEvent, Status, SyncSession};
use serde::Deserialize;
use web_sys::{HtmlElement, HtmlTextAreaElement};
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update as YUpdate};

use crate::browser::{Listener, Timer, now_ms, random_u64, window};
use crate::carets::Carets;
use crate::idb;
use crate::net::Conn;
use crate::overlay::Overlay;
use crate::plain::{Editor, Hooks, LOCAL_ORIGIN, STORE_ORIGIN};
use crate::presence::{Peer, User};
use crate::rich::{Format, RichEditor};
use crate::tabs::Tabs;
use crate::urls::ws_url;
use quire_protocol::rich::Model;
use quire_protocol::rich::text as rich_text;

/// Local saves wait this long after the last change...
const SAVE_DEBOUNCE_MS: u32 = 400;
/// ...but never longer than this after the first unsaved one.
const SAVE_MAX_WAIT_MS: f64 = 2_000.0;
/// How long start-up waits for the IndexedDB copy before going on without it.
const LOCAL_COPY_WAIT_MS: f64 = 1_500.0;
/// Presence (cursor) updates are sent at most this often.
const PRESENCE_THROTTLE_MS: u32 = 80;
/// Joins reported within this long of connecting are people who were
/// already there, not arrivals.
const JOIN_QUIET_MS: u64 = 2_500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: u64,
    pub user: String,
    pub text: String,
    pub at_ms: u64,
    pub mine: bool,
}

/// A chat message the server refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRefusal {
    /// Why, in words.
    pub message: String,
    /// What was typed (given back to the input).
    pub text: String,
    /// Sending is refused for good (read-only access): the input is disabled.
    pub for_good: bool,
}

/// The words for a server `Error` (or close) `code` that answered a chat
/// message; `None` for codes that are not about a message.
pub fn chat_refusal_words(code: u16, detail: &str) -> Option<String> {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    Some(match code {
        close::MESSAGE_TOO_BIG => {
            format!("Your message was not sent: it is longer than the server accepts{detail}.")
        }
        close::DOCUMENT_TOO_LARGE => format!(
            "Your message was not sent: this document is at the server’s size limit{detail}."
        ),
        close::FORBIDDEN => {
            "Your message was not sent: your access to this document is read-only.".to_owned()
        }
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: u64,
    pub text: String,
}

/// Why the session gave up for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub code: u16,
    pub message: String,
}

/// What the page shows; all plain signals.
#[derive(Clone, Copy)]
pub struct Ui {
    pub status: RwSignal<Option<Status>>,
    pub peers: RwSignal<Vec<Peer>>,
    pub chat: RwSignal<Vec<ChatMessage>>,
    pub chat_open: RwSignal<bool>,
    pub unread: RwSignal<u32>,
    pub notices: RwSignal<Vec<Notice>>,
    pub stopped: RwSignal<Option<Stopped>>,
    pub user: RwSignal<User>,
    /// Which editor shows the document.
    pub mode: RwSignal<Mode>,
    /// The rich editor's formatting at the selection (for the toolbar).
    pub format: RwSignal<Format>,
    /// The access token only allows reading.
    pub read_only: RwSignal<bool>,
    /// The server refused the last chat message.
    pub chat_refused: RwSignal<Option<ChatRefusal>>,
    /// The link dialog is open.
    pub link_dialog: RwSignal<bool>,
}

/// Which editor the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Loading,
    /// The document is plain text (`Y.Text` `content`): the textarea.
    Plain,
    /// The rich editor (rich and new documents).
    Rich,
}

impl Ui {
    pub fn new(user: RwSignal<User>) -> Self {
        Self {
            status: RwSignal::new(None),
            peers: RwSignal::new(Vec::new()),
            chat: RwSignal::new(Vec::new()),
            chat_open: RwSignal::new(false),
            unread: RwSignal::new(0),
            notices: RwSignal::new(Vec::new()),
            stopped: RwSignal::new(None),
            user,
            mode: RwSignal::new(Mode::Loading),
            format: RwSignal::new(Format::default()),
            read_only: RwSignal::new(false),
            chat_refused: RwSignal::new(None),
            link_dialog: RwSignal::new(false),
        }
    }

    pub fn notify(&self, text: impl Into<String>) {
        thread_local!(static NEXT: Cell<u64> = const { Cell::new(1) });
        let id = NEXT.with(|n| n.replace(n.get() + 1));
        let notices = self.notices;
        notices.update(|n| {
            n.push(Notice {
                id,
                text: text.into(),
            });
            if n.len() > 4 {
                n.remove(0);
            }
        });
        set_timeout(
            move || {
                let _ = notices.try_update(|n| n.retain(|x| x.id != id));
            },
            std::time::Duration::from_millis(5_000),
        );
    }
}

/// The debounced IndexedDB writer.
struct Saver {
    name: String,
    doc: Doc,
    timer: RefCell<Option<Timer>>,
    first_dirty: Cell<Option<f64>>,
    /// Whether the last write held edits the server had not confirmed.
    last_pending: Cell<bool>,
    unsaved: Cell<u64>,
    enabled: Cell<bool>,
    this: RefCell<Weak<Saver>>,
}

impl Saver {
    fn mark_dirty(&self) {
        if !self.enabled.get() {
            return;
        }
        let now = js_sys::Date::now();
        let first = *self.first_dirty.get().get_or_insert(now);
        self.first_dirty.set(Some(first));
        if now - first >= SAVE_MAX_WAIT_MS {
            self.save_now();
            return;
        }
        let weak = self.this.borrow().clone();
        *self.timer.borrow_mut() = Some(Timer::once(SAVE_DEBOUNCE_MS, move || {
            if let Some(saver) = weak.upgrade() {
                saver.save_now();
            }
        }));
    }

    fn save_now(&self) {
        if !self.enabled.get() {
            return;
        }
        let Ok(txn) = self.doc.try_transact() else {
            // Inside a transaction: come back a moment later.
            let weak = self.this.borrow().clone();
            *self.timer.borrow_mut() = Some(Timer::once(50, move || {
                if let Some(saver) = weak.upgrade() {
                    saver.save_now();
                }
            }));
            return;
        };
        let state = txn.encode_state_as_update_v1(&StateVector::default());
        drop(txn);
        self.first_dirty.set(None);
        if let Ok(mut timer) = self.timer.try_borrow_mut() {
            *timer = None;
        }
        let pending = self.unsaved.get() > 0;
        self.last_pending.set(pending);
        let name = self.name.clone();
        leptos::task::spawn_local(async move {
            if let Err(err) = idb::save(&name, &state, pending).await {
                web_sys::console::warn_2(&"quire: could not keep a local copy:".into(), &err);
            }
        });
    }
}

/// The editor showing the document, with its remote carets.
enum Mounted {
    None,
    Plain {
        editor: Rc<Editor>,
        overlay: Rc<Overlay>,
    },
    Rich {
        editor: Rc<RichEditor>,
        carets: Rc<Carets>,
    },
}

/// The DOM each kind of editor draws into.
pub struct Surfaces {
    pub textarea: HtmlTextAreaElement,
    pub mirror: HtmlElement,
    pub layer: HtmlElement,
    pub rich: HtmlElement,
    pub rich_layer: HtmlElement,
}

pub struct Runtime {
    pub name: String,
    doc: Doc,
    conn: Conn,
    mounted: RefCell<Mounted>,
    surfaces: Surfaces,
    /// A mode switch is queued (it cannot happen inside a transaction).
    remount_timer: RefCell<Option<Timer>>,
    saver: Rc<Saver>,
    tabs: RefCell<Option<Rc<Tabs>>>,
    presence_timer: RefCell<Option<Timer>>,
    user: RefCell<User>,
    ui: Ui,
    listeners: RefCell<Vec<Listener>>,
    connected_at: Cell<u64>,
    next_chat_id: Cell<u64>,
    /// The chat messages sent and not yet acknowledged, newest last: a
    /// refusal (an `Error` before the ack) is about the oldest.
    chat_in_flight: RefCell<std::collections::VecDeque<(u64, String)>>,
    closed: Cell<bool>,
    this: Weak<Runtime>,
}

#[derive(Deserialize)]
struct ChatRecord {
    #[serde(default)]
    user: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    at_ms: u64,
}

/// Resolves after `ms` milliseconds.
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A new document that counts text in UTF-16 units, like the browser.
pub fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

fn apply(doc: &Doc, state: &[u8]) {
    match YUpdate::decode_v1(state) {
        Ok(update) => {
            if let Err(err) = doc.transact_mut_with(STORE_ORIGIN).apply_update(update) {
                web_sys::console::warn_1(&format!("quire: local copy not applied: {err}").into());
            }
        }
        Err(err) => {
            web_sys::console::warn_1(&format!("quire: local copy unreadable: {err}").into());
        }
    }
}

impl Runtime {
    /// Loads the local copy, binds the textarea and connects.
    pub async fn open(name: String, surfaces: Surfaces, ui: Ui) -> Rc<Self> {
        let doc = new_doc();
        // The local copy normally arrives in milliseconds; if IndexedDB hangs
        // (it can, e.g. while another tab upgrades it), start without it and
        // merge it when it comes: merging a CRDT state later is always safe.
        let slot: Rc<RefCell<Option<Option<idb::Record>>>> = Rc::default();
        let late: Rc<RefCell<Weak<Runtime>>> = Rc::default();
        {
            let (slot, late, name) = (slot.clone(), late.clone(), name.clone());
            leptos::task::spawn_local(async move {
                let record = match idb::load(&name).await {
                    Ok(record) => record,
                    Err(err) => {
                        web_sys::console::warn_2(&"quire: no local copy available:".into(), &err);
                        None
                    }
                };
                match late.borrow().upgrade() {
                    Some(rt) => {
                        if let Some(record) = record {
                            rt.merge_late(&record.state);
                        }
                    }
                    None => *slot.borrow_mut() = Some(record),
                }
            });
        }
        let started = js_sys::Date::now();
        while slot.borrow().is_none() && js_sys::Date::now() - started < LOCAL_COPY_WAIT_MS {
            sleep(10).await;
        }
        let record = slot.borrow_mut().take().flatten();
        // A copy the server had fully confirmed is the starting state; one
        // with unconfirmed edits is applied through the session, so it
        // counts as unsaved until the server acknowledges it.
        let mut pending_state = None;
        if let Some(record) = record {
            if record.pending {
                pending_state = Some(record.state);
            } else {
                apply(&doc, &record.state);
            }
        }
        let session = SyncSession::with_doc(
            doc.clone(),
            SessionConfig {
                seed: random_u64(),
                token: crate::token::token(),
                ..SessionConfig::default()
            },
        );
        if let Some(state) = &pending_state {
            apply(&doc, state);
        }
        let user = ui.user.get_untracked();

        let runtime = Rc::new_cyclic(|weak: &Weak<Runtime>| {
            let w = weak.clone();
            let w2 = weak.clone();
            let conn = Conn::new(
                session,
                ws_url(&name),
                move |event| {
                    if let Some(rt) = w.upgrade() {
                        rt.on_event(event);
                    }
                },
                move || {
                    if let Some(rt) = w2.upgrade() {
                        rt.before_remote_apply();
                    }
                },
            );
            let saver = Rc::new(Saver {
                name: name.clone(),
                doc: doc.clone(),
                timer: RefCell::new(None),
                first_dirty: Cell::new(None),
                last_pending: Cell::new(pending_state.is_some()),
                unsaved: Cell::new(0),
                enabled: Cell::new(true),
                this: RefCell::new(Weak::new()),
            });
            *saver.this.borrow_mut() = Rc::downgrade(&saver);
            Runtime {
                name: name.clone(),
                doc: doc.clone(),
                conn,
                mounted: RefCell::new(Mounted::None),
                surfaces,
                remount_timer: RefCell::new(None),
                saver,
                tabs: RefCell::new(None),
                presence_timer: RefCell::new(None),
                user: RefCell::new(user),
                ui,
                listeners: RefCell::new(Vec::new()),
                connected_at: Cell::new(0),
                next_chat_id: Cell::new(1),
                chat_in_flight: RefCell::default(),
                closed: Cell::new(false),
                this: weak.clone(),
            }
        });

        *late.borrow_mut() = Rc::downgrade(&runtime);
        // Every change, whatever its origin, goes to the local copy.
        let weak = Rc::downgrade(&runtime);
        let _ = doc.observe_update_v1("quire-saver", move |txn, _| {
            if let Some(rt) = weak.upgrade() {
                rt.saver.mark_dirty();
                rt.model_maybe_changed(txn);
            }
        });
        let (w1, w2) = (Rc::downgrade(&runtime), Rc::downgrade(&runtime));
        *runtime.tabs.borrow_mut() = Tabs::join(
            &name,
            doc.clone(),
            move || {
                if let Some(rt) = w1.upgrade() {
                    rt.before_remote_apply();
                }
            },
            move || {
                if let Some(rt) = w2.upgrade() {
                    rt.conn.flush();
                }
            },
        );

        let target: web_sys::EventTarget = window().into();
        let weak = Rc::downgrade(&runtime);
        let before_unload = Listener::new(&target, "beforeunload", move |event| {
            if let Some(rt) = weak.upgrade() {
                rt.saver.save_now();
                if rt.conn.status().unsaved > 0 && rt.ui.stopped.get_untracked().is_none() {
                    event.prevent_default();
                    if let Some(e) =
                        wasm_bindgen::JsCast::dyn_ref::<web_sys::BeforeUnloadEvent>(&event)
                    {
                        e.set_return_value("There are changes the server has not saved yet.");
                    }
                }
            }
        });
        let weak = Rc::downgrade(&runtime);
        let page_hide = Listener::new(&target, "pagehide", move |_| {
            if let Some(rt) = weak.upgrade() {
                rt.saver.save_now();
            }
        });
        let weak = Rc::downgrade(&runtime);
        let resize = Listener::new(&target, "resize", move |_| {
            if let Some(rt) = weak.upgrade() {
                rt.layout_changed();
            }
        });
        *runtime.listeners.borrow_mut() = vec![before_unload, page_hide, resize];

        runtime
            .ui
            .read_only
            .set(crate::token::token().is_some_and(|t| crate::token::is_read_only(&t)));
        runtime.remount();
        runtime.conn.flush();
        runtime.publish_presence();
        runtime.conn.start();
        runtime
    }

    /// The editor the document's model calls for (plain text, or rich).
    fn wanted_mode(&self) -> Mode {
        match self.doc.try_transact() {
            Ok(txn) => match rich_text::model(&txn) {
                Model::Plain => Mode::Plain,
                Model::Rich | Model::Empty => Mode::Rich,
            },
            Err(_) => self.ui.mode.get_untracked(),
        }
    }

    /// After any change: switch editors if the model changed, and settle
    /// concurrent conversions (see `quire_protocol::rich::text`).
    fn model_maybe_changed(&self, txn: &yrs::TransactionMut) {
        let wanted = match rich_text::model(txn) {
            Model::Plain => Mode::Plain,
            Model::Rich | Model::Empty => Mode::Rich,
        };
        let conversions = wanted == Mode::Rich && txn.get_map(rich_text::META).is_some();
        if wanted == self.ui.mode.get_untracked() && !conversions {
            return;
        }
        let weak = self.this.clone();
        *self.remount_timer.borrow_mut() = Some(Timer::once(0, move || {
            if let Some(rt) = weak.upgrade() {
                rt.settle();
                rt.remount();
            }
        }));
    }

    fn settle(&self) {
        if self.ui.read_only.get_untracked() {
            return;
        }
        let deleted = match self.doc.try_transact_mut_with(LOCAL_ORIGIN) {
            Ok(mut txn) => rich_text::settle_conversions(&mut txn),
            Err(_) => 0,
        };
        if deleted > 0 {
            self.conn.flush();
        }
    }

    /// Mounts the editor the model calls for (nothing if it already is).
    fn remount(&self) {
        if self.closed.get() {
            return;
        }
        let wanted = self.wanted_mode();
        let current = match &*self.mounted.borrow() {
            Mounted::None => Mode::Loading,
            Mounted::Plain { .. } => Mode::Plain,
            Mounted::Rich { .. } => Mode::Rich,
        };
        if wanted == current {
            return;
        }
        *self.mounted.borrow_mut() = Mounted::None;
        let read_only = self.ui.read_only.get_untracked();
        let s = &self.surfaces;
        let mounted = match wanted {
            Mode::Plain | Mode::Loading => {
                let overlay = Overlay::new(
                    self.doc.clone(),
                    s.textarea.clone(),
                    s.mirror.clone(),
                    s.layer.clone(),
                );
                let (w1, w2, w3, w4) = (
                    self.this.clone(),
                    self.this.clone(),
                    self.this.clone(),
                    self.this.clone(),
                );
                let editor = Editor::attach(
                    self.doc.clone(),
                    s.textarea.clone(),
                    Hooks {
                        local_change: Box::new(move || {
                            if let Some(rt) = w1.upgrade() {
                                rt.conn.flush();
                            }
                        }),
                        text_changed: Box::new(move |change| {
                            if let Some(rt) = w2.upgrade()
                                && let Mounted::Plain { overlay, .. } = &*rt.mounted.borrow()
                            {
                                overlay.text_changed(change);
                            }
                        }),
                        selection_changed: Box::new(move || {
                            if let Some(rt) = w3.upgrade() {
                                rt.schedule_presence();
                            }
                        }),
                        scrolled: Box::new(move || {
                            if let Some(rt) = w4.upgrade() {
                                rt.layout_changed();
                            }
                        }),
                    },
                );
                s.textarea.set_read_only(read_only);
                overlay.set_peers(self.ui.peers.get_untracked());
                Mounted::Plain { editor, overlay }
            }
            Mode::Rich => {
                let (w1, w2, w3, w4) = (
                    self.this.clone(),
                    self.this.clone(),
                    self.this.clone(),
                    self.this.clone(),
                );
                let editor = RichEditor::attach(
                    self.doc.clone(),
                    s.rich.clone(),
                    crate::rich::Hooks {
                        local_change: Box::new(move || {
                            if let Some(rt) = w1.upgrade() {
                                rt.conn.flush();
                            }
                        }),
                        selection_changed: Box::new(move || {
                            if let Some(rt) = w2.upgrade() {
                                rt.schedule_presence();
                                rt.refresh_format();
                            }
                        }),
                        changed: Box::new(move || {
                            if let Some(rt) = w3.upgrade() {
                                rt.layout_changed();
                                rt.refresh_format();
                            }
                        }),
                        link_dialog: Box::new(move || {
                            if let Some(rt) = w4.upgrade() {
                                rt.ui.link_dialog.set(true);
                            }
                        }),
                    },
                );
                editor.set_read_only(read_only);
                let carets = Carets::new(&editor, s.rich_layer.clone());
                carets.set_peers(self.ui.peers.get_untracked());
                Mounted::Rich { editor, carets }
            }
        };
        *self.mounted.borrow_mut() = mounted;
        self.ui.mode.set(wanted);
        self.refresh_format();
        self.publish_presence();
    }

    fn refresh_format(&self) {
        if let Mounted::Rich { editor, .. } = &*self.mounted.borrow() {
            let format = editor.format();
            if self.ui.format.get_untracked() != format {
                self.ui.format.set(format);
            }
        }
    }

    fn layout_changed(&self) {
        match &*self.mounted.borrow() {
            Mounted::Plain { overlay, .. } => overlay.layout_changed(),
            Mounted::Rich { carets, .. } => carets.schedule(),
            Mounted::None => {}
        }
    }

    /// The rich editor, when it is the one showing.
    pub fn rich(&self) -> Option<Rc<RichEditor>> {
        match &*self.mounted.borrow() {
            Mounted::Rich { editor, .. } => Some(editor.clone()),
            _ => None,
        }
    }

    /// The plain-text editor, when it is the one showing.
    pub fn plain(&self) -> Option<Rc<Editor>> {
        match &*self.mounted.borrow() {
            Mounted::Plain { editor, .. } => Some(editor.clone()),
            _ => None,
        }
    }

    pub fn undo(&self) {
        match &*self.mounted.borrow() {
            Mounted::Plain { editor, .. } => editor.undo(),
            Mounted::Rich { editor, .. } => editor.undo(),
            Mounted::None => {}
        }
    }

    pub fn redo(&self) {
        match &*self.mounted.borrow() {
            Mounted::Plain { editor, .. } => editor.redo(),
            Mounted::Rich { editor, .. } => editor.redo(),
            Mounted::None => {}
        }
    }

    pub fn focus(&self) {
        match &*self.mounted.borrow() {
            Mounted::Plain { editor, .. } => {
                let _ = editor.textarea().focus();
            }
            Mounted::Rich { editor, .. } => editor.focus(),
            Mounted::None => {}
        }
    }

    /// "Convert to rich text": the plain text becomes paragraphs (once,
    /// whoever else converts at the same moment).
    pub fn convert_to_rich(&self) -> bool {
        if self.ui.read_only.get_untracked() {
            return false;
        }
        if let Some(editor) = self.plain() {
            editor.sync_local();
        }
        let converted = match self.doc.try_transact_mut_with(LOCAL_ORIGIN) {
            Ok(mut txn) => rich_text::convert(&mut txn),
            Err(_) => false,
        };
        if converted {
            self.conn.flush();
            self.remount();
        }
        converted
    }

    /// Right before an update from elsewhere (the socket, another tab, the
    /// local copy) is applied: the rich editor takes the caret as it is on
    /// screen, in case `selectionchange` has not reached it yet (else the
    /// update would put the caret back where it was before a click). The
    /// textarea needs nothing: it compares the live selection itself.
    fn before_remote_apply(&self) {
        let editor = match self.mounted.try_borrow().as_deref() {
            Ok(Mounted::Rich { editor, .. }) => Some(editor.clone()),
            _ => None,
        };
        if let Some(editor) = editor {
            editor.take_dom_selection();
        }
    }

    /// Merges a local copy that arrived after start-up.
    fn merge_late(&self, state: &[u8]) {
        if self.closed.get() {
            return;
        }
        self.before_remote_apply();
        apply(&self.doc, state);
        self.conn.flush();
    }

    /// Stops everything (the page is going away); the local copy is written.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.saver.save_now();
        self.conn.stop();
        self.tabs.borrow_mut().take();
        self.listeners.borrow_mut().clear();
        self.presence_timer.borrow_mut().take();
        self.remount_timer.borrow_mut().take();
        *self.mounted.borrow_mut() = Mounted::None;
        let _ = self.doc.unobserve_update_v1("quire-saver");
    }

    pub fn retry_now(&self) {
        self.conn.retry_now();
    }

    pub fn set_user(&self, user: User) {
        if *self.user.borrow() != user {
            *self.user.borrow_mut() = user;
            self.publish_presence();
        }
    }

    /// This tab's copy rendered as `format` (for export without the server).
    pub fn export_local(&self, format: crate::export::ExportFormat) -> Vec<u8> {
        crate::export::render(&self.doc.transact(), format, &self.name)
    }

    /// The whole local state as one Yjs update.
    pub fn local_state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    pub fn send_chat(&self, text: &str) -> Result<(), String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("Type a message first.".into());
        }
        let payload = serde_json::json!({ "text": text }).to_string();
        match self.conn.emit(CHAT_EVENT, &payload, Some(10_000)) {
            Ok(ack) => {
                self.chat_in_flight
                    .borrow_mut()
                    .push_back((ack, text.to_owned()));
                Ok(())
            }
            Err(EmitError::NotConnected) => {
                Err("You are offline; the message was not sent.".into())
            }
        }
    }

    fn schedule_presence(&self) {
        if self
            .presence_timer
            .borrow()
            .as_ref()
            .is_some_and(Timer::is_pending)
        {
            return;
        }
        let weak = self.this.clone();
        let timer = Timer::once(PRESENCE_THROTTLE_MS, move || {
            if let Some(rt) = weak.upgrade() {
                rt.publish_presence();
            }
        });
        *self.presence_timer.borrow_mut() = Some(timer);
    }

    fn publish_presence(&self) {
        let cursor = match &*self.mounted.borrow() {
            Mounted::Plain { editor, .. } => editor.cursor(),
            Mounted::Rich { editor, .. } => editor.cursor(),
            Mounted::None => None,
        };
        let state = self.user.borrow().awareness(cursor);
        self.conn.set_awareness(Some(state));
    }

    fn on_event(&self, event: SessionEvent) {
        match event {
            SessionEvent::Status(status) => self.on_status(status),
            SessionEvent::RemoteChange => {}
            SessionEvent::Presence(presence) => self.on_presence(presence),
            SessionEvent::Event { name, payload, .. } => self.on_room_event(&name, &payload),
            SessionEvent::EmitAcked { ack, .. } => self.chat_answered(ack),
            SessionEvent::EmitTimedOut { ack } => {
                self.chat_answered(ack);
                self.ui
                    .notify("A chat message may not have been delivered.");
            }
            SessionEvent::ServerError { code, message } => {
                web_sys::console::warn_1(&format!("quire: server error {code}: {message}").into());
                self.on_server_error(code, &message);
            }
        }
    }

    fn chat_answered(&self, ack: u64) {
        self.chat_in_flight.borrow_mut().retain(|(a, _)| *a != ack);
    }

    /// An `Error` from the server: a refused chat message is said next to
    /// the chat input (and given back to it); a refused edit in a notice.
    fn on_server_error(&self, code: u16, message: &str) {
        let pending = self.chat_in_flight.borrow().front().cloned();
        if let Some((_, text)) = pending
            && let Some(words) = chat_refusal_words(code, message)
        {
            self.ui.notify(words.clone());
            self.ui.chat_refused.set(Some(ChatRefusal {
                message: words,
                text,
                for_good: code == close::FORBIDDEN,
            }));
        } else if code == close::FORBIDDEN {
            self.ui.notify(format!(
                "Your access to this document is read-only: changes are not saved ({message})."
            ));
        }
    }

    fn on_status(&self, status: Status) {
        self.saver.unsaved.set(status.unsaved);
        if status.unsaved == 0 && self.saver.last_pending.get() {
            // The copy on disk still says "pending": rewrite it.
            self.saver.mark_dirty();
        }
        if status.connection == Connection::Syncing {
            self.connected_at.set(now_ms());
        }
        if let Connection::Stopped { code, reason } = &status.connection
            && *code != 1000
        {
            self.on_stopped(*code, reason);
        }
        self.ui.status.set(Some(status));
    }

    fn on_stopped(&self, code: u16, reason: &str) {
        let message = match code {
            close::DOCUMENT_DELETED => {
                "This document was deleted (or renamed) by someone.".to_owned()
            }
            close::DOCUMENT_TOO_LARGE => {
                "This document is larger than the server allows; new changes cannot be saved."
                    .to_owned()
            }
            close::BAD_DOCUMENT_NAME => "The server does not accept this document name.".to_owned(),
            close::MESSAGE_TOO_BIG => format!(
                "The server closed the connection: a message (a change or a chat message) was larger than it accepts (code 1009). Changes not yet saved are kept in this browser; reload to reconnect.{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
            close::UNAUTHORIZED | close::FORBIDDEN => format!("{}.", crate::token::TOKEN_REFUSED),
            _ if reason.is_empty() => format!("The server closed the connection (code {code})."),
            _ => format!("The server closed the connection: {reason} (code {code})."),
        };
        if code == close::DOCUMENT_DELETED {
            // Keep no local copy that would bring the document back on the
            // next visit; the page offers to restore it from memory instead.
            self.saver.enabled.set(false);
            let name = self.name.clone();
            leptos::task::spawn_local(async move {
                let _ = idb::remove(&name).await;
            });
        }
        self.ui.stopped.set(Some(Stopped { code, message }));
    }

    fn on_presence(&self, presence: Presence) {
        let connected = matches!(
            self.conn.status().connection,
            Connection::Syncing | Connection::Synced
        );
        let quiet = now_ms().saturating_sub(self.connected_at.get()) < JOIN_QUIET_MS;
        match presence {
            Presence::Joined { client, state } => {
                let peer = Peer::from_state(client, &state);
                if connected && !quiet {
                    self.ui.notify(format!("{} joined", peer.name));
                }
                self.ui.peers.update(|peers| {
                    peers.retain(|p| p.client != client);
                    peers.push(peer);
                });
            }
            Presence::Updated { client, state } => {
                let peer = Peer::from_state(client, &state);
                self.ui.peers.update(
                    |peers| match peers.iter_mut().find(|p| p.client == client) {
                        Some(p) => *p = peer,
                        None => peers.push(peer),
                    },
                );
            }
            Presence::Left { client } => {
                let mut gone = None;
                self.ui.peers.update(|peers| {
                    if let Some(i) = peers.iter().position(|p| p.client == client) {
                        gone = Some(peers.remove(i));
                    }
                });
                if let Some(peer) = gone
                    && connected
                {
                    self.ui.notify(format!("{} left", peer.name));
                }
            }
        }
        let peers = self.ui.peers.get_untracked();
        match &*self.mounted.borrow() {
            Mounted::Plain { overlay, .. } => overlay.set_peers(peers),
            Mounted::Rich { carets, .. } => carets.set_peers(peers),
            Mounted::None => {}
        }
    }

    fn chat_message(&self, record: ChatRecord) -> ChatMessage {
        let id = self.next_chat_id.get();
        self.next_chat_id.set(id + 1);
        let mine = record.user == self.user.borrow().name;
        ChatMessage {
            id,
            user: if record.user.is_empty() {
                "anonymous".into()
            } else {
                record.user
            },
            text: record.text,
            at_ms: record.at_ms,
            mine,
        }
    }

    fn on_room_event(&self, name: &str, payload: &str) {
        if name == CHAT_HISTORY_EVENT {
            let records: Vec<ChatRecord> = serde_json::from_str(payload).unwrap_or_default();
            let messages: Vec<ChatMessage> =
                records.into_iter().map(|r| self.chat_message(r)).collect();
            self.ui.chat.set(messages);
        } else if name == CHAT_EVENT {
            let Ok(record) = serde_json::from_str::<ChatRecord>(payload) else {
                return;
            };
            let message = self.chat_message(record);
            if !message.mine && !self.ui.chat_open.get_untracked() {
                self.ui.unread.update(|n| *n += 1);
            }
            self.ui.chat.update(|c| {
                c.push(message);
                if c.len() > 500 {
                    c.remove(0);
                }
            });
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_chat_message_is_explained_by_its_code() {
        let words = |code| chat_refusal_words(code, "limit 4096");
        assert_eq!(
            words(close::MESSAGE_TOO_BIG).unwrap(),
            "Your message was not sent: it is longer than the server accepts (limit 4096)."
        );
        assert!(
            words(close::DOCUMENT_TOO_LARGE)
                .unwrap()
                .contains("size limit (limit 4096)")
        );
        assert!(words(close::FORBIDDEN).unwrap().contains("read-only"));
        assert_eq!(
            chat_refusal_words(close::MESSAGE_TOO_BIG, ""),
            Some("Your message was not sent: it is longer than the server accepts.".into())
        );
        // Codes that are not about a message are said elsewhere.
        assert_eq!(words(close::INTERNAL_ERROR), None);
        assert_eq!(words(4000), None);
    }
}
