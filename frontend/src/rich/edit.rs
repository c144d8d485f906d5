//! Editing commands on the yrs document itself: typing, deleting, Enter,
//! joins, marks, block types, lists, links, rules, pasted content. No DOM
//! here; every command runs inside one transaction and says where the
//! caret goes ([`Caret`]: an element and an offset, turned into sticky
//! indices by the caller once the view has caught up).
//!
//! Positions are [`Pos`]: the index path of a text block (paragraph,
//! heading, code block) from the fragment `default`, and an offset inside
//! its inline content in UTF-16 units, where a hard break counts 1 (as in
//! ProseMirror). Content moves between blocks as ProseMirror JSON
//! ([`quire_protocol::rich::json`]), so it is written exactly as
//! y-prosemirror writes new content. Like y-prosemirror, a node whose type
//! changes (paragraph → heading, wrapped in a list) is a new element with
//! the old one's content.

use std::cmp::Ordering;

use quire_protocol::rich::json::{self, Mark, Node};
use quire_protocol::rich::{MarkType, NodeType, normalise};
use serde_json::Value;
use yrs::types::Attrs;
use yrs::types::text::YChange;
use yrs::{
    Any, Out, ReadTxn, Text, TransactionMut, Xml, XmlElementRef, XmlFragment, XmlFragmentRef,
    XmlOut, XmlTextPrelim, XmlTextRef,
};

pub type Path = Vec<u32>;

/// A place in a text block.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pos {
    pub path: Path,
    pub off: u32,
}

impl Pos {
    pub fn new(path: Path, off: u32) -> Self {
        Self { path, off }
    }
}

impl PartialOrd for Pos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pos {
    fn cmp(&self, other: &Self) -> Ordering {
        self.path.cmp(&other.path).then(self.off.cmp(&other.off))
    }
}

/// A selection: where it started (anchor) and where it ends now (head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sel {
    pub anchor: Pos,
    pub head: Pos,
}

impl Sel {
    pub fn caret(pos: Pos) -> Self {
        Self {
            anchor: pos.clone(),
            head: pos,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.anchor == self.head
    }

    pub fn from(&self) -> &Pos {
        if self.anchor <= self.head {
            &self.anchor
        } else {
            &self.head
        }
    }

    pub fn to(&self) -> &Pos {
        if self.anchor <= self.head {
            &self.head
        } else {
            &self.anchor
        }
    }
}

/// Where the caret goes after a command: inside `el` (a text block) at `off`.
#[derive(Debug, Clone)]
pub struct Caret {
    pub el: XmlElementRef,
    pub off: u32,
}

/// What a command asks of the selection afterwards.
#[derive(Debug, Clone)]
pub enum After {
    /// Leave it where its sticky indices put it.
    Keep,
    /// A caret here.
    Caret(Caret),
    /// A selection from `anchor` to `head`.
    Range(Caret, Caret),
}

/// The block types of the toolbar's menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    Paragraph,
    Heading(u8),
    CodeBlock,
}

impl BlockType {
    pub fn node_type(self) -> NodeType {
        match self {
            BlockType::Paragraph => NodeType::Paragraph,
            BlockType::Heading(_) => NodeType::Heading,
            BlockType::CodeBlock => NodeType::CodeBlock,
        }
    }
}

// ---------------------------------------------------------------------
// Reading the tree

/// A parent of blocks: the fragment or an element.
#[derive(Debug, Clone)]
pub enum Parent {
    Root(XmlFragmentRef),
    El(XmlElementRef),
}

impl Parent {
    pub fn len<T: ReadTxn>(&self, txn: &T) -> u32 {
        match self {
            Parent::Root(f) => f.len(txn),
            Parent::El(e) => e.len(txn),
        }
    }

    pub fn get<T: ReadTxn>(&self, txn: &T, i: u32) -> Option<XmlOut> {
        match self {
            Parent::Root(f) => f.get(txn, i),
            Parent::El(e) => e.get(txn, i),
        }
    }

    pub fn element<T: ReadTxn>(&self, txn: &T, i: u32) -> Option<XmlElementRef> {
        self.get(txn, i)?.into_xml_element()
    }

    pub fn remove(&self, txn: &mut TransactionMut, i: u32, n: u32) {
        if n == 0 {
            return;
        }
        match self {
            Parent::Root(f) => f.remove_range(txn, i, n),
            Parent::El(e) => e.remove_range(txn, i, n),
        }
    }

    /// Inserts JSON nodes at child `i`.
    pub fn write(&self, txn: &mut TransactionMut, i: u32, nodes: &[Node]) -> u32 {
        match self {
            Parent::Root(f) => json::write(txn, f, i, nodes),
            Parent::El(e) => json::write(txn, e, i, nodes),
        }
    }

    pub fn kind(&self) -> Option<NodeType> {
        match self {
            Parent::Root(_) => Some(NodeType::Doc),
            Parent::El(e) => kind_of(e),
        }
    }

    pub fn read_children<T: ReadTxn>(&self, txn: &T) -> Vec<Node> {
        match self {
            Parent::Root(f) => json::read_children(txn, f),
            Parent::El(e) => json::read_children(txn, e),
        }
    }
}

pub fn kind_of(el: &XmlElementRef) -> Option<NodeType> {
    NodeType::from_name(el.tag())
}

pub fn is_textblock(el: &XmlElementRef) -> bool {
    kind_of(el).is_some_and(NodeType::is_textblock)
}

/// The container at `path` (empty = the fragment).
pub fn parent_at<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, path: &[u32]) -> Option<Parent> {
    if path.is_empty() {
        return Some(Parent::Root(root.clone()));
    }
    element_at(txn, root, path).map(Parent::El)
}

/// The element at `path`.
pub fn element_at<T: ReadTxn>(
    txn: &T,
    root: &XmlFragmentRef,
    path: &[u32],
) -> Option<XmlElementRef> {
    let (&first, rest) = path.split_first()?;
    let mut el = root.get(txn, first)?.into_xml_element()?;
    for &i in rest {
        el = el.get(txn, i)?.into_xml_element()?;
    }
    Some(el)
}

/// One child of a text block.
#[derive(Debug, Clone)]
pub enum Piece {
    Text(XmlTextRef, u32),
    Elem(XmlElementRef),
}

impl Piece {
    /// How many positions the piece spans (UTF-16 units; an element is one).
    pub fn width(&self) -> u32 {
        match self {
            Piece::Text(_, n) => *n,
            Piece::Elem(_) => 1,
        }
    }
}

pub fn pieces<T: ReadTxn>(txn: &T, el: &XmlElementRef) -> Vec<Piece> {
    el.children(txn)
        .filter_map(|c| match c {
            XmlOut::Text(t) => {
                let n = t.len(txn);
                Some(Piece::Text(t, n))
            }
            XmlOut::Element(e) => Some(Piece::Elem(e)),
            XmlOut::Fragment(_) => None,
        })
        .collect()
}

pub fn inline_len<T: ReadTxn>(txn: &T, el: &XmlElementRef) -> u32 {
    pieces(txn, el).iter().map(Piece::width).sum()
}

/// The inline content of a text block between two offsets, as JSON nodes.
pub fn slice_inline<T: ReadTxn>(txn: &T, el: &XmlElementRef, from: u32, to: u32) -> Vec<Node> {
    let mut out = Vec::new();
    let mut at = 0u32;
    for piece in pieces(txn, el) {
        let len = piece.width();
        let (s, e) = (at, at + len);
        at = e;
        if e <= from || s >= to {
            continue;
        }
        match piece {
            Piece::Elem(child) => out.push(json::read_element(txn, &child)),
            Piece::Text(t, _) => {
                let mut run_at = s;
                for d in t.diff(txn, YChange::identity) {
                    let Out::Any(Any::String(text)) = &d.insert else {
                        continue;
                    };
                    let units: Vec<u16> = text.encode_utf16().collect();
                    let (rs, re) = (run_at, run_at + units.len() as u32);
                    run_at = re;
                    let (cs, ce) = (rs.max(from), re.min(to));
                    if cs >= ce {
                        continue;
                    }
                    let piece =
                        String::from_utf16_lossy(&units[(cs - rs) as usize..(ce - rs) as usize]);
                    out.push(Node::text(piece, json::marks_of(d.attributes.as_deref())));
                }
            }
        }
    }
    merge_texts(out)
}

