//! Document names: the `{doc}` in `/ws/{doc}` and `/api/docs/{doc}`.
//!
//! A name is what a person typed or a link carries, so it may be any Unicode
//! text, but it is also a key on disk and a path segment, so a few things are
//! refused: the empty name, names over [`MAX_LEN`] bytes, control characters
//! (which include NUL, the storage key separator), `/` and `\`, and the
//! path-like names `.` and `..` (or any name containing `..`).

use std::fmt;
use thiserror::Error;

/// Longest accepted name, in UTF-8 bytes.
pub const MAX_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocNameError {
    #[error("document name is empty")]
    Empty,
    #[error("document name is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("document name contains a control character")]
    ControlCharacter,
    #[error("document name contains a slash or backslash")]
    Slash,
    #[error("document name contains \"..\"")]
    DotDot,
    #[error("document name cannot be \".\"")]
    Dot,
}

/// A validated document name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(String);

impl DocName {
    pub fn parse(name: &str) -> Result<Self, DocNameError> {
        if name.is_empty() {
            return Err(DocNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(DocNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(DocNameError::ControlCharacter);
        }
        if name.contains(['/', '\\']) {
            return Err(DocNameError::Slash);
        }
        if name.contains("..") {
            return Err(DocNameError::DotDot);
        }
        if name == "." {
            return Err(DocNameError::Dot);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DocName {
    type Err = DocNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in [
            "notes",
            "Q3 plan",
            "日本語のメモ",
            "a.b-c_d",
            "x".repeat(MAX_LEN).as_str(),
        ] {
            assert_eq!(DocName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn dangerous_names_are_refused() {
        assert_eq!(DocName::parse(""), Err(DocNameError::Empty));
        assert_eq!(
            DocName::parse(&"x".repeat(MAX_LEN + 1)),
            Err(DocNameError::TooLong)
        );
        assert_eq!(DocName::parse("a\0b"), Err(DocNameError::ControlCharacter));
        assert_eq!(
            DocName::parse("line\nbreak"),
            Err(DocNameError::ControlCharacter)
        );
        assert_eq!(DocName::parse("a/b"), Err(DocNameError::Slash));
        assert_eq!(DocName::parse("..\\x"), Err(DocNameError::Slash));
        assert_eq!(DocName::parse(".."), Err(DocNameError::DotDot));
        assert_eq!(DocName::parse("a..b"), Err(DocNameError::DotDot));
        assert_eq!(DocName::parse("."), Err(DocNameError::Dot));
    }
}
