//! Everything that differs between native peers and the browser, in one
//! place: transports, mDNS, timers. Both modules offer the same items; the
//! rest of the crate is written once against them. Natively the transports
//! and mDNS come with the `transports` feature (on by default); without it
//! there is no [`build_swarm`] and the crate's user builds the swarm with
//! transports of its own.

use std::time::Duration;

pub use imp::*;

pub mod files;
#[cfg(target_arch = "wasm32")]
mod secured;
#[cfg(all(not(target_arch = "wasm32"), feature = "transports"))]
mod settle;
#[cfg(any(target_arch = "wasm32", test))]
mod socket;

#[cfg(any(target_arch = "wasm32", feature = "transports"))]
use crate::engine::error_chain;

/// How long an idle connection stays open. Chat connections are long-lived
/// and mostly quiet, so this is generous.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a connection may take to set up (libp2p's default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// A transport could not be set up.
    #[error("transport setup: {0}")]
    Transport(String),
    /// The behaviour could not be built.
    #[error("{0}")]
    Behaviour(String),
}

#[cfg(any(target_arch = "wasm32", feature = "transports"))]
type BoxedError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(any(target_arch = "wasm32", feature = "transports"))]
fn transport_err(e: impl std::error::Error) -> SwarmError {
    SwarmError::Transport(error_chain(&e))
}

/// No mDNS: in a browser, and natively without the `transports` feature.
#[cfg(any(target_arch = "wasm32", not(feature = "transports")))]
mod without_mdns {
    use std::convert::Infallible;

    use libp2p::{Multiaddr, PeerId, swarm::dummy};

    /// A stand-in that does nothing.
    pub type Mdns = dummy::Behaviour;

    /// None: there is no mDNS here.
    pub fn mdns(_: PeerId) -> std::io::Result<Option<Mdns>> {
        Ok(None)
    }

