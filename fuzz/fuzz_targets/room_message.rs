//! A room message as gossipsub hands it over: the course's protobuf
//! (`Request` with `SendMessage` or `UpdatePeer`), decoded and validated.
//! Whatever is accepted must encode back to something accepted alike.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtalk_protocol::{validate, wire};

/// A fixed "now", so that a run is reproducible.
const NOW_MS: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = validate::accept(data, NOW_MS) {
        let again = validate::accept(&wire::encode(&payload), NOW_MS);
        assert_eq!(again.as_ref(), Ok(&payload));
    }
});
