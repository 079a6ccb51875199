//! What a `/webrtc` peer sends: signaling messages, and data-channel bytes
//! cut into frames and fed to a stream's state machine (FIN, STOP_SENDING,
//! RESET_STREAM in any order), in chunks of any size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtalk_webrtc::{
    proto::{Deframer, Signal},
    state::StreamState,
};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(signal) = Signal::decode(data) {
        let _ = signal.kind();
    }
    // The first byte picks the chunk size the bytes arrive in.
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut deframer = Deframer::default();
    let mut stream = StreamState::default();
    let mut buf = [0u8; 1024];
    for piece in bytes.chunks(chunk) {
        deframer.push(piece);
        loop {
            match deframer.next_frame() {
                Ok(Some(frame)) => {
                    if stream.on_frame(frame).is_err() {
                        return;
                    }
                    while stream.take(&mut buf) > 0 {}
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
