//! Values too big for one sled entry, each in a file of its own.
//!
//! A compacted state or an update over the store's value size is written
//! to `<data>/values/<doc dir>/<file id>` (the document's directory: 16 hex
//! digits of the FNV-1a hash of its name; the file: an id from sled's
//! `generate_id` in 16 hex digits, the update's own seq or a fresh one for
//! a state, so a file is never written twice and a load never reads one
//! being replaced) and read back with plain file I/O, so that once a document is
//! closed nothing of its big values stays in the process: sled keeps every
//! page a load reads in its page cache (bench/results/alloc-84a7421.md).
//!
//! A file is referred to by an entry of the global sled tree `values`
//! ([`ref_key`]: the document's name and the seq of the value in its log;
//! value: [`encode_ref`], the file's length and id),
//! written only once the file and its directory are durable; so a file
//! without an entry is an orphan (a write a crash interrupted, or a file
//! replaced or deleted whose unlink did not happen), which
//! [`ValueFiles::sweep`] removes when the store opens, and an entry without
//! its file is corruption. File ids are unique over the whole store, so two
//! documents whose names hash alike share a directory without clashing.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Seq;

/// Name of the folder in the data folder that holds the value files.
const VALUES_DIR: &str = "values";

/// The value files of one data folder.
pub(super) struct ValueFiles {
    /// `<data>/values`.
    root: PathBuf,
}

impl ValueFiles {
    /// Creates `<data>/values` if needed (durably: the data folder is
    /// synced when it is new).
    pub(super) fn open(data: &Path) -> io::Result<Self> {
        let root = data.join(VALUES_DIR);
        if create_dir(&root)? {
            sync_dir(data)?;
        }
        Ok(Self { root })
    }

    /// The folder of a document's value files.
    pub(super) fn dir(&self, doc: &str) -> PathBuf {
        self.root.join(format!("{:016x}", fnv1a(doc.as_bytes())))
    }

    /// Where the value file `file` of `doc` is stored.
    pub(super) fn path(&self, doc: &str, file: u64) -> PathBuf {
        self.dir(doc).join(format!("{file:016x}"))
    }

    /// Writes `value` as the new file `file` and syncs it. Its name is in
    /// the folder durably only once the caller synced the folder
    /// ([`sync_dir`] of [`Self::dir`]), before it refers to the file; a
    /// write a crash cut is an orphan.
    pub(super) fn write(&self, doc: &str, file: u64, value: &[u8]) -> io::Result<()> {
        let dir = self.dir(doc);
        if create_dir(&dir)? {
            sync_dir(&self.root)?;
        }
        // A left-over of a write retried after a failure is rewritten.
        let mut out = File::create(self.path(doc, file))?;
        out.write_all(value)?;
        out.sync_data()
    }

    /// The value file `file` of `doc`, which must be `len` bytes long.
    pub(super) fn read(&self, doc: &str, file: u64, len: u64) -> Result<Vec<u8>, String> {
        let path = self.path(doc, file);
        let value = fs::read(&path).map_err(|e| format!("value file {}: {e}", path.display()))?;
        if value.len() as u64 != len {
            return Err(format!(
                "value file {} has {} bytes instead of {len}",
                path.display(),
                value.len()
            ));
        }
        Ok(value)
    }

    /// Removes files no entry refers to any more (best effort: one that
    /// stays is removed by the next [`Self::sweep`]), and their folders
    /// once empty.
    pub(super) fn remove(&self, paths: &[PathBuf]) {
        for path in paths {
            if let Err(e) = fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a value file");
            }
        }
        let dirs: HashSet<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
        for dir in dirs {
            // Fails, as it should, while the folder holds other files.
            let _ = fs::remove_dir(dir);
        }
    }

    /// Removes every file under `values/` that is not in `expected`
    /// (orphans, see the module docs), and folders
    /// left empty. Returns how many files went.
    pub(super) fn sweep(&self, expected: &HashSet<PathBuf>) -> io::Result<usize> {
        let mut removed = 0;
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?.path();
            if !dir.is_dir() {
                fs::remove_file(&dir)?;
                removed += 1;
                continue;
            }
            let mut kept = 0;
            for file in fs::read_dir(&dir)? {
                let file = file?.path();
                if expected.contains(&file) {
                    kept += 1;
                } else {
                    tracing::info!(path = %file.display(), "removing a value file nothing refers to");
                    if file.is_dir() {
                        fs::remove_dir_all(&file)?;
                    } else {
                        fs::remove_file(&file)?;
                    }
                    removed += 1;
                }
            }
            if kept == 0 {
                fs::remove_dir(&dir)?;
            }
        }
        if removed > 0 {
            sync_dir(&self.root)?;
        }
        Ok(removed)
    }
}

/// Creates a folder; whether it is new.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes a folder's entries (files created, renamed or removed in it) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// 64-bit FNV-1a: a stable hash (the folder names must not change between
/// builds), short and cheap; clashes are harmless (see the module docs).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Key of a value file's entry in the `values` tree: the document name's
/// length (u32 big-endian), the name, the seq (big-endian), so that one
/// document's entries are contiguous and sorted by seq.
pub(super) fn ref_key(doc: &str, seq: Seq) -> Vec<u8> {
    let mut key = ref_prefix(doc);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix every entry of `doc` in the `values` tree starts with.
pub(super) fn ref_prefix(doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + doc.len() + 8);
    key.extend_from_slice(&(doc.len() as u32).to_be_bytes());
    key.extend_from_slice(doc.as_bytes());
    key
}

/// The document name and seq of a `values` key, or `None` if it does not
/// have that layout.
pub(super) fn decode_ref_key(key: &[u8]) -> Option<(&[u8], Seq)> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4 + len)?;
    let seq = key.get(4 + len..)?;
    Some((name, Seq::from_be_bytes(seq.try_into().ok()?)))
}

/// The value of a `values` entry: the file's length and id, little-endian.
pub(super) fn encode_ref(len: u64, file: u64) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&len.to_le_bytes());
    value[8..].copy_from_slice(&file.to_le_bytes());
    value
}

/// The length and file id of a `values` entry ([`encode_ref`]).
pub(super) fn decode_ref(value: &[u8]) -> Option<(u64, u64)> {
    let value: &[u8; 16] = value.try_into().ok()?;
    let word = |at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&value[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Some((word(0), word(8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_keys_round_trip_and_sort_by_seq_within_a_document() {
        let a = ref_key("doc", 5);
        let b = ref_key("doc", 300);
        assert!(a < b);
        assert!(a.starts_with(&ref_prefix("doc")));
        assert!(!ref_key("doc2", 1).starts_with(&ref_prefix("doc")));
        assert_eq!(decode_ref_key(&b), Some((&b"doc"[..], 300)));
        assert_eq!(decode_ref_key(&b[..b.len() - 1]), None);
        assert_eq!(decode_ref(&encode_ref(7, 1 << 40)), Some((7, 1 << 40)));
        assert_eq!(decode_ref(&[0; 8]), None);
    }

    #[test]
    fn the_folder_hash_is_stable() {
        // FNV-1a's published test vectors: a folder name never changes.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
