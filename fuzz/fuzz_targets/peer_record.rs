//! A page's peer record (pubsub-peer-discovery's `Peer { publicKey, addrs }`)
//! from a room's peers topic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtalk_protocol::{libp2p::PeerId, peer_record};

fuzz_target!(|data: &[u8]| {
    // A fixed author: the record's key must be the author's, and a run
    // must be reproducible.
    let author = PeerId::from_bytes(&[0, 2, 8, 1]).unwrap_or_else(|_| PeerId::random());
    let _ = peer_record::decode(data, author);
});
