//! The walk and yrs agree on mutated real updates: whatever the walk calls
//! complete against an empty document, yrs decodes and integrates whole
//! (nothing pending, no panic), and whatever the walk accepts alone, yrs
//! decodes. (A seeded sample; the fuzz targets go further.)

use std::panic::{AssertUnwindSafe, catch_unwind};

use quire_protocol::update::{Levels, check, check_against};
use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update,
    XmlFragment,
};

/// Updates yrs writes: every content kind, several clients, deletions.
fn sources() -> Vec<Vec<u8>> {
    let mut updates = Vec::new();
    let a = Doc::with_client_id(1);
    let b = Doc::with_client_id(2);
    let text = a.get_or_insert_text("t");
    let map = a.get_or_insert_map("m");
    let array = a.get_or_insert_array("a");
    let xml = a.get_or_insert_xml_fragment("x");
    let mut edit = |doc: &Doc, f: &dyn Fn(&mut yrs::TransactionMut)| {
        let mut txn = doc.transact_mut();
        f(&mut txn);
        updates.push(txn.encode_update_v1());
    };
    edit(&a, &|txn| text.insert(txn, 0, "héllo 😀 world"));
    edit(&a, &|txn| {
        text.format(txn, 1, 4, [("bold".into(), Any::Bool(true))].into());
        text.insert_embed(txn, 3, Any::from("img"));
    });
    edit(&a, &|txn| {
        map.insert(txn, "n", 1.5);
        map.insert(txn, "b", Any::from(vec![1u8, 2]));
        map.insert(txn, "o", MapPrelim::from([("k".to_owned(), Any::Null)]));
    });
    edit(&a, &|txn| {
        let inner = array.push_back(txn, ArrayPrelim::from([1, 2]));
        inner.push_back(txn, ArrayPrelim::default());
        let p = xml.push_back(txn, XmlElementPrelim::empty("p"));
        p.push_back(txn, XmlTextPrelim::new("para"));
    });
    edit(&a, &|txn| {
        text.remove_range(txn, 3, 4);
        array.remove_range(txn, 0, 1);
    });
    let state = a
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    b.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let bt = b.get_or_insert_text("t");
    edit(&b, &|txn| bt.insert(txn, 1, "from b"));
    updates.push(state);
    updates.push(
        b.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    updates
}

#[test]
fn what_the_walk_calls_complete_yrs_integrates_whole() {
    let sources = sources();
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n.max(1)
    };
    let (mut accepted, mut complete) = (0, 0);
    for round in 0..60_000 {
        let mut bytes = sources[round % sources.len()].clone();
        for _ in 0..1 + next(3) {
            if bytes.is_empty() {
                break;
            }
            let i = next(bytes.len());
            match next(3) {
                0 => bytes[i] = next(256) as u8,
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, next(256) as u8),
            }
        }
        if check(&bytes).is_err() {
            continue;
        }
        accepted += 1;
        let decoded = catch_unwind(|| Update::decode_v1(&bytes).is_ok());
        assert!(
            decoded.is_ok(),
            "yrs panicked decoding what the walk accepted: {bytes:?}"
        );
        if check_against(&bytes, &StateVector::default(), &Levels::default()).is_err() {
            continue;
        }
        complete += 1;
        let doc = Doc::new();
        let whole = catch_unwind(AssertUnwindSafe(|| {
            let Ok(update) = Update::decode_v1(&bytes) else {
                return true;
            };
            let mut txn = doc.transact_mut();
            let _ = txn.apply_update(update);
            !txn.has_missing_updates()
        }));
        match whole {
            Ok(true) => {}
            Ok(false) => panic!("yrs kept part of a complete update pending: {bytes:?}"),
            Err(_) => panic!("yrs panicked on a complete update: {bytes:?}"),
        }
    }
    println!("{accepted} mutations walked, {complete} complete");
    assert!(
        complete > 500,
        "the sample exercises completeness ({complete})"
    );
}
