//! The chunks around top-level blocks (`div.chunk`, 64 blocks each at
//! start-up, only the DOM's: see `frontend/src/rich/dom.rs`) in a document
//! bigger than a chunk: blocks added split a chunk that grows past twice
//! that, blocks removed take an emptied chunk with them, a caret the
//! browser puts on a chunk or on the root maps to the block there, and
//! what the editor shows and stores stays the document.

use quire_protocol::rich::Node;
use quire_tests::browser::Browser;
use serde_json::json;

use crate::support::*;

fn paragraphs(n: usize) -> Node {
    let p = |i: usize| json!({"type": "paragraph", "content": [{"type": "text", "text": format!("b{i}")}]});
    serde_json::from_value(json!({"type": "doc", "content": (0..n).map(p).collect::<Vec<_>>()}))
        .expect("a document")
}

/// How many blocks each chunk holds (and that the root holds only chunks).
const CHUNK_SIZES: &str =
    "return [...Q.root().children].map((c) => c.className === 'chunk' ? c.children.length : -1)";

async fn chunk_sizes(browser: &Browser) -> Vec<i64> {
    let sizes = js(browser, CHUNK_SIZES, vec![]).await;
    serde_json::from_value(sizes).expect("a list of sizes")
}

#[tokio::test]
async fn chunks_split_and_go_away_and_carets_on_them_land_in_their_blocks() {
    let server = app_server().await;
    let base = format!("http://{}", server.addr);
    seed(&server, "chunks", &paragraphs(130)).await;
    let browser = Browser::start().await;
    open_editor(&browser, &base, "chunks", "Ann").await;
    assert_eq!(chunk_sizes(&browser).await, vec![64, 64, 2]);
    let mut lines: Vec<String> = (0..130).map(|i| format!("b{i}")).collect();

    // Enter 65 times at the end of "b10": the first chunk grows past 128
    // and is split; typing goes on where the caret is.
    js(
        &browser,
        "Q.root().focus(); return Q.setCaret(Q.text().indexOf('b11') - 1)",
        vec![],
    )
    .await;
    keys(&browser, &ENTER.repeat(65)).await;
    keys(&browser, "new").await;
    lines.splice(
        11..11,
        (0..64).map(|_| String::new()).chain(["new".to_owned()]),
    );
    wait_text(
        &browser,
        "65 new blocks, the caret in the last",
        &lines.join("\n"),
    )
    .await;
    let sizes = chunk_sizes(&browser).await;
    assert_eq!(sizes.iter().sum::<i64>(), 195, "{sizes:?}");
    assert!(
        sizes.len() == 4 && sizes.iter().all(|&n| (1..=128).contains(&n)),
        "split: {sizes:?}"
    );

    // A caret on a chunk (between its blocks) and on the root (between
    // chunks) is a caret at the start of the block there.
    for (script, key) in [
        (
            "const c = Q.root().children[1]; getSelection().collapse(c, 1); return Q.blocks(Q.root()).indexOf(c.children[1])",
            "A",
        ),
        (
            "const r = Q.root(); getSelection().collapse(r, 2); return Q.blocks(Q.root()).indexOf(r.children[2].firstElementChild)",
            "B",
        ),
    ] {
        let at = js(&browser, script, vec![])
            .await
            .as_u64()
            .expect("a block index") as usize;
        keys(&browser, key).await;
        lines[at] = format!("{key}{}", lines[at]);
        let shown = editor_text(&browser).await;
        let got = shown.lines().position(|l| l.contains(key));
        assert_eq!(got, Some(at), "{key} typed at the start of block {at}");
        wait_text(
            &browser,
            "typed at the start of the block there",
            &lines.join("\n"),
        )
        .await;
    }

    // Deleting the last chunk's blocks (a selection from inside the
    // chunk before) takes the emptied chunk away.
    let before = chunk_sizes(&browser).await;
    let last = *before.last().unwrap() as usize;
    let keep = lines.len() - last - 1; // the block the selection starts in
    js(
        &browser,
        "const bs = Q.blocks(Q.root()); const from = bs[arguments[0]].firstChild; const to = bs[bs.length - 1].firstChild;\
         getSelection().setBaseAndExtent(from, 1, to, to.data.length); return true",
        vec![json!(keep)],
    )
    .await;
    keys(&browser, BACKSPACE).await;
    let cut = lines[keep][..1].to_owned();
    lines.truncate(keep);
    lines.push(cut);
    wait_text(&browser, "the selection is gone", &lines.join("\n")).await;
    let after = chunk_sizes(&browser).await;
    assert_eq!(
        after.len(),
        before.len() - 1,
        "the emptied chunk went: {before:?} -> {after:?}"
    );
    assert!(after.iter().all(|&n| n > 0), "{after:?}");
    wait_status(&browser, "All changes saved").await;
    let expected: String = lines.iter().map(|l| format!("<p>{l}</p>")).collect();
    wait_stored(server.addr, "chunks", &expected).await;
    // And the document reloads into the same chunks of 64.
    browser.open(&format!("{base}/d/chunks")).await;
    wait_text(&browser, "the reloaded document", &lines.join("\n")).await;
    let n = lines.len() as i64;
    let mut sizes = vec![64; (n / 64) as usize];
    if n % 64 > 0 {
        sizes.push(n % 64);
    }
    assert_eq!(chunk_sizes(&browser).await, sizes);
    browser.close().await;
}
