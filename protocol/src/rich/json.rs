//! ProseMirror's JSON form of a document, and the moves between it and a
//! yrs fragment, following y-prosemirror 1.3.7:
//!
//! - reading ([`read_fragment`]) gives what `yXmlFragmentToProsemirrorJSON`
//!   gives: elements with their attributes as `attrs`, each formatted run
//!   of an `XmlText` a `text` node whose marks are its formatting
//!   attributes (every mark with an `attrs` object, `{}` when empty);
//! - writing ([`write`]) creates what y-prosemirror's `updateYFragment`
//!   creates for new content: an element per node with its non-null attrs
//!   set as attributes (numbers stay numbers), consecutive text nodes in
//!   one `XmlText` whose runs carry the marks as formatting attributes;
//! - [`Node::check`] is the schema check `schema.nodeFromJSON(json).check()`
//!   makes for StarterKit (content, attrs, marks).
//!
//! Nodes and marks of types this schema does not know are read and
//! written as they are, never dropped.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use yrs::types::Attrs;
use yrs::types::text::YChange;
use yrs::{
    Any, Out, ReadTxn, Text, TransactionMut, Xml, XmlElementPrelim, XmlElementRef, XmlFragment,
    XmlOut, XmlTextPrelim, XmlTextRef,
};

use super::schema::{MarkType, NodeType, strip_mark_hash};

/// A node in ProseMirror JSON: `{"type", "attrs"?, "content"?}` or
/// `{"type": "text", "text", "marks"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<Mark>,
}

/// A mark in ProseMirror JSON: `{"type", "attrs"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub attrs: Map<String, Value>,
}

impl Mark {
    /// A mark of a schema type with its default attrs.
    pub fn of(kind: MarkType) -> Self {
        Self {
            kind: kind.name().to_owned(),
            attrs: kind.default_attrs(),
        }
    }

    /// A link to `href` (with StarterKit's default target and rel).
    pub fn link(href: &str) -> Self {
        let mut mark = Self::of(MarkType::Link);
        mark.attrs.insert("href".into(), Value::from(href));
        mark
    }

    pub fn mark_type(&self) -> Option<MarkType> {
        MarkType::from_name(&self.kind)
    }

    /// The link target, for a link mark.
    pub fn href(&self) -> Option<&str> {
        self.attrs.get("href").and_then(Value::as_str)
    }
}

impl Node {
    /// An element of a schema type with default attrs.
    pub fn new(kind: NodeType, content: Vec<Node>) -> Self {
        let attrs = kind
            .attrs()
            .iter()
            .map(|a| (a.name.to_owned(), a.default.to_json()))
            .collect();
        Self {
            kind: kind.name().to_owned(),
            attrs,
            content,
            text: None,
            marks: Vec::new(),
        }
    }

    pub fn doc(content: Vec<Node>) -> Self {
        Self::new(NodeType::Doc, content)
    }

    pub fn paragraph(content: Vec<Node>) -> Self {
        Self::new(NodeType::Paragraph, content)
    }

    pub fn heading(level: i64, content: Vec<Node>) -> Self {
        Self::new(NodeType::Heading, content).with_attr("level", Value::from(level))
    }

    pub fn text(text: impl Into<String>, marks: Vec<Mark>) -> Self {
        Self {
            kind: NodeType::Text.name().to_owned(),
            attrs: Map::new(),
            content: Vec::new(),
            text: Some(text.into()),
            marks,
        }
    }

    pub fn with_attr(mut self, name: &str, value: Value) -> Self {
        self.attrs.insert(name.to_owned(), value);
        self
    }

    pub fn node_type(&self) -> Option<NodeType> {
        NodeType::from_name(&self.kind)
    }

    pub fn is_text(&self) -> bool {
        self.kind == NodeType::Text.name()
    }

