//! The rich-text editor: a `contenteditable` root bound to the fragment
//! `default` (see `quire_protocol::rich` for the document model).
//!
//! - **Input** comes from `beforeinput` (typing, Enter, Shift+Enter, every
//!   delete, paste, drop, undo/redo, format commands) and keys (shortcuts,
//!   Tab); each becomes one [`edit`] command in one yrs transaction with
//!   this tab's origin. The browser never edits the DOM itself, except
//!   while an IME composes.
//! - **Drawing**: the view ([`view`], [`dom`]) is patched from the
//!   transaction's yrs events, the same way for this tab's edits and for
//!   remote ones; a keystroke updates one text node.
//! - **Selection** is kept as sticky indices (yrs `StickyIndex`, Yjs
//!   relative positions) taken whenever it changes, and put back after
//!   every change, so it stays on the same characters whatever others do.
//!   The selection is taken again right before every update from
//!   elsewhere is applied ([`RichEditor::take_dom_selection`]), since
//!   `selectionchange` may not have arrived yet.
//!   Presence carries it as Yjs RelativePosition JSON ([`crate::relpos`]).
//! - **IME**: during a composition the browser owns the block being
//!   composed in; remote changes to that block are held back, other blocks
//!   are patched as usual. At `compositionend` the composed text is
//!   diffed against the block as it was and applied at the composition's
//!   sticky start, then the block is redrawn from the document.
//! - **Undo** is a yrs `UndoManager` tracking only this tab's origin; each
//!   step remembers the selection before it.

pub mod clipboard;
pub mod dom;
pub mod edit;
pub mod rules;
pub mod view;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use quire_protocol::rich::json::{self, Mark};
use quire_protocol::rich::{FRAGMENT, MarkType, Node, NodeType};
use serde_json::Value;
use wasm_bindgen::JsCast;
use web_sys::{HtmlElement, InputEvent, KeyboardEvent};
use yrs::undo::Options as UndoOptions;
use yrs::{
    Any, Assoc, DeepObservable, Doc, IndexedSequence, Origin, ReadTxn, StickyIndex, Transact,
    TransactionMut, Xml, XmlElementRef, XmlFragment, XmlFragmentRef, XmlOut,
};

use self::dom::DomTree;
use self::edit::{After, BlockType, Caret, Edit, NotApplicable, Path, Piece, Pos, Sel};
use self::view::{Body, DomPoint, ItemKind};
use crate::browser::{Listener, document, window};
use crate::plain::LOCAL_ORIGIN;

const OBSERVER_KEY: &str = "quire-rich";

/// What the editor tells its owner.
pub struct Hooks {
    /// This tab changed the document: send it.
    pub local_change: Box<dyn Fn()>,
    /// The selection moved: publish presence, update the toolbar.
    pub selection_changed: Box<dyn Fn()>,
    /// The document changed (any origin): redraw carets, update the toolbar.
    pub changed: Box<dyn Fn()>,
    /// Ctrl+K: open the link dialog.
    pub link_dialog: Box<dyn Fn()>,
}

/// What the toolbar shows for the selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Format {
    pub marks: Vec<MarkType>,
    pub block: Option<BlockType>,
    pub list: Option<NodeType>,
    pub quote: bool,
    pub link: Option<String>,
    pub can_indent: bool,
    pub in_list: bool,
}

struct Composition {
    /// The block's DOM element (held back from patching).
    block: web_sys::Node,
    /// Its text when the composition began (breaks as U+FFFC).
    shadow: Vec<u16>,
    /// Where the selection began, in the block, then and as a sticky index.
    from: u32,
    to: u32,
    start: Option<StickyIndex>,
    held: bool,
}

type UndoMeta = Option<(StickyIndex, StickyIndex)>;

pub struct RichEditor {
    doc: Doc,
    fragment: XmlFragmentRef,
    root: HtmlElement,
    tree: RefCell<DomTree>,
    /// The selection as last seen, and the same as sticky indices.
    sel: RefCell<Option<Sel>>,
    sticky: RefCell<Option<(StickyIndex, StickyIndex)>>,
    /// Marks chosen with a caret and no selection (Ctrl+B, then type).
    stored: RefCell<Option<(Pos, Vec<Mark>)>>,
    undo: RefCell<yrs::undo::UndoManager<UndoMeta>>,
    /// The selection before the edit being made (for the undo step).
    before_edit: Rc<RefCell<UndoMeta>>,
    /// The selection an undo/redo step restores.
    popped: Rc<RefCell<UndoMeta>>,
    composing: RefCell<Option<Composition>>,
    /// The selection being dragged from this editor (a drop back into it
    /// moves that text).
    drag_source: RefCell<Option<Sel>>,
    read_only: Cell<bool>,
    hooks: Hooks,
    listeners: RefCell<Vec<Listener>>,
    this: Weak<RichEditor>,
}

fn undo_manager(doc: &Doc, fragment: &XmlFragmentRef) -> yrs::undo::UndoManager<UndoMeta> {
    let mut undo = yrs::undo::UndoManager::with_options(UndoOptions {
        capture_timeout_millis: 500,
        tracked_origins: [Origin::from(LOCAL_ORIGIN)].into_iter().collect(),
        capture_transaction: None,
        timestamp: Arc::new(|| js_sys::Date::now() as u64),
        init_undo_stack: Vec::new(),
        init_redo_stack: Vec::new(),
    });
    undo.expand_scope(doc, fragment);
    undo
}

/// A sticky index for a caret at `off` in the text block `el`.
fn sticky_for<T: ReadTxn>(txn: &T, el: &XmlElementRef, off: u32, assoc: Assoc) -> StickyIndex {
    let mut at = 0;
    let list = edit::pieces(txn, el);
    let mut index = 0u32;
    for (i, piece) in list.iter().enumerate() {
        let end = at + piece.width();
        if let Piece::Text(t, len) = piece
            && at <= off
            && off <= end
        {
            let local = off - at;
            let wanted = if local >= *len { Assoc::Before } else { assoc };
            if let Some(s) = t
                .sticky_index(txn, local, wanted)
                .or_else(|| t.sticky_index(txn, local, Assoc::Before))
            {
                return s;
            }
        }
        if end <= off {
            index = i as u32 + 1;
        }
        at = end;
    }
    if index as usize >= list.len() {
        return StickyIndex::from_type(txn, el, Assoc::After);
    }
    el.sticky_index(txn, index, Assoc::After)
        .unwrap_or_else(|| StickyIndex::from_type(txn, el, Assoc::After))
}

/// The blocks of a selection, where the mirror looks first for a block.
fn near_paths(sel: Option<&Sel>) -> Vec<&[u32]> {
    sel.iter()
        .flat_map(|s| [s.head.path.as_slice(), s.anchor.path.as_slice()])
        .collect()
}

fn branch_id(out: &XmlOut) -> yrs::BranchID {
    let branch: &yrs::branch::Branch = match out {
        XmlOut::Element(e) => e.as_ref(),
        XmlOut::Text(t) => t.as_ref(),
        XmlOut::Fragment(f) => f.as_ref(),
    };
    branch.id()
}

