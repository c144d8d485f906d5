//! Rich documents between Quire and the npm Tiptap/y-prosemirror packages
//! (pinned in `tests/compat`), without a browser: what y-prosemirror
//! writes, Quire's document model reads as the same ProseMirror JSON; what
//! Quire's model writes, Tiptap's StarterKit schema accepts as it is.

use quire_protocol::rich::json::{self, Mark};
use quire_protocol::rich::{MarkType, Node, NodeType};
use quire_tests::browser::rich_scenario;
use quire_tests::{TestServer, http};
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

fn ws(server: &TestServer) -> String {
    format!("ws://{}/ws", server.addr)
}

async fn stored(server: &TestServer, doc: &str) -> Node {
    let bytes = http::get(server.addr, &format!("/api/docs/{doc}/snapshot?format=yjs"))
        .await
        .body;
    let ydoc = Doc::new();
    ydoc.transact_mut()
        .apply_update(Update::decode_v1(&bytes).unwrap())
        .unwrap();
    let fragment = ydoc.get_or_insert_xml_fragment("default");
    let txn = ydoc.transact();
    json::read_fragment(&txn, &fragment)
}

#[tokio::test]
async fn what_y_prosemirror_writes_reads_back_as_the_same_prosemirror_json() {
    let server = TestServer::start().await;
    let written = rich_scenario(&ws(&server), "write", "pm-sample", "sample").await;
    let ours = serde_json::to_value(stored(&server, "pm-sample").await).unwrap();
    assert_eq!(
        ours, written["json"],
        "Quire's reading of the fragment equals y-prosemirror's"
    );
    let node: Node = serde_json::from_value(written["json"].clone()).unwrap();
    node.check()
        .expect("Quire's schema accepts what StarterKit wrote");
}

#[tokio::test]
async fn what_quire_writes_is_valid_in_starter_kit() {
    let server = TestServer::start().await;
    let doc = Node::doc(vec![
        Node::heading(3, vec![Node::text("Heading", vec![])]),
        Node::paragraph(vec![
            Node::text(
                "marks ",
                vec![Mark::of(MarkType::Bold), Mark::of(MarkType::Underline)],
            ),
            Node::text("link", vec![Mark::link("https://x.example/")]),
            Node::new(NodeType::HardBreak, vec![]),
            Node::text("code", vec![Mark::of(MarkType::Code)]),
        ]),
        Node::new(
            NodeType::OrderedList,
            vec![Node::new(
                NodeType::ListItem,
                vec![Node::paragraph(vec![Node::text("item", vec![])])],
            )],
        )
        .with_attr("start", Value::from(4)),
        Node::new(NodeType::CodeBlock, vec![Node::text("a\nb", vec![])])
            .with_attr("language", Value::from("rust")),
        Node::new(NodeType::Blockquote, vec![Node::paragraph(vec![])]),
        Node::new(NodeType::HorizontalRule, vec![]),
        Node::paragraph(vec![]),
    ]);
    let ydoc = Doc::new();
    let fragment = ydoc.get_or_insert_xml_fragment("default");
    json::write(&mut ydoc.transact_mut(), &fragment, 0, &doc.content);
    let update = ydoc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let put = http::request(
        server.addr,
        "PUT",
        "/api/docs/quire-written/snapshot?format=yjs",
        &update,
    )
    .await;
    assert!(put.status < 300);
    let read = rich_scenario(&ws(&server), "read", "quire-written", "").await;
    let expected = serde_json::to_value(json::read_fragment(&ydoc.transact(), &fragment)).unwrap();
    assert_eq!(
        read["json"], expected,
        "Tiptap reads exactly what Quire wrote"
    );
    assert_eq!(
        read["json"]["content"][2]["attrs"]["start"], 4,
        "numbers stay numbers"
    );
}
