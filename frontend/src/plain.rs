//! Binds a `<textarea>` to the `Y.Text` named `content`.
//!
//! - **Local edits**: on `input`, the textarea's new value is compared with
//!   the last value both sides agreed on (the *shadow*) and the difference is
//!   applied as one minimal splice (common prefix/suffix, UTF-16 units, which
//!   is what the document counts in: it is created with `OffsetKind::Utf16`).
//!   The selection captured at `beforeinput` bounds the comparison, which is
//!   then verified by the JS engine's own string comparison, so a keystroke
//!   in a 1 MB document converts only the changed region to Rust.
//! - **IME**: nothing is applied while a composition is under way; the result
//!   is applied on `compositionend`. Remote changes that arrive meanwhile are
//!   held back (the textarea is not touched, so the IME is not disturbed)
//!   and merged afterwards.
//! - **Remote edits** (server, other tabs, undo/redo) arrive as text deltas
//!   and are applied with `setRangeText`, in place; the local selection is
//!   restored from sticky indices (yrs `StickyIndex`) taken when it last
//!   changed, so it stays on the same characters. If the caret moved and
//!   the editor has not heard yet (`selectionchange` still queued), the
//!   textarea's own caret is mapped through the change instead.
//! - **Undo/redo** go through a yrs `UndoManager` that tracks only this
//!   tab's typing origin, so other people's changes are never undone.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use js_sys::JsString;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{HtmlTextAreaElement, InputEvent, KeyboardEvent};
use yrs::types::Delta;
use yrs::types::text::TextEvent;
use yrs::undo::Options as UndoOptions;
use yrs::{
    Any, Assoc, Doc, GetString, IndexedSequence, Observable, Origin, Out, ReadTxn, StickyIndex,
    Text, TextRef, Transact, TransactionMut, UndoManager,
};

use crate::browser::{Listener, document};
use crate::diff::{self, Op, Splice, map_position, utf16_len};

/// Origin of this tab's typing (the only origin the undo manager tracks).
pub const LOCAL_ORIGIN: &str = "quire-local";
/// Origin of updates received from another tab of this browser.
pub const TAB_ORIGIN: &str = "quire-tab";
/// Origin of the state restored from IndexedDB.
pub const STORE_ORIGIN: &str = "quire-store";
/// Name of the shared text.
pub const TEXT_NAME: &str = "content";
const OBSERVER_KEY: &str = "quire-editor";

/// How the text shown changed.
pub enum TextChange<'a> {
    /// These replacements, in order, each in the coordinates left by the previous one.
    Splices(&'a [Splice]),
    /// Anything (the whole text was replaced).
    Reset,
}

