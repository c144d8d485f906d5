//! Files brought into a document: a Yjs update, Markdown, HTML or plain
//! text, made into one Yjs update that the room merges like any other
//! (`PUT /api/docs/{doc}/snapshot`, `POST /api/docs`, `quire import`).
//!
//! **Architecture Invariant:** an import only ever adds. Into an empty
//! document the file becomes its content; into a rich one its blocks are
//! appended after the last block of `default`; into a plain-text document
//! (only the `Y.Text` `content`) its text is appended to `content` on a
//! new line, so the document keeps the model its editors use. The update
//! is built on a private replica of the document's state with a client id
//! of its own, never on the room's document, and merges with whatever was
//! written meanwhile.
//!
//! Memory: a big Markdown file is read one top-level block at a time
//! (`markdown::blocks`); each block is kept only in a compact JSON form
//! until all are written, last first at one index (yrs walks a parent's
//! children from the start for every insert, so appending in order would
//! be quadratic). The replica is dropped before the update goes to the room;
//! the API builds it on a document thread and trims after it (`memory`),
//! so what it used goes back to the system.

use quire_protocol::rich::json::{self, Node};
use quire_protocol::rich::text::paragraphs;
use quire_protocol::rich::{FRAGMENT, LEGACY_TEXT, Model, html, markdown, model, node_text};
use thiserror::Error;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update, WriteTxn, XmlFragment};

/// What a file to import holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// A Yjs update (v1), merged as it is.
    Yjs,
    /// CommonMark with GFM strikethrough.
    #[value(alias = "md")]
    Markdown,
    /// An HTML document or fragment (sanitised).
    Html,
    /// Plain text: one paragraph per line.
    Text,
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error(
        "unsupported media type {0:?}; send application/octet-stream (a Yjs update), text/markdown, text/html or text/plain"
    )]
    UnsupportedType(String),
    #[error("the file is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("the document's state does not decode: {0}")]
    BadState(String),
    #[error(transparent)]
    TooDeep(#[from] quire_protocol::rich::html::TooDeep),
}

impl ImportFormat {
    /// The format a request's `Content-Type` names (parameters such as
    /// `charset` are accepted and ignored: the text must be UTF-8); no
    /// header means a Yjs update, as before formats existed.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, ImportError> {
        let Some(value) = value else {
            return Ok(ImportFormat::Yjs);
        };
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Ok(match essence.as_str() {
            "" | "application/octet-stream" => ImportFormat::Yjs,
            "text/markdown" | "text/x-markdown" => ImportFormat::Markdown,
            "text/html" => ImportFormat::Html,
            "text/plain" => ImportFormat::Text,
            _ => return Err(ImportError::UnsupportedType(value.to_owned())),
        })
    }

    /// The format a file name's extension names.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match extension.as_str() {
            "md" | "markdown" => ImportFormat::Markdown,
            "html" | "htm" => ImportFormat::Html,
            "txt" | "text" => ImportFormat::Text,
            "yjs" => ImportFormat::Yjs,
            _ => return None,
        })
    }
}

/// The update that adds `file` (in `format`) to the document whose whole
/// state is `state` (`None`: a document with nothing stored). For a Yjs
/// file, the file itself.
pub fn to_update(
    state: Option<&[u8]>,
    format: ImportFormat,
    file: &[u8],
) -> Result<Vec<u8>, ImportError> {
    if format == ImportFormat::Yjs {
        return Ok(file.to_vec());
    }
    let text = std::str::from_utf8(file).map_err(ImportError::NotUtf8)?;
    if format == ImportFormat::Html {
        html::check_depth(text)?;
    }
    // A fresh client id: this import is an author of its own.
    let doc = Doc::new();
    if let Some(state) = state {
        let update = Update::decode_v1(state).map_err(|e| ImportError::BadState(e.to_string()))?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| ImportError::BadState(e.to_string()))?;
    }
    let before = doc.transact().state_vector();
    let current = model(&doc.transact());
    {
        let mut txn = doc.transact_mut();
        match current {
            Model::Plain => {
                let addition = match format {
                    ImportFormat::Text => text.replace("\r\n", "\n"),
                    ImportFormat::Markdown => node_text(&markdown::from_markdown(text)),
                    ImportFormat::Html => node_text(&html::from_html(text)),
                    ImportFormat::Yjs => unreachable!("returned above"),
                };
                append_text(&mut txn, &addition);
            }
            Model::Empty | Model::Rich => {
                let blocks = Blocks::of(format, text);
                let fragment = txn.get_or_insert_xml_fragment(FRAGMENT);
                let at = fragment.len(&txn);
                blocks.write(&mut txn, &fragment, at);
            }
        }
    }
    let update = doc.transact().encode_state_as_update_v1(&before);
    Ok(update)
}

/// Appends `addition` to `content`, on a line of its own.
fn append_text(txn: &mut yrs::TransactionMut, addition: &str) {
    let content = txn.get_or_insert_text(LEGACY_TEXT);
    let existing = content.get_string(txn);
    let mut piece = String::with_capacity(addition.len() + 1);
    if !existing.is_empty() && !existing.ends_with('\n') {
        piece.push('\n');
    }
    piece.push_str(addition);
    let end = content.len(txn);
    content.insert(txn, end, &piece);
}

