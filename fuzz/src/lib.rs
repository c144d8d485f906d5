//! The bodies of Quire's fuzz targets, as plain functions.
//!
//! Each `fuzz_targets/*.rs` binary is one line that calls a function here, so
//! the same checks run under libFuzzer (`cargo fuzz run ...`) and, on the seed
//! corpus and on saved artifacts, under `cargo test` (no libFuzzer needed).
//!
//! - [`frame_decoder`]: y-websocket frames and awareness updates.
//! - [`extensions`]: Quire extension frames and fragment reassembly.
//! - [`room_sequence`]: the real room core driven by a message sequence.
//!
//! [`seeds`] builds the seed corpora (`cargo test -- --ignored write_seed_corpus`).

pub mod frames;
pub mod room;
pub mod seeds;

pub use frames::{extensions, frame_decoder};
pub use room::room_sequence;
