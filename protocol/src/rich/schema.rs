//! The schema: Tiptap StarterKit v3's nodes and marks, as
//! `getSchema([StarterKit])` from `@tiptap/core` 3.31.3 builds them
//! (measured in Node, see `tests/compat`). Names, attrs and defaults must
//! stay exactly these: they are what a Tiptap app reads and validates.
//!
//! | node | content | attrs (default) |
//! |---|---|---|
//! | `doc` | `block+` | |
//! | `paragraph` | `inline*` | |
//! | `heading` | `inline*` | `level` (1), 1–6 |
//! | `blockquote` | `block+` | |
//! | `bulletList` | `listItem+` | |
//! | `orderedList` | `listItem+` | `start` (1), `type` (null) |
//! | `listItem` | `paragraph block*` | |
//! | `codeBlock` | `text*`, no marks | `language` (null) |
//! | `horizontalRule` | leaf block | |
//! | `hardBreak` | leaf inline | |
//!
//! Marks: `bold`, `italic`, `underline`, `strike`, `code` (excludes every
//! other mark), `link` (`href` null, `target` "_blank", `rel` "noopener
//! noreferrer nofollow", `class` null, `title` null).

use serde_json::{Map, Value};

/// A node type of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    Doc,
    Paragraph,
    Heading,
    Blockquote,
    BulletList,
    OrderedList,
    ListItem,
    CodeBlock,
    HorizontalRule,
    HardBreak,
    Text,
}

/// An attribute of a node or mark and its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttrSpec {
    pub name: &'static str,
    pub default: Default,
}

/// Defaults are JSON values; these are the kinds StarterKit uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Null,
    Int(i64),
    Str(&'static str),
}

impl Default {
    pub fn to_json(self) -> Value {
        match self {
            Default::Null => Value::Null,
            Default::Int(n) => Value::from(n),
            Default::Str(s) => Value::from(s),
        }
    }
}

const HEADING_ATTRS: &[AttrSpec] = &[AttrSpec {
    name: "level",
    default: Default::Int(1),
}];
const ORDERED_LIST_ATTRS: &[AttrSpec] = &[
    AttrSpec {
        name: "start",
        default: Default::Int(1),
    },
    AttrSpec {
        name: "type",
        default: Default::Null,
    },
];
const CODE_BLOCK_ATTRS: &[AttrSpec] = &[AttrSpec {
    name: "language",
    default: Default::Null,
}];
const LINK_ATTRS: &[AttrSpec] = &[
    AttrSpec {
        name: "href",
        default: Default::Null,
    },
    AttrSpec {
        name: "target",
        default: Default::Str("_blank"),
    },
    AttrSpec {
        name: "rel",
        default: Default::Str("noopener noreferrer nofollow"),
    },
    AttrSpec {
        name: "class",
        default: Default::Null,
    },
    AttrSpec {
        name: "title",
        default: Default::Null,
    },
];

/// Heading levels StarterKit allows.
pub const HEADING_LEVELS: std::ops::RangeInclusive<i64> = 1..=6;

impl NodeType {
    pub const ALL: [NodeType; 11] = [
        NodeType::Doc,
        NodeType::Paragraph,
        NodeType::Heading,
        NodeType::Blockquote,
        NodeType::BulletList,
        NodeType::OrderedList,
        NodeType::ListItem,
        NodeType::CodeBlock,
        NodeType::HorizontalRule,
        NodeType::HardBreak,
        NodeType::Text,
    ];

    /// The name in documents (the `Y.XmlElement`'s tag, the JSON `type`).
    pub fn name(self) -> &'static str {
        match self {
            NodeType::Doc => "doc",
            NodeType::Paragraph => "paragraph",
            NodeType::Heading => "heading",
            NodeType::Blockquote => "blockquote",
            NodeType::BulletList => "bulletList",
            NodeType::OrderedList => "orderedList",
            NodeType::ListItem => "listItem",
            NodeType::CodeBlock => "codeBlock",
            NodeType::HorizontalRule => "horizontalRule",
            NodeType::HardBreak => "hardBreak",
            NodeType::Text => "text",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn attrs(self) -> &'static [AttrSpec] {
        match self {
            NodeType::Heading => HEADING_ATTRS,
            NodeType::OrderedList => ORDERED_LIST_ATTRS,
            NodeType::CodeBlock => CODE_BLOCK_ATTRS,
            _ => &[],
        }
    }

    /// Members of the `block` group (what `doc`, `blockquote` and list items hold).
    pub fn is_block(self) -> bool {
        matches!(
            self,
            NodeType::Paragraph
                | NodeType::Heading
                | NodeType::Blockquote
                | NodeType::BulletList
                | NodeType::OrderedList
                | NodeType::CodeBlock
                | NodeType::HorizontalRule
        )
    }

    /// Members of the `inline` group.
    pub fn is_inline(self) -> bool {
        matches!(self, NodeType::Text | NodeType::HardBreak)
    }

    /// Blocks whose content is inline (text): where the caret lives.
    pub fn is_textblock(self) -> bool {
        matches!(
            self,
            NodeType::Paragraph | NodeType::Heading | NodeType::CodeBlock
        )
    }

