//! Text diffing in UTF-16 code units (what the browser's selection offsets
//! and yrs' `OffsetKind::Utf16` count), and position mapping through deltas.

/// A single replacement: `delete` units at `at` replaced by `insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub at: u32,
    pub delete: u32,
    pub insert: String,
}

fn is_high_surrogate(u: u16) -> bool {
    (0xD800..0xDC00).contains(&u)
}

fn is_low_surrogate(u: u16) -> bool {
    (0xDC00..0xE000).contains(&u)
}

/// Lengths of the common prefix and suffix of `a` and `b` that do not
/// overlap and do not split a surrogate pair.
pub fn common_affixes(a: &[u16], b: &[u16]) -> (usize, usize) {
    let max = a.len().min(b.len());
    let mut prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    // Never end the prefix between the halves of a pair.
    if prefix > 0 && is_high_surrogate(a[prefix - 1]) && !(prefix == a.len() && prefix == b.len()) {
        prefix -= 1;
    }
    let rest = max - prefix;
    let mut suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(rest)
        .take_while(|(x, y)| x == y)
        .count();
    // Never start the suffix on the low half of a pair.
    if suffix > 0 && is_low_surrogate(a[a.len() - suffix]) {
        suffix -= 1;
    }
    (prefix, suffix)
}

/// The minimal single splice turning `old` into `new` (common prefix and suffix).
pub fn splice(old: &[u16], new: &[u16]) -> Option<Splice> {
    let (prefix, suffix) = common_affixes(old, new);
    let delete = old.len() - prefix - suffix;
    let inserted = &new[prefix..new.len() - suffix];
    if delete == 0 && inserted.is_empty() {
        return None;
    }
    Some(Splice {
        at: prefix as u32,
        delete: delete as u32,
        insert: String::from_utf16_lossy(inserted),
    })
}

/// How to change a text node's data from `old` to `new` in place, so that
/// the DOM moves boundary points (the selection) with the text instead of
/// dropping them to offset 0 as replacing the whole data does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEdit {
    /// `CharacterData.replaceData(at, delete, insert)`.
    Replace {
        at: u32,
        delete: u32,
        insert: String,
    },
    /// `insertData(at, insert)` then `deleteData(at + len(insert), delete)`:
    /// `insert` starts with the character before the change written again
    /// (and the second step deletes its old copy), so every boundary point
    /// at or after the change, and inside replaced text, ends up after the
    /// new text: where a typist's caret goes (a plain insertion at the
    /// caret leaves the caret before what it inserted).
    Rewrite {
        at: u32,
        insert: String,
        delete: u32,
    },
}

/// The in-place edit turning `old` into `new` (none when they are equal).
/// An insertion is made at the leftmost point the same text could have
/// been inserted at (typing `a` before `a` is ambiguous), so a caret at
/// any of those points moves by the inserted length.
pub fn node_edit(old: &[u16], new: &[u16]) -> Option<NodeEdit> {
    let s = splice(old, new)?;
    let (at, delete) = (s.at as usize, s.delete as usize);
    let inserted = new.len() + delete - old.len();
    let replace = NodeEdit::Replace {
        at: s.at,
        delete: s.delete,
        insert: s.insert,
    };
    if inserted == 0 {
        return Some(replace);
    }
    let mut first = at;
    if delete == 0 {
        while first > 0 && old[first - 1] == new[first - 1 + inserted] {
            first -= 1;
        }
        // Not between the halves of a pair, and not at 0 (nothing before it to write again).
        if first < at && is_low_surrogate(old[first]) {
            first += 1;
        }
        if first == 0 {
            first = at;
        }
    }
    // One whole character before the change is written again.
    let Some(mut from) = first.checked_sub(1) else {
        return Some(replace);
    };
    if from > 0 && is_low_surrogate(old[from]) && is_high_surrogate(old[from - 1]) {
        from -= 1;
    }
    let again = String::from_utf16(&new[from..first + inserted]).ok()?;
    Some(NodeEdit::Rewrite {
        at: from as u32,
        insert: again,
        delete: (first - from + delete) as u32,
    })
}

/// One step of a text change, in UTF-16 units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Retain(u32),
    Insert(String),
    Delete(u32),
}

pub fn utf16_len(s: &str) -> u32 {
    s.encode_utf16().count() as u32
}

