//! The few rules that make imported content valid in the schema, shared by
//! the Markdown and HTML readers (and by the tests, to normalise the
//! documents they generate the way a reader would read them).

use super::json::{Mark, Node};
use super::schema::{MarkType, NodeType};

/// Makes a finished block valid: a list item starts with a paragraph, a
/// blockquote holds a block, a list holds only items (anything else is
/// wrapped in one).
pub fn settle(block: &mut Node) {
    match block.node_type() {
        Some(NodeType::ListItem)
            if block.content.first().and_then(Node::node_type) != Some(NodeType::Paragraph) =>
        {
            block.content.insert(0, Node::paragraph(Vec::new()));
        }
        Some(NodeType::Blockquote | NodeType::Doc) if block.content.is_empty() => {
            block.content.push(Node::paragraph(Vec::new()));
        }
        Some(NodeType::BulletList) | Some(NodeType::OrderedList) => {
            for child in &mut block.content {
                if child.node_type() != Some(NodeType::ListItem) {
                    let mut item = Node::new(
                        NodeType::ListItem,
                        vec![std::mem::replace(child, Node::paragraph(Vec::new()))],
                    );
                    settle(&mut item);
                    *child = item;
                }
            }
        }
        _ => {}
    }
}

/// Appends inline `node` to `content`, merged into the text before when
/// both are text with the same marks (as ProseMirror keeps them).
pub fn push_inline(content: &mut Vec<Node>, node: Node) {
    if node.is_text() && node.text.as_deref().is_none_or(str::is_empty) {
        return;
    }
    if let Some(last) = content.last_mut()
        && last.is_text()
        && node.is_text()
        && last.marks == node.marks
    {
        last.text
            .get_or_insert_with(String::new)
            .push_str(node.text.as_deref().unwrap_or(""));
        return;
    }
    content.push(node);
}

/// Marks as the schema allows them on one text: each type once (the
/// first), `code` alone, in the schema's order.
pub fn marks(mut marks: Vec<Mark>) -> Vec<Mark> {
    marks.retain(|m| m.mark_type().is_some());
    if let Some(code) = marks
        .iter()
        .position(|m| m.mark_type() == Some(MarkType::Code))
    {
        return vec![marks.swap_remove(code)];
    }
    let mut seen = Vec::new();
    marks.retain(|m| {
        let t = m.mark_type().expect("kept above");
        let first = !seen.contains(&t);
        seen.push(t);
        first
    });
    marks.sort_by_key(|m| m.mark_type());
    marks
}

/// A heading's level, within the schema's 1–6 (1 when missing).
pub fn heading_level(heading: &Node) -> i64 {
    heading
        .attrs
        .get("level")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1)
        .clamp(
            *super::schema::HEADING_LEVELS.start(),
            *super::schema::HEADING_LEVELS.end(),
        )
}