/// Joins neighbouring text nodes with the same marks (and drops empty
/// ones, which ProseMirror's JSON does not allow), as the importers do.
fn merge_texts(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    for node in nodes {
        normalise::push_inline(&mut out, node);
    }
    out
}

/// The text of a block's inline content, a hard break (or other inline
/// node) as U+FFFC.
pub fn block_text<T: ReadTxn>(txn: &T, el: &XmlElementRef) -> String {
    let mut out = String::new();
    for piece in pieces(txn, el) {
        match piece {
            Piece::Text(t, _) => {
                for d in t.diff(txn, YChange::identity) {
                    if let Out::Any(Any::String(s)) = d.insert {
                        out.push_str(&s);
                    }
                }
            }
            Piece::Elem(_) => out.push('\u{FFFC}'),
        }
    }
    out
}

/// Text runs with their offsets: (start, text as UTF-16, marks).
fn runs<T: ReadTxn>(txn: &T, el: &XmlElementRef) -> Vec<(u32, u32, Vec<Mark>, Option<Attrs>)> {
    let mut out = Vec::new();
    let mut at = 0;
    for piece in pieces(txn, el) {
        match piece {
            Piece::Text(t, _) => {
                for d in t.diff(txn, YChange::identity) {
                    if let Out::Any(Any::String(s)) = &d.insert {
                        let len = s.encode_utf16().count() as u32;
                        out.push((
                            at,
                            len,
                            json::marks_of(d.attributes.as_deref()),
                            d.attributes.map(|a| *a),
                        ));
                        at += len;
                    }
                }
            }
            Piece::Elem(_) => at += 1,
        }
    }
    out
}

/// The marks new text typed at `off` gets: those of the character before
/// (at a block's start, after), except a link that ends there.
pub fn marks_at<T: ReadTxn>(txn: &T, el: &XmlElementRef, off: u32) -> Vec<Mark> {
    if !kind_of(el).is_some_and(NodeType::allows_marks) {
        return Vec::new();
    }
    let runs = runs(txn, el);
    let before = runs.iter().find(|(s, l, _, _)| *s < off && off <= s + l);
    let after = runs.iter().find(|(s, l, _, _)| *s <= off && off < s + l);
    let mut marks = match (before, after) {
        (Some(b), _) => b.2.clone(),
        (None, Some(a)) => a.2.clone(),
        (None, None) => Vec::new(),
    };
    let link_after = after.and_then(|a| {
        a.2.iter()
            .find(|m| m.mark_type() == Some(MarkType::Link))
            .cloned()
    });
    marks.retain(|m| m.mark_type() != Some(MarkType::Link) || link_after.as_ref() == Some(m));
    marks
}

/// Whether every character from `from` to `to` of `el` carries a mark of `kind`.
fn all_have<T: ReadTxn>(
    txn: &T,
    el: &XmlElementRef,
    from: u32,
    to: u32,
    kind: MarkType,
) -> Option<bool> {
    let mut any = false;
    for (s, l, marks, _) in runs(txn, el) {
        if s + l <= from || s >= to {
            continue;
        }
        any = true;
        if !marks.iter().any(|m| m.mark_type() == Some(kind)) {
            return Some(false);
        }
    }
    any.then_some(true)
}

// ---------------------------------------------------------------------
// Changing inline content

/// Merges neighbouring `XmlText`s and drops empty ones, so a block holds
/// what y-prosemirror would write for it.
pub fn normalize(txn: &mut TransactionMut, el: &XmlElementRef) {
    let mut i = 0u32;
    loop {
        let list = pieces(txn, el);
        if i as usize >= list.len() {
            break;
        }
        match (&list[i as usize], list.get(i as usize + 1)) {
            (Piece::Text(_, 0), _) => {
                el.remove_range(txn, i, 1);
            }
            (Piece::Text(a, alen), Some(Piece::Text(b, _))) => {
                let nodes = json::read_text(txn, b);
                json::write_runs(txn, a, *alen, &nodes);
                el.remove_range(txn, i + 1, 1);
            }
            _ => i += 1,
        }
    }
}

/// Deletes inline content from `from` to `to`.
pub fn delete_inline(txn: &mut TransactionMut, el: &XmlElementRef, from: u32, to: u32) {
    if from >= to {
        return;
    }
    let list = pieces(txn, el);
    let mut starts = Vec::with_capacity(list.len());
    let mut at = 0;
    for p in &list {
        starts.push(at);
        at += p.width();
    }
    for (i, piece) in list.iter().enumerate().rev() {
        let (s, e) = (starts[i], starts[i] + piece.width());
        if e <= from || s >= to {
            continue;
        }
        match piece {
            Piece::Text(t, _) => {
                let (a, b) = (from.max(s) - s, to.min(e) - s);
                t.remove_range(txn, a, b - a);
            }
            Piece::Elem(_) => el.remove_range(txn, i as u32, 1),
        }
    }
    normalize(txn, el);
}

/// Appends inline nodes at the end of a text block.
fn append_inline(txn: &mut TransactionMut, el: &XmlElementRef, nodes: &[Node]) {
    let mut i = 0;
    while i < nodes.len() {
        if nodes[i].is_text() {
            let end = nodes[i..]
                .iter()
                .position(|n| !n.is_text())
                .map_or(nodes.len(), |p| i + p);
            let list = pieces(txn, el);
            match list.last() {
                Some(Piece::Text(t, len)) => {
                    json::write_runs(txn, t, *len, &nodes[i..end]);
                }
                _ => {
                    let at = el.len(txn);
                    let t = el.insert(txn, at, XmlTextPrelim::new(""));
                    json::write_runs(txn, &t, 0, &nodes[i..end]);
                }
            }
            i = end;
        } else {
            let at = el.len(txn);
            json::write(txn, el, at, &nodes[i..i + 1]);
            i += 1;
        }
    }
}

/// Makes inline nodes fit a block: in a code block, text without marks
/// (hard breaks become line breaks); elsewhere, code-block newlines become
/// hard breaks.
fn fit_inline(kind: Option<NodeType>, nodes: Vec<Node>) -> Vec<Node> {
    let mut out = Vec::with_capacity(nodes.len());
    if kind == Some(NodeType::CodeBlock) {
        for n in nodes {
            if n.is_text() {
                out.push(Node::text(n.text.unwrap_or_default(), Vec::new()));
            } else if n.node_type() == Some(NodeType::HardBreak) {
                out.push(Node::text("\n", Vec::new()));
            } else {
                let t = n.text_content();
                if !t.is_empty() {
                    out.push(Node::text(t, Vec::new()));
                }
            }
        }
        return merge_texts(out);
    }
    for n in nodes {
        match n.text.as_deref() {
            Some(t) if t.contains('\n') => {
                for (i, line) in t.split('\n').enumerate() {
                    if i > 0 {
                        out.push(Node::new(NodeType::HardBreak, Vec::new()));
                    }
                    if !line.is_empty() {
                        out.push(Node::text(line, n.marks.clone()));
                    }
                }
            }
            _ => out.push(n),
        }
    }
    out
}

