//! Yjs relative positions as JSON, the form the awareness field `cursor`
//! carries (`{anchor, head}`, each `{type, tname, item, assoc}` with IDs
//! as `{client, clock}`), exactly as y-prosemirror's cursor plugin and
//! y-codemirror write them. yrs calls a relative position a
//! `StickyIndex`.

use serde_json::{Value, json};
use yrs::{Assoc, BranchID, IndexScope, ReadTxn, StickyIndex};

fn id_json(id: &yrs::ID) -> Value {
    json!({ "client": id.client.get(), "clock": id.clock })
}

/// The JSON Yjs' `JSON.stringify(relativePosition)` gives: for a position
/// at an item, the item and the type holding it; for an empty or
/// end-of-type position, the type (or the root's name).
pub fn to_json<T: ReadTxn>(txn: &T, index: &StickyIndex) -> Value {
    let assoc = match index.assoc {
        Assoc::After => 0,
        Assoc::Before => -1,
    };
    let (mut ty, mut tname, mut item) = (Value::Null, Value::Null, Value::Null);
    match index.scope() {
        IndexScope::Relative(id) => {
            item = id_json(id);
            if let Some(offset) = index.get_offset(txn) {
                match offset.branch.id() {
                    BranchID::Nested(parent) => ty = id_json(&parent),
                    BranchID::Root(name) => tname = Value::from(name.to_string()),
                }
            }
        }
        IndexScope::Nested(id) => ty = id_json(id),
        IndexScope::Root(name) => tname = Value::from(name.to_string()),
    }
    json!({ "type": ty, "tname": tname, "item": item, "assoc": assoc })
}

/// Reads a relative position written by any Yjs client (null fields and
/// missing ones alike).
pub fn from_json(value: &Value) -> Option<StickyIndex> {
    let obj = value.as_object()?;
    let mut clean = serde_json::Map::new();
    for key in ["type", "tname", "item", "assoc"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            clean.insert(key.to_owned(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(clean)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, IndexedSequence, Text, Transact, XmlElementPrelim, XmlFragment, XmlTextPrelim};

    #[test]
    fn positions_round_trip_in_the_yjs_shape() {
        let doc = Doc::with_client_id(7);
        let fragment = doc.get_or_insert_xml_fragment("default");
        let mut txn = doc.transact_mut();
        let p = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
        let t = p.insert(&mut txn, 0, XmlTextPrelim::new("hello"));
        let at = t.sticky_index(&txn, 2, Assoc::After).unwrap();
        let json = to_json(&txn, &at);
        assert_eq!(json["item"], json!({"client": 7, "clock": 4}));
        assert_eq!(json["type"]["client"], 7);
        assert_eq!(json["tname"], Value::Null);
        assert_eq!(json["assoc"], 0);
        let back = from_json(&json).unwrap();
        assert_eq!(back.get_offset(&txn).unwrap().index, 2);
        // An empty paragraph: the type itself.
        let empty = fragment.insert(&mut txn, 1, XmlElementPrelim::empty("paragraph"));
        let at = StickyIndex::from_type(&txn, &empty, Assoc::After);
        let json = to_json(&txn, &at);
        assert_eq!(json["item"], Value::Null);
        assert!(json["type"].is_object());
        assert!(from_json(&json).is_some());
        // Written by Yjs with only some fields.
        let yjs = json!({"item": {"client": 7, "clock": 3}});
        assert_eq!(from_json(&yjs).unwrap().get_offset(&txn).unwrap().index, 1);
        let _ = t.len(&txn);
    }
}
