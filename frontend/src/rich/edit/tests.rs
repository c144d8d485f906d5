//! The commands on real yrs documents, checked through the JSON they leave
//! (which must also pass the StarterKit schema check).

use super::*;
use quire_protocol::rich::FRAGMENT;
use yrs::{Doc, Transact};

/// A compact picture of a document: `<p>a<bold>b</bold></p>`.
fn show(node: &Node) -> String {
    if let Some(text) = &node.text {
        let mut s = text.clone();
        for m in node.marks.iter().rev() {
            s = format!("<{}>{s}</{}>", m.kind, m.kind);
        }
        return s;
    }
    let tag = match node.kind.as_str() {
        "paragraph" => "p".to_owned(),
        "heading" => format!(
            "h{}",
            node.attrs.get("level").and_then(Value::as_i64).unwrap_or(1)
        ),
        "bulletList" => "ul".to_owned(),
        "orderedList" => "ol".to_owned(),
        "listItem" => "li".to_owned(),
        "blockquote" => "q".to_owned(),
        "codeBlock" => "pre".to_owned(),
        "horizontalRule" => return "<hr>".to_owned(),
        "hardBreak" => return "<br>".to_owned(),
        other => other.to_owned(),
    };
    let inner: String = node.content.iter().map(show).collect();
    if node.kind == "doc" {
        inner
    } else {
        format!("<{tag}>{inner}</{tag}>")
    }
}

fn p(text: &str) -> Node {
    Node::paragraph(if text.is_empty() {
        vec![]
    } else {
        vec![Node::text(text, vec![])]
    })
}

fn li(nodes: Vec<Node>) -> Node {
    Node::new(NodeType::ListItem, nodes)
}

fn ul(items: Vec<Node>) -> Node {
    Node::new(NodeType::BulletList, items)
}

struct T {
    doc: Doc,
}

impl T {
    fn new(blocks: Vec<Node>) -> Self {
        let doc = crate::runtime::new_doc();
        let root = doc.get_or_insert_xml_fragment(FRAGMENT);
        json::write(&mut doc.transact_mut(), &root, 0, &blocks);
        Self { doc }
    }

    fn run(&self, f: impl FnOnce(&mut Edit) -> Res) -> After {
        let root = self.doc.get_or_insert_xml_fragment(FRAGMENT);
        let mut txn = self.doc.transact_mut();
        let mut edit = Edit::new(&mut txn, root);
        f(&mut edit).expect("the command applies")
    }

    fn json(&self) -> Node {
        let root = self.doc.get_or_insert_xml_fragment(FRAGMENT);
        json::read_fragment(&self.doc.transact(), &root)
    }

    fn show(&self) -> String {
        let json = self.json();
        json.check()
            .unwrap_or_else(|e| panic!("{e}: {}", show(&json)));
        show(&json)
    }

    /// Where a caret result points: (path, offset).
    fn caret(&self, after: &After) -> (Path, u32) {
        let After::Caret(c) = after else {
            panic!("a caret: {after:?}")
        };
        let root = self.doc.get_or_insert_xml_fragment(FRAGMENT);
        let txn = self.doc.transact();
        (path_of(&txn, &root, &c.el), c.off)
    }
}