/// Inserts inline nodes at `off`; returns their length.
pub fn insert_inline(
    txn: &mut TransactionMut,
    el: &XmlElementRef,
    off: u32,
    nodes: Vec<Node>,
) -> u32 {
    let nodes = fit_inline(kind_of(el), nodes);
    let added: u32 = nodes
        .iter()
        .map(|n| {
            n.text
                .as_deref()
                .map_or(1, |t| t.encode_utf16().count() as u32)
        })
        .sum();
    if nodes.iter().all(Node::is_text) {
        let list = pieces(txn, el);
        let mut at = 0;
        let mut target = None;
        let mut index = 0u32;
        for (i, p) in list.iter().enumerate() {
            let (s, e) = (at, at + p.width());
            if let Piece::Text(t, _) = p
                && s <= off
                && off <= e
            {
                target = Some((t.clone(), off - s));
                break;
            }
            if e <= off {
                index = i as u32 + 1;
            }
            at = e;
        }
        match target {
            Some((t, local)) => {
                json::write_runs(txn, &t, local, &nodes);
            }
            None => {
                let t = el.insert(txn, index, XmlTextPrelim::new(""));
                json::write_runs(txn, &t, 0, &nodes);
            }
        }
        return added;
    }
    let len = inline_len(txn, el);
    let tail = slice_inline(txn, el, off, len);
    delete_inline(txn, el, off, len);
    let mut all = nodes;
    all.extend(tail);
    append_inline(txn, el, &all);
    normalize(txn, el);
    added
}

// ---------------------------------------------------------------------
// Walking blocks in document order

/// The last text block inside the element at `path` (itself if it is one).
fn last_textblock<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, path: &[u32]) -> Option<Path> {
    let el = element_at(txn, root, path)?;
    if is_textblock(&el) {
        return Some(path.to_vec());
    }
    if kind_of(&el).is_none_or(|k| k.is_leaf()) && kind_of(&el).is_some() {
        return None;
    }
    kind_of(&el)?; // unknown elements are not entered
    let n = el.len(txn);
    for i in (0..n).rev() {
        let mut p = path.to_vec();
        p.push(i);
        if let Some(found) = last_textblock(txn, root, &p) {
            return Some(found);
        }
    }
    None
}

fn first_textblock<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, path: &[u32]) -> Option<Path> {
    let el = element_at(txn, root, path)?;
    if is_textblock(&el) {
        return Some(path.to_vec());
    }
    let kind = kind_of(&el)?;
    if kind.is_leaf() {
        return None;
    }
    for i in 0..el.len(txn) {
        let mut p = path.to_vec();
        p.push(i);
        if let Some(found) = first_textblock(txn, root, &p) {
            return Some(found);
        }
    }
    None
}

/// The first text block of the whole document.
pub fn first_in_doc<T: ReadTxn>(txn: &T, root: &XmlFragmentRef) -> Option<Path> {
    (0..root.len(txn)).find_map(|i| first_textblock(txn, root, &[i]))
}

/// The last text block of the whole document.
pub fn last_in_doc<T: ReadTxn>(txn: &T, root: &XmlFragmentRef) -> Option<Path> {
    (0..root.len(txn))
        .rev()
        .find_map(|i| last_textblock(txn, root, &[i]))
}

/// The text block before the one at `path`, in document order.
pub fn prev_textblock<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, path: &[u32]) -> Option<Path> {
    let mut p = path.to_vec();
    while let Some(last) = p.pop() {
        for i in (0..last).rev() {
            let mut q = p.clone();
            q.push(i);
            if let Some(found) = last_textblock(txn, root, &q) {
                return Some(found);
            }
        }
    }
    None
}

/// The text block after the one at `path`, in document order.
pub fn next_textblock<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, path: &[u32]) -> Option<Path> {
    let mut p = path.to_vec();
    while let Some(last) = p.pop() {
        let parent = parent_at(txn, root, &p)?;
        for i in last + 1..parent.len(txn) {
            let mut q = p.clone();
            q.push(i);
            if let Some(found) = first_textblock(txn, root, &q) {
                return Some(found);
            }
        }
    }
    None
}

/// Every text block from `from` to `to` (both included), in order.
pub fn textblocks_between<T: ReadTxn>(
    txn: &T,
    root: &XmlFragmentRef,
    from: &[u32],
    to: &[u32],
) -> Vec<Path> {
    let mut out = vec![from.to_vec()];
    let mut at = from.to_vec();
    while at.as_slice() < to {
        match next_textblock(txn, root, &at) {
            Some(next) if next.as_slice() <= to => {
                out.push(next.clone());
                at = next;
            }
            _ => break,
        }
    }
    out
}

// ---------------------------------------------------------------------
// The commands

/// The editing context: the fragment and the transaction.
pub struct Edit<'a, 'doc> {
    pub txn: &'a mut TransactionMut<'doc>,
    pub root: XmlFragmentRef,
    /// Blocks located before the transaction began (by the editor's
    /// mirror), used while the transaction has changed nothing: finding a
    /// block by its path in yrs walks every block before it.
    known: Vec<(Path, XmlElementRef)>,
}

/// What a command could not do (the caller does nothing then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotApplicable;

type Res = Result<After, NotApplicable>;

impl<'a, 'doc> Edit<'a, 'doc> {
    pub fn new(txn: &'a mut TransactionMut<'doc>, root: XmlFragmentRef) -> Self {
        Self {
            txn,
            root,
            known: Vec::new(),
        }
    }

    /// The same, told where some blocks are in the document as it is now.
    pub fn with_known(
        txn: &'a mut TransactionMut<'doc>,
        root: XmlFragmentRef,
        known: Vec<(Path, XmlElementRef)>,
    ) -> Self {
        Self { txn, root, known }
    }

    fn el(&self, path: &[u32]) -> Result<XmlElementRef, NotApplicable> {
        if !self.txn.has_changes()
            && let Some((_, el)) = self.known.iter().find(|(p, _)| p.as_slice() == path)
        {
            return Ok(el.clone());
        }
        element_at(self.txn, &self.root, path).ok_or(NotApplicable)
    }

    fn parent(&self, path: &[u32]) -> Result<Parent, NotApplicable> {
        parent_at(self.txn, &self.root, path).ok_or(NotApplicable)
    }

    fn caret_at(&self, path: &[u32], off: u32) -> After {
        match element_at(self.txn, &self.root, path) {
            Some(el) => {
                let off = off.min(inline_len(self.txn, &el));
                After::Caret(Caret { el, off })
            }
            None => After::Keep,
        }
    }

    fn clamp(&self, pos: &Pos) -> Result<(XmlElementRef, u32), NotApplicable> {
        let el = self.el(&pos.path)?;
        if !is_textblock(&el) {
            return Err(NotApplicable);
        }
        let len = inline_len(self.txn, &el);
        Ok((el, pos.off.min(len)))
    }

    /// The document is never left without a block to type in.
    pub fn ensure_block(&mut self) -> Option<XmlElementRef> {
        if self.root.len(self.txn) == 0 {
            json::write(self.txn, &self.root, 0, &[Node::paragraph(Vec::new())]);
        }
        first_in_doc(self.txn, &self.root).and_then(|p| element_at(self.txn, &self.root, &p))
    }

    /// Types `text` over the selection with `marks` (the marks at the caret when `None`).
    pub fn insert_text(&mut self, sel: &Sel, text: &str, marks: Option<Vec<Mark>>) -> Res {
        let start = self.delete_selection(sel)?;
        let (el, off) = self.clamp(&start)?;
        let kind = kind_of(&el);
        if text.contains('\n') && kind != Some(NodeType::CodeBlock) {
            let nodes = quire_protocol::rich::text::paragraphs(text);
            return self.insert_nodes(&Sel::caret(Pos::new(start.path, off)), nodes);
        }
        let marks = match kind {
            Some(NodeType::CodeBlock) => Vec::new(),
            _ => marks.unwrap_or_else(|| marks_at(self.txn, &el, off)),
        };
        let n = insert_inline(self.txn, &el, off, vec![Node::text(text, marks)]);
        Ok(After::Caret(Caret { el, off: off + n }))
    }