/// The index path of a node from the fragment, if it is still in it.
fn path_of<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, node: &XmlOut) -> Option<Path> {
    let root_id = branch_id(&XmlOut::Fragment(root.clone()));
    let mut path = Vec::new();
    let mut cur = node.clone();
    for _ in 0..200 {
        let id = branch_id(&cur);
        if id == root_id {
            path.reverse();
            return Some(path);
        }
        let parent = match &cur {
            XmlOut::Element(e) => Xml::parent(e),
            XmlOut::Text(t) => Xml::parent(t),
            XmlOut::Fragment(f) => f.parent(),
        }?;
        let index = match &parent {
            XmlOut::Element(e) => e.children(txn).position(|c| branch_id(&c) == id),
            XmlOut::Fragment(f) => f.children(txn).position(|c| branch_id(&c) == id),
            XmlOut::Text(_) => None,
        }?;
        path.push(index as u32);
        cur = parent;
    }
    None
}

impl RichEditor {
    /// Draws the document into `root` and keeps the two in step until dropped.
    pub fn attach(doc: Doc, root: HtmlElement, hooks: Hooks) -> Rc<Self> {
        let fragment = doc.get_or_insert_xml_fragment(FRAGMENT);
        let tree = dom::build_tree(&doc.transact(), &fragment, &root);
        let _ = root.set_attribute("contenteditable", "true");
        let undo = undo_manager(&doc, &fragment);
        let editor = Rc::new_cyclic(|this| Self {
            doc: doc.clone(),
            fragment: fragment.clone(),
            root: root.clone(),
            tree: RefCell::new(tree),
            sel: RefCell::new(None),
            sticky: RefCell::new(None),
            stored: RefCell::new(None),
            undo: RefCell::new(undo),
            before_edit: Rc::default(),
            popped: Rc::default(),
            composing: RefCell::new(None),
            drag_source: RefCell::new(None),
            read_only: Cell::new(false),
            hooks,
            listeners: RefCell::new(Vec::new()),
            this: this.clone(),
        });
        {
            let mut undo = editor.undo.borrow_mut();
            let before = editor.before_edit.clone();
            undo.observe_item_added(OBSERVER_KEY, move |_, event| {
                *event.meta_mut() = before.borrow().clone();
            });
            let popped = editor.popped.clone();
            undo.observe_item_popped(OBSERVER_KEY, move |_, event| {
                *popped.borrow_mut() = event.meta().clone();
            });
        }
        let weak = Rc::downgrade(&editor);
        fragment.observe_deep(OBSERVER_KEY, move |txn, events| {
            if let Some(editor) = weak.upgrade() {
                editor.on_events(txn, events);
            }
        });
        editor.listen();
        editor
    }

    pub fn root(&self) -> &HtmlElement {
        &self.root
    }

