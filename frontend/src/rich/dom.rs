//! Drawing the document into the contenteditable root, and patching the
//! drawing from yrs events, local and remote alike: a keystroke changes
//! the text node of one run; a change to a block's inline content
//! redraws that block's items only; blocks added or removed are added or
//! removed, nothing else is touched. Nothing is ever redrawn whole except
//! at start-up.
//!
//! Top-level blocks sit in chunks (`div.chunk`, [`CHUNK`] blocks each at
//! start-up, split when one grows past twice that) and only chunks have
//! `content-visibility: auto`: the frame after a keystroke then lays out a
//! hundred chunk boxes instead of every top-level block (thousands in a
//! big document). Chunks exist only in the DOM; the mirror's paths count
//! blocks, and [`top_index`] maps a DOM point on a chunk or the root back
//! to them.
//!
//! Semantic HTML: `p`, `h1`–`h6`, `ul`/`ol` > `li`, `blockquote`,
//! `pre > code`, `hr`, `br`, `strong`, `em`, `u`, `s`, `code`, `a href`
//! (only for http, https and mailto links, with `target=_blank` and
//! `rel=noopener noreferrer nofollow`). Unknown nodes are shown as their
//! text in a non-editable box; unknown marks as a plain `span`.

use quire_protocol::rich::json::{self, Mark};
use quire_protocol::rich::schema::clickable_href;
use quire_protocol::rich::{MarkType, NodeType};
use wasm_bindgen::JsCast;
use web_sys::{Element, Node};
use yrs::types::text::YChange;
use yrs::types::{Change, Event, Events, PathSegment};
use yrs::{
    Any, BranchID, Out, ReadTxn, Text, Xml, XmlElementRef, XmlFragment, XmlFragmentRef, XmlOut,
};

use super::edit::{Path, heading_level};
use super::view::{Body, ItemKind, Kind, Tree, VBlock, VInline, VItem};
use crate::browser::document;
use crate::diff::NodeEdit;

pub type DomTree = Tree<Node>;
pub type DomBlock = VBlock<Node>;

fn el(tag: &str) -> Element {
    document().create_element(tag).expect("create an element")
}

/// Top-level blocks per chunk at start-up (a chunk is split in two when
/// it grows past twice this).
pub const CHUNK: usize = 64;
pub const CHUNK_CLASS: &str = "chunk";

fn new_chunk() -> Element {
    let chunk = el("div");
    chunk.set_class_name(CHUNK_CLASS);
    chunk
}

/// Whether `node` is one of the root's chunks.
pub fn is_chunk(node: &Node) -> bool {
    node.dyn_ref::<Element>()
        .is_some_and(|e| e.tag_name() == "DIV" && e.class_name() == CHUNK_CLASS)
}

/// The index of the top-level block drawn by `dom` (the end when `None`,
/// or when the mirror does not know it).
pub fn top_index(tree: &DomTree, dom: Option<&Node>) -> u32 {
    dom.and_then(|d| tree.blocks.iter().position(|b| &b.dom == d))
        .unwrap_or(tree.blocks.len()) as u32
}

/// The top-level block a DOM point `(node, offset)` on the root or on a
/// chunk stands before (`node` is the root or a chunk; `offset` a child index).
pub fn top_index_at(tree: &DomTree, node: &Node, offset: u32) -> u32 {
    let child = node.child_nodes().item(offset);
    let block = match child {
        Some(c) if is_chunk(&c) => c.first_child(),
        other => other,
    };
    match block {
        Some(b) => top_index(tree, Some(&b)),
        // After the last child: the end of this chunk (the next chunk's first block).
        None if is_chunk(node) => match node.next_sibling().and_then(|n| n.first_child()) {
            Some(b) => top_index(tree, Some(&b)),
            None => tree.blocks.len() as u32,
        },
        None => tree.blocks.len() as u32,
    }
}

