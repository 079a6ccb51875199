//! A history answer (`/meshtalk/history/1.0.0`) and a history request:
//! decoded, and every line and nickname record in the answer checked
//! against its signature as a peer does before showing it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtalk_protocol::{
    history::{
        self,
        sync::{HistoryAnswer, HistoryRequest},
    },
    rooms::Room,
};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let _ = HistoryRequest::decode(data);
    let Ok(answer) = HistoryAnswer::decode(data) else {
        return;
    };
    let topic = Room::lobby().topic().hash();
    for line in answer.lines.iter().chain(&answer.nicks) {
        let _ = history::verify(line, &topic);
    }
});