    /// Makes the editor editable or not (read-only access).
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.set(read_only);
        let _ = self
            .root
            .set_attribute("contenteditable", if read_only { "false" } else { "true" });
        let _ = self
            .root
            .set_attribute("aria-readonly", if read_only { "true" } else { "false" });
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.get()
    }

    fn listen(self: &Rc<Self>) {
        let target: &web_sys::EventTarget = self.root.as_ref();
        let on = |event: &'static str, f: fn(&RichEditor, web_sys::Event)| {
            let weak = self.this.clone();
            Listener::new(target, event, move |e| {
                if let Some(editor) = weak.upgrade() {
                    f(&editor, e);
                }
            })
        };
        let mut listeners = vec![
            on("beforeinput", |ed, e| ed.before_input(e)),
            on("keydown", |ed, e| ed.key_down(e)),
            on("compositionstart", |ed, _| ed.composition_start()),
            on("compositionend", |ed, _| ed.composition_end()),
            on("input", |ed, e| ed.after_input(e)),
            on("paste", |ed, e| ed.paste(e)),
            on("copy", |ed, e| ed.copy(e, false)),
            on("cut", |ed, e| ed.copy(e, true)),
            on("dragstart", |ed, _| ed.drag_start()),
            on("dragend", |ed, _| *ed.drag_source.borrow_mut() = None),
            on("drop", |ed, e| ed.drop_event(e)),
            on("click", |ed, e| ed.click(e)),
        ];
        let weak = self.this.clone();
        listeners.push(Listener::new(
            document().as_ref(),
            "selectionchange",
            move |_| {
                if let Some(editor) = weak.upgrade() {
                    editor.take_dom_selection();
                }
            },
        ));
        *self.listeners.borrow_mut() = listeners;
    }

    // -----------------------------------------------------------------
    // Selection

    fn dom_to_pos(&self, node: &web_sys::Node, offset: u32) -> Option<Pos> {
        let root: &web_sys::Node = self.root.as_ref();
        if !root.contains(Some(node)) {
            return None;
        }
        let mut chain = Vec::new();
        let mut cur = node.clone();
        while &cur != root {
            chain.push(cur.clone());
            cur = cur.parent_node()?;
        }
        chain.reverse();
        let tree = self.tree.borrow();
        // The chunks around top-level blocks are the DOM's only: a point on
        // the root or a chunk becomes one between top-level blocks.
        match chain.first() {
            None => {
                return tree.pos_before_child(&[], dom::top_index_at(&tree, root, offset));
            }
            Some(first) if dom::is_chunk(first) => {
                if chain.len() == 1 {
                    return tree.pos_before_child(&[], dom::top_index_at(&tree, first, offset));
                }
                chain.remove(0);
            }
            Some(_) => {}
        }
        let near = self.sel.borrow().as_ref().map(|s| s.head.path.clone());
        tree.pos_at_near(
            &chain,
            node.node_type() == web_sys::Node::TEXT_NODE,
            offset,
            near.as_deref().unwrap_or(&[]),
        )
    }

    /// The selection in the DOM, if it is in the editor.
    fn read_dom_selection(&self) -> Option<Sel> {
        let selection = window().get_selection().ok()??;
        let anchor = selection.anchor_node()?;
        let focus = selection.focus_node()?;
        let anchor = self.dom_to_pos(&anchor, selection.anchor_offset())?;
        let head = self.dom_to_pos(&focus, selection.focus_offset())?;
        Some(Sel { anchor, head })
    }

    fn point(&self, pos: &Pos) -> Option<(web_sys::Node, u32)> {
        match self.tree.borrow().dom_point(pos)? {
            DomPoint::Text(n, o) | DomPoint::Element(n, o) => Some((n, o)),
        }
    }

    fn write_dom_selection(&self, sel: &Sel) {
        let (Some((an, ao)), Some((hn, ho))) = (self.point(&sel.anchor), self.point(&sel.head))
        else {
            return;
        };
        if let Ok(Some(selection)) = window().get_selection() {
            // Setting a selection the DOM already has costs a layout and a
            // selection change (a quarter of a keystroke, measured): skip it.
            let already = selection
                .anchor_node()
                .is_some_and(|n| n.is_same_node(Some(&an)))
                && selection.anchor_offset() == ao
                && selection
                    .focus_node()
                    .is_some_and(|n| n.is_same_node(Some(&hn)))
                && selection.focus_offset() == ho;
            if !already {
                let _ = selection.set_base_and_extent(&an, ao, &hn, ho);
            }
        }
    }

    fn has_focus(&self) -> bool {
        document()
            .active_element()
            .is_some_and(|a| a.is_same_node(Some(self.root.as_ref())))
    }

    /// The current selection: the DOM's when it is in the editor, else the last one seen.
    pub fn selection(&self) -> Option<Sel> {
        self.read_dom_selection()
            .or_else(|| self.sel.borrow().clone())
    }

    fn sticky_of<T: ReadTxn>(&self, txn: &T, sel: &Sel) -> Option<(StickyIndex, StickyIndex)> {
        let at = |p: &Pos, assoc| {
            let el = edit::element_at(txn, &self.fragment, &p.path).filter(edit::is_textblock)?;
            let off = p.off.min(edit::inline_len(txn, &el));
            Some(sticky_for(txn, &el, off, assoc))
        };
        let (a, h) = if sel.anchor <= sel.head {
            (Assoc::After, Assoc::Before)
        } else {
            (Assoc::Before, Assoc::After)
        };
        let (a, h) = if sel.is_empty() {
            (Assoc::After, Assoc::After)
        } else {
            (a, h)
        };
        Some((at(&sel.anchor, a)?, at(&sel.head, h)?))
    }

    /// Where a sticky index is now, as a position of the view (works
    /// inside a transaction that changed the document too).
    pub fn sticky_to_pos<T: ReadTxn>(&self, txn: &T, index: &StickyIndex) -> Option<Pos> {
        self.sticky_to_pos_in(txn, index, false)
    }

    /// [`Self::sticky_to_pos`] when the view is up to date with the
    /// document (not inside a transaction): blocks are found in the mirror
    /// by id, near the last selection, instead of by walking yrs' lists.
    fn drawn_pos<T: ReadTxn>(&self, txn: &T, index: &StickyIndex) -> Option<Pos> {
        self.sticky_to_pos_in(txn, index, true)
    }

    /// The path of a node of the document: from the mirror when `drawn`.
    fn locate<T: ReadTxn>(&self, txn: &T, node: &XmlOut, drawn: bool) -> Option<Path> {
        if drawn {
            let last = self.sel.borrow().clone();
            let near = near_paths(last.as_ref());
            if let Some(path) = self.tree.borrow().path_of_id(&branch_id(node), &near) {
                return Some(path);
            }
        }
        path_of(txn, &self.fragment, node)
    }

    fn sticky_to_pos_in<T: ReadTxn>(
        &self,
        txn: &T,
        index: &StickyIndex,
        drawn: bool,
    ) -> Option<Pos> {
        let offset = index.get_offset(txn)?;
        let out = XmlOut::try_from(offset.branch).ok()?;
        match &out {
            XmlOut::Text(t) => {
                let parent = Xml::parent(t)?;
                let XmlOut::Element(block) = &parent else {
                    return None;
                };
                let path = self.locate(txn, &parent, drawn)?;
                let me = branch_id(&out);
                let mut before = 0;
                for piece in edit::pieces(txn, block) {
                    let id = match &piece {
                        Piece::Text(x, _) => branch_id(&XmlOut::Text(x.clone())),
                        Piece::Elem(e) => branch_id(&XmlOut::Element(e.clone())),
                    };
                    if id == me {
                        break;
                    }
                    before += piece.width();
                }
                Some(Pos::new(path, before + offset.index))
            }
            XmlOut::Element(e) if edit::is_textblock(e) => {
                let path = self.locate(txn, &out, drawn)?;
                let off = edit::pieces(txn, e)
                    .iter()
                    .take(offset.index as usize)
                    .map(Piece::width)
                    .sum();
                Some(Pos::new(path, off))
            }
            XmlOut::Element(_) => {
                let path = self.locate(txn, &out, drawn)?;
                self.tree.borrow().pos_before_child(&path, offset.index)
            }
            XmlOut::Fragment(_) => self.tree.borrow().pos_before_child(&[], offset.index),
        }
    }

    /// Takes the DOM selection as the editor's selection (and its sticky
    /// indices), as the `selectionchange` handler does. The owner also
    /// calls it right before applying an update from elsewhere (the
    /// socket, another tab, the local copy): the caret may have moved (a
    /// click, an arrow key, a script) while `selectionchange` is still
    /// queued, and the selection put back after the update must be the
    /// one on screen, not the one before. Not from inside the update's
    /// observer: by then positions have moved. Cheap when nothing moved
    /// (a selection read and a mirror lookup, no layout); does nothing
    /// during an IME composition or when the selection is outside the
    /// editor.
    pub fn take_dom_selection(&self) {
        if self.composing.borrow().is_some() {
            return;
        }
        let Some(sel) = self.read_dom_selection() else {
            return;
        };
        if self.sel.borrow().as_ref() == Some(&sel) && self.sticky.borrow().is_some() {
            return;
        }
        let Ok(txn) = self.doc.try_transact() else {
            return;
        };
        let sticky = self.sticky_of(&txn, &sel);
        drop(txn);
        if self
            .stored
            .borrow()
            .as_ref()
            .is_some_and(|(p, _)| !sel.is_empty() || p != &sel.head)
        {
            *self.stored.borrow_mut() = None;
        }
        *self.sel.borrow_mut() = Some(sel);
        *self.sticky.borrow_mut() = sticky;
        (self.hooks.selection_changed)();
    }

    /// Puts the selection back where its sticky indices say (after a change).
    fn restore<T: ReadTxn>(&self, txn: &T, sticky: &(StickyIndex, StickyIndex), focus: bool) {
        let last = self.sel.borrow().clone();
        let anchor = self
            .drawn_pos(txn, &sticky.0)
            .or_else(|| last.as_ref().map(|s| s.anchor.clone()));
        let head = self
            .drawn_pos(txn, &sticky.1)
            .or_else(|| last.as_ref().map(|s| s.head.clone()));
        let (Some(anchor), Some(head)) = (anchor, head) else {
            return;
        };
        let sel = self.clamp(Sel { anchor, head });
        if focus || self.has_focus() {
            self.write_dom_selection(&sel);
        }
        *self.sel.borrow_mut() = Some(sel);
    }

    /// Keeps a selection inside text blocks that exist.
    fn clamp(&self, sel: Sel) -> Sel {
        let tree = self.tree.borrow();
        let fix = |p: Pos| match tree.inline(&p.path) {
            Some(inline) => Pos::new(p.path, p.off.min(inline.len())),
            None => tree
                .textblocks()
                .into_iter()
                .rfind(|t| t <= &p.path)
                .or_else(|| tree.textblocks().into_iter().next())
                .map(|t| Pos::new(t, 0))
                .unwrap_or(p),
        };
        Sel {
            anchor: fix(sel.anchor),
            head: fix(sel.head),
        }
    }

    /// The selection for presence, as Yjs relative positions (anchor, head).
    pub fn cursor(&self) -> Option<(Value, Value)> {
        let sticky = self.sticky.borrow().clone()?;
        let txn = self.doc.try_transact().ok()?;
        Some((
            crate::relpos::to_json(&txn, &sticky.0),
            crate::relpos::to_json(&txn, &sticky.1),
        ))
    }

    /// Where a remote cursor is: DOM points for its anchor and head.
    pub fn resolve_cursor(
        &self,
        anchor: &Value,
        head: &Value,
    ) -> Option<((web_sys::Node, u32), (web_sys::Node, u32))> {
        let (a, h) = (
            crate::relpos::from_json(anchor)?,
            crate::relpos::from_json(head)?,
        );
        let txn = self.doc.try_transact().ok()?;
        let (a, h) = (self.drawn_pos(&txn, &a)?, self.drawn_pos(&txn, &h)?);
        drop(txn);
        Some((self.point(&a)?, self.point(&h)?))
    }

    // -----------------------------------------------------------------
    // Changes

    fn on_events(&self, txn: &TransactionMut, events: &yrs::types::Events) {
        let hold = self.composing.borrow().as_ref().map(|c| c.block.clone());
        let patched = {
            let last = self.sel.borrow().clone();
            let near = near_paths(last.as_ref());
            let mut tree = self.tree.borrow_mut();
            dom::apply_events(&mut tree, txn, &self.fragment, events, hold.as_ref(), &near)
        };
        if patched.held
            && let Some(c) = self.composing.borrow_mut().as_mut()
        {
            // A remote change to the block under composition waits for
            // compositionend; the attribute says so (tests wait on it).
            c.held = true;
            let _ = self.root.set_attribute("data-ime-held", "");
        }
        let local = txn
            .origin()
            .is_some_and(|o| o.as_ref() == LOCAL_ORIGIN.as_bytes());
        if !local && self.composing.borrow().is_none() {
            let sticky = self.sticky.borrow().clone();
            if let Some(sticky) = sticky {
                self.restore(txn, &sticky, false);
            }
        }
        (self.hooks.changed)();
    }

    /// Runs one command in one transaction of this tab's origin, then
    /// puts the selection where the command says.
    fn run(
        &self,
        sel: Option<Sel>,
        f: impl FnOnce(&mut Edit, &Sel) -> Result<After, NotApplicable>,
    ) -> bool {
        if self.read_only.get() || self.composing.borrow().is_some() {
            return false;
        }
        let sel = match sel.or_else(|| self.selection()) {
            Some(s) => s,
            None => match self.first_caret() {
                Some(s) => s,
                None => return false,
            },
        };
        // The selection before the edit, for the undo step: the sticky
        // indices already taken for it when it has not moved since (a
        // keystroke after a keystroke), else new ones.
        let known = match (&*self.sel.borrow(), &*self.sticky.borrow()) {
            (Some(last), Some(sticky)) if *last == sel => Some(sticky.clone()),
            _ => None,
        };
        let before = match known {
            Some(sticky) => Some(sticky),
            None => {
                let Ok(txn) = self.doc.try_transact() else {
                    return false;
                };
                self.sticky_of(&txn, &sel)
            }
        };
        *self.before_edit.borrow_mut() = before;
        let mut next = None;
        let applied = {
            let Ok(mut txn) = self.doc.try_transact_mut_with(LOCAL_ORIGIN) else {
                return false;
            };
            let known = self.drawn_elements(&txn, [&sel.anchor.path, &sel.head.path]);
            let mut edit = Edit::with_known(&mut txn, self.fragment.clone(), known);
            match f(&mut edit, &sel) {
                Ok(after) => {
                    next = match after {
                        After::Keep => None,
                        After::Caret(c) => Some((caret_sticky(&txn, &c), caret_sticky(&txn, &c))),
                        After::Range(a, h) => {
                            Some((caret_sticky(&txn, &a), caret_sticky(&txn, &h)))
                        }
                    };
                    true
                }
                Err(NotApplicable) => false,
            }
        };
        if !applied {
            return false;
        }
        let sticky = next.or_else(|| self.sticky.borrow().clone());
        if let Some(sticky) = &sticky {
            let txn = self.doc.transact();
            self.restore(&txn, sticky, true);
        }
        *self.sticky.borrow_mut() = sticky;
        (self.hooks.local_change)();
        (self.hooks.selection_changed)();
        true
    }

    /// The yrs elements the mirror draws at `paths` (the mirror is up to
    /// date outside transactions), found by id, not by walking the fragment.
    fn drawn_elements<T: ReadTxn>(&self, txn: &T, paths: [&Path; 2]) -> Vec<(Path, XmlElementRef)> {
        let tree = self.tree.borrow();
        let mut out: Vec<(Path, XmlElementRef)> = Vec::new();
        for path in paths {
            if out.iter().any(|(p, _)| p == path) {
                continue;
            }
            let Some(branch) = tree
                .block(path)
                .and_then(|b| b.id.as_ref())
                .and_then(|id| id.get_branch(txn))
                .filter(|b| !b.is_deleted())
            else {
                continue;
            };
            if let Ok(XmlOut::Element(el)) = XmlOut::try_from(branch) {
                out.push((path.clone(), el));
            }
        }
        out
    }

    /// A caret at the document's start, making a paragraph if there is none.
    fn first_caret(&self) -> Option<Sel> {
        if self.read_only.get() {
            return None;
        }
        if self.fragment.len(&self.doc.transact()) == 0 {
            let mut txn = self.doc.transact_mut_with(LOCAL_ORIGIN);
            Edit::new(&mut txn, self.fragment.clone()).ensure_block();
        }
        let path = self.tree.borrow().textblocks().into_iter().next()?;
        Some(Sel::caret(Pos::new(path, 0)))
    }

    pub fn focus(&self) {
        let _ = self.root.focus();
    }

    fn before_input(&self, event: web_sys::Event) {
        let Some(input) = event.dyn_ref::<InputEvent>() else {
            return;
        };
        let kind = input.input_type();
        if self.read_only.get() {
            event.prevent_default();
            return;
        }
        if kind == "insertCompositionText"
            || kind == "insertFromComposition"
            || kind == "deleteCompositionText"
        {
            return; // the browser's, until compositionend
        }
        if self.composing.borrow().is_some() {
            return;
        }
        event.prevent_default();
        let target = self.target_range(input);
        match kind.as_str() {
            "insertText" | "insertReplacementText" => {
                let text = input
                    .data()
                    .or_else(|| {
                        input
                            .data_transfer()
                            .and_then(|d| d.get_data("text/plain").ok())
                    })
                    .unwrap_or_default();
                if !text.is_empty() {
                    let sel = if kind == "insertReplacementText" {
                        target
                    } else {
                        None
                    };
                    self.type_text(sel, &text);
                }
            }
            "insertParagraph" => {
                self.run(None, |e, s| e.split(s));
            }
            "insertLineBreak" => {
                self.run(None, |e, s| e.line_break(s));
            }
            "deleteContentBackward"
            | "deleteContentForward"
            | "deleteWordBackward"
            | "deleteWordForward"
            | "deleteSoftLineBackward"
            | "deleteSoftLineForward"
            | "deleteHardLineBackward"
            | "deleteHardLineForward"
            | "deleteContent"
            | "deleteEntireSoftLine"
            | "deleteByCut"
            | "deleteByDrag" => {
                self.delete(&kind, target);
            }
            "insertFromPaste" | "insertFromDrop" | "insertFromPasteAsQuotation" => {
                if let Some(data) = input.data_transfer() {
                    self.insert_transfer(&data, target);
                }
            }
            "historyUndo" => self.undo(),
            "historyRedo" => self.redo(),
            "formatBold" => self.toggle_mark(MarkType::Bold),
            "formatItalic" => self.toggle_mark(MarkType::Italic),
            "formatUnderline" => self.toggle_mark(MarkType::Underline),
            "formatStrikeThrough" => self.toggle_mark(MarkType::Strike),
            _ => {}
        }
    }

    /// The range the browser says an input applies to, in the model.
    fn target_range(&self, input: &InputEvent) -> Option<Sel> {
        let ranges = input.get_target_ranges();
        let range: web_sys::StaticRange = ranges.get(0).dyn_into().ok()?;
        let from = self.dom_to_pos(&range.start_container(), range.start_offset())?;
        let to = self.dom_to_pos(&range.end_container(), range.end_offset())?;
        Some(Sel {
            anchor: from,
            head: to,
        })
    }

    fn delete(&self, kind: &str, target: Option<Sel>) {
        let sel = self.selection();
        let collapsed = sel.as_ref().is_some_and(Sel::is_empty);
        let backward = kind.contains("Backward")
            || kind == "deleteContent"
            || kind == "deleteByCut"
            || kind == "deleteByDrag";
        if collapsed && (kind == "deleteContentBackward" || kind == "deleteContentForward") {
            // Characters (and joins at a block's edge) are the model's business.
            if backward {
                self.run(sel, |e, s| e.delete_backward(s));
            } else {
                self.run(sel, |e, s| e.delete_forward(s));
            }
            return;
        }
        // Words and lines: the browser knows where they end.
        let range = match (target, collapsed) {
            (Some(t), true) if !t.is_empty() => Some(t),
            _ => sel,
        };
        self.run(range, move |e, s| {
            if backward {
                e.delete_backward(s)
            } else {
                e.delete_forward(s)
            }
        });
    }

    /// Typing: the text, then any Markdown shortcut it completes.
    fn type_text(&self, sel: Option<Sel>, text: &str) {
        let stored = self.stored.borrow_mut().take().map(|(_, m)| m);
        let text_owned = text.to_owned();
        if !self.run(sel, move |e, s| e.insert_text(s, &text_owned, stored)) {
            return;
        }
        self.apply_rules(text);
    }

    fn apply_rules(&self, typed: &str) {
        let Some(sel) = self.sel.borrow().clone().filter(Sel::is_empty) else {
            return;
        };
        // From the mirror (up to date after the edit): finding the block
        // in yrs would walk the fragment's list on every keystroke.
        let (before, kind, parent) = {
            let tree = self.tree.borrow();
            let path = &sel.head.path;
            let Some(block) = tree.block(path) else {
                return;
            };
            let Body::Inline(inline) = &block.body else {
                return;
            };
            let parent = match path.len() {
                0 => None,
                1 => Some(NodeType::Doc),
                d => tree.block(&path[..d - 1]).and_then(|b| b.kind.node_type()),
            };
            (
                inline.text_before(sel.head.off),
                block.kind.node_type(),
                parent,
            )
        };
        if kind == Some(NodeType::Paragraph)
            && let Some((rule, prefix)) = rules::block_rule(&before, typed)
        {
            let in_item = parent == Some(NodeType::ListItem);
            if in_item && !matches!(rule, rules::BlockRule::Rule) {
                return;
            }
            let path = sel.head.path.clone();
            self.run(Some(sel), move |e, _| {
                let el = edit::element_at(e.txn, &e.root, &path).ok_or(NotApplicable)?;
                edit::delete_inline(e.txn, &el, 0, prefix);
                let at = Sel::caret(Pos::new(path.clone(), 0));
                match rule {
                    rules::BlockRule::Heading(l) => e.set_block_type(&at, BlockType::Heading(l)),
                    rules::BlockRule::CodeBlock => e.set_block_type(&at, BlockType::CodeBlock),
                    rules::BlockRule::Quote => e.toggle_blockquote(&at),
                    rules::BlockRule::Rule => e.insert_rule(&at),
                    rules::BlockRule::BulletList => e.toggle_list(&at, NodeType::BulletList),
                    rules::BlockRule::OrderedList(start) => {
                        let after = e.toggle_list(&at, NodeType::OrderedList)?;
                        if start != 1
                            && let After::Caret(c) | After::Range(c, _) = &after
                            && let Some(XmlOut::Element(item)) = Xml::parent(&c.el)
                            && let Some(XmlOut::Element(list)) = Xml::parent(&item)
                        {
                            list.insert_attribute(e.txn, "start", Any::from(start));
                        }
                        Ok(after)
                    }
                }
            });
            return;
        }
        if kind.is_some_and(NodeType::allows_marks)
            && let Some(rule) = rules::inline_rule(&before, typed)
        {
            let path = sel.head.path.clone();
            let caret = sel.head.off;
            let mark = rule.mark;
            self.run(Some(sel), move |e, _| {
                let el = edit::element_at(e.txn, &e.root, &path).ok_or(NotApplicable)?;
                edit::delete_inline(e.txn, &el, caret - rule.marker, caret);
                edit::delete_inline(e.txn, &el, rule.start, rule.start + rule.marker);
                let inner = rule.inner.encode_utf16().count() as u32;
                let range = Sel {
                    anchor: Pos::new(path.clone(), rule.start),
                    head: Pos::new(path.clone(), rule.start + inner),
                };
                e.set_mark(&range, mark, Some(Mark::of(mark)))?;
                Ok(After::Caret(Caret {
                    el,
                    off: rule.start + inner,
                }))
            });
            // Typing on after the closing marker does not continue the mark.
            if let Some(sel) = self.sel.borrow().clone() {
                let marks: Vec<Mark> = self
                    .marks_at(&sel.head)
                    .into_iter()
                    .filter(|m| m.mark_type() != Some(mark))
                    .collect();
                *self.stored.borrow_mut() = Some((sel.head, marks));
            }
        }
    }

    fn marks_at(&self, pos: &Pos) -> Vec<Mark> {
        let txn = self.doc.transact();
        edit::element_at(&txn, &self.fragment, &pos.path)
            .map(|el| edit::marks_at(&txn, &el, pos.off))
            .unwrap_or_default()
    }

    fn after_input(&self, event: web_sys::Event) {
        // Anything the browser did by itself outside a composition (an
        // input we did not prevent): bring the block back to the document.
        let composing = event
            .dyn_ref::<InputEvent>()
            .is_some_and(InputEvent::is_composing);
        if composing || self.composing.borrow().is_some() {
            return;
        }
        self.resync_from_dom();
    }

    /// Reads the selected block's text from the DOM and applies what
    /// differs from the document (the safety net for inputs the editor did
    /// not handle, and the end of a composition).
    fn resync_from_dom(&self) {
        let Some(sel) = self
            .read_dom_selection()
            .or_else(|| self.sel.borrow().clone())
        else {
            return;
        };
        let path = sel.head.path.clone();
        let Some(content) = self.tree.borrow().inline(&path).map(|i| i.content.clone()) else {
            return;
        };
        let dom_text = dom_text(&content);
        let shadow: Vec<u16> = {
            let txn = self.doc.transact();
            let Some(el) = edit::element_at(&txn, &self.fragment, &path) else {
                return;
            };
            edit::block_text(&txn, &el).encode_utf16().collect()
        };
        if dom_text == shadow {
            return;
        }
        self.apply_dom_splice(&path, &shadow, &dom_text, None);
    }

    /// Applies the difference between `shadow` (what the block held) and
    /// `now` (what the DOM shows) to the block at `path`; `start` maps the
    /// old offsets onto the document as it is now.
    fn apply_dom_splice(
        &self,
        path: &[u32],
        shadow: &[u16],
        now: &[u16],
        start: Option<(StickyIndex, u32)>,
    ) {
        let (prefix, suffix) = crate::diff::common_affixes(shadow, now);
        let delete = shadow.len() - prefix - suffix;
        let inserted: String =
            String::from_utf16_lossy(&now[prefix..now.len() - suffix]).replace('\u{FFFC}', "");
        let path = path.to_vec();
        let block_dom = self.tree.borrow().block(&path).map(|b| b.dom.clone());
        self.run(
            Some(Sel::caret(Pos::new(path.clone(), prefix as u32))),
            move |e, _| {
                let el = edit::element_at(e.txn, &e.root, &path).ok_or(NotApplicable)?;
                let len = edit::inline_len(e.txn, &el);
                // Where the old offset `prefix` is now.
                let mut at = prefix as u32;
                if let Some((sticky, then)) = &start
                    && let Some(off) = sticky.get_offset(e.txn)
                {
                    let base = locate_in_block(e.txn, &el, &off).unwrap_or(*then);
                    at = (base + prefix as u32).saturating_sub(*then);
                }
                let at = at.min(len);
                let end = (at + delete as u32).min(len);
                edit::delete_inline(e.txn, &el, at, end);
                let marks = edit::marks_at(e.txn, &el, at);
                let n = if inserted.is_empty() {
                    0
                } else {
                    edit::insert_inline(e.txn, &el, at, vec![Node::text(inserted.clone(), marks)])
                };
                Ok(After::Caret(Caret { el, off: at + n }))
            },
        );
        // The DOM of that block may differ in shape from the document's: redraw it.
        if let Some(dom) = block_dom {
            self.redraw_block(&dom);
        }
    }

    /// Redraws one text block's items from the document.
    fn redraw_block(&self, dom: &web_sys::Node) {
        let txn = self.doc.transact();
        let mut tree = self.tree.borrow_mut();
        let Some(path) = tree
            .textblocks()
            .into_iter()
            .find(|p| tree.block(p).is_some_and(|b| &b.dom == dom))
        else {
            return;
        };
        let Some(el) = edit::element_at(&txn, &self.fragment, &path) else {
            return;
        };
        if let Some(view::VBlock {
            body: Body::Inline(inline),
            ..
        }) = tree.block_mut(&path)
        {
            let content: web_sys::Element = inline.content.clone().unchecked_into();
            content.set_text_content(None);
            inline.items.clear();
            dom::patch_inline(&txn, &el, inline);
        }
        drop(tree);
        if let Some(sticky) = self.sticky.borrow().clone() {
            self.restore(&txn, &sticky, true);
        }
    }

    fn composition_start(&self) {
        let sel = self.read_dom_selection();
        if let Some(sel) = &sel
            && sel.anchor.path != sel.head.path
        {
            // A selection across blocks: delete it first, the IME then writes in one block.
            self.run(Some(sel.clone()), |e, s| {
                e.delete_selection(s).map(|p| {
                    let el = edit::element_at(e.txn, &e.root, &p.path);
                    el.map_or(After::Keep, |el| After::Caret(Caret { el, off: p.off }))
                })
            });
        }
        let Some(sel) = self.read_dom_selection() else {
            return;
        };
        let tree = self.tree.borrow();
        let Some(block) = tree.block(&sel.head.path).map(|b| b.dom.clone()) else {
            return;
        };
        drop(tree);
        let txn = self.doc.transact();
        let Some(el) = edit::element_at(&txn, &self.fragment, &sel.head.path) else {
            return;
        };
        let shadow: Vec<u16> = edit::block_text(&txn, &el).encode_utf16().collect();
        let (from, to) = (sel.from().off, sel.to().off);
        let start = Some(sticky_for(&txn, &el, from, Assoc::After));
        drop(txn);
        *self.composing.borrow_mut() = Some(Composition {
            block,
            shadow,
            from,
            to,
            start,
            held: false,
        });
    }

    fn composition_end(&self) {
        let Some(c) = self.composing.borrow_mut().take() else {
            return;
        };
        let _ = self.root.remove_attribute("data-ime-held");
        let tree = self.tree.borrow();
        let found = tree
            .textblocks()
            .into_iter()
            .find(|p| tree.block(p).is_some_and(|b| b.dom == c.block))
            .and_then(|p| tree.inline(&p).map(|i| (p, i.content.clone())));
        drop(tree);
        let Some((path, content)) = found else { return };
        let now = dom_text(&content);
        if now == c.shadow && !c.held {
            return;
        }
        let start = c.start.map(|s| (s, c.from));
        let _ = c.to;
        self.apply_dom_splice(&path, &c.shadow, &now, start);
    }

    fn key_down(&self, event: web_sys::Event) {
        let Some(key) = event.dyn_ref::<KeyboardEvent>() else {
            return;
        };
        if key.is_composing() {
            return;
        }
        let name = key.key();
        let modifier = key.ctrl_key() || key.meta_key();
        let shift = key.shift_key();
        let alt = key.alt_key();
        let handled = match (modifier, shift, alt, name.to_lowercase().as_str()) {
            (false, false, false, "tab") | (false, true, false, "tab") => {
                let sel = self.selection();
                let in_list = sel.as_ref().is_some_and(|s| self.format_of(s).in_list);
                let in_code = sel
                    .as_ref()
                    .is_some_and(|s| self.format_of(s).block == Some(BlockType::CodeBlock));
                if in_list {
                    if shift {
                        self.run(None, |e, s| e.outdent(s));
                    } else {
                        self.run(None, |e, s| e.indent(s));
                    }
                    true
                } else if in_code && !shift {
                    self.type_text(None, "\t");
                    true
                } else {
                    false
                }
            }
            (true, false, false, "b") => {
                self.toggle_mark(MarkType::Bold);
                true
            }
            (true, false, false, "i") => {
                self.toggle_mark(MarkType::Italic);
                true
            }
            (true, false, false, "u") => {
                self.toggle_mark(MarkType::Underline);
                true
            }
            (true, false, false, "e") => {
                self.toggle_mark(MarkType::Code);
                true
            }
            (true, true, false, "x") | (true, true, false, "s") => {
                self.toggle_mark(MarkType::Strike);
                true
            }
            (true, false, false, "k") => {
                (self.hooks.link_dialog)();
                true
            }
            (true, false, false, "z") => {
                self.undo();
                true
            }
            (true, true, false, "z") => {
                self.redo();
                true
            }
            (true, false, false, "y") if key.ctrl_key() => {
                self.redo();
                true
            }
            (true, true, false, "7") | (true, true, false, "&") => {
                self.toggle_list(NodeType::OrderedList);
                true
            }
            (true, true, false, "8") | (true, true, false, "*") => {
                self.toggle_list(NodeType::BulletList);
                true
            }
            (true, true, false, "9") | (true, true, false, "b") => {
                self.toggle_quote();
                true
            }
            (true, false, true, "0") => {
                self.set_block(BlockType::Paragraph);
                true
            }
            (true, false, true, d @ ("1" | "2" | "3" | "4" | "5" | "6")) => {
                self.set_block(BlockType::Heading(d.parse().unwrap_or(1)));
                true
            }
            (true, false, true, "c") => {
                self.set_block(BlockType::CodeBlock);
                true
            }
            _ => false,
        };
        if handled {
            event.prevent_default();
        }
    }

    fn click(&self, event: web_sys::Event) {
        // Ctrl/Cmd+click follows a link (in a new tab, without opener).
        let Some(mouse) = event.dyn_ref::<web_sys::MouseEvent>() else {
            return;
        };
        let Some(target) = event
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let Some(a) = target.closest("a[href]").ok().flatten() else {
            return;
        };
        if mouse.ctrl_key() || mouse.meta_key() || self.read_only.get() {
            event.prevent_default();
            if let Some(href) = a.get_attribute("href") {
                let _ = window().open_with_url_and_target_and_features(
                    &href,
                    "_blank",
                    "noopener,noreferrer",
                );
            }
        }
    }

    // -----------------------------------------------------------------
    // Clipboard

    fn paste(&self, event: web_sys::Event) {
        let Some(clip) = event.dyn_ref::<web_sys::ClipboardEvent>() else {
            return;
        };
        event.prevent_default();
        if self.read_only.get() {
            return;
        }
        if let Some(data) = clip.clipboard_data() {
            self.insert_transfer(&data, None);
        }
    }

    fn drag_start(&self) {
        *self.drag_source.borrow_mut() = self.read_dom_selection().filter(|s| !s.is_empty());
    }

    fn drop_event(&self, event: web_sys::Event) {
        // Drops of files or from other pages: text and HTML only, through the same allowlist.
        let Some(drag) = event.dyn_ref::<web_sys::DragEvent>() else {
            return;
        };
        event.prevent_default();
        let source = self.drag_source.borrow_mut().take();
        if self.read_only.get() {
            return;
        }
        let target = caret_range_from_point(drag.client_x(), drag.client_y())
            .and_then(|r| self.dom_to_pos(&r.start_container().ok()?, r.start_offset().ok()?))
            .map(Sel::caret);
        let Some(data) = drag.data_transfer() else {
            return;
        };
        // Dragged from here, without the copy modifier (Ctrl, or Alt on a
        // Mac): the text moves, in one step (one undo).
        let copy = drag.ctrl_key() || drag.alt_key();
        match (source, target) {
            (Some(source), Some(target)) if !copy => self.move_dragged(&data, source, target),
            (_, target) => self.insert_transfer(&data, target),
        }
    }

    /// Moves the dragged `source` to `target`: deletes it, then inserts
    /// what was dragged where `target` is after the deletion. A drop inside
    /// the dragged range changes nothing.
    fn move_dragged(&self, data: &web_sys::DataTransfer, source: Sel, target: Sel) {
        if source.from() <= &target.head && &target.head <= source.to() {
            return;
        }
        let nodes = self.transfer_nodes(data);
        if nodes.is_empty() {
            return;
        }
        self.run(Some(source), move |e, s| {
            let (mark, _) = self.sticky_of(&*e.txn, &target).ok_or(NotApplicable)?;
            e.delete_selection(s)?;
            let at = self.sticky_to_pos(&*e.txn, &mark).ok_or(NotApplicable)?;
            e.insert_nodes(&Sel::caret(at), nodes)
        });
    }

    fn insert_transfer(&self, data: &web_sys::DataTransfer, at: Option<Sel>) {
        let nodes = self.transfer_nodes(data);
        if nodes.is_empty() {
            return;
        }
        self.run(at, move |e, s| e.insert_nodes(s, nodes));
    }

    /// What a paste or drop carries, as the schema's nodes.
    fn transfer_nodes(&self, data: &web_sys::DataTransfer) -> Vec<Node> {
        let html = data.get_data("text/html").unwrap_or_default();
        let text = data.get_data("text/plain").unwrap_or_default();
        let in_code = self
            .selection()
            .is_some_and(|s| self.format_of(&s).block == Some(BlockType::CodeBlock));
        if !html.trim().is_empty() && !in_code {
            clipboard::parse_html(&html)
        } else if text.is_empty() {
            Vec::new()
        } else if in_code {
            vec![Node::text(text.replace("\r\n", "\n"), Vec::new())]
        } else if !text.contains('\n') {
            vec![Node::text(text, Vec::new())]
        } else {
            quire_protocol::rich::text::paragraphs(&text)
        }
    }

    fn copy(&self, event: web_sys::Event, cut: bool) {
        let Some(clip) = event.dyn_ref::<web_sys::ClipboardEvent>() else {
            return;
        };
        let Some(sel) = self.read_dom_selection().filter(|s| !s.is_empty()) else {
            return;
        };
        let nodes = {
            let txn = self.doc.transact();
            selected_nodes(&txn, &self.fragment, &sel)
        };
        if let Some(data) = clip.clipboard_data() {
            event.prevent_default();
            let _ = data.set_data("text/html", &clipboard::to_html(&nodes));
            let _ = data.set_data("text/plain", &clipboard::to_text(&nodes));
        }
        if cut && !self.read_only.get() {
            self.run(Some(sel), |e, s| {
                let p = e.delete_selection(s)?;
                let el = edit::element_at(e.txn, &e.root, &p.path).ok_or(NotApplicable)?;
                Ok(After::Caret(Caret { el, off: p.off }))
            });
        }
    }

    // -----------------------------------------------------------------
    // Commands for the toolbar

    pub fn toggle_mark(&self, mark: MarkType) {
        let Some(sel) = self.selection() else { return };
        if sel.is_empty() {
            if self.read_only.get() || self.format_of(&sel).block == Some(BlockType::CodeBlock) {
                return;
            }
            // No selection: the mark applies to what is typed next.
            let mut marks = match self.stored.borrow().as_ref() {
                Some((p, m)) if p == &sel.head => m.clone(),
                _ => self.marks_at(&sel.head),
            };
            if marks.iter().any(|m| m.mark_type() == Some(mark)) {
                marks.retain(|m| m.mark_type() != Some(mark));
            } else if mark == MarkType::Code {
                marks = vec![Mark::of(mark)];
            } else {
                marks.retain(|m| m.mark_type() != Some(MarkType::Code));
                marks.push(Mark::of(mark));
            }
            *self.stored.borrow_mut() = Some((sel.head.clone(), marks));
            (self.hooks.selection_changed)();
            return;
        }
        self.run(Some(sel), |e, s| e.toggle_mark(s, mark));
    }

    pub fn set_block(&self, block: BlockType) {
        self.run(None, |e, s| e.set_block_type(s, block));
    }

    pub fn toggle_list(&self, list: NodeType) {
        self.run(None, |e, s| e.toggle_list(s, list));
    }

    pub fn toggle_quote(&self) {
        self.run(None, |e, s| e.toggle_blockquote(s));
    }

    pub fn insert_rule(&self) {
        self.run(None, |e, s| e.insert_rule(s));
    }

    pub fn indent(&self) {
        self.run(None, |e, s| e.indent(s));
    }

    pub fn outdent(&self) {
        self.run(None, |e, s| e.outdent(s));
    }

    /// Sets the link on the selection (or the link the caret is in); `None` removes it.
    pub fn set_link(&self, href: Option<String>) {
        let sel = self.sel.borrow().clone();
        self.run(sel, move |e, s| e.set_link(s, href.as_deref()));
        self.focus();
    }

    pub fn undo(&self) {
        self.history(true);
    }

    pub fn redo(&self) {
        self.history(false);
    }

    fn history(&self, undo: bool) {
        if self.read_only.get() || self.composing.borrow().is_some() {
            return;
        }
        *self.popped.borrow_mut() = None;
        let done = {
            let mut manager = self.undo.borrow_mut();
            if undo {
                manager.undo_blocking()
            } else {
                manager.redo_blocking()
            }
        };
        if !done {
            return;
        }
        let target = self
            .popped
            .borrow_mut()
            .take()
            .or_else(|| self.sticky.borrow().clone());
        if let Some(sticky) = target {
            let txn = self.doc.transact();
            self.restore(&txn, &sticky, true);
            let sel = self.sel.borrow().clone();
            if let Some(sel) = sel {
                *self.sticky.borrow_mut() = self.sticky_of(&txn, &sel);
            }
        }
        (self.hooks.local_change)();
        (self.hooks.selection_changed)();
    }

    /// The toolbar's state for the current selection.
    pub fn format(&self) -> Format {
        let sel = self.sel.borrow().clone();
        match sel {
            Some(sel) => self.format_of(&sel),
            None => Format::default(),
        }
    }

    fn format_of(&self, sel: &Sel) -> Format {
        let tree = self.tree.borrow();
        let mut format = Format::default();
        // The block type and containers of the head.
        let head = &sel.head.path;
        if let Some(block) = tree.block(head) {
            format.block = match block.kind.node_type() {
                Some(NodeType::Paragraph) => Some(BlockType::Paragraph),
                Some(NodeType::CodeBlock) => Some(BlockType::CodeBlock),
                Some(NodeType::Heading) => {
                    let level = block
                        .dom
                        .dyn_ref::<web_sys::Element>()
                        .and_then(|e| e.tag_name().get(1..).and_then(|d| d.parse().ok()))
                        .unwrap_or(1);
                    Some(BlockType::Heading(level))
                }
                _ => None,
            };
        }
        for depth in 1..head.len() {
            let Some(b) = tree.block(&head[..depth]) else {
                continue;
            };
            match b.kind.node_type() {
                Some(NodeType::Blockquote) => format.quote = true,
                Some(k @ (NodeType::BulletList | NodeType::OrderedList)) => {
                    format.list = Some(k);
                    format.in_list = true;
                    format.can_indent = head.get(depth).is_some_and(|&i| i > 0);
                }
                _ => {}
            }
        }
        // Marks: at a caret, what typing would get; over a selection, what all of it has.
        let marks_of_item = |kind: &ItemKind| match kind {
            ItemKind::Text { marks, .. } => Some(marks.clone()),
            _ => None,
        };
        let mut all: Option<Vec<Mark>> = None;
        if sel.is_empty() {
            let stored = self.stored.borrow();
            all = match stored.as_ref() {
                Some((p, m)) if p == &sel.head => Some(m.clone()),
                _ => tree.inline(head).and_then(|inline| {
                    let (i, _) = inline.item_at(sel.head.off)?;
                    marks_of_item(&inline.items[i].kind)
                }),
            };
            if let Some(inline) = tree.inline(head)
                && let Some((i, start)) = inline.item_at(sel.head.off)
                && let Some(marks) = marks_of_item(&inline.items[i].kind)
                && (sel.head.off < start + inline.items[i].len || sel.head.off > start)
            {
                format.link = marks
                    .iter()
                    .find(|m| m.mark_type() == Some(MarkType::Link))
                    .and_then(|m| m.href().map(str::to_owned));
            }
        } else {
            let (from, to) = (sel.from(), sel.to());
            for path in tree
                .textblocks()
                .into_iter()
                .filter(|p| p >= &from.path && p <= &to.path)
            {
                let Some(inline) = tree.inline(&path) else {
                    continue;
                };
                let (f, t) = (
                    if path == from.path { from.off } else { 0 },
                    if path == to.path {
                        to.off
                    } else {
                        inline.len()
                    },
                );
                let mut at = 0;
                for item in &inline.items {
                    let (s, e) = (at, at + item.len);
                    at = e;
                    if e <= f || s >= t {
                        continue;
                    }
                    if let Some(marks) = marks_of_item(&item.kind) {
                        if format.link.is_none() {
                            format.link = marks
                                .iter()
                                .find(|m| m.mark_type() == Some(MarkType::Link))
                                .and_then(|m| m.href().map(str::to_owned));
                        }
                        all = Some(match all {
                            None => marks,
                            Some(prev) => prev
                                .into_iter()
                                .filter(|m| marks.iter().any(|x| x.kind == m.kind))
                                .collect(),
                        });
                    }
                }
            }
        }
        format.marks = all
            .unwrap_or_default()
            .iter()
            .filter_map(Mark::mark_type)
            .collect();
        format
    }

    /// The document's text as the editor shows it (one line per text block).
    pub fn text(&self) -> String {
        quire_protocol::rich::text::plain_text(&self.doc.transact())
    }
}