/// Inserts top-level block `dom` before the block `before` (at the end
/// of the document when `None`; `after` is the block before it), in that
/// block's chunk (at the end, a full chunk starts the next one); splits
/// the chunk when it is past twice [`CHUNK`]. The half moved out is the
/// one without `keep` (the block being composed in, else the selection):
/// moving a node drops a selection or composition inside it.
fn insert_top(
    root: &Node,
    dom: &Node,
    before: Option<&Node>,
    after: Option<&Node>,
    keep: Option<&Node>,
) {
    let chunk = match (
        before.and_then(Node::parent_node),
        after.and_then(Node::parent_node),
    ) {
        (Some(chunk), _) if is_chunk(&chunk) => chunk,
        // At the end of a chunk: a full one (blocks added at the end of
        // the document, or a document arriving whole) starts the next.
        (None, Some(chunk))
            if is_chunk(&chunk) && (chunk.child_nodes().length() as usize) < CHUNK =>
        {
            chunk
        }
        (None, Some(full)) if is_chunk(&full) => {
            let chunk: Node = new_chunk().into();
            let _ = root.insert_before(&chunk, full.next_sibling().as_ref());
            chunk
        }
        _ => {
            let chunk: Node = new_chunk().into();
            let _ = root.append_child(&chunk);
            chunk
        }
    };
    let before = before.filter(|b| b.parent_node().as_ref() == Some(&chunk));
    let _ = chunk.insert_before(dom, before);
    let children = chunk.child_nodes();
    let len = children.length() as usize;
    if len <= 2 * CHUNK {
        return;
    }
    let nodes: Vec<Node> = (0..len as u32).filter_map(|i| children.item(i)).collect();
    let (first, second) = nodes.split_at(len / 2);
    let holds_keep = |half: &[Node]| keep.is_some_and(|k| half.iter().any(|n| n.contains(Some(k))));
    let fresh: Node = new_chunk().into();
    if holds_keep(second) {
        let _ = root.insert_before(&fresh, Some(&chunk));
        for n in first {
            let _ = fresh.append_child(n);
        }
    } else {
        let _ = root.insert_before(&fresh, chunk.next_sibling().as_ref());
        for n in second {
            let _ = fresh.append_child(n);
        }
    }
}

/// Removes top-level block `dom`, and its chunk when that is left empty.
fn remove_top(dom: &Node) {
    let Some(chunk) = dom.parent_node() else {
        return;
    };
    let _ = chunk.remove_child(dom);
    if is_chunk(&chunk)
        && !chunk.has_child_nodes()
        && let Some(root) = chunk.parent_node()
    {
        let _ = root.remove_child(&chunk);
    }
}

/// The items of a text block, read from yrs.
pub fn read_items<T: ReadTxn>(txn: &T, block: &XmlElementRef) -> Vec<(ItemKind, u32)> {
    let mut out = Vec::new();
    for child in block.children(txn) {
        match child {
            XmlOut::Text(t) => {
                for d in t.diff(txn, YChange::identity) {
                    if let Out::Any(Any::String(s)) = &d.insert {
                        let len = s.encode_utf16().count() as u32;
                        if len > 0 {
                            out.push((
                                ItemKind::Text {
                                    text: s.to_string(),
                                    marks: json::marks_of(d.attributes.as_deref()),
                                },
                                len,
                            ));
                        }
                    }
                }
            }
            XmlOut::Element(e) => {
                if e.tag().as_ref() == NodeType::HardBreak.name() {
                    out.push((ItemKind::Break, 1));
                } else {
                    out.push((
                        ItemKind::Other(json::read_element(txn, &e).text_content()),
                        1,
                    ));
                }
            }
            XmlOut::Fragment(_) => {}
        }
    }
    out
}

fn mark_element(mark: &Mark) -> Element {
    match mark.mark_type() {
        Some(MarkType::Bold) => el("strong"),
        Some(MarkType::Italic) => el("em"),
        Some(MarkType::Underline) => el("u"),
        Some(MarkType::Strike) => el("s"),
        Some(MarkType::Code) => el("code"),
        Some(MarkType::Link) => match mark.href().and_then(clickable_href) {
            Some(href) => {
                let a = el("a");
                let _ = a.set_attribute("href", href);
                let _ = a.set_attribute("target", "_blank");
                let _ = a.set_attribute("rel", "noopener noreferrer nofollow");
                let _ = a.set_attribute("title", href);
                a
            }
            None => {
                let span = el("span");
                span.set_class_name("link-inert");
                span
            }
        },
        None => {
            let span = el("span");
            let _ = span.set_attribute("data-mark", &mark.kind);
            span
        }
    }
}

