//! Where a block an update names is: in the document, in the update, or
//! nowhere. Shared by the completeness check and the nesting levels.

use std::ops::Range;

use yrs::{ClientID, StateVector};

use super::reader::{Id, Walked};
use super::walk::{Block, Parsed, Refs, Section, item_refs};

/// Where a referenced block is.
pub(super) enum Found {
    Document,
    /// At this index of the update's blocks.
    Update(usize),
    Missing,
}

/// An update's blocks against what the document has.
pub(super) struct Index<'a> {
    update: &'a [u8],
    have: &'a StateVector,
    pub(super) sections: &'a [Section],
    pub(super) blocks: &'a [Block],
    /// Indices into `sections`, by client.
    by_client: Vec<u32>,
}

impl<'a> Index<'a> {
    pub(super) fn new(update: &'a [u8], parsed: &'a Parsed, have: &'a StateVector) -> Self {
        let mut by_client: Vec<u32> = (0..parsed.sections.len() as u32).collect();
        by_client.sort_unstable_by_key(|&s| parsed.sections[s as usize].client);
        Self {
            update,
            have,
            sections: &parsed.sections,
            blocks: &parsed.blocks,
            by_client,
        }
    }

    /// The clock up to which the document has `client`.
    pub(super) fn have(&self, client: u64) -> u64 {
        u64::from(self.have.get(&ClientID::new(client)))
    }

    /// The blocks of section `s`.
    pub(super) fn blocks_of(&self, s: usize) -> Range<usize> {
        let end = self
            .sections
            .get(s + 1)
            .map_or(self.blocks.len(), |next| next.first as usize);
        self.sections[s].first as usize..end
    }

    /// The section block `b` belongs to.
    pub(super) fn section_of(&self, b: usize) -> usize {
        self.sections.partition_point(|s| s.first as usize <= b) - 1
    }

    /// Whether the document already has all of block `b` of section `s`.
    pub(super) fn known(&self, s: usize, b: usize) -> bool {
        self.blocks[b].end() <= self.have(self.sections[s].client)
    }

    /// Block `b`'s origins and parent; `None` for a GC run.
    pub(super) fn refs(&self, b: usize) -> Walked<Option<Refs>> {
        item_refs(self.update, self.blocks[b].at)
    }

    fn section(&self, client: u64) -> Option<usize> {
        let i = self
            .by_client
            .partition_point(|&s| self.sections[s as usize].client < client);
        let &s = self.by_client.get(i)?;
        (self.sections[s as usize].client == client).then_some(s as usize)
    }

    /// The block of the update that holds `clock` of `client`, if any.
    pub(super) fn block_at(&self, (client, clock): Id) -> Option<usize> {
        let range = self.blocks_of(self.section(client)?);
        let blocks = &self.blocks[range.clone()];
        let i = blocks.partition_point(|block| block.end() <= clock);
        let block = blocks.get(i)?;
        (u64::from(block.clock) <= clock).then_some(range.start + i)
    }

    pub(super) fn find(&self, id: Id) -> Found {
        if id.1 < self.have(id.0) {
            return Found::Document;
        }
        match self.block_at(id) {
            Some(b) => Found::Update(b),
            None => Found::Missing,
        }
    }
}