    /// Deletes the selection; returns where the caret is then.
    pub fn delete_selection(&mut self, sel: &Sel) -> Result<Pos, NotApplicable> {
        let (from, to) = (sel.from().clone(), sel.to().clone());
        if from == to {
            let (_, off) = self.clamp(&from)?;
            return Ok(Pos::new(from.path, off));
        }
        let (a, a_off) = self.clamp(&from)?;
        if from.path == to.path {
            let (_, b_off) = self.clamp(&to)?;
            delete_inline(self.txn, &a, a_off, b_off);
            return Ok(Pos::new(from.path, a_off));
        }
        let (b, b_off) = self.clamp(&to)?;
        let b_len = inline_len(self.txn, &b);
        let tail = slice_inline(self.txn, &b, b_off, b_len);
        let a_len = inline_len(self.txn, &a);
        delete_inline(self.txn, &a, a_off, a_len);
        self.delete_between(&from.path, &to.path)?;
        let tail = fit_inline(kind_of(&a), tail);
        append_inline(self.txn, &a, &tail);
        normalize(self.txn, &a);
        Ok(Pos::new(from.path, a_off))
    }

    /// Deletes everything after the block at `a` up to and including the
    /// block at `b`, except ancestors of `a`; repairs what is left.
    fn delete_between(&mut self, a: &[u32], b: &[u32]) -> Result<(), NotApplicable> {
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        if common >= a.len() || common >= b.len() {
            return Err(NotApplicable);
        }
        // Inside b's branch, from the deepest level up: everything before b, and b.
        let mut repair_at: Vec<Path> = Vec::new();
        for depth in (common + 1..b.len()).rev() {
            let container = &b[..depth];
            let parent = self.parent(container)?;
            let upto = b[depth] + u32::from(depth == b.len() - 1);
            parent.remove(self.txn, 0, upto);
            repair_at.push(container.to_vec());
        }
        if b.len() == common + 1 {
            let parent = self.parent(&b[..common])?;
            parent.remove(self.txn, b[common], 1);
        }
        // Whole blocks between the two branches.
        let parent = self.parent(&a[..common])?;
        let (ia, ib) = (a[common], b[common]);
        if ib > ia + 1 {
            parent.remove(self.txn, ia + 1, ib - ia - 1);
        }
        // Inside a's branch: everything after a at every level.
        for depth in (common + 1..a.len()).rev() {
            let container = &a[..depth];
            let parent = self.parent(container)?;
            let n = parent.len(self.txn);
            if n > a[depth] + 1 {
                parent.remove(self.txn, a[depth] + 1, n - a[depth] - 1);
            }
        }
        // b's branch now sits right after a's (at ia + 1) if anything is left of it.
        let mut shifted: Vec<Path> = repair_at
            .into_iter()
            .map(|mut p| {
                p[common] = ia + 1;
                p
            })
            .collect();
        shifted.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in shifted {
            self.repair(&p);
        }
        Ok(())
    }

    /// Fixes a container after content was taken out of it: an empty list,
    /// list item or quote goes; a list item gets its leading paragraph back.
    fn repair(&mut self, path: &[u32]) {
        let Some(el) = element_at(self.txn, &self.root, path) else {
            return;
        };
        let kind = kind_of(&el);
        let n = el.len(self.txn);
        let empty_goes = matches!(
            kind,
            Some(
                NodeType::BulletList
                    | NodeType::OrderedList
                    | NodeType::ListItem
                    | NodeType::Blockquote
            )
        );
        if n == 0 && empty_goes {
            let (&last, up) = path.split_last().expect("not the root");
            if let Some(parent) = parent_at(self.txn, &self.root, up) {
                parent.remove(self.txn, last, 1);
                if !up.is_empty() {
                    self.repair(up);
                }
            }
            return;
        }
        if kind == Some(NodeType::ListItem) {
            let first = el.get(self.txn, 0).and_then(XmlOut::into_xml_element);
            if first.is_none_or(|f| kind_of(&f) != Some(NodeType::Paragraph)) {
                json::write(self.txn, &el, 0, &[Node::paragraph(Vec::new())]);
            }
        }
    }

    /// Enter.
    pub fn split(&mut self, sel: &Sel) -> Res {
        let pos = self.delete_selection(sel)?;
        let (el, off) = self.clamp(&pos)?;
        let kind = kind_of(&el);
        let len = inline_len(self.txn, &el);
        let (&index, up) = pos.path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        let parent_kind = parent.kind();

        if kind == Some(NodeType::CodeBlock) {
            let text = block_text(self.txn, &el);
            if off == len && text.ends_with("\n\n") {
                delete_inline(self.txn, &el, len - 2, len);
                parent.write(self.txn, index + 1, &[Node::paragraph(Vec::new())]);
                return Ok(self.caret_at(&[up, &[index + 1]].concat(), 0));
            }
            let n = insert_inline(self.txn, &el, off, vec![Node::text("\n", Vec::new())]);
            return Ok(After::Caret(Caret { el, off: off + n }));
        }
        // "```" (with a language) and Enter make a code block.
        if kind == Some(NodeType::Paragraph)
            && off == len
            && parent_kind != Some(NodeType::ListItem)
        {
            let text = block_text(self.txn, &el);
            if let Some(lang) = text.strip_prefix("```")
                && lang
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
            {
                delete_inline(self.txn, &el, 0, len);
                return self.replace_block(
                    &pos.path,
                    BlockType::CodeBlock,
                    (!lang.is_empty()).then_some(lang),
                );
            }
        }
        if parent_kind == Some(NodeType::ListItem) && index == 0 {
            if len == 0 {
                return self.outdent(&Sel::caret(pos));
            }
            return self.split_list_item(&pos.path, off);
        }
        if parent_kind == Some(NodeType::Blockquote)
            && len == 0
            && index + 1 == parent.len(self.txn)
        {
            // Enter in an empty last paragraph of a quote leaves the quote.
            parent.remove(self.txn, index, 1);
            let (&qi, qup) = up.split_last().ok_or(NotApplicable)?;
            let outer = self.parent(qup)?;
            outer.write(self.txn, qi + 1, &[Node::paragraph(Vec::new())]);
            self.repair(up);
            let mut target = qup.to_vec();
            let removed = element_at(self.txn, &self.root, up)
                .is_none_or(|q| kind_of(&q) != Some(NodeType::Blockquote));
            target.push(if removed { qi } else { qi + 1 });
            return Ok(self.caret_at(&target, 0));
        }
        let tail = slice_inline(self.txn, &el, off, len);
        delete_inline(self.txn, &el, off, len);
        let mut new_block = if off == len && kind == Some(NodeType::Heading) || kind.is_none() {
            Node::paragraph(Vec::new())
        } else {
            let mut node = json::read_element(self.txn, &el);
            node.content.clear();
            node
        };
        if off == 0 && len > 0 && kind == Some(NodeType::Heading) {
            // Enter at the start of a heading pushes it down.
            let tail_len = inline_len(self.txn, &el);
            let _ = tail_len;
            append_inline(self.txn, &el, &tail);
            parent.write(self.txn, index, &[Node::paragraph(Vec::new())]);
            return Ok(self.caret_at(&[up, &[index + 1]].concat(), 0));
        }
        new_block.content = tail;
        parent.write(self.txn, index + 1, &[new_block]);
        Ok(self.caret_at(&[up, &[index + 1]].concat(), 0))
    }