/// Creates the DOM of one item.
fn item_dom(kind: &ItemKind, len: u32) -> VItem<Node> {
    match kind {
        ItemKind::Text { text, marks } => {
            let node: Node = document().create_text_node(text).into();
            let mut outer = node.clone();
            for mark in marks.iter().rev() {
                let wrapper = mark_element(mark);
                let _ = wrapper.append_child(&outer);
                outer = wrapper.into();
            }
            VItem {
                kind: kind.clone(),
                len,
                dom: outer,
                text: Some(node),
            }
        }
        ItemKind::Break => VItem {
            kind: ItemKind::Break,
            len: 1,
            dom: el("br").into(),
            text: None,
        },
        ItemKind::Other(label) => {
            let span = el("span");
            span.set_class_name("unknown-inline");
            let _ = span.set_attribute("contenteditable", "false");
            span.set_text_content(Some(if label.is_empty() { "◆" } else { label }));
            VItem {
                kind: kind.clone(),
                len: 1,
                dom: span.into(),
                text: None,
            }
        }
    }
}

/// An empty block, or one ending in a break, needs a last `<br>` to have a line to show.
fn needs_trailing_break(items: &[VItem<Node>]) -> bool {
    items
        .last()
        .is_none_or(|i| matches!(i.kind, ItemKind::Break))
}

fn trailing_break() -> Node {
    let br = el("br");
    br.set_class_name("trailing-break");
    br.into()
}

/// Fills `content` with the items of `block`.
fn build_inline<T: ReadTxn>(txn: &T, block: &XmlElementRef, content: &Element) -> VInline<Node> {
    content.set_text_content(None);
    let items: Vec<VItem<Node>> = read_items(txn, block)
        .iter()
        .map(|(k, l)| item_dom(k, *l))
        .collect();
    let fragment = document().create_document_fragment();
    for item in &items {
        let _ = fragment.append_child(&item.dom);
    }
    if needs_trailing_break(&items) {
        let _ = fragment.append_child(&trailing_break());
    }
    let _ = content.append_child(&fragment);
    VInline {
        content: content.clone().into(),
        items,
    }
}

/// Changes a text node's data from `old` to `new` by an in-place edit
/// (`diff::node_edit`): the selection in it moves with the text, so after
/// typing the caret already is where the editor puts it and restoring it
/// is skipped. Setting the whole data dropped the caret to offset 0, and
/// putting it back (`setBaseAndExtent`) forced a layout of the document:
/// more than half of a keystroke in a 1 MB document.
fn set_text_in_place(node: &Node, old: &str, new: &str) {
    let old16: Vec<u16> = old.encode_utf16().collect();
    let new16: Vec<u16> = new.encode_utf16().collect();
    let Some(data) = node.dyn_ref::<web_sys::CharacterData>() else {
        return;
    };
    // Only when the node holds what the mirror says (else start again from the model).
    let edit = (data.data() == old)
        .then(|| crate::diff::node_edit(&old16, &new16))
        .flatten();
    let done = match edit {
        Some(NodeEdit::Replace { at, delete, insert }) => {
            data.replace_data(at, delete, &insert).is_ok()
        }
        Some(NodeEdit::Rewrite { at, insert, delete }) => {
            data.insert_data(at, &insert).is_ok()
                && data
                    .delete_data(at + crate::diff::utf16_len(&insert), delete)
                    .is_ok()
        }
        None => false,
    };
    if !done {
        node.set_text_content(Some(new));
    }
}

