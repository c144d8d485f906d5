//! HTML for rich documents: [`to_html`] writes a complete HTML5 document
//! (everywhere, the browser included); [`from_html`] reads one (feature
//! `import`).
//!
//! **Architecture Invariant:** the writer is safe by construction: every
//! text and attribute value is escaped, the only elements are the schema's
//! semantic ones, and the only URL ever written is a link's `href` that
//! [`clickable_href`] accepts. The reader never lets markup through: the
//! input is sanitised by ammonia with an allowlist (script, style,
//! template and title content removed, every attribute but `a[href]`,
//! `ol[start]` and `code[class]` dropped, URLs only http, https, mailto or
//! relative), then parsed by html5ever and mapped onto the schema, where
//! only text, the schema's nodes and marks, and clickable hrefs exist.

use super::json::{Mark, Node};
use super::normalise;
use super::schema::{MarkType, NodeType, clickable_href};

/// The document as a complete HTML5 document titled `title`.
pub fn to_html(doc: &Node, title: &str) -> String {
    let mut out = document_start(title);
    blocks(&doc.content, &mut out);
    out.push_str(DOCUMENT_END);
    out
}

/// Everything before the first block (for writing a big document one
/// top-level block at a time with [`block`], then [`DOCUMENT_END`]).
pub fn document_start(title: &str) -> String {
    let mut out =
        String::from("<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>");
    escape_into(title, &mut out);
    out.push_str("</title>\n</head>\n<body>\n");
    out
}

/// Everything after the last block.
pub const DOCUMENT_END: &str = "</body>\n</html>\n";

fn blocks(nodes: &[Node], out: &mut String) {
    for node in nodes {
        block(node, out);
    }
}

/// One block as HTML, appended to `out`.
pub fn block(node: &Node, out: &mut String) {
    let Some(kind) = node.node_type() else {
        // An unknown node: its text, as a paragraph.
        out.push_str("<p>");
        escape_into(&node.text_content(), out);
        out.push_str("</p>\n");
        return;
    };
    match kind {
        NodeType::Paragraph => {
            out.push_str("<p>");
            inline(&node.content, out);
            out.push_str("</p>\n");
        }
        NodeType::Heading => {
            let level = normalise::heading_level(node);
            out.push_str(&format!("<h{level}>"));
            inline(&node.content, out);
            out.push_str(&format!("</h{level}>\n"));
        }
        NodeType::Blockquote => {
            out.push_str("<blockquote>\n");
            blocks(&node.content, out);
            out.push_str("</blockquote>\n");
        }
        NodeType::BulletList => {
            out.push_str("<ul>\n");
            blocks(&node.content, out);
            out.push_str("</ul>\n");
        }
        NodeType::OrderedList => {
            let start = node
                .attrs
                .get("start")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(1);
            if start == 1 {
                out.push_str("<ol>\n");
            } else {
                out.push_str(&format!("<ol start=\"{start}\">\n"));
            }
            blocks(&node.content, out);
            out.push_str("</ol>\n");
        }
        NodeType::ListItem => {
            out.push_str("<li>");
            blocks(&node.content, out);
            out.push_str("</li>\n");
        }
        NodeType::CodeBlock => {
            out.push_str("<pre><code");
            if let Some(language) = node
                .attrs
                .get("language")
                .and_then(serde_json::Value::as_str)
                .filter(|l| !l.is_empty())
            {
                out.push_str(" class=\"language-");
                escape_into(language, out);
                out.push('"');
            }
            out.push('>');
            escape_into(&node.text_content(), out);
            out.push_str("</code></pre>\n");
        }
        NodeType::HorizontalRule => out.push_str("<hr>\n"),
        NodeType::HardBreak | NodeType::Text | NodeType::Doc => {
            out.push_str("<p>");
            inline(std::slice::from_ref(node), out);
            out.push_str("</p>\n");
        }
    }
}

/// A mark as HTML writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HtmlMark {
    Link(String),
    Tag(&'static str),
}

impl HtmlMark {
    fn of(mark: &Mark) -> Option<Self> {
        Some(match mark.mark_type()? {
            MarkType::Link => HtmlMark::Link(clickable_href(mark.href()?)?.to_owned()),
            MarkType::Bold => HtmlMark::Tag("strong"),
            MarkType::Code => HtmlMark::Tag("code"),
            MarkType::Italic => HtmlMark::Tag("em"),
            MarkType::Strike => HtmlMark::Tag("s"),
            MarkType::Underline => HtmlMark::Tag("u"),
        })
    }

