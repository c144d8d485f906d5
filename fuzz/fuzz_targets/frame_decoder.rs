//! `Message::decode` + `AwarenessTable::apply` on arbitrary bytes, with the
//! encode round trip of whatever decodes. See `quire_fuzz::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quire_fuzz::frame_decoder(data));