    /// The text inside, blocks separated by nothing (see [`super::text`] for lines).
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        if let Some(text) = &self.text {
            out.push_str(text);
        }
        for child in &self.content {
            child.collect_text(out);
        }
    }

    /// Checks this node against StarterKit's schema, as ProseMirror's
    /// `schema.nodeFromJSON(json).check()` does.
    pub fn check(&self) -> Result<(), SchemaError> {
        let kind = self
            .node_type()
            .ok_or_else(|| SchemaError::UnknownNode(self.kind.clone()))?;
        let specs = kind.attrs();
        for name in self.attrs.keys() {
            if !specs.iter().any(|s| s.name == name) {
                return Err(SchemaError::UnknownAttr {
                    node: self.kind.clone(),
                    attr: name.clone(),
                });
            }
        }
        if kind == NodeType::Heading {
            let level = self.attrs.get("level").and_then(Value::as_i64).unwrap_or(1);
            if !super::schema::HEADING_LEVELS.contains(&level) {
                return Err(SchemaError::BadAttr {
                    node: self.kind.clone(),
                    attr: "level".into(),
                });
            }
        }
        if kind == NodeType::Text {
            if self.text.as_deref().is_none_or(str::is_empty) {
                return Err(SchemaError::EmptyText);
            }
            let mut seen: Vec<MarkType> = Vec::new();
            for mark in &self.marks {
                let m = mark
                    .mark_type()
                    .ok_or_else(|| SchemaError::UnknownMark(mark.kind.clone()))?;
                for name in mark.attrs.keys() {
                    if !m.attrs().iter().any(|s| s.name == name) {
                        return Err(SchemaError::UnknownAttr {
                            node: mark.kind.clone(),
                            attr: name.clone(),
                        });
                    }
                }
                if seen.iter().any(|s| s.excludes(m)) {
                    return Err(SchemaError::ExcludedMarks(mark.kind.clone()));
                }
                seen.push(m);
            }
            return Ok(());
        }
        let mut children = Vec::with_capacity(self.content.len());
        for child in &self.content {
            child.check()?;
            if !kind.allows_marks() && !child.marks.is_empty() {
                return Err(SchemaError::MarksNotAllowed(self.kind.clone()));
            }
            children.push(child.node_type().expect("checked above"));
        }
        if !kind.allows_content(&children) {
            return Err(SchemaError::InvalidContent(self.kind.clone()));
        }
        Ok(())
    }
}

/// Why content is not valid in StarterKit's schema.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    #[error("unknown node type {0:?}")]
    UnknownNode(String),
    #[error("unknown mark type {0:?}")]
    UnknownMark(String),
    #[error("{node:?} has no attribute {attr:?}")]
    UnknownAttr { node: String, attr: String },
    #[error("{node:?} has an invalid {attr:?}")]
    BadAttr { node: String, attr: String },
    #[error("invalid content for {0:?}")]
    InvalidContent(String),
    #[error("marks are not allowed inside {0:?}")]
    MarksNotAllowed(String),
    #[error("mark {0:?} cannot be combined with the marks before it")]
    ExcludedMarks(String),
    #[error("empty text node")]
    EmptyText,
}

/// yrs value → JSON.
pub fn any_to_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
                .map(Value::Number)
                .unwrap_or(Value::Null),
        },
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => Value::Array(b.iter().map(|&x| Value::from(x)).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_to_json).collect()),
        Any::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), any_to_json(v)))
                .collect(),
        ),
    }
}