    fn split_list_item(&mut self, path: &[u32], off: u32) -> Res {
        let el = self.el(path)?;
        let len = inline_len(self.txn, &el);
        let item_path = &path[..path.len() - 1];
        let item = self.el(item_path)?;
        let (&item_index, list_path) = item_path.split_last().ok_or(NotApplicable)?;
        let list = self.parent(list_path)?;
        let tail = slice_inline(self.txn, &el, off, len);
        delete_inline(self.txn, &el, off, len);
        // What followed the paragraph inside the item (nested lists) moves along.
        let n = item.len(self.txn);
        let rest: Vec<Node> = (1..n)
            .filter_map(|i| item.get(self.txn, i).and_then(XmlOut::into_xml_element))
            .map(|e| json::read_element(self.txn, &e))
            .collect();
        if n > 1 {
            item.remove_range(self.txn, 1, n - 1);
        }
        let mut content = vec![Node::paragraph(tail)];
        content.extend(rest);
        list.write(
            self.txn,
            item_index + 1,
            &[Node::new(NodeType::ListItem, content)],
        );
        Ok(self.caret_at(&[list_path, &[item_index + 1, 0]].concat(), 0))
    }

    /// Shift+Enter: a hard break (a newline in a code block).
    pub fn line_break(&mut self, sel: &Sel) -> Res {
        let pos = self.delete_selection(sel)?;
        let (el, off) = self.clamp(&pos)?;
        let node = if kind_of(&el) == Some(NodeType::CodeBlock) {
            Node::text("\n", Vec::new())
        } else {
            Node::new(NodeType::HardBreak, Vec::new())
        };
        let n = insert_inline(self.txn, &el, off, vec![node]);
        Ok(After::Caret(Caret { el, off: off + n }))
    }

    /// Deletes the selection, or the character before the caret; at the
    /// start of a block, joins it with the one before or unwraps it.
    pub fn delete_backward(&mut self, sel: &Sel) -> Res {
        if !sel.is_empty() {
            let pos = self.delete_selection(sel)?;
            return Ok(self.caret_at(&pos.path, pos.off));
        }
        let (el, off) = self.clamp(&sel.head)?;
        if off > 0 {
            let text: Vec<u16> = block_text(self.txn, &el).encode_utf16().collect();
            let unit = text.get(off as usize - 1).copied().unwrap_or(0);
            let width = if (0xDC00..0xE000).contains(&unit) && off >= 2 {
                2
            } else {
                1
            };
            delete_inline(self.txn, &el, off - width, off);
            return Ok(After::Caret(Caret {
                el,
                off: off - width,
            }));
        }
        self.join_backward(&sel.head.path)
    }

    /// Backspace at the start of the block at `path`.
    pub fn join_backward(&mut self, path: &[u32]) -> Res {
        let el = self.el(path)?;
        let (&index, up) = path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        match parent.kind() {
            Some(NodeType::ListItem) if index == 0 => {
                return self.outdent(&Sel::caret(Pos::new(path.to_vec(), 0)));
            }
            Some(NodeType::Blockquote) if index == 0 => return self.lift_out_of_quote(path),
            _ => {}
        }
        if index > 0 {
            let prev = parent.element(self.txn, index - 1).ok_or(NotApplicable)?;
            if kind_of(&prev) == Some(NodeType::HorizontalRule)
                || kind_of(&prev).is_none() && !is_textblock(&prev) && prev.len(self.txn) == 0
            {
                parent.remove(self.txn, index - 1, 1);
                return Ok(self.caret_at(&[up, &[index - 1]].concat(), 0));
            }
        }
        let Some(prev_path) = prev_textblock(self.txn, &self.root, path) else {
            if kind_of(&el) != Some(NodeType::Paragraph) {
                return self.replace_block(path, BlockType::Paragraph, None);
            }
            return Err(NotApplicable);
        };
        self.join(&prev_path, path)
    }

    /// Appends the block at `second` to the block at `first` and removes `second`.
    fn join(&mut self, first: &[u32], second: &[u32]) -> Res {
        let a = self.el(first)?;
        let b = self.el(second)?;
        let a_len = inline_len(self.txn, &a);
        let b_len = inline_len(self.txn, &b);
        let content = fit_inline(kind_of(&a), slice_inline(self.txn, &b, 0, b_len));
        append_inline(self.txn, &a, &content);
        normalize(self.txn, &a);
        let (&index, up) = second.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        parent.remove(self.txn, index, 1);
        if !up.is_empty() {
            self.repair(up);
        }
        Ok(After::Caret(Caret { el: a, off: a_len }))
    }

    fn lift_out_of_quote(&mut self, path: &[u32]) -> Res {
        let quote_path = &path[..path.len() - 1];
        let quote = self.el(quote_path)?;
        let (&qi, up) = quote_path.split_last().ok_or(NotApplicable)?;
        let outer = self.parent(up)?;
        let el = self.el(path)?;
        let node = json::read_element(self.txn, &el);
        quote.remove_range(self.txn, 0, 1);
        outer.write(self.txn, qi, &[node]);
        let target = [up, &[qi]].concat();
        self.repair(&[up, &[qi + 1]].concat());
        Ok(self.caret_at(&target, 0))
    }

    /// Delete: the selection, or the character after the caret; at a
    /// block's end, joins the next block into this one.
    pub fn delete_forward(&mut self, sel: &Sel) -> Res {
        if !sel.is_empty() {
            let pos = self.delete_selection(sel)?;
            return Ok(self.caret_at(&pos.path, pos.off));
        }
        let (el, off) = self.clamp(&sel.head)?;
        let len = inline_len(self.txn, &el);
        if off < len {
            let text: Vec<u16> = block_text(self.txn, &el).encode_utf16().collect();
            let unit = text.get(off as usize).copied().unwrap_or(0);
            let width = if (0xD800..0xDC00).contains(&unit) && off + 2 <= len {
                2
            } else {
                1
            };
            delete_inline(self.txn, &el, off, off + width);
            return Ok(After::Caret(Caret { el, off }));
        }
        let path = &sel.head.path;
        let (&index, up) = path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        if let Some(next) = parent.element(self.txn, index + 1)
            && kind_of(&next) == Some(NodeType::HorizontalRule)
        {
            parent.remove(self.txn, index + 1, 1);
            return Ok(After::Caret(Caret { el, off }));
        }
        let next = next_textblock(self.txn, &self.root, path).ok_or(NotApplicable)?;
        self.join(path, &next)?;
        Ok(After::Caret(Caret { el, off }))
    }

    /// Adds or removes a mark over the selection (removes it when all of
    /// the selected text has it).
    pub fn toggle_mark(&mut self, sel: &Sel, kind: MarkType) -> Res {
        let blocks = self.selected_blocks(sel);
        let all = blocks.iter().all(|(el, f, t)| {
            !kind_of(el).is_some_and(NodeType::allows_marks)
                || all_have(self.txn, el, *f, *t, kind) != Some(false)
        });
        let mark = if all { None } else { Some(Mark::of(kind)) };
        self.set_mark(sel, kind, mark)
    }

    /// Sets (`Some`) or clears (`None`) a mark of `kind` over the selection.
    pub fn set_mark(&mut self, sel: &Sel, kind: MarkType, mark: Option<Mark>) -> Res {
        for (el, from, to) in self.selected_blocks(sel) {
            if !kind_of(&el).is_some_and(NodeType::allows_marks) {
                continue;
            }
            self.format_range(&el, from, to, kind, mark.as_ref());
        }
        Ok(After::Keep)
    }

