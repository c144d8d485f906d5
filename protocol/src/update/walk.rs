//! The walk over an update's bytes, following Yjs' update format v1
//! (`readClientsStructRefs` and `readDeleteSet` in yjs/src/utils/): per
//! client a struct count, the client and its first clock; per struct an
//! info byte, then a GC or skip length, or an item's origins, parent and
//! content; then the delete set, and nothing after it. It refuses what no
//! honest client writes and what yrs would read differently from the walk
//! or from Yjs.
//!
//! What it keeps is small, so that its memory stays a small multiple of
//! the update's size whatever the update holds (an earlier version kept
//! about 100 bytes per 2-byte struct): 12 bytes per item and per run of GC
//! structs, 16 per client section, nothing per skip, empty struct or
//! deleted range. An item's origins and parent are read again from the
//! bytes when needed ([`item_refs`]). It walks twice: a survey that
//! allocates only the client lists it needs to refuse a client named
//! twice, then a pass that records into vectors of exactly the size the
//! survey counted.

use super::content::content_len;
use super::format::*;
use super::reader::{Id, MAX_CLOCK, Reader, Walked, refuse};

/// An item, or a run of consecutive GC structs (which mean the same as one
/// GC struct covering them all), of one client section.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    pub(super) clock: u32,
    pub(super) len: u32,
    /// Where its info byte is in the update.
    pub(super) at: u32,
}

impl Block {
    pub(super) fn end(&self) -> u64 {
        u64::from(self.clock) + u64::from(self.len)
    }
}

/// A client section that spans any clocks (holds a struct that is not
/// empty).
#[derive(Debug, Clone, Copy)]
pub(super) struct Section {
    pub(super) client: u64,
    /// Its blocks are `Parsed::blocks[first..]` up to the next section's.
    pub(super) first: u32,
    /// Where the update goes on with this client after clocks it does not
    /// carry: the clock of the last struct that follows a skip, or else of
    /// its first struct. Unless the document has the client up to here,
    /// the update is incomplete.
    pub(super) continues_at: u32,
}

/// An update as the walk recorded it.
pub(super) struct Parsed {
    /// In the update's order.
    pub(super) sections: Vec<Section>,
    pub(super) blocks: Vec<Block>,
    /// Where the delete set starts in the update, and how many ranges it
    /// lists (it is read again from the bytes where needed).
    pub(super) delete_set_at: usize,
    pub(super) deleted_ranges: usize,
}

/// An item's origins and parent, as its bytes say.
pub(super) struct Refs {
    pub(super) origin: Option<Id>,
    pub(super) right: Option<Id>,
    pub(super) parent: Parent,
}

pub(super) enum Parent {
    /// Given by the origins (the neighbours' container).
    Implied,
    Root,
    Nested(Id),
}

impl Parent {
    pub(super) fn id(&self) -> Option<Id> {
        match self {
            Parent::Nested(id) => Some(*id),
            _ => None,
        }
    }
}

/// Walks `update` without recording it: every rule but no records.
pub(super) fn check(update: &[u8]) -> Walked<()> {
    survey(update).map(drop)
}

/// Walks `update` and records its sections and blocks.
pub(super) fn parse(update: &[u8]) -> Walked<Parsed> {
    let counts = survey(update)?;
    let mut record = Record {
        sections: Vec::with_capacity(counts.sections),
        blocks: Vec::with_capacity(counts.blocks),
        client: 0,
        first: 0,
    };
    let delete_set_at = walk(update, &mut record)?;
    debug_assert_eq!(record.blocks.len(), counts.blocks);
    Ok(Parsed {
        sections: record.sections,
        blocks: record.blocks,
        delete_set_at,
        deleted_ranges: counts.deleted_ranges,
    })
}

/// The origins and parent of the item whose info byte is at `at`, or
/// `None` for a GC run. The walk has read these bytes before.
pub(super) fn item_refs(update: &[u8], at: u32) -> Walked<Option<Refs>> {
    let mut reader = Reader::at(update, at as usize);
    let info = reader.u8("struct info")?;
    if info & STRUCT_KIND_BITS == GC {
        return Ok(None);
    }
    item_header(&mut reader, info).map(Some)
}

/// What the walk hands over as it reads.
trait Sink {
    /// The update has `count` client sections (each takes 3 bytes at least).
    fn clients(&mut self, count: u64);
    fn section(&mut self, client: u64);
    fn block(&mut self, block: Block);
    /// The section ends; `continues_at` is `None` if it spans no clocks.
    fn section_end(&mut self, continues_at: Option<u32>);
    /// The delete set names `count` clients (2 bytes each at least).
    fn deleted_clients(&mut self, count: u64);
    fn deleted_client(&mut self, client: u64, ranges: u64);
}

