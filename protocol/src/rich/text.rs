//! Which model a document uses, its plain text, and the one-time
//! conversion of a plain-text document into a rich one.
//!
//! **The rule** (see ARCHITECTURE.md, "Rich documents"): a document whose
//! fragment `default` holds anything is rich; one whose fragment is empty
//! and whose `Y.Text` `content` is not is plain text; anything else is
//! empty (and becomes rich when someone writes). A plain-text document
//! opens in the plain-text editor until someone converts it
//! ([`convert`]); the conversion copies `content` into paragraphs and
//! leaves `content` itself alone for stock clients.
//!
//! Two converters at the same moment (two browsers, offline or not) would
//! each insert the paragraphs. Each conversion therefore records itself in
//! the root map [`META`]: under `converted` its client id (a map key keeps
//! one value, the same on every replica), and under `conversion:<client>`
//! the clock range of what it inserted. [`settle_conversions`], run by
//! every editor whenever the document changes, deletes the top-level
//! blocks of every conversion but the one `converted` names, so all
//! replicas end with the text once.

use yrs::types::ToJson;
use yrs::{
    Any, GetString, Map, Out, ReadTxn, Text, TransactionMut, WriteTxn, XmlFragment, XmlFragmentRef,
    XmlOut,
};

use super::json::{self, Node};
use super::schema::NodeType;
use super::{FRAGMENT, LEGACY_TEXT};

/// The root map where conversions record themselves.
pub const META: &str = "quire";
const CONVERTED: &str = "converted";
const CONVERSION_PREFIX: &str = "conversion:";

/// Which shared type holds a document's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Nothing yet; new content is written as a rich document.
    Empty,
    /// Only the `Y.Text` named `content`.
    Plain,
    /// The `Y.XmlFragment` named `default`.
    Rich,
}

/// The model `txn`'s document uses (see the module's rule).
pub fn model<T: ReadTxn>(txn: &T) -> Model {
    if txn
        .get_xml_fragment(FRAGMENT)
        .is_some_and(|f| f.len(txn) > 0)
    {
        return Model::Rich;
    }
    if txn.get_text(LEGACY_TEXT).is_some_and(|t| t.len(txn) > 0) {
        return Model::Plain;
    }
    Model::Empty
}

/// The document's text, whichever model it uses: for a rich document one
/// line per text block (paragraph, heading, code block line), hard breaks
/// as line breaks; for a plain one, `content` as it is.
pub fn plain_text<T: ReadTxn>(txn: &T) -> String {
    match model(txn) {
        Model::Rich => {
            let fragment = txn.get_xml_fragment(FRAGMENT).expect("model found it");
            fragment_text(txn, &fragment)
        }
        Model::Plain => txn
            .get_text(LEGACY_TEXT)
            .map(|t| t.get_string(txn))
            .unwrap_or_default(),
        Model::Empty => String::new(),
    }
}

/// The text of a rich fragment: text blocks one per line.
pub fn fragment_text<T: ReadTxn>(txn: &T, fragment: &XmlFragmentRef) -> String {
    node_text(&json::read_fragment(txn, fragment))
}

/// The text of a `doc` node: text blocks one per line, as [`plain_text`]
/// gives it for a rich document.
pub fn node_text(doc: &Node) -> String {
    let mut lines = Vec::new();
    collect_lines(doc, &mut lines);
    lines.join("\n")
}

fn collect_lines(node: &Node, lines: &mut Vec<String>) {
    let kind = node.node_type();
    let textblock = kind.is_some_and(NodeType::is_textblock)
        || (kind.is_none() && !node.content.is_empty() && node.content.iter().all(is_inline_like));
    if textblock {
        let mut line = String::new();
        for child in &node.content {
            inline_text(child, &mut line);
        }
        lines.push(line);
        return;
    }
    for child in &node.content {
        if is_inline_like(child) {
            let mut line = String::new();
            inline_text(child, &mut line);
            lines.push(line);
        } else {
            collect_lines(child, lines);
        }
    }
}

fn is_inline_like(node: &Node) -> bool {
    node.is_text() || node.node_type() == Some(NodeType::HardBreak)
}

fn inline_text(node: &Node, out: &mut String) {
    if node.node_type() == Some(NodeType::HardBreak) {
        out.push('\n');
    } else if let Some(text) = &node.text {
        out.push_str(text);
    } else {
        for child in &node.content {
            inline_text(child, out);
        }
    }
}

