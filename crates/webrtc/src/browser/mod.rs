//! The browser half: the transport, its connections and streams over the
//! browser's `RTCPeerConnection`.

mod channel;
mod connection;
mod handshake;
mod transport;

pub use channel::Stream;
pub use connection::Connection;
pub use transport::Transport;

use wasm_bindgen::JsValue;

use crate::Error;

impl Error {
    /// An error the browser's API threw.
    pub(crate) fn js(value: JsValue) -> Self {
        let text = js_sys::JSON::stringify(&value)
            .ok()
            .and_then(|s| s.as_string())
            .filter(|s| s != "{}")
            .or_else(|| value.as_string())
            .unwrap_or_else(|| format!("{value:?}"));
        Self::Js(text)
    }
}
