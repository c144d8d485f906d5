//! Paste and copy.
//!
//! **Paste**: HTML is parsed by the browser's own `DOMParser` into an
//! inert document (no scripts run, nothing loads, no handler fires) and
//! walked through an allowlist onto the schema: headings, paragraphs,
//! lists, quotes, code blocks, rules, breaks; bold / italic / underline /
//! strike / code from tags or from the inline styles Google Docs and Word
//! use; links only when their URL is http, https or mailto. Every other
//! tag is its text; `script`, `style` and the like are dropped with their
//! content; attributes are never copied, so no event handler or
//! `javascript:` URL can reach the document or the page. Plain text pastes
//! as one paragraph per line.
//!
//! **Copy**: the selected content as HTML (serialised here from the
//! schema, text escaped) and as plain text (one line per block).

use quire_protocol::rich::json::Mark;
use quire_protocol::rich::schema::{HTML_CONTAINERS, clickable_href};
use quire_protocol::rich::{MarkType, Node, NodeType};
use serde_json::Value;
use wasm_bindgen::JsCast;
use web_sys::{DomParser, Element, SupportedType};

/// Parses pasted HTML into blocks of the schema.
pub fn parse_html(html: &str) -> Vec<Node> {
    let Ok(parser) = DomParser::new() else {
        return Vec::new();
    };
    let Ok(doc) = parser.parse_from_string(html, SupportedType::TextHtml) else {
        return Vec::new();
    };
    let Some(body) = doc.body() else {
        return Vec::new();
    };
    let mut collector = Collector::default();
    walk_children(&body, &[], &mut collector);
    collector.flush();
    normalize_blocks(collector.blocks)
}

#[derive(Default)]
struct Collector {
    blocks: Vec<Node>,
    inline: Vec<Node>,
}

impl Collector {
    fn flush(&mut self) {
        let inline = trim_inline(std::mem::take(&mut self.inline));
        if !inline.is_empty() {
            self.blocks.push(Node::paragraph(inline));
        }
    }

    fn block(&mut self, node: Node) {
        self.flush();
        self.blocks.push(node);
    }
}

/// Tags dropped with everything inside.
const DROPPED: &[&str] = &[
    "script", "style", "template", "noscript", "iframe", "object", "embed", "head", "title",
    "meta", "link", "svg", "math", "canvas", "audio", "video", "input", "select", "textarea",
    "button", "img", "picture", "source", "frame", "frameset",
];

/// Tags that end a paragraph and start another: `p`, the schema's
/// [`HTML_CONTAINERS`] (the HTML importer unwraps the same ones), and a few
/// that only a paste meets (old pages' `center`, forms, table captions).
fn ends_paragraph(tag: &str) -> bool {
    const PASTE_ONLY: &[&str] = &["center", "caption", "form", "fieldset"];
    tag == "p" || HTML_CONTAINERS.contains(&tag) || PASTE_ONLY.contains(&tag)
}

fn walk_children(parent: &web_sys::Node, marks: &[Mark], out: &mut Collector) {
    let children = parent.child_nodes();
    for i in 0..children.length() {
        if let Some(child) = children.item(i) {
            walk(&child, marks, out);
        }
    }
}

fn walk(node: &web_sys::Node, marks: &[Mark], out: &mut Collector) {
    match node.node_type() {
        web_sys::Node::TEXT_NODE => {
            let text = collapse(&node.text_content().unwrap_or_default());
            if !text.is_empty() {
                out.inline.push(text_node(text, marks));
            }
        }
        web_sys::Node::ELEMENT_NODE => {
            let Some(el) = node.dyn_ref::<Element>() else {
                return;
            };
            element(el, marks, out);
        }
        _ => {}
    }
}

