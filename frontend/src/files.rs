//! Files in and out of Quire: the kind of a file to import (by its
//! extension) and the document name it gets, and the file name a download
//! takes from the server's `Content-Disposition`. Pure functions, tested
//! natively.

use quire_protocol::doc_name::MAX_LEN;

/// What the import picker offers (the extensions [`ImportKind`] knows).
pub const ACCEPT: &str = ".md,.markdown,.html,.htm,.txt,.yjs";

/// How many names an import tries (`notes`, `notes-2`, … `notes-5`)
/// before it tells the user the names are taken.
pub const NAME_ATTEMPTS: u32 = 5;

/// The formats a file can be imported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Markdown,
    Html,
    Text,
    Yjs,
}

impl ImportKind {
    /// The kind a file name's extension names (any case), if one.
    pub fn of_file(file_name: &str) -> Option<Self> {
        let (_, ext) = file_name.rsplit_once('.')?;
        Some(match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Self::Markdown,
            "html" | "htm" => Self::Html,
            "txt" => Self::Text,
            "yjs" => Self::Yjs,
            _ => return None,
        })
    }

    /// The `Content-Type` the server reads this kind by.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Text => "text/plain",
            Self::Yjs => "application/octet-stream",
        }
    }
}

/// A valid document name made from a file's name: its stem (the part
/// before the last `.`), with slashes, backslashes and control characters
/// turned into `-`, runs of dots made single, spaces at the edges trimmed
/// and cut to what fits [`MAX_LEN`] with room for a `-N` suffix.
/// "imported" when nothing is left.
pub fn doc_name_from_file(file_name: &str) -> String {
    // A path from a drop or an old browser: only its last part.
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => base,
    };
    let mut name = String::with_capacity(stem.len());
    for c in stem.chars() {
        let c = if c.is_control() { '-' } else { c };
        if c == '.' && name.ends_with('.') {
            continue;
        }
        name.push(c);
    }
    let mut name = name.trim().trim_matches('.').trim().to_owned();
    let room = MAX_LEN - 4; // "-NNN"
    if name.len() > room {
        let mut cut = room;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name = name.trim_end().trim_end_matches('.').to_owned();
    }
    if name.is_empty() {
        "imported".to_owned()
    } else {
        name
    }
}

/// The name the `attempt`-th try of an import asks for (0: the name itself,
/// then `name-2`, `name-3`, …).
pub fn candidate(name: &str, attempt: u32) -> String {
    if attempt == 0 {
        name.to_owned()
    } else {
        format!("{name}-{}", attempt + 1)
    }
}

/// The file name a `Content-Disposition` header gives: `filename*`
/// (RFC 5987, UTF-8) when present and decodable, else `filename`; only
/// its last path segment, never empty.
pub fn disposition_filename(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(header) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim();
                if let Some((charset, rest)) = value.split_once('\'')
                    && charset.eq_ignore_ascii_case("utf-8")
                    && let Some((_lang, encoded)) = rest.split_once('\'')
                {
                    extended = percent_decode(encoded);
                }
            }
            "filename" => plain = Some(unquote(value.trim())),
            _ => {}
        }
    }
    let name = extended.or(plain)?;
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    (!last.is_empty() && last != "." && last != "..").then(|| last.to_owned())
}

/// `;`-separated parameters, a `;` inside a quoted string kept.
fn split_params(header: &str) -> Vec<&str> {
    let mut params = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in header.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                params.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    params.push(&header[start..]);
    params
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_protocol::DocName;

    #[test]
    fn the_kind_comes_from_the_extension_in_any_case() {
        assert_eq!(ImportKind::of_file("a.md"), Some(ImportKind::Markdown));
        assert_eq!(
            ImportKind::of_file("Notes.MARKDOWN"),
            Some(ImportKind::Markdown)
        );
        assert_eq!(ImportKind::of_file("page.htm"), Some(ImportKind::Html));
        assert_eq!(ImportKind::of_file("x.y.HTML"), Some(ImportKind::Html));
        assert_eq!(ImportKind::of_file("t.txt"), Some(ImportKind::Text));
        assert_eq!(ImportKind::of_file("s.yjs"), Some(ImportKind::Yjs));
        assert_eq!(ImportKind::of_file("photo.png"), None);
        assert_eq!(ImportKind::of_file("README"), None);
        assert_eq!(ImportKind::Yjs.content_type(), "application/octet-stream");
        for ext in ACCEPT.split(',') {
            assert!(ImportKind::of_file(&format!("f{ext}")).is_some(), "{ext}");
        }
    }

    #[test]
    fn a_file_name_becomes_a_valid_document_name() {
        let cases = [
            ("Meeting notes.md", "Meeting notes"),
            ("report.final.html", "report.final"),
            ("a..b...txt", "a.b"),
            ("C:\\Users\\me\\plan.md", "plan"),
            ("dir/sub/x.md", "x"),
            ("tab\there.txt", "tab-here"),
            (".md", "md"),
            ("...", "imported"),
            ("   .txt", "imported"),
            ("README", "README"),
            ("Überblick.md", "Überblick"),
        ];
        for (file, want) in cases {
            let got = doc_name_from_file(file);
            assert_eq!(got, want, "{file}");
            DocName::parse(&got).unwrap_or_else(|e| panic!("{file} → {got:?}: {e}"));
        }
    }

    #[test]
    fn a_long_file_name_is_cut_on_a_character_and_leaves_room_for_a_suffix() {
        let long = format!("{}.md", "é".repeat(300));
        let name = doc_name_from_file(&long);
        assert!(name.len() <= MAX_LEN - 4, "{}", name.len());
        let last = candidate(&name, NAME_ATTEMPTS - 1);
        DocName::parse(&last).expect("the last candidate is valid too");
    }

    #[test]
    fn candidates_count_from_two() {
        let names: Vec<String> = (0..NAME_ATTEMPTS).map(|n| candidate("notes", n)).collect();
        assert_eq!(names, ["notes", "notes-2", "notes-3", "notes-4", "notes-5"]);
    }

    #[test]
    fn the_download_name_prefers_the_exact_utf8_name() {
        assert_eq!(
            disposition_filename(
                "attachment; filename=\"_berblick.md\"; filename*=UTF-8''%C3%9Cberblick.md"
            )
            .as_deref(),
            Some("Überblick.md")
        );
        assert_eq!(
            disposition_filename("attachment; filename=\"a; b.txt\"").as_deref(),
            Some("a; b.txt")
        );
        assert_eq!(
            disposition_filename("attachment; filename=plain.json").as_deref(),
            Some("plain.json")
        );
        assert_eq!(
            disposition_filename("attachment; filename=\"q\\\"uote.md\"").as_deref(),
            Some("q\"uote.md")
        );
        // A bad extended value falls back to the plain one.
        assert_eq!(
            disposition_filename("attachment; filename=\"x.md\"; filename*=UTF-8''%ZZ").as_deref(),
            Some("x.md")
        );
        // Never a path, never empty.
        assert_eq!(
            disposition_filename("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(disposition_filename("attachment; filename=\"\""), None);
        assert_eq!(disposition_filename("attachment"), None);
    }
}