/// `document.caretRangeFromPoint` (Chromium, WebKit): where a drop lands.
fn caret_range_from_point(x: i32, y: i32) -> Option<web_sys::Range> {
    let doc = document();
    let f = js_sys::Reflect::get(&doc, &"caretRangeFromPoint".into()).ok()?;
    let f: js_sys::Function = f.dyn_into().ok()?;
    f.call2(&doc, &x.into(), &y.into()).ok()?.dyn_into().ok()
}

fn caret_sticky<T: ReadTxn>(txn: &T, caret: &Caret) -> StickyIndex {
    sticky_for(txn, &caret.el, caret.off, Assoc::After)
}

/// Where an offset of a branch inside a text block is, as an offset of the block.
fn locate_in_block<T: ReadTxn>(
    txn: &T,
    block: &XmlElementRef,
    offset: &yrs::Offset,
) -> Option<u32> {
    let target = XmlOut::try_from(offset.branch).ok()?;
    let target_id = branch_id(&target);
    if target_id == branch_id(&XmlOut::Element(block.clone())) {
        return Some(
            edit::pieces(txn, block)
                .iter()
                .take(offset.index as usize)
                .map(Piece::width)
                .sum(),
        );
    }
    let mut before = 0;
    for piece in edit::pieces(txn, block) {
        if let Piece::Text(t, _) = &piece
            && branch_id(&XmlOut::Text(t.clone())) == target_id
        {
            return Some(before + offset.index);
        }
        before += piece.width();
    }
    None
}