/// What the editor tells its owner.
pub struct Hooks {
    /// This tab changed the document (typing, undo, redo): send it.
    pub local_change: Box<dyn Fn()>,
    /// The text shown changed (any cause): redraw carets, schedule a save.
    pub text_changed: Box<dyn Fn(TextChange<'_>)>,
    /// The local selection moved: publish presence.
    pub selection_changed: Box<dyn Fn()>,
    /// The textarea scrolled or resized: move the overlay.
    pub scrolled: Box<dyn Fn()>,
}

struct View {
    ta: HtmlTextAreaElement,
    /// The text the textarea and the document last agreed on.
    shadow: JsString,
    /// Selection when the current input began (from `beforeinput`).
    hint: Option<(u32, u32)>,
    /// Last selection seen: start, end, backward.
    selection: (u32, u32, bool),
    /// The selection as sticky indices (start, end).
    sticky: Option<(StickyIndex, StickyIndex)>,
    /// Remote changes held back during an IME composition, oldest first.
    held: Vec<Vec<Op>>,
}

pub struct Editor {
    doc: Doc,
    text: TextRef,
    view: RefCell<View>,
    undo: RefCell<UndoManager>,
    undo_origin: Origin,
    composing: Cell<bool>,
    /// Where the caret was after this tab's last edit: typing somewhere else
    /// starts a new undo step even within the capture window.
    last_edit_caret: Cell<Option<u32>>,
    hooks: Hooks,
    listeners: RefCell<Vec<Listener>>,
}

fn value_of(ta: &HtmlTextAreaElement) -> JsString {
    js_sys::Reflect::get(ta, &JsValue::from_str("value"))
        .ok()
        .and_then(|v| v.dyn_into::<JsString>().ok())
        .unwrap_or_else(|| JsString::from(""))
}

fn utf16(s: &JsString) -> Vec<u16> {
    String::from(s).encode_utf16().collect()
}

/// Where an edit happened, from the selection before it (`hint`) and the
/// caret after it, verified against both strings; the full comparison when
/// the hint does not hold (autocorrect, drag and drop, a missed event).
fn compute_splice(
    old: &JsString,
    new: &JsString,
    hint: Option<(u32, u32)>,
    caret: u32,
) -> Option<Splice> {
    let (l0, l1) = (old.length(), new.length());
    if let Some((a, b)) = hint {
        let p = a.min(caret).min(l0).min(l1);
        let b = b.max(p).min(l0);
        let c = caret.max(p).min(l1);
        let q = (l0 - b).min(l1 - c);
        let prefix_holds = old.slice(0, p) == new.slice(0, p);
        if prefix_holds && old.slice(l0 - q, l0) == new.slice(l1 - q, l1) {
            let window_old = utf16(&old.slice(p, l0 - q));
            let window_new = utf16(&new.slice(p, l1 - q));
            let safe_edge = p == 0 || {
                let before = old.char_code_at(p - 1) as u16;
                !(0xD800..0xDC00).contains(&before)
            };
            if safe_edge {
                return diff::splice(&window_old, &window_new)
                    .map(|s| Splice { at: p + s.at, ..s });
            }
        }
    }
    diff::splice(&utf16(old), &utf16(new))
}

fn delta_ops(delta: &[Delta]) -> Vec<Op> {
    delta
        .iter()
        .map(|d| match d {
            Delta::Retain(n, _) => Op::Retain(*n),
            Delta::Deleted(n) => Op::Delete(*n),
            Delta::Inserted(Out::Any(Any::String(s)), _) => Op::Insert(s.to_string()),
            // Embeds are not part of a plain-text document; keep lengths right.
            Delta::Inserted(_, _) => Op::Insert("\u{FFFC}".into()),
        })
        .collect()
}

/// A sticky index at `index`. At the very end of the text it sticks to the
/// character before (so text someone appends after it does not carry it
/// along, and a caret in an empty document stays at its start).
fn sticky_at<T: ReadTxn>(text: &TextRef, txn: &T, index: u32, assoc: Assoc) -> StickyIndex {
    let len = text.len(txn);
    let assoc = if index >= len { Assoc::Before } else { assoc };
    text.sticky_index(txn, index.min(len), assoc)
        .unwrap_or_else(|| StickyIndex::from_type(txn, text, Assoc::After))
}

/// Resolves a presence position (a Yjs relative position as JSON) to a UTF-16 offset.
pub fn resolve_sticky<T: ReadTxn>(position: &serde_json::Value, txn: &T) -> Option<u32> {
    let index = crate::relpos::from_json(position)?;
    index.get_offset(txn).map(|o| o.index)
}

impl Editor {
    /// Shows the document in `ta` and keeps the two in step until dropped.
    pub fn attach(doc: Doc, ta: HtmlTextAreaElement, hooks: Hooks) -> Rc<Self> {
        let text = doc.get_or_insert_text(TEXT_NAME);
        let initial = text.get_string(&doc.transact());
        ta.set_value(&initial);
        ta.set_selection_range(0, 0).ok();
        let shadow = value_of(&ta);

        let mut undo = UndoManager::with_options(UndoOptions {
            capture_timeout_millis: 500,
            tracked_origins: [Origin::from(LOCAL_ORIGIN)].into_iter().collect(),
            capture_transaction: None,
            timestamp: Arc::new(|| js_sys::Date::now() as u64),
            init_undo_stack: Vec::new(),
            init_redo_stack: Vec::new(),
        });
        undo.expand_scope(&doc, &text);
        let undo_origin = undo.as_origin();

        let editor = Rc::new(Self {
            doc,
            text,
            view: RefCell::new(View {
                ta: ta.clone(),
                shadow,
                hint: None,
                selection: (u32::MAX, u32::MAX, false),
                sticky: None,
                held: Vec::new(),
            }),
            undo: RefCell::new(undo),
            undo_origin,
            composing: Cell::new(false),
            last_edit_caret: Cell::new(None),
            hooks,
            listeners: RefCell::new(Vec::new()),
        });

        let weak = Rc::downgrade(&editor);
        editor.text.observe(
            OBSERVER_KEY,
            move |txn: &TransactionMut, event: &TextEvent| {
                let local = txn
                    .origin()
                    .is_some_and(|o| o.as_ref() == LOCAL_ORIGIN.as_bytes());
                if local {
                    return; // the textarea already shows it
                }
                if let Some(editor) = weak.upgrade() {
                    let undoing = txn.origin() == Some(&editor.undo_origin);
                    editor.apply_foreign(txn, delta_ops(event.delta(txn)), undoing);
                }
            },
        );
        editor.listen(&ta);
        editor.selection_maybe_changed();
        editor
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The local selection for presence: (anchor, head) as Yjs relative positions.
    pub fn cursor(&self) -> Option<(serde_json::Value, serde_json::Value)> {
        let view = self.view.borrow();
        let (start, end) = view.sticky.as_ref()?;
        let backward = view.selection.2;
        let (anchor, head) = if backward { (end, start) } else { (start, end) };
        let txn = self.doc.try_transact().ok()?;
        Some((
            crate::relpos::to_json(&txn, anchor),
            crate::relpos::to_json(&txn, head),
        ))
    }

    pub fn textarea(&self) -> HtmlTextAreaElement {
        self.view.borrow().ta.clone()
    }

    fn listen(self: &Rc<Self>, ta: &HtmlTextAreaElement) {
        let target: &web_sys::EventTarget = ta.as_ref();
        let mut listeners = Vec::new();
        let on = |event: &'static str, f: fn(&Editor, web_sys::Event)| {
            let weak: Weak<Editor> = Rc::downgrade(self);
            Listener::new(target, event, move |e| {
                if let Some(editor) = weak.upgrade() {
                    f(&editor, e);
                }
            })
        };
        listeners.push(on("beforeinput", |ed, e| ed.before_input(e)));
        listeners.push(on("input", |ed, e| {
            let composing = e
                .dyn_ref::<InputEvent>()
                .is_some_and(InputEvent::is_composing);
            if !composing && !ed.composing.get() {
                ed.sync_local();
            }
        }));
        listeners.push(on("compositionstart", |ed, _| {
            ed.sync_local();
            ed.composing.set(true);
        }));
        listeners.push(on("compositionend", |ed, _| {
            ed.composing.set(false);
            ed.sync_local();
        }));
        listeners.push(on("keydown", |ed, e| ed.key_down(e)));
        for event in ["select", "keyup", "mouseup", "focus", "touchend"] {
            listeners.push(on(event, |ed, _| ed.selection_maybe_changed()));
        }
        listeners.push(on("scroll", |ed, _| (ed.hooks.scrolled)()));
        let weak: Weak<Editor> = Rc::downgrade(self);
        listeners.push(Listener::new(
            document().as_ref(),
            "selectionchange",
            move |_| {
                if let Some(editor) = weak.upgrade() {
                    editor.selection_maybe_changed();
                }
            },
        ));
        *self.listeners.borrow_mut() = listeners;
    }