fn path_of<T: ReadTxn>(txn: &T, root: &XmlFragmentRef, el: &XmlElementRef) -> Path {
    fn find<T: ReadTxn, F: XmlFragment>(
        txn: &T,
        parent: &F,
        el: &XmlElementRef,
        path: &mut Path,
    ) -> bool {
        for (i, child) in parent.children(txn).enumerate() {
            if let XmlOut::Element(e) = child {
                path.push(i as u32);
                if &e == el || find(txn, &e, el, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = Vec::new();
    assert!(
        find(txn, root, el, &mut path),
        "the caret's element is in the document"
    );
    path
}

fn at(path: &[u32], off: u32) -> Sel {
    Sel::caret(Pos::new(path.to_vec(), off))
}

fn range(a: (&[u32], u32), b: (&[u32], u32)) -> Sel {
    Sel {
        anchor: Pos::new(a.0.to_vec(), a.1),
        head: Pos::new(b.0.to_vec(), b.1),
    }
}

#[test]
fn typing_inherits_the_marks_before_the_caret() {
    let t = T::new(vec![Node::paragraph(vec![
        Node::text("ab", vec![Mark::of(MarkType::Bold)]),
        Node::text("c", vec![]),
    ])]);
    let after = t.run(|e| e.insert_text(&at(&[0], 2), "X", None));
    assert_eq!(t.show(), "<p><bold>abX</bold>c</p>");
    assert_eq!(t.caret(&after), (vec![0], 3));
    t.run(|e| e.insert_text(&at(&[0], 0), "Y", Some(vec![])));
    assert_eq!(t.show(), "<p>Y<bold>abX</bold>c</p>");
}

#[test]
fn typing_at_the_end_of_a_link_does_not_extend_it() {
    let t = T::new(vec![Node::paragraph(vec![Node::text(
        "site",
        vec![Mark::link("https://a.b")],
    )])]);
    t.run(|e| e.insert_text(&at(&[0], 4), "!", None));
    assert_eq!(t.show(), "<p><link>site</link>!</p>");
    t.run(|e| e.insert_text(&at(&[0], 2), "-", None));
    assert_eq!(t.show(), "<p><link>si-te</link>!</p>");
}

#[test]
fn typing_into_an_empty_paragraph_and_next_to_a_break() {
    let t = T::new(vec![
        p(""),
        Node::paragraph(vec![Node::new(NodeType::HardBreak, vec![])]),
    ]);
    t.run(|e| e.insert_text(&at(&[0], 0), "hi", None));
    t.run(|e| e.insert_text(&at(&[1], 1), "after", None));
    t.run(|e| e.insert_text(&at(&[1], 0), "before", None));
    assert_eq!(t.show(), "<p>hi</p><p>before<br>after</p>");
}

#[test]
fn enter_splits_and_backspace_joins() {
    let t = T::new(vec![p("hello world")]);
    let after = t.run(|e| e.split(&at(&[0], 5)));
    assert_eq!(t.show(), "<p>hello</p><p> world</p>");
    assert_eq!(t.caret(&after), (vec![1], 0));
    let after = t.run(|e| e.delete_backward(&at(&[1], 0)));
    assert_eq!(t.show(), "<p>hello world</p>");
    assert_eq!(t.caret(&after), (vec![0], 5));
    // Delete at the end joins the next block too.
    t.run(|e| e.split(&at(&[0], 11)));
    t.run(|e| e.insert_text(&at(&[1], 0), "!", None));
    t.run(|e| e.delete_forward(&at(&[0], 11)));
    assert_eq!(t.show(), "<p>hello world!</p>");
}

#[test]
fn enter_at_the_end_of_a_heading_makes_a_paragraph() {
    let t = T::new(vec![Node::heading(1, vec![Node::text("Title", vec![])])]);
    t.run(|e| e.split(&at(&[0], 5)));
    assert_eq!(t.show(), "<h1>Title</h1><p></p>");
    t.run(|e| e.split(&at(&[0], 2)));
    assert_eq!(t.show(), "<h1>Ti</h1><h1>tle</h1><p></p>");
}

#[test]
fn joining_keeps_marks_and_breaks() {
    let t = T::new(vec![
        p("a"),
        Node::paragraph(vec![
            Node::text("b", vec![Mark::of(MarkType::Italic)]),
            Node::new(NodeType::HardBreak, vec![]),
            Node::text("c", vec![]),
        ]),
    ]);
    t.run(|e| e.join_backward(&[1]));
    assert_eq!(t.show(), "<p>a<italic>b</italic><br>c</p>");
    let root = t.doc.get_or_insert_xml_fragment(FRAGMENT);
    let txn = t.doc.transact();
    let el = root.get(&txn, 0).unwrap().into_xml_element().unwrap();
    // "a" and "b" share one XmlText, as y-prosemirror would write them.
    assert_eq!(el.len(&txn), 3);
}

#[test]
fn deleting_across_blocks_joins_what_is_left() {
    let t = T::new(vec![
        p("one"),
        p("two"),
        ul(vec![li(vec![p("three")])]),
        p("four"),
    ]);
    let after = t.run(|e| e.delete_backward(&range((&[0], 1), (&[2, 0, 0], 2))));
    assert_eq!(t.show(), "<p>oree</p><p>four</p>");
    assert_eq!(t.caret(&after), (vec![0], 1));
    let t = T::new(vec![ul(vec![li(vec![p("a")]), li(vec![p("b")])]), p("c")]);
    t.run(|e| e.delete_backward(&range((&[0, 0, 0], 1), (&[1], 0))));
    assert_eq!(t.show(), "<ul><li><p>ac</p></li></ul>");
}

#[test]
fn backspace_deletes_a_whole_surrogate_pair() {
    let t = T::new(vec![p("a😀")]);
    t.run(|e| e.delete_backward(&at(&[0], 3)));
    assert_eq!(t.show(), "<p>a</p>");
}

#[test]
fn toggling_marks() {
    let t = T::new(vec![p("hello world")]);
    t.run(|e| e.toggle_mark(&range((&[0], 0), (&[0], 5)), MarkType::Bold));
    assert_eq!(t.show(), "<p><bold>hello</bold> world</p>");
    t.run(|e| e.toggle_mark(&range((&[0], 3), (&[0], 8)), MarkType::Bold));
    assert_eq!(t.show(), "<p><bold>hello wo</bold>rld</p>");
    t.run(|e| e.toggle_mark(&range((&[0], 0), (&[0], 8)), MarkType::Bold));
    assert_eq!(t.show(), "<p>hello world</p>");
    t.run(|e| e.toggle_mark(&range((&[0], 0), (&[0], 5)), MarkType::Italic));
    t.run(|e| e.toggle_mark(&range((&[0], 0), (&[0], 11)), MarkType::Code));
    assert_eq!(
        t.show(),
        "<p><code>hello world</code></p>",
        "code replaces other marks"
    );
    t.run(|e| e.toggle_mark(&range((&[0], 0), (&[0], 5)), MarkType::Bold));
    assert_eq!(
        t.show(),
        "<p><code>hello world</code></p>",
        "nothing joins code"
    );
}

#[test]
fn marks_across_blocks_skip_code_blocks() {
    let t = T::new(vec![
        p("ab"),
        Node::new(NodeType::CodeBlock, vec![Node::text("x", vec![])]),
        p("cd"),
    ]);
    t.run(|e| e.toggle_mark(&range((&[0], 1), (&[2], 1)), MarkType::Strike));
    assert_eq!(
        t.show(),
        "<p>a<strike>b</strike></p><pre>x</pre><p><strike>c</strike>d</p>"
    );
}

#[test]
fn links_are_set_changed_and_removed() {
    let t = T::new(vec![p("see the site now")]);
    t.run(|e| e.set_link(&range((&[0], 8), (&[0], 12)), Some("https://quire.example")));
    assert_eq!(t.show(), "<p>see the <link>site</link> now</p>");
    let json = t.json();
    assert_eq!(
        json.content[0].content[1].marks[0].href(),
        Some("https://quire.example")
    );
    assert_eq!(
        json.content[0].content[1].marks[0].attrs["rel"],
        "noopener noreferrer nofollow"
    );
    // With a caret inside it, the whole link changes.
    t.run(|e| e.set_link(&at(&[0], 10), Some("https://other.example")));
    assert_eq!(
        t.json().content[0].content[1].marks[0].href(),
        Some("https://other.example")
    );
    t.run(|e| e.set_link(&at(&[0], 9), None));
    assert_eq!(t.show(), "<p>see the site now</p>");
    // With a caret elsewhere, the address is inserted as a link.
    t.run(|e| e.set_link(&at(&[0], 0), Some("https://x.y")));
    assert_eq!(t.show(), "<p><link>https://x.y</link>see the site now</p>");
}

#[test]
fn block_types() {
    let t = T::new(vec![
        Node::paragraph(vec![
            Node::text("a", vec![Mark::of(MarkType::Bold)]),
            Node::new(NodeType::HardBreak, vec![]),
            Node::text("b", vec![]),
        ]),
        p("c"),
    ]);
    t.run(|e| e.set_block_type(&range((&[0], 0), (&[1], 1)), BlockType::Heading(2)));
    assert_eq!(t.show(), "<h2><bold>a</bold><br>b</h2><h2>c</h2>");
    t.run(|e| e.set_block_type(&at(&[0], 0), BlockType::CodeBlock));
    assert_eq!(
        t.show(),
        "<pre>a\nb</pre><h2>c</h2>",
        "a code block holds plain text"
    );
    t.run(|e| e.set_block_type(&at(&[0], 0), BlockType::Paragraph));
    assert_eq!(t.show(), "<p>a<br>b</p><h2>c</h2>");
    // A list item keeps its leading paragraph.
    let t = T::new(vec![ul(vec![li(vec![p("x")])])]);
    t.run(|e| e.set_block_type(&at(&[0, 0, 0], 0), BlockType::Heading(1)));
    assert_eq!(t.show(), "<ul><li><p>x</p></li></ul>");
}

#[test]
fn quotes_wrap_and_unwrap() {
    let t = T::new(vec![p("a"), p("b"), p("c")]);
    let after = t.run(|e| e.toggle_blockquote(&range((&[0], 0), (&[1], 1))));
    assert_eq!(t.show(), "<q><p>a</p><p>b</p></q><p>c</p>");
    let After::Range(_, head) = after else {
        panic!()
    };
    let _ = head;
    t.run(|e| e.toggle_blockquote(&at(&[0, 1], 0)));
    assert_eq!(t.show(), "<p>a</p><p>b</p><p>c</p>");
    // Backspace at the start of a quote's first paragraph lifts it out.
    let t = T::new(vec![Node::new(NodeType::Blockquote, vec![p("x"), p("y")])]);
    t.run(|e| e.delete_backward(&at(&[0, 0], 0)));
    assert_eq!(t.show(), "<p>x</p><q><p>y</p></q>");
}

#[test]
fn lists_toggle_switch_and_lift() {
    let t = T::new(vec![
        p("a"),
        Node::heading(1, vec![Node::text("b", vec![])]),
        p("c"),
    ]);
    let after = t.run(|e| e.toggle_list(&range((&[0], 0), (&[1], 1)), NodeType::BulletList));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p></li><li><p>b</p></li></ul><p>c</p>"
    );
    let After::Range(_, b) = &after else {
        panic!("{after:?}")
    };
    assert_eq!(t.caret(&After::Caret(b.clone())), (vec![0, 1, 0], 1));
    // The next paragraph joins the list.
    t.run(|e| e.toggle_list(&at(&[1], 0), NodeType::BulletList));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p></li><li><p>b</p></li><li><p>c</p></li></ul>"
    );
    t.run(|e| e.toggle_list(&at(&[0, 0, 0], 0), NodeType::OrderedList));
    assert_eq!(
        t.show(),
        "<ol><li><p>a</p></li><li><p>b</p></li><li><p>c</p></li></ol>"
    );
    // Toggling the same type lifts the item out, splitting the list.
    let after = t.run(|e| e.toggle_list(&at(&[0, 1, 0], 1), NodeType::OrderedList));
    assert_eq!(
        t.show(),
        "<ol><li><p>a</p></li></ol><p>b</p><ol><li><p>c</p></li></ol>"
    );
    assert_eq!(t.caret(&after), (vec![1], 1));
}

#[test]
fn enter_in_lists() {
    let t = T::new(vec![ul(vec![li(vec![p("ab")])])]);
    let after = t.run(|e| e.split(&at(&[0, 0, 0], 1)));
    assert_eq!(t.show(), "<ul><li><p>a</p></li><li><p>b</p></li></ul>");
    assert_eq!(t.caret(&after), (vec![0, 1, 0], 0));
    // Enter on an empty last item leaves the list.
    t.run(|e| e.split(&at(&[0, 1, 0], 1)));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p></li><li><p>b</p></li><li><p></p></li></ul>"
    );
    let after = t.run(|e| e.split(&at(&[0, 2, 0], 0)));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p></li><li><p>b</p></li></ul><p></p>"
    );
    assert_eq!(t.caret(&after), (vec![1], 0));
    // Backspace at an item's start unwraps it.
    t.run(|e| e.delete_backward(&at(&[0, 1, 0], 0)));
    assert_eq!(t.show(), "<ul><li><p>a</p></li></ul><p>b</p><p></p>");
}

