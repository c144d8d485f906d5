//! The presence table of one room, with the merge rules of y-protocols'
//! `awareness.js`, minus the local client (a server has none).
//!
//! Wire format of an awareness update:
//!
//! ```text
//! varUint(n) then n times: varUint(clientID) varUint(clock) varString(JSON state)
//! ```
//!
//! A state of `null` means "this client left". An entry is accepted when its
//! clock is newer than the one we know, or equal with a `null` state for a
//! client we still list (that is how a removal by a third party, such as a
//! server announcing a closed connection, propagates without a clock bump).
//!
//! Time is an argument (`now_ms`), never read here, so the table can be
//! driven by a paused clock in tests and by `Date.now()` in a browser.
//!
//! On a server every entry has an [`Owner`], the connection that
//! introduced it ([`AwarenessTable::apply_as`]): only that connection may
//! change or remove it (entries naming another connection's client are
//! ignored, so nobody can erase or impersonate others' presence), entries
//! are bounded per owner and in all ([`Bounds`]), and when the connection
//! leaves exactly its entries go ([`AwarenessTable::remove_owner`]). A
//! removed entry keeps its clock (so a stale re-announcement cannot
//! resurrect it) only while its owner is connected; a removal of a client
//! never listed is not recorded at all.

use std::collections::{HashMap, HashSet};

use crate::lib0::{Cursor, DecodeError, write_var_string, write_var_uint};

/// A Yjs client id (a random 32-bit number in practice, up to 53 bits allowed).
pub type ClientId = u64;

/// Who introduced an entry: a connection id on a server. [`NO_OWNER`] is
/// the one owner of a table that does not track owners (a client's view of
/// the room, through [`AwarenessTable::apply`]).
pub type Owner = u64;

/// The owner of entries merged with [`AwarenessTable::apply`].
pub const NO_OWNER: Owner = u64::MAX;

#[derive(Debug, Clone)]
struct Entry {
    /// Last clock seen for this client; kept after removal (while the
    /// owner is connected) so that a stale re-announcement cannot
    /// resurrect the client.
    clock: u64,
    /// JSON text of the state, `None` once removed.
    state: Option<String>,
    /// When the entry was last renewed, for the 30 s outdated sweep.
    updated_ms: u64,
    /// The connection that introduced it, the only one that may change it.
    owner: Owner,
}

/// How much presence a table takes ([`AwarenessTable::apply_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries (live or removed) one owner may have.
    pub per_owner: usize,
    /// Entries in the whole table.
    pub total: usize,
    /// Bytes of one entry's JSON state.
    pub state_bytes: usize,
}

impl Bounds {
    /// No bounds at all (a client's own view of the room).
    pub const NONE: Bounds = Bounds {
        per_owner: usize::MAX,
        total: usize::MAX,
        state_bytes: usize::MAX,
    };
}

/// Why an awareness update was refused; a refused update changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The sender would have more entries than [`Bounds::per_owner`].
    #[error("one connection may announce at most {0} awareness clients")]
    TooManyForOwner(usize),
    /// The table would have more entries than [`Bounds::total`].
    #[error("this document lists its maximum of {0} awareness clients")]
    TooManyInTable(usize),
    /// A state is larger than [`Bounds::state_bytes`].
    #[error("awareness state of client {client} is larger than {limit} bytes")]
    StateTooLarge { client: ClientId, limit: usize },
}

/// What one [`AwarenessTable::apply`] call changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwarenessChange {
    pub added: Vec<ClientId>,
    pub updated: Vec<ClientId>,
    pub removed: Vec<ClientId>,
    /// Entries that only renewed their clock with an identical state.
    pub renewed: Vec<ClientId>,
    /// States ignored because another owner introduced that client.
    pub foreign: Vec<ClientId>,
    /// Removals (`null`) ignored because another owner introduced that
    /// client.
    pub foreign_removed: Vec<ClientId>,
}