    fn before_input(&self, event: web_sys::Event) {
        let Some(input) = event.dyn_ref::<InputEvent>() else {
            return;
        };
        match input.input_type().as_str() {
            "historyUndo" => {
                event.prevent_default();
                self.undo();
            }
            "historyRedo" => {
                event.prevent_default();
                self.redo();
            }
            _ => {
                if !self.composing.get() {
                    let mut view = self.view.borrow_mut();
                    let start = view.ta.selection_start().ok().flatten().unwrap_or(0);
                    let end = view.ta.selection_end().ok().flatten().unwrap_or(start);
                    view.hint = Some((start, end));
                    drop(view);
                    if self
                        .last_edit_caret
                        .get()
                        .is_some_and(|c| c != start || start != end)
                    {
                        self.undo.borrow_mut().reset();
                    }
                }
            }
        }
    }

    fn key_down(&self, event: web_sys::Event) {
        let Some(key) = event.dyn_ref::<KeyboardEvent>() else {
            return;
        };
        if key.is_composing() || !(key.ctrl_key() || key.meta_key()) || key.alt_key() {
            return;
        }
        match key.key().to_lowercase().as_str() {
            "z" if key.shift_key() => {
                event.prevent_default();
                self.redo();
            }
            "z" => {
                event.prevent_default();
                self.undo();
            }
            "y" if key.ctrl_key() && !key.meta_key() => {
                event.prevent_default();
                self.redo();
            }
            _ => {}
        }
    }

