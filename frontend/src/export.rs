//! The Export menu's formats, and exporting the browser's own copy of a
//! document when the server cannot be reached: the same renderings the
//! server's `GET /api/docs/{doc}/snapshot?format=` gives, written from
//! the tab's `Doc` with `quire_protocol::rich`'s writers (the importers'
//! parsers are not in the web app).

use quire_protocol::rich::json::{self, Node};
use quire_protocol::rich::text::paragraphs;
use quire_protocol::rich::{FRAGMENT, Model, html, markdown, model, plain_text};
use serde_json::{Map, Value};
use yrs::types::ToJson;
use yrs::{GetString, Out, ReadTxn, StateVector};

/// A format of the Export menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Md,
    Html,
    Txt,
    Json,
    Yjs,
}

impl ExportFormat {
    /// In the menu's order.
    pub const ALL: [ExportFormat; 5] = [Self::Md, Self::Html, Self::Txt, Self::Json, Self::Yjs];

    pub fn label(self) -> &'static str {
        match self {
            Self::Md => "Markdown (.md)",
            Self::Html => "HTML (.html)",
            Self::Txt => "Plain text (.txt)",
            Self::Json => "JSON (.json)",
            Self::Yjs => "Yjs update (.yjs)",
        }
    }

    pub fn ext(self) -> &'static str {
        match self {
            Self::Md => "md",
            Self::Html => "html",
            Self::Txt => "txt",
            Self::Json => "json",
            Self::Yjs => "yjs",
        }
    }

    /// The server's `?format=`.
    pub fn server_format(self) -> &'static str {
        match self {
            Self::Md => "markdown",
            Self::Html => "html",
            Self::Txt => "text",
            Self::Json => "json",
            Self::Yjs => "yjs",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Md => "text/markdown;charset=utf-8",
            Self::Html => "text/html;charset=utf-8",
            Self::Txt => "text/plain;charset=utf-8",
            Self::Json => "application/json",
            Self::Yjs => "application/octet-stream",
        }
    }
}

/// The document in `txn` rendered as `format`, as the server renders it;
/// an HTML document is titled `title`.
pub fn render<T: ReadTxn>(txn: &T, format: ExportFormat, title: &str) -> Vec<u8> {
    match format {
        ExportFormat::Yjs => txn.encode_state_as_update_v1(&StateVector::default()),
        ExportFormat::Txt => plain_text(txn).into_bytes(),
        ExportFormat::Md => markdown::to_markdown(&document(txn)).into_bytes(),
        ExportFormat::Html => html::to_html(&document(txn), title).into_bytes(),
        ExportFormat::Json => {
            let mut bytes = serde_json::to_vec_pretty(&Value::Object(roots(txn)))
                .expect("a JSON value always serialises");
            bytes.push(b'\n');
            bytes
        }
    }
}

/// The document as ProseMirror JSON, whichever model it uses (a
/// plain-text document's lines as paragraphs, as the server does).
fn document<T: ReadTxn>(txn: &T) -> Node {
    match model(txn) {
        Model::Rich => {
            let fragment = txn.get_xml_fragment(FRAGMENT).expect("the model found it");
            json::read_fragment(txn, &fragment)
        }
        Model::Plain => Node::doc(paragraphs(&plain_text(txn))),
        Model::Empty => Node::doc(Vec::new()),
    }
}

/// Every root type the tab knows, as JSON: the fragment as ProseMirror
/// JSON, texts as strings, maps and arrays as JSON values.
fn roots<T: ReadTxn>(txn: &T) -> Map<String, Value> {
    let mut roots = Map::new();
    for (name, value) in txn.root_refs() {
        let json = match value {
            Out::YXmlFragment(_) if name == FRAGMENT => {
                serde_json::to_value(document(txn)).expect("a node always serialises")
            }
            Out::YText(text) => Value::String(text.get_string(txn)),
            Out::YXmlFragment(fragment) => Value::String(fragment.get_string(txn)),
            Out::YMap(map) => json::any_to_json(&map.to_json(txn)),
            Out::YArray(array) => json::any_to_json(&array.to_json(txn)),
            _ => continue,
        };
        roots.insert(name.to_owned(), json);
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_protocol::rich::LEGACY_TEXT;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, Text, Transact, WriteTxn};

    /// A rich document with a heading, a list, bold and a link.
    fn rich() -> Doc {
        let doc = Doc::new();
        let content: Node = serde_json::from_value(serde_json::json!({
            "type": "doc",
            "content": [
                {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Plan"}]},
                {"type": "bulletList", "content": [{"type": "listItem", "content": [{"type": "paragraph", "content": [
                    {"type": "text", "text": "bold", "marks": [{"type": "bold"}]},
                    {"type": "text", "text": " and "},
                    {"type": "text", "text": "link", "marks": [{"type": "link", "attrs": {"href": "https://x.y"}}]}
                ]}]}]}
            ]
        }))
        .unwrap();
        {
            let mut txn = doc.transact_mut();
            let fragment = txn.get_or_insert_xml_fragment(FRAGMENT);
            json::write(&mut txn, &fragment, 0, &content.content);
        }
        doc
    }

    fn rendered(doc: &Doc, format: ExportFormat) -> String {
        String::from_utf8(render(&doc.transact(), format, "Plan <1>")).unwrap()
    }

    #[test]
    fn the_browsers_copy_exports_as_markdown_html_text_and_json() {
        let doc = rich();
        assert_eq!(
            rendered(&doc, ExportFormat::Md),
            "# Plan\n\n- **bold** and [link](https://x.y)\n"
        );
        let html = rendered(&doc, ExportFormat::Html);
        assert!(html.contains("<title>Plan &lt;1&gt;</title>"), "{html}");
        assert!(
            html.contains("<h1>Plan</h1>") && html.contains("<strong>bold</strong>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"https://x.y\""), "{html}");
        assert_eq!(rendered(&doc, ExportFormat::Txt), "Plan\nbold and link");
        let json: Value = serde_json::from_str(&rendered(&doc, ExportFormat::Json)).unwrap();
        assert_eq!(json["default"]["type"], "doc");
        assert_eq!(json["default"]["content"][0]["type"], "heading");
    }

    #[test]
    fn a_plain_text_copy_exports_its_lines_as_paragraphs() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text(LEGACY_TEXT);
            text.insert(&mut txn, 0, "one *two*\nthree");
        }
        assert_eq!(rendered(&doc, ExportFormat::Md), "one \\*two\\*\n\nthree\n");
        let json: Value = serde_json::from_str(&rendered(&doc, ExportFormat::Json)).unwrap();
        assert_eq!(json["content"], "one *two*\nthree");
    }

    #[test]
    fn the_yjs_copy_is_the_whole_state() {
        let doc = rich();
        let bytes = render(&doc.transact(), ExportFormat::Yjs, "");
        let copy = Doc::new();
        copy.transact_mut()
            .apply_update(yrs::Update::decode_v1(&bytes).unwrap())
            .unwrap();
        assert_eq!(
            rendered(&copy, ExportFormat::Md),
            rendered(&doc, ExportFormat::Md)
        );
    }
}
