//! `Ext::decode` + round trip, and `Reassembly::push` sequences checked
//! against a model. See `quire_fuzz::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quire_fuzz::extensions(data));