/// The first pass: what the second will record, and every client named,
/// to refuse one named twice.
#[derive(Default)]
struct Survey {
    sections: usize,
    blocks: usize,
    deleted_ranges: usize,
    clients: Vec<u64>,
    deleted_clients: Vec<u64>,
}

impl Sink for Survey {
    fn clients(&mut self, count: u64) {
        self.clients.reserve_exact(count as usize);
    }
    fn section(&mut self, client: u64) {
        self.clients.push(client);
    }
    fn block(&mut self, _: Block) {
        self.blocks += 1;
    }
    fn section_end(&mut self, continues_at: Option<u32>) {
        self.sections += usize::from(continues_at.is_some());
    }
    fn deleted_clients(&mut self, count: u64) {
        self.deleted_clients.reserve_exact(count as usize);
    }
    fn deleted_client(&mut self, client: u64, ranges: u64) {
        self.deleted_clients.push(client);
        self.deleted_ranges += ranges as usize;
    }
}

fn survey(update: &[u8]) -> Walked<Survey> {
    // Offsets into the update are kept in 32 bits.
    if u32::try_from(update.len()).is_err() {
        return refuse("the update is larger than 4 GiB");
    }
    let mut survey = Survey::default();
    walk(update, &mut survey)?;
    // yrs appends a repeated section, Yjs keeps the last: refuse rather
    // than pick (encoders write each client once). In the delete set yrs
    // keeps only the last entry of a repeated client.
    distinct(&mut survey.clients, "the update")?;
    distinct(&mut survey.deleted_clients, "the delete set")?;
    survey.clients = Vec::new();
    survey.deleted_clients = Vec::new();
    Ok(survey)
}

fn distinct(clients: &mut [u64], place: &str) -> Walked<()> {
    clients.sort_unstable();
    match clients.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => refuse(format!("client {} appears twice in {place}", pair[0])),
        None => Ok(()),
    }
}

/// The second pass: sections and blocks.
struct Record {
    sections: Vec<Section>,
    blocks: Vec<Block>,
    /// The section being read: its client and first block.
    client: u64,
    first: u32,
}

impl Sink for Record {
    fn clients(&mut self, _: u64) {}
    fn section(&mut self, client: u64) {
        self.client = client;
        self.first = self.blocks.len() as u32;
    }
    fn block(&mut self, block: Block) {
        self.blocks.push(block);
    }
    fn section_end(&mut self, continues_at: Option<u32>) {
        if let Some(continues_at) = continues_at {
            self.sections.push(Section {
                client: self.client,
                first: self.first,
                continues_at,
            });
        }
    }
    fn deleted_clients(&mut self, _: u64) {}
    fn deleted_client(&mut self, _: u64, _: u64) {}
}

/// Walks the whole update, handing what it reads to `sink`; returns where
/// the delete set starts.
fn walk(update: &[u8], sink: &mut impl Sink) -> Walked<usize> {
    let mut reader = Reader::new(update);
    // Struct count, client and clock take a byte each at least.
    let clients = reader.count("client count", 3)?;
    sink.clients(clients);
    for _ in 0..clients {
        // An info byte and a length or content byte at least.
        let structs = reader.count("struct count", 2)?;
        let client = reader.var_uint("client")?;
        sink.section(client);
        let continues_at = walk_section(&mut reader, sink, client, structs)?;
        sink.section_end(continues_at);
    }
    let delete_set_at = reader.offset();
    // The delete set: per client, its ranges (clock and length).
    let clients = reader.count("deleted client count", 2)?;
    sink.deleted_clients(clients);
    for _ in 0..clients {
        let client = reader.var_uint("deleted client")?;
        let ranges = reader.count("deleted range count", 2)?;
        sink.deleted_client(client, ranges);
        for _ in 0..ranges {
            read_deleted_range(&mut reader, client)?;
        }
    }
    reader.finish()?;
    Ok(delete_set_at)
}

/// One deleted range: `(clock, length)`.
pub(super) fn read_deleted_range(reader: &mut Reader, client: u64) -> Walked<(u64, u64)> {
    let clock = reader.clock("deleted clock")?;
    let len = reader.clock("deleted length")?;
    if clock + len > MAX_CLOCK {
        return refuse(format!(
            "a deleted range of client {client} reaches past clock {MAX_CLOCK}"
        ));
    }
    Ok((clock, len))
}

