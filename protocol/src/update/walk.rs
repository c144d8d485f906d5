//! The walk over an update's bytes, following Yjs' update format v1
//! (`readClientsStructRefs` and `readDeleteSet` in yjs/src/utils/): per
//! client a struct count, the client and its first clock; per struct an
//! info byte, then a GC or skip length, or an item's origins, parent and
//! content; then the delete set, and nothing after it. It refuses what no
//! honest client writes and what yrs would read differently from the walk
//! or from Yjs, and records what [`super::index`] needs.

use std::collections::HashSet;

use super::content::content_len;
use super::format::*;
use super::reader::{Id, MAX_CLOCK, Reader, Walked, refuse};

/// One struct of an update, as far as the checks need it.
pub(super) struct Block {
    pub(super) client: u64,
    pub(super) clock: u64,
    pub(super) len: u64,
    pub(super) kind: Kind,
}

pub(super) enum Kind {
    Gc,
    Skip,
    Item {
        origin: Option<Id>,
        right: Option<Id>,
        parent: Parent,
    },
}

pub(super) enum Parent {
    /// Given by the origins (the neighbours' container).
    Implied,
    Root,
    Nested(Id),
}

impl Parent {
    pub(super) fn id(&self) -> Option<Id> {
        match self {
            Parent::Nested(id) => Some(*id),
            _ => None,
        }
    }
}

/// An update as the walk read it.
pub(super) struct Parsed {
    pub(super) blocks: Vec<Block>,
    /// (client, clock, length)
    pub(super) deleted: Vec<(u64, u64, u64)>,
}

pub(super) fn parse(update: &[u8]) -> Walked<Parsed> {
    let mut reader = Reader::new(update);
    let mut blocks = Vec::new();
    let mut seen = HashSet::new();
    // Struct count, client and clock take a byte each at least.
    let clients = reader.count("client count", 3)?;
    for _ in 0..clients {
        // An info byte and a length or content byte at least.
        let structs = reader.count("struct count", 2)?;
        let client = reader.var_uint("client")?;
        // yrs appends a repeated section, Yjs keeps the last: refuse
        // rather than pick (encoders write each client once).
        if !seen.insert(client) {
            return refuse(format!("client {client} appears twice in the update"));
        }
        let mut clock = reader.clock("clock")?;
        for _ in 0..structs {
            let info = reader.u8("struct info")?;
            let (len, kind) = match info & STRUCT_KIND_BITS {
                GC => (reader.clock("length")?, Kind::Gc),
                SKIP => (reader.clock("length")?, Kind::Skip),
                content => {
                    let (origin, right, parent) = item_header(&mut reader, info)?;
                    check_origins((client, clock), origin, right, parent.id())?;
                    let len = content_len(&mut reader, content)?;
                    let kind = Kind::Item {
                        origin,
                        right,
                        parent,
                    };
                    (len, kind)
                }
            };
            blocks.push(Block {
                client,
                clock,
                len,
                kind,
            });
            clock += len;
            if clock > MAX_CLOCK {
                return refuse(format!(
                    "client {client}'s blocks reach past clock {MAX_CLOCK}"
                ));
            }
        }
    }
    // The delete set: per client, its ranges (clock and length).
    let mut deleted = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..reader.count("deleted client count", 2)? {
        let client = reader.var_uint("deleted client")?;
        // yrs keeps only the last entry of a repeated client.
        if !seen.insert(client) {
            return refuse(format!("client {client} appears twice in the delete set"));
        }
        for _ in 0..reader.count("deleted range count", 2)? {
            let clock = reader.clock("deleted clock")?;
            let len = reader.clock("deleted length")?;
            if clock + len > MAX_CLOCK {
                return refuse(format!(
                    "a deleted range of client {client} reaches past clock {MAX_CLOCK}"
                ));
            }
            deleted.push((client, clock, len));
        }
    }
    reader.finish()?;
    Ok(Parsed { blocks, deleted })
}

/// An item's origins and, when it has neither, its parent (and map key).
fn item_header(reader: &mut Reader, info: u8) -> Walked<(Option<Id>, Option<Id>, Parent)> {
    let origin = (info & HAS_ORIGIN != 0).then(|| reader.id()).transpose()?;
    let right = (info & HAS_RIGHT_ORIGIN != 0)
        .then(|| reader.id())
        .transpose()?;
    let mut parent = Parent::Implied;
    if origin.is_none() && right.is_none() {
        parent = match reader.var_uint("parent kind")? {
            PARENT_ROOT => {
                reader.var_string("parent name")?;
                Parent::Root
            }
            PARENT_ID => Parent::Nested(reader.id()?),
            other => return refuse(format!("the update does not decode: parent kind {other}")),
        };
        if info & HAS_PARENT_SUB != 0 {
            reader.var_string("map key")?;
        }
    }
    Ok((origin, right, parent))
}