    fn open(&self, out: &mut String) {
        match self {
            HtmlMark::Link(href) => {
                out.push_str("<a href=\"");
                escape_into(href, out);
                out.push_str("\">");
            }
            HtmlMark::Tag(tag) => {
                out.push('<');
                out.push_str(tag);
                out.push('>');
            }
        }
    }

    fn close(&self, out: &mut String) {
        match self {
            HtmlMark::Link(_) => out.push_str("</a>"),
            HtmlMark::Tag(tag) => {
                out.push_str("</");
                out.push_str(tag);
                out.push('>');
            }
        }
    }
}

/// Inline content, marks nested in the schema's order.
fn inline(nodes: &[Node], out: &mut String) {
    let mut open: Vec<HtmlMark> = Vec::new();
    for node in nodes {
        let mut marks: Vec<(MarkType, HtmlMark)> = node
            .marks
            .iter()
            .filter_map(|m| Some((m.mark_type()?, HtmlMark::of(m)?)))
            .collect();
        marks.sort_by_key(|(t, _)| *t);
        marks.dedup_by_key(|(t, _)| *t);
        let target: Vec<HtmlMark> = marks.into_iter().map(|(_, m)| m).collect();
        let keep = open.iter().zip(&target).take_while(|(a, b)| a == b).count();
        while open.len() > keep {
            open.pop().expect("longer than keep").close(out);
        }
        for mark in &target[keep..] {
            mark.open(out);
            open.push(mark.clone());
        }
        if node.node_type() == Some(NodeType::HardBreak) {
            out.push_str("<br>");
        } else if let Some(text) = &node.text {
            escape_into(text, out);
        } else {
            escape_into(&node.text_content(), out);
        }
    }
    while let Some(mark) = open.pop() {
        mark.close(out);
    }
}

/// Escapes text for element content and quoted attribute values.
pub fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

#[cfg(feature = "import")]
pub use import::{TooDeep, check_depth, from_html};

#[cfg(feature = "import")]
mod import {
    use std::collections::{HashMap, HashSet};

    use html5ever::tendril::TendrilSink;
    use html5ever::tokenizer::{
        BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
    };
    use html5ever::{LocalName, QualName, local_name, ns, parse_fragment};
    use markup5ever_rcdom::{Handle, Node as RcNode, NodeData, RcDom};
    use serde_json::Value;

    use super::super::json::{Mark, Node};
    use super::super::normalise;
    use super::super::schema::{HTML_CONTAINERS, MarkType, NodeType, clickable_href};

    /// Elements the sanitiser keeps besides [`HTML_CONTAINERS`] (the rest are
    /// replaced by their content).
    const SEMANTIC: &[&str] = &[
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "ul",
        "ol",
        "li",
        "pre",
        "code",
        "hr",
        "br",
        "strong",
        "b",
        "em",
        "i",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
    ];

    /// Elements whose content is removed with them.
    const DROPPED: &[&str] = &[
        "script", "style", "template", "title", "noscript", "iframe", "object", "embed", "svg",
        "math", "textarea", "select", "button", "head",
    ];

    /// Reads an HTML document or fragment as a `doc` that passes
    /// [`Node::check`] (see the module for what is kept). Whitespace is
    /// collapsed as a browser shows it, except in `<pre>`; `<pre>`'s
    /// `<code class="language-x">` gives the code block's language;
    /// inline content outside a block becomes a paragraph.
    pub fn from_html(src: &str) -> Node {
        let clean = sanitise(src);
        let dom = parse_fragment(
            RcDom::default(),
            Default::default(),
            QualName::new(None, ns!(html), local_name!("body")),
            Vec::new(),
            false,
        )
        .one(clean);
        cut_at_depth(&dom.document);
        let mut walker = Walker::default();
        walker.children(&dom.document, &[]);
        walker.flush();
        let mut doc = Node::doc(walker.blocks);
        normalise::cap_depth(&mut doc);
        normalise::settle(&mut doc);
        doc
    }

    /// How deep the walk below goes into the DOM (it recurses per level):
    /// an element this deep keeps only its text. Twice the readers' block
    /// depth ([`normalise::MAX_DEPTH`]), as inline elements and containers
    /// (`div`, tables) take levels without nesting blocks.
    const MAX_DOM_DEPTH: usize = 2 * normalise::MAX_DEPTH;