    pub fn is_list(self) -> bool {
        matches!(self, NodeType::BulletList | NodeType::OrderedList)
    }

    /// Nodes without content.
    pub fn is_leaf(self) -> bool {
        matches!(
            self,
            NodeType::HorizontalRule | NodeType::HardBreak | NodeType::Text
        )
    }

    /// Whether text inside may carry marks (`codeBlock` has `marks: ""`).
    pub fn allows_marks(self) -> bool {
        self != NodeType::CodeBlock
    }

    /// Whether `children`, in this order, is valid content for this node.
    pub fn allows_content(self, children: &[NodeType]) -> bool {
        let all = |f: fn(NodeType) -> bool| children.iter().all(|&c| f(c));
        match self {
            NodeType::Doc | NodeType::Blockquote => !children.is_empty() && all(NodeType::is_block),
            NodeType::Paragraph | NodeType::Heading => all(NodeType::is_inline),
            NodeType::CodeBlock => all(|c| c == NodeType::Text),
            NodeType::BulletList | NodeType::OrderedList => {
                !children.is_empty() && all(|c| c == NodeType::ListItem)
            }
            NodeType::ListItem => {
                children.first() == Some(&NodeType::Paragraph)
                    && children[1..].iter().all(|c| c.is_block())
            }
            NodeType::HorizontalRule | NodeType::HardBreak | NodeType::Text => children.is_empty(),
        }
    }
}

/// A mark type of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkType {
    Link,
    Bold,
    Code,
    Italic,
    Strike,
    Underline,
}

impl MarkType {
    /// In the schema's order (ProseMirror sorts a node's marks by it).
    pub const ALL: [MarkType; 6] = [
        MarkType::Link,
        MarkType::Bold,
        MarkType::Code,
        MarkType::Italic,
        MarkType::Strike,
        MarkType::Underline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MarkType::Link => "link",
            MarkType::Bold => "bold",
            MarkType::Code => "code",
            MarkType::Italic => "italic",
            MarkType::Strike => "strike",
            MarkType::Underline => "underline",
        }
    }

    /// Reads a mark name, also in y-prosemirror's form for overlapping
    /// marks (`name--` followed by an 8-character hash).
    pub fn from_name(name: &str) -> Option<Self> {
        let base = strip_mark_hash(name);
        Self::ALL.into_iter().find(|t| t.name() == base)
    }

    pub fn attrs(self) -> &'static [AttrSpec] {
        match self {
            MarkType::Link => LINK_ATTRS,
            _ => &[],
        }
    }

    /// Whether this mark may not sit on the same text as `other`.
    pub fn excludes(self, other: MarkType) -> bool {
        self == other || self == MarkType::Code || other == MarkType::Code
    }

    /// The attrs object of a new mark of this type, with every default.
    pub fn default_attrs(self) -> Map<String, Value> {
        self.attrs()
            .iter()
            .map(|a| (a.name.to_owned(), a.default.to_json()))
            .collect()
    }
}

/// y-prosemirror names overlapping marks `name--XXXXXXXX`; the type is the part before.
pub fn strip_mark_hash(name: &str) -> &str {
    if let Some((base, hash)) = name.rsplit_once("--")
        && hash.len() == 8
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return base;
    }
    name
}

/// The scheme of a URL (`https` in `https://…`), lower-cased; `None` for a
/// relative reference (`/path`, `#frag`, `page.html`, `?q`, `//host/x`):
/// a colon counts only before the first `/`, `?` or `#`, as in RFC 3986.
fn url_scheme(href: &str) -> Option<String> {
    let head_end = href.find(['/', '?', '#']).unwrap_or(href.len());
    let colon = href[..head_end].find(':')?;
    Some(href[..colon].to_ascii_lowercase())
}

/// The `href` to put on an `<a>` (in the editor, on the clipboard and in
/// the server's HTML and Markdown exports), if the link may be followed:
/// `http:`, `https:` and `mailto:` URLs, and relative references (`/path`,
/// `#frag`, `page.html`), which stay on the site that shows them. Anything
/// else (`javascript:`, `data:`, `vbscript:`, unknown schemes) stays text,
/// and so does any href holding a control character:
/// browsers drop tabs and newlines from URLs, so `java\tscript:` would
/// otherwise become `javascript:` after this check.
pub fn clickable_href(href: &str) -> Option<&str> {
    let trimmed = href.trim();
    if trimmed.is_empty() || trimmed.chars().any(char::is_control) {
        return None;
    }
    match url_scheme(trimmed) {
        None => Some(trimmed),
        Some(scheme) => matches!(scheme.as_str(), "http" | "https" | "mailto").then_some(trimmed),
    }
}