    pub fn undo(&self) {
        if self.composing.get() {
            return;
        }
        self.sync_local();
        let done = self.undo.borrow_mut().undo_blocking();
        if done {
            (self.hooks.local_change)();
            self.selection_maybe_changed();
        }
    }

    pub fn redo(&self) {
        if self.composing.get() {
            return;
        }
        self.sync_local();
        let done = self.undo.borrow_mut().redo_blocking();
        if done {
            (self.hooks.local_change)();
            self.selection_maybe_changed();
        }
    }

    /// Applies what the user did in the textarea to the document.
    pub fn sync_local(&self) {
        if self.composing.get() {
            return;
        }
        let mut view = self.view.borrow_mut();
        let hint = view.hint.take();
        let new = value_of(&view.ta);
        if new == view.shadow {
            drop(view);
            self.selection_maybe_changed();
            return;
        }
        let caret = view.ta.selection_end().ok().flatten().unwrap_or(0);
        let Some(splice) = compute_splice(&view.shadow, &new, hint, caret) else {
            view.shadow = new;
            return;
        };
        let held = std::mem::take(&mut view.held);
        // Remote changes held back during a composition moved the text under the edit.
        let (at, delete) = if held.is_empty() {
            (splice.at, splice.delete)
        } else {
            let mut start = splice.at;
            let mut end = splice.at + splice.delete;
            for ops in &held {
                start = map_position(start, ops, true);
                end = map_position(end, ops, false).max(start);
            }
            (start, end - start)
        };
        view.shadow = new;
        drop(view);
        {
            let mut txn = self.doc.transact_mut_with(LOCAL_ORIGIN);
            let len = self.text.len(&txn);
            let at = at.min(len);
            let delete = delete.min(len - at);
            if delete > 0 {
                self.text.remove_range(&mut txn, at, delete);
            }
            if !splice.insert.is_empty() {
                self.text.insert(&mut txn, at, &splice.insert);
            }
        }
        let caret_after = at + utf16_len(&splice.insert);
        self.last_edit_caret
            .set(Some(if held.is_empty() { caret } else { caret_after }));
        (self.hooks.local_change)();
        if held.is_empty() {
            (self.hooks.text_changed)(TextChange::Splices(std::slice::from_ref(&splice)));
        } else {
            // The textarea missed the held-back changes: show the document as it is.
            self.reset_from_doc(Some((caret_after, caret_after)));
            (self.hooks.text_changed)(TextChange::Reset);
        }
        self.selection_maybe_changed();
    }

    /// Replaces the whole textarea with the document's text (recovery path).
    fn reset_from_doc(&self, selection: Option<(u32, u32)>) {
        let content = self.text.get_string(&self.doc.transact());
        let mut view = self.view.borrow_mut();
        let top = view.ta.scroll_top();
        view.ta.set_value(&content);
        view.shadow = value_of(&view.ta);
        if let Some((start, end)) = selection {
            view.ta.set_selection_range(start, end).ok();
        }
        view.ta.set_scroll_top(top);
    }