    /// Replaces the children of every element [`MAX_DOM_DEPTH`] deep by
    /// one text node holding their text. Without a stack of its own: the
    /// DOM may be as deep as the file is long.
    fn cut_at_depth(root: &Handle) {
        let mut pending = vec![(root.clone(), 0usize)];
        while let Some((handle, depth)) = pending.pop() {
            if depth < MAX_DOM_DEPTH {
                let children = handle.children.borrow();
                pending.extend(children.iter().map(|c| (c.clone(), depth + 1)));
                continue;
            }
            let mut text = String::new();
            let mut inside: Vec<Handle> = handle.children.borrow().iter().rev().cloned().collect();
            while let Some(node) = inside.pop() {
                if let NodeData::Text { contents } = &node.data {
                    text.push_str(&contents.borrow());
                }
                inside.extend(node.children.borrow().iter().rev().cloned());
            }
            let flat = RcNode::new(NodeData::Text {
                contents: std::cell::RefCell::new(text.into()),
            });
            // (rcdom drops the subtree it replaces without recursing.)
            *handle.children.borrow_mut() = vec![flat];
        }
    }

    /// How deep [`check_depth`] lets a file nest its elements.
    pub const MAX_FILE_DEPTH: usize = 4 * MAX_DOM_DEPTH;

