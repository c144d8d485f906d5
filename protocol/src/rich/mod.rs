//! Rich documents: the schema Quire's editor writes and the server's
//! exporters read, and the functions that move content between a yrs
//! document and ProseMirror's JSON form.
//!
//! A rich document is the `Y.XmlFragment` named [`FRAGMENT`] (`default`,
//! the field Tiptap's Collaboration extension binds), encoded as
//! y-prosemirror encodes a ProseMirror document: every node a
//! `Y.XmlElement` named after its node type with its non-null attrs as XML
//! attributes, every run of text a `Y.XmlText` whose formatting attributes
//! are the marks (mark name → its attrs object, `{}` when it has none).
//! The node and mark names are those of Tiptap's StarterKit (v3), see
//! [`schema`].
//!
//! # Layout
//!
//! - [`schema`]: node and mark types, their attrs and defaults, which
//!   content each node allows, which links are clickable.
//! - [`json`]: ProseMirror JSON ([`Node`], [`Mark`]): reading a fragment
//!   as JSON, writing JSON-shaped content into a fragment, and checking
//!   content against the schema.
//! - [`text`]: the plain text of a document, whichever model it uses (the
//!   rich fragment or the legacy `Y.Text` named `content`), and which
//!   model that is.
//! - [`markdown`], [`html`]: documents as Markdown and HTML, written
//!   everywhere, read (feature `import`) through pulldown-cmark and
//!   ammonia + html5ever; [`normalise`]: what makes read content valid.
//!
//! **Architecture Invariant:** like the rest of this crate, nothing here
//! does I/O; it compiles for wasm32 and runs in the browser editor, the
//! server and the tests alike.

pub mod html;
pub mod json;
pub mod markdown;
pub mod normalise;
pub mod schema;
pub mod text;

pub use json::{Mark, Node, SchemaError};
pub use schema::{MarkType, NodeType};
pub use text::{Model, model, node_text, plain_text};

/// The root `Y.XmlFragment` that holds a rich document.
pub const FRAGMENT: &str = "default";
/// The root `Y.Text` of plain-text documents (Quire's first editor and stock y-websocket apps).
pub const LEGACY_TEXT: &str = "content";
