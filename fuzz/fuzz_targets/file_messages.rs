//! File offers (`meshtalk/files/<room>`) and universal-connectivity's file
//! ids: decoded and checked; an accepted offer encodes back to itself, and
//! its name is safe to save under.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtalk_protocol::{files::Offer, uc};

const NOW_MS: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = Offer::decode(data, NOW_MS) {
        assert_eq!(Offer::decode(&offer.encode(), NOW_MS).as_ref(), Ok(&offer));
        assert!(!offer.name.contains(['/', '\\']) && !offer.name.starts_with('.'));
    }
    if let Ok(id) = uc::check_file_id(data) {
        assert!(!id.is_empty() && id.len() <= uc::MAX_FILE_ID);
    }
});
