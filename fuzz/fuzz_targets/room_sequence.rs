//! The real room actor on an in-memory store, driven by a message sequence.
//! See `quire_fuzz::room` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: quire_fuzz::room::install_panic_hook(),
    |data: &[u8]| quire_fuzz::room_sequence(data)
);
