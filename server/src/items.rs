//! A walk over an update's structs before yrs sees it.
//!
//! yrs trusts an update more than a server can afford to:
//!
//! - it reserves memory for whatever count a few bytes declare (clients,
//!   structs, values), so a 40-byte update can ask for gigabytes;
//! - it decodes nested values recursively without a depth limit, so deep
//!   enough nesting overflows the stack and aborts the process (no panic to
//!   catch);
//! - it integrates items whose *origins* (the left and right neighbours
//!   recorded when an item was inserted) no honest client could have
//!   written: the same item on both sides, or an item of its own client
//!   that is not older. Where it puts such an item depends on how the
//!   blocks around it happen to be split, so the live document, its
//!   snapshot and the same document reloaded from storage can order their
//!   text differently (found by the `room_sequence` fuzz target).
//!
//! - it keeps parts of an update that refer to blocks it lacks *pending*,
//!   or integrates some of them behind the gap, and fuzzing found both
//!   wanting: pending parts it later cannot merge (and panics on), a heap
//!   use-after-free when it retries them, live documents that differ from
//!   the same log reloaded;
//! - it renders, deletes and drops nested shared types recursively, so a
//!   document nested a few thousand levels deep overflows the stack.
//!
//! So every update is walked first, following Yjs' update format v1
//! (`readClientsStructRefs` and `readDeleteSet` in yjs/src/utils/): per
//! client a struct count, the client and its first clock; per struct an
//! info byte, then a GC/skip length or an item's origins, parent and
//! content; then the delete set. Every count must fit in the bytes that
//! follow, values nest at most [`MAX_ANY_DEPTH`] deep, and origins must be
//! possible ([`check`]). Two content kinds where yrs and Yjs disagree on the
//! encoding (legacy JSON content, XML hooks) are refused rather than
//! guessed. Against a document ([`check_against`]), every block the update
//! refers to must be in the document or in the update (else it is
//! [`Refusal::Incomplete`] and the room asks for what it lacks), and shared
//! types may nest at most [`MAX_NESTING`] deep, which [`Levels`] tracks.

use std::collections::{BTreeMap, HashMap, HashSet};

use quire_protocol::lib0::{Cursor, DecodeError};
use yrs::{ClientID, StateVector};

/// One block ID: (client, clock).
type Id = (u64, u64);

/// How deep shared types may nest (a type inside a type inside …). yrs
/// renders, deletes and drops nested types recursively: about 5,000 levels
/// (a 70 KB update) overflow a 2 MiB stack when rendered as JSON, which
/// aborts the process. Rich-text editors nest a few dozen levels at most.
pub const MAX_NESTING: u32 = 100;

/// Why an update is not applied.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed, or something no honest client writes.
    Invalid(String),
    /// It refers to blocks the document does not have and it does not
    /// carry (it continues a client past a gap, names a neighbour or parent
    /// not here yet, deletes items not here yet). `carries`: what it holds,
    /// so that whoever dropped it can tell when the document has it all.
    Incomplete { carries: Footprint, reason: String },
}

/// What an update holds: per client the clock its blocks reach, and the
/// ranges it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// client → end clock
    pub reach: BTreeMap<u64, u64>,
    /// (client, start clock, end clock)
    pub deleted: Vec<(u64, u64, u64)>,
}

impl Footprint {
    fn of(parsed: &Parsed) -> Self {
        let mut footprint = Footprint::default();
        for block in parsed
            .blocks
            .iter()
            .filter(|b| b.len > 0 && !matches!(b.kind, Kind::Skip))
        {
            footprint.reach_to(block.client, block.clock.saturating_add(block.len));
        }
        footprint.deleted = parsed
            .deleted
            .iter()
            .map(|&(client, clock, len)| (client, clock, clock.saturating_add(len)))
            .collect();
        footprint
    }

    fn reach_to(&mut self, client: u64, clock: u64) {
        let end = self.reach.entry(client).or_default();
        *end = (*end).max(clock);
    }

    /// Both footprints together.
    pub fn merge(&mut self, other: Footprint) {
        for (client, clock) in other.reach {
            self.reach_to(client, clock);
        }
        self.deleted.extend(other.deleted);
    }
}

/// Walks `update` alone: refuses what is malformed or impossible whatever
/// the document (declared counts, nesting of values, content kinds,
/// origins). Applies nothing.
pub fn check(update: &[u8]) -> Result<(), String> {
    parse(update).map(drop).map_err(String::from)
}

