//! Markdown for rich documents: [`to_markdown`] writes CommonMark with
//! GFM strikethrough (everywhere, the browser included); [`from_markdown`]
//! and [`blocks`] read it through pulldown-cmark (feature `import`).
//!
//! # What the writer guarantees
//!
//! For the supported subset (the schema's nodes and marks; texts without
//! line breaks; marks that begin and end at a word, i.e. not next to a
//! letter of unmarked text), `from_markdown(&to_markdown(d)) == d` once
//! `d` is normalised the way the reader normalises ([`from_markdown`]'s
//! list), and writing that again gives the same Markdown. The property
//! test `tests/round_trip.rs` checks both over generated documents.
//!
//! - Every ASCII character Markdown could read as syntax is escaped with a
//!   backslash (`*`, `_`, `` ` ``, `[`, `]`, `<`, `>`, `#`, `!`, `~`, `|`,
//!   `&`, `\`; `-`, `+`, `=` and `1.`/`1)` at the start of a line); spaces
//!   and tabs at the edges of a line, which Markdown strips, are written as
//!   character references.
//! - Marks open and close around the text they cover; whitespace at a
//!   mark's edge is moved outside it (Markdown's emphasis cannot start or
//!   end with a space).
//! - Consecutive lists of one kind alternate their markers (`-`/`*`,
//!   `.`/`)`) so that they stay two lists.
//! - Code fences are longer than any backtick (or tilde) run inside.
//! - Links whose `href` is not [`clickable_href`] are written as their
//!   text; empty paragraphs between blocks are not written (Markdown has
//!   none); underline is `<u>…</u>`, the one piece of HTML the reader
//!   accepts.

use super::json::{Mark, Node};
use super::schema::{MarkType, NodeType, clickable_href};

/// The document as Markdown, ending with a newline (empty for an empty document).
pub fn to_markdown(doc: &Node) -> String {
    let mut writer = MarkdownWriter::default();
    for block in &doc.content {
        writer.push(block);
    }
    writer.finish()
}

/// Writes a document's top-level blocks one at a time, for documents too
/// big to hold as one tree: `push` each block of `doc` in order, then
/// `finish`; the result is `to_markdown(doc)`.
#[derive(Default)]
pub struct MarkdownWriter {
    out: String,
    sequence: Sequence,
}