/// Paragraphs holding `text`, one per line.
pub fn paragraphs(text: &str) -> Vec<Node> {
    text.split('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let content = if line.is_empty() {
                Vec::new()
            } else {
                vec![Node::text(line, Vec::new())]
            };
            Node::paragraph(content)
        })
        .collect()
}

/// Converts a plain-text document into a rich one: `content`'s lines become
/// paragraphs of `default` (appended after anything the fragment already
/// holds), and the conversion records itself in [`META`]. Returns false
/// (and changes nothing) unless the document is [`Model::Plain`].
pub fn convert(txn: &mut TransactionMut) -> bool {
    if model(txn) != Model::Plain {
        return false;
    }
    let text = txn
        .get_text(LEGACY_TEXT)
        .map(|t| t.get_string(txn))
        .unwrap_or_default();
    let client = txn.doc().client_id();
    let start = txn.state_vector().get(&client);
    let fragment = txn.get_or_insert_xml_fragment(FRAGMENT);
    let at = fragment.len(txn);
    json::write(txn, &fragment, at, &paragraphs(&text));
    let end = txn.state_vector().get(&client);
    let meta = txn.get_or_insert_map(META);
    meta.insert(txn, CONVERTED, Any::from(client.get() as i64));
    meta.insert(
        txn,
        format!("{CONVERSION_PREFIX}{}", client.get()),
        Any::Array(vec![Any::from(start as i64), Any::from(end as i64)].into()),
    );
    true
}

/// Deletes the blocks of every conversion but the one the document keeps
/// (see the module). Returns how many top-level blocks it deleted.
pub fn settle_conversions(txn: &mut TransactionMut) -> u32 {
    let Some(meta) = txn.get_map(META) else {
        return 0;
    };
    let Some(winner) = meta.get(txn, CONVERTED).and_then(|v| out_i64(&v)) else {
        return 0;
    };
    let losers: Vec<(u64, u32, u32)> = meta
        .iter(txn)
        .filter_map(|(key, value)| {
            let client: u64 = key.strip_prefix(CONVERSION_PREFIX)?.parse().ok()?;
            if client as i64 == winner {
                return None;
            }
            let range = match value.to_json(txn) {
                Any::Array(items) => items,
                _ => return None,
            };
            let bound = |i: usize| match range.get(i) {
                Some(Any::Number(n)) => n.as_i64().map(|v| v as u32),
                _ => None,
            };
            Some((client, bound(0)?, bound(1)?))
        })
        .collect();
    if losers.is_empty() {
        return 0;
    }
    let Some(fragment) = txn.get_xml_fragment(FRAGMENT) else {
        return 0;
    };
    let mut doomed = Vec::new();
    for (index, child) in fragment.children(txn).enumerate() {
        let branch: &yrs::branch::Branch = match &child {
            XmlOut::Element(e) => e.as_ref(),
            XmlOut::Text(t) => t.as_ref(),
            XmlOut::Fragment(f) => f.as_ref(),
        };
        if let yrs::BranchID::Nested(id) = branch.id()
            && losers
                .iter()
                .any(|&(c, s, e)| id.client.get() == c && (s..e).contains(&id.clock))
        {
            doomed.push(index as u32);
        }
    }
    for &index in doomed.iter().rev() {
        fragment.remove_range(txn, index, 1);
    }
    doomed.len() as u32
}