/// Walks `update` against a document that has every client up to `have`
/// and whose blocks sit at `levels`: besides [`check`], every block it
/// refers to must be in the document or in the update, and no shared type
/// may end up nested deeper than [`MAX_NESTING`]. Returns the levels of the
/// blocks it adds, to record once it is applied.
pub fn check_against(
    update: &[u8],
    have: &StateVector,
    levels: &Levels,
) -> Result<Vec<Run>, Refusal> {
    let parsed = parse(update).map_err(|err| Refusal::Invalid(err.into()))?;
    let index = Index::new(&parsed, have);
    index.check_complete(&parsed)?;
    index.levels(&parsed, levels, true)
}

/// The nesting level of every block a document holds (1 for the blocks of
/// a root type, 2 inside a type held by a root, …; 0 for garbage-collected
/// blocks, which hold nothing), as runs per client: what [`check_against`]
/// needs to place a new block that names an old one as neighbour or parent.
#[derive(Debug, Default)]
pub struct Levels {
    /// Per client, runs `(start, end, level)` in clock order.
    clients: HashMap<u64, Vec<(u64, u64, u32)>>,
}

/// Blocks `start..end` of `client` sit at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub client: u64,
    pub start: u64,
    pub end: u64,
    pub level: u32,
}

impl Levels {
    /// The levels of a whole-document update (a document's state), without
    /// refusing anything: what a document loaded from storage starts with.
    /// Blocks it cannot place count as level 0.
    pub fn of_state(state: &[u8]) -> Self {
        let mut levels = Levels::default();
        if let Ok(parsed) = parse(state) {
            let nothing = StateVector::default();
            let index = Index::new(&parsed, &nothing);
            if let Ok(runs) = index.levels(&parsed, &Levels::default(), false) {
                levels.record(&runs);
            }
        }
        levels
    }

    pub fn level_of(&self, (client, clock): Id) -> Option<u32> {
        let runs = self.clients.get(&client)?;
        let i = runs.partition_point(|&(_, end, _)| end <= clock);
        runs.get(i)
            .filter(|&&(start, _, _)| start <= clock)
            .map(|&(_, _, level)| level)
    }

    /// Adds the runs of newly applied blocks (each starting where its
    /// client's known blocks end, as applied updates are complete).
    pub fn record(&mut self, runs: &[Run]) {
        for run in runs {
            let list = self.clients.entry(run.client).or_default();
            let start = list
                .last()
                .map_or(run.start, |&(_, end, _)| run.start.max(end));
            if start >= run.end {
                continue;
            }
            match list.last_mut() {
                Some(last) if last.1 == start && last.2 == run.level => last.1 = run.end,
                _ => list.push((start, run.end, run.level)),
            }
        }
    }
}

/// One struct of an update, as far as the walk needs it.
struct Block {
    client: u64,
    clock: u64,
    len: u64,
    kind: Kind,
}

enum Kind {
    Gc,
    Skip,
    Item {
        origin: Option<Id>,
        right: Option<Id>,
        parent: Parent,
    },
}

enum Parent {
    /// Given by the origins (the neighbours' container).
    Implied,
    Root,
    Nested(Id),
}

struct Parsed {
    blocks: Vec<Block>,
    /// (client, clock, length)
    deleted: Vec<(u64, u64, u64)>,
}

enum Walk {
    Refused(String),
    Malformed(DecodeError),
}

impl From<DecodeError> for Walk {
    fn from(err: DecodeError) -> Self {
        Walk::Malformed(err)
    }
}

impl From<Walk> for String {
    fn from(err: Walk) -> Self {
        match err {
            Walk::Refused(why) => why,
            Walk::Malformed(err) => format!("the update does not decode: {err}"),
        }
    }
}

/// The info byte's low five bits name the struct kind or item content.
const GC: u8 = 0;
const SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;