#[test]
fn tab_and_shift_tab_nest_and_unnest_items() {
    let t = T::new(vec![ul(vec![
        li(vec![p("a")]),
        li(vec![p("b")]),
        li(vec![p("c")]),
    ])]);
    let after = t.run(|e| e.indent(&at(&[0, 1, 0], 1)));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p><ul><li><p>b</p></li></ul></li><li><p>c</p></li></ul>"
    );
    assert_eq!(t.caret(&after), (vec![0, 0, 1, 0, 0], 1));
    t.run(|e| e.indent(&at(&[0, 1, 0], 0)));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p><ul><li><p>b</p></li><li><p>c</p></li></ul></li></ul>"
    );
    // Shift+Tab on b: c (after it) becomes b's child.
    let after = t.run(|e| e.outdent(&at(&[0, 0, 1, 0, 0], 0)));
    assert_eq!(
        t.show(),
        "<ul><li><p>a</p></li><li><p>b</p><ul><li><p>c</p></li></ul></li></ul>"
    );
    assert_eq!(t.caret(&after), (vec![0, 1, 0], 0));
    assert!(
        t.run(|e| Ok(if e.indent(&at(&[0, 0, 0], 0)).is_err() {
            After::Keep
        } else {
            panic!("the first item cannot nest")
        }))
        .is_keep()
    );
}