    /// Never called: the stand-in emits nothing.
    pub fn mdns_discovered(event: Infallible) -> Vec<(PeerId, Multiaddr)> {
        match event {}
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use libp2p::{Multiaddr, PeerId};

    #[cfg(feature = "transports")]
    pub use transports::*;
    // Without them: no mDNS, and the crate's user builds the swarm.
    #[cfg(not(feature = "transports"))]
    pub use super::without_mdns::*;

    /// Native peers run AutoNAT, DCUtR and mDNS.
    pub const NATIVE: bool = true;

    /// Runs `task` on a task of its own, beside the engine: on tokio, as the
    /// native swarm's connections do.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    /// No `/webrtc` (private-to-private) natively: see ARCHITECTURE.md.
    pub const WEBRTC: bool = false;

    /// AutoNAT.
    pub type Autonat = libp2p::autonat::Behaviour;
    /// Hole punching.
    pub type Dcutr = libp2p::dcutr::Behaviour;
    /// Relaying for others.
    pub type RelayServer = libp2p::relay::Behaviour;

    /// AutoNAT with upstream defaults (its timings on the nodes' clock,
    /// [`crate::clock`]): probes only of global addresses, so no relay can
    /// be used to scan private networks.
    pub fn autonat(peer_id: PeerId) -> Option<Autonat> {
        use crate::clock::real;
        let d = libp2p::autonat::Config::default();
        let config = libp2p::autonat::Config {
            timeout: real(d.timeout),
            boot_delay: real(d.boot_delay),
            refresh_interval: real(d.refresh_interval),
            retry_interval: real(d.retry_interval),
            throttle_server_period: real(d.throttle_server_period),
            throttle_clients_period: real(d.throttle_clients_period),
            ..d
        };
        Some(Autonat::new(peer_id, config))
    }

    /// Hole punching through relayed connections.
    pub fn dcutr(peer_id: PeerId) -> Option<Dcutr> {
        Some(Dcutr::new(peer_id))
    }

    /// The relay server of a relay node.
    pub fn relay_server(peer_id: PeerId, config: libp2p::relay::Config) -> Option<RelayServer> {
        Some(RelayServer::new(peer_id, config))
    }

    /// The local listener a dial to `addr` needs first, if any: native
    /// WebRTC-direct dials go out from a listening UDP socket.
    pub fn listener_for_dial(addr: &Multiaddr) -> Option<Multiaddr> {
        use libp2p::multiaddr::Protocol;
        let mut protocols = addr.iter();
        // A loopback target gets a loopback socket: nothing else needs to
        // learn an address of ours on another interface.
        let ip = match protocols.next()? {
            Protocol::Ip4(ip) if ip.is_loopback() => Protocol::Ip4(ip),
            Protocol::Ip4(_) => Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED),
            Protocol::Ip6(ip) if ip.is_loopback() => Protocol::Ip6(ip),
            Protocol::Ip6(_) => Protocol::Ip6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        addr.iter().any(|p| p == Protocol::WebRTCDirect).then(|| {
            Multiaddr::empty()
                .with(ip)
                .with(Protocol::Udp(0))
                .with(Protocol::WebRTCDirect)
        })
    }

    /// The native transports and mDNS (the `transports` feature).
    #[cfg(feature = "transports")]
    mod transports {
        use libp2p::{
            Multiaddr, PeerId, Swarm, SwarmBuilder, Transport as _,
            core::{transport::OptionalTransport, upgrade},
            identity::Keypair,
            mdns, noise,
            swarm::NetworkBehaviour,
            tcp, yamux,
        };

        use std::time::Duration;

        use super::super::{
            BoxedError, CONNECT_TIMEOUT, IDLE_CONNECTION_TIMEOUT, SwarmError, error_chain,
            transport_err,
        };
        use crate::behaviour::{Behaviour, BehaviourConfig, Boxed, TransportParts};

        /// The WebRTC-direct certificate; its hash is part of the listen address.
        pub use libp2p_webrtc::tokio::Certificate;

        /// mDNS on the tokio runtime.
        pub type Mdns = mdns::tokio::Behaviour;

        /// Starts mDNS.
        pub fn mdns(peer_id: PeerId) -> std::io::Result<Option<Mdns>> {
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).map(Some)
        }

        /// Peers an mDNS event reports as newly found.
        pub fn mdns_discovered(
            event: <Mdns as NetworkBehaviour>::ToSwarm,
        ) -> Vec<(PeerId, Multiaddr)> {
            match event {
                mdns::Event::Discovered(found) => found,
                mdns::Event::Expired(_) => Vec::new(),
            }
        }

        /// The longest the streams we open on an accepted WebRTC-direct
        /// connection wait for the remote's first stream (see `arch/settle.rs`).
        const WEBRTC_INBOUND_SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

        /// A fresh WebRTC certificate.
        pub fn new_certificate() -> Certificate {
            // `generate` ignores its rng and cannot fail with default parameters.
            match Certificate::generate(&mut rand::rng()) {
                Ok(cert) => cert,
                Err(e) => unreachable!("WebRTC certificate generation failed: {e}"),
            }
        }

        /// The certificate and key a node serves secure WebSocket with.
        pub use libp2p::websocket::tls::Config as WebsocketTls;

        /// Transport settings of a native node.
        #[derive(Default)]
        pub struct TransportConfig {
            /// WebRTC-direct certificate; a fresh one when `None`.
            pub webrtc_certificate: Option<Certificate>,
            /// With it the node can listen on secure WebSocket (`/tls/ws`);
            /// without, only dial it.
            pub websocket_tls: Option<WebsocketTls>,
            /// How long one connection attempt may take, handshakes included
            /// ([`CONNECT_TIMEOUT`] when `None`).
            pub connect_timeout: Option<Duration>,
        }

        /// Builds a swarm with TCP, QUIC, WebRTC-direct, DNS, WebSocket and
        /// relayed transports (Noise + Yamux where the transport lacks its own).
        pub async fn build_swarm(
            keypair: Keypair,
            transport: TransportConfig,
            config: &BehaviourConfig,
        ) -> Result<Swarm<Boxed<Behaviour>>, SwarmError> {
            // quinn brings aws-lc-rs and webrtc brings ring: with two providers
            // rustls cannot pick one itself and WebRTC-direct handshakes panic.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let certificate = transport.webrtc_certificate.unwrap_or_else(new_certificate);
            let swarm = SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(transport_err)?
                .with_quic()
                .with_other_transport(|key| {
                    libp2p_webrtc::tokio::Transport::new(key.clone(), certificate).map(
                        |(peer, connection), endpoint| {
                            let wait = endpoint.is_listener().then_some(WEBRTC_INBOUND_SETTLE);
                            (peer, super::super::settle::Settle::new(connection, wait))
                        },
                    )
                })
                .map_err(transport_err)?
                // Listening on secure WebSocket. It sits under DNS, unlike the
                // WebSocket transport below, which dials (`/tls/ws` included,
                // with the name a `/dns` address gives for TLS) and listens on
                // plain `/ws`: without a server certificate it passes `/tls/ws`
                // listen addresses on to this one.
                .with_other_transport(|key| -> Result<_, BoxedError> {
                    let Some(tls) = transport.websocket_tls else {
                        return Ok(OptionalTransport::none());
                    };
                    let mut ws = libp2p::websocket::Config::new(tcp::tokio::Transport::new(
                        tcp::Config::default().nodelay(true),
                    ));
                    ws.set_tls_config(tls);
                    Ok(OptionalTransport::some(
                        ws.upgrade(upgrade::Version::V1Lazy)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default()),
                    ))
                })
                .map_err(transport_err)?
                .with_dns()
                .map_err(transport_err)?
                .with_websocket(noise::Config::new, yamux::Config::default)
                .await
                .map_err(transport_err)?
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(transport_err)?
                .with_behaviour(|key, relay_client| {
                    let parts = TransportParts {
                        relay_client,
                        streams: libp2p_stream::Behaviour::new(),
                        webrtc: None,
                    };
                    Behaviour::new(key, parts, config)
                        .map(Boxed::new)
                        .map_err(BoxedError::from)
                })
                .map_err(|e| SwarmError::Behaviour(error_chain(&e)))?;
            Ok(swarm
                .with_swarm_config(|c| {
                    c.with_idle_connection_timeout(crate::clock::real(IDLE_CONNECTION_TIMEOUT))
                })
                .with_connection_timeout(transport.connect_timeout.unwrap_or(CONNECT_TIMEOUT))
                .build())
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use futures::future::Either;
    use libp2p::{
        Multiaddr, PeerId, Swarm, SwarmBuilder, Transport as _,
        core::{muxing::StreamMuxerBox, transport::timeout::TransportTimeout},
        identity::Keypair,
        relay,
        swarm::dummy,
        webrtc_websys, websocket_websys,
    };

    use super::{
        BoxedError, CONNECT_TIMEOUT, IDLE_CONNECTION_TIMEOUT, SwarmError, error_chain,
        secured::secured, transport_err,
    };
    use crate::behaviour::{Behaviour, BehaviourConfig, Boxed, TransportParts};

    /// Browsers cannot be dialed back or hole-punched, nor use mDNS.
    pub const NATIVE: bool = false;

    /// Runs `task` on a task of its own, beside the engine: on the page's
    /// event loop.
    pub fn spawn(task: impl Future<Output = ()> + 'static) {
        wasm_bindgen_futures::spawn_local(task);
    }

    /// Browsers link to each other over `/webrtc` (through a relay first).
    pub const WEBRTC: bool = true;

    pub use super::without_mdns::*;

    /// No AutoNAT in a browser (it cannot be dialed back); a stand-in keeps
    /// its code out of the page.
    pub type Autonat = dummy::Behaviour;
    /// No hole punching in a browser.
    pub type Dcutr = dummy::Behaviour;
    /// A browser relays for nobody.
    pub type RelayServer = dummy::Behaviour;

    /// None in a browser.
    pub fn autonat(_: PeerId) -> Option<Autonat> {
        None
    }

    /// None in a browser.
    pub fn dcutr(_: PeerId) -> Option<Dcutr> {
        None
    }

    /// None in a browser.
    pub fn relay_server(_: PeerId, _: libp2p::relay::Config) -> Option<RelayServer> {
        None
    }

    /// Browsers dial without listening.
    pub fn listener_for_dial(_: &Multiaddr) -> Option<Multiaddr> {
        None
    }

    /// Transport settings of a browser node.
    #[derive(Default)]
    pub struct TransportConfig {
        /// The `/webrtc` (browser-to-browser) transport's settings.
        pub webrtc: meshtalk_webrtc::Config,
    }

    /// Builds a swarm with `/webrtc`, relayed, WebRTC-direct and WebSocket
    /// (Noise + Yamux) transports.
    pub async fn build_swarm(
        keypair: Keypair,
        transport: TransportConfig,
        config: &BehaviourConfig,
    ) -> Result<Swarm<Boxed<Behaviour>>, SwarmError> {
        let (relay_transport, relay_client) = relay::client::new(keypair.public().to_peer_id());
        let streams = libp2p_stream::Behaviour::new();
        // Each transport gets libp2p's usual 10 s to connect, but `/webrtc`,
        // which has its own limit for the whole handshake (relayed link,
        // signaling, ICE) and says which step failed; the swarm-wide
        // limit stays above it.
        let handshake = transport.webrtc.handshake_timeout;
        let (webrtc, webrtc_helper) = meshtalk_webrtc::new(transport.webrtc, streams.new_control());
        let parts = TransportParts {
            relay_client,
            streams,
            webrtc: Some(webrtc_helper),
        };
        let swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_wasm_bindgen()
            .with_other_transport(|key| {
                // Built here rather than by the builder's relay step, which
                // would put the relay client first: it takes
                // `…/p2p-circuit/webrtc/p2p/X` for a plain circuit to X.
                let relayed = secured(relay_transport, key)?;
                Ok::<_, BoxedError>(webrtc.or_transport(relayed).map(|either, _| match either {
                    Either::Left((peer, c)) => (peer, StreamMuxerBox::new(c)),
                    Either::Right(relayed) => relayed,
                }))
            })
            .map_err(transport_err)?
            .with_other_transport(|key| {
                let direct = webrtc_websys::Transport::new(webrtc_websys::Config::new(key));
                TransportTimeout::new(direct, CONNECT_TIMEOUT)
            })
            .map_err(transport_err)?
            .with_other_transport(|key| {
                secured(
                    websocket_websys::Transport::default()
                        .map(|conn, _| super::socket::NoFlushWait(conn)),
                    key,
                )
            })
            .map_err(transport_err)?
            .with_behaviour(|key| {
                Behaviour::new(key, parts, config)
                    .map(Boxed::new)
                    .map_err(BoxedError::from)
            })
            .map_err(|e| SwarmError::Behaviour(error_chain(&e)))?;
        Ok(swarm
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(crate::clock::real(IDLE_CONNECTION_TIMEOUT))
            })
            .with_connection_timeout(handshake + CONNECT_TIMEOUT)
            .build())
    }
}