fn parse(update: &[u8]) -> Result<Parsed, Walk> {
    let mut cursor = Cursor::new(update);
    let mut blocks = Vec::new();
    let mut seen = HashSet::new();
    // Struct count, client and clock take a byte each at least.
    let clients = read_count(&mut cursor, "client count", 3)?;
    for _ in 0..clients {
        // An info byte and a length or content byte at least.
        let structs = read_count(&mut cursor, "struct count", 2)?;
        let client = cursor.read_var_uint("client")?;
        // yrs appends a repeated section, Yjs keeps the last: refuse
        // rather than pick (encoders write each client once).
        if !seen.insert(client) {
            return Err(Walk::Refused(format!(
                "client {client} appears twice in the update"
            )));
        }
        let mut clock = read_clock(&mut cursor, "clock")?;
        for _ in 0..structs {
            let info = cursor.read_u8("struct info")?;
            let (len, kind) = match info & 0x1f {
                GC => (read_clock(&mut cursor, "length")?, Kind::Gc),
                SKIP => (read_clock(&mut cursor, "length")?, Kind::Skip),
                content => {
                    let origin = (info & HAS_ORIGIN != 0)
                        .then(|| read_id(&mut cursor))
                        .transpose()?;
                    let right = (info & HAS_RIGHT_ORIGIN != 0)
                        .then(|| read_id(&mut cursor))
                        .transpose()?;
                    let mut parent = Parent::Implied;
                    if origin.is_none() && right.is_none() {
                        // The parent: a root's name or a nested type's ID.
                        // yrs reads the kind as a wrapping u32: only 0
                        // and 1 mean the same to both.
                        parent = match cursor.read_var_uint("parent kind")? {
                            1 => {
                                cursor.read_var_string("parent name")?;
                                Parent::Root
                            }
                            0 => Parent::Nested(read_id(&mut cursor)?),
                            other => {
                                return Err(Walk::Refused(format!(
                                    "the update does not decode: parent kind {other}"
                                )));
                            }
                        };
                        if info & HAS_PARENT_SUB != 0 {
                            cursor.read_var_string("map key")?;
                        }
                    }
                    let nested = match parent {
                        Parent::Nested(id) => Some(id),
                        _ => None,
                    };
                    check_item((client, clock), origin, right, nested)?;
                    let len = content_len(&mut cursor, content)?;
                    let kind = Kind::Item {
                        origin,
                        right,
                        parent,
                    };
                    (len, kind)
                }
            };
            blocks.push(Block {
                client,
                clock,
                len,
                kind,
            });
            clock += len;
            if clock > MAX_CLOCK {
                return Err(Walk::Refused(format!(
                    "client {client}'s blocks reach past clock {MAX_CLOCK}"
                )));
            }
        }
    }
    // The delete set: per client, its ranges (clock and length).
    let mut deleted = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..read_count(&mut cursor, "deleted client count", 2)? {
        let client = cursor.read_var_uint("deleted client")?;
        // yrs keeps only the last entry of a repeated client.
        if !seen.insert(client) {
            return Err(Walk::Refused(format!(
                "client {client} appears twice in the delete set"
            )));
        }
        for _ in 0..read_count(&mut cursor, "deleted range count", 2)? {
            let clock = read_clock(&mut cursor, "deleted clock")?;
            let len = read_clock(&mut cursor, "deleted length")?;
            if clock + len > MAX_CLOCK {
                return Err(Walk::Refused(format!(
                    "a deleted range of client {client} reaches past clock {MAX_CLOCK}"
                )));
            }
            deleted.push((client, clock, len));
        }
    }
    // Nothing follows the delete set (yrs would ignore it unread).
    cursor.finish()?;
    Ok(Parsed { blocks, deleted })
}

/// yrs keeps clocks and lengths in 32 bits (larger values wrap), so a
/// larger one would mean one thing here and another to yrs.
const MAX_CLOCK: u64 = u32::MAX as u64;

fn read_clock(cursor: &mut Cursor, what: &'static str) -> Result<u64, Walk> {
    let value = cursor.read_var_uint(what)?;
    if value > MAX_CLOCK {
        return Err(Walk::Refused(format!(
            "the update does not decode: {what} {value} is past {MAX_CLOCK}"
        )));
    }
    Ok(value)
}

/// Where a referenced block is.
enum Found {
    Document,
    Update(usize),
    Missing,
}

/// The update's blocks per client in clock order, against what the
/// document has.
struct Index<'a> {
    have: &'a StateVector,
    /// Per client, indices into `Parsed::blocks` of its non-skip blocks,
    /// by clock.
    by_client: HashMap<u64, Vec<usize>>,
    /// Per client, the clocks its blocks in the update start at, skips
    /// included, in order (for continuity).
    starts: HashMap<u64, Vec<(u64, u64, bool)>>,
    /// Per client, the clock ranges its non-skip blocks cover, merged.
    spans: HashMap<u64, Vec<(u64, u64)>>,
}