/// Where `pos` ends up after `ops`. An insertion exactly at `pos` pushes it
/// right when `after_inserts` (a caret typed before the new text stays before it otherwise).
pub fn map_position(pos: u32, ops: &[Op], after_inserts: bool) -> u32 {
    let mut cursor = 0u32; // in the old text
    let mut shift: i64 = 0;
    for op in ops {
        match op {
            Op::Retain(n) => cursor += n,
            Op::Insert(s) => {
                if cursor < pos || (cursor == pos && after_inserts) {
                    shift += i64::from(utf16_len(s));
                }
            }
            Op::Delete(n) => {
                if cursor < pos {
                    let removed = (*n).min(pos - cursor);
                    shift -= i64::from(removed);
                    // Deleted text before pos: the old cursor advances past it.
                }
                cursor += n;
            }
        }
        if cursor > pos {
            break;
        }
    }
    (i64::from(pos) + shift).max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn apply(old: &str, s: &Splice) -> String {
        let mut v = u(old);
        let at = s.at as usize;
        v.splice(at..at + s.delete as usize, u(&s.insert));
        String::from_utf16(&v).unwrap()
    }

    #[test]
    fn typing_deleting_and_replacing() {
        let cases = [
            ("", "a"),
            ("hello", "hello!"),
            ("hello", "hllo"),
            ("hello world", "hello there world"),
            ("aaaa", "aaa"),
            ("abc", "xyz"),
            ("abc", ""),
            ("same", "same"),
            ("línea", "línea nueva"),
        ];
        for (old, new) in cases {
            match splice(&u(old), &u(new)) {
                None => assert_eq!(old, new),
                Some(s) => assert_eq!(apply(old, &s), new, "{old:?} -> {new:?}"),
            }
        }
        assert_eq!(
            splice(&u("aaaa"), &u("aaa")),
            Some(Splice {
                at: 3,
                delete: 1,
                insert: String::new()
            })
        );
    }

    #[test]
    fn surrogate_pairs_are_never_split() {
        // 😀 = D83D DE00, 😁 = D83D DE01: they share the high surrogate.
        let s = splice(&u("a😀b"), &u("a😁b")).unwrap();
        assert_eq!(s.at, 1);
        assert_eq!(s.delete, 2);
        assert_eq!(s.insert, "😁");
        let s = splice(&u("😀"), &u("😀😀")).unwrap();
        assert_eq!(apply("😀", &s), "😀😀");
        assert!(!s.insert.contains('\u{FFFD}'));
        let s = splice(&u("x😀"), &u("x😁")).unwrap();
        assert_eq!(s.insert, "😁");
    }

    /// Applies a [`NodeEdit`] the way the DOM does, moving `caret` by the
    /// live-range rules of `insertData`/`deleteData`/`replaceData`.
    fn apply_node(old: &str, edit: &NodeEdit, caret: u32) -> (String, u32) {
        let mut v = u(old);
        let replace = |v: &mut Vec<u16>, caret: u32, at: u32, count: u32, data: &str| {
            let data = u(data);
            v.splice(at as usize..(at + count) as usize, data.iter().copied());
            if caret > at && caret <= at + count {
                at
            } else if caret > at + count {
                caret - count + data.len() as u32
            } else {
                caret
            }
        };
        let caret = match edit {
            NodeEdit::Replace { at, delete, insert } => {
                replace(&mut v, caret, *at, *delete, insert)
            }
            NodeEdit::Rewrite { at, insert, delete } => {
                let c = replace(&mut v, caret, *at, 0, insert);
                replace(&mut v, c, at + utf16_len(insert), *delete, "")
            }
        };
        (String::from_utf16(&v).unwrap(), caret)
    }

    #[test]
    fn a_typed_character_leaves_the_caret_after_it() {
        // (old, caret, new, caret expected after)
        let cases = [
            ("hello world", 5, "hello, world", 6),
            ("hello", 5, "hello!", 6),
            // The same letter again: the greedy splice is after the caret.
            ("xaay", 2, "xaaay", 3),
            ("xaay", 1, "xaaay", 2),
            ("aaaa", 4, "aaaaa", 5),
            // Typing over a selection of "ll" (the caret the browser had is at its start).
            ("hello", 2, "heXo", 3),
            // A character after a pair is never split from it.
            ("a😀", 3, "a😀b", 4),
            ("😀", 2, "😀😀", 4),
        ];
        for (old, caret, new, expected) in cases {
            let edit = node_edit(&u(old), &u(new)).unwrap();
            let (text, at) = apply_node(old, &edit, caret);
            assert_eq!(text, new, "{old:?} -> {new:?} by {edit:?}");
            assert_eq!(at, expected, "{old:?} -> {new:?} by {edit:?}");
        }
    }

    #[test]
    fn deletes_and_far_carets_move_as_the_dom_moves_them() {
        // Backspace at 5 and Delete at 4 in "hello": the caret at 4.
        for (caret, new) in [(5, "hell"), (4, "hell")] {
            let edit = node_edit(&u("hello"), &u(new)).unwrap();
            assert_eq!(apply_node("hello", &edit, caret), (new.to_owned(), 4));
        }
        // A caret away from an insertion keeps its characters.
        let edit = node_edit(&u("hello world"), &u("hello big world")).unwrap();
        assert_eq!(apply_node("hello world", &edit, 1).1, 1);
        assert_eq!(apply_node("hello world", &edit, 8).1, 12);
        // At the very start there is nothing to write again: a plain insertion.
        let edit = node_edit(&u("bc"), &u("abc")).unwrap();
        assert!(matches!(
            edit,
            NodeEdit::Replace {
                at: 0,
                delete: 0,
                ..
            }
        ));
        assert_eq!(node_edit(&u("same"), &u("same")), None);
    }

    #[test]
    fn positions_follow_remote_changes() {
        // "hello world", caret at 6 (before "world").
        let ops = [Op::Retain(0), Op::Insert(">> ".into())];
        assert_eq!(map_position(6, &ops, true), 9);
        let ops = [Op::Retain(6), Op::Insert("big ".into())];
        assert_eq!(map_position(6, &ops, true), 10);
        assert_eq!(map_position(6, &ops, false), 6);
        let ops = [Op::Retain(2), Op::Delete(3)];
        assert_eq!(map_position(6, &ops, true), 3);
        let ops = [Op::Retain(4), Op::Delete(5)];
        assert_eq!(map_position(6, &ops, true), 4);
        let ops = [Op::Retain(8), Op::Delete(2)];
        assert_eq!(map_position(6, &ops, true), 6);
    }
}
