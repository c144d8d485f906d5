//! The view's mirror of the document: one [`VBlock`] per element, in the
//! same shape as the DOM it drew, each holding a handle `H` to its DOM
//! node (a `web_sys::Node` in the browser, a plain number in the unit
//! tests). The mirror is what maps positions both ways:
//!
//! - model → DOM ([`Tree::dom_point`]): a [`Pos`] (text block path,
//!   offset) becomes a DOM point: a text node and an offset in it, or an
//!   element and a child index;
//! - DOM → model ([`Tree::pos_at`]): a DOM point, given as the chain of
//!   DOM nodes from a top-level block down to the node the browser names,
//!   becomes a [`Pos`] (the chunks the DOM groups top-level blocks in,
//!   see [`super::dom`], are left out of the chain by the caller).
//!
//! Inline content is kept as *items*: one per formatted run of text, one
//! per hard break (or other inline node); each item is one child of the
//! block's content element in the DOM, so an item index is also a DOM
//! child index.

use quire_protocol::rich::{Mark, NodeType};
use yrs::BranchID;

use super::edit::{Path, Pos};

/// What a block is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Known(NodeType),
    /// An element of a type Quire does not know: shown, never edited.
    Unknown(String),
}

impl Kind {
    pub fn node_type(&self) -> Option<NodeType> {
        match self {
            Kind::Known(t) => Some(*t),
            Kind::Unknown(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct VBlock<H> {
    pub kind: Kind,
    /// The yrs element it draws (none for text straight in a container),
    /// so a node of the document is found in the mirror without walking
    /// yrs' lists (which costs a step per block before it).
    pub id: Option<BranchID>,
    /// The block's outermost DOM element.
    pub dom: H,
    pub body: Body<H>,
}

#[derive(Debug, Clone)]
pub enum Body<H> {
    Blocks(Vec<VBlock<H>>),
    Inline(VInline<H>),
    /// Rules and unknown nodes: nothing to put a caret in.
    Leaf,
}

#[derive(Debug, Clone)]
pub struct VInline<H> {
    /// The element whose children are the items (the block itself, or
    /// `<code>` inside `<pre>`).
    pub content: H,
    pub items: Vec<VItem<H>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    Text {
        text: String,
        marks: Vec<Mark>,
    },
    Break,
    /// An inline node of a type Quire does not know (counts 1, like a leaf).
    Other(String),
}

#[derive(Debug, Clone)]
pub struct VItem<H> {
    pub kind: ItemKind,
    /// Length in UTF-16 units (1 for a break).
    pub len: u32,
    /// The item's DOM node: a child of the content element.
    pub dom: H,
    /// The text node inside it (for text items).
    pub text: Option<H>,
}

impl<H> VInline<H> {
    pub fn len(&self) -> u32 {
        self.items.iter().map(|i| i.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block's text before offset `off` (inline nodes as U+FFFC, as
    /// `edit::block_text` writes them).
    pub fn text_before(&self, off: u32) -> String {
        let mut units: Vec<u16> = Vec::new();
        for item in &self.items {
            if units.len() >= off as usize {
                break;
            }
            match &item.kind {
                ItemKind::Text { text, .. } => units.extend(text.encode_utf16()),
                ItemKind::Break | ItemKind::Other(_) => units.push(0xFFFC),
            }
        }
        units.truncate(off as usize);
        String::from_utf16_lossy(&units)
    }

    /// The item holding offset `off`, with its start. At a boundary a
    /// text item before wins (typing there continues its marks).
    pub fn item_at(&self, off: u32) -> Option<(usize, u32)> {
        let mut at = 0;
        let mut boundary = None;
        for (i, item) in self.items.iter().enumerate() {
            let end = at + item.len;
            let is_text = matches!(item.kind, ItemKind::Text { .. });
            if is_text && at <= off && off <= end && (off < end || boundary.is_none()) {
                return Some((i, at));
            }
            if is_text && off == end {
                boundary = Some((i, at));
            }
            at = end;
        }
        boundary
    }
}

/// A point in the DOM, in terms of handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomPoint<H> {
    /// In a text node.
    Text(H, u32),
    /// In an element, before child `index`.
    Element(H, u32),
}

/// The mirror of the whole document: the top-level blocks (in the DOM,
/// children of the editor root's chunks).
#[derive(Debug, Clone)]
pub struct Tree<H> {
    pub root: H,
    pub blocks: Vec<VBlock<H>>,
}

impl<H: Clone + PartialEq> Tree<H> {
    pub fn block(&self, path: &[u32]) -> Option<&VBlock<H>> {
        let (&first, rest) = path.split_first()?;
        let mut block = self.blocks.get(first as usize)?;
        for &i in rest {
            match &block.body {
                Body::Blocks(children) => block = children.get(i as usize)?,
                _ => return None,
            }
        }
        Some(block)
    }

    pub fn block_mut(&mut self, path: &[u32]) -> Option<&mut VBlock<H>> {
        let (&first, rest) = path.split_first()?;
        let mut block = self.blocks.get_mut(first as usize)?;
        for &i in rest {
            match &mut block.body {
                Body::Blocks(children) => block = children.get_mut(i as usize)?,
                _ => return None,
            }
        }
        Some(block)
    }

    /// The children list at `path` (empty path: the root's).
    pub fn children_mut(&mut self, path: &[u32]) -> Option<&mut Vec<VBlock<H>>> {
        if path.is_empty() {
            return Some(&mut self.blocks);
        }
        match &mut self.block_mut(path)?.body {
            Body::Blocks(children) => Some(children),
            _ => None,
        }
    }

    pub fn inline(&self, path: &[u32]) -> Option<&VInline<H>> {
        match &self.block(path)?.body {
            Body::Inline(inline) => Some(inline),
            _ => None,
        }
    }

    /// The path of the block drawing the yrs element `id`: `near` first
    /// (where the caret was: a keystroke's block), else a walk of the
    /// mirror. Right only while the mirror is up to date with yrs (after a
    /// transaction's events were applied, never inside one).
    pub fn path_of_id(&self, id: &BranchID, near: &[&[u32]]) -> Option<Path> {
        for path in near {
            // The block itself or one of its containers.
            for depth in (1..=path.len()).rev() {
                if self.block(&path[..depth]).and_then(|b| b.id.as_ref()) == Some(id) {
                    return Some(path[..depth].to_vec());
                }
            }
        }
        fn walk<H>(blocks: &[VBlock<H>], id: &BranchID, base: &mut Path) -> bool {
            for (i, b) in blocks.iter().enumerate() {
                base.push(i as u32);
                if b.id.as_ref() == Some(id) {
                    return true;
                }
                if let Body::Blocks(children) = &b.body
                    && walk(children, id, base)
                {
                    return true;
                }
                base.pop();
            }
            false
        }
        let mut path = Vec::new();
        walk(&self.blocks, id, &mut path).then_some(path)
    }

    /// Every text block path, in document order.
    pub fn textblocks(&self) -> Vec<Path> {
        fn walk<H>(blocks: &[VBlock<H>], base: &mut Path, out: &mut Vec<Path>) {
            for (i, b) in blocks.iter().enumerate() {
                base.push(i as u32);
                match &b.body {
                    Body::Inline(_) => out.push(base.clone()),
                    Body::Blocks(children) => walk(children, base, out),
                    Body::Leaf => {}
                }
                base.pop();
            }
        }
        let mut out = Vec::new();
        walk(&self.blocks, &mut Vec::new(), &mut out);
        out
    }

    fn first_in(&self, path: &[u32]) -> Option<Pos> {
        let block = self.block(path)?;
        match &block.body {
            Body::Inline(_) => Some(Pos::new(path.to_vec(), 0)),
            Body::Blocks(children) => {
                (0..children.len() as u32).find_map(|i| self.first_in(&[path, &[i]].concat()))
            }
            Body::Leaf => None,
        }
    }

    fn last_in(&self, path: &[u32]) -> Option<Pos> {
        let block = self.block(path)?;
        match &block.body {
            Body::Inline(inline) => Some(Pos::new(path.to_vec(), inline.len())),
            Body::Blocks(children) => (0..children.len() as u32)
                .rev()
                .find_map(|i| self.last_in(&[path, &[i]].concat())),
            Body::Leaf => None,
        }
    }

    /// The position nearest to "before child `index` of the container at
    /// `path`": the start of the next text block, else the end of the one before.
    pub fn pos_before_child(&self, path: &[u32], index: u32) -> Option<Pos> {
        let count = if path.is_empty() {
            self.blocks.len()
        } else {
            match &self.block(path)?.body {
                Body::Blocks(c) => c.len(),
                _ => 0,
            }
        } as u32;
        (index..count)
            .find_map(|i| self.first_in(&[path, &[i]].concat()))
            .or_else(|| {
                (0..index.min(count))
                    .rev()
                    .find_map(|i| self.last_in(&[path, &[i]].concat()))
            })
            .or_else(|| {
                // Nothing inside: look around the container itself.
                let (&last, up) = path.split_last()?;
                self.pos_before_child(up, last + 1)
            })
    }

    /// Model → DOM.
    pub fn dom_point(&self, pos: &Pos) -> Option<DomPoint<H>> {
        let inline = self.inline(&pos.path)?;
        let off = pos.off.min(inline.len());
        match inline.item_at(off) {
            Some((i, start)) => {
                let item = &inline.items[i];
                let text = item.text.clone()?;
                Some(DomPoint::Text(text, off - start))
            }
            None => {
                // No text there: between items (after breaks, or an empty block).
                let mut at = 0;
                let mut index = 0;
                for item in &inline.items {
                    if at >= off {
                        break;
                    }
                    at += item.len;
                    index += 1;
                }
                Some(DomPoint::Element(inline.content.clone(), index))
            }
        }
    }

    /// DOM → model. `chain` runs from a top-level block's node down to
    /// the node the browser named; `offset` is the browser's offset in
    /// that node (a text offset for text nodes, a child index otherwise).
    /// An empty chain means the editor root itself.
    pub fn pos_at(&self, chain: &[H], node_is_text: bool, offset: u32) -> Option<Pos> {
        self.pos_at_near(chain, node_is_text, offset, &[])
    }

    /// [`Tree::pos_at`], trying the blocks on the path `near` first (where
    /// the selection last was) before searching each level's children.
    pub fn pos_at_near(
        &self,
        chain: &[H],
        node_is_text: bool,
        offset: u32,
        near: &[u32],
    ) -> Option<Pos> {
        let mut path: Path = Vec::new();
        let mut children = &self.blocks;
        let mut rest = chain;
        if rest.is_empty() {
            return self.pos_before_child(&[], offset);
        }
        loop {
            let node = &rest[0];
            let hinted = near
                .get(path.len())
                .map(|&i| i as usize)
                .filter(|&i| children.get(i).is_some_and(|b| &b.dom == node));
            let Some(index) = hinted.or_else(|| children.iter().position(|b| &b.dom == node))
            else {
                // Something the mirror does not know (should not happen): nearest block.
                return self.pos_before_child(&path, 0);
            };
            path.push(index as u32);
            let block = &children[index];
            rest = &rest[1..];
            match &block.body {
                Body::Blocks(inner) => {
                    if rest.is_empty() {
                        return self.pos_before_child(&path, offset);
                    }
                    children = inner;
                }
                Body::Leaf => {
                    let (&last, up) = path.split_last().expect("a block");
                    return self.pos_before_child(up, last + u32::from(offset > 0));
                }
                Body::Inline(inline) => {
                    // Skip wrappers between the block and its content element (`<pre>` → `<code>`).
                    let mut tail = rest;
                    if block.dom != inline.content {
                        match tail.iter().position(|n| n == &inline.content) {
                            Some(p) => tail = &tail[p + 1..],
                            None => {
                                let end = if offset > 0 { inline.len() } else { 0 };
                                return Some(Pos::new(path, end));
                            }
                        }
                    }
                    if tail.is_empty() {
                        // In the content element, before child `offset`.
                        let off = inline
                            .items
                            .iter()
                            .take(offset as usize)
                            .map(|i| i.len)
                            .sum();
                        return Some(Pos::new(path, off));
                    }
                    let item_node = &tail[0];
                    let Some(j) = inline.items.iter().position(|i| &i.dom == item_node) else {
                        // A node the browser added (the trailing <br>, say): the end.
                        return Some(Pos::new(path, inline.len()));
                    };
                    let start: u32 = inline.items[..j].iter().map(|i| i.len).sum();
                    let item = &inline.items[j];
                    let inner = if node_is_text && tail.last() == item.text.as_ref() {
                        offset.min(item.len)
                    } else if tail.len() == 1 && !node_is_text {
                        // In the item's element: before or after its content.
                        if offset > 0 { item.len } else { 0 }
                    } else if node_is_text {
                        offset.min(item.len)
                    } else if offset > 0 {
                        item.len
                    } else {
                        0
                    };
                    return Some(Pos::new(path, start + inner));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_protocol::rich::MarkType;

    /// Handles are numbers; `n` hands out fresh ones.
    struct Ids(u32);
    impl Ids {
        fn next(&mut self) -> u32 {
            self.0 += 1;
            self.0
        }
    }

    fn text_item(ids: &mut Ids, text: &str, marks: &[MarkType]) -> VItem<u32> {
        let marks: Vec<Mark> = marks.iter().map(|&m| Mark::of(m)).collect();
        let dom = ids.next();
        // A marked run wraps its text node; a plain run is the text node.
        let text_node = if marks.is_empty() { dom } else { ids.next() };
        VItem {
            len: text.encode_utf16().count() as u32,
            kind: ItemKind::Text {
                text: text.into(),
                marks,
            },
            dom,
            text: Some(text_node),
        }
    }

    fn br(ids: &mut Ids) -> VItem<u32> {
        VItem {
            kind: ItemKind::Break,
            len: 1,
            dom: ids.next(),
            text: None,
        }
    }

    fn para(ids: &mut Ids, items: Vec<VItem<u32>>) -> VBlock<u32> {
        let dom = ids.next();
        VBlock {
            kind: Kind::Known(NodeType::Paragraph),
            id: None,
            dom,
            body: Body::Inline(VInline {
                content: dom,
                items,
            }),
        }
    }

    fn container(ids: &mut Ids, kind: NodeType, children: Vec<VBlock<u32>>) -> VBlock<u32> {
        VBlock {
            kind: Kind::Known(kind),
            id: None,
            dom: ids.next(),
            body: Body::Blocks(children),
        }
    }

    /// p0: "ab" + <strong>"cd"</strong> + <br> + "e"; ul > li > p "x"; hr; p (empty)
    fn sample() -> (Tree<u32>, Ids) {
        let mut ids = Ids(100);
        let items = vec![
            text_item(&mut ids, "ab", &[]),
            text_item(&mut ids, "cd", &[MarkType::Bold]),
            br(&mut ids),
            text_item(&mut ids, "e", &[]),
        ];
        let p0 = para(&mut ids, items);
        let x = text_item(&mut ids, "x", &[]);
        let p1 = para(&mut ids, vec![x]);
        let li = container(&mut ids, NodeType::ListItem, vec![p1]);
        let ul = container(&mut ids, NodeType::BulletList, vec![li]);
        let hr = VBlock {
            kind: Kind::Known(NodeType::HorizontalRule),
            id: None,
            dom: ids.next(),
            body: Body::Leaf,
        };
        let p2 = para(&mut ids, vec![]);
        (
            Tree {
                root: 1,
                blocks: vec![p0, ul, hr, p2],
            },
            ids,
        )
    }

    #[test]
    fn text_before_an_offset_counts_breaks_as_one() {
        let (tree, _) = sample();
        let p0 = tree.inline(&[0]).unwrap();
        assert_eq!(p0.text_before(0), "");
        assert_eq!(p0.text_before(3), "abc");
        assert_eq!(p0.text_before(5), "abcd\u{FFFC}");
        assert_eq!(p0.text_before(99), "abcd\u{FFFC}e");
    }

    #[test]
    fn blocks_are_found_by_their_yrs_id_near_the_caret_or_anywhere() {
        let (mut tree, _) = sample();
        let id = |clock| BranchID::Nested(yrs::ID::new(yrs::block::ClientID::new(7), clock));
        tree.block_mut(&[1]).unwrap().id = Some(id(1));
        tree.block_mut(&[1, 0, 0]).unwrap().id = Some(id(2));
        tree.block_mut(&[3]).unwrap().id = Some(id(3));
        // The caret's block, and a container of it.
        assert_eq!(tree.path_of_id(&id(2), &[&[1, 0, 0]]), Some(vec![1, 0, 0]));
        assert_eq!(tree.path_of_id(&id(1), &[&[1, 0, 0]]), Some(vec![1]));
        // Elsewhere: the walk finds it; a wrong hint does not mislead it.
        assert_eq!(tree.path_of_id(&id(3), &[&[1, 0, 0]]), Some(vec![3]));
        assert_eq!(tree.path_of_id(&id(2), &[]), Some(vec![1, 0, 0]));
        assert_eq!(tree.path_of_id(&id(9), &[&[3]]), None);
    }

    #[test]
    fn a_dom_point_maps_the_same_with_or_without_a_hint() {
        let (tree, _) = sample();
        let li = tree.block(&[1, 0]).unwrap();
        let p1 = tree.block(&[1, 0, 0]).unwrap();
        let x = tree.inline(&[1, 0, 0]).unwrap().items[0].clone();
        let chain = [tree.block(&[1]).unwrap().dom, li.dom, p1.dom, x.dom];
        let expected = Some(Pos::new(vec![1, 0, 0], 1));
        assert_eq!(tree.pos_at(&chain, true, 1), expected);
        for near in [&[1, 0, 0][..], &[0], &[3, 5, 7], &[]] {
            assert_eq!(
                tree.pos_at_near(&chain, true, 1, near),
                expected,
                "{near:?}"
            );
        }
    }

    fn p0_items(tree: &Tree<u32>) -> Vec<VItem<u32>> {
        tree.inline(&[0]).unwrap().items.clone()
    }

    #[test]
    fn model_to_dom_across_marks_and_breaks() {
        let (tree, _) = sample();
        let items = p0_items(&tree);
        let (ab, cd, e) = (
            items[0].text.unwrap(),
            items[1].text.unwrap(),
            items[3].text.unwrap(),
        );
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 0)),
            Some(DomPoint::Text(ab, 0))
        );
        // At the boundary between two runs the run before wins.
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 2)),
            Some(DomPoint::Text(ab, 2))
        );
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 3)),
            Some(DomPoint::Text(cd, 1))
        );
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 4)),
            Some(DomPoint::Text(cd, 2))
        );
        // After the break: the next text run's start.
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 5)),
            Some(DomPoint::Text(e, 0))
        );
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 6)),
            Some(DomPoint::Text(e, 1))
        );
        // Past the end is clamped.
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 99)),
            Some(DomPoint::Text(e, 1))
        );
        // Nested list item.
        let x = tree.inline(&[1, 0, 0]).unwrap().items[0].text.unwrap();
        assert_eq!(
            tree.dom_point(&Pos::new(vec![1, 0, 0], 1)),
            Some(DomPoint::Text(x, 1))
        );
        // An empty paragraph: the element itself.
        let p2 = tree.block(&[3]).unwrap().dom;
        assert_eq!(
            tree.dom_point(&Pos::new(vec![3], 0)),
            Some(DomPoint::Element(p2, 0))
        );
        // Not a text block.
        assert_eq!(tree.dom_point(&Pos::new(vec![2], 0)), None);
    }

    #[test]
    fn a_break_at_the_end_leaves_an_element_point() {
        let mut ids = Ids(1);
        let items = vec![text_item(&mut ids, "a", &[]), br(&mut ids)];
        let p = para(&mut ids, items);
        let dom = p.dom;
        let tree = Tree {
            root: 0,
            blocks: vec![p],
        };
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 2)),
            Some(DomPoint::Element(dom, 2))
        );
        assert_eq!(tree.pos_at(&[dom], false, 2), Some(Pos::new(vec![0], 2)));
    }

    #[test]
    fn dom_to_model_in_text_wrappers_and_containers() {
        let (tree, _) = sample();
        let items = p0_items(&tree);
        let p0 = tree.block(&[0]).unwrap().dom;
        // In the plain text node "ab".
        assert_eq!(
            tree.pos_at(&[p0, items[0].dom], true, 1),
            Some(Pos::new(vec![0], 1))
        );
        // In the text node inside <strong>.
        assert_eq!(
            tree.pos_at(&[p0, items[1].dom, items[1].text.unwrap()], true, 2),
            Some(Pos::new(vec![0], 4))
        );
        // On the <strong> element itself, after its child.
        assert_eq!(
            tree.pos_at(&[p0, items[1].dom], false, 1),
            Some(Pos::new(vec![0], 4))
        );
        // In the paragraph, before child 3 (after the break).
        assert_eq!(tree.pos_at(&[p0], false, 3), Some(Pos::new(vec![0], 5)));
        // Inside the list.
        let ul = tree.block(&[1]).unwrap();
        let li = tree.block(&[1, 0]).unwrap();
        let p1 = tree.block(&[1, 0, 0]).unwrap();
        let x = tree.inline(&[1, 0, 0]).unwrap().items[0].dom;
        assert_eq!(
            tree.pos_at(&[ul.dom, li.dom, p1.dom, x], true, 1),
            Some(Pos::new(vec![1, 0, 0], 1))
        );
        // On the list element: the nearest text block.
        assert_eq!(
            tree.pos_at(&[ul.dom], false, 0),
            Some(Pos::new(vec![1, 0, 0], 0))
        );
        // On the rule: the block after it.
        let hr = tree.block(&[2]).unwrap().dom;
        assert_eq!(tree.pos_at(&[hr], false, 0), Some(Pos::new(vec![3], 0)));
        // On the editor root between blocks.
        assert_eq!(tree.pos_at(&[], false, 2), Some(Pos::new(vec![3], 0)));
        assert_eq!(tree.pos_at(&[], false, 4), Some(Pos::new(vec![3], 0)));
        assert_eq!(tree.pos_at(&[], false, 1), Some(Pos::new(vec![1, 0, 0], 0)));
    }

    #[test]
    fn the_two_mappings_agree_for_every_offset() {
        let (tree, _) = sample();
        // For every position of every text block, DOM and back gives the same position.
        for path in tree.textblocks() {
            let len = tree.inline(&path).unwrap().len();
            for off in 0..=len {
                let pos = Pos::new(path.clone(), off);
                let point = tree.dom_point(&pos).unwrap();
                let back = match point {
                    DomPoint::Text(node, o) => {
                        let chain = chain_to(&tree, &path, Some(node));
                        tree.pos_at(&chain, true, o)
                    }
                    DomPoint::Element(node, i) => {
                        let chain = chain_to(&tree, &path, None);
                        assert_eq!(chain.last(), Some(&node));
                        tree.pos_at(&chain, false, i)
                    }
                };
                assert_eq!(back, Some(pos), "round trip");
            }
        }
    }

    /// The DOM chain from the root's child down to `leaf` (a text node of
    /// the block at `path`), or to the block's content element.
    fn chain_to(tree: &Tree<u32>, path: &[u32], leaf: Option<u32>) -> Vec<u32> {
        let mut chain = Vec::new();
        for depth in 1..=path.len() {
            chain.push(tree.block(&path[..depth]).unwrap().dom);
        }
        if let Some(leaf) = leaf {
            let inline = tree.inline(path).unwrap();
            let item = inline.items.iter().find(|i| i.text == Some(leaf)).unwrap();
            chain.push(item.dom);
            if item.dom != leaf {
                chain.push(leaf);
            }
        }
        chain
    }

    #[test]
    fn splits_and_joins_move_positions_with_the_items() {
        // "hello" split at 2 is "he" | "llo": position 4 of the old block is 2 of the new one.
        let mut ids = Ids(0);
        let he = text_item(&mut ids, "he", &[]);
        let a = para(&mut ids, vec![he]);
        let llo = text_item(&mut ids, "llo", &[]);
        let b = para(&mut ids, vec![llo]);
        let tree = Tree {
            root: 0,
            blocks: vec![a, b],
        };
        let llo = tree.inline(&[1]).unwrap().items[0].text.unwrap();
        assert_eq!(
            tree.dom_point(&Pos::new(vec![1], 2)),
            Some(DomPoint::Text(llo, 2))
        );
        // Joined again, as one block of two runs with different marks.
        let mut ids = Ids(50);
        let items = vec![
            text_item(&mut ids, "he", &[]),
            text_item(&mut ids, "llo", &[MarkType::Italic]),
        ];
        let joined = para(&mut ids, items);
        let tree = Tree {
            root: 0,
            blocks: vec![joined],
        };
        let items = &tree.inline(&[0]).unwrap().items;
        assert_eq!(
            tree.dom_point(&Pos::new(vec![0], 4)),
            Some(DomPoint::Text(items[1].text.unwrap(), 2))
        );
        assert_eq!(tree.textblocks(), vec![vec![0]]);
    }
}
