//! Rendering a document for export: as a Yjs update, as plain text, as
//! JSON with every root type, or as Markdown or HTML.
//!
//! Markdown and HTML are written one top-level block at a time from the
//! fragment `default` (a plain-text document: its lines as paragraphs),
//! so a big document is never held as one ProseMirror tree besides its
//! yrs copy. JSON carries `default` as ProseMirror JSON (what
//! `yXmlFragmentToProsemirrorJSON` gives), the other roots as before.
//!
//! The server never declares root types (it does not know the app's schema),
//! so in its document most roots are "undefined". Rendering infers each
//! root's kind from its content, as yrs's own `as_prelim` does, on a private
//! copy of the document: the room's document is never touched.

use quire_protocol::rich::json::{self, Node};
use quire_protocol::rich::markdown::MarkdownWriter;
use quire_protocol::rich::text::paragraphs;
use quire_protocol::rich::{FRAGMENT, Model, html, model};
use serde::Deserialize;
use serde_json::{Map, Value};
use yrs::types::{AsPrelim, ToJson};
use yrs::{
    ArrayRef, GetString, In, MapRef, Out, ReadTxn, TextRef, Transact, XmlElementRef, XmlFragment,
    XmlFragmentRef, XmlOut, XmlTextRef,
};

use crate::document::{Document, DocumentError};

/// Export formats of `GET /api/docs/{doc}/snapshot` and `quire export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A Yjs update (v1) holding the whole document.
    Yjs,
    /// The plain text, whichever model the document uses (one line per
    /// block and list item of a rich document).
    Text,
    /// Every root type as JSON; `default` as ProseMirror JSON.
    Json,
    /// CommonMark with GFM strikethrough.
    #[value(alias = "md")]
    #[serde(alias = "md")]
    Markdown,
    /// A complete HTML5 document.
    Html,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Yjs => "application/octet-stream",
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Yjs => "yjs",
            Format::Text => "txt",
            Format::Json => "json",
            Format::Markdown => "md",
            Format::Html => "html",
        }
    }

    /// The format a `?format=` value names.
    pub fn parse(value: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(value, true).ok()
    }
}

/// Renders `state` (a whole-document update) in `format`; HTML is titled "Document".
pub fn render(state: Vec<u8>, format: Format) -> Result<Vec<u8>, DocumentError> {
    render_titled(state, format, "Document")
}

/// Renders `state` in `format`; an HTML document gets `title`.
pub fn render_titled(
    state: Vec<u8>,
    format: Format,
    title: &str,
) -> Result<Vec<u8>, DocumentError> {
    if format == Format::Yjs {
        return Ok(state);
    }
    render_document(&Document::from_updates([state.as_slice()])?, format, title)
}

/// Renders a document already in memory (a cold export, `quire export`):
/// no second copy is built.
pub fn render_document(
    document: &Document,
    format: Format,
    title: &str,
) -> Result<Vec<u8>, DocumentError> {
    if format == Format::Yjs {
        return document.encode_state();
    }
    let doc = document.doc();
    let txn = doc.transact();
    Ok(match format {
        Format::Yjs => unreachable!("returned above"),
        Format::Text => quire_protocol::rich::plain_text(&txn).into_bytes(),
        Format::Markdown => {
            let mut writer = MarkdownWriter::default();
            for_each_block(&txn, |block| writer.push(block));
            writer.finish().into_bytes()
        }
        Format::Html => {
            let mut out = html::document_start(title);
            for_each_block(&txn, |block| html::block(block, &mut out));
            out.push_str(html::DOCUMENT_END);
            out.into_bytes()
        }
        Format::Json => {
            let roots: Map<String, Value> = txn
                .root_refs()
                .map(|(name, value)| {
                    let json = match txn.get_xml_fragment(FRAGMENT) {
                        Some(fragment) if name == FRAGMENT => {
                            serde_json::to_value(json::read_fragment(&txn, &fragment))
                                .expect("a node always serialises")
                        }
                        _ => render_json(&txn, value),
                    };
                    (name.to_owned(), json)
                })
                .collect();
            let mut bytes = serde_json::to_vec_pretty(&Value::Object(roots))
                .expect("a JSON value always serialises");
            bytes.push(b'\n');
            bytes
        }
    })
}

/// Calls `f` with each top-level block of the document, in order: the
/// fragment's blocks read one at a time, or a plain-text document's lines
/// as paragraphs.
fn for_each_block<T: ReadTxn>(txn: &T, mut f: impl FnMut(&Node)) {
    match model(txn) {
        Model::Empty => {}
        Model::Plain => {
            for paragraph in paragraphs(&quire_protocol::rich::plain_text(txn)) {
                f(&paragraph);
            }
        }
        Model::Rich => {
            let fragment = txn.get_xml_fragment(FRAGMENT).expect("the model found it");
            for child in fragment.children(txn) {
                match child {
                    XmlOut::Element(element) => f(&json::read_element(txn, &element)),
                    // Text straight in the fragment (not what editors write): a paragraph.
                    XmlOut::Text(text) => f(&Node::paragraph(json::read_text(txn, &text))),
                    XmlOut::Fragment(inner) => {
                        for node in json::read_children(txn, &inner) {
                            f(&node);
                        }
                    }
                }
            }
        }
    }
}

