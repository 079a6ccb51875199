//! # meshtalk-protocol
//!
//! Everything a meshtalk peer needs, for native peers and for the browser
//! (wasm32) alike:
//!
//! - [`wire`]: the protobuf wire format (`proto/meshtalk.proto`),
//! - [`validate`]: the rules every received message must pass,
//! - [`rooms`]: room names and their gossipsub topics,
//! - [`behaviour`]: the libp2p [`behaviour::Behaviour`] every peer runs,
//! - [`engine`]: the chat engine every binary drives,
//! - [`clock`]: the nodes' time (slowed down in simulations),
//! - [`discovery`]: discovery sources and neighbour management,
//! - [`peer_record`]: where a page can be linked to directly, announced to
//!   its rooms,
//! - [`arch`]: the one place where native and browser code differ.
//!
//! Natively, the `transports` feature (on by default) brings TCP, QUIC,
//! WebSocket, WebRTC-direct, DNS and mDNS, and `arch::build_swarm` to put
//! them together. With `default-features = false` the rest of the crate is
//! there and builds in well under half the time, for a swarm built with
//! transports of one's own (the fuzz targets build that way).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meshtalk_protocol::{arch, behaviour::{BehaviourConfig, Role}, engine::{Engine, EngineConfig, Event}, rooms::Room};
//! use futures::StreamExt;
//!
//! let keypair = libp2p::identity::Keypair::generate_ed25519();
//! let swarm = arch::build_swarm(keypair, Default::default(), &BehaviourConfig::default()).await?;
//! let config = EngineConfig { rooms: vec![Room::lobby()], ..Default::default() };
//! let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, config);
//! tokio::spawn(engine.run());
//! handle.dial("/ip4/127.0.0.1/tcp/4001".parse()?).await?;
//! handle.send(Room::lobby(), "hello").await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message { nick, message, .. } = event {
//!         println!("{}: {}", nick.unwrap_or_default(), message.text);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod arch;
pub mod behaviour;
pub mod clock;
pub mod discovery;
pub mod dm;
pub mod engine;
pub mod files;
pub mod framing;
pub mod history;
pub mod keyfile;
pub mod peer_record;
pub mod ping;
pub mod rooms;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod testing;
pub mod transport;
pub mod uc;
pub mod validate;
pub mod wire;

pub use libp2p;
pub use libp2p_stream;
pub use meshtalk_webrtc;