trait IsKeep {
    fn is_keep(&self) -> bool;
}
impl IsKeep for After {
    fn is_keep(&self) -> bool {
        matches!(self, After::Keep)
    }
}

#[test]
fn code_blocks_take_newlines_and_triple_enter_leaves() {
    let t = T::new(vec![Node::new(
        NodeType::CodeBlock,
        vec![Node::text("x", vec![])],
    )]);
    t.run(|e| e.split(&at(&[0], 1)));
    t.run(|e| e.split(&at(&[0], 2)));
    assert_eq!(t.show(), "<pre>x\n\n</pre>");
    let after = t.run(|e| e.split(&at(&[0], 3)));
    assert_eq!(t.show(), "<pre>x</pre><p></p>");
    assert_eq!(t.caret(&after), (vec![1], 0));
    let t = T::new(vec![p("```rust")]);
    t.run(|e| e.split(&at(&[0], 7)));
    let json = t.json();
    assert_eq!(json.content[0].kind, "codeBlock");
    assert_eq!(json.content[0].attrs["language"], "rust");
}

#[test]
fn rules_split_the_block() {
    let t = T::new(vec![p("abcd")]);
    let after = t.run(|e| e.insert_rule(&at(&[0], 2)));
    assert_eq!(t.show(), "<p>ab</p><hr><p>cd</p>");
    assert_eq!(t.caret(&after), (vec![2], 0));
    // Backspace after a rule removes it.
    t.run(|e| e.delete_backward(&at(&[2], 0)));
    assert_eq!(t.show(), "<p>ab</p><p>cd</p>");
    let t = T::new(vec![p("")]);
    t.run(|e| e.insert_rule(&at(&[0], 0)));
    assert_eq!(t.show(), "<hr><p></p>");
}