fn element(el: &Element, marks: &[Mark], out: &mut Collector) {
    let tag = el.tag_name().to_ascii_lowercase();
    let tag = tag.rsplit(':').next().unwrap_or(&tag).to_owned(); // Word's `o:p`
    if DROPPED.contains(&tag.as_str()) {
        return;
    }
    match tag.as_str() {
        "br" => out.inline.push(Node::new(NodeType::HardBreak, Vec::new())),
        "hr" => out.block(Node::new(NodeType::HorizontalRule, Vec::new())),
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
            let level = i64::from(tag.as_bytes()[1] - b'0');
            let inline = inline_of(el, marks);
            out.block(Node::heading(level, inline));
        }
        "pre" => {
            let text = el.text_content().unwrap_or_default();
            let text = text.strip_suffix('\n').unwrap_or(&text).to_owned();
            let content = if text.is_empty() {
                Vec::new()
            } else {
                vec![Node::text(text, Vec::new())]
            };
            out.block(Node::new(NodeType::CodeBlock, content));
        }
        "blockquote" => {
            let mut inner = Collector::default();
            walk_children(el, marks, &mut inner);
            inner.flush();
            let blocks = if inner.blocks.is_empty() {
                vec![Node::paragraph(Vec::new())]
            } else {
                inner.blocks
            };
            out.block(Node::new(NodeType::Blockquote, blocks));
        }
        "ul" | "ol" => {
            let kind = if tag == "ol" {
                NodeType::OrderedList
            } else {
                NodeType::BulletList
            };
            let mut items = Vec::new();
            let children = el.child_nodes();
            let mut stray = Collector::default();
            for i in 0..children.length() {
                let Some(child) = children.item(i) else {
                    continue;
                };
                let is_li = child
                    .dyn_ref::<Element>()
                    .is_some_and(|e| e.tag_name().eq_ignore_ascii_case("li"));
                if is_li {
                    stray.flush();
                    if !stray.blocks.is_empty() {
                        items.push(list_item(std::mem::take(&mut stray.blocks)));
                    }
                    let mut inner = Collector::default();
                    walk_children(&child, marks, &mut inner);
                    inner.flush();
                    items.push(list_item(inner.blocks));
                } else {
                    walk(&child, marks, &mut stray);
                }
            }
            stray.flush();
            if !stray.blocks.is_empty() {
                items.push(list_item(stray.blocks));
            }
            if !items.is_empty() {
                let mut list = Node::new(kind, items);
                if kind == NodeType::OrderedList {
                    let start = el
                        .get_attribute("start")
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .unwrap_or(1);
                    list = list.with_attr("start", Value::from(start));
                }
                out.block(list);
            }
        }
        "li" => {
            let mut inner = Collector::default();
            walk_children(el, marks, &mut inner);
            inner.flush();
            out.block(Node::new(
                NodeType::BulletList,
                vec![list_item(inner.blocks)],
            ));
        }
        _ => {
            let marks = with_marks(el, &tag, marks);
            if ends_paragraph(&tag) {
                out.flush();
                walk_children(el, &marks, out);
                out.flush();
            } else {
                walk_children(el, &marks, out);
            }
        }
    }
}

/// The inline content of an element (blocks inside flattened into breaks).
fn inline_of(el: &Element, marks: &[Mark]) -> Vec<Node> {
    let mut inner = Collector::default();
    walk_children(el, marks, &mut inner);
    inner.flush();
    let mut out = Vec::new();
    for (i, block) in inner.blocks.into_iter().enumerate() {
        if i > 0 {
            out.push(Node::new(NodeType::HardBreak, Vec::new()));
        }
        out.extend(
            block
                .content
                .into_iter()
                .filter(|n| n.is_text() || n.node_type() == Some(NodeType::HardBreak)),
        );
    }
    trim_inline(out)
}

fn list_item(mut blocks: Vec<Node>) -> Node {
    match blocks.first().and_then(Node::node_type) {
        Some(NodeType::Paragraph) => {}
        Some(NodeType::Heading) => {
            let first = blocks.remove(0);
            blocks.insert(0, Node::paragraph(first.content));
        }
        _ => blocks.insert(0, Node::paragraph(Vec::new())),
    }
    Node::new(NodeType::ListItem, blocks)
}

