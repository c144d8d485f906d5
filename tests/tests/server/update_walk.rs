//! The server-document halves of the update walk's regression tests
//! (`quire_protocol::update`), which need `Document`: the walk's own halves
//! live beside it.

use quire_server::document::{Document, DocumentError};
use yrs::{Array, ArrayPrelim, Doc, GetString, ReadTxn, Text, Transact};

/// Values nested past the limit never reach yrs' recursive decoder, in
/// `apply` or `is_known`.
#[test]
fn values_nested_deeper_than_the_limit_are_refused_before_yrs() {
    let mut update = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
    update.extend(std::iter::repeat_n([117, 1], 200_000).flatten());
    update.extend_from_slice(&[126, 0]);
    let mut document = Document::new();
    assert!(matches!(
        document.apply(&update),
        Err(DocumentError::InvalidUpdate(why)) if why.contains("nested too deeply")
    ));
    assert!(!document.is_known(&update));
}

/// `depth` arrays nested in `from` (or in root "a"), in one transaction.
fn nest(doc: &Doc, from: Option<yrs::ArrayRef>, depth: usize) -> (Vec<u8>, yrs::ArrayRef) {
    let root = doc.get_or_insert_array("a");
    let mut txn = doc.transact_mut();
    let mut inner = from;
    for _ in 0..depth {
        inner = Some(match inner {
            Some(array) => array.insert(&mut txn, 0, ArrayPrelim::default()),
            None => root.insert(&mut txn, 0, ArrayPrelim::default()),
        });
    }
    (txn.encode_update_v1(), inner.expect("depth > 0"))
}

/// The document keeps the levels of what it applied, and rebuilds them
/// from its state when it is loaded from storage.
#[test]
fn nesting_is_counted_across_updates_and_reloads() {
    let writer = Doc::with_client_id(1);
    let (first, inner) = nest(&writer, None, 60);
    let mut document = Document::new();
    document.apply(&first).unwrap();
    let (sibling, _) = nest(&writer, Some(inner.clone()), 1);
    document.apply(&sibling).unwrap();
    let second = {
        let mut txn = writer.transact_mut();
        let next = inner.insert(&mut txn, 1, ArrayPrelim::default());
        drop(txn);
        nest(&writer, Some(next), 50);
        writer
            .transact()
            .encode_diff_v1(&document.doc().transact().state_vector())
    };
    let err = document.apply(&second).unwrap_err();
    assert!(err.to_string().contains("nests shared types"), "{err}");
    let mut reloaded = Document::from_updates([first.as_slice(), sibling.as_slice()]).unwrap();
    let err = reloaded.apply(&second).unwrap_err();
    assert!(err.to_string().contains("nests shared types"), "{err}");
}

/// A forged copy of a block the document has changes nothing.
#[test]
fn blocks_the_document_has_are_not_checked_again() {
    let writer = Doc::with_client_id(100);
    let text = writer.get_or_insert_text("t");
    let typed = {
        let mut txn = writer.transact_mut();
        text.insert(&mut txn, 0, "abc");
        txn.encode_update_v1()
    };
    let mut document = Document::new();
    document.apply(&typed).unwrap();
    let forged: &[u8] = b"\x01\x01d\x02\xc4\x1f\x0bd\x01\x01x\0";
    assert_eq!(document.apply(forged).unwrap().delta, None);
    assert_eq!(
        text.get_string(&writer.transact()),
        document
            .doc()
            .get_or_insert_text("t")
            .get_string(&document.doc().transact())
    );
}

/// An empty item past a gap: `apply` and `is_known` agree it holds nothing.
#[test]
fn regression_an_empty_item_past_a_gap_holds_nothing() {
    let empty: &[u8] = b"\x01\x01e\x02Dte\0\x01a\0";
    let mut document = Document::new();
    assert!(document.is_known(empty));
    assert_eq!(document.apply(empty).unwrap().delta, None);
}