/// One root as JSON: texts and XML as strings, maps and arrays as JSON.
fn render_json<T: ReadTxn>(txn: &T, value: Out) -> Value {
    match value {
        Out::YText(text) => Value::String(text.get_string(txn)),
        Out::YXmlFragment(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlElement(xml) => Value::String(xml.get_string(txn)),
        Out::YXmlText(xml) => Value::String(xml.get_string(txn)),
        Out::YMap(map) => any_to_json(map.to_json(txn)),
        Out::YArray(array) => any_to_json(array.to_json(txn)),
        Out::UndefinedRef(branch) => {
            let kind = Out::UndefinedRef(branch).as_prelim(txn);
            match kind {
                In::Text(_) => Value::String(TextRef::from(branch).get_string(txn)),
                In::XmlText(_) => Value::String(XmlTextRef::from(branch).get_string(txn)),
                In::XmlElement(_) => Value::String(XmlElementRef::from(branch).get_string(txn)),
                In::Array(_) => {
                    // A fragment of XML nodes (ProseMirror, Tiptap) looks like
                    // an array from the outside; render it as XML.
                    let array = ArrayRef::from(branch);
                    let holds_xml = yrs::Array::iter(&array, txn).next().is_some_and(|item| {
                        matches!(
                            item,
                            Out::YXmlElement(_) | Out::YXmlText(_) | Out::YXmlFragment(_)
                        )
                    });
                    if holds_xml {
                        Value::String(XmlFragmentRef::from(branch).get_string(txn))
                    } else {
                        any_to_json(array.to_json(txn))
                    }
                }
                _ => any_to_json(MapRef::from(branch).to_json(txn)),
            }
        }
        Out::Any(any) => any_to_json(any),
        other => Value::String(other.to_string(txn)),
    }
}

fn any_to_json(any: yrs::Any) -> Value {
    // `Any` can hold binary and undefined values JSON cannot; serde maps them
    // to arrays of numbers and null.
    serde_json::to_value(&any).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Array, Doc, Map, Text, WriteTxn, XmlFragment, XmlTextPrelim};

    /// A document built the way a JavaScript app would, with several root kinds.
    fn app_state() -> Vec<u8> {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("content")
            .insert(&mut txn, 0, "Hello, world");
        let meta = txn.get_or_insert_map("meta");
        meta.insert(&mut txn, "title", "Plan");
        meta.insert(&mut txn, "version", 3);
        txn.get_or_insert_array("tags").push_back(&mut txn, "a");
        let fragment = txn.get_or_insert_xml_fragment("prosemirror");
        fragment.push_back(&mut txn, XmlTextPrelim::new("para"));
        txn.encode_state_as_update_v1(&yrs::StateVector::default())
    }

    #[test]
    fn text_format_is_the_content_root() {
        let text = render(app_state(), Format::Text).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "Hello, world");
    }

    #[test]
    fn json_format_holds_every_root_kind() {
        let json: Value =
            serde_json::from_slice(&render(app_state(), Format::Json).unwrap()).unwrap();
        assert_eq!(json["content"], "Hello, world");
        assert_eq!(json["meta"]["title"], "Plan");
        assert_eq!(json["meta"]["version"], 3.0);
        assert_eq!(json["tags"], serde_json::json!(["a"]));
        assert_eq!(json["prosemirror"], "para");
    }

    #[test]
    fn yjs_format_reproduces_the_document() {
        let state = app_state();
        let exported = render(state.clone(), Format::Yjs).unwrap();
        let rebuilt = Document::from_updates([exported.as_slice()]).unwrap();
        assert_eq!(
            rebuilt.encode_state().unwrap(),
            Document::from_updates([state.as_slice()])
                .unwrap()
                .encode_state()
                .unwrap()
        );
    }

    /// A rich document as Tiptap writes it, and a plain-text one.
    fn rich_state() -> Vec<u8> {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment(FRAGMENT);
        let content = quire_protocol::rich::markdown::from_markdown(
            "# Plan\n\n- **bold** and [link](https://x.y)\n\n```rs\nfn a() {}\n```\n",
        );
        json::write(&mut doc.transact_mut(), &fragment, 0, &content.content);
        doc.transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    }

    #[test]
    fn markdown_and_html_render_the_fragment() {
        let md = render(rich_state(), Format::Markdown).unwrap();
        assert_eq!(
            String::from_utf8(md).unwrap(),
            "# Plan\n\n- **bold** and [link](https://x.y)\n\n```rs\nfn a() {}\n```\n"
        );
        let html =
            String::from_utf8(render_titled(rich_state(), Format::Html, "a<b").unwrap()).unwrap();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.contains("<title>a&lt;b</title>"), "{html}");
        assert!(html.contains("<h1>Plan</h1>\n<ul>\n<li><p><strong>bold</strong> and <a href=\"https://x.y\">link</a></p>"), "{html}");
        assert!(
            html.contains("<pre><code class=\"language-rs\">fn a() {}</code></pre>"),
            "{html}"
        );
        // A plain-text document: its lines as paragraphs.
        let plain = render(app_state(), Format::Markdown).unwrap();
        assert_eq!(plain, b"Hello, world\n");
    }

    #[test]
    fn json_carries_the_fragment_as_prosemirror_json() {
        let json: Value =
            serde_json::from_slice(&render(rich_state(), Format::Json).unwrap()).unwrap();
        let doc: Node = serde_json::from_value(json["default"].clone()).unwrap();
        doc.check().unwrap();
        assert_eq!(doc.content[0].kind, "heading");
        assert_eq!(doc.content[1].kind, "bulletList");
    }

    #[test]
    fn format_names_and_aliases() {
        assert_eq!(Format::parse("md"), Some(Format::Markdown));
        assert_eq!(Format::parse("markdown"), Some(Format::Markdown));
        assert_eq!(Format::parse("HTML"), Some(Format::Html));
        assert_eq!(Format::parse("pdf"), None);
    }

    #[test]
    fn empty_document_renders_empty() {
        let empty = Document::new().encode_state().unwrap();
        assert!(render(empty.clone(), Format::Text).unwrap().is_empty());
        assert_eq!(render(empty, Format::Json).unwrap(), b"{}\n");
    }
}