/// The structs of one client section; returns where it continues after
/// clocks it does not carry (see [`Section::continues_at`]).
fn walk_section(
    reader: &mut Reader,
    sink: &mut impl Sink,
    client: u64,
    structs: u64,
) -> Walked<Option<u32>> {
    let mut clock = reader.clock("clock")?;
    let mut continues_at = None;
    let mut after_skip = false;
    // A run of GC structs not handed over yet.
    let mut gc_run: Option<Block> = None;
    for _ in 0..structs {
        let at = reader.offset() as u32;
        let info = reader.u8("struct info")?;
        let kind = info & STRUCT_KIND_BITS;
        let len = match kind {
            GC | SKIP => reader.clock("length")?,
            content => {
                let refs = item_header(reader, info)?;
                check_origins((client, clock), &refs)?;
                content_len(reader, content)?
            }
        };
        // Empty structs hold nothing (yrs drops them).
        if len > 0 {
            if continues_at.is_none() || after_skip {
                continues_at = Some(clock as u32);
            }
            after_skip = kind == SKIP;
            let block = Block {
                clock: clock as u32,
                len: len as u32,
                at,
            };
            match (kind, &mut gc_run) {
                (GC, Some(run)) => run.len += block.len,
                _ => {
                    if let Some(run) = gc_run.take() {
                        sink.block(run);
                    }
                    match kind {
                        GC => gc_run = Some(block),
                        SKIP => {}
                        _ => sink.block(block),
                    }
                }
            }
        }
        clock += len;
        if clock > MAX_CLOCK {
            return refuse(format!(
                "client {client}'s blocks reach past clock {MAX_CLOCK}"
            ));
        }
    }
    if let Some(run) = gc_run {
        sink.block(run);
    }
    Ok(continues_at)
}

/// An item's origins and, when it has neither, its parent (and map key).
fn item_header(reader: &mut Reader, info: u8) -> Walked<Refs> {
    let origin = (info & HAS_ORIGIN != 0).then(|| reader.id()).transpose()?;
    let right = (info & HAS_RIGHT_ORIGIN != 0)
        .then(|| reader.id())
        .transpose()?;
    let mut parent = Parent::Implied;
    if origin.is_none() && right.is_none() {
        parent = match reader.var_uint("parent kind")? {
            PARENT_ROOT => {
                reader.var_string("parent name")?;
                Parent::Root
            }
            PARENT_ID => Parent::Nested(reader.id()?),
            other => return refuse(format!("the update does not decode: parent kind {other}")),
        };
        if info & HAS_PARENT_SUB != 0 {
            reader.var_string("map key")?;
        }
    }
    Ok(Refs {
        origin,
        right,
        parent,
    })
}

