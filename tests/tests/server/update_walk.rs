//! The update walk (`quire_protocol::update`) against updates the stock npm
//! Yjs client writes, not only ones yrs wrote: `tests/compat/updates.mjs`
//! writes them as fixtures (every content kind, every value type, XML
//! attributes and formatting, subdocuments, deletes of all of them, merged
//! and diffed updates, whole-document states), and each goes through the
//! server's `Document::apply` as a room would apply it, then the document
//! is reloaded from its state as from storage. `cargo xtask test` installs
//! the npm packages. Two things yrs does not keep as Yjs wrote them are
//! pinned here rather than hidden: an insert inside a surrogate pair
//! ([`NEEDS_UTF16_OFFSETS`]) and the largest bigint ([`reencoded`]).
//!
//! Also here: the server-document half of the walk's regression tests,
//! which need `Document` (the walk's own halves live beside it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use quire_protocol::update::{Levels, Refusal, check_against};
use quire_server::document::{Document, DocumentError};
use serde_json::{Map, Value, json};
use yrs::types::text::{Diff, YChange};
use yrs::types::xml::XmlOut;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map as _, OffsetKind, Options, Out, ReadTxn, Text,
    Transact, Xml, XmlFragment,
};

/// Runs `updates.mjs` into a fresh folder; the folder and its manifest.
async fn write_fixtures() -> (tempfile::TempDir, Vec<Value>) {
    let compat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat");
    assert!(
        compat.join("node_modules/yjs").exists(),
        "npm packages missing: run `npm ci` in {} (`cargo xtask test` does it)",
        compat.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg("updates.mjs")
            .arg(dir.path())
            .current_dir(&compat)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("updates.mjs finishes")
    .expect("node runs (install Node.js 20+)");
    assert!(
        output.status.success(),
        "updates.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = std::fs::read(dir.path().join("manifest.json")).unwrap();
    let Value::Array(scenarios) = serde_json::from_slice(&manifest).unwrap() else {
        panic!("the manifest is a list of scenarios");
    };
    (dir, scenarios)
}

/// Scenarios the server's document cannot apply yet, because it counts
/// text in UTF-8 bytes (yrs' default): after Yjs splits a surrogate pair,
/// yrs miscounts the text's length and deleting it overflows (a panic in
/// debug builds, a wrapped count in release ones). They are applied to a
/// yrs document counting in UTF-16, as Yjs does, through the same checks.
const NEEDS_UTF16_OFFSETS: &[&str] = &["text: an insert inside a surrogate pair"];

/// Where a scenario's updates are applied: the server's document, or (see
/// [`NEEDS_UTF16_OFFSETS`]) a yrs document counting in UTF-16.
enum Target {
    Server(Document),
    Utf16 { doc: Doc, levels: Levels },
}

impl Target {
    fn for_scenario(name: &str) -> Self {
        if !NEEDS_UTF16_OFFSETS.contains(&name) {
            return Target::Server(Document::new());
        }
        let options = Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        };
        Target::Utf16 {
            doc: Doc::with_options(options),
            levels: Levels::default(),
        }
    }

    fn doc(&self) -> &Doc {
        match self {
            Target::Server(document) => document.doc(),
            Target::Utf16 { doc, .. } => doc,
        }
    }

    /// Applies `update` as the room would; an error says what refused it.
    fn apply(&mut self, update: &[u8]) -> Result<(), DocumentError> {
        match self {
            Target::Server(document) => {
                let applied = document.apply(update)?;
                assert!(!applied.held_back, "yrs held part of it back");
                assert!(document.is_known(update), "not known once applied");
                Ok(())
            }
            Target::Utf16 { doc, levels } => {
                let have = doc.transact().state_vector();
                let runs =
                    check_against(update, &have, levels).map_err(|refusal| match refusal {
                        Refusal::Invalid(why) => DocumentError::InvalidUpdate(why),
                        Refusal::Incomplete { carries, reason } => {
                            DocumentError::Incomplete { carries, reason }
                        }
                    })?;
                let decoded = yrs::Update::decode_v1(update).unwrap();
                doc.transact_mut().apply_update(decoded).unwrap();
                levels.record(&runs);
                Ok(())
            }
        }
    }

    fn state(&self) -> Vec<u8> {
        self.doc()
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    }
}

#[tokio::test]
async fn updates_written_by_the_npm_yjs_client_pass_the_walk_and_apply_as_in_yjs() {
    let (dir, scenarios) = write_fixtures().await;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for scenario in &scenarios {
        let name = scenario["scenario"].as_str().unwrap();
        let roots = scenario["roots"].as_object().unwrap();
        let mut document = Target::for_scenario(name);
        for step in scenario["steps"].as_array().unwrap() {
            let contains = step["contains"].as_str().unwrap();
            let expect = step["expect"].as_str().unwrap();
            let update = std::fs::read(dir.path().join(step["file"].as_str().unwrap())).unwrap();
            let at = format!(
                "{name}: {contains} ({} bytes: {})",
                update.len(),
                hex(&update)
            );
            *counts.entry(expect.to_owned()).or_default() += 1;
            match expect {
                "applied" => {
                    quire_protocol::update::check(&update)
                        .unwrap_or_else(|why| panic!("{at}: the walk refused it: {why}"));
                    document
                        .apply(&update)
                        .unwrap_or_else(|err| panic!("{at}: not applied: {err}"));
                    assert_eq!(
                        normalize(render_roots(document.doc(), roots)),
                        normalize(step["content"].clone()),
                        "{at}: yrs' document differs from Yjs'"
                    );
                }
                "incomplete" => {
                    quire_protocol::update::check(&update)
                        .unwrap_or_else(|why| panic!("{at}: the walk refused it: {why}"));
                    let before = document.state();
                    match document.apply(&update) {
                        Err(DocumentError::Incomplete { .. }) => {}
                        other => panic!("{at}: expected Incomplete, got {other:?}"),
                    }
                    assert_eq!(document.state(), before, "{at}");
                }
                "refused" => {
                    let refusal = step["refusal"].as_str().unwrap();
                    match document.apply(&update) {
                        Err(DocumentError::InvalidUpdate(why)) if why.contains(refusal) => {}
                        other => {
                            panic!("{at}: expected a refusal saying {refusal:?}, got {other:?}")
                        }
                    }
                }
                other => panic!("{at}: unknown expectation {other}"),
            }
        }
        // Loaded again from its state, as from storage: the same content
        // (and levels rebuilt from a state Yjs' updates made).
        if let Target::Server(document) = &document {
            let state = document.encode_state().unwrap();
            let reloaded = Document::from_updates([state.as_slice()])
                .unwrap_or_else(|err| panic!("{name}: does not reload: {err}"));
            assert_eq!(
                render_roots(reloaded.doc(), roots),
                reencoded(render_roots(document.doc(), roots)),
                "{name}: reloaded"
            );
        }
    }
    println!(
        "npm Yjs fixtures: {counts:?} in {} scenarios",
        scenarios.len()
    );
    assert!(counts["applied"] > 300, "{counts:?}");
}

/// What yrs changes when it writes a value down again (storage keeps what
/// yrs wrote): it writes an integer that fits a float32 after a cast as a
/// float32, and the cast saturates, so i64::MAX (a Yjs bigint) comes back
/// as 2^63. (It also writes every bigint as a plain number and drops a
/// subdocument's `meta`, which this rendering does not show.)
fn reencoded(value: Value) -> Value {
    match value {
        Value::Object(object) if object.get("num") == Some(&json!(i64::MAX.to_string())) => {
            json!({ "num": (1u128 << 63).to_string() })
        }
        Value::Object(object) => {
            Value::Object(object.into_iter().map(|(k, v)| (k, reencoded(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(reencoded).collect()),
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    if bytes.len() > 200 {
        return format!("{}…", hex(&bytes[..200]));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// yrs' document in the canonical form updates.mjs renders Yjs' in (see the
// comment at its top).

fn render_roots(doc: &Doc, roots: &Map<String, Value>) -> Value {
    let rendered = roots
        .iter()
        .map(|(name, kind)| {
            let out = match kind.as_str().unwrap() {
                "text" => Out::YText(doc.get_or_insert_text(name.as_str())),
                "map" => Out::YMap(doc.get_or_insert_map(name.as_str())),
                "array" => Out::YArray(doc.get_or_insert_array(name.as_str())),
                "xml" => Out::YXmlFragment(doc.get_or_insert_xml_fragment(name.as_str())),
                other => panic!("unknown root kind {other}"),
            };
            (name.clone(), render(&doc.transact(), out))
        })
        .collect();
    Value::Object(rendered)
}

fn render<T: ReadTxn>(txn: &T, out: Out) -> Value {
    match out {
        Out::Any(any) => render_any(&any),
        Out::YText(text) => json!({ "ytext": delta(text.diff(txn, YChange::identity), txn) }),
        Out::YArray(array) => {
            let items: Vec<Out> = array.iter(txn).collect();
            json!({ "yarray": items.into_iter().map(|o| render(txn, o)).collect::<Vec<_>>() })
        }
        Out::YMap(map) => {
            let entries: Vec<(String, Out)> =
                map.iter(txn).map(|(k, v)| (k.to_owned(), v)).collect();
            let rendered: Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k, render(txn, v)))
                .collect();
            json!({ "ymap": rendered })
        }
        Out::YXmlFragment(fragment) => {
            let children: Vec<XmlOut> = fragment.children(txn).collect();
            json!({ "xmlFragment": children.into_iter().map(|c| render(txn, c.into())).collect::<Vec<_>>() })
        }
        Out::YXmlElement(element) => {
            let children: Vec<XmlOut> = element.children(txn).collect();
            json!({
                "xmlElement": element.tag().to_string(),
                "attributes": xml_attributes(txn, element.attributes(txn)),
                "children": children.into_iter().map(|c| render(txn, c.into())).collect::<Vec<_>>(),
            })
        }
        Out::YXmlText(text) => json!({
            "xmlText": delta(text.diff(txn, YChange::identity), txn),
            "attributes": xml_attributes(txn, text.attributes(txn)),
        }),
        // yrs keeps no `meta` of a subdocument: it reads it and drops it.
        Out::YDoc(doc) => {
            json!({ "doc": { "guid": doc.guid().to_string(), "autoLoad": doc.auto_load() } })
        }
        Out::UndefinedRef(_) => json!({ "undefinedRef": true }),
    }
}

fn xml_attributes<'a, T: ReadTxn>(
    txn: &T,
    attributes: impl Iterator<Item = (&'a str, Out)>,
) -> Value {
    let attributes: Vec<(String, Out)> = attributes.map(|(k, v)| (k.to_owned(), v)).collect();
    Value::Object(
        attributes
            .into_iter()
            .map(|(k, v)| (k, render(txn, v)))
            .collect(),
    )
}

fn delta<T: ReadTxn>(diff: Vec<Diff<YChange>>, txn: &T) -> Value {
    let ops = diff.into_iter().map(|chunk| {
        let insert = render(txn, chunk.insert);
        match chunk.attributes {
            Some(attributes) if !attributes.is_empty() => {
                let attributes: Map<String, Value> = attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), render_any(v)))
                    .collect();
                json!({ "insert": insert, "attributes": attributes })
            }
            _ => json!({ "insert": insert }),
        }
    });
    Value::Array(ops.collect())
}

fn render_any(any: &Any) -> Value {
    match any {
        Any::Null => Value::Null,
        Any::Undefined => json!({ "undefined": true }),
        Any::Bool(b) => json!(b),
        Any::Number(n) => match *n {
            yrs::any::Number::Int(i) => json!({ "num": i.to_string() }),
            yrs::any::Number::Float(f) => float(f),
        },
        Any::String(s) => json!(s.as_ref()),
        Any::Buffer(bytes) => json!({ "bytes": bytes.as_ref() }),
        Any::Array(values) => json!({ "array": values.iter().map(render_any).collect::<Vec<_>>() }),
        Any::Map(entries) => {
            let entries: Map<String, Value> = entries
                .iter()
                .map(|(k, v)| (k.clone(), render_any(v)))
                .collect();
            json!({ "object": entries })
        }
    }
}

/// An integral number as its exact decimal (as JavaScript's `BigInt(x)`
/// prints it), any other as Rust prints it (JavaScript's spelling is
/// brought to the same by [`normalize`]).
fn float(f: f64) -> Value {
    if f == 0.0 {
        json!({ "num": "0" })
    } else if f.is_finite() && f.fract() == 0.0 {
        json!({ "num": format!("{f:.0}") })
    } else {
        json!({ "float": format!("{f:?}") })
    }
}

/// Brings both renderings to one spelling: JavaScript's float spellings as
/// Rust prints the same double, and adjacent text inserts with the same
/// attributes joined (where Yjs and yrs split a delta differently).
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            if let (1, Some(Value::String(spelled))) = (object.len(), object.get("float")) {
                let parsed: f64 = spelled
                    .parse()
                    .unwrap_or_else(|_| panic!("a float: {spelled}"));
                return float(parsed);
            }
            Value::Object(object.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        Value::Array(items) => {
            let mut joined: Vec<Value> = Vec::with_capacity(items.len());
            for item in items.into_iter().map(normalize) {
                if let Some(last) = joined.last_mut()
                    && let (Some(Value::String(a)), Some(Value::String(b))) =
                        (last.get("insert"), item.get("insert"))
                    && last.get("attributes") == item.get("attributes")
                    && last.as_object().is_some_and(|o| o.len() <= 2)
                {
                    let text = format!("{a}{b}");
                    last["insert"] = Value::String(text);
                    continue;
                }
                joined.push(item);
            }
            Value::Array(joined)
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------
// The server-document halves of the walk's regression tests.

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
    let half = quire_protocol::update::MAX_NESTING as usize / 2;
    let (first, inner) = nest(&writer, None, half);
    let mut document = Document::new();
    document.apply(&first).unwrap();
    let (sibling, _) = nest(&writer, Some(inner.clone()), 1);
    document.apply(&sibling).unwrap();
    let second = {
        let mut txn = writer.transact_mut();
        let next = inner.insert(&mut txn, 1, ArrayPrelim::default());
        drop(txn);
        nest(&writer, Some(next), half + 1);
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