/// Brings a block's items up to date with yrs, touching as little DOM as
/// it can: when only the text of runs changed (typing, deleting inside a
/// run), just those text nodes change.
pub fn patch_inline<T: ReadTxn>(txn: &T, block: &XmlElementRef, inline: &mut VInline<Node>) {
    let fresh = read_items(txn, block);
    let same_shape = fresh.len() == inline.items.len()
        && fresh
            .iter()
            .zip(&inline.items)
            .all(|((k, _), old)| match (k, &old.kind) {
                (ItemKind::Text { marks: a, .. }, ItemKind::Text { marks: b, .. }) => a == b,
                (a, b) => a == b,
            });
    if same_shape {
        for ((kind, len), item) in fresh.into_iter().zip(inline.items.iter_mut()) {
            if let (ItemKind::Text { text, .. }, ItemKind::Text { text: old, .. }) =
                (&kind, &item.kind)
                && text != old
                && let Some(node) = &item.text
            {
                set_text_in_place(node, old, text);
            }
            item.kind = kind;
            item.len = len;
        }
        return;
    }
    // Keep the common leading and trailing items, redraw the middle.
    let content: Element = inline.content.clone().unchecked_into();
    let same = |(k, _): &(ItemKind, u32), old: &VItem<Node>| k == &old.kind;
    let lead = fresh
        .iter()
        .zip(&inline.items)
        .take_while(|(f, o)| same(f, o))
        .count();
    let max_tail = fresh.len().min(inline.items.len()) - lead;
    let tail = fresh
        .iter()
        .rev()
        .zip(inline.items.iter().rev())
        .take(max_tail)
        .take_while(|(f, o)| same(f, o))
        .count();
    let old_end = inline.items.len() - tail;
    let before: Option<Node> = inline
        .items
        .get(old_end)
        .map(|i| i.dom.clone())
        .or_else(|| {
            content.last_child().filter(|n| {
                n.dyn_ref::<Element>()
                    .is_some_and(|e| e.class_name() == "trailing-break")
            })
        });
    for item in inline.items.drain(lead..old_end) {
        let _ = content.remove_child(&item.dom);
    }
    let new_items: Vec<VItem<Node>> = fresh[lead..fresh.len() - tail]
        .iter()
        .map(|(k, l)| item_dom(k, *l))
        .collect();
    for item in &new_items {
        let _ = content.insert_before(&item.dom, before.as_ref());
    }
    inline.items.splice(lead..lead, new_items);
    // The trailing break follows whether the block needs it.
    let last = content.last_child();
    let has_trailing = last
        .as_ref()
        .and_then(|n| n.dyn_ref::<Element>())
        .is_some_and(|e| e.class_name() == "trailing-break");
    match (needs_trailing_break(&inline.items), has_trailing) {
        (true, false) => {
            let _ = content.append_child(&trailing_break());
        }
        (false, true) => {
            if let Some(n) = last {
                let _ = content.remove_child(&n);
            }
        }
        _ => {}
    }
}

/// Creates the DOM of one element and everything inside it.
pub fn build_block<T: ReadTxn>(txn: &T, node: &XmlOut) -> DomBlock {
    let XmlOut::Element(element) = node else {
        // Text directly in a container (not ProseMirror's shape): show it.
        let div = el("div");
        div.set_class_name("unknown-node");
        let _ = div.set_attribute("contenteditable", "false");
        if let XmlOut::Text(t) = node {
            let text: String = json::read_text(txn, t)
                .iter()
                .map(|n| n.text_content())
                .collect();
            div.set_text_content(Some(&text));
        }
        return VBlock {
            kind: Kind::Unknown("text".into()),
            id: None,
            dom: div.into(),
            body: Body::Leaf,
        };
    };
    let tag = element.tag().to_string();
    let Some(kind) = NodeType::from_name(&tag).filter(|k| k.is_block() || *k == NodeType::ListItem)
    else {
        let div = el("div");
        div.set_class_name("unknown-node");
        let _ = div.set_attribute("contenteditable", "false");
        let _ = div.set_attribute("data-node", &tag);
        let text = json::read_element(txn, element).text_content();
        div.set_text_content(Some(if text.is_empty() { &tag } else { &text }));
        let _ = div.set_attribute(
            "title",
            &format!("“{tag}” (made by another app): kept as it is"),
        );
        return VBlock {
            kind: Kind::Unknown(tag),
            id: Some(element_id(element)),
            dom: div.into(),
            body: Body::Leaf,
        };
    };
    let kind_v = Kind::Known(kind);
    match kind {
        NodeType::Paragraph | NodeType::Heading => {
            let name = if kind == NodeType::Heading {
                format!("h{}", heading_level(txn, element))
            } else {
                "p".into()
            };
            let dom = el(&name);
            let inline = build_inline(txn, element, &dom);
            VBlock {
                kind: kind_v,
                id: Some(element_id(element)),
                dom: dom.into(),
                body: Body::Inline(inline),
            }
        }
        NodeType::CodeBlock => {
            let pre = el("pre");
            let code = el("code");
            if let Some(Out::Any(Any::String(lang))) = element.get_attribute(txn, "language") {
                let _ = pre.set_attribute("data-language", &lang);
            }
            let _ = pre.append_child(&code);
            let inline = build_inline(txn, element, &code);
            VBlock {
                kind: kind_v,
                id: Some(element_id(element)),
                dom: pre.into(),
                body: Body::Inline(inline),
            }
        }
        NodeType::HorizontalRule => {
            let hr = el("hr");
            let _ = hr.set_attribute("contenteditable", "false");
            VBlock {
                kind: kind_v,
                id: Some(element_id(element)),
                dom: hr.into(),
                body: Body::Leaf,
            }
        }
        _ => {
            let name = match kind {
                NodeType::Blockquote => "blockquote",
                NodeType::BulletList => "ul",
                NodeType::OrderedList => "ol",
                _ => "li",
            };
            let dom = el(name);
            if kind == NodeType::OrderedList
                && let Some(Out::Any(Any::Number(n))) = element.get_attribute(txn, "start")
                && let Some(start) = n.as_i64()
                && start != 1
            {
                let _ = dom.set_attribute("start", &start.to_string());
            }
            let children: Vec<DomBlock> = element
                .children(txn)
                .map(|c| build_block(txn, &c))
                .collect();
            for c in &children {
                let _ = dom.append_child(&c.dom);
            }
            VBlock {
                kind: kind_v,
                id: Some(element_id(element)),
                dom: dom.into(),
                body: Body::Blocks(children),
            }
        }
    }
}

