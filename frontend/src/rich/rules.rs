//! Markdown shortcuts: what the text before the caret turns into when a
//! person types the last character of a pattern. Pure functions of that
//! text; the editor carries them out with its commands.
//!
//! At the start of a block (after the space): `# `…`###### ` headings,
//! `- ` / `* ` bullet list, `1. ` numbered list (starting at that number),
//! `> ` quote, "``` " code block; `---` a horizontal rule. Inline, on the
//! closing character: `**bold**`, `*italic*`, `` `code` ``.

use quire_protocol::rich::MarkType;

/// A block-start shortcut: the prefix to remove and what the block becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRule {
    Heading(u8),
    BulletList,
    OrderedList(i64),
    Quote,
    CodeBlock,
    Rule,
}

/// Looks at the whole text before the caret in a paragraph, right after
/// `typed` was typed. Returns the rule and how many UTF-16 units of
/// prefix it consumes.
pub fn block_rule(before: &str, typed: &str) -> Option<(BlockRule, u32)> {
    let len = before.encode_utf16().count() as u32;
    if typed == "-" && before == "---" {
        return Some((BlockRule::Rule, len));
    }
    if typed != " " {
        return None;
    }
    let head = before.strip_suffix(' ')?;
    let rule = match head {
        "-" | "*" | "+" => BlockRule::BulletList,
        ">" => BlockRule::Quote,
        "```" => BlockRule::CodeBlock,
        h if !h.is_empty() && h.len() <= 6 && h.bytes().all(|b| b == b'#') => {
            BlockRule::Heading(h.len() as u8)
        }
        n => {
            let digits = n.strip_suffix('.')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            BlockRule::OrderedList(digits.parse().ok()?)
        }
    };
    Some((rule, len))
}

/// An inline shortcut found at the end of the text before the caret:
/// the mark, where the opening marker starts, the inner text's range,
/// and the closing marker's length (all in UTF-16 units from the block's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineRule {
    pub mark: MarkType,
    /// Start of the opening marker.
    pub start: u32,
    /// Length of each marker.
    pub marker: u32,
    /// The text between the markers.
    pub inner: String,
}

pub fn inline_rule(before: &str, typed: &str) -> Option<InlineRule> {
    let (marker, mark) = match typed {
        "*" if before.ends_with("**") => ("**", MarkType::Bold),
        "*" => ("*", MarkType::Italic),
        "`" => ("`", MarkType::Code),
        _ => return None,
    };
    let body = before.strip_suffix(marker)?;
    let open = body.rfind(marker)?;
    let inner = &body[open + marker.len()..];
    if inner.is_empty()
        || inner.starts_with(' ')
        || inner.ends_with(' ')
        || inner.contains(marker.chars().next()?) && marker != "`" && mark == MarkType::Italic
    {
        return None;
    }
    if mark == MarkType::Italic && (body[..open].ends_with('*') || inner.starts_with('*')) {
        return None;
    }
    let u16len = |s: &str| s.encode_utf16().count() as u32;
    Some(InlineRule {
        mark,
        start: u16len(&body[..open]),
        marker: u16len(marker),
        inner: inner.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_shortcuts() {
        assert_eq!(block_rule("# ", " "), Some((BlockRule::Heading(1), 2)));
        assert_eq!(block_rule("### ", " "), Some((BlockRule::Heading(3), 4)));
        assert_eq!(block_rule("###### ", " "), Some((BlockRule::Heading(6), 7)));
        assert_eq!(block_rule("####### ", " "), None);
        assert_eq!(block_rule("- ", " "), Some((BlockRule::BulletList, 2)));
        assert_eq!(block_rule("* ", " "), Some((BlockRule::BulletList, 2)));
        assert_eq!(block_rule("1. ", " "), Some((BlockRule::OrderedList(1), 3)));
        assert_eq!(
            block_rule("12. ", " "),
            Some((BlockRule::OrderedList(12), 4))
        );
        assert_eq!(block_rule("> ", " "), Some((BlockRule::Quote, 2)));
        assert_eq!(block_rule("``` ", " "), Some((BlockRule::CodeBlock, 4)));
        assert_eq!(block_rule("---", "-"), Some((BlockRule::Rule, 3)));
        assert_eq!(block_rule("a# ", " "), None);
        assert_eq!(block_rule("#", "#"), None);
        assert_eq!(block_rule("1.", "."), None);
    }

    #[test]
    fn inline_shortcuts() {
        let r = inline_rule("say **hi**", "*").unwrap();
        assert_eq!(
            (r.mark, r.start, r.marker, r.inner.as_str()),
            (MarkType::Bold, 4, 2, "hi")
        );
        let r = inline_rule("an *aside*", "*").unwrap();
        assert_eq!(
            (r.mark, r.start, r.marker, r.inner.as_str()),
            (MarkType::Italic, 3, 1, "aside")
        );
        let r = inline_rule("run `ls -l`", "`").unwrap();
        assert_eq!(
            (r.mark, r.start, r.inner.as_str()),
            (MarkType::Code, 4, "ls -l")
        );
        assert_eq!(
            inline_rule("2 * 3 *", "*"),
            None,
            "no text right after the opening marker"
        );
        assert_eq!(inline_rule("**", "*"), None);
        assert_eq!(inline_rule("a * b*", "*"), None);
        assert_eq!(inline_rule("plain", "x"), None);
        // "**bold*" typed so far: the second closing star is still to come.
        assert_eq!(inline_rule("**bold*", "*"), None);
    }
}
