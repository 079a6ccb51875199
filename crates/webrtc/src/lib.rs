//! # meshtalk-webrtc
//!
//! libp2p's WebRTC transport (`/webrtc`, private-to-private) for peers in a
//! browser: two pages, each reachable through a relay, link directly over
//! WebRTC data channels. It follows the libp2p specs (`webrtc/webrtc.md`,
//! `webrtc/README.md`) so that js-libp2p's `@libp2p/webrtc` peers can be on
//! the other end:
//!
//! - the dialer opens `/webrtc-signaling/0.0.1` over a relayed connection
//!   to the peer, offers an SDP, the listener answers, both trickle ICE
//!   candidates (JSON of `RTCIceCandidate.toJSON()`, `null` at the end),
//!   and the stream is closed once the peer connection is up;
//! - the dialer's `init` data channel gives its offer a data section and is
//!   closed once connected;
//! - every libp2p stream is a data channel carrying length-prefixed
//!   `Message { flag, message }` frames of at most 16 KiB; a FIN is
//!   answered with FIN_ACK, and a closing side waits for it;
//! - no Noise: the DTLS fingerprints travel in the SDPs over the relayed
//!   connection, which Noise authenticated, and the remote peer id is that
//!   connection's.
//!
//! The codecs ([`proto`]), the stream state machine ([`state`]) and the
//! addresses ([`addr`]) are plain Rust and build everywhere; the transport
//! itself needs a browser (wasm32).
//!
//! ```ignore
//! let streams = libp2p_stream::Behaviour::new();
//! let (transport, helper) = meshtalk_webrtc::new(Config::default(), streams.new_control());
//! // transport: tried before the relay client's transport;
//! // helper and streams: parts of the swarm's behaviour.
//! swarm.listen_on(meshtalk_webrtc::addr::listen_addr())?;
//! // once a relay reservation gives us `…/p2p-circuit`, we are at
//! // `…/p2p-circuit/webrtc/p2p/ME` (addr::webrtc_addr_of_circuit).
//! ```

pub mod addr;
mod behaviour;
mod error;
pub mod proto;
pub mod state;

#[cfg(target_arch = "wasm32")]
mod browser;

use std::time::Duration;

pub use behaviour::Behaviour;
#[cfg(target_arch = "wasm32")]
pub use browser::{Connection, Stream, Transport};
pub use error::Error;

/// The signaling protocol, on streams of relayed connections.
pub const SIGNALING_PROTOCOL: &str = "/webrtc-signaling/0.0.1";

/// Settings of the transport.
#[derive(Clone, Debug)]
pub struct Config {
    /// STUN/TURN server URLs for ICE (`stun:host:port`). None are needed
    /// between peers on one network or on loopback; across NATs, a STUN
    /// server lets each side learn its public address.
    pub ice_servers: Vec<String>,
    /// Longest a dial or an answer may take, from asking for the signaling
    /// stream to the connected peer connection.
    pub handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// The transport and its companion behaviour, sharing `control` (from the
/// swarm's `libp2p_stream::Behaviour`) for signaling streams.
#[cfg(target_arch = "wasm32")]
pub fn new(config: Config, control: libp2p_stream::Control) -> (Transport, Behaviour) {
    let dials = behaviour::SharedDials::default();
    (
        Transport::new(config, control, dials.clone()),
        Behaviour::new(dials),
    )
}