/// JSON → yrs value (integers stay integers, as a JS number would).
pub fn json_to_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::from(i),
            None => Any::from(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Any::from(s.as_str()),
        Value::Array(items) => Any::Array(items.iter().map(json_to_any).collect()),
        Value::Object(map) => Any::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_any(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

fn out_to_json<T: ReadTxn>(txn: &T, out: &Out) -> Value {
    match out {
        Out::Any(any) => any_to_json(any),
        other => Value::String(other.clone().to_string(txn)),
    }
}

/// The marks a run's formatting attributes stand for, in the schema's order
/// (unknown marks last, by name).
pub fn marks_of(attrs: Option<&Attrs>) -> Vec<Mark> {
    let Some(attrs) = attrs else {
        return Vec::new();
    };
    let mut marks: Vec<Mark> = attrs
        .iter()
        .filter(|(_, v)| !matches!(v, Any::Null | Any::Undefined))
        .map(|(name, value)| Mark {
            kind: strip_mark_hash(name).to_owned(),
            attrs: match any_to_json(value) {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        })
        .collect();
    marks.sort_by_key(mark_order);
    marks
}

fn mark_order(mark: &Mark) -> (usize, String) {
    let rank = mark
        .mark_type()
        .and_then(|t| MarkType::ALL.iter().position(|&m| m == t))
        .unwrap_or(MarkType::ALL.len());
    (rank, mark.kind.clone())
}

/// The formatting attributes that stand for `marks`.
pub fn attrs_of(marks: &[Mark]) -> Attrs {
    marks
        .iter()
        .map(|m| {
            (
                Arc::from(m.kind.as_str()),
                json_to_any(&Value::Object(m.attrs.clone())),
            )
        })
        .collect()
}

/// The text nodes of one `XmlText` (one per formatted run; embeds skipped).
pub fn read_text<T: ReadTxn>(txn: &T, text: &XmlTextRef) -> Vec<Node> {
    text.diff(txn, YChange::identity)
        .into_iter()
        .filter_map(|d| match d.insert {
            Out::Any(Any::String(s)) if !s.is_empty() => {
                Some(Node::text(s.to_string(), marks_of(d.attributes.as_deref())))
            }
            _ => None,
        })
        .collect()
}

/// One element and everything inside it. Attributes stored as null stay
/// in `attrs` as null, as y-prosemirror reads them (a null attr means
/// something, e.g. a `codeBlock` whose `language` is null).
pub fn read_element<T: ReadTxn>(txn: &T, element: &XmlElementRef) -> Node {
    Node {
        kind: element.tag().to_string(),
        attrs: element
            .attributes(txn)
            .map(|(k, v)| (k.to_owned(), out_to_json(txn, &v)))
            .collect(),
        content: read_children(txn, element),
        text: None,
        marks: Vec::new(),
    }
}

/// The children of an element or fragment, text runs flattened.
pub fn read_children<T: ReadTxn, F: XmlFragment>(txn: &T, parent: &F) -> Vec<Node> {
    let mut out = Vec::new();
    for child in parent.children(txn) {
        match child {
            XmlOut::Element(e) => out.push(read_element(txn, &e)),
            XmlOut::Text(t) => out.extend(read_text(txn, &t)),
            XmlOut::Fragment(f) => out.extend(read_children(txn, &f)),
        }
    }
    out
}

/// A whole fragment as a `doc` node.
pub fn read_fragment<T: ReadTxn, F: XmlFragment>(txn: &T, fragment: &F) -> Node {
    Node {
        kind: NodeType::Doc.name().to_owned(),
        attrs: Map::new(),
        content: read_children(txn, fragment),
        text: None,
        marks: Vec::new(),
    }
}

/// Inserts `nodes` into `parent` at child `index`, encoded as
/// y-prosemirror encodes new content. Consecutive text nodes become one
/// `XmlText`. Returns how many children were inserted.
///
/// The children go in last first, each at `index`: yrs finds a child
/// index by walking the siblings from the start, so inserting in order at
/// growing indices would make writing `n` children O(n²); this way each
/// insert walks only to `index` (zero for a new element's content).
pub fn write<F: XmlFragment>(
    txn: &mut TransactionMut,
    parent: &F,
    index: u32,
    nodes: &[Node],
) -> u32 {
    let groups: Vec<&[Node]> = nodes.chunk_by(|a, b| a.is_text() && b.is_text()).collect();
    for group in groups.iter().rev() {
        if group[0].is_text() {
            let text = parent.insert(txn, index, XmlTextPrelim::new(""));
            write_runs(txn, &text, 0, group);
        } else {
            let element =
                parent.insert(txn, index, XmlElementPrelim::empty(group[0].kind.as_str()));
            fill_element(txn, &element, &group[0]);
        }
    }
    groups.len() as u32
}

/// Sets an element's attributes and content from `node`.
pub fn fill_element(txn: &mut TransactionMut, element: &XmlElementRef, node: &Node) {
    for (key, value) in &node.attrs {
        if !value.is_null() {
            element.insert_attribute(txn, key.as_str(), json_to_any(value));
        }
    }
    write(txn, element, 0, &node.content);
}

/// Inserts text nodes into an `XmlText` at `offset`, each with exactly its marks.
pub fn write_runs(txn: &mut TransactionMut, text: &XmlTextRef, offset: u32, runs: &[Node]) -> u32 {
    let mut at = offset;
    for run in runs {
        let Some(s) = run.text.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        text.insert_with_attributes(txn, at, s, attrs_of(&run.marks));
        at += s.encode_utf16().count() as u32;
    }
    at - offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, Transact};

    fn marked(text: &str, marks: &[MarkType]) -> Node {
        Node::text(text, marks.iter().map(|&m| Mark::of(m)).collect())
    }

    fn sample() -> Node {
        Node::doc(vec![
            Node::heading(2, vec![Node::text("Title", vec![])]),
            Node::paragraph(vec![
                Node::text("plain ", vec![]),
                marked("bold", &[MarkType::Bold]),
                Node::new(NodeType::HardBreak, vec![]),
                Node::text("link", vec![Mark::link("https://example.com")]),
            ]),
            Node::new(
                NodeType::BulletList,
                vec![Node::new(
                    NodeType::ListItem,
                    vec![Node::paragraph(vec![marked(
                        "one",
                        &[MarkType::Bold, MarkType::Italic],
                    )])],
                )],
            ),
            Node::new(
                NodeType::OrderedList,
                vec![Node::new(NodeType::ListItem, vec![Node::paragraph(vec![])])],
            )
            .with_attr("start", Value::from(3)),
            Node::new(
                NodeType::CodeBlock,
                vec![Node::text("fn main() {}\n", vec![])],
            )
            .with_attr("language", Value::from("rust")),
            Node::new(NodeType::HorizontalRule, vec![]),
            Node::new(
                NodeType::Blockquote,
                vec![Node::paragraph(vec![marked("q", &[MarkType::Code])])],
            ),
        ])
    }

    /// Drops null attrs, as reading the document back does (y-prosemirror never writes them).
    fn without_nulls(mut node: Node) -> Node {
        node.attrs.retain(|_, v| !v.is_null());
        node.content = node.content.into_iter().map(without_nulls).collect();
        node
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment("default");
        let json = sample();
        json.check().unwrap();
        {
            let mut txn = doc.transact_mut();
            write(&mut txn, &fragment, 0, &json.content);
        }
        let txn = doc.transact();
        let back = read_fragment(&txn, &fragment);
        assert_eq!(back, without_nulls(json));
        back.check().unwrap();
        // The paragraph is text, a hardBreak element, text: three children.
        let p = fragment.get(&txn, 1).unwrap().into_xml_element().unwrap();
        assert_eq!(p.len(&txn), 3);
        // Attributes keep their JSON types: the level is a number.
        let h = fragment.get(&txn, 0).unwrap().into_xml_element().unwrap();
        assert_eq!(h.get_attribute(&txn, "level"), Some(Out::Any(Any::from(2))));
        // The link's attrs object is the formatting attribute.
        let text = p.get(&txn, 2).unwrap().into_xml_text().unwrap();
        let diff = text.diff(&txn, YChange::identity);
        let attrs = diff[0].attributes.as_ref().unwrap();
        let Any::Map(link) = &attrs[&Arc::from("link")] else {
            panic!("link attrs are a map");
        };
        assert_eq!(link["href"], Any::from("https://example.com"));
        assert_eq!(link["target"], Any::from("_blank"));
    }

    #[test]
    fn writing_between_children_keeps_the_order() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment("default");
        let para = |s: &str| Node::paragraph(vec![Node::text(s, vec![])]);
        {
            let mut txn = doc.transact_mut();
            assert_eq!(write(&mut txn, &fragment, 0, &[para("a"), para("d")]), 2);
            let middle = [
                para("b"),
                Node::new(NodeType::HorizontalRule, vec![]),
                para("c"),
            ];
            assert_eq!(write(&mut txn, &fragment, 1, &middle), 3);
        }
        let back = read_fragment(&doc.transact(), &fragment);
        let kinds: Vec<String> = back
            .content
            .iter()
            .map(|n| format!("{}:{}", n.kind, n.text_content()))
            .collect();
        assert_eq!(
            kinds,
            [
                "paragraph:a",
                "paragraph:b",
                "horizontalRule:",
                "paragraph:c",
                "paragraph:d"
            ]
        );
    }

    #[test]
    fn null_attributes_written_by_other_apps_are_read_as_null() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment("default");
        {
            let mut txn = doc.transact_mut();
            let code = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("codeBlock"));
            code.insert_attribute(&mut txn, "language", Any::Null);
        }
        let json = read_fragment(&doc.transact(), &fragment);
        assert_eq!(json.content[0].attrs.get("language"), Some(&Value::Null));
        json.content[0].check().unwrap();
    }

    #[test]
    fn the_schema_check_catches_what_prosemirror_refuses() {
        assert!(sample().check().is_ok());
        let bad = |n: Node| n.check().unwrap_err();
        assert!(matches!(
            bad(Node::doc(vec![])),
            SchemaError::InvalidContent(_)
        ));
        assert!(matches!(
            bad(Node::doc(vec![Node::new(
                NodeType::ListItem,
                vec![Node::paragraph(vec![])]
            )])),
            SchemaError::InvalidContent(_)
        ));
        assert!(matches!(
            bad(Node::doc(vec![Node::paragraph(vec![marked(
                "x",
                &[MarkType::Code, MarkType::Bold]
            )])])),
            SchemaError::ExcludedMarks(_)
        ));
        assert!(matches!(
            bad(Node::doc(vec![Node::new(
                NodeType::CodeBlock,
                vec![marked("x", &[MarkType::Bold])]
            )])),
            SchemaError::MarksNotAllowed(_)
        ));
        assert!(matches!(
            bad(Node::doc(vec![
                Node::paragraph(vec![]).with_attr("align", Value::from("left"))
            ])),
            SchemaError::UnknownAttr { .. }
        ));
        assert!(matches!(
            bad(Node::doc(vec![Node::heading(7, vec![])])),
            SchemaError::BadAttr { .. }
        ));
        assert!(matches!(
            bad(Node::doc(vec![Node {
                kind: "table".into(),
                ..Node::paragraph(vec![])
            }])),
            SchemaError::UnknownNode(_)
        ));
    }

    #[test]
    fn unknown_nodes_and_marks_are_kept() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment("default");
        let json = Node::doc(vec![Node {
            kind: "callout".into(),
            attrs: Map::from_iter([("tone".to_owned(), Value::from("warm"))]),
            content: vec![Node::paragraph(vec![Node::text(
                "hi",
                vec![Mark {
                    kind: "comment".into(),
                    attrs: Map::from_iter([("id".to_owned(), Value::from(7))]),
                }],
            )])],
            text: None,
            marks: vec![],
        }]);
        {
            let mut txn = doc.transact_mut();
            write(&mut txn, &fragment, 0, &json.content);
        }
        assert_eq!(read_fragment(&doc.transact(), &fragment), json);
    }

    #[test]
    fn hashed_overlapping_mark_names_read_as_their_type() {
        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment("default");
        {
            let mut txn = doc.transact_mut();
            let p = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
            let t = p.insert(&mut txn, 0, XmlTextPrelim::new(""));
            let mut attrs = Attrs::new();
            attrs.insert(
                Arc::from("bold--abcdEF12"),
                Any::Map(Arc::new(HashMap::new())),
            );
            t.insert_with_attributes(&mut txn, 0, "x", attrs);
        }
        let json = read_fragment(&doc.transact(), &fragment);
        assert_eq!(
            json.content[0].content[0].marks,
            vec![Mark::of(MarkType::Bold)]
        );
    }

    #[test]
    fn json_form_matches_prosemirror() {
        let json = serde_json::to_value(Node::doc(vec![Node::paragraph(vec![marked(
            "b",
            &[MarkType::Bold],
        )])]))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"doc","content":[{"type":"paragraph","content":[{"type":"text","text":"b","marks":[{"type":"bold","attrs":{}}]}]}]})
        );
        let back: Node = serde_json::from_value(serde_json::json!({"type":"paragraph","content":[{"type":"text","text":"x","marks":[{"type":"italic"}]}]})).unwrap();
        assert_eq!(back.content[0].marks[0].mark_type(), Some(MarkType::Italic));
    }
}
