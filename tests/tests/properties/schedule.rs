//! The properties: convergence, and `Saved` never claiming more than the
//! server has.

use proptest::prelude::*;
use quire_protocol::session::Connection;

use crate::sim::{Dir, Sim, clocks, has_pending};

/// How far out of order a frame may be delivered (1 = in order).
const WINDOW: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        c: usize,
        pos: usize,
        text: String,
    },
    Delete {
        c: usize,
        pos: usize,
        len: usize,
    },
    /// Deliver the `k`-th frame (within the window) of a queue.
    Deliver {
        c: usize,
        dir: Dir,
        k: usize,
    },
    /// Deliver the first frame of a queue and leave it queued.
    Twice {
        c: usize,
        dir: Dir,
    },
    Drop {
        c: usize,
    },
    Reconnect {
        c: usize,
    },
    Advance {
        ms: u64,
    },
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Up), Just(Dir::Down)]
}

fn op(clients: usize) -> impl Strategy<Value = Op> {
    let c = 0..clients;
    prop_oneof![
        4 => (c.clone(), any::<usize>(), "[a-z]{1,4}")
            .prop_map(|(c, pos, text)| Op::Insert { c, pos, text }),
        2 => (c.clone(), any::<usize>(), 1usize..4).prop_map(|(c, pos, len)| Op::Delete { c, pos, len }),
        10 => (c.clone(), dir(), 0..WINDOW).prop_map(|(c, dir, k)| Op::Deliver { c, dir, k }),
        1 => (c.clone(), dir()).prop_map(|(c, dir)| Op::Twice { c, dir }),
        1 => c.clone().prop_map(|c| Op::Drop { c }),
        1 => c.prop_map(|c| Op::Reconnect { c }),
        1 => prop_oneof![Just(10u64), Just(400), Just(1_600), Just(20_000)].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn schedule() -> impl Strategy<Value = (usize, u64, Vec<Op>)> {
    (2usize..=4, any::<u64>())
        .prop_flat_map(|(n, seed)| (Just(n), Just(seed), prop::collection::vec(op(n), 1..200)))
}

/// Whether the session is between opening a link and being synced.
fn syncing(sim: &Sim, c: usize) -> bool {
    sim.peers[c].session.status().connection == Connection::Syncing
}

/// Runs one op. `in_order`: both directions stay FIFOs (what TCP gives and
/// what `Saved` numbering needs); only server → client frames may be
/// duplicated.
/// `edit_while_syncing`: allow local edits between opening a link and
/// being synced.
fn run(sim: &mut Sim, op: &Op, in_order: bool, edit_while_syncing: bool) {
    match op {
        Op::Insert { c, .. } | Op::Delete { c, .. } if !edit_while_syncing && syncing(sim, *c) => {}
        Op::Insert { c, pos, text } => sim.insert(*c, *pos, text),
        Op::Delete { c, pos, len } => sim.delete(*c, *pos, *len),
        Op::Deliver { c, dir, k } => {
            let k = if in_order { 0 } else { *k };
            sim.deliver(*c, *dir, k, WINDOW, false);
        }
        Op::Twice { c, dir } => {
            if !(in_order && *dir == Dir::Up) {
                sim.deliver(*c, *dir, 0, 1, true);
            }
        }
        Op::Drop { c } => sim.drop_link(*c),
        Op::Reconnect { c } => sim.reconnect(*c),
        Op::Advance { ms } => sim.advance(*ms),
    }
}

/// After the network came to rest: every replica equals the server's.
fn assert_converged(sim: &Sim) -> Result<(), TestCaseError> {
    let text = sim.server_text();
    let server_clocks = clocks(sim.server().doc());
    prop_assert!(
        !has_pending(sim.server().doc()),
        "the server holds pending updates"
    );
    for (i, peer) in sim.peers.iter().enumerate() {
        prop_assert_eq!(&sim.text(i), &text, "client {} text", i);
        prop_assert_eq!(
            clocks(peer.session.doc()),
            server_clocks.clone(),
            "client {} state",
            i
        );
        prop_assert!(
            !has_pending(peer.session.doc()),
            "client {} holds pending updates",
            i
        );
    }
    Ok(())
}

/// `Saved` never claims more than the server has: the first
/// `edits - unsaved` edits of every client are all in the server's document
/// (integrated; an update it holds as pending is not had).
fn assert_claims_hold(sim: &Sim) -> Result<(), TestCaseError> {
    for (i, peer) in sim.peers.iter().enumerate() {
        let unsaved = peer.session.status().unsaved as usize;
        prop_assert!(
            unsaved <= peer.edits.len(),
            "client {} counts more unsaved than edits",
            i
        );
        let saved = peer.edits.len() - unsaved;
        for (n, edit) in peer.edits[..saved].iter().enumerate() {
            prop_assert!(
                sim.server().is_known(edit),
                "client {} shows edit {} of {} saved, but the server lacks it (unsaved = {})",
                i,
                n + 1,
                peer.edits.len(),
                unsaved
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Clients converge with each other and with the server whatever the
    /// interleaving, with duplicated and reordered delivery in both
    /// directions, dropped links, reconnects and time passing.
    #[test]
    fn clients_converge_under_any_schedule((clients, seed, ops) in schedule()) {
        let mut sim = Sim::new(clients, seed);
        for op in &ops {
            run(&mut sim, op, false, true);
        }
        sim.flush();
        assert_converged(&sim)?;
    }

    /// With in-order delivery (TCP), `Saved` never claims
    /// an edit the server does not have, at any step, and every edit is
    /// saved once the network comes to rest. Local edits happen while
    /// offline, connecting or synced; see the ignored variant below for
    /// edits made during the handshake.
    #[test]
    fn saved_never_claims_more_than_the_server_has((clients, seed, ops) in schedule()) {
        let mut sim = Sim::new(clients, seed);
        for op in &ops {
            run(&mut sim, op, true, false);
            assert_claims_hold(&sim)?;
        }
        sim.flush();
        assert_claims_hold(&sim)?;
        for (i, peer) in sim.peers.iter().enumerate() {
            prop_assert_eq!(peer.session.status().unsaved, 0, "client {} unsaved at rest", i);
        }
        assert_converged(&sim)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The same with local edits allowed during the handshake (between
    /// opening a link and being synced). Fails today: see
    /// `regressions::update_sent_before_handshake_step2_is_claimed_saved`.
    #[test]

    fn saved_never_claims_more_even_for_edits_during_the_handshake((clients, seed, ops) in schedule()) {
        let mut sim = Sim::new(clients, seed);
        for op in &ops {
            run(&mut sim, op, true, true);
            assert_claims_hold(&sim)?;
        }
        sim.flush();
        assert_claims_hold(&sim)?;
        assert_converged(&sim)?;
    }
}
