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