/// A file's top-level blocks, each kept as compact JSON until written.
struct Blocks {
    /// Every block's JSON, one after the other.
    bytes: Vec<u8>,
    /// Where each block's JSON ends in `bytes`.
    ends: Vec<usize>,
}

impl Blocks {
    fn of(format: ImportFormat, text: &str) -> Self {
        let mut blocks = Blocks {
            bytes: Vec::new(),
            ends: Vec::new(),
        };
        match format {
            ImportFormat::Markdown => markdown::blocks(text).for_each(|b| blocks.push(&b)),
            ImportFormat::Html => html::from_html(text)
                .content
                .iter()
                .for_each(|b| blocks.push(b)),
            ImportFormat::Text => paragraphs(text).iter().for_each(|b| blocks.push(b)),
            ImportFormat::Yjs => {}
        }
        if blocks.ends.is_empty() {
            blocks.push(&Node::paragraph(Vec::new()));
        }
        blocks
    }

    fn push(&mut self, block: &Node) {
        serde_json::to_writer(&mut self.bytes, block).expect("a node always serialises");
        self.ends.push(self.bytes.len());
    }

    /// Writes the blocks into `fragment` at child `index`, last first.
    fn write(self, txn: &mut yrs::TransactionMut, fragment: &yrs::XmlFragmentRef, index: u32) {
        for n in (0..self.ends.len()).rev() {
            let start = if n == 0 { 0 } else { self.ends[n - 1] };
            let block: Node =
                serde_json::from_slice(&self.bytes[start..self.ends[n]]).expect("written by push");
            json::write(txn, fragment, index, std::slice::from_ref(&block));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_protocol::rich::plain_text;
    use yrs::StateVector;

    fn state_of(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn merged(state: &[u8], update: &[u8]) -> Doc {
        let doc = Doc::new();
        for bytes in [state, update].into_iter().filter(|b| !b.is_empty()) {
            doc.transact_mut()
                .apply_update(Update::decode_v1(bytes).unwrap())
                .unwrap();
        }
        doc
    }

    #[test]
    fn content_types_name_formats() {
        let f = |v| ImportFormat::from_content_type(v).ok();
        assert_eq!(f(None), Some(ImportFormat::Yjs));
        assert_eq!(f(Some("application/octet-stream")), Some(ImportFormat::Yjs));
        assert_eq!(
            f(Some("text/markdown; charset=UTF-8")),
            Some(ImportFormat::Markdown)
        );
        assert_eq!(f(Some("Text/HTML;charset=utf-8")), Some(ImportFormat::Html));
        assert_eq!(f(Some("text/plain")), Some(ImportFormat::Text));
        assert_eq!(f(Some("application/pdf")), None);
        let p = |s: &str| ImportFormat::from_path(std::path::Path::new(s));
        assert_eq!(p("a.MD"), Some(ImportFormat::Markdown));
        assert_eq!(p("a.htm"), Some(ImportFormat::Html));
        assert_eq!(p("a.yjs"), Some(ImportFormat::Yjs));
        assert_eq!(p("a.pdf"), None);
    }

    #[test]
    fn markdown_into_an_empty_document_becomes_its_content() {
        let update = to_update(None, ImportFormat::Markdown, b"# T\n\n- a\n- b\n").unwrap();
        let doc = merged(&[], &update);
        let txn = doc.transact();
        let json = json::read_fragment(&txn, &txn.get_xml_fragment(FRAGMENT).unwrap());
        json.check().unwrap();
        assert_eq!(markdown::to_markdown(&json), "# T\n\n- a\n- b\n");
    }

    #[test]
    fn into_a_rich_document_the_blocks_are_appended() {
        let first = to_update(None, ImportFormat::Text, b"one\ntwo").unwrap();
        let state = state_of(&merged(&[], &first));
        let second = to_update(Some(&state), ImportFormat::Html, b"<p>three</p>").unwrap();
        let doc = merged(&state, &second);
        assert_eq!(plain_text(&doc.transact()), "one\ntwo\nthree");
    }

    #[test]
    fn into_a_plain_document_the_text_is_appended_to_content() {
        let plain = Doc::new();
        plain
            .get_or_insert_text(LEGACY_TEXT)
            .insert(&mut plain.transact_mut(), 0, "first");
        let state = state_of(&plain);
        let update =
            to_update(Some(&state), ImportFormat::Markdown, b"# Head\n\n*para*\n").unwrap();
        let doc = merged(&state, &update);
        let txn = doc.transact();
        assert_eq!(model(&txn), Model::Plain);
        assert_eq!(plain_text(&txn), "first\nHead\npara");
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        assert!(matches!(
            to_update(None, ImportFormat::Text, &[0xff, 0xfe]),
            Err(ImportError::NotUtf8(_))
        ));
    }
}