/// The text a block's DOM shows (breaks and other inline nodes as U+FFFC),
/// in UTF-16 units.
fn dom_text(content: &web_sys::Node) -> Vec<u16> {
    let mut out = Vec::new();
    fn walk(node: &web_sys::Node, out: &mut Vec<u16>) {
        let children = node.child_nodes();
        for i in 0..children.length() {
            let Some(child) = children.item(i) else {
                continue;
            };
            match child.node_type() {
                web_sys::Node::TEXT_NODE => {
                    out.extend(child.text_content().unwrap_or_default().encode_utf16());
                }
                web_sys::Node::ELEMENT_NODE => {
                    let el: &web_sys::Element = child.unchecked_ref();
                    let tag = el.tag_name().to_ascii_lowercase();
                    if tag == "br" {
                        if el.class_name() != "trailing-break" {
                            out.push(0xFFFC);
                        }
                    } else if el.class_name() == "unknown-inline" {
                        out.push(0xFFFC);
                    } else {
                        walk(&child, out);
                    }
                }
                _ => {}
            }
        }
    }
    walk(content, &mut out);
    out
}

/// The selected content as schema nodes (for copy): each text block with
/// the selected part of its content, list items kept in their lists.
pub fn selected_nodes<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, sel: &Sel) -> Vec<Node> {
    let (from, to) = (sel.from(), sel.to());
    let mut out: Vec<Node> = Vec::new();
    for path in edit::textblocks_between(txn, root, &from.path, &to.path) {
        let Some(el) = edit::element_at(txn, root, &path) else {
            continue;
        };
        let len = edit::inline_len(txn, &el);
        let f = if path == from.path { from.off } else { 0 };
        let t = if path == to.path {
            to.off.min(len)
        } else {
            len
        };
        let mut block = json::read_element(txn, &el);
        block.content = edit::slice_inline(txn, &el, f, t);
        // Inside a list item: keep the list around it.
        let list = (path.len() >= 3)
            .then(|| edit::element_at(txn, root, &path[..path.len() - 2]))
            .flatten()
            .and_then(|l| edit::kind_of(&l).filter(|k| k.is_list()));
        match list {
            Some(kind) => {
                let item = Node::new(NodeType::ListItem, vec![Node::paragraph(block.content)]);
                match out.last_mut() {
                    Some(last) if last.node_type() == Some(kind) => last.content.push(item),
                    _ => out.push(Node::new(kind, vec![item])),
                }
            }
            None => out.push(block),
        }
    }
    if out.len() == 1 && out[0].node_type() == Some(NodeType::Paragraph) {
        // Part of one paragraph copies as inline content.
        return std::mem::take(&mut out[0].content);
    }
    out
}

impl Drop for RichEditor {
    fn drop(&mut self) {
        self.listeners.borrow_mut().clear();
        self.fragment.unobserve_deep(OBSERVER_KEY);
    }
}
