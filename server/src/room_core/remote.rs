//! The room's side of the other nodes (cluster mode): what it hands out as
//! [`Output::Publish`] and what it does with [`RoomCore::remote`]. Kept
//! apart from the single-node rules; the fan-out itself (Redis) is the
//! shell's and `fanout`'s business, never the core's.
//!
//! - An update another node stored is applied and relayed to the local
//!   members, never stored or acknowledged here (its origin did both). One
//!   that refers to what this room lacks (it missed something) asks the
//!   shell to read the store ([`Output::Resync`]).
//! - Presence from other nodes joins the table owned by the node that
//!   relayed it, not by a member: it goes when that node announces the
//!   removal, or when it is no longer refreshed (a dead node) and the
//!   sweep removes it; either way its entry is deleted once the removal
//!   was announced (no `null` kept until the room ends). A member, or
//!   another node, announcing a state for a client that a node's entries
//!   hold takes it over: the client moved. A removal from a node that no
//!   longer holds the client is ignored: it comes from the node the client
//!   left, and may arrive after the new node's announcement (same clock).
//! - Events and chat are sent to the local Quire clients; chat joins the
//!   recent history (its origin stored it).

use bytes::Bytes;
use quire_protocol::awareness::{AwarenessError, Bounds, Owner};
use quire_protocol::ext::{CHAT_EVENT, Ext};
use quire_protocol::{ClientId, Message, SyncMessage};
use tracing::{debug, warn};

use super::{MemberQueue, Now, Output, RoomCore, State, Target};
use crate::document::DocumentError;
use crate::fanout::{NodeKey, NodeMessage, RemoteEvent};

impl<Q: MemberQueue> RoomCore<Q> {
    /// Other nodes serve this document too: publish to them from now on.
    pub fn set_clustered(&mut self, clustered: bool) {
        self.clustered = clustered;
    }

    /// Whether stored updates wait for [`Self::durable`] to be published.
    pub fn publishes_pending(&self) -> bool {
        !self.unpublished.is_empty()
    }

    /// A message from the room of node `from` (what a resync read from
    /// the store is handed in as from [`NodeKey::STORE`]).
    pub fn remote(&mut self, from: NodeKey, message: NodeMessage, now: Now) {
        match message {
            NodeMessage::Update(update) => self.apply_remote(&update, now),
            NodeMessage::Awareness(update) => {
                // A node's clients are one owner here: their own node
                // bounds them per connection; the room's total still holds.
                let bounds = Bounds {
                    per_owner: usize::MAX,
                    total: self.config.max_presence_per_room,
                    state_bytes: self.config.max_presence_state_bytes,
                };
                let owner = self.node_owner(from);
                match self.apply_presence_as(owner, &update, bounds, now) {
                    Ok((accepted, _)) => {
                        self.announce_awareness(None, &accepted, now);
                        self.forget_remote_removed();
                    }
                    Err(err) => warn!(%err, "presence from another node refused"),
                }
            }
            NodeMessage::Event(event) => self.send_remote_event(&event, now),
            NodeMessage::Chat(event) => {
                self.keep_chat(event.payload.clone());
                self.send_remote_event(&event, now);
            }
            NodeMessage::RoomOpened => {
                let local: Vec<ClientId> = self
                    .members
                    .keys()
                    .flat_map(|&conn| self.awareness.clients_of(conn))
                    .collect();
                self.publish_awareness(&local);
                if !self.outputs.contains(&Output::Resync) {
                    self.outputs.push_back(Output::Resync);
                }
            }
            NodeMessage::Deleted => self.delete(now),
        }
    }

    /// Deletes the entries of other nodes' clients that are gone (removed
    /// by their node, or swept because nobody renewed them: a dead node),
    /// once their removal was announced. No local member owns them, so
    /// kept as `null` they would stay until the room ends: counted against
    /// the room's presence bound, and refusing the client when it comes
    /// back at the clock it had (y-websocket keeps its clock across
    /// reconnections) through its restarted node or through this one.
    pub(super) fn forget_remote_removed(&mut self) {
        let awareness = &mut self.awareness;
        self.node_owners.retain(|_, &mut owner| {
            awareness.forget_removed_of(owner);
            awareness.has_owner(owner)
        });
    }

    /// The presence owner of node `from`'s clients (see `node_owners`).
    fn node_owner(&mut self, from: NodeKey) -> Owner {
        let next = &mut self.next_node_owner;
        *self.node_owners.entry(from).or_insert_with(|| {
            let owner = *next;
            *next -= 1;
            owner
        })
    }