impl<'a> Index<'a> {
    fn new(parsed: &Parsed, have: &'a StateVector) -> Self {
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

    fn have(&self, client: u64) -> u64 {
        u64::from(self.have.get(&ClientID::new(client)))
    }

    /// Whether the document already has all of `block`. An empty block
    /// holds nothing (yrs drops it), so it counts as had.
    fn known(&self, block: &Block) -> bool {
        block.len == 0 || block.clock + block.len <= self.have(block.client)
    }

    fn find(&self, parsed: &Parsed, (client, clock): Id) -> Found {
        if clock < self.have(client) {
            return Found::Document;
        }
        let Some(list) = self.by_client.get(&client) else {
            return Found::Missing;
        };
        let i = list.partition_point(|&b| {
            let block = &parsed.blocks[b];
            block.clock + block.len <= clock
        });
        match list.get(i) {
            Some(&b) if parsed.blocks[b].clock <= clock => Found::Update(b),
            _ => Found::Missing,
        }
    }

    /// Refuses an update that refers to what neither it nor the document
    /// has, saying what first.
    fn check_complete(&self, parsed: &Parsed) -> Result<(), Refusal> {
        let mut first = None;
        let mut need = |why: String| {
            first.get_or_insert(why);
        };
        for (&client, list) in &self.starts {
            let mut reached = self.have(client);
            for &(clock, len, skip) in list {
                if clock > reached {
                    need(format!(
                        "the update continues client {client} at clock {clock}, \
                             but this document has that client only up to clock {reached}"
                    ));
                }
                if !skip {
                    reached = reached.max(clock + len);
                }
            }
        }
        for block in &parsed.blocks {
            // A block the document has is skipped by yrs whatever it names.
            if self.known(block) {
                continue;
            }
            let Kind::Item {
                origin,
                right,
                parent,
            } = &block.kind
            else {
                continue;
            };
            let nested = match parent {
                Parent::Nested(id) => Some(*id),
                _ => None,
            };
            for id in origin.iter().chain(right).chain(&nested) {
                if let Found::Missing = self.find(parsed, *id) {
                    need(format!(
                        "item {}#{} refers to {}#{}, which this document does not have",
                        block.client, block.clock, id.0, id.1
                    ));
                }
            }
        }
        for &(client, clock, len) in &parsed.deleted {
            let end = clock.saturating_add(len);
            if end <= self.have(client) {
                continue;
            }
            // The part past the document must be blocks of the update.
            let at = clock.max(self.have(client));
            let covered = self.spans.get(&client).is_some_and(|spans| {
                let i = spans.partition_point(|&(_, span_end)| span_end <= at);
                spans
                    .get(i)
                    .is_some_and(|&(start, span_end)| start <= at && span_end >= end)
            });
            if !covered {
                need(format!(
                    "the update deletes {client}#{at}, which this document does not have"
                ));
            }
        }
        match first {
            None => Ok(()),
            Some(reason) => Err(Refusal::Incomplete {
                carries: Footprint::of(parsed),
                reason,
            }),
        }
    }

    /// The level of every block of the update, resolved through its
    /// neighbours and parents (in the update, or at `known` in the
    /// document). With `strict`, a dependency cycle or nesting past
    /// [`MAX_NESTING`] refuses the update; otherwise what cannot be
    /// placed is level 0.
    fn levels(&self, parsed: &Parsed, known: &Levels, strict: bool) -> Result<Vec<Run>, Refusal> {
        const UNSEEN: u32 = u32::MAX;
        const RESOLVING: u32 = u32::MAX - 1;
        let blocks = &parsed.blocks;
        let mut level = vec![UNSEEN; blocks.len()];
        // What each block depends on: what it names, and (as yrs
        // integrates a client's blocks in clock order) the block before it.
        let refs = |b: &Block| -> Vec<Id> {
            let before = (b.clock > 0).then(|| (b.client, b.clock - 1));
            match &b.kind {
                Kind::Item {
                    origin,
                    right,
                    parent,
                } => {
                    let nested = match parent {
                        Parent::Nested(id) => Some(*id),
                        _ => None,
                    };
                    origin
                        .iter()
                        .chain(right)
                        .chain(&nested)
                        .chain(&before)
                        .copied()
                        .collect()
                }
                _ => before.into_iter().collect(),
            }
        };
        let mut stack = Vec::new();
        for root in 0..blocks.len() {
            if level[root] != UNSEEN || self.known(&blocks[root]) {
                continue;
            }
            level[root] = RESOLVING;
            stack.push(root);
            while let Some(&b) = stack.last() {
                let mut pending = None;
                for id in refs(&blocks[b]) {
                    if let Found::Update(d) = self.find(parsed, id) {
                        match level[d] {
                            UNSEEN => {
                                pending = Some(d);
                                break;
                            }
                            RESOLVING if d != b && strict => {
                                return Err(Refusal::Invalid(format!(
                                    "items {}#{} and {}#{} depend on each other",
                                    blocks[b].client,
                                    blocks[b].clock,
                                    blocks[d].client,
                                    blocks[d].clock
                                )));
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(d) = pending {
                    level[d] = RESOLVING;
                    stack.push(d);
                    continue;
                }
                let of = |id: Id| -> u32 {
                    match self.find(parsed, id) {
                        Found::Update(d) if level[d] < RESOLVING => level[d],
                        Found::Document => known.level_of(id).unwrap_or(0),
                        _ => 0,
                    }
                };
                let resolved = match &blocks[b].kind {
                    Kind::Gc | Kind::Skip => 0,
                    Kind::Item {
                        origin,
                        right,
                        parent,
                    } => match (origin, right, parent) {
                        (None, None, Parent::Root) => 1,
                        (None, None, Parent::Nested(p)) => match of(*p) {
                            0 => 0,
                            l => l + 1,
                        },
                        // In its neighbours' container. yrs takes the parent
                        // from a neighbour that is not collected, so a
                        // collected one (level 0) does not count.
                        _ => origin
                            .iter()
                            .chain(right)
                            .map(|&id| of(id))
                            .max()
                            .unwrap_or(0),
                    },
                };
                if strict && resolved > MAX_NESTING {
                    return Err(Refusal::Invalid(format!(
                        "the update nests shared types {resolved} deep; this server allows {MAX_NESTING}"
                    )));
                }
                level[b] = resolved;
                stack.pop();
            }
        }
        Ok(blocks
            .iter()
            .zip(level)
            .filter(|(b, _)| !matches!(b.kind, Kind::Skip))
            .filter_map(|(b, level)| {
                let start = b.clock.max(self.have(b.client));
                let end = b.clock + b.len;
                (start < end).then_some(Run {
                    client: b.client,
                    start,
                    end,
                    level,
                })
            })
            .collect())
    }
}

/// A count of entries that take at least `min_bytes` each: refused if the
/// bytes left cannot hold that many.
fn read_count(cursor: &mut Cursor, what: &'static str, min_bytes: u64) -> Result<u64, Walk> {
    let count = cursor.read_var_uint(what)?;
    if count > cursor.remaining() as u64 / min_bytes {
        return Err(Walk::Refused(format!(
            "the update declares {count} entries ({what}) in {} bytes",
            cursor.remaining()
        )));
    }
    Ok(count)
}

fn read_id(cursor: &mut Cursor) -> Result<Id, Walk> {
    Ok((
        cursor.read_var_uint("origin client")?,
        read_clock(cursor, "origin clock")?,
    ))
}

fn check_item(
    id: Id,
    origin: Option<Id>,
    right: Option<Id>,
    parent: Option<Id>,
) -> Result<(), Walk> {
    let (client, clock) = id;
    if let Some((c, k)) = origin
        && origin == right
    {
        return Err(Walk::Refused(format!(
            "item {client}#{clock} names {c}#{k} as both its left and right neighbour"
        )));
    }
    // What an item names existed before it: of its own client, only
    // older blocks.
    for (c, k) in origin.into_iter().chain(right).chain(parent) {
        if c == client && k >= clock {
            return Err(Walk::Refused(format!(
                "item {client}#{clock} names {c}#{k}, which is not older than it"
            )));
        }
    }
    Ok(())
}

/// Skips an item's content; returns how many clock ticks it spans.
fn content_len(cursor: &mut Cursor, content: u8) -> Result<u64, Walk> {
    Ok(match content {
        // Deleted: only a length.
        1 => read_clock(cursor, "deleted length")?,
        // Legacy JSON content: yrs 0.28 reads one string more than the
        // count says (Yjs has written `Any` content instead since v13).
        2 => {
            return Err(Walk::Refused(
                "legacy JSON item content is not accepted".into(),
            ));
        }
        // Binary, embed: one value.
        3 | 5 => {
            cursor.read_var_bytes("value")?;
            1
        }
        // String: as many ticks as UTF-16 code units.
        4 => cursor.read_var_string("string")?.encode_utf16().count() as u64,
        // Format: key and JSON value.
        6 => {
            cursor.read_var_string("format key")?;
            cursor.read_var_string("format value")?;
            1
        }
        // Type: its kind (one byte in yrs), and a tag name for XML
        // elements. XML hooks carry a name in Yjs but not in yrs.
        7 => {
            match cursor.read_u8("type kind")? {
                0..=2 | 4 | 6 | 9 | 15 => {}
                3 => {
                    cursor.read_var_string("tag name")?;
                }
                5 => return Err(Walk::Refused("XML hooks are not accepted".into())),
                other => {
                    return Err(Walk::Refused(format!(
                        "the update does not decode: unknown type kind {other}"
                    )));
                }
            }
            1
        }
        // Any: values in lib0's self-describing encoding.
        8 => {
            let n = read_count(cursor, "value count", 1)?;
            for _ in 0..n {
                skip_any(cursor, 0)?;
            }
            n
        }
        // Subdocument: GUID and options.
        9 => {
            cursor.read_var_string("subdocument guid")?;
            skip_any(cursor, 0)?;
            1
        }
        other => {
            return Err(Walk::Refused(format!(
                "the update does not decode: unknown item content kind {other}"
            )));
        }
    })
}

/// Deeper nesting than any document needs; bounds the recursion here and
/// keeps yrs' unbounded recursion from overflowing the stack.
const MAX_ANY_DEPTH: u32 = 64;

/// Skips one lib0 `Any` value (`readAny` in lib0/decoding.js).
fn skip_any(cursor: &mut Cursor, depth: u32) -> Result<(), Walk> {
    if depth > MAX_ANY_DEPTH {
        return Err(Walk::Refused("values nested too deeply".into()));
    }
    match cursor.read_u8("value tag")? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => {}
        // Signed varint: a continuation bit in every byte but the last.
        125 => while cursor.read_u8("integer")? & 0x80 != 0 {},
        124 => {
            cursor.read_bytes(4, "float32")?;
        }
        123 | 122 => {
            cursor.read_bytes(8, "float64")?;
        }
        119 | 116 => {
            cursor.read_var_bytes("string")?;
        }
        118 => {
            for _ in 0..read_count(cursor, "object size", 2)? {
                cursor.read_var_string("object key")?;
                skip_any(cursor, depth + 1)?;
            }
        }
        117 => {
            for _ in 0..read_count(cursor, "array size", 1)? {
                skip_any(cursor, depth + 1)?;
            }
        }
        other => {
            return Err(Walk::Refused(format!(
                "the update does not decode: unknown value tag {other}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};
    use yrs::updates::decoder::Decode;
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

    /// An array item in root "a" holding one `Any` value: `value` bytes.
    fn any_item(value: &[u8]) -> Vec<u8> {
        let mut update = vec![1, 1, 1, 0, 0x08, 1, 1, b'a', 1];
        update.extend_from_slice(value);
        update.push(0); // empty delete set
        update
    }

    /// yrs decodes nested values recursively; deep enough nesting
    /// overflowed the stack and aborted the whole server.
    #[test]
    fn values_nested_deeper_than_the_limit_are_refused_before_yrs() {
        let mut nested = Vec::new();
        for _ in 0..200_000 {
            nested.extend_from_slice(&[117, 1]); // an array of one element
        }
        nested.push(126); // null
        let update = any_item(&nested);
        let err = check(&update).unwrap_err();
        assert!(err.contains("nested too deeply"), "{err}");
        let mut document = crate::document::Document::new();
        assert!(document.apply(&update).is_err());
        // Shallow nesting is fine.
        check(&any_item(&[117, 1, 117, 1, 126])).unwrap();
    }

    /// yrs reserves memory for declared counts before reading them.
    #[test]
    fn counts_larger_than_the_bytes_are_refused() {
        // 2^30 values declared in a handful of bytes.
        let bomb = [
            1, 1, 1, 0, 0x08, 1, 1, b'a', 0x80, 0x80, 0x80, 0x80, 0x04, 126, 0,
        ];
        let err = check(&bomb).unwrap_err();
        assert!(err.contains("declares 1073741824 entries"), "{err}");
        // The same in the delete set.
        let bomb = [0, 0x80, 0x80, 0x80, 0x80, 0x04, 1, 1];
        assert!(check(&bomb).unwrap_err().contains("declares"));
    }

    /// `depth` arrays nested in `from` (or in root "a"), in one
    /// transaction: its update, and the innermost array.
    fn nest(doc: &Doc, from: Option<yrs::ArrayRef>, depth: usize) -> (Vec<u8>, yrs::ArrayRef) {
        let root = doc.get_or_insert_array("a");
        let mut txn = doc.transact_mut();
        let mut inner = from;
        for _ in 0..depth {
            inner = Some(match inner {
                Some(array) => array.insert(&mut txn, 0, ArrayPrelim::default()),
                None => root.insert(&mut txn, 0, ArrayPrelim::default()),
            });
        }
        (txn.encode_update_v1(), inner.expect("depth > 0"))
    }

    #[test]
    fn shared_types_nested_past_the_limit_are_refused() {
        let fine = nest(&Doc::with_client_id(1), None, 60).0;
        check_against(&fine, &StateVector::default(), &Levels::default()).unwrap();
        let deep = nest(&Doc::with_client_id(1), None, MAX_NESTING as usize + 1).0;
        match check_against(&deep, &StateVector::default(), &Levels::default()) {
            Err(Refusal::Invalid(why)) => assert!(why.contains("nests shared types"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Nesting is counted across updates, through neighbours as well as
    /// parents, and survives a reload from storage.
    #[test]
    fn nesting_is_counted_across_updates_and_reloads() {
        let writer = Doc::with_client_id(1);
        let (first, inner) = nest(&writer, None, 60);
        let mut document = Document::new();
        document.apply(&first).unwrap();
        // An array inside the innermost one (level 61), sent alone; then
        // 50 more levels inside a sibling of it, which names it only as
        // its neighbour.
        let (sibling, _) = nest(&writer, Some(inner.clone()), 1);
        document.apply(&sibling).unwrap();
        let second = {
            let mut txn = writer.transact_mut();
            let next = inner.insert(&mut txn, 1, ArrayPrelim::default());
            drop(txn);
            nest(&writer, Some(next), 50);
            writer
                .transact()
                .encode_diff_v1(&document.doc().transact().state_vector())
        };
        let err = document.apply(&second).unwrap_err();
        assert!(err.to_string().contains("nests shared types"), "{err}");
        let mut reloaded = Document::from_updates([first.as_slice(), sibling.as_slice()]).unwrap();
        let err = reloaded.apply(&second).unwrap_err();
        assert!(err.to_string().contains("nests shared types"), "{err}");
    }

    #[test]
    fn references_to_what_the_document_lacks_are_incomplete() {
        let writer = Doc::with_client_id(1);
        let text = writer.get_or_insert_text("t");
        let first = {
            let mut txn = writer.transact_mut();
            text.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        // Another client types between the two letters it has not seen
        // arrive at the server.
        let other = Doc::with_client_id(2);
        other
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&first).unwrap())
            .unwrap();
        let between = {
            let text = other.get_or_insert_text("t");
            let mut txn = other.transact_mut();
            text.insert(&mut txn, 1, "x");
            txn.encode_update_v1()
        };
        let deletion = {
            let text = other.get_or_insert_text("t");
            let mut txn = other.transact_mut();
            text.remove_range(&mut txn, 0, 1);
            txn.encode_update_v1()
        };
        let carried = [
            (&between, vec![(2, 1)], vec![]),
            (&deletion, vec![], vec![(1, 0, 1)]),
        ];
        for (update, reach, deleted) in carried {
            match check_against(update, &StateVector::default(), &Levels::default()) {
                Err(Refusal::Incomplete { carries, .. }) => {
                    let reach = reach.into_iter().collect();
                    assert_eq!(carries, Footprint { reach, deleted })
                }
                other => panic!("expected Incomplete, got {other:?}"),
            }
        }
        let mut document = Document::new();
        document.apply(&first).unwrap();
        document.apply(&between).unwrap();
        document.apply(&deletion).unwrap();
    }

    /// Found by `room_sequence`: a copy of a block the document has, with
    /// its origin forged to name a block nobody has, was taken for
    /// incomplete (and its message then acknowledged once the document
    /// "held" it). yrs skips blocks it has, whatever they name.
    #[test]
    fn blocks_the_document_has_are_not_checked_again() {
        let writer = Doc::with_client_id(100);
        let text = writer.get_or_insert_text("t");
        let typed = {
            let mut txn = writer.transact_mut();
            text.insert(&mut txn, 0, "abc");
            txn.encode_update_v1()
        };
        let mut document = Document::new();
        document.apply(&typed).unwrap();
        // 100#2, length 1, origin 31#11, right origin 100#1, "x".
        let forged: &[u8] = b"\x01\x01d\x02\xc4\x1f\x0bd\x01\x01x\0";
        let applied = document.apply(forged).unwrap();
        assert_eq!(applied.delta, None);
    }

    fn var(buf: &mut Vec<u8>, value: u64) {
        quire_protocol::lib0::write_var_uint(buf, value);
    }

    fn refused(update: &[u8]) -> String {
        match check_against(update, &StateVector::default(), &Levels::default()) {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
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

    /// Found in review: yrs keeps clocks and lengths in 32 bits; a GC
    /// block of length 2^32 + 5 was 5 long to yrs, so an item naming
    /// clock 100 of it passed as complete and went pending.
    #[test]
    fn regression_clocks_past_32_bits_meant_something_else_to_yrs() {
        let mut update = vec![1, 1, 1, 0, 0];
        var(&mut update, (1 << 32) + 5);
        update.push(0);
        assert!(refused(&update).contains("past 4294967295"));
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
    }

    /// Found in review: an item naming itself as parent, and items that
    /// depend on each other through their client's order, passed as
    /// complete and went pending in yrs.
    #[test]
    fn regression_items_depending_on_themselves() {
        // 5#0, an array whose parent is 5#0.
        assert!(refused(&[1, 1, 5, 0, 7, 0, 5, 0, 0, 0]).contains("not older than it"));
        // 1#0 after 2#0; 1#1 in root "t"; 2#0 after 1#1.
        let mut update = vec![2, 2, 1, 0, 0x84, 2, 0, 1, b'a', 0x04, 1, 1, b't', 1, b'b'];
        update.extend_from_slice(&[1, 2, 0, 0x84, 1, 1, 1, b'c', 0]);
        assert!(refused(&update).contains("depend on each other"));
    }

    /// Found in review: "beside a collected block an item is collected
    /// too" is how Yjs behaves, not yrs, which takes the parent from the
    /// other neighbour: an array next to a collected block and a live item
    /// counted as level 0, and 300 arrays nested in it were accepted.
    #[test]
    fn regression_nesting_laundered_through_a_collected_neighbour() {
        let writer = Doc::with_client_id(1);
        let root = writer.get_or_insert_array("a");
        let first = {
            let mut txn = writer.transact_mut();
            root.push_back(&mut txn, 1);
            txn.encode_update_v1()
        };
        let mut document = Document::new();
        document.apply(&first).unwrap();
        let depth = 300u64;
        let mut update = vec![1];
        var(&mut update, 2 + depth);
        update.extend_from_slice(&[9, 0, 0, 1]); // GC 9#0
        // 9#1: an array between 9#0 (collected) and 1#0 (live).
        update.extend_from_slice(&[0x80 | 0x40 | 7, 9, 0, 1, 0, 0]);
        for i in 0..depth {
            update.extend_from_slice(&[7, 0, 9]);
            var(&mut update, 1 + i);
            update.push(0);
        }
        update.push(0);
        let err = document.apply(&update).unwrap_err();
        assert!(err.to_string().contains("nests shared types"), "{err}");
    }

    /// Found by `room_sequence`: an empty item (which yrs drops) past a
    /// gap made `apply` call the update incomplete while `is_known` called
    /// it nothing new, so a read-only connection was acknowledged for a
    /// message the stored log "lacked".
    #[test]
    fn regression_an_empty_item_past_a_gap_holds_nothing() {
        // 101#2, empty string, right origin 116#101; an empty delete-set entry.
        let empty: &[u8] = b"\x01\x01e\x02Dte\0\x01a\0";
        let mut document = Document::new();
        assert!(document.is_known(empty));
        assert_eq!(document.apply(empty).unwrap().delta, None);
    }

    #[test]
    fn truncated_items_are_refused() {
        assert!(check(b"\x01\x01d\x06\x84d").is_err());
    }
}
