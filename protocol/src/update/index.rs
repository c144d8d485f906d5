//! Where a block an update names is: in the document, in the update, or
//! nowhere. Shared by the completeness check and the nesting levels.

use std::collections::HashMap;

use yrs::{ClientID, StateVector};

use super::reader::Id;
use super::walk::{Block, Kind, Parsed};

/// Where a referenced block is.
pub(super) enum Found {
    Document,
    Update(usize),
    Missing,
}

/// The update's blocks per client in clock order, against what the
/// document has.
pub(super) struct Index<'a> {
    have: &'a StateVector,
    /// Per client, indices into `Parsed::blocks` of its non-skip blocks,
    /// by clock.
    by_client: HashMap<u64, Vec<usize>>,
    /// Per client, the clocks its blocks in the update start at, skips
    /// included, in order (for continuity).
    pub(super) starts: HashMap<u64, Vec<(u64, u64, bool)>>,
    /// Per client, the clock ranges its non-skip blocks cover, merged.
    pub(super) spans: HashMap<u64, Vec<(u64, u64)>>,
}

impl<'a> Index<'a> {
    pub(super) fn new(parsed: &Parsed, have: &'a StateVector) -> Self {
        let mut by_client: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut starts: HashMap<u64, Vec<(u64, u64, bool)>> = HashMap::new();
        for (i, block) in parsed.blocks.iter().enumerate() {
            if block.len == 0 {
                continue;
            }
            let skip = matches!(block.kind, Kind::Skip);
            starts
                .entry(block.client)
                .or_default()
                .push((block.clock, block.len, skip));
            if !skip {
                by_client.entry(block.client).or_default().push(i);
            }
        }
        for list in by_client.values_mut() {
            list.sort_by_key(|&i| parsed.blocks[i].clock);
        }
        for list in starts.values_mut() {
            list.sort_unstable();
        }
        let spans = by_client
            .iter()
            .map(|(&client, list)| {
                let mut merged: Vec<(u64, u64)> = Vec::new();
                for &b in list {
                    let (start, end) = (
                        parsed.blocks[b].clock,
                        parsed.blocks[b].clock + parsed.blocks[b].len,
                    );
                    match merged.last_mut() {
                        Some(last) if start <= last.1 => last.1 = last.1.max(end),
                        _ => merged.push((start, end)),
                    }
                }
                (client, merged)
            })
            .collect();
        Self {
            have,
            by_client,
            starts,
            spans,
        }
    }

    /// The clock up to which the document has `client`.
    pub(super) fn have(&self, client: u64) -> u64 {
        u64::from(self.have.get(&ClientID::new(client)))
    }

    /// Whether the document already has all of `block`. An empty block
    /// holds nothing (yrs drops it), so it counts as had.
    pub(super) fn known(&self, block: &Block) -> bool {
        block.len == 0 || block.clock + block.len <= self.have(block.client)
    }

    /// Where block `(client, clock)` is; `blocks` are the update's.
    pub(super) fn find(&self, blocks: &[Block], (client, clock): Id) -> Found {
        if clock < self.have(client) {
            return Found::Document;
        }
        let Some(list) = self.by_client.get(&client) else {
            return Found::Missing;
        };
        let i = list.partition_point(|&b| {
            let block = &blocks[b];
            block.clock + block.len <= clock
        });
        match list.get(i) {
            Some(&b) if blocks[b].clock <= clock => Found::Update(b),
            _ => Found::Missing,
        }
    }
}