/// The marks an element adds, from its tag and its inline style.
fn with_marks(el: &Element, tag: &str, marks: &[Mark]) -> Vec<Mark> {
    let mut out = marks.to_vec();
    let mut add = |m: Mark| {
        out.retain(|x| x.kind != m.kind);
        out.push(m);
    };
    match tag {
        "b" | "strong" => add(Mark::of(MarkType::Bold)),
        "i" | "em" | "cite" | "var" | "dfn" => add(Mark::of(MarkType::Italic)),
        "u" | "ins" => add(Mark::of(MarkType::Underline)),
        "s" | "strike" | "del" => add(Mark::of(MarkType::Strike)),
        "code" | "kbd" | "samp" | "tt" => add(Mark::of(MarkType::Code)),
        "a" => {
            if let Some(href) = el.get_attribute("href").as_deref().and_then(clickable_href) {
                add(Mark::link(href));
            }
        }
        _ => {}
    }
    if let Some(style) = el.get_attribute("style") {
        for decl in style.split(';') {
            let Some((prop, value)) = decl.split_once(':') else {
                continue;
            };
            let (prop, value) = (
                prop.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            );
            match prop.as_str() {
                "font-weight" => {
                    let bold = value == "bold"
                        || value == "bolder"
                        || value.parse::<u32>().is_ok_and(|w| w >= 600);
                    out.retain(|m| m.mark_type() != Some(MarkType::Bold));
                    if bold {
                        out.push(Mark::of(MarkType::Bold));
                    }
                }
                "font-style" => {
                    out.retain(|m| m.mark_type() != Some(MarkType::Italic));
                    if value.contains("italic") || value.contains("oblique") {
                        out.push(Mark::of(MarkType::Italic));
                    }
                }
                "text-decoration" | "text-decoration-line" => {
                    if value.contains("underline")
                        && !out
                            .iter()
                            .any(|m| m.mark_type() == Some(MarkType::Underline))
                    {
                        out.push(Mark::of(MarkType::Underline));
                    }
                    if value.contains("line-through")
                        && !out.iter().any(|m| m.mark_type() == Some(MarkType::Strike))
                    {
                        out.push(Mark::of(MarkType::Strike));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn text_node(text: String, marks: &[Mark]) -> Node {
    let mut marks: Vec<Mark> = if marks.iter().any(|m| m.mark_type() == Some(MarkType::Code)) {
        vec![Mark::of(MarkType::Code)]
    } else {
        marks.to_vec()
    };
    marks.sort_by_key(|m| {
        m.mark_type()
            .map(|t| MarkType::ALL.iter().position(|&x| x == t).unwrap_or(9))
    });
    Node::text(text, marks)
}

/// HTML whitespace: runs of spaces, tabs and newlines are one space.
fn collapse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}') {
            space = true;
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    if space {
        out.push(' ');
    }
    out
}

/// Joins texts with equal marks, removes spaces at the ends and doubled spaces.
fn trim_inline(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for n in nodes {
        if let (Some(last), true) = (out.last_mut(), n.is_text())
            && last.is_text()
            && last.marks == n.marks
        {
            let mut add = n.text.unwrap_or_default();
            if last.text.as_deref().is_some_and(|t| t.ends_with(' ')) && add.starts_with(' ') {
                add.remove(0);
            }
            last.text.get_or_insert_with(String::new).push_str(&add);
            continue;
        }
        if n.is_text()
            && let Some(prev) = out.iter().rev().find(|x| x.is_text())
            && prev.text.as_deref().is_some_and(|t| t.ends_with(' '))
            && out.last().is_some_and(Node::is_text)
        {
            let t = n.text.clone().unwrap_or_default();
            let t = t.strip_prefix(' ').unwrap_or(&t).to_owned();
            if !t.is_empty() {
                out.push(Node::text(t, n.marks));
            }
            continue;
        }
        out.push(n);
    }
    if let Some(first) = out.first_mut()
        && let Some(t) = first.text.as_mut()
    {
        *t = t.trim_start().to_owned();
    }
    if let Some(last) = out.last_mut()
        && let Some(t) = last.text.as_mut()
    {
        *t = t.trim_end().to_owned();
    }
    out.retain(|n| !n.is_text() || n.text.as_deref().is_some_and(|t| !t.is_empty()));
    out
}

/// Ensures the blocks are valid content of a document.
fn normalize_blocks(blocks: Vec<Node>) -> Vec<Node> {
    blocks
        .into_iter()
        .filter(|b| !(b.node_type() == Some(NodeType::Paragraph) && b.content.is_empty()))
        .collect()
}

// ---------------------------------------------------------------------
// Copy

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    quire_protocol::rich::html::escape_into(text, &mut out);
    out
}

/// Serialises schema content as HTML (what other apps understand).
pub fn to_html(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        write_html(n, &mut out);
    }
    out
}

fn write_html(node: &Node, out: &mut String) {
    if let Some(text) = &node.text {
        let mut s = escape(text);
        for mark in node.marks.iter().rev() {
            s = match mark.mark_type() {
                Some(MarkType::Bold) => format!("<strong>{s}</strong>"),
                Some(MarkType::Italic) => format!("<em>{s}</em>"),
                Some(MarkType::Underline) => format!("<u>{s}</u>"),
                Some(MarkType::Strike) => format!("<s>{s}</s>"),
                Some(MarkType::Code) => format!("<code>{s}</code>"),
                Some(MarkType::Link) => match mark.href().and_then(clickable_href) {
                    Some(href) => format!("<a href=\"{}\">{s}</a>", escape(href)),
                    None => s,
                },
                None => s,
            };
        }
        out.push_str(&s);
        return;
    }
    let inner = |out: &mut String| {
        for c in &node.content {
            write_html(c, out);
        }
    };
    match node.node_type() {
        Some(NodeType::Paragraph) => {
            out.push_str("<p>");
            inner(out);
            out.push_str("</p>");
        }
        Some(NodeType::Heading) => {
            let level = node
                .attrs
                .get("level")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .clamp(1, 6);
            out.push_str(&format!("<h{level}>"));
            inner(out);
            out.push_str(&format!("</h{level}>"));
        }
        Some(NodeType::CodeBlock) => {
            out.push_str("<pre><code>");
            inner(out);
            out.push_str("</code></pre>");
        }
        Some(NodeType::HardBreak) => out.push_str("<br>"),
        Some(NodeType::HorizontalRule) => out.push_str("<hr>"),
        Some(
            kind @ (NodeType::BulletList
            | NodeType::OrderedList
            | NodeType::ListItem
            | NodeType::Blockquote),
        ) => {
            let tag = match kind {
                NodeType::BulletList => "ul",
                NodeType::OrderedList => "ol",
                NodeType::ListItem => "li",
                _ => "blockquote",
            };
            out.push_str(&format!("<{tag}>"));
            inner(out);
            out.push_str(&format!("</{tag}>"));
        }
        _ => inner(out),
    }
}

/// Plain text of copied content: one line per text block.
pub fn to_text(nodes: &[Node]) -> String {
    let mut lines = Vec::new();
    fn walk(node: &Node, lines: &mut Vec<String>) {
        if node.node_type().is_some_and(NodeType::is_textblock) {
            let mut line = String::new();
            for c in &node.content {
                if c.node_type() == Some(NodeType::HardBreak) {
                    line.push('\n');
                } else {
                    line.push_str(&c.text_content());
                }
            }
            lines.push(line);
        } else if node.is_text() {
            lines.push(node.text.clone().unwrap_or_default());
        } else {
            for c in &node.content {
                walk(c, lines);
            }
        }
    }
    for n in nodes {
        walk(n, &mut lines);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_html_is_escaped_and_links_filtered() {
        let nodes = vec![
            Node::heading(2, vec![Node::text("A <b> & \"c\"", vec![])]),
            Node::paragraph(vec![
                Node::text(
                    "x",
                    vec![Mark::of(MarkType::Bold), Mark::of(MarkType::Italic)],
                ),
                Node::new(NodeType::HardBreak, vec![]),
                Node::text("ok", vec![Mark::link("https://a.b/?q=1&r=2")]),
                Node::text("bad", vec![Mark::link("javascript:alert(1)")]),
            ]),
        ];
        assert_eq!(
            to_html(&nodes),
            "<h2>A &lt;b&gt; &amp; &quot;c&quot;</h2><p><strong><em>x</em></strong><br><a href=\"https://a.b/?q=1&amp;r=2\">ok</a>bad</p>"
        );
        assert_eq!(to_text(&nodes), "A <b> & \"c\"\nx\nokbad");
    }

    #[test]
    fn whitespace_collapses_like_html() {
        assert_eq!(collapse("  a \n\t b  "), " a b ");
        let nodes = trim_inline(vec![
            Node::text(" a ", vec![]),
            Node::text(" b ", vec![Mark::of(MarkType::Bold)]),
        ]);
        assert_eq!(nodes[0].text.as_deref(), Some("a "));
        assert_eq!(nodes[1].text.as_deref(), Some("b"));
    }
}
