//! Rendering a document for export: as a Yjs update, as plain text, or as
//! JSON with every root type.
//!
//! The server never declares root types (it does not know the app's schema),
//! so in its document most roots are "undefined". Rendering infers each
//! root's kind from its content, as yrs's own `as_prelim` does, on a private
//! copy of the document: the room's document is never touched.

use serde::Deserialize;
use serde_json::{Map, Value};
use yrs::types::{AsPrelim, ToJson};
use yrs::{
    ArrayRef, GetString, In, MapRef, Out, ReadTxn, TextRef, Transact, XmlElementRef,
    XmlFragmentRef, XmlTextRef,
};

use crate::document::{Document, DocumentError};

/// Export formats of `GET /api/docs/{doc}/snapshot` and `quire export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A Yjs update (v1) holding the whole document.
    Yjs,
    /// The `Y.Text` named `content`, as UTF-8.
    Text,
    /// Every root type as JSON.
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Yjs => "application/octet-stream",
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Yjs => "yjs",
            Format::Text => "txt",
            Format::Json => "json",
        }
    }
}

/// Renders `state` (a whole-document update) in `format`.
pub fn render(state: Vec<u8>, format: Format) -> Result<Vec<u8>, DocumentError> {
    if format == Format::Yjs {
        return Ok(state);
    }
    let document = Document::from_updates([state.as_slice()])?;
    let doc = document.doc();
    let txn = doc.transact();
    Ok(match format {
        Format::Yjs => unreachable!("returned above"),
        Format::Text => quire_protocol::rich::plain_text(&txn).into_bytes(),
        Format::Json => {
            let roots: Map<String, Value> = txn
                .root_refs()
                .map(|(name, value)| (name.to_owned(), render_json(&txn, value)))
                .collect();
            let mut bytes = serde_json::to_vec_pretty(&Value::Object(roots))
                .expect("a JSON value always serialises");
            bytes.push(b'\n');
            bytes
        }
    })
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

    #[test]
    fn empty_document_renders_empty() {
        let empty = Document::new().encode_state().unwrap();
        assert!(render(empty.clone(), Format::Text).unwrap().is_empty());
        assert_eq!(render(empty, Format::Json).unwrap(), b"{}\n");
    }
}