    fn format_range(
        &mut self,
        el: &XmlElementRef,
        from: u32,
        to: u32,
        kind: MarkType,
        mark: Option<&Mark>,
    ) {
        let mut at = 0;
        for piece in pieces(self.txn, el) {
            let len = piece.width();
            let (s, e) = (at, at + len);
            at = e;
            let Piece::Text(t, _) = piece else { continue };
            if e <= from || s >= to {
                continue;
            }
            // Run by run, so every run gets exactly the right attributes.
            let mut run_at = s;
            let diffs = t.diff(self.txn, YChange::identity);
            for d in diffs {
                let Out::Any(Any::String(text)) = &d.insert else {
                    continue;
                };
                let rl = text.encode_utf16().count() as u32;
                let (rs, re) = (run_at, run_at + rl);
                run_at = re;
                let (cs, ce) = (rs.max(from), re.min(to));
                if cs >= ce {
                    continue;
                }
                let existing = json::marks_of(d.attributes.as_deref());
                let keys: Vec<String> = d
                    .attributes
                    .as_deref()
                    .map(|a| a.keys().map(|k| k.to_string()).collect())
                    .unwrap_or_default();
                let mut attrs = Attrs::new();
                let key_of = |k: &String| MarkType::from_name(k);
                match mark {
                    Some(m) => {
                        if kind != MarkType::Code
                            && existing
                                .iter()
                                .any(|x| x.mark_type() == Some(MarkType::Code))
                        {
                            continue; // code excludes every other mark
                        }
                        for k in &keys {
                            let other = key_of(k);
                            if other == Some(kind) || (kind == MarkType::Code && other.is_some()) {
                                attrs.insert(k.as_str().into(), Any::Null);
                            }
                        }
                        attrs.extend(json::attrs_of(std::slice::from_ref(m)));
                    }
                    None => {
                        for k in &keys {
                            if key_of(k) == Some(kind) {
                                attrs.insert(k.as_str().into(), Any::Null);
                            }
                        }
                    }
                }
                if !attrs.is_empty() {
                    t.format(self.txn, cs - s, ce - cs, attrs);
                }
            }
        }
    }

    /// Each selected text block with the selected offsets in it.
    pub fn selected_blocks(&self, sel: &Sel) -> Vec<(XmlElementRef, u32, u32)> {
        let (from, to) = (sel.from(), sel.to());
        textblocks_between(self.txn, &self.root, &from.path, &to.path)
            .into_iter()
            .filter_map(|p| {
                let el = element_at(self.txn, &self.root, &p)?;
                let len = inline_len(self.txn, &el);
                let f = if p == from.path { from.off.min(len) } else { 0 };
                let t = if p == to.path { to.off.min(len) } else { len };
                Some((el, f, t))
            })
            .collect()
    }

    /// Sets a link on the selection (`None` removes it). With a caret and
    /// no selection: inside a link, the whole link changes; elsewhere the
    /// address is inserted as linked text.
    pub fn set_link(&mut self, sel: &Sel, href: Option<&str>) -> Res {
        let mark = href.map(Mark::link);
        if !sel.is_empty() {
            return self.set_mark(sel, MarkType::Link, mark);
        }
        let (el, off) = self.clamp(&sel.head)?;
        if let Some((from, to)) = link_extent(self.txn, &el, off) {
            self.format_range(&el, from, to, MarkType::Link, mark.as_ref());
            return Ok(After::Caret(Caret { el, off: to }));
        }
        let Some(href) = href else {
            return Ok(After::Keep);
        };
        let mut marks = marks_at(self.txn, &el, off);
        marks.retain(|m| m.mark_type() != Some(MarkType::Code));
        marks.push(Mark::link(href));
        let n = insert_inline(self.txn, &el, off, vec![Node::text(href, marks)]);
        Ok(After::Caret(Caret { el, off: off + n }))
    }

    /// Makes every selected text block `target`.
    pub fn set_block_type(&mut self, sel: &Sel, target: BlockType) -> Res {
        let (from, to) = (sel.from().clone(), sel.to().clone());
        let paths = textblocks_between(self.txn, &self.root, &from.path, &to.path);
        for p in paths.iter().rev() {
            let (&i, up) = p.split_last().expect("a block path");
            let in_item_head =
                i == 0 && self.parent(up).ok().and_then(|x| x.kind()) == Some(NodeType::ListItem);
            if in_item_head && target != BlockType::Paragraph {
                continue; // a list item starts with a paragraph
            }
            self.replace_block(p, target, None)?;
        }
        Ok(self.range_after(&from, &to))
    }

    fn range_after(&self, from: &Pos, to: &Pos) -> After {
        match (
            self.caret_at(&from.path, from.off),
            self.caret_at(&to.path, to.off),
        ) {
            (After::Caret(a), After::Caret(b)) if from != to => After::Range(a, b),
            (a, _) => a,
        }
    }

    /// Replaces the text block at `path` by one of `target` with the same content.
    fn replace_block(&mut self, path: &[u32], target: BlockType, language: Option<&str>) -> Res {
        let el = self.el(path)?;
        let same = match (kind_of(&el), target) {
            (Some(NodeType::Heading), BlockType::Heading(l)) => {
                heading_level(self.txn, &el) == l && language.is_none()
            }
            (Some(k), t) => k == t.node_type() && t != BlockType::CodeBlock && language.is_none(),
            _ => false,
        };
        if same {
            return Ok(self.caret_at(path, 0));
        }
        let len = inline_len(self.txn, &el);
        let content = slice_inline(self.txn, &el, 0, len);
        let mut node = Node::new(
            target.node_type(),
            fit_inline(Some(target.node_type()), content),
        );
        if let BlockType::Heading(l) = target {
            node = node.with_attr("level", Value::from(i64::from(l)));
        }
        if let Some(lang) = language {
            node = node.with_attr("language", Value::from(lang));
        }
        let (&i, up) = path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        parent.remove(self.txn, i, 1);
        parent.write(self.txn, i, &[node]);
        Ok(self.caret_at(path, 0))
    }

    /// The sibling range (in one container) covering the selection's
    /// blocks: (container path, first index, last index). With
    /// `keep_items`, a range that would take a list item's leading
    /// paragraph takes the whole list instead.
    fn sibling_range(&self, sel: &Sel, keep_items: bool) -> (Path, u32, u32) {
        let (a, b) = (&sel.from().path, &sel.to().path);
        let common = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
        let depth = common.min(a.len() - 1).min(b.len() - 1);
        let mut container = a[..depth].to_vec();
        let (mut first, mut last) = (a[depth], b[depth]);
        while keep_items
            && first == 0
            && container.len() >= 2
            && parent_at(self.txn, &self.root, &container).and_then(|p| p.kind())
                == Some(NodeType::ListItem)
        {
            let list_index = container[container.len() - 2];
            container.truncate(container.len() - 2);
            first = list_index;
            last = list_index;
        }
        (container, first, last)
    }

    /// Wraps the selected blocks in a quote, or unwraps the quote they are in.
    pub fn toggle_blockquote(&mut self, sel: &Sel) -> Res {
        let from = sel.from().clone();
        // Inside a quote: unwrap the innermost one.
        for depth in (1..from.path.len()).rev() {
            let p = &from.path[..depth];
            if let Ok(el) = self.el(p)
                && kind_of(&el) == Some(NodeType::Blockquote)
            {
                let children = json::read_children(self.txn, &el);
                let (&i, up) = p.split_last().expect("a path");
                let parent = self.parent(up)?;
                let n = children.len() as u32;
                parent.remove(self.txn, i, 1);
                parent.write(self.txn, i, &children);
                let _ = n;
                let mut target = up.to_vec();
                target.extend_from_slice(&from.path[depth..]);
                target[up.len()] += i;
                return Ok(self.caret_at(&target, from.off));
            }
        }
        let (container, first, last) = self.sibling_range(sel, true);
        let parent = self.parent(&container)?;
        let nodes: Vec<Node> = (first..=last)
            .filter_map(|i| parent.element(self.txn, i))
            .map(|e| json::read_element(self.txn, &e))
            .collect();
        parent.remove(self.txn, first, last - first + 1);
        parent.write(self.txn, first, &[Node::new(NodeType::Blockquote, nodes)]);
        let remap = |p: &Path| {
            let mut q = container.clone();
            q.push(first);
            q.push(p[container.len()] - first);
            q.extend_from_slice(&p[container.len() + 1..]);
            q
        };
        let (a, b) = (remap(&sel.from().path), remap(&sel.to().path));
        Ok(self.range_after(&Pos::new(a, sel.from().off), &Pos::new(b, sel.to().off)))
    }