    fn is_node_owner(&self, owner: Owner) -> bool {
        self.node_owners.values().any(|&o| o == owner)
    }

    /// Applies a presence update from `owner` (a member, or a node's
    /// owner). Clients it gives a state that another node's entries hold
    /// moved (their node died, or the proxy sent them elsewhere): their
    /// entries become `owner`'s, instead of the update being ignored as
    /// another owner's. Removals of clients someone else holds are
    /// ignored. Returns the accepted and the still foreign clients.
    pub(super) fn apply_presence_as(
        &mut self,
        owner: Owner,
        update: &[u8],
        bounds: Bounds,
        now: Now,
    ) -> Result<(Vec<ClientId>, Vec<ClientId>), AwarenessError> {
        let change = self.awareness.apply_as(update, owner, bounds, now.ms)?;
        let mut accepted: Vec<ClientId> = change.accepted().collect();
        let moved: Vec<ClientId> = change
            .foreign
            .iter()
            .copied()
            .filter(|&client| {
                self.awareness
                    .owner_of(client)
                    .is_some_and(|held_by| self.is_node_owner(held_by))
            })
            .collect();
        if moved.is_empty() {
            return Ok((accepted, change.foreign));
        }
        debug!(owner, ?moved, "presence moved here from another node");
        self.awareness.forget(moved);
        // Applied again: what the first pass took is no longer new, so
        // only the moved clients' entries are accepted this time.
        let again = self.awareness.apply_as(update, owner, bounds, now.ms)?;
        accepted.extend(again.accepted());
        Ok((accepted, again.foreign))
    }

    fn apply_remote(&mut self, update: &[u8], now: Now) {
        let State::Ready {
            document, bytes, ..
        } = &mut self.state
        else {
            return;
        };
        match document.apply(update) {
            Ok(applied) => {
                let Some(delta) = applied.delta else { return };
                *bytes += delta.len() as u64;
                let frame = Bytes::from(Message::Sync(SyncMessage::Update(&delta)).encode());
                self.relay(None, &frame, now);
            }
            Err(DocumentError::Incomplete { reason, .. }) => {
                debug!(%reason, "an update from another node needs what this room lacks");
                if !self.outputs.contains(&Output::Resync) {
                    self.outputs.push_back(Output::Resync);
                }
            }
            Err(DocumentError::Poisoned) => {
                warn!("an update from another node left the document half-changed; reloading");
                self.request_reload();
            }
            Err(err) => warn!(%err, "another node sent an update this room refuses"),
        }
    }

    fn send_remote_event(&mut self, event: &RemoteEvent, now: Now) {
        let frame = Ext::Event {
            name: &event.name,
            payload: &event.payload,
            sender: event.sender,
            sender_name: &event.sender_name,
            at_ms: event.at_ms,
        }
        .encode();
        self.send(Target::ExtensionsBut(None), &frame.into(), now);
    }

    /// Publishes the stored updates whose writes are now durable.
    pub(super) fn publish_durable(&mut self) {
        while self
            .unpublished
            .front()
            .is_some_and(|(write, _)| *write <= self.durable)
        {
            let Some((_, delta)) = self.unpublished.pop_front() else {
                break;
            };
            self.outputs
                .push_back(Output::Publish(NodeMessage::Update(delta)));
        }
    }

    /// Publishes the current entries of local members' `clients`.
    pub(super) fn publish_awareness(&mut self, clients: &[ClientId]) {
        if self.clustered && !clients.is_empty() {
            let update = self.awareness.encode(clients.iter().copied());
            self.publish_presence(update);
        }
    }

    /// Publishes an encoded presence update of local members.
    pub(super) fn publish_presence(&mut self, update: Vec<u8>) {
        if self.clustered {
            self.outputs
                .push_back(Output::Publish(NodeMessage::Awareness(update.into())));
        }
    }

    /// Publishes a local member's named event (for chat, `payload` is the
    /// stamped record).
    pub(super) fn publish_event(
        &mut self,
        name: &str,
        payload: &str,
        sender: u64,
        sender_name: &str,
        at_ms: u64,
    ) {
        if !self.clustered {
            return;
        }
        let event = RemoteEvent {
            name: name.to_owned(),
            payload: payload.to_owned(),
            sender,
            sender_name: sender_name.to_owned(),
            at_ms,
        };
        self.outputs
            .push_back(Output::Publish(if name == CHAT_EVENT {
                NodeMessage::Chat(event)
            } else {
                NodeMessage::Event(event)
            }));
    }
}
