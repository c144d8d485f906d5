//! A walk over an update's structs before yrs sees it.
//!
//! yrs trusts an update more than a server can afford to:
//!
//! - it reserves memory for whatever count a few bytes declare (clients,
//!   structs, values), so a 40-byte update can ask for gigabytes;
//! - it decodes nested values recursively without a depth limit, so deep
//!   enough nesting overflows the stack and aborts the process (no panic to
//!   catch);
//! - it integrates items whose *origins* (the left and right neighbours
//!   recorded when an item was inserted) no honest client could have
//!   written: the same item on both sides, or an item of its own client
//!   that is not older. Where it puts such an item depends on how the
//!   blocks around it happen to be split, so the live document, its
//!   snapshot and the same document reloaded from storage can order their
//!   text differently (found by the `room_sequence` fuzz target).
//!
//! So every update is walked first, following Yjs' update format v1
//! (`readClientsStructRefs` and `readDeleteSet` in yjs/src/utils/): per
//! client a struct count, the client and its first clock; per struct an
//! info byte, then a GC/skip length or an item's origins, parent and
//! content; then the delete set. Every count must fit in the bytes that
//! follow, values nest at most [`MAX_ANY_DEPTH`] deep, and origins must be
//! possible. Two content kinds where yrs and Yjs disagree on the encoding
//! (legacy JSON content, XML hooks) are refused rather than guessed.

use quire_protocol::lib0::{Cursor, DecodeError};

/// One block ID: (client, clock).
type Id = (u64, u64);

/// Refuses an update that declares more than its bytes hold, nests values
/// too deeply, uses a content kind yrs misreads, or holds an item whose
/// origins no honest client could have written.
pub fn check(update: &[u8]) -> Result<(), String> {
    walk(update).map_err(|err| match err {
        Walk::Refused(why) => why,
        Walk::Malformed(err) => format!("the update does not decode: {err}"),
    })
}

enum Walk {
    Refused(String),
    Malformed(DecodeError),
}

impl From<DecodeError> for Walk {
    fn from(err: DecodeError) -> Self {
        Walk::Malformed(err)
    }
}

/// The info byte's low five bits name the struct kind or item content.
const GC: u8 = 0;
const SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;

fn walk(update: &[u8]) -> Result<(), Walk> {
    let mut cursor = Cursor::new(update);
    // Struct count, client and clock take a byte each at least.
    let clients = read_count(&mut cursor, "client count", 3)?;
    for _ in 0..clients {
        // An info byte and a length or content byte at least.
        let structs = read_count(&mut cursor, "struct count", 2)?;
        let client = cursor.read_var_uint("client")?;
        let mut clock = cursor.read_var_uint("clock")?;
        for _ in 0..structs {
            let info = cursor.read_u8("struct info")?;
            let len = match info & 0x1f {
                GC | SKIP => cursor.read_var_uint("length")?,
                content => {
                    let origin = (info & HAS_ORIGIN != 0)
                        .then(|| read_id(&mut cursor))
                        .transpose()?;
                    let right = (info & HAS_RIGHT_ORIGIN != 0)
                        .then(|| read_id(&mut cursor))
                        .transpose()?;
                    check_item((client, clock), origin, right)?;
                    if origin.is_none() && right.is_none() {
                        // The parent: a root's name or a nested type's ID.
                        if cursor.read_var_uint("parent kind")? == 1 {
                            cursor.read_var_string("parent name")?;
                        } else {
                            read_id(&mut cursor)?;
                        }
                        if info & HAS_PARENT_SUB != 0 {
                            cursor.read_var_string("map key")?;
                        }
                    }
                    content_len(&mut cursor, content)?
                }
            };
            clock = clock.saturating_add(len);
        }
    }
    // The delete set: per client, its ranges (clock and length).
    for _ in 0..read_count(&mut cursor, "deleted client count", 2)? {
        cursor.read_var_uint("deleted client")?;
        for _ in 0..read_count(&mut cursor, "deleted range count", 2)? {
            cursor.read_var_uint("deleted clock")?;
            cursor.read_var_uint("deleted length")?;
        }
    }
    Ok(())
}

/// A count of entries that take at least `min_bytes` each: refused if the
/// bytes left cannot hold that many.
fn read_count(cursor: &mut Cursor, what: &'static str, min_bytes: u64) -> Result<u64, Walk> {
    let count = cursor.read_var_uint(what)?;
    if count > cursor.remaining() as u64 / min_bytes {
        return Err(Walk::Refused(format!(
            "the update declares {count} entries ({what}) in {} bytes",
            cursor.remaining()
        )));
    }
    Ok(count)
}

fn read_id(cursor: &mut Cursor) -> Result<Id, DecodeError> {
    Ok((
        cursor.read_var_uint("origin client")?,
        cursor.read_var_uint("origin clock")?,
    ))
}

fn check_item(id: Id, origin: Option<Id>, right: Option<Id>) -> Result<(), Walk> {
    let (client, clock) = id;
    if let Some((c, k)) = origin
        && origin == right
    {
        return Err(Walk::Refused(format!(
            "item {client}#{clock} names {c}#{k} as both its left and right neighbour"
        )));
    }
    for (c, k) in origin.into_iter().chain(right) {
        if c == client && k >= clock {
            return Err(Walk::Refused(format!(
                "item {client}#{clock} names {c}#{k}, which its client wrote later, as a neighbour"
            )));
        }
    }
    Ok(())
}