impl MarkdownWriter {
    pub fn push(&mut self, block: &Node) {
        let lines = self.sequence.next(block);
        if lines.is_empty() {
            return;
        }
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        for line in lines {
            self.out.push_str(&line);
            self.out.push('\n');
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Blocks in sequence: which list came last, so that two lists of one
/// kind in a row get different markers.
#[derive(Default)]
struct Sequence {
    /// The kind and marker variant of the block just written, if a list.
    last_list: Option<(NodeType, bool)>,
}

impl Sequence {
    /// The lines of the next block (none for an empty paragraph).
    fn next(&mut self, node: &Node) -> Vec<String> {
        let kind = node.node_type();
        let alternate = match (kind, self.last_list) {
            (Some(k), Some((last, alt))) if k == last => !alt,
            _ => false,
        };
        let lines = block(node, alternate);
        if !lines.is_empty() {
            self.last_list = kind.filter(|k| k.is_list()).map(|k| (k, alternate));
        }
        lines
    }
}

/// The lines of a sequence of blocks, separated by blank lines.
fn block_lines(nodes: &[Node]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut sequence = Sequence::default();
    for node in nodes {
        let block = sequence.next(node);
        if block.is_empty() {
            continue;
        }
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.extend(block);
    }
    lines
}

/// One block's lines; nothing for an empty paragraph.
fn block(node: &Node, alternate: bool) -> Vec<String> {
    let Some(kind) = node.node_type() else {
        // An unknown node: its text, as a paragraph.
        let text = node.text_content();
        if text.is_empty() {
            return Vec::new();
        }
        return inline_lines(&[Node::text(text, Vec::new())], false);
    };
    match kind {
        NodeType::Paragraph => inline_lines(&node.content, false),
        NodeType::Heading => {
            let level = super::normalise::heading_level(node) as usize;
            let text = inline_lines(&node.content, true).join(" ");
            let hashes = "#".repeat(level);
            vec![if text.is_empty() {
                hashes
            } else {
                format!("{hashes} {text}")
            }]
        }
        NodeType::CodeBlock => code_block(node),
        NodeType::HorizontalRule => vec!["---".to_owned()],
        NodeType::Blockquote => {
            let inner = block_lines(&node.content);
            if inner.is_empty() {
                return vec![">".to_owned()];
            }
            inner.iter().map(|l| prefixed("> ", l)).collect()
        }
        NodeType::BulletList | NodeType::OrderedList => list(node, kind, alternate),
        NodeType::ListItem => item_lines(node),
        NodeType::HardBreak => Vec::new(),
        NodeType::Text | NodeType::Doc => inline_lines(std::slice::from_ref(node), false),
    }
}

/// `prefix` + `line`, without trailing spaces on a line that was empty.
fn prefixed(prefix: &str, line: &str) -> String {
    if line.is_empty() {
        prefix.trim_end().to_owned()
    } else {
        format!("{prefix}{line}")
    }
}

fn list(node: &Node, kind: NodeType, alternate: bool) -> Vec<String> {
    let start = node
        .attrs
        .get("start")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let mut lines = Vec::new();
    for (i, item) in node.content.iter().enumerate() {
        let marker = match kind {
            NodeType::OrderedList => {
                let delimiter = if alternate { ')' } else { '.' };
                format!("{}{delimiter} ", start + i as i64)
            }
            _ => (if alternate { "* " } else { "- " }).to_owned(),
        };
        let indent = " ".repeat(marker.len());
        let inner = if item.node_type() == Some(NodeType::ListItem) {
            item_lines(item)
        } else {
            block(item, false)
        };
        if inner.is_empty() {
            lines.push(marker.trim_end().to_owned());
            continue;
        }
        for (n, line) in inner.iter().enumerate() {
            if n == 0 && line.is_empty() {
                // An empty first paragraph: the marker alone, content below it.
                lines.push(marker.trim_end().to_owned());
            } else if n == 0 {
                lines.push(format!("{marker}{line}"));
            } else {
                lines.push(prefixed(&indent, line));
            }
        }
    }
    lines
}

/// A list item's blocks. An empty first paragraph gives a first empty
/// line with the next block right after it (a list item may start with
/// at most one blank line).
fn item_lines(item: &Node) -> Vec<String> {
    let (first_empty, rest) = match item.content.split_first() {
        Some((first, rest))
            if first.node_type() == Some(NodeType::Paragraph)
                && inline_lines(&first.content, false).is_empty() =>
        {
            (true, rest)
        }
        _ => (false, &item.content[..]),
    };
    let lines = block_lines(rest);
    if first_empty && !lines.is_empty() {
        let mut with_gap = vec![String::new()];
        with_gap.extend(lines);
        return with_gap;
    }
    lines
}

fn code_block(node: &Node) -> Vec<String> {
    let code = node.text_content();
    let language = node
        .attrs
        .get("language")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let fence_char = if language.contains('`') { '~' } else { '`' };
    let fence = fence_char
        .to_string()
        .repeat((longest_run(&code, fence_char) + 1).max(3));
    let mut lines = vec![format!("{fence}{language}")];
    lines.extend(code.split('\n').map(str::to_owned));
    lines.push(fence);
    lines
}

/// The longest run of `c` in `s`.
fn longest_run(s: &str, c: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for ch in s.chars() {
        run = if ch == c { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// A mark as Markdown writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MdMark {
    Link(String),
    Bold,
    Italic,
    Strike,
    Underline,
}

impl MdMark {
    fn open(&self) -> &'static str {
        match self {
            MdMark::Link(_) => "[",
            MdMark::Bold => "**",
            MdMark::Italic => "*",
            MdMark::Strike => "~~",
            MdMark::Underline => "<u>",
        }
    }

    fn close(&self, out: &mut String) {
        match self {
            MdMark::Link(href) => {
                out.push_str("](");
                out.push_str(&link_destination(href));
                out.push(')');
            }
            MdMark::Bold => out.push_str("**"),
            MdMark::Italic => out.push('*'),
            MdMark::Strike => out.push_str("~~"),
            MdMark::Underline => out.push_str("</u>"),
        }
    }
}

/// The Markdown marks of a text node (in the schema's order), and whether it is code.
fn md_marks(marks: &[Mark]) -> (Vec<MdMark>, bool) {
    let mut sorted: Vec<(MarkType, &Mark)> = marks
        .iter()
        .filter_map(|m| m.mark_type().map(|t| (t, m)))
        .collect();
    sorted.sort_by_key(|(t, _)| *t);
    sorted.dedup_by_key(|(t, _)| *t);
    if sorted.iter().any(|(t, _)| *t == MarkType::Code) {
        return (Vec::new(), true);
    }
    let marks = sorted
        .into_iter()
        .filter_map(|(t, m)| match t {
            MarkType::Link => m
                .href()
                .and_then(clickable_href)
                .map(|h| MdMark::Link(h.to_owned())),
            MarkType::Bold => Some(MdMark::Bold),
            MarkType::Italic => Some(MdMark::Italic),
            MarkType::Strike => Some(MdMark::Strike),
            MarkType::Underline => Some(MdMark::Underline),
            MarkType::Code => None,
        })
        .collect();
    (marks, false)
}

/// A piece of inline content, flattened.
enum Piece<'a> {
    Text(String, &'a [Mark]),
    Break,
}

fn pieces(nodes: &[Node]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    for node in nodes {
        if node.node_type() == Some(NodeType::HardBreak) {
            out.push(Piece::Break);
        } else if let Some(text) = &node.text {
            out.push(Piece::Text(text.replace(['\n', '\r'], " "), &node.marks));
        } else {
            let text = node.text_content();
            if !text.is_empty() {
                out.push(Piece::Text(text.replace(['\n', '\r'], " "), &[]));
            }
        }
    }
    // A hard break at the end of a block means nothing in Markdown.
    while matches!(out.last(), Some(Piece::Break)) {
        out.pop();
    }
    out
}

/// Inline content as lines (one more per hard break); no lines for none.
/// In a heading, hard breaks are spaces.
fn inline_lines(nodes: &[Node], heading: bool) -> Vec<String> {
    let pieces = pieces(nodes);
    if pieces.is_empty() {
        return Vec::new();
    }
    let mut writer = InlineWriter::default();
    for piece in &pieces {
        match piece {
            Piece::Text(text, marks) => writer.text(text, marks),
            Piece::Break if heading => writer.text(" ", &[]),
            Piece::Break => writer.hard_break(),
        }
    }
    writer.finish()
}

/// Writes inline content, keeping the open marks.
#[derive(Default)]
struct InlineWriter {
    lines: Vec<String>,
    line: String,
    open: Vec<MdMark>,
    /// Whitespace of the text before, not yet written: it goes after the
    /// marks that close before the next text.
    pending: String,
}

impl InlineWriter {
    fn text(&mut self, text: &str, marks: &[Mark]) {
        let (target, code) = md_marks(marks);
        // Code keeps its spaces (a code span may start or end with them).
        let core = if code {
            text
        } else {
            text.trim_matches(char::is_whitespace)
        };
        let lead = if code {
            ""
        } else {
            &text[..text.len() - text.trim_start_matches(char::is_whitespace).len()]
        };
        let keep = if code {
            0
        } else {
            self.open
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count()
        };
        if core.is_empty() {
            // Whitespace only: marks it lacks close before it (none can
            // open on whitespace); it waits with the pending whitespace.
            self.close_to(keep);
            self.pending.push_str(text);
            return;
        }
        let trail = &text[lead.len() + core.len()..];
        self.close_to(keep);
        self.flush_pending();
        self.push_space(lead);
        if code {
            self.code_span(core);
        } else {
            for mark in &target[keep..] {
                self.line.push_str(mark.open());
                self.open.push(mark.clone());
            }
            escape_into(core, &mut self.line);
        }
        self.pending.push_str(trail);
    }

    fn hard_break(&mut self) {
        // Marks close before a break and open again after it (a closing
        // delimiter at the start of a line could not close); spaces before
        // it would be dropped, so they are written as references.
        self.close_to(0);
        let pending = std::mem::take(&mut self.pending);
        push_references(&pending, &mut self.line);
        self.line.push('\\');
        let line = std::mem::take(&mut self.line);
        self.lines.push(line);
    }

    fn finish(mut self) -> Vec<String> {
        self.close_to(0);
        let pending = std::mem::take(&mut self.pending);
        push_references(&pending, &mut self.line);
        if !self.line.is_empty() || !self.lines.is_empty() {
            self.lines.push(self.line);
        }
        self.lines
    }

    fn close_to(&mut self, keep: usize) {
        while self.open.len() > keep {
            let mark = self.open.pop().expect("longer than keep");
            mark.close(&mut self.line);
        }
    }

    fn flush_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.push_space(&pending);
    }

    /// Whitespace inside a line; at its start, as references.
    fn push_space(&mut self, space: &str) {
        if self.line.is_empty() {
            push_references(space, &mut self.line);
        } else {
            self.line.push_str(space);
        }
    }

    fn code_span(&mut self, code: &str) {
        let fence = "`".repeat(longest_run(code, '`') + 1);
        let pad = code.starts_with('`')
            || code.ends_with('`')
            || (code.starts_with(' ') && code.ends_with(' ') && code.trim() != "");
        self.line.push_str(&fence);
        if pad {
            self.line.push(' ');
        }
        self.line.push_str(code);
        if pad {
            self.line.push(' ');
        }
        self.line.push_str(&fence);
    }
}

/// Spaces and tabs as character references (Markdown strips them at a
/// line's edges); other whitespace as it is.
fn push_references(space: &str, out: &mut String) {
    for c in space.chars() {
        match c {
            ' ' => out.push_str("&#32;"),
            '\t' => out.push_str("&#9;"),
            other => out.push(other),
        }
    }
}

/// Escapes text so that Markdown reads it back as this text. `out` is the
/// line so far: an empty one means `text` starts the line.
fn escape_into(text: &str, out: &mut String) {
    let line_start = out.is_empty();
    if line_start {
        // `1.` / `1)` would start an ordered list.
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && matches!(text.as_bytes().get(digits), Some(b'.' | b')')) {
            out.push_str(&text[..digits]);
            out.push('\\');
            escape_rest(&text[digits..], out);
            return;
        }
        if text.starts_with(['-', '+', '=']) {
            out.push('\\');
        }
    }
    escape_rest(text, out);
}

fn escape_rest(text: &str, out: &mut String) {
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '!' | '~' | '|' | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A link destination: bare when it can be, else in `<…>`.
fn link_destination(href: &str) -> String {
    let plain = !href.is_empty()
        && !href
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '(' | ')' | '<' | '>'));
    let mut out = String::with_capacity(href.len() + 2);
    if !plain {
        out.push('<');
    }
    for c in href.chars() {
        if matches!(c, '\\' | '&' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    if !plain {
        out.push('>');
    }
    out
}

#[cfg(feature = "import")]
pub use import::{Blocks, blocks, from_markdown};

#[cfg(feature = "import")]
mod import {
    use std::collections::VecDeque;

    use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
    use serde_json::Value;

    use super::super::json::{Mark, Node};
    use super::super::schema::{MarkType, NodeType, clickable_href};
    use crate::rich::normalise;

    /// Reads Markdown (CommonMark with GFM strikethrough) as a `doc` that
    /// passes [`Node::check`]:
    ///
    /// - soft line breaks are spaces; hard breaks `hardBreak`s;
    /// - fenced code keeps the first word of its info string as
    ///   `language`, indented code has none; the newline that ends every
    ///   code block in Markdown is not part of the text;
    /// - links whose destination is not clickable and images become
    ///   their text;
    /// - inline `<u>`…`</u>` is underline and `<br>` a hard break; any
    ///   other HTML (inline or block) is dropped, its text kept when it is
    ///   inline;
    /// - a list item, blockquote or document without a first paragraph
    ///   gets an empty one; `code` text carries no other mark.
    pub fn from_markdown(src: &str) -> Node {
        let mut content: Vec<Node> = blocks(src).collect();
        if content.is_empty() {
            content.push(Node::paragraph(Vec::new()));
        }
        Node::doc(content)
    }

    /// The top-level blocks of a Markdown text, one at a time, so that a
    /// big file never has to be held as one tree (the server writes each
    /// block into the document and drops it).
    pub fn blocks(src: &str) -> Blocks<'_> {
        Blocks {
            parser: Parser::new_ext(src, Options::ENABLE_STRIKETHROUGH),
            builder: Builder::default(),
        }
    }

    /// The iterator of [`blocks`].
    pub struct Blocks<'a> {
        parser: Parser<'a>,
        builder: Builder,
    }

    impl Iterator for Blocks<'_> {
        type Item = Node;

        fn next(&mut self) -> Option<Node> {
            loop {
                if let Some(block) = self.builder.ready.pop_front() {
                    return Some(block);
                }
                match self.parser.next() {
                    Some(event) => self.builder.event(event),
                    None => {
                        self.builder.finish();
                        return self.builder.ready.pop_front();
                    }
                }
            }
        }
    }

    /// An inline mark from Markdown syntax (`None`: a link that is not
    /// clickable, or an image: their text stays, unmarked).
    type Open = Option<Mark>;

    #[derive(Default)]
    struct Builder {
        /// Blocks being built, outermost first.
        stack: Vec<Node>,
        /// Whether each block of `stack` was opened for loose inline
        /// content (a tight list item's text) rather than by the parser.
        implicit: Vec<bool>,
        /// Inline marks open now.
        marks: Vec<Open>,
        /// `<u>` tags open in the current text block.
        underline: usize,
        /// Inside a block of raw HTML (dropped).
        html_block: bool,
        /// Finished top-level blocks.
        ready: VecDeque<Node>,
    }

    impl Builder {
        fn event(&mut self, event: Event<'_>) {
            match event {
                Event::Start(tag) => self.start(tag),
                Event::End(tag) => self.end(tag),
                Event::Text(text) => self.text(&text),
                Event::Code(code) => {
                    self.inline(Node::text(code.to_string(), vec![Mark::of(MarkType::Code)]))
                }
                Event::InlineMath(t) | Event::DisplayMath(t) => self.text(&t),
                Event::Html(_) => {}
                Event::InlineHtml(html) => self.inline_html(&html),
                Event::SoftBreak => self.text(" "),
                Event::HardBreak => self.inline(Node::new(NodeType::HardBreak, Vec::new())),
                Event::Rule => {
                    self.close_implicit();
                    self.append(Node::new(NodeType::HorizontalRule, Vec::new()));
                }
                Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
            }
        }

        fn start(&mut self, tag: Tag<'_>) {
            let block = match tag {
                Tag::Paragraph => Node::paragraph(Vec::new()),
                Tag::Heading { level, .. } => Node::heading(level as i64, Vec::new()),
                Tag::BlockQuote(_) => Node::new(NodeType::Blockquote, Vec::new()),
                Tag::CodeBlock(kind) => {
                    let language = match kind {
                        CodeBlockKind::Fenced(info) => info
                            .split_whitespace()
                            .next()
                            .map_or(Value::Null, Value::from),
                        CodeBlockKind::Indented => Value::Null,
                    };
                    Node::new(NodeType::CodeBlock, Vec::new()).with_attr("language", language)
                }
                Tag::List(Some(start)) => Node::new(NodeType::OrderedList, Vec::new())
                    .with_attr("start", Value::from(start.min(i64::MAX as u64) as i64)),
                Tag::List(None) => Node::new(NodeType::BulletList, Vec::new()),
                Tag::Item => Node::new(NodeType::ListItem, Vec::new()),
                Tag::HtmlBlock => {
                    self.html_block = true;
                    return;
                }
                Tag::Emphasis => return self.marks.push(Some(Mark::of(MarkType::Italic))),
                Tag::Strong => return self.marks.push(Some(Mark::of(MarkType::Bold))),
                Tag::Strikethrough => return self.marks.push(Some(Mark::of(MarkType::Strike))),
                Tag::Link { dest_url, .. } => {
                    return self.marks.push(clickable_href(&dest_url).map(Mark::link));
                }
                Tag::Image { .. } | Tag::Superscript | Tag::Subscript => {
                    return self.marks.push(None);
                }
                // Not enabled (tables, footnotes, definition lists, metadata):
                // their content lands in the enclosing block.
                _ => return,
            };
            self.close_implicit();
            self.stack.push(block);
            self.implicit.push(false);
        }

        fn end(&mut self, tag: TagEnd) {
            match tag {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::List(_)
                | TagEnd::Item => {
                    self.close_implicit();
                    self.close_block();
                }
                TagEnd::HtmlBlock => self.html_block = false,
                TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Link
                | TagEnd::Image
                | TagEnd::Superscript
                | TagEnd::Subscript => {
                    self.marks.pop();
                }
                _ => {}
            }
        }

        /// Pops the innermost block, settles its content and hands it to its parent.
        fn close_block(&mut self) {
            let Some(mut block) = self.stack.pop() else {
                return;
            };
            self.implicit.pop();
            if block.node_type().is_some_and(NodeType::is_textblock) {
                self.underline = 0;
            }
            if block.node_type() == Some(NodeType::CodeBlock)
                && let Some(text) = block.content.first_mut().and_then(|t| t.text.as_mut())
            {
                if text.ends_with('\n') {
                    text.pop();
                }
                if text.is_empty() {
                    block.content.clear();
                }
            }
            normalise::settle(&mut block);
            self.append(block);
        }

        fn append(&mut self, node: Node) {
            match self.stack.last_mut() {
                Some(parent) => parent.content.push(node),
                None => self.ready.push_back(node),
            }
        }

        fn close_implicit(&mut self) {
            if self.implicit.last() == Some(&true) {
                self.close_block();
            }
        }

        fn text(&mut self, text: &str) {
            if self.html_block || text.is_empty() {
                return;
            }
            if let Some(top) = self.stack.last_mut()
                && top.node_type() == Some(NodeType::CodeBlock)
            {
                match top.content.first_mut().and_then(|t| t.text.as_mut()) {
                    Some(code) => code.push_str(text),
                    None => top.content.push(Node::text(text, Vec::new())),
                }
                return;
            }
            let marks = self.current_marks();
            self.inline(Node::text(text, marks));
        }

        /// Adds inline content to the text block open now (opening a
        /// paragraph for it where a container holds it directly).
        fn inline(&mut self, node: Node) {
            let in_textblock = self
                .stack
                .last()
                .and_then(Node::node_type)
                .is_some_and(|t| t == NodeType::Paragraph || t == NodeType::Heading);
            if !in_textblock {
                self.stack.push(Node::paragraph(Vec::new()));
                self.implicit.push(true);
            }
            let block = self.stack.last_mut().expect("a text block is open");
            normalise::push_inline(&mut block.content, node);
        }

        fn inline_html(&mut self, html: &str) {
            let tag: String = html
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            match tag.as_str() {
                "<u>" => self.underline += 1,
                "</u>" => self.underline = self.underline.saturating_sub(1),
                "<br>" | "<br/>" => self.inline(Node::new(NodeType::HardBreak, Vec::new())),
                _ => {}
            }
        }

        fn current_marks(&self) -> Vec<Mark> {
            let mut marks: Vec<Mark> = self.marks.iter().flatten().cloned().collect();
            if self.underline > 0 {
                marks.push(Mark::of(MarkType::Underline));
            }
            normalise::marks(marks)
        }

        fn finish(&mut self) {
            while !self.stack.is_empty() {
                self.close_block();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn p(text: &str) -> Node {
        Node::paragraph(vec![Node::text(text, vec![])])
    }

    fn marked(text: &str, marks: &[MarkType]) -> Node {
        Node::text(text, marks.iter().map(|&m| Mark::of(m)).collect())
    }

    fn item(blocks: Vec<Node>) -> Node {
        Node::new(NodeType::ListItem, blocks)
    }

    #[test]
    fn blocks_and_marks_are_written_as_commonmark() {
        let doc = Node::doc(vec![
            Node::heading(2, vec![Node::text("Plan", vec![])]),
            Node::paragraph(vec![
                Node::text("a ", vec![]),
                marked("bold", &[MarkType::Bold]),
                Node::text(" and ", vec![]),
                marked("both", &[MarkType::Bold, MarkType::Italic]),
                Node::text(" ", vec![]),
                marked("gone", &[MarkType::Strike]),
                Node::text(" ", vec![]),
                marked("under", &[MarkType::Underline]),
                Node::text(" ", vec![]),
                marked("x", &[MarkType::Code]),
                Node::new(NodeType::HardBreak, vec![]),
                Node::text("site", vec![Mark::link("https://example.com/a b")]),
            ]),
            Node::new(NodeType::HorizontalRule, vec![]),
            Node::new(NodeType::Blockquote, vec![p("quoted"), p("twice")]),
        ]);
        assert_eq!(
            to_markdown(&doc),
            "## Plan\n\na **bold** and ***both*** ~~gone~~ <u>under</u> `x`\\\n\
             [site](<https://example.com/a b>)\n\n---\n\n> quoted\n>\n> twice\n"
        );
    }

    #[test]
    fn text_is_escaped() {
        let doc = Node::doc(vec![
            p("*not* _em_ `code` [a](b) <b>x</b> # ~ | & \\ !"),
            p("- not a list"),
            p("12. not ordered"),
            p("  leading and trailing  "),
            p("=== +"),
        ]);
        assert_eq!(
            to_markdown(&doc),
            "\\*not\\* \\_em\\_ \\`code\\` \\[a\\](b) \\<b\\>x\\</b\\> \\# \\~ \\| \\& \\\\ \\!\n\n\
             \\- not a list\n\n12\\. not ordered\n\n\
             &#32;&#32;leading and trailing&#32;&#32;\n\n\\=== +\n"
        );
    }

    #[test]
    fn nested_lists_keep_their_start_numbers() {
        let doc = Node::doc(vec![
            Node::new(
                NodeType::OrderedList,
                vec![
                    item(vec![
                        p("three"),
                        Node::new(NodeType::BulletList, vec![item(vec![p("inner")])]),
                    ]),
                    item(vec![p("four")]),
                ],
            )
            .with_attr("start", Value::from(3)),
            Node::new(NodeType::OrderedList, vec![item(vec![p("again")])]),
            Node::new(NodeType::BulletList, vec![item(vec![p("x")])]),
            Node::new(NodeType::BulletList, vec![item(vec![p("y")])]),
        ]);
        assert_eq!(
            to_markdown(&doc),
            "3. three\n\n   - inner\n4. four\n\n1) again\n\n- x\n\n* y\n"
        );
    }

    #[test]
    fn code_fences_outgrow_backticks_inside() {
        let doc = Node::doc(vec![
            Node::new(
                NodeType::CodeBlock,
                vec![Node::text("let s = \"```\";\n````", vec![])],
            )
            .with_attr("language", Value::from("rust")),
            Node::paragraph(vec![marked("a `tick`", &[MarkType::Code])]),
            Node::paragraph(vec![marked("`x`", &[MarkType::Code])]),
        ]);
        assert_eq!(
            to_markdown(&doc),
            "`````rust\nlet s = \"```\";\n````\n`````\n\n`` a `tick` ``\n\n`` `x` ``\n"
        );
    }

    #[test]
    fn unclickable_links_are_text_and_unknown_nodes_their_text() {
        let doc = Node::doc(vec![
            Node::paragraph(vec![Node::text(
                "x",
                vec![Mark::link("javascript:alert(1)")],
            )]),
            Node {
                kind: "callout".into(),
                ..Node::paragraph(vec![Node::text("inside", vec![])])
            },
        ]);
        assert_eq!(to_markdown(&doc), "x\n\ninside\n");
    }

    #[cfg(feature = "import")]
    mod import {
        use super::*;

        #[test]
        fn markdown_reads_as_the_schema() {
            let doc = from_markdown(
                "# Title\n\nSome *em* and **strong** ~~del~~ <u>u</u> `c` [l](https://x.y) \
                 [bad](javascript:alert(1)) ![img](https://x/i.png)\nsoft\\\nhard\n\n\
                 - tight\n- list\n  1. nested\n\n7. seven\n\n> quote\n\n```js extra\ncode\n```\n\n    indented\n\n***\n\n<div>block html</div>\n",
            );
            doc.check().unwrap();
            let md = to_markdown(&doc);
            assert_eq!(
                md,
                "# Title\n\nSome *em* and **strong** ~~del~~ <u>u</u> `c` [l](https://x.y) bad img soft\\\nhard\n\n\
                 - tight\n- list\n\n  1. nested\n\n7. seven\n\n> quote\n\n```js\ncode\n```\n\n```\nindented\n```\n\n---\n"
            );
        }

        #[test]
        fn lists_and_quotes_always_hold_valid_content() {
            for src in [
                "-\n",
                "- # heading\n",
                ">\n",
                "1. ```\n   x\n   ```\n",
                "",
                "<p>html only</p>\n",
            ] {
                let doc = from_markdown(src);
                doc.check().unwrap_or_else(|e| panic!("{src:?}: {e}"));
            }
        }

        #[test]
        fn raw_html_never_reaches_the_document() {
            let doc = from_markdown(
                "<script>alert(1)</script>\n\ntext <img src=x onerror=alert(1)> <a href=\"javascript:x\">a</a>\n",
            );
            let json = serde_json::to_string(&doc).unwrap();
            assert!(!json.contains("script"), "{json}");
            assert!(!json.contains("onerror"), "{json}");
            assert!(!json.contains("javascript"), "{json}");
            assert_eq!(doc.text_content(), "text  a");
        }
    }
}