/// The id of a yrs element (what [`VBlock::id`] holds).
pub fn element_id(element: &XmlElementRef) -> BranchID {
    let branch: &yrs::branch::Branch = element.as_ref();
    branch.id()
}

/// Draws the whole fragment into `root` (start-up only).
pub fn build_tree<T: ReadTxn>(txn: &T, fragment: &XmlFragmentRef, root: &Element) -> DomTree {
    root.set_text_content(None);
    let blocks: Vec<DomBlock> = fragment
        .children(txn)
        .map(|c| build_block(txn, &c))
        .collect();
    let frag = document().create_document_fragment();
    for group in blocks.chunks(CHUNK) {
        let chunk = new_chunk();
        for b in group {
            let _ = chunk.append_child(&b.dom);
        }
        let _ = frag.append_child(&chunk);
    }
    let _ = root.append_child(&frag);
    Tree {
        root: root.clone().into(),
        blocks,
    }
}

/// The element at `path` in yrs.
fn yrs_element<T: ReadTxn>(
    txn: &T,
    fragment: &XmlFragmentRef,
    path: &[u32],
) -> Option<XmlElementRef> {
    super::edit::element_at(txn, fragment, path)
}

/// What applying a transaction's events did.
#[derive(Debug, Default)]
pub struct Patched {
    /// Text blocks whose items were redrawn or patched.
    pub blocks: Vec<Path>,
    /// Blocks added, removed or rebuilt (the structure changed).
    pub structure: bool,
    /// A change to the block being composed in was held back.
    pub held: bool,
}