    /// The list type the selection is in (its innermost list), with that list's path.
    pub fn list_at(&self, path: &[u32]) -> Option<(NodeType, Path)> {
        for depth in (1..path.len()).rev() {
            let p = &path[..depth];
            let el = element_at(self.txn, &self.root, p)?;
            if let Some(k) = kind_of(&el)
                && k.is_list()
            {
                return Some((k, p.to_vec()));
            }
        }
        None
    }

    /// The bullet / numbered list buttons: makes the selected blocks a
    /// list of `list`, changes the type of the list they are in, or (when
    /// they already are in such a list) makes them paragraphs again.
    pub fn toggle_list(&mut self, sel: &Sel, list: NodeType) -> Res {
        let from = sel.from().clone();
        if let Some((kind, list_path)) = self.list_at(&from.path) {
            if kind == list {
                return self.lift_items(sel, &list_path);
            }
            let el = self.el(&list_path)?;
            let items = json::read_children(self.txn, &el);
            let (&i, up) = list_path.split_last().ok_or(NotApplicable)?;
            let parent = self.parent(up)?;
            parent.remove(self.txn, i, 1);
            parent.write(self.txn, i, &[Node::new(list, items)]);
            return Ok(self.range_after(sel.from(), sel.to()));
        }
        let (container, first, last) = self.sibling_range(sel, false);
        let parent = self.parent(&container)?;
        let mut items: Vec<Node> = Vec::new();
        for i in first..=last {
            let Some(e) = parent.element(self.txn, i) else {
                continue;
            };
            let node = json::read_element(self.txn, &e);
            match node.node_type() {
                Some(k) if k.is_textblock() => {
                    let content = fit_inline(Some(NodeType::Paragraph), node.content);
                    items.push(Node::new(
                        NodeType::ListItem,
                        vec![Node::paragraph(content)],
                    ));
                }
                Some(k) if k.is_list() => items.extend(node.content),
                _ => match items.last_mut() {
                    Some(item) => item.content.push(node),
                    None => items.push(Node::new(
                        NodeType::ListItem,
                        vec![Node::paragraph(Vec::new()), node],
                    )),
                },
            }
        }
        let count = items.len() as u32;
        parent.remove(self.txn, first, last - first + 1);
        // Join a list of the same type just before.
        let prev = first
            .checked_sub(1)
            .and_then(|i| parent.element(self.txn, i));
        let (list_index, offset) = match prev {
            Some(p) if kind_of(&p) == Some(list) => {
                let n = p.len(self.txn);
                json::write(self.txn, &p, n, &items);
                (first - 1, n)
            }
            _ => {
                parent.write(self.txn, first, &[Node::new(list, items)]);
                (first, 0)
            }
        };
        let _ = count;
        let remap = |p: &Pos| {
            let mut q = container.clone();
            q.push(list_index);
            q.push(offset + p.path[container.len()] - first);
            q.push(0);
            Pos::new(q, p.off)
        };
        let (a, b) = (remap(sel.from()), remap(sel.to()));
        Ok(self.range_after(&a, &b))
    }

    /// Takes the selected items of the list at `list_path` out of it, as blocks.
    fn lift_items(&mut self, sel: &Sel, list_path: &[u32]) -> Res {
        let depth = list_path.len();
        let first = sel.from().path[depth];
        let last = if sel.to().path.len() > depth && sel.to().path[..depth] == *list_path {
            sel.to().path[depth]
        } else {
            first
        };
        let list = self.el(list_path)?;
        let kind = kind_of(&list).ok_or(NotApplicable)?;
        let attrs = json::read_element(self.txn, &list).attrs;
        let n = list.len(self.txn);
        let items = json::read_children(self.txn, &list);
        let before: Vec<Node> = items[..first as usize].to_vec();
        let lifted: Vec<Node> = items[first as usize..=last as usize]
            .iter()
            .flat_map(|item| item.content.clone())
            .collect();
        let after: Vec<Node> = items[last as usize + 1..n as usize].to_vec();
        let (&li, up) = list_path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        parent.remove(self.txn, li, 1);
        let mut nodes = Vec::new();
        let new_list = |content: Vec<Node>| {
            let mut node = Node::new(kind, content);
            node.attrs = attrs.clone();
            node
        };
        let lead = !before.is_empty();
        if lead {
            nodes.push(new_list(before));
        }
        let lifted_at = li + u32::from(lead);
        // Map the selection: item k's paragraph becomes block (k - first) counted by children.
        let offsets: Vec<u32> = items[first as usize..=last as usize]
            .iter()
            .scan(0u32, |acc, item| {
                let at = *acc;
                *acc += item.content.len() as u32;
                Some(at)
            })
            .collect();
        nodes.extend(lifted);
        if !after.is_empty() {
            nodes.push(new_list(after));
        }
        parent.write(self.txn, li, &nodes);
        let remap = |p: &Pos| {
            let mut q = up.to_vec();
            let k = p
                .path
                .get(depth)
                .copied()
                .unwrap_or(first)
                .clamp(first, last);
            q.push(
                lifted_at
                    + offsets[(k - first) as usize]
                    + p.path.get(depth + 1).copied().unwrap_or(0),
            );
            q.extend_from_slice(p.path.get(depth + 2..).unwrap_or(&[]));
            Pos::new(q, p.off)
        };
        let (a, b) = (remap(sel.from()), remap(sel.to()));
        Ok(self.range_after(&a, &b))
    }

    /// The list item the position is in: (item path, list path).
    fn item_at(&self, path: &[u32]) -> Option<(Path, Path)> {
        let (_, list_path) = self.list_at(path)?;
        let item = path[..=list_path.len()].to_vec();
        Some((item, list_path))
    }

    /// Tab in a list: the item becomes a child of the item before it.
    pub fn indent(&mut self, sel: &Sel) -> Res {
        let (item_path, list_path) = self.item_at(&sel.head.path).ok_or(NotApplicable)?;
        let index = *item_path.last().expect("an item");
        if index == 0 {
            return Err(NotApplicable);
        }
        let list = self.el(&list_path)?;
        let list_kind = kind_of(&list).ok_or(NotApplicable)?;
        let item = self.el(&item_path)?;
        let node = json::read_element(self.txn, &item);
        let prev = list
            .get(self.txn, index - 1)
            .and_then(XmlOut::into_xml_element)
            .ok_or(NotApplicable)?;
        list.remove_range(self.txn, index, 1);
        let prev_len = prev.len(self.txn);
        let last = prev
            .get(self.txn, prev_len - 1)
            .and_then(XmlOut::into_xml_element);
        let mut target = list_path.clone();
        target.push(index - 1);
        match last {
            Some(sub) if kind_of(&sub).is_some_and(NodeType::is_list) => {
                let n = sub.len(self.txn);
                json::write(self.txn, &sub, n, &[node]);
                target.extend([prev_len - 1, n]);
            }
            _ => {
                json::write(
                    self.txn,
                    &prev,
                    prev_len,
                    &[Node::new(list_kind, vec![node])],
                );
                target.extend([prev_len, 0]);
            }
        }
        let rest = &sel.head.path[item_path.len()..];
        target.extend_from_slice(rest);
        Ok(self.caret_at(&target, sel.head.off))
    }

