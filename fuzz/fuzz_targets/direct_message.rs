//! A direct message on `/meshtalk/dm/1.0.0` and on universal-connectivity's
//! `/universal-connectivity/dm/1.0.0`, decoded and checked as a receiver
//! does; and the length-prefixed framing every stream protocol reads.

#![no_main]

use futures::{executor::block_on, io::Cursor};
use libfuzzer_sys::fuzz_target;
use meshtalk_protocol::{dm::DirectMessage, framing, uc};
use prost::Message as _;

const NOW_MS: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = DirectMessage::decode(data) {
        let _ = message.check(NOW_MS);
    }
    if let Ok(request) = uc::DirectMessageRequest::decode(data) {
        let _ = request.check();
    }
    let _ = uc::DirectMessageResponse::decode(data);
    // As many messages as the bytes hold, each at most 64 KiB.
    let mut stream = Cursor::new(data);
    while let Ok(message) = block_on(framing::read_message(&mut stream, 64 * 1024)) {
        assert!(message.len() <= 64 * 1024);
    }
});
