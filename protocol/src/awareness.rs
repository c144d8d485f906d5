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

use std::collections::HashMap;

use crate::lib0::{Cursor, DecodeError, write_var_string, write_var_uint};

/// A Yjs client id (a random 32-bit number in practice, up to 53 bits allowed).
pub type ClientId = u64;

#[derive(Debug, Clone)]
struct Entry {
    /// Last clock seen for this client; kept after removal so that a stale
    /// re-announcement cannot resurrect the client.
    clock: u64,
    /// JSON text of the state, `None` once removed.
    state: Option<String>,
    /// When the entry was last renewed, for the 30 s outdated sweep.
    updated_ms: u64,
}

/// What one [`AwarenessTable::apply`] call changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwarenessChange {
    pub added: Vec<ClientId>,
    pub updated: Vec<ClientId>,
    pub removed: Vec<ClientId>,
    /// Entries that only renewed their clock with an identical state.
    pub renewed: Vec<ClientId>,
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
}

impl AwarenessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of clients with a live (non-null) state.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.state.is_some()).count()
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

    /// Merges an encoded awareness update. Invalid input changes nothing.
    pub fn apply(&mut self, update: &[u8], now_ms: u64) -> Result<AwarenessChange, DecodeError> {
        // Decode and validate everything first so that a bad entry in the
        // middle of an update cannot leave the table half-applied.
        let mut cursor = Cursor::new(update);
        let count = cursor.read_var_uint("awareness entry count")?;
        let mut incoming = Vec::new();
        for _ in 0..count {
            let client = cursor.read_var_uint("awareness client id")?;
            let clock = cursor.read_var_uint("awareness clock")?;
            let json = cursor.read_var_string("awareness state")?;
            if serde_json::from_str::<serde_json::value::Value>(json).is_err() {
                return Err(DecodeError::InvalidAwarenessJson(client));
            }
            let state = (json.trim() != "null").then_some(json);
            incoming.push((client, clock, state));
        }
        cursor.finish()?;

        let mut change = AwarenessChange::default();
        for (client, clock, state) in incoming {
            let known = self.entries.get(&client);
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
                // A removal of a client we never listed: remember its clock only.
                (None, None) => {}
            }
            self.entries.insert(
                client,
                Entry {
                    clock,
                    state: state.map(str::to_owned),
                    updated_ms: now_ms,
                },
            );
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
        let entries: Vec<(ClientId, &Entry)> = clients
            .into_iter()
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
}