    /// Shows a change that did not come from this textarea.
    fn apply_foreign<T: ReadTxn>(&self, txn: &T, ops: Vec<Op>, undoing: bool) {
        if self.composing.get() {
            self.view.borrow_mut().held.push(ops);
            return;
        }
        let mut splices = Vec::new();
        let mut reset = false;
        {
            let mut view = self.view.borrow_mut();
            let ta = view.ta.clone();
            let (top, left) = (ta.scroll_top(), ta.scroll_left());
            // The caret as the textarea has it now. If it moved since we
            // last noticed (the `selectionchange` event is still queued,
            // e.g. right after a click or a script set it), the sticky
            // indices are stale: restoring them would make the caret jump
            // back to where it was, and the next keystroke land there.
            let now = {
                let start = ta.selection_start().ok().flatten().unwrap_or(0);
                let end = ta.selection_end().ok().flatten().unwrap_or(start);
                let backward = ta
                    .selection_direction()
                    .ok()
                    .flatten()
                    .is_some_and(|d| d == "backward");
                (start, end, backward)
            };
            if now != view.selection {
                view.sticky = None;
            }
            let (old_start, old_end, backward) = now;
            let mut cursor = 0u32;
            let mut last_change = None;
            for op in &ops {
                match op {
                    Op::Retain(n) => cursor += n,
                    Op::Insert(s) => {
                        ta.set_range_text_with_start_and_end(s, cursor, cursor).ok();
                        splices.push(Splice {
                            at: cursor,
                            delete: 0,
                            insert: s.clone(),
                        });
                        cursor += utf16_len(s);
                        last_change = Some(cursor);
                    }
                    Op::Delete(n) => {
                        ta.set_range_text_with_start_and_end("", cursor, cursor + n)
                            .ok();
                        splices.push(Splice {
                            at: cursor,
                            delete: *n,
                            insert: String::new(),
                        });
                        last_change = Some(cursor);
                    }
                }
            }
            view.shadow = value_of(&ta);
            let expected = self.text.len(txn);
            if view.shadow.length() != expected {
                // Should not happen; never leave the two out of step.
                web_sys::console::warn_1(&"quire: textarea out of step, reloading it".into());
                let content = self.text.get_string(txn);
                ta.set_value(&content);
                view.shadow = value_of(&ta);
                reset = true;
            }
            let len = view.shadow.length();
            let (start, end) = if undoing {
                let at = last_change.unwrap_or(old_start).min(len);
                (at, at)
            } else if let Some((s, e)) = &view.sticky {
                let start = s.get_offset(txn).map_or(old_start, |o| o.index);
                let end = e.get_offset(txn).map_or(old_end, |o| o.index);
                (start.min(len), end.min(len).max(start.min(len)))
            } else {
                let start = map_position(old_start.min(len), &ops, false);
                (
                    start,
                    map_position(old_end.min(len), &ops, false).max(start),
                )
            };
            let direction = if backward { "backward" } else { "forward" };
            ta.set_selection_range_with_direction(start, end, direction)
                .ok();
            view.selection = (start, end, backward);
            if self.last_edit_caret.get().is_some() {
                self.last_edit_caret.set(Some(end));
            }
            if !undoing {
                ta.set_scroll_top(top);
                ta.set_scroll_left(left);
            }
        }
        if undoing {
            // The selection moved to the change; `undo`/`redo` publish it
            // once the transaction is over.
            self.view.borrow_mut().sticky = None;
        }
        (self.hooks.text_changed)(if reset {
            TextChange::Reset
        } else {
            TextChange::Splices(&splices)
        });
    }

    /// Notices a moved caret or selection: new sticky indices, presence.
    pub fn selection_maybe_changed(&self) {
        if self.composing.get() {
            return;
        }
        let mut view = self.view.borrow_mut();
        let start = view.ta.selection_start().ok().flatten().unwrap_or(0);
        let end = view.ta.selection_end().ok().flatten().unwrap_or(start);
        let backward = view
            .ta
            .selection_direction()
            .ok()
            .flatten()
            .is_some_and(|d| d == "backward");
        if view.selection == (start, end, backward) && view.sticky.is_some() {
            return;
        }
        // A transaction may be open (we are inside an observer): try later.
        let Ok(txn) = self.doc.try_transact() else {
            return;
        };
        let len = self.text.len(&txn);
        let (s, e) = (start.min(len), end.min(len));
        let sticky_start = sticky_at(&self.text, &txn, s, Assoc::After);
        let sticky_end = if e == s {
            sticky_start.clone()
        } else {
            sticky_at(&self.text, &txn, e, Assoc::Before)
        };
        drop(txn);
        view.selection = (start, end, backward);
        view.sticky = Some((sticky_start, sticky_end));
        drop(view);
        (self.hooks.selection_changed)();
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        self.listeners.borrow_mut().clear();
        self.text.unobserve(OBSERVER_KEY);
    }
}