/// Applies a transaction's events to the mirror and the DOM. `hold` names
/// the DOM element of a block an IME is composing in: it is not touched.
/// `near` are paths where changes are likely (the selection's blocks).
pub fn apply_events(
    tree: &mut DomTree,
    txn: &yrs::TransactionMut,
    fragment: &XmlFragmentRef,
    events: &Events,
    hold: Option<&Node>,
    near: &[&[u32]],
) -> Patched {
    let mut done: Vec<Path> = Vec::new();
    let mut patched = Patched::default();
    let covered = |done: &[Path], path: &[u32]| done.iter().any(|d| path.starts_with(d));
    let index_path = |raw: yrs::types::Path| -> Path {
        raw.into_iter()
            .filter_map(|seg| match seg {
                PathSegment::Index(i) => Some(i),
                PathSegment::Key(_) => None,
            })
            .collect()
    };
    for event in events.iter() {
        // The block whose content changed. For text, the mirror finds its
        // block by id (near the caret first): yrs' event path counts the
        // blocks before it one by one, a walk of the whole document.
        let block_path: Path = match event {
            Event::XmlText(e) => {
                let drawn = match Xml::parent(e.target()) {
                    Some(XmlOut::Element(block)) => tree.path_of_id(&element_id(&block), near),
                    _ => None,
                };
                match drawn {
                    Some(path) => path,
                    None => {
                        let path = index_path(e.path());
                        path[..path.len().saturating_sub(1)].to_vec()
                    }
                }
            }
            Event::XmlFragment(e) => index_path(e.path()),
            _ => continue,
        };
        if covered(&done, &block_path) {
            continue;
        }
        if let Some(hold) = hold
            && tree.block(&block_path).is_some_and(|b| &b.dom == hold)
        {
            patched.held = true;
            continue;
        }
        let is_inline = !block_path.is_empty() && tree.inline(&block_path).is_some();
        let keys_changed = match event {
            Event::XmlFragment(e) => !e.keys(txn).is_empty(),
            _ => false,
        };
        if is_inline && !keys_changed {
            // The block is the event's target (or its text's parent): no
            // walk of the fragment to find it by index.
            let target = match event {
                Event::XmlText(e) => Xml::parent(e.target()),
                Event::XmlFragment(e) => Some(e.target().clone()),
                _ => None,
            };
            let element = match target {
                Some(XmlOut::Element(element)) => Some(element),
                _ => yrs_element(txn, fragment, &block_path),
            };
            let Some(element) = element else {
                continue;
            };
            if let Some(VBlock {
                body: Body::Inline(inline),
                ..
            }) = tree.block_mut(&block_path)
            {
                patch_inline(txn, &element, inline);
                patched.blocks.push(block_path.clone());
            }
            done.push(block_path);
            continue;
        }
        if keys_changed && !block_path.is_empty() {
            rebuild(tree, txn, fragment, &block_path);
            patched.structure = true;
            done.push(block_path);
            continue;
        }
        let Event::XmlFragment(e) = event else {
            // Text directly in a container: redraw the container.
            if !block_path.is_empty() {
                rebuild(tree, txn, fragment, &block_path);
            }
            done.push(block_path);
            continue;
        };
        // Children added or removed.
        let parent_dom: Node = if block_path.is_empty() {
            tree.root.clone()
        } else {
            match tree.block(&block_path) {
                Some(b) => b.dom.clone(),
                None => continue,
            }
        };
        let delta: Vec<Change> = e.delta(txn).to_vec();
        let top = block_path.is_empty();
        // What a chunk split must not move: the composition, else the caret.
        let keep = if top {
            hold.cloned().or_else(|| {
                crate::browser::window()
                    .get_selection()
                    .ok()
                    .flatten()
                    .and_then(|s| s.focus_node())
            })
        } else {
            None
        };
        let Some(children) = tree.children_mut(&block_path) else {
            rebuild(tree, txn, fragment, &block_path);
            done.push(block_path);
            continue;
        };
        let mut i = 0usize;
        for change in delta {
            match change {
                Change::Retain(n) => i += n as usize,
                Change::Removed(n) => {
                    for _ in 0..n {
                        if i < children.len() {
                            let gone = children.remove(i);
                            if top {
                                remove_top(&gone.dom);
                            } else {
                                let _ = parent_dom.remove_child(&gone.dom);
                            }
                        }
                    }
                }
                Change::Added(outs) => {
                    for out in outs {
                        let xml = match out {
                            Out::YXmlElement(e) => XmlOut::Element(e),
                            Out::YXmlText(t) => XmlOut::Text(t),
                            Out::YXmlFragment(f) => XmlOut::Fragment(f),
                            _ => continue,
                        };
                        let block = build_block(txn, &xml);
                        let before = children.get(i).map(|b| b.dom.clone());
                        if top {
                            let after = i.checked_sub(1).and_then(|j| children.get(j));
                            insert_top(
                                &parent_dom,
                                &block.dom,
                                before.as_ref(),
                                after.map(|b| &b.dom),
                                keep.as_ref(),
                            );
                        } else {
                            let _ = parent_dom.insert_before(&block.dom, before.as_ref());
                        }
                        children.insert(i, block);
                        i += 1;
                    }
                }
            }
        }
        patched.structure = true;
        // Events for blocks inside this one name their final indices, so they still apply.
    }
    patched
}

/// Rebuilds the block at `path` (and its DOM) from yrs.
fn rebuild<T: ReadTxn>(tree: &mut DomTree, txn: &T, fragment: &XmlFragmentRef, path: &[u32]) {
    let Some((&last, up)) = path.split_last() else {
        return;
    };
    let Some(element) = yrs_element(txn, fragment, path) else {
        return;
    };
    let fresh = build_block(txn, &XmlOut::Element(element));
    let Some(children) = tree.children_mut(up) else {
        return;
    };
    let Some(old) = children.get_mut(last as usize) else {
        return;
    };
    if let Some(parent) = old.dom.parent_node() {
        let _ = parent.replace_child(&fresh.dom, &old.dom);
    }
    *old = fresh;
}