/// What a person types into a link dialog, made into an `href`: a URL with
/// a clickable scheme, or a reference starting with `/`, `#`, `?` or `.`,
/// stays as typed; a bare `example.com` becomes `https://example.com`, an
/// address with `@` becomes `mailto:`; anything that is not clickable is
/// refused.
pub fn link_from_input(input: &str) -> Option<String> {
    let input = input.trim();
    if input.is_empty() || input.chars().any(char::is_whitespace) {
        return None;
    }
    // `example.com:8080` and `localhost:3000` are a host and port, not a scheme.
    let scheme = url_scheme(input).filter(|s| !s.contains('.') && s != "localhost");
    if input.starts_with(['/', '#', '?', '.']) || scheme.is_some() {
        // Either clickable as typed, or some other scheme (javascript:, data:, ...).
        return clickable_href(input).map(str::to_owned);
    }
    let candidate = if input.contains('@') && !input.contains('/') {
        format!("mailto:{input}")
    } else {
        format!("https://{input}")
    };
    clickable_href(&candidate).map(str::to_owned)
}

/// HTML elements that group blocks and have no node in the schema
/// (layout, sections, tables, definition lists, disclosure widgets). The
/// HTML importer (`html::from_html`) and the web app's paste both unwrap them:
/// their content becomes blocks of the enclosing block, in order, and a
/// paragraph never runs across their edges. One list for both, so a file
/// imported and the same HTML pasted give the same blocks.
pub const HTML_CONTAINERS: &[&str] = &[
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "figure",
    "figcaption",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "td",
    "th",
    "dl",
    "dt",
    "dd",
    "address",
    "details",
    "summary",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in NodeType::ALL {
            assert_eq!(NodeType::from_name(t.name()), Some(t));
        }
        for m in MarkType::ALL {
            assert_eq!(MarkType::from_name(m.name()), Some(m));
        }
        assert_eq!(MarkType::from_name("bold--AbCd12+/"), Some(MarkType::Bold));
        assert_eq!(MarkType::from_name("comment"), None);
        assert_eq!(NodeType::from_name("table"), None);
    }

    #[test]
    fn content_rules_follow_starter_kit() {
        use NodeType::*;
        assert!(Doc.allows_content(&[Paragraph]));
        assert!(!Doc.allows_content(&[]));
        assert!(!Doc.allows_content(&[ListItem]));
        assert!(ListItem.allows_content(&[Paragraph, BulletList]));
        assert!(!ListItem.allows_content(&[Heading]));
        assert!(!ListItem.allows_content(&[]));
        assert!(BulletList.allows_content(&[ListItem, ListItem]));
        assert!(!BulletList.allows_content(&[Paragraph]));
        assert!(Paragraph.allows_content(&[Text, HardBreak, Text]));
        assert!(!CodeBlock.allows_content(&[HardBreak]));
        assert!(Blockquote.allows_content(&[Paragraph, HorizontalRule]));
        assert!(!HorizontalRule.allows_content(&[Text]));
    }

    #[test]
    fn marks_and_links() {
        assert!(MarkType::Code.excludes(MarkType::Bold));
        assert!(MarkType::Italic.excludes(MarkType::Code));
        assert!(!MarkType::Bold.excludes(MarkType::Italic));
        let attrs = MarkType::Link.default_attrs();
        assert_eq!(attrs["target"], "_blank");
        assert_eq!(attrs["rel"], "noopener noreferrer nofollow");
        assert_eq!(attrs["href"], Value::Null);
        assert_eq!(attrs.len(), 5);
        assert_eq!(clickable_href(" https://a.b/c "), Some("https://a.b/c"));
        assert_eq!(clickable_href("mailto:x@y.z"), Some("mailto:x@y.z"));
        assert_eq!(clickable_href("JavaScript:alert(1)"), None);
        assert_eq!(clickable_href("data:text/html,x"), None);
        assert_eq!(clickable_href("/relative"), Some("/relative"));
        assert_eq!(clickable_href("#part-2"), Some("#part-2"));
        assert_eq!(clickable_href("page.html"), Some("page.html"));
        assert_eq!(clickable_href("../up?q=a:b"), Some("../up?q=a:b"));
        assert_eq!(clickable_href("//cdn.example/x"), Some("//cdn.example/x"));
        assert_eq!(clickable_href("java\tscript:alert(1)"), None);
        assert_eq!(clickable_href(" vbscript:msgbox"), None);
        assert_eq!(clickable_href(""), None);
        assert_eq!(
            link_from_input("example.com/a").as_deref(),
            Some("https://example.com/a")
        );
        assert_eq!(
            link_from_input("ann@example.com").as_deref(),
            Some("mailto:ann@example.com")
        );
        assert_eq!(link_from_input("http://x.y").as_deref(), Some("http://x.y"));
        assert_eq!(link_from_input("javascript:alert(1)"), None);
        assert_eq!(link_from_input(""), None);
        assert_eq!(link_from_input("/docs/a").as_deref(), Some("/docs/a"));
        assert_eq!(link_from_input("#top").as_deref(), Some("#top"));
        assert_eq!(link_from_input("data:text/html,x"), None);
        assert_eq!(
            link_from_input("example.com:8080/x").as_deref(),
            Some("https://example.com:8080/x")
        );
        assert_eq!(
            link_from_input("localhost:8080/x").as_deref(),
            Some("https://localhost:8080/x")
        );
    }
}
