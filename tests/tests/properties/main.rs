//! Property tests of the sync protocol, sans-IO: N `SyncSession`s and a
//! simulated server built from `quire_server::document::Document`, under
//! schedules proptest generates (random edits, interleavings, duplicated
//! and reordered delivery, dropped links, reconnects, time passing).
//!
//! Also the regression tests of bugs the fuzz targets (`fuzz/`) found,
//! named after the bug; those still open are `#[ignore]`d with the reason.

mod regressions;
mod schedule;
mod sim;