/// Refuses origins no honest client could have written: the same item on
/// both sides, or an item of its own client that is not older. yrs places
/// such an item depending on how the blocks around it happen to be split,
/// so the live document and the same document reloaded would differ.
fn check_origins(id: Id, origin: Option<Id>, right: Option<Id>, parent: Option<Id>) -> Walked<()> {
    let (client, clock) = id;
    if let Some((c, k)) = origin
        && origin == right
    {
        return refuse(format!(
            "item {client}#{clock} names {c}#{k} as both its left and right neighbour"
        ));
    }
    // What an item names existed before it: of its own client, only
    // older blocks.
    for (c, k) in origin.into_iter().chain(right).chain(parent) {
        if c == client && k >= clock {
            return refuse(format!(
                "item {client}#{clock} names {c}#{k}, which is not older than it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::refused;
    use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};
    use yrs::{
        Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact,
        XmlFragment,
    };

    /// Every kind of content yrs writes walks cleanly.
    #[test]
    fn what_yrs_writes_passes() {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("content");
        let map = doc.get_or_insert_map("meta");
        let array = doc.get_or_insert_array("list");
        let xml = doc.get_or_insert_xml_fragment("xml");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "héllo 😀 world");
            text.insert(&mut txn, 3, "in the middle");
            text.remove_range(&mut txn, 1, 4);
            text.format(&mut txn, 0, 3, [("bold".into(), Any::Bool(true))].into());
            text.insert_embed(&mut txn, 2, Any::from("image"));
            map.insert(&mut txn, "n", 1.5);
            map.insert(&mut txn, "i", -42i64);
            map.insert(&mut txn, "big", i64::MAX);
            map.insert(&mut txn, "s", "string");
            map.insert(&mut txn, "b", Any::from(vec![1u8, 2, 3]));
            map.insert(&mut txn, "null", Any::Null);
            map.insert(
                &mut txn,
                "nested",
                MapPrelim::from([("k".to_owned(), Any::from(vec![Any::from(1), Any::Null]))]),
            );
            array.push_back(&mut txn, ArrayPrelim::from([1, 2, 3]));
            array.insert(&mut txn, 0, true);
            array.insert(&mut txn, 1, "x");
            array.remove_range(&mut txn, 0, 1);
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, XmlTextPrelim::new("para"));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        check(&update).unwrap();
    }

    /// An item naming the same neighbour on both sides (the fuzz input).
    #[test]
    fn same_item_on_both_sides_is_refused() {
        let forged: &[u8] = b"\x01\x01d\x06\xc4d\x05d\x05\t\xc3\xa9\xf0\x9f\x98\x80abc\0";
        let err = check(forged).unwrap_err();
        assert!(err.contains("both its left and right neighbour"), "{err}");
    }

    #[test]
    fn a_later_item_of_the_same_client_as_origin_is_refused() {
        // Client 100's item at clock 6 whose left origin is 100#9.
        let forged: &[u8] = b"\x01\x01d\x06\x84d\x09\x01x\0";
        let err = check(forged).unwrap_err();
        assert!(err.contains("not older than it"), "{err}");
        // The same item after 100#5 is fine.
        check(b"\x01\x01d\x06\x84d\x05\x01x\0").unwrap();
    }

    /// Found in review: yrs reads the parent kind as a wrapping u32, so
    /// 2^32 + 1 was a nested parent ID to the walk and a root name to yrs;
    /// from there the two read different bytes, and yrs met a value nested
    /// 200,000 deep the walk never saw (a stack overflow, aborting the
    /// server).
    #[test]
    fn regression_parent_kind_read_differently_from_yrs() {
        let mut update = vec![1, 1, 1, 0, 0x08];
        update.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x10]); // 2^32 + 1
        update.extend_from_slice(&[2, 0, 1, 116, 117, 1]);
        update.extend(std::iter::repeat_n([117, 1], 58).flatten());
        update.extend(std::iter::repeat_n([118, 1, 0], 1000).flatten());
        update.push(126);
        assert!(refused(&update).contains("parent kind"));
        // Bytes after the delete set are refused too.
        let mut trailing = vec![1, 1, 1, 0, 0x04, 1, 1, b't', 1, b'a', 0];
        check(&trailing).unwrap();
        trailing.push(0);
        assert!(check(&trailing).unwrap_err().contains("trailing"));
    }

    /// Found in review: yrs appends a repeated client section (Yjs keeps
    /// the last); two sections of client 5 at clock 0 made two blocks
    /// share one ID.
    #[test]
    fn regression_a_client_twice_in_one_update() {
        let mut update = vec![2];
        for text in [b"ab", b"xy"] {
            update.extend_from_slice(&[1, 5, 0, 0x04, 1, 1, b't', 2]);
            update.extend_from_slice(text);
        }
        update.push(0);
        assert!(refused(&update).contains("appears twice"));
        assert!(refused(&[0, 2, 5, 1, 0, 1, 5, 1, 2, 1]).contains("twice in the delete set"));
        // Empty sections count too: in Yjs the second would replace the first.
        assert!(refused(&[2, 1, 5, 0, 0, 1, 0, 5, 0, 0]).contains("appears twice"));
    }

    #[test]
    fn truncated_items_are_refused() {
        assert!(check(b"\x01\x01d\x06\x84d").is_err());
    }
}