    /// A file that nests its elements past [`MAX_FILE_DEPTH`].
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("the HTML nests elements more than {MAX_FILE_DEPTH} deep")]
    pub struct TooDeep;

    /// Refuses HTML that nests elements past [`MAX_FILE_DEPTH`], before
    /// [`from_html`] parses it: html5ever's tree builder looks through the
    /// open elements at every tag, so a file of nested `<div>`s costs time
    /// in the square of its length (20,000 of them, 220 KB: 2 s; a 32 MiB
    /// upload: hours). html5ever's tokenizer, which is linear, reads the
    /// tags; elements without content (`<br>`) or whose end tag the parser
    /// supplies itself (`<p>`, `<li>`, `<td>` …) are not counted as
    /// nesting, an end tag closes the latest open element of its name.
    pub fn check_depth(src: &str) -> Result<(), TooDeep> {
        let sink = DepthSink::default();
        let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
        let input = BufferQueue::default();
        input.push_back(src.into());
        let _ = tokenizer.feed(&input);
        tokenizer.end();
        if tokenizer.sink.too_deep.get() {
            return Err(TooDeep);
        }
        Ok(())
    }

    #[derive(Default)]
    struct DepthSink {
        /// Elements open now, outermost first (as far as tags tell).
        open: std::cell::RefCell<Vec<LocalName>>,
        /// Set once `open` passed the limit; nothing is tracked after.
        too_deep: std::cell::Cell<bool>,
    }

    /// Elements that hold nothing, or that the parser closes by itself
    /// when a sibling starts: they do not make a file deeper.
    const FLAT: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "param", "keygen", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td",
        "th", "thead", "tbody", "tfoot", "rb", "rt", "rp", "rtc", "colgroup", "caption", "html",
        "head", "body",
    ];

    impl TokenSink for DepthSink {
        type Handle = ();

        fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
            if self.too_deep.get() {
                return TokenSinkResult::Continue;
            }
            if let Token::TagToken(tag) = token {
                let mut open = self.open.borrow_mut();
                match tag.kind {
                    TagKind::StartTag if !tag.self_closing && !FLAT.contains(&&*tag.name) => {
                        open.push(tag.name);
                        if open.len() > MAX_FILE_DEPTH {
                            self.too_deep.set(true);
                        }
                    }
                    TagKind::EndTag => {
                        if let Some(at) = open.iter().rposition(|name| *name == tag.name) {
                            open.truncate(at);
                        }
                    }
                    TagKind::StartTag => {}
                }
            }
            TokenSinkResult::Continue
        }
    }

    /// The allowlist pass (ammonia, which parses with html5ever itself).
    fn sanitise(src: &str) -> String {
        let tag_attributes = HashMap::from([
            ("a", HashSet::from(["href"])),
            ("ol", HashSet::from(["start"])),
            ("code", HashSet::from(["class"])),
        ]);
        ammonia::Builder::empty()
            .tags(SEMANTIC.iter().chain(HTML_CONTAINERS).copied().collect())
            .clean_content_tags(DROPPED.iter().copied().collect())
            .tag_attributes(tag_attributes)
            .url_schemes(HashSet::from(["http", "https", "mailto"]))
            .link_rel(None)
            .strip_comments(true)
            .clean(src)
            .to_string()
    }

    /// Inline content waiting for its paragraph.
    enum Piece {
        Text(String, Vec<Mark>),
        Break,
    }

    /// Maps a sanitised DOM onto blocks.
    #[derive(Default)]
    struct Walker {
        blocks: Vec<Node>,
        /// Inline content outside any paragraph, since the last block.
        loose: Vec<Piece>,
    }

    fn tag_of(handle: &Handle) -> Option<LocalName> {
        match &handle.data {
            NodeData::Element { name, .. } => Some(name.local.clone()),
            _ => None,
        }
    }

    fn attr(handle: &Handle, name: &str) -> Option<String> {
        match &handle.data {
            NodeData::Element { attrs, .. } => attrs
                .borrow()
                .iter()
                .find(|a| &*a.name.local == name)
                .map(|a| a.value.to_string()),
            _ => None,
        }
    }

    /// The mark an inline element stands for (`None`: none, text only).
    fn mark_of(tag: &str, handle: &Handle) -> Option<Mark> {
        Some(match tag {
            "strong" | "b" => Mark::of(MarkType::Bold),
            "em" | "i" => Mark::of(MarkType::Italic),
            "u" | "ins" => Mark::of(MarkType::Underline),
            "s" | "strike" | "del" => Mark::of(MarkType::Strike),
            "code" => Mark::of(MarkType::Code),
            "a" => Mark::link(clickable_href(&attr(handle, "href")?)?),
            _ => return None,
        })
    }

    impl Walker {
        fn children(&mut self, parent: &Handle, marks: &[Mark]) {
            for child in parent.children.borrow().iter() {
                self.node(child, marks);
            }
        }

        fn node(&mut self, handle: &Handle, marks: &[Mark]) {
            match &handle.data {
                NodeData::Text { contents } => {
                    self.loose
                        .push(Piece::Text(contents.borrow().to_string(), marks.to_vec()));
                }
                NodeData::Element { .. } => self.element(handle, marks),
                NodeData::Document => self.children(handle, marks),
                _ => {}
            }
        }

        fn element(&mut self, handle: &Handle, marks: &[Mark]) {
            let tag = tag_of(handle).expect("an element");
            let tag = &*tag;
            let block = match tag {
                "p" => Node::paragraph(inline(handle, marks)),
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    let level = i64::from(tag.as_bytes()[1] - b'0');
                    Node::heading(level, inline(handle, marks))
                }
                "blockquote" => {
                    let mut quote = Node::new(NodeType::Blockquote, self::blocks(handle, marks));
                    normalise::settle(&mut quote);
                    quote
                }
                "ul" | "ol" => {
                    let mut list = if tag == "ol" {
                        let start = attr(handle, "start")
                            .and_then(|s| s.trim().parse::<i64>().ok())
                            .unwrap_or(1);
                        Node::new(NodeType::OrderedList, Vec::new())
                            .with_attr("start", Value::from(start))
                    } else {
                        Node::new(NodeType::BulletList, Vec::new())
                    };
                    list.content = list_items(handle, marks);
                    if list.content.is_empty() {
                        return;
                    }
                    list
                }
                "li" => {
                    // An item outside a list: its content.
                    self.children(handle, marks);
                    return;
                }
                "pre" => {
                    let mut code = String::new();
                    text_content(handle, &mut code);
                    let language = language(handle).map_or(Value::Null, Value::from);
                    let content = if code.is_empty() {
                        Vec::new()
                    } else {
                        vec![Node::text(code, Vec::new())]
                    };
                    Node::new(NodeType::CodeBlock, content).with_attr("language", language)
                }
                "hr" => Node::new(NodeType::HorizontalRule, Vec::new()),
                "br" => {
                    self.loose.push(Piece::Break);
                    return;
                }
                // `html`: the root html5ever gives a parsed fragment.
                t if HTML_CONTAINERS.contains(&t) || t == "html" => {
                    self.flush();
                    self.children(handle, marks);
                    self.flush();
                    return;
                }
                t => {
                    // An inline element: its content with its mark.
                    let mut inner = marks.to_vec();
                    inner.extend(mark_of(t, handle));
                    self.children(handle, &inner);
                    return;
                }
            };
            self.flush();
            self.blocks.push(block);
        }

        /// Makes the loose inline content a paragraph, if it holds anything.
        fn flush(&mut self) {
            let pieces = std::mem::take(&mut self.loose);
            let content = collapse(pieces);
            if !content.is_empty() {
                self.blocks.push(Node::paragraph(content));
            }
        }
    }

    /// The blocks inside an element.
    fn blocks(handle: &Handle, marks: &[Mark]) -> Vec<Node> {
        let mut walker = Walker::default();
        walker.children(handle, marks);
        walker.flush();
        walker.blocks
    }

    /// A list's items; content outside `<li>` becomes an item of its own.
    fn list_items(list: &Handle, marks: &[Mark]) -> Vec<Node> {
        let mut items = Vec::new();
        let mut stray = Walker::default();
        let flush_stray = |stray: &mut Walker, items: &mut Vec<Node>| {
            stray.flush();
            if !stray.blocks.is_empty() {
                let mut item = Node::new(NodeType::ListItem, std::mem::take(&mut stray.blocks));
                normalise::settle(&mut item);
                items.push(item);
            }
        };
        for child in list.children.borrow().iter() {
            if tag_of(child).as_deref() == Some("li") {
                flush_stray(&mut stray, &mut items);
                let mut item = Node::new(NodeType::ListItem, blocks(child, marks));
                normalise::settle(&mut item);
                items.push(item);
            } else {
                stray.node(child, marks);
            }
        }
        flush_stray(&mut stray, &mut items);
        items
    }

    /// The inline content of a text block (blocks inside it, which the
    /// parser rarely leaves, are read as inline content too).
    fn inline(handle: &Handle, marks: &[Mark]) -> Vec<Node> {
        let mut pieces = Vec::new();
        inline_pieces(handle, marks, &mut pieces);
        collapse(pieces)
    }

    fn inline_pieces(handle: &Handle, marks: &[Mark], out: &mut Vec<Piece>) {
        for child in handle.children.borrow().iter() {
            match &child.data {
                NodeData::Text { contents } => {
                    out.push(Piece::Text(contents.borrow().to_string(), marks.to_vec()))
                }
                NodeData::Element { .. } => {
                    let tag = tag_of(child).expect("an element");
                    if &*tag == "br" {
                        out.push(Piece::Break);
                        continue;
                    }
                    let mut inner = marks.to_vec();
                    inner.extend(mark_of(&tag, child));
                    inline_pieces(child, &inner, out);
                }
                _ => {}
            }
        }
    }

    /// Inline pieces as text nodes, whitespace collapsed as a browser shows
    /// it: runs become one space, none at the start or end of the block or
    /// around a line break.
    fn collapse(pieces: Vec<Piece>) -> Vec<Node> {
        let mut content: Vec<Node> = Vec::new();
        // Whether the last character written was a space (or the block's start).
        let mut after_space = true;
        for piece in pieces {
            match piece {
                Piece::Break => {
                    trim_trailing_space(&mut content);
                    content.push(Node::new(NodeType::HardBreak, Vec::new()));
                    after_space = true;
                }
                Piece::Text(text, marks) => {
                    let mut collapsed = String::with_capacity(text.len());
                    for c in text.chars() {
                        if c.is_ascii_whitespace() {
                            if !after_space {
                                collapsed.push(' ');
                                after_space = true;
                            }
                        } else {
                            collapsed.push(c);
                            after_space = false;
                        }
                    }
                    normalise::push_inline(
                        &mut content,
                        Node::text(collapsed, normalise::marks(marks)),
                    );
                }
            }
        }
        trim_trailing_space(&mut content);
        content
    }

    fn trim_trailing_space(content: &mut Vec<Node>) {
        if let Some(last) = content.last_mut()
            && let Some(text) = last.text.as_mut()
        {
            if text.ends_with(' ') {
                text.pop();
            }
            if text.is_empty() {
                content.pop();
            }
        }
    }

    fn text_content(handle: &Handle, out: &mut String) {
        for child in handle.children.borrow().iter() {
            match &child.data {
                NodeData::Text { contents } => out.push_str(&contents.borrow()),
                NodeData::Element { .. } if tag_of(child).as_deref() == Some("br") => {
                    out.push('\n')
                }
                _ => text_content(child, out),
            }
        }
    }

    /// `x` of the first `class="language-x"` inside a `<pre>`.
    fn language(pre: &Handle) -> Option<String> {
        for child in pre.children.borrow().iter() {
            if let Some(class) = attr(child, "class")
                && let Some(language) = class
                    .split_whitespace()
                    .find_map(|c| c.strip_prefix("language-"))
                    .filter(|l| !l.is_empty())
            {
                return Some(language.to_owned());
            }
            if let Some(found) = language(child) {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn writes_a_complete_escaped_document() {
        let doc = Node::doc(vec![
            Node::heading(1, vec![Node::text("<T> & \"q\"", vec![])]),
            Node::paragraph(vec![
                Node::text(
                    "b",
                    vec![Mark::of(MarkType::Bold), Mark::of(MarkType::Italic)],
                ),
                Node::text("i", vec![Mark::of(MarkType::Italic)]),
                Node::new(NodeType::HardBreak, vec![]),
                Node::text("go", vec![Mark::link("https://x.y/?a=1&b=\"2\"")]),
                Node::text("no", vec![Mark::link("javascript:alert(1)")]),
            ]),
            Node::new(
                NodeType::OrderedList,
                vec![Node::new(
                    NodeType::ListItem,
                    vec![Node::paragraph(vec![Node::text("x", vec![])])],
                )],
            )
            .with_attr("start", Value::from(4)),
            Node::new(NodeType::CodeBlock, vec![Node::text("a < b", vec![])])
                .with_attr("language", Value::from("js\"><script>")),
            Node::new(NodeType::HorizontalRule, vec![]),
        ]);
        let html = to_html(&doc, "Notes </title><script>");
        assert_eq!(
            html,
            "<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
             <title>Notes &lt;/title&gt;&lt;script&gt;</title>\n</head>\n<body>\n\
             <h1>&lt;T&gt; &amp; &quot;q&quot;</h1>\n\
             <p><strong><em>b</em></strong><em>i</em><br><a href=\"https://x.y/?a=1&amp;b=&quot;2&quot;\">go</a>no</p>\n\
             <ol start=\"4\">\n<li><p>x</p>\n</li>\n</ol>\n\
             <pre><code class=\"language-js&quot;&gt;&lt;script&gt;\">a &lt; b</code></pre>\n<hr>\n\
             </body>\n</html>\n"
        );
    }

    #[cfg(feature = "import")]
    mod import {
        use super::*;

        fn stored(html: &str) -> String {
            let doc = from_html(html);
            doc.check().unwrap_or_else(|e| panic!("{html:?}: {e}"));
            serde_json::to_string(&doc).unwrap()
        }

        #[test]
        fn xss_vectors_never_reach_a_document() {
            for (html, text) in [
                ("<script>alert(1)</script>ok", "ok"),
                ("<img src=x onerror=alert(1)>ok", "ok"),
                ("<p onclick=\"alert(1)\">ok</p>", "ok"),
                ("<a href=\"javascript:alert(1)\">ok</a>", "ok"),
                ("<a href=\"java\tscript:alert(1)\">ok</a>", "ok"),
                ("<a href=\"jav&#x09;ascript:alert(1)\">ok</a>", "ok"),
                ("<a href=\"&#106;avascript:alert(1)\">ok</a>", "ok"),
                ("<a href=\" JAVASCRIPT:alert(1)\">ok</a>", "ok"),
                (
                    "<a href=\"data:text/html,<script>alert(1)</script>\">ok</a>",
                    "ok",
                ),
                (
                    "<svg><script>alert(1)</script><a href=\"javascript:x\">s</a></svg>ok",
                    "ok",
                ),
                ("<iframe src=\"javascript:alert(1)\">x</iframe>ok", "ok"),
                ("<style>body{background:url(javascript:x)}</style>ok", "ok"),
                ("<template><script>alert(1)</script></template>ok", "ok"),
                (
                    "<math><mtext><img src=x onerror=alert(1)></mtext></math>ok",
                    "ok",
                ),
                ("<div style=\"x:expression(alert(1))\">ok</div>", "ok"),
            ] {
                let json = stored(html);
                for bad in [
                    "script",
                    "onerror",
                    "onclick",
                    "javascript",
                    "alert",
                    "style",
                    "data:",
                ] {
                    assert!(
                        !json.to_ascii_lowercase().contains(bad),
                        "{html:?} left {bad:?}: {json}"
                    );
                }
                assert_eq!(from_html(html).text_content(), text, "{html:?}");
            }
        }

        #[test]
        fn html_maps_onto_the_schema() {
            let doc = from_html(
                "<!doctype html><html><head><title>T</title></head><body>\
                 <h2>Head</h2><p>a  <b>b</b>\n<i>i</i><br> c <a href=\"/rel\">l</a></p>\
                 <div>loose <span>text</span></div>\
                 <ul><li>one<ul><li><p>two</p></li></ul></li>stray</ul>\
                 <ol start=\"3\"><li><h3>h</h3></li></ol>\
                 <blockquote>q</blockquote><pre><code class=\"x language-rust\">fn  a()\n</code></pre>\
                 <hr><table><tr><td>cell</td></tr></table></body></html>",
            );
            doc.check().unwrap();
            let html = to_html(&doc, "t");
            let body = html.split("<body>\n").nth(1).unwrap();
            assert_eq!(
                body,
                "<h2>Head</h2>\n<p>a <strong>b</strong> <em>i</em><br>c <a href=\"/rel\">l</a></p>\n\
                 <p>loose text</p>\n\
                 <ul>\n<li><p>one</p>\n<ul>\n<li><p>two</p>\n</li>\n</ul>\n</li>\n<li><p>stray</p>\n</li>\n</ul>\n\
                 <ol start=\"3\">\n<li><p></p>\n<h3>h</h3>\n</li>\n</ol>\n\
                 <blockquote>\n<p>q</p>\n</blockquote>\n\
                 <pre><code class=\"language-rust\">fn  a()\n</code></pre>\n<hr>\n<p>cell</p>\n\
                 </body>\n</html>\n"
            );
        }

        #[test]
        fn empty_input_is_an_empty_paragraph() {
            assert_eq!(from_html(""), Node::doc(vec![Node::paragraph(vec![])]));
            assert_eq!(
                from_html("<script>x</script>"),
                Node::doc(vec![Node::paragraph(vec![])])
            );
        }

        /// Found in review (with Markdown's `>`): 50,000 nested elements
        /// made the walk, and everything that walks the blocks it builds,
        /// overflow the stack and abort the server. Now the DOM is cut at
        /// `MAX_DOM_DEPTH` and blocks nest at most `MAX_DEPTH`, text kept.
        #[test]
        fn deeply_nested_html_stops_at_the_depth_limit() {
            for (open, close) in [
                ("<div>", "</div>"),
                ("<blockquote>", "</blockquote>"),
                ("<b>", "</b>"),
                ("<ul><li>", "</li></ul>"),
                ("<span><blockquote>", "</blockquote></span>"),
            ] {
                // Past MAX_FILE_DEPTH: refused before the (quadratic) parse.
                let deep = format!("{}deep{}", open.repeat(50_000), close.repeat(50_000));
                let started = std::time::Instant::now();
                let checked = check_depth(&deep);
                assert!(started.elapsed() < std::time::Duration::from_secs(5));
                assert_eq!(checked, Err(TooDeep), "{open}");
                // Within it, read with the DOM cut and the blocks capped.
                let html = format!("{}deep{}", open.repeat(2_000), close.repeat(2_000));
                std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn(move || {
                        let doc = from_html(&html);
                        doc.check().unwrap();
                        assert!(
                            depth(&doc) <= normalise::MAX_DEPTH + 4,
                            "{open}: {}",
                            depth(&doc)
                        );
                        for block in &doc.content {
                            let json = serde_json::to_vec(block).unwrap();
                            serde_json::from_slice::<Node>(&json)
                                .expect("serde_json reads it back");
                        }
                        assert!(doc.text_content().contains("deep"), "{open}");
                        to_html(&doc, "t");
                    })
                    .unwrap()
                    .join()
                    .unwrap_or_else(|_| panic!("{open} overflowed"));
            }
        }

        #[test]
        fn long_flat_files_are_not_taken_for_deep_ones() {
            let unclosed = "<p>para <li>item <td>cell <br><img src=x><hr>".repeat(20_000);
            assert_eq!(check_depth(&unclosed), Ok(()));
            let stray_ends = "<div>x</div></span></b>".repeat(20_000);
            assert_eq!(check_depth(&stray_ends), Ok(()));
            // An end tag that matches nothing closes nothing.
            let unmatched = "<div></x>".repeat(super::super::import::MAX_FILE_DEPTH + 1);
            assert_eq!(check_depth(&unmatched), Err(TooDeep));
        }

        fn depth(node: &Node) -> usize {
            1 + node.content.iter().map(depth).max().unwrap_or(0)
        }
    }
}