#[test]
fn pasting_blocks_in_the_middle_of_a_paragraph() {
    let t = T::new(vec![p("startend")]);
    let nodes = vec![
        p("one"),
        Node::heading(2, vec![Node::text("two", vec![])]),
        p("three"),
    ];
    let after = t.run(|e| e.insert_nodes(&at(&[0], 5), nodes));
    assert_eq!(t.show(), "<p>startone</p><h2>two</h2><p>threeend</p>");
    assert_eq!(t.caret(&after), (vec![2], 5));
    let t = T::new(vec![p("ab")]);
    t.run(|e| {
        e.insert_nodes(
            &at(&[0], 1),
            vec![Node::text("X", vec![Mark::of(MarkType::Bold)])],
        )
    });
    assert_eq!(t.show(), "<p>a<bold>X</bold>b</p>");
    let t = T::new(vec![p("ab")]);
    t.run(|e| e.insert_nodes(&at(&[0], 1), vec![ul(vec![li(vec![p("i")])])]));
    assert_eq!(t.show(), "<p>a</p><ul><li><p>i</p></li></ul><p>b</p>");
}

#[test]
fn navigation_in_document_order() {
    let t = T::new(vec![
        p("a"),
        ul(vec![li(vec![p("b"), ul(vec![li(vec![p("c")])])])]),
        Node::new(NodeType::HorizontalRule, vec![]),
        p("d"),
    ]);
    let root = t.doc.get_or_insert_xml_fragment(FRAGMENT);
    let txn = t.doc.transact();
    assert_eq!(next_textblock(&txn, &root, &[0]), Some(vec![1, 0, 0]));
    assert_eq!(
        next_textblock(&txn, &root, &[1, 0, 0]),
        Some(vec![1, 0, 1, 0, 0])
    );
    assert_eq!(next_textblock(&txn, &root, &[1, 0, 1, 0, 0]), Some(vec![3]));
    assert_eq!(prev_textblock(&txn, &root, &[3]), Some(vec![1, 0, 1, 0, 0]));
    assert_eq!(prev_textblock(&txn, &root, &[0]), None);
    assert_eq!(textblocks_between(&txn, &root, &[0], &[3]).len(), 4);
    assert_eq!(first_in_doc(&txn, &root), Some(vec![0]));
    assert_eq!(last_in_doc(&txn, &root), Some(vec![3]));
}