/// Refuses origins no honest client could have written: the same item on
/// both sides, or an item of its own client that is not older. yrs places
/// such an item depending on how the blocks around it happen to be split,
/// so the live document and the same document reloaded would differ.
fn check_origins(id: Id, refs: &Refs) -> Walked<()> {
    let (client, clock) = id;
    if let Some((c, k)) = refs.origin
        && refs.origin == refs.right
    {
        return refuse(format!(
            "item {client}#{clock} names {c}#{k} as both its left and right neighbour"
        ));
    }
    // What an item names existed before it: of its own client, only
    // older blocks.
    let named = refs.origin.into_iter().chain(refs.right);
    for (c, k) in named.chain(refs.parent.id()) {
        if c == client && k >= clock {
            return refuse(format!(
                "item {client}#{clock} names {c}#{k}, which is not older than it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::refused;
    use super::*;
    use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};
    use yrs::{
        Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact,
        XmlFragment,
    };

    /// Every kind of content yrs writes walks cleanly.
    #[test]
    fn what_yrs_writes_passes() {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("content");
        let map = doc.get_or_insert_map("meta");
        let array = doc.get_or_insert_array("list");
        let xml = doc.get_or_insert_xml_fragment("xml");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "héllo 😀 world");
            text.insert(&mut txn, 3, "in the middle");
            text.remove_range(&mut txn, 1, 4);
            text.format(&mut txn, 0, 3, [("bold".into(), Any::Bool(true))].into());
            text.insert_embed(&mut txn, 2, Any::from("image"));
            map.insert(&mut txn, "n", 1.5);
            map.insert(&mut txn, "i", -42i64);
            map.insert(&mut txn, "big", i64::MAX);
            map.insert(&mut txn, "s", "string");
            map.insert(&mut txn, "b", Any::from(vec![1u8, 2, 3]));
            map.insert(&mut txn, "null", Any::Null);
            map.insert(
                &mut txn,
                "nested",
                MapPrelim::from([("k".to_owned(), Any::from(vec![Any::from(1), Any::Null]))]),
            );
            array.push_back(&mut txn, ArrayPrelim::from([1, 2, 3]));
            array.insert(&mut txn, 0, true);
            array.insert(&mut txn, 1, "x");
            array.remove_range(&mut txn, 0, 1);
            let p = xml.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, XmlTextPrelim::new("para"));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        check(&update).unwrap();
    }

    /// An item naming the same neighbour on both sides (the fuzz input).
    #[test]
    fn same_item_on_both_sides_is_refused() {
        let forged: &[u8] = b"\x01\x01d\x06\xc4d\x05d\x05\t\xc3\xa9\xf0\x9f\x98\x80abc\0";
        let err = check(forged).unwrap_err();
        assert!(err.contains("both its left and right neighbour"), "{err}");
    }

    #[test]
    fn a_later_item_of_the_same_client_as_origin_is_refused() {
        // Client 100's item at clock 6 whose left origin is 100#9.
        let forged: &[u8] = b"\x01\x01d\x06\x84d\x09\x01x\0";
        let err = check(forged).unwrap_err();
        assert!(err.contains("not older than it"), "{err}");
        // The same item after 100#5 is fine.
        check(b"\x01\x01d\x06\x84d\x05\x01x\0").unwrap();
    }

    /// Found in review: yrs reads the parent kind as a wrapping u32, so
    /// 2^32 + 1 was a nested parent ID to the walk and a root name to yrs;
    /// from there the two read different bytes, and yrs met a value nested
    /// 200,000 deep the walk never saw (a stack overflow, aborting the
    /// server).
    #[test]
    fn regression_parent_kind_read_differently_from_yrs() {
        let mut update = vec![1, 1, 1, 0, 0x08];
        update.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x10]); // 2^32 + 1
        update.extend_from_slice(&[2, 0, 1, 116, 117, 1]);
        update.extend(std::iter::repeat_n([117, 1], 58).flatten());
        update.extend(std::iter::repeat_n([118, 1, 0], 1000).flatten());
        update.push(126);
        assert!(refused(&update).contains("parent kind"));
        // Bytes after the delete set are refused too.
        let mut trailing = vec![1, 1, 1, 0, 0x04, 1, 1, b't', 1, b'a', 0];
        check(&trailing).unwrap();
        trailing.push(0);
        assert!(check(&trailing).unwrap_err().contains("trailing"));
    }

    /// Found in review: yrs appends a repeated client section (Yjs keeps
    /// the last); two sections of client 5 at clock 0 made two blocks
    /// share one ID.
    #[test]
    fn regression_a_client_twice_in_one_update() {
        let mut update = vec![2];
        for text in [b"ab", b"xy"] {
            update.extend_from_slice(&[1, 5, 0, 0x04, 1, 1, b't', 2]);
            update.extend_from_slice(text);
        }
        update.push(0);
        assert!(refused(&update).contains("appears twice"));
        assert!(refused(&[0, 2, 5, 1, 0, 1, 5, 1, 2, 1]).contains("twice in the delete set"));
        // Empty sections count too: in Yjs the second would replace the first.
        assert!(refused(&[2, 1, 5, 0, 0, 1, 0, 5, 0, 0]).contains("appears twice"));
    }

    #[test]
    fn truncated_items_are_refused() {
        assert!(check(b"\x01\x01d\x06\x84d").is_err());
    }

    /// GC structs in a row are one block; skips and empty structs are not
    /// kept, but where the update continues after a skip is.
    #[test]
    fn the_records_are_runs_of_gc_items_and_where_skips_end() {
        // Client 4 from clock 2: GC 1, GC 2, an empty item, GC 1, skip 3,
        // an item of 1 (deleted content) in root "t", skip 2.
        let update = [
            1, 7, 4, 2, 0, 1, 0, 2, 0x04, 1, 1, b't', 0, 0, 1, 10, 3, 0x01, 1, 1, b't', 1, 10, 2, 0,
        ];
        let parsed = parse(&update).unwrap();
        let blocks: Vec<(u32, u32)> = parsed.blocks.iter().map(|b| (b.clock, b.len)).collect();
        assert_eq!(blocks, [(2, 4), (9, 1)]);
        assert_eq!(parsed.sections.len(), 1);
        // The item after the first skip; the trailing skip follows an item.
        assert_eq!(parsed.sections[0].continues_at, 9);
        assert!(item_refs(&update, parsed.blocks[0].at).unwrap().is_none());
        let refs = item_refs(&update, parsed.blocks[1].at).unwrap().unwrap();
        assert!(matches!(refs.parent, Parent::Root));
    }
}