fn out_i64(out: &Out) -> Option<i64> {
    match out {
        Out::Any(Any::Number(n)) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, Transact, Update, XmlElementPrelim, XmlTextPrelim};

    fn plain_doc(client: u64, text: &str) -> Doc {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text(LEGACY_TEXT);
        t.insert(&mut doc.transact_mut(), 0, text);
        doc
    }

    fn sync(a: &Doc, b: &Doc) {
        let ua = a.transact().encode_state_as_update_v1(&Default::default());
        let ub = b.transact().encode_state_as_update_v1(&Default::default());
        b.transact_mut()
            .apply_update(Update::decode_v1(&ua).unwrap())
            .unwrap();
        a.transact_mut()
            .apply_update(Update::decode_v1(&ub).unwrap())
            .unwrap();
    }

    #[test]
    fn models_and_text() {
        let doc = Doc::new();
        assert_eq!(model(&doc.transact()), Model::Empty);
        assert_eq!(plain_text(&doc.transact()), "");
        let doc = plain_doc(1, "one\ntwo");
        assert_eq!(model(&doc.transact()), Model::Plain);
        assert_eq!(plain_text(&doc.transact()), "one\ntwo");

        let doc = Doc::new();
        let fragment = doc.get_or_insert_xml_fragment(FRAGMENT);
        {
            let mut txn = doc.transact_mut();
            let h = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("heading"));
            h.insert(&mut txn, 0, XmlTextPrelim::new("Title"));
            let list = fragment.insert(&mut txn, 1, XmlElementPrelim::empty("bulletList"));
            let item = list.insert(&mut txn, 0, XmlElementPrelim::empty("listItem"));
            let p = item.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("a"));
            p.insert(&mut txn, 1, XmlElementPrelim::empty("hardBreak"));
            p.insert(&mut txn, 2, XmlTextPrelim::new("b"));
            fragment.insert(&mut txn, 2, XmlElementPrelim::empty("horizontalRule"));
            fragment.insert(&mut txn, 3, XmlElementPrelim::empty("paragraph"));
            let c = fragment.insert(&mut txn, 4, XmlElementPrelim::empty("codeBlock"));
            c.insert(&mut txn, 0, XmlTextPrelim::new("x = 1\ny = 2"));
        }
        assert_eq!(model(&doc.transact()), Model::Rich);
        assert_eq!(plain_text(&doc.transact()), "Title\na\nb\n\nx = 1\ny = 2");
    }

    #[test]
    fn converting_makes_paragraphs_and_keeps_content() {
        let doc = plain_doc(1, "first\n\nthird");
        assert!(convert(&mut doc.transact_mut()));
        let txn = doc.transact();
        assert_eq!(model(&txn), Model::Rich);
        assert_eq!(plain_text(&txn), "first\n\nthird");
        let json = json::read_fragment(&txn, &txn.get_xml_fragment(FRAGMENT).unwrap());
        json.check().unwrap();
        assert_eq!(json.content.len(), 3);
        assert_eq!(
            txn.get_text(LEGACY_TEXT).unwrap().get_string(&txn),
            "first\n\nthird"
        );
        drop(txn);
        assert!(!convert(&mut doc.transact_mut()), "converts once");
    }

    #[test]
    fn two_concurrent_conversions_leave_the_text_once() {
        let a = plain_doc(11, "alpha\nbeta");
        let b = Doc::with_client_id(22);
        sync(&a, &b);
        // Both convert before hearing of each other.
        assert!(convert(&mut a.transact_mut()));
        assert!(convert(&mut b.transact_mut()));
        sync(&a, &b);
        for doc in [&a, &b] {
            assert_eq!(plain_text(&doc.transact()), "alpha\nbeta\nalpha\nbeta");
        }
        // Each settles on its own; the results agree and nothing is doubled.
        let deleted_a = settle_conversions(&mut a.transact_mut());
        let deleted_b = settle_conversions(&mut b.transact_mut());
        assert_eq!((deleted_a, deleted_b), (2, 2));
        sync(&a, &b);
        for doc in [&a, &b] {
            assert_eq!(plain_text(&doc.transact()), "alpha\nbeta");
            assert_eq!(settle_conversions(&mut doc.transact_mut()), 0);
        }
        let (fa, fb) = (
            a.get_or_insert_xml_fragment(FRAGMENT),
            b.get_or_insert_xml_fragment(FRAGMENT),
        );
        let ta = json::read_fragment(&a.transact(), &fa);
        let tb = json::read_fragment(&b.transact(), &fb);
        assert_eq!(ta, tb);
    }

    #[test]
    fn settling_after_one_side_already_settled_is_harmless() {
        let a = plain_doc(5, "x");
        let b = Doc::with_client_id(9);
        sync(&a, &b);
        convert(&mut a.transact_mut());
        convert(&mut b.transact_mut());
        sync(&a, &b);
        settle_conversions(&mut a.transact_mut());
        sync(&a, &b);
        settle_conversions(&mut b.transact_mut());
        sync(&a, &b);
        assert_eq!(plain_text(&a.transact()), "x");
        assert_eq!(plain_text(&b.transact()), "x");
    }
}