    /// Shift+Tab in a list (and Enter or Backspace in an empty item): the
    /// item moves one level out; at the outermost level it becomes blocks.
    pub fn outdent(&mut self, sel: &Sel) -> Res {
        let (item_path, list_path) = self.item_at(&sel.head.path).ok_or(NotApplicable)?;
        let rest = sel.head.path[item_path.len()..].to_vec();
        let index = *item_path.last().expect("an item");
        let outer_item = list_path
            .len()
            .checked_sub(1)
            .map(|d| list_path[..d].to_vec());
        let nested = outer_item
            .as_ref()
            .and_then(|p| element_at(self.txn, &self.root, p))
            .is_some_and(|e| kind_of(&e) == Some(NodeType::ListItem));
        if !nested {
            let pos = Pos::new(sel.head.path.clone(), sel.head.off);
            return self.lift_items(&Sel::caret(pos), &list_path);
        }
        let outer_item = outer_item.expect("nested");
        let list = self.el(&list_path)?;
        let list_kind = kind_of(&list).ok_or(NotApplicable)?;
        let item = self.el(&item_path)?;
        let mut node = json::read_element(self.txn, &item);
        let n = list.len(self.txn);
        // The items after it become its children.
        let following: Vec<Node> = (index + 1..n)
            .filter_map(|i| list.get(self.txn, i).and_then(XmlOut::into_xml_element))
            .map(|e| json::read_element(self.txn, &e))
            .collect();
        if !following.is_empty() {
            match node.content.last_mut() {
                Some(sub) if sub.node_type() == Some(list_kind) => sub.content.extend(following),
                _ => node.content.push(Node::new(list_kind, following)),
            }
        }
        list.remove_range(self.txn, index, n - index);
        let (&oi, outer_list_path) = outer_item.split_last().expect("an item");
        let outer_list = self.parent(outer_list_path)?;
        outer_list.write(self.txn, oi + 1, &[node]);
        self.repair(&list_path);
        let mut target = outer_list_path.to_vec();
        target.push(oi + 1);
        target.extend_from_slice(&rest);
        Ok(self.caret_at(&target, sel.head.off))
    }

    /// A horizontal rule at the caret (the block is split around it).
    pub fn insert_rule(&mut self, sel: &Sel) -> Res {
        let pos = self.delete_selection(sel)?;
        let (el, off) = self.clamp(&pos)?;
        let len = inline_len(self.txn, &el);
        let (&i, up) = pos.path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        let rule = Node::new(NodeType::HorizontalRule, Vec::new());
        if len == 0 {
            parent.write(self.txn, i, &[rule]);
            return Ok(self.caret_at(&[up, &[i + 1]].concat(), 0));
        }
        let tail = slice_inline(self.txn, &el, off, len);
        delete_inline(self.txn, &el, off, len);
        let mut after = json::read_element(self.txn, &el);
        after.content = tail;
        if off == 0 {
            parent.remove(self.txn, i, 1);
            parent.write(self.txn, i, &[rule, after]);
        } else {
            if off == len {
                after = Node::paragraph(Vec::new());
            }
            parent.write(self.txn, i + 1, &[rule, after]);
        }
        let at = if off == 0 { i + 1 } else { i + 2 };
        Ok(self.caret_at(&[up, &[at]].concat(), 0))
    }

    /// Inserts pasted content (ProseMirror JSON nodes: blocks, or inline nodes).
    pub fn insert_nodes(&mut self, sel: &Sel, nodes: Vec<Node>) -> Res {
        let pos = self.delete_selection(sel)?;
        let (el, off) = self.clamp(&pos)?;
        if nodes.is_empty() {
            return Ok(After::Caret(Caret { el, off }));
        }
        let kind = kind_of(&el);
        if nodes
            .iter()
            .all(|n| n.is_text() || n.node_type() == Some(NodeType::HardBreak))
        {
            let n = insert_inline(self.txn, &el, off, nodes);
            return Ok(After::Caret(Caret { el, off: off + n }));
        }
        if kind == Some(NodeType::CodeBlock) {
            let text = nodes
                .iter()
                .map(Node::text_content)
                .collect::<Vec<_>>()
                .join("\n");
            let n = insert_inline(self.txn, &el, off, vec![Node::text(text, Vec::new())]);
            return Ok(After::Caret(Caret { el, off: off + n }));
        }
        let len = inline_len(self.txn, &el);
        let (&i, up) = pos.path.split_last().ok_or(NotApplicable)?;
        let parent = self.parent(up)?;
        let in_item = parent.kind() == Some(NodeType::ListItem);
        let tail = slice_inline(self.txn, &el, off, len);
        delete_inline(self.txn, &el, off, len);
        let mut rest = nodes;
        // The first pasted text block joins the text before the caret.
        let first_inline = rest[0].node_type().is_some_and(NodeType::is_textblock)
            && (kind == Some(NodeType::Paragraph) || rest[0].node_type() == kind);
        let mut caret_path = pos.path.clone();
        let mut caret_off = off;
        if first_inline {
            let first = rest.remove(0);
            let content = fit_inline(kind, first.content);
            caret_off = off
                + content
                    .iter()
                    .map(|n| {
                        n.text
                            .as_deref()
                            .map_or(1, |t| t.encode_utf16().count() as u32)
                    })
                    .sum::<u32>();
            append_inline(self.txn, &el, &content);
            normalize(self.txn, &el);
        }
        if in_item {
            rest.retain(|n| n.node_type() != Some(NodeType::ListItem));
        }
        let count = rest.len() as u32;
        parent.write(self.txn, i + 1, &rest);
        // The text after the caret goes after the pasted content.
        let last_index = i + count;
        let last_el = parent.element(self.txn, last_index);
        if count > 0 {
            let target = last_el
                .filter(is_textblock)
                .map(|e| ([up, &[last_index]].concat(), e));
            match target {
                Some((p, e)) => {
                    let l = inline_len(self.txn, &e);
                    caret_path = p;
                    caret_off = l;
                    let tail = fit_inline(kind_of(&e), tail);
                    append_inline(self.txn, &e, &tail);
                    normalize(self.txn, &e);
                }
                None => {
                    let mut node = Node::paragraph(tail);
                    if kind == Some(NodeType::Heading) {
                        node = json::read_element(self.txn, &el);
                        node.content = fit_inline(kind, slice_inline(self.txn, &el, 0, 0));
                    }
                    parent.write(self.txn, last_index + 1, &[node]);
                    caret_path = [up, &[last_index + 1]].concat();
                    caret_off = 0;
                }
            }
        } else {
            append_inline(self.txn, &el, &tail);
            normalize(self.txn, &el);
        }
        Ok(self.caret_at(&caret_path, caret_off))
    }
}

/// The extent of the link around `off` in `el`, if the caret is in one.
pub fn link_extent<T: ReadTxn>(txn: &T, el: &XmlElementRef, off: u32) -> Option<(u32, u32)> {
    let runs = runs(txn, el);
    let link_of = |marks: &[Mark]| {
        marks
            .iter()
            .find(|m| m.mark_type() == Some(MarkType::Link))
            .cloned()
    };
    let here = runs
        .iter()
        .position(|(s, l, m, _)| *s <= off && off <= s + l && link_of(m).is_some())?;
    let link = link_of(&runs[here].2)?;
    let mut first = here;
    while first > 0
        && link_of(&runs[first - 1].2).as_ref() == Some(&link)
        && runs[first - 1].0 + runs[first - 1].1 == runs[first].0
    {
        first -= 1;
    }
    let mut last = here;
    while last + 1 < runs.len()
        && link_of(&runs[last + 1].2).as_ref() == Some(&link)
        && runs[last].0 + runs[last].1 == runs[last + 1].0
    {
        last += 1;
    }
    Some((runs[first].0, runs[last].0 + runs[last].1))
}

/// The link mark at `off`, if any.
pub fn link_at<T: ReadTxn>(txn: &T, el: &XmlElementRef, off: u32) -> Option<Mark> {
    runs(txn, el)
        .into_iter()
        .find(|(s, l, _, _)| *s <= off && off <= s + l)
        .and_then(|(_, _, m, _)| {
            m.into_iter()
                .find(|m| m.mark_type() == Some(MarkType::Link))
        })
}

pub fn heading_level<T: ReadTxn>(txn: &T, el: &XmlElementRef) -> u8 {
    match el.get_attribute(txn, "level") {
        Some(Out::Any(Any::Number(n))) => n.as_i64().unwrap_or(1).clamp(1, 6) as u8,
        Some(Out::Any(Any::String(s))) => s.parse().unwrap_or(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
