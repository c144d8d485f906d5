//! Round trips through Markdown and HTML over generated documents of the
//! supported subset: every node type, every mark (links with clickable
//! hrefs), escapes, nested lists with start numbers, code with fences and
//! backticks inside. Documents are generated normalised, as the readers
//! read them: adjacent texts with the same marks merged, marks in the
//! schema's order, no empty paragraphs outside a list item's first place,
//! marks beginning and ending at a word.

use proptest::prelude::*;
use quire_protocol::rich::html::{from_html, to_html};
use quire_protocol::rich::markdown::{from_markdown, to_markdown};
use quire_protocol::rich::normalise;
use quire_protocol::rich::{Mark, MarkType, Node, NodeType};
use serde_json::Value;

/// A word: letters, digits, Markdown's and HTML's special characters.
fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9ü*_`\\[\\]<>#!~|&\\\\+=.()\"'-]{1,6}"
}

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..4).prop_map(|w| w.join(" "))
}

fn href() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/._-]{0,10}".prop_map(|p| format!("https://example.com/{p}")),
        "[a-z]{1,8}".prop_map(|p| format!("/docs/{p}")),
        "[a-z]{1,8}".prop_map(|p| format!("#{p}")),
        Just("mailto:ann@example.com".to_owned()),
        Just("https://example.com/a b(c)?x=1&y=<2>".to_owned()),
    ]
}

/// Marks of one run: code alone, or any set of the others.
fn marks() -> impl Strategy<Value = Vec<Mark>> {
    prop_oneof![
        3 => (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(href()),
        )
            .prop_map(|(b, i, s, u, link)| {
                let mut marks = Vec::new();
                if let Some(href) = link {
                    marks.push(Mark::link(&href));
                }
                for (on, t) in [
                    (b, MarkType::Bold),
                    (i, MarkType::Italic),
                    (s, MarkType::Strike),
                    (u, MarkType::Underline),
                ] {
                    if on {
                        marks.push(Mark::of(t));
                    }
                }
                marks
            }),
        1 => Just(vec![Mark::of(MarkType::Code)]),
        2 => Just(Vec::new()),
    ]
}

/// Inline content: marked runs separated by plain spaces or hard breaks.
fn inline(breaks: bool) -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec((words(), marks(), any::<bool>()), 1..5).prop_map(move |runs| {
        let mut content = Vec::new();
        let count = runs.len();
        for (n, (text, marks, hard)) in runs.into_iter().enumerate() {
            normalise::push_inline(&mut content, Node::text(text, normalise::marks(marks)));
            if n + 1 < count {
                let separator = if breaks && hard {
                    Node::new(NodeType::HardBreak, Vec::new())
                } else {
                    Node::text(" ", Vec::new())
                };
                normalise::push_inline(&mut content, separator);
            }
        }
        content
    })
}

fn code_block() -> impl Strategy<Value = Node> {
    (
        "[a-z0-9 `~*<>&#\\\\\n-]{0,30}",
        prop::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(code, language)| {
            let content = if code.is_empty() {
                Vec::new()
            } else {
                vec![Node::text(code, Vec::new())]
            };
            Node::new(NodeType::CodeBlock, content)
                .with_attr("language", language.map_or(Value::Null, Value::from))
        })
}

fn leaf_block() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => inline(true).prop_map(Node::paragraph),
        1 => (1i64..=6, inline(false)).prop_map(|(level, content)| Node::heading(level, content)),
        1 => code_block(),
        1 => Just(Node::new(NodeType::HorizontalRule, Vec::new())),
    ]
}

fn block() -> impl Strategy<Value = Node> {
    leaf_block().prop_recursive(3, 24, 3, |inner| {
        let item = (
            any::<bool>(),
            inline(true),
            prop::collection::vec(inner.clone(), 0..3),
        )
            .prop_map(|(empty_first, first, rest)| {
                // An empty first paragraph reads back only before a block
                // that is not a paragraph (Markdown has no empty paragraph).
                let first = if empty_first
                    && rest
                        .first()
                        .is_some_and(|b| b.node_type() != Some(NodeType::Paragraph))
                {
                    Node::paragraph(Vec::new())
                } else {
                    Node::paragraph(first)
                };
                let mut content = vec![first];
                content.extend(rest);
                Node::new(NodeType::ListItem, content)
            })
            .boxed();
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|c| Node::new(NodeType::Blockquote, c)),
            prop::collection::vec(item.clone(), 1..4)
                .prop_map(|items| Node::new(NodeType::BulletList, items)),
            (0i64..1000, prop::collection::vec(item, 1..4)).prop_map(|(start, items)| {
                Node::new(NodeType::OrderedList, items).with_attr("start", Value::from(start))
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = Node> {
    prop::collection::vec(block(), 1..6).prop_map(Node::doc)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn markdown_reads_back_as_the_same_document(doc in document()) {
        doc.check().unwrap();
        let markdown = to_markdown(&doc);
        let back = from_markdown(&markdown);
        prop_assert_eq!(&back, &doc, "markdown:\n{}", markdown);
        prop_assert_eq!(to_markdown(&back), markdown);
    }

    #[test]
    fn html_reads_back_as_the_same_document(doc in document()) {
        let html = to_html(&doc, "generated");
        let back = from_html(&html);
        back.check().unwrap();
        prop_assert_eq!(&back, &doc, "html:\n{}", html);
        prop_assert_eq!(to_html(&back, "generated"), html);
    }
}