/// Skips an item's content; returns how many clock ticks it spans.
fn content_len(cursor: &mut Cursor, content: u8) -> Result<u64, Walk> {
    Ok(match content {
        // Deleted: only a length.
        1 => cursor.read_var_uint("deleted length")?,
        // Legacy JSON content: yrs 0.28 reads one string more than the
        // count says (Yjs has written `Any` content instead since v13).
        2 => {
            return Err(Walk::Refused(
                "legacy JSON item content is not accepted".into(),
            ));
        }
        // Binary, embed: one value.
        3 | 5 => {
            cursor.read_var_bytes("value")?;
            1
        }
        // String: as many ticks as UTF-16 code units.
        4 => cursor.read_var_string("string")?.encode_utf16().count() as u64,
        // Format: key and JSON value.
        6 => {
            cursor.read_var_string("format key")?;
            cursor.read_var_string("format value")?;
            1
        }
        // Type: its kind (one byte in yrs), and a tag name for XML
        // elements. XML hooks carry a name in Yjs but not in yrs.
        7 => {
            match cursor.read_u8("type kind")? {
                0..=2 | 4 | 6 | 9 | 15 => {}
                3 => {
                    cursor.read_var_string("tag name")?;
                }
                5 => return Err(Walk::Refused("XML hooks are not accepted".into())),
                other => {
                    return Err(Walk::Refused(format!(
                        "the update does not decode: unknown type kind {other}"
                    )));
                }
            }
            1
        }
        // Any: values in lib0's self-describing encoding.
        8 => {
            let n = read_count(cursor, "value count", 1)?;
            for _ in 0..n {
                skip_any(cursor, 0)?;
            }
            n
        }
        // Subdocument: GUID and options.
        9 => {
            cursor.read_var_string("subdocument guid")?;
            skip_any(cursor, 0)?;
            1
        }
        other => {
            return Err(Walk::Refused(format!(
                "the update does not decode: unknown item content kind {other}"
            )));
        }
    })
}

/// Deeper nesting than any document needs; bounds the recursion here and
/// keeps yrs' unbounded recursion from overflowing the stack.
const MAX_ANY_DEPTH: u32 = 64;

/// Skips one lib0 `Any` value (`readAny` in lib0/decoding.js).
fn skip_any(cursor: &mut Cursor, depth: u32) -> Result<(), Walk> {
    if depth > MAX_ANY_DEPTH {
        return Err(Walk::Refused("values nested too deeply".into()));
    }
    match cursor.read_u8("value tag")? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => {}
        // Signed varint: a continuation bit in every byte but the last.
        125 => while cursor.read_u8("integer")? & 0x80 != 0 {},
        124 => {
            cursor.read_bytes(4, "float32")?;
        }
        123 | 122 => {
            cursor.read_bytes(8, "float64")?;
        }
        119 | 116 => {
            cursor.read_var_bytes("string")?;
        }
        118 => {
            for _ in 0..read_count(cursor, "object size", 2)? {
                cursor.read_var_string("object key")?;
                skip_any(cursor, depth + 1)?;
            }
        }
        117 => {
            for _ in 0..read_count(cursor, "array size", 1)? {
                skip_any(cursor, depth + 1)?;
            }
        }
        other => {
            return Err(Walk::Refused(format!(
                "the update does not decode: unknown value tag {other}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(err.contains("wrote later"), "{err}");
        // The same item after 100#5 is fine.
        check(b"\x01\x01d\x06\x84d\x05\x01x\0").unwrap();
    }

    /// An array item in root "a" holding one `Any` value: `value` bytes.
    fn any_item(value: &[u8]) -> Vec<u8> {
        let mut update = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
        update.extend_from_slice(value);
        update.push(0); // empty delete set
        update
    }

    /// yrs decodes nested values recursively; deep enough nesting
    /// overflowed the stack and aborted the whole server.
    #[test]
    fn values_nested_deeper_than_the_limit_are_refused_before_yrs() {
        let mut nested = Vec::new();
        for _ in 0..200_000 {
            nested.extend_from_slice(&[117, 1]); // an array of one element
        }
        nested.push(126); // null
        let update = any_item(&nested);
        let err = check(&update).unwrap_err();
        assert!(err.contains("nested too deeply"), "{err}");
        let mut document = crate::document::Document::new();
        assert!(document.apply(&update).is_err());
        // Shallow nesting is fine.
        check(&any_item(&[117, 1, 117, 1, 126])).unwrap();
    }

    /// yrs reserves memory for declared counts before reading them.
    #[test]
    fn counts_larger_than_the_bytes_are_refused() {
        // 2^30 values declared in a handful of bytes.
        let bomb = [
            1, 1, 1, 0, 0x08, 1, 1, b'a', 0x80, 0x80, 0x80, 0x80, 0x04, 126, 0,
        ];
        let err = check(&bomb).unwrap_err();
        assert!(err.contains("declares 1073741824 entries"), "{err}");
        // The same in the delete set.
        let bomb = [0, 0x80, 0x80, 0x80, 0x80, 0x04, 1, 1];
        assert!(check(&bomb).unwrap_err().contains("declares"));
    }

    #[test]
    fn truncated_items_are_refused() {
        assert!(check(b"\x01\x01d\x06\x84d").is_err());
    }
}