impl AwarenessChange {
    /// Every client whose entry was accepted: what should be relayed.
    pub fn accepted(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.added
            .iter()
            .chain(&self.updated)
            .chain(&self.removed)
            .chain(&self.renewed)
            .copied()
    }

    pub fn is_empty(&self) -> bool {
        self.accepted().next().is_none()
    }
}

/// Everyone's presence in one room.
#[derive(Debug, Default)]
pub struct AwarenessTable {
    entries: HashMap<ClientId, Entry>,
    /// Entries (live or removed) per owner, for [`Bounds::per_owner`].
    owned: HashMap<Owner, usize>,
}

impl AwarenessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of clients with a live (non-null) state.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
    }

    /// Entries held, live or removed: what the bounds count.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON state of one client, if present.
    pub fn state(&self, client: ClientId) -> Option<&str> {
        self.entries.get(&client)?.state.as_deref()
    }

    /// Client ids with a live state.
    pub fn clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.state.is_some())
            .map(|(id, _)| *id)
    }

    /// Client ids with a live state that `owner` introduced.
    pub fn clients_of(&self, owner: Owner) -> impl Iterator<Item = ClientId> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| e.owner == owner && e.state.is_some())
            .map(|(id, _)| *id)
    }

    /// Merges an encoded awareness update, tracking no owner and bounding
    /// nothing (a client's view of the room). Invalid input changes nothing.
    pub fn apply(&mut self, update: &[u8], now_ms: u64) -> Result<AwarenessChange, DecodeError> {
        self.apply_as(update, NO_OWNER, Bounds::NONE, now_ms)
            .map_err(|err| match err {
                AwarenessError::Decode(err) => err,
                _ => unreachable!("unbounded"),
            })
    }

    /// Merges an encoded awareness update sent by `owner`: entries of
    /// clients another owner introduced are ignored (reported in
    /// [`AwarenessChange::foreign`], [`AwarenessChange::foreign_removed`]);
    /// new clients become `owner`'s. Refused
    /// whole, changing nothing, if it is invalid or passes `bounds`.
    pub fn apply_as(
        &mut self,
        update: &[u8],
        owner: Owner,
        bounds: Bounds,
        now_ms: u64,
    ) -> Result<AwarenessChange, AwarenessError> {
        // Decode and validate everything first so that a bad entry in the
        // middle of an update cannot leave the table half-applied.
        let mut cursor = Cursor::new(update);
        let count = cursor.read_var_uint("awareness entry count")?;
        let mut incoming = Vec::new();
        // y-protocols writes each client once. Two entries for one client
        // would make the outcome depend on their order against what the
        // table knew (a removal of an unlisted client is not recorded), so
        // the same update applied twice could differ: refused.
        let mut seen = HashSet::new();
        for _ in 0..count {
            let client = cursor.read_var_uint("awareness client id")?;
            if !seen.insert(client) {
                return Err(DecodeError::DuplicateAwarenessClient(client).into());
            }
            let clock = cursor.read_var_uint("awareness clock")?;
            let json = cursor.read_var_string("awareness state")?;
            if json.len() > bounds.state_bytes {
                return Err(AwarenessError::StateTooLarge {
                    client,
                    limit: bounds.state_bytes,
                });
            }
            if serde_json::from_str::<serde_json::value::Value>(json).is_err() {
                return Err(DecodeError::InvalidAwarenessJson(client).into());
            }
            let state = (json.trim() != "null").then_some(json);
            incoming.push((client, clock, state));
        }
        cursor.finish()?;
        // Clients this update would add to the table: a first state
        // (a removal of a client never listed is not recorded).
        let new: HashSet<ClientId> = incoming
            .iter()
            .filter(|(client, clock, state)| {
                state.is_some() && *clock > 0 && !self.entries.contains_key(client)
            })
            .map(|(client, _, _)| *client)
            .collect();
        let owned = self.owned.get(&owner).copied().unwrap_or(0);
        if owned + new.len() > bounds.per_owner {
            return Err(AwarenessError::TooManyForOwner(bounds.per_owner));
        }
        if self.entries.len() + new.len() > bounds.total {
            return Err(AwarenessError::TooManyInTable(bounds.total));
        }

        let mut change = AwarenessChange::default();
        for (client, clock, state) in incoming {
            let known = self.entries.get(&client);
            if known.is_some_and(|e| e.owner != owner) {
                if state.is_some() {
                    change.foreign.push(client);
                } else {
                    change.foreign_removed.push(client);
                }
                continue;
            }
            let known_clock = known.map_or(0, |e| e.clock);
            let listed = known.is_some_and(|e| e.state.is_some());
            // Exactly y-protocols' rule (so a first state at clock 0 is not
            // taken, as in every stock client).
            if !(known_clock < clock || (known_clock == clock && state.is_none() && listed)) {
                continue;
            }
            let previous = known.and_then(|e| e.state.as_deref());
            match (previous, state) {
                (None, Some(_)) => change.added.push(client),
                (Some(_), None) => change.removed.push(client),
                (Some(old), Some(new)) if old != new => change.updated.push(client),
                (Some(_), Some(_)) => change.renewed.push(client),
                // A removal of a client not listed: a known entry only
                // moves its clock; an unknown one is not recorded.
                (None, None) => {
                    if let Some(entry) = self.entries.get_mut(&client) {
                        entry.clock = clock;
                    }
                    continue;
                }
            }
            let entry = Entry {
                clock,
                state: state.map(str::to_owned),
                updated_ms: now_ms,
                owner,
            };
            if self.entries.insert(client, entry).is_none() {
                *self.owned.entry(owner).or_default() += 1;
            }
        }
        Ok(change)
    }

    /// Marks `clients` as gone (their connection closed). Returns those that
    /// were listed; announce them with [`Self::encode`].
    pub fn remove(
        &mut self,
        clients: impl IntoIterator<Item = ClientId>,
        now_ms: u64,
    ) -> Vec<ClientId> {
        let mut removed = Vec::new();
        for client in clients {
            if let Some(entry) = self.entries.get_mut(&client)
                && entry.state.take().is_some()
            {
                entry.updated_ms = now_ms;
                removed.push(client);
            }
        }
        removed
    }

    /// `owner` left: deletes every entry it introduced, live or removed.
    /// Returns an update announcing the live ones gone (`null` at their
    /// clock), `None` if there were none.
    pub fn remove_owner(&mut self, owner: Owner) -> Option<Vec<u8>> {
        self.owned.remove(&owner)?;
        let mut gone = Vec::new();
        self.entries.retain(|&client, entry| {
            if entry.owner != owner {
                return true;
            }
            if entry.state.is_some() {
                gone.push((client, entry.clock));
            }
            false
        });
        if gone.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        write_var_uint(&mut buf, gone.len() as u64);
        for (client, clock) in gone {
            write_var_uint(&mut buf, client);
            write_var_uint(&mut buf, clock);
            write_var_string(&mut buf, "null");
        }
        Some(buf)
    }

    /// Whether `owner` introduced any entry still listed (live or removed).
    pub fn has_owner(&self, owner: Owner) -> bool {
        self.owned.contains_key(&owner)
    }

    /// Who introduced `client`'s entry (live or removed), if it is listed.
    pub fn owner_of(&self, client: ClientId) -> Option<Owner> {
        self.entries.get(&client).map(|e| e.owner)
    }

    /// Deletes `clients`' entries, live or removed, without announcing
    /// anything: for entries whose owner speaks for them elsewhere (a
    /// server's presence relayed from other servers). Returns how many went.
    pub fn forget(&mut self, clients: impl IntoIterator<Item = ClientId>) -> usize {
        let mut forgotten = 0;
        for client in clients {
            if let Some(entry) = self.entries.remove(&client) {
                forgotten += 1;
                if let Some(count) = self.owned.get_mut(&entry.owner) {
                    *count -= 1;
                    if *count == 0 {
                        self.owned.remove(&entry.owner);
                    }
                }
            }
        }
        forgotten
    }

    /// Deletes the removed (`null`) entries `owner` introduced: what
    /// [`Self::forget`] does to every client of `owner` that is gone.
    pub fn forget_removed_of(&mut self, owner: Owner) -> usize {
        let removed: Vec<ClientId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owner == owner && e.state.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.forget(removed)
    }

    /// Removes states not renewed for `timeout_ms` (clients renew every 15 s;
    /// y-protocols drops them after 30 s). Returns the removed clients.
    pub fn sweep(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<ClientId> {
        let stale: Vec<ClientId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state.is_some() && now_ms.saturating_sub(e.updated_ms) >= timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        self.remove(stale, now_ms)
    }

    /// Encodes the current entries of `clients` (removed ones as `null`).
    /// Unknown clients are skipped.
    pub fn encode(&self, clients: impl IntoIterator<Item = ClientId>) -> Vec<u8> {
        // Each client once: a peer refuses an update naming one twice.
        let mut seen = HashSet::new();
        let entries: Vec<(ClientId, &Entry)> = clients
            .into_iter()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.entries.get(&id).map(|e| (id, e)))
            .collect();
        let mut buf = Vec::new();
        write_var_uint(&mut buf, entries.len() as u64);
        for (id, entry) in entries {
            write_var_uint(&mut buf, id);
            write_var_uint(&mut buf, entry.clock);
            write_var_string(&mut buf, entry.state.as_deref().unwrap_or("null"));
        }
        buf
    }

    /// Encodes every live state: what a newcomer is sent.
    pub fn encode_all(&self) -> Vec<u8> {
        let clients: Vec<ClientId> = self.clients().collect();
        self.encode(clients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(entries: &[(ClientId, u64, &str)]) -> Vec<u8> {
        let mut buf = Vec::new();
        write_var_uint(&mut buf, entries.len() as u64);
        for (id, clock, json) in entries {
            write_var_uint(&mut buf, *id);
            write_var_uint(&mut buf, *clock);
            write_var_string(&mut buf, json);
        }
        buf
    }

    #[test]
    fn add_update_renew_and_remove() {
        let mut table = AwarenessTable::new();
        let change = table
            .apply(&update(&[(7, 1, r#"{"name":"ann"}"#)]), 0)
            .unwrap();
        assert_eq!(change.added, [7]);
        assert_eq!(table.state(7), Some(r#"{"name":"ann"}"#));

        let change = table
            .apply(&update(&[(7, 2, r#"{"name":"bo"}"#)]), 1)
            .unwrap();
        assert_eq!(change.updated, [7]);

        let change = table
            .apply(&update(&[(7, 3, r#"{"name":"bo"}"#)]), 2)
            .unwrap();
        assert_eq!(change.renewed, [7]);

        let change = table.apply(&update(&[(7, 4, "null")]), 3).unwrap();
        assert_eq!(change.removed, [7]);
        assert!(table.is_empty());
    }

    #[test]
    fn stale_clocks_are_ignored() {
        let mut table = AwarenessTable::new();
        table.apply(&update(&[(7, 5, r#"{"a":1}"#)]), 0).unwrap();
        let change = table.apply(&update(&[(7, 4, r#"{"a":2}"#)]), 1).unwrap();
        assert!(change.is_empty());
        assert_eq!(table.state(7), Some(r#"{"a":1}"#));
    }

    #[test]
    fn removal_announced_at_the_same_clock_is_accepted() {
        // What a server sends when a connection closes: same clock, null state.
        let mut table = AwarenessTable::new();
        table.apply(&update(&[(7, 5, r#"{"a":1}"#)]), 0).unwrap();
        let change = table.apply(&update(&[(7, 5, "null")]), 1).unwrap();
        assert_eq!(change.removed, [7]);
    }

    #[test]
    fn remove_encodes_null_with_the_known_clock() {
        let mut table = AwarenessTable::new();
        table
            .apply(&update(&[(7, 5, r#"{"a":1}"#), (8, 1, "{}")]), 0)
            .unwrap();
        assert_eq!(table.remove([7, 99], 1), [7]);
        assert_eq!(table.encode([7]), update(&[(7, 5, "null")]));
        assert_eq!(table.encode_all(), update(&[(8, 1, "{}")]));
    }

    #[test]
    fn sweep_drops_states_not_renewed_in_time() {
        let mut table = AwarenessTable::new();
        table.apply(&update(&[(1, 1, "{}")]), 0).unwrap();
        table.apply(&update(&[(2, 1, "{}")]), 20_000).unwrap();
        assert_eq!(table.sweep(30_000, 30_000), [1]);
        assert_eq!(table.clients().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn invalid_json_changes_nothing() {
        let mut table = AwarenessTable::new();
        let bad = update(&[(1, 1, "{}"), (2, 1, "{not json")]);
        assert_eq!(
            table.apply(&bad, 0),
            Err(DecodeError::InvalidAwarenessJson(2))
        );
        assert!(table.is_empty());
    }

    const BOUNDS: Bounds = Bounds {
        per_owner: 2,
        total: 3,
        state_bytes: 16,
    };

    /// Issue 12, finding 2: removals of clients never seen were recorded,
    /// so a few bytes per entry grew the table for good.
    #[test]
    fn a_removal_of_an_unknown_client_is_not_recorded() {
        let mut table = AwarenessTable::new();
        let nulls: Vec<(ClientId, u64, &str)> = (1..=100).map(|id| (id, 1, "null")).collect();
        assert!(table.apply(&update(&nulls), 0).unwrap().is_empty());
        assert_eq!(table.entries(), 0);
    }

    /// Issue 12, finding 2: anyone could erase or rewrite anyone's presence.
    #[test]
    fn only_the_owner_changes_or_removes_its_clients() {
        let mut table = AwarenessTable::new();
        let ann = r#"{"n":"ann"}"#;
        table
            .apply_as(&update(&[(7, 1, ann)]), 1, BOUNDS, 0)
            .unwrap();
        for forged in [
            update(&[(7, 2, r#"{"n":"eve"}"#)]),
            update(&[(7, 3, "null")]),
        ] {
            let change = table.apply_as(&forged, 2, BOUNDS, 1).unwrap();
            assert!(change.is_empty());
            assert_eq!(change.foreign.len() + change.foreign_removed.len(), 1);
        }
        let change = table
            .apply_as(&update(&[(7, 4, "null")]), 2, BOUNDS, 1)
            .unwrap();
        assert_eq!((change.foreign, change.foreign_removed), (vec![], vec![7]));
        assert_eq!(table.state(7), Some(ann));
        let change = table
            .apply_as(&update(&[(7, 2, "null")]), 1, BOUNDS, 2)
            .unwrap();
        assert_eq!(change.removed, [7]);
    }

    /// Issue 12, finding 2: one connection could list any number of clients.
    #[test]
    fn entries_are_bounded_per_owner_in_all_and_in_bytes() {
        let mut table = AwarenessTable::new();
        let three = update(&[(1, 1, "{}"), (2, 1, "{}"), (3, 1, "{}")]);
        assert_eq!(
            table.apply_as(&three, 1, BOUNDS, 0),
            Err(AwarenessError::TooManyForOwner(2))
        );
        assert_eq!(table.entries(), 0, "a refused update changes nothing");
        table
            .apply_as(&update(&[(1, 1, "{}"), (2, 1, "{}")]), 1, BOUNDS, 0)
            .unwrap();
        // Renewing and removing its own clients is always allowed.
        table
            .apply_as(&update(&[(1, 2, "{}"), (2, 2, "null")]), 1, BOUNDS, 0)
            .unwrap();
        table
            .apply_as(&update(&[(4, 1, "{}")]), 2, BOUNDS, 0)
            .unwrap();
        assert_eq!(
            table.apply_as(&update(&[(5, 1, "{}")]), 3, BOUNDS, 0),
            Err(AwarenessError::TooManyInTable(3))
        );
        let big = update(&[(6, 1, r#"{"name":"a long name"}"#)]);
        assert!(matches!(
            table.apply_as(&big, 3, BOUNDS, 0),
            Err(AwarenessError::StateTooLarge { client: 6, .. })
        ));
    }

    #[test]
    fn an_owner_leaving_takes_exactly_its_entries() {
        let mut table = AwarenessTable::new();
        table
            .apply_as(&update(&[(1, 4, "{}"), (2, 1, "{}")]), 1, BOUNDS, 0)
            .unwrap();
        table
            .apply_as(&update(&[(2, 2, "null")]), 1, BOUNDS, 0)
            .unwrap();
        table
            .apply_as(&update(&[(3, 1, "{}")]), 2, BOUNDS, 0)
            .unwrap();
        assert_eq!(table.remove_owner(1), Some(update(&[(1, 4, "null")])));
        assert_eq!(table.entries(), 1, "the removed entry went too");
        assert_eq!(table.clients().collect::<Vec<_>>(), [3]);
        assert_eq!(table.remove_owner(1), None);
        // Its clients may be introduced afresh by another connection.
        table
            .apply_as(&update(&[(1, 5, "{}")]), 2, BOUNDS, 0)
            .unwrap();
        assert_eq!(table.clients_of(2).count(), 2);
    }

    /// Found by the `frame_decoder` fuzz target
    /// (`fixed-awareness-client-named-twice-not-idempotent`): an update
    /// naming client 1 first removed at a high clock, then with a state at
    /// a lower one, added it on an empty table (the removal of an unlisted
    /// client is not recorded) and removed it when applied again.
    #[test]
    fn regression_awareness_client_named_twice_is_refused() {
        let mut table = AwarenessTable::new();
        let twice = update(&[(1, 9_000, "null"), (1, 8, r#"{"a":1}"#)]);
        assert_eq!(
            table.apply(&twice, 0).unwrap_err(),
            DecodeError::DuplicateAwarenessClient(1)
        );
        assert!(table.is_empty(), "a refused update changes nothing");
        let once = update(&[(1, 8, r#"{"a":1}"#), (2, 1, "{}")]);
        assert_eq!(table.apply(&once, 0).unwrap().added, [1, 2]);
        assert!(table.apply(&once, 1).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn forget_deletes_entries_and_frees_their_owners_share() {
        let bounds = Bounds {
            per_owner: 2,
            total: 3,
            state_bytes: 1024,
        };
        let mut table = AwarenessTable::new();
        table
            .apply_as(&update(&[(1, 1, "{}"), (2, 1, "{}")]), 9, bounds, 0)
            .unwrap();
        table
            .apply_as(&update(&[(1, 1, "null")]), 9, bounds, 0)
            .unwrap();
        assert_eq!(table.owner_of(1), Some(9));
        assert_eq!(table.forget_removed_of(9), 1);
        assert_eq!(table.owner_of(1), None);
        assert_eq!(table.entries(), 1);
        // The owner's share is free again, and the client may come back
        // at the clock it had.
        table
            .apply_as(&update(&[(1, 1, "{}")]), 9, bounds, 0)
            .unwrap();
        assert_eq!(table.forget([1, 2, 3]), 2);
        assert!(table.is_empty());
        table
            .apply_as(&update(&[(4, 1, "{}"), (5, 1, "{}")]), 9, bounds, 0)
            .unwrap();
    }
}
