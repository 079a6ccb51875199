//! The libp2p behaviour every meshtalk peer runs, browser, CLI and relay alike.

use std::{fmt, str::FromStr, time::Duration};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol, connection_limits,
    gossipsub::{self, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, ValidationMode},
    identify,
    identity::Keypair,
    kad,
    multiaddr::Protocol,
    relay,
};

use crate::{
    arch, clock,
    discovery::{Source, Sources},
    history::Tap,
};

/// The connection methods of a `NetworkBehaviour` that wraps another in
/// its `inner` field and changes only what the inner one hands out: each
/// passes the call on to `inner` (see `dht.rs`). With `handler = f`, `f`
/// wraps each connection handler `inner` makes (see `boxed.rs`). With
/// `except inbound and swarm events`, `handle_established_inbound_connection`
/// and `on_swarm_event` are left to the wrapper (see `gossip.rs`).
macro_rules! pass_connections_to_inner {
    () => {
        pass_connections_to_inner!(handler = std::convert::identity);
    };
    (handler = $wrap:expr) => {
        pass_connections_to_inner!(handler = $wrap, except inbound and swarm events);

        fn handle_established_inbound_connection(
            &mut self,
            connection_id: ConnectionId,
            peer: PeerId,
            local_addr: &Multiaddr,
            remote_addr: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            self.inner
                .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
                .map($wrap)
        }

        fn on_swarm_event(&mut self, event: FromSwarm) {
            self.inner.on_swarm_event(event);
        }
    };
    (handler = $wrap:expr, except inbound and swarm events) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: ConnectionId,
            local_addr: &Multiaddr,
            remote_addr: &Multiaddr,
        ) -> Result<(), ConnectionDenied> {
            self.inner
                .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
        }

        fn handle_pending_outbound_connection(
            &mut self,
            connection_id: ConnectionId,
            maybe_peer: Option<PeerId>,
            addresses: &[Multiaddr],
            effective_role: Endpoint,
        ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
            self.inner.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection_id: ConnectionId,
            peer: PeerId,
            addr: &Multiaddr,
            role_override: Endpoint,
            port_use: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            self.inner
                .handle_established_outbound_connection(
                    connection_id,
                    peer,
                    addr,
                    role_override,
                    port_use,
                )
                .map($wrap)
        }
    };
}

mod boxed;
mod dht;
mod gossip;
mod ip_limits;
pub use boxed::{Boxed, BoxedHandler};
pub use dht::Dht;
pub use gossip::{Gossip, GossipEvent};

/// Identify's protocol version string for meshtalk peers.
pub const PROTOCOL_VERSION: &str = "/meshtalk/1.0.0";
/// Kademlia protocol id: meshtalk's own DHT, apart from the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshtalk/kad/1.0.0");
/// Most peers a relay keeps in its mesh of one room (gossipsub's D_high),
/// unless configured otherwise.
pub const RELAY_MESH_MAX: usize = 4096;
/// Per peer, a relay grants a reservation or a circuit about once per
/// [`RELAY_RATE_INTERVAL`], up to this many in a burst (libp2p's defaults).
const RELAY_RATE_PER_PEER: std::num::NonZeroU32 = std::num::NonZeroU32::new(30).unwrap();
/// See [`RELAY_RATE_PER_PEER`].
const RELAY_RATE_INTERVAL: Duration = Duration::from_secs(2 * 60);
/// From one IP address, a relay grants a reservation or a circuit about
/// once per [`RELAY_RATE_IP_INTERVAL`], up to this many in a burst
/// (libp2p's defaults), unless per-address caps are off.
const RELAY_RATE_PER_IP: std::num::NonZeroU32 = std::num::NonZeroU32::new(60).unwrap();
/// See [`RELAY_RATE_PER_IP`].
const RELAY_RATE_IP_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a Kademlia query runs.
const DHT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a Kademlia request waits for its answer (libp2p's default).
const DHT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often Kademlia bootstraps anyway (libp2p's default).
const DHT_BOOTSTRAP_EVERY: Duration = Duration::from_secs(5 * 60);
/// Members named to a peer pruned from a mesh, when peer exchange is on.
pub const PX_PEERS: usize = 16;
/// Gossipsub application score a node gives the relays it identifies. With
/// gossipsub's default weight (10) it lifts a relay to the threshold above
/// which peer exchange is accepted: relays are the network's bootstrappers,
/// which is whom the gossipsub spec means that threshold for. Invalid
/// messages from a relay still bring its score down.
pub const RELAY_APP_SCORE: f64 = 1.0;
/// Identify agent name of relays (followed by `/<version>`).
pub const RELAY_AGENT: &str = "meshtalk-relay";
/// How long a room provider record lives in the DHT.
pub const PROVIDER_TTL: Duration = Duration::from_secs(10 * 60);
/// How often a peer announces itself again as a provider of its rooms:
/// well before the record expires.
pub const PROVIDER_REPUBLISH: Duration = Duration::from_secs(4 * 60);
/// Kademlia's replication factor, unless configured otherwise: how many of
/// the DHT's servers (relays) closest to a key hold a room's provider
/// records, and how many a provider lookup or announcement looks for.
/// (libp2p-kad 0.49 does not apply it to bootstraps and closest-peer
/// queries: those look for 20.)
pub const DHT_REPLICATION: std::num::NonZeroUsize = std::num::NonZeroUsize::new(20).unwrap();
/// Largest gossipsub message accepted on the wire (room messages are far
/// smaller; raw topics may carry more).
pub const MAX_TRANSMIT_SIZE: usize = 64 * 1024;

/// What kind of node this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A chat peer (CLI or browser).
    Peer,
    /// A relay and bootstrap node: relay server, Kademlia server, AutoNAT
    /// server, and a member of every room its peers use.
    Relay,
}

/// Which pubsub router a peer runs. Both sign every message and validate
/// room messages alike; they differ in whom a message is sent to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pubsub {
    /// Gossipsub (`/meshsub/1.x`): a message goes to a few mesh peers per
    /// topic, and the others hear of it through gossip. It speaks floodsub
    /// too, with peers that only speak that.
    #[default]
    Gossipsub,
    /// Floodsub (`/floodsub/1.0.0`): every message goes to every connected
    /// peer subscribed to its topic.
    Floodsub,
}

impl FromStr for Pubsub {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gossipsub" => Ok(Self::Gossipsub),
            "floodsub" => Ok(Self::Floodsub),
            other => Err(format!(
                "unknown pubsub router {other:?} (use gossipsub or floodsub)"
            )),
        }
    }
}

impl fmt::Display for Pubsub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gossipsub => "gossipsub",
            Self::Floodsub => "floodsub",
        })
    }
}

/// The protocol a floodsub peer's router lists in place of gossipsub's,
/// which rust-libp2p's gossipsub cannot drop, only replace: no peer speaks
/// it, so floodsub is the one negotiated with everybody.
pub const NO_MESHSUB_PROTOCOL: &str = "/meshtalk/no-meshsub/1.0.0";

/// Connection and relay limits; defaults are safe for a public relay.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Established connections in total.
    pub max_connections: u32,
    /// Established connections with one peer.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in the handshake.
    pub max_pending_incoming: u32,
    /// Incoming connections from one IP address (IPv6: one /64); `None`
    /// for no cap.
    pub max_connections_per_ip: Option<u32>,
    /// Relay reservations held at once (relay role).
    pub max_reservations: usize,
    /// Relay reservations per peer.
    pub max_reservations_per_peer: usize,
    /// Relayed circuits at once.
    pub max_circuits: usize,
    /// Relayed circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Longest a relayed circuit stays open.
    pub max_circuit_duration: Duration,
    /// Most bytes relayed through one circuit.
    pub max_circuit_bytes: u64,
    /// Most peers a relay keeps in its mesh of one room; above it, it
    /// prunes (naming other members when peer exchange is on).
    pub room_mesh_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            max_connections_per_peer: 4,
            max_pending_incoming: 256,
            max_connections_per_ip: Some(64),
            max_reservations: 1024,
            max_reservations_per_peer: 4,
            max_circuits: 512,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 64 * 1024 * 1024,
            room_mesh_max: RELAY_MESH_MAX,
        }
    }
}

/// How to build a [`Behaviour`].
#[derive(Clone, Debug)]
pub struct BehaviourConfig {
    /// Peer or relay.
    pub role: Role,
    /// Discovery sources switched on (mDNS is native only; peer exchange
    /// makes gossipsub name other peers when it prunes one from a mesh).
    pub sources: Sources,
    /// Connection and relay limits.
    pub limits: Limits,
    /// The pubsub router (relays always run gossipsub, which serves
    /// floodsub peers too).
    pub pubsub: Pubsub,
    /// Kademlia's replication factor ([`DHT_REPLICATION`] by default).
    pub dht_replication: std::num::NonZeroUsize,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            role: Role::Peer,
            sources: Sources::default(),
            limits: Limits::default(),
            pubsub: Pubsub::default(),
            dht_replication: DHT_REPLICATION,
        }
    }
}

pub use composed::{Behaviour, BehaviourEvent};

/// The derive generates `BehaviourEvent`, whose variants cannot carry docs.
#[allow(missing_docs)]
mod composed {
    use libp2p::{
        allow_block_list, connection_limits, identify, relay,
        swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    };

    use crate::arch;

    /// The behaviour of a meshtalk node. Optional parts are [`Toggle`]s so that
    /// every node, whatever its role or platform, has this one type.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Peers refused for a while (a relay's graylisted flooders).
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Caps on connections (checked first, so it can deny early).
        pub limits: connection_limits::Behaviour,
        /// A cap on incoming connections per IP address.
        pub ip_limits: super::ip_limits::IpLimits,
        /// Reserving slots on relays and dialing through them.
        pub relay_client: relay::client::Behaviour,
        /// Relaying for others (relay role).
        pub relay_server: Toggle<arch::RelayServer>,
        /// The chat itself.
        pub gossipsub: super::Gossip,
        /// Exchanging listen addresses and protocols.
        pub identify: identify::Behaviour,
        /// Plain streams for meshtalk's own stream protocols (ping) and
        /// for `/webrtc` signaling.
        pub streams: libp2p_stream::Behaviour,
        /// Relayed connections for `/webrtc` signaling (browser).
        pub webrtc: Toggle<meshtalk_webrtc::Behaviour>,
        /// The DHT: bootstrap, peer routing.
        pub kad: super::Dht,
        /// Learning whether we are publicly reachable (native).
        pub autonat: Toggle<arch::Autonat>,
        /// Hole punching through relayed connections (native).
        pub dcutr: Toggle<arch::Dcutr>,
        /// Local network discovery (native).
        pub mdns: Toggle<arch::Mdns>,
    }
}

/// A [`Behaviour`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    /// Gossipsub rejected its configuration.
    #[error("gossipsub configuration: {0}")]
    Gossipsub(String),
    /// mDNS could not start.
    #[error("mDNS: {0}")]
    Mdns(#[from] std::io::Error),
}

/// The parts of a [`Behaviour`] that share state with the transports, so
/// they are made with them (in [`arch`]).
pub struct TransportParts {
    /// The relay client's half (its transport dials circuits).
    pub relay_client: relay::client::Behaviour,
    /// Plain streams; the `/webrtc` transport signals through them.
    pub streams: libp2p_stream::Behaviour,
    /// The `/webrtc` transport's companion, where there is that transport.
    pub webrtc: Option<meshtalk_webrtc::Behaviour>,
}

impl Behaviour {
    /// Builds the behaviour for `keypair` around the parts made with the
    /// transports.
    pub fn new(
        keypair: &Keypair,
        parts: TransportParts,
        config: &BehaviourConfig,
    ) -> Result<Self, BehaviourError> {
        let TransportParts {
            relay_client,
            streams,
            webrtc,
        } = parts;
        let peer_id = keypair.public().to_peer_id();
        let relay_role = config.role == Role::Relay;
        let l = &config.limits;

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(l.max_connections))
                .with_max_established_per_peer(Some(l.max_connections_per_peer))
                .with_max_pending_incoming(Some(l.max_pending_incoming)),
        );

        let relay_server = relay_role
            .then(|| {
                let defaults = relay::Config::default();
                let mut config = relay::Config {
                    max_reservations: l.max_reservations,
                    max_reservations_per_peer: l.max_reservations_per_peer,
                    reservation_duration: clock::real(defaults.reservation_duration),
                    max_circuits: l.max_circuits,
                    max_circuits_per_peer: l.max_circuits_per_peer,
                    max_circuit_duration: clock::real(l.max_circuit_duration),
                    max_circuit_bytes: l.max_circuit_bytes,
                    ..defaults
                };
                config.reservation_rate_limiters.clear();
                config.circuit_src_rate_limiters.clear();
                let per_peer = clock::real(RELAY_RATE_INTERVAL);
                config = config
                    .reservation_rate_per_peer(RELAY_RATE_PER_PEER, per_peer)
                    .circuit_src_per_peer(RELAY_RATE_PER_PEER, per_peer);
                // With no per-address cap (peers behind one NAT or proxy),
                // no per-address reservation and circuit rates either,
                // which would refuse all but a few of them.
                if l.max_connections_per_ip.is_some() {
                    let per_ip = clock::real(RELAY_RATE_IP_INTERVAL);
                    config = config
                        .reservation_rate_per_ip(RELAY_RATE_PER_IP, per_ip)
                        .circuit_src_per_ip(RELAY_RATE_PER_IP, per_ip);
                }
                arch::relay_server(peer_id, config)
            })
            .flatten();

        let mesh_max = relay_role.then_some(l.room_mesh_max);
        let tap = Tap::new(keypair);
        let pubsub = if relay_role {
            Pubsub::Gossipsub
        } else {
            config.pubsub
        };
        let gossipsub = gossipsub(
            keypair,
            pubsub,
            mesh_max,
            config.sources.has(Source::PeerExchange),
            tap.clone(),
        )?;

        let asks = identify::Config::new(PROTOCOL_VERSION.to_owned(), keypair.public())
            .with_agent_version(agent_version(config.role));
        let interval = clock::real(asks.interval());
        let identify = identify::Behaviour::new(asks.with_interval(interval));

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(clock::real(DHT_QUERY_TIMEOUT))
            .set_substreams_timeout(clock::real(DHT_REQUEST_TIMEOUT))
            .set_periodic_bootstrap_interval(Some(clock::real(DHT_BOOTSTRAP_EVERY)))
            .set_replication_factor(config.dht_replication)
            // Only peers that identify confirmed as speaking meshtalk's DHT
            // protocol enter the routing table (the engine adds them).
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            .set_provider_publication_interval(Some(clock::real(PROVIDER_REPUBLISH)))
            .set_provider_record_ttl(Some(clock::real(PROVIDER_TTL)));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Relays are the DHT's servers. Peers stay clients: many sit behind
        // NAT or in browsers, and a relayed address is a poor place to
        // serve queries from.
        kad.set_mode(Some(match config.role {
            Role::Relay => kad::Mode::Server,
            Role::Peer => kad::Mode::Client,
        }));

        let autonat = arch::autonat(peer_id);
        let dcutr = arch::dcutr(peer_id);
        let mdns = if config.sources.has(Source::Mdns) {
            arch::mdns(peer_id)?
        } else {
            None
        };

        Ok(Self {
            blocked: Default::default(),
            limits,
            ip_limits: ip_limits::IpLimits::new(l.max_connections_per_ip),
            relay_client,
            relay_server: relay_server.into(),
            gossipsub: Gossip::new(gossipsub, tap),
            identify,
            streams,
            webrtc: webrtc.into(),
            kad: Dht::new(kad),
            autonat: autonat.into(),
            dcutr: dcutr.into(),
            mdns: mdns.into(),
        })
    }
}

/// Gossipsub's heartbeat: how often it mends meshes and gossips.
const HEARTBEAT: Duration = Duration::from_millis(700);

/// How long one of our messages may wait in a neighbour's send queue.
pub const PUBLISH_QUEUE_WAIT: Duration = Duration::from_secs(120);

/// Whether an identify agent version is a meshtalk relay's.
pub fn is_relay_agent(agent: &str) -> bool {
    agent.split('/').next() == Some(RELAY_AGENT)
}

/// A relay's addresses as its identify listen addresses give them: full
/// (with `/p2p/`), and without relayed ones (a relay is reached directly).
pub fn relay_addrs(relay: PeerId, listen_addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    listen_addrs
        .iter()
        .filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
        .map(|a| a.clone().with_p2p(relay).unwrap_or_else(|a| a))
        .collect()
}

/// Identify's agent version: `meshtalk-relay/<version>` for relays, which is
/// how peers and pages learn which of their neighbours are relays.
pub fn agent_version(role: Role) -> String {
    let name = match role {
        Role::Peer => "meshtalk",
        Role::Relay => RELAY_AGENT,
    };
    format!("{name}/{}", env!("CARGO_PKG_VERSION"))
}

/// Gossipsub as meshtalk uses it: signed messages, strict validation, every
/// message validated by the application before it is forwarded, and peer
/// scoring that punishes invalid messages. With `peer_exchange`, a peer
/// pruning another from a mesh names up to [`PX_PEERS`] other members, and
/// a pruned peer takes the names from a peer it scores well.
///
/// A relay (`relay_mesh_max` set) is the hub its peers (browsers above all)
/// hang on: by default it keeps every peer that grafts it in its mesh. With
/// gossipsub's usual upper bound (12) it would prune the rest, and they
/// would get messages only through lazy gossip, late or not at all. An
/// operator may cap it lower to spare the relay; the pruned peers then
/// link to each other through the members peer exchange names.
///
/// Gossipsub serves floodsub peers too: it floods every message to them.
/// [`Pubsub::Floodsub`] is that router with floodsub as its only protocol
/// (see [`NO_MESHSUB_PROTOCOL`]), so it floods to everybody and grafts,
/// prunes and gossips with nobody.
fn gossipsub(
    keypair: &Keypair,
    pubsub: Pubsub,
    relay_mesh_max: Option<usize>,
    peer_exchange: bool,
    tap: Tap,
) -> Result<gossipsub::Behaviour<Tap>, BehaviourError> {
    let err = |e: &dyn std::fmt::Display| BehaviourError::Gossipsub(e.to_string());
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_TRANSMIT_SIZE)
        // Gossipsub's default ids, but universal-connectivity's on its topics.
        .message_id_fn(crate::uc::message_id)
        .heartbeat_interval(clock::real(HEARTBEAT))
        // Our own messages wait in a neighbour's queue rather than being
        // dropped after gossipsub's 5 s: the engine holds the rest until
        // the queues drain (back-pressure, not loss).
        .publish_queue_duration(clock::real(PUBLISH_QUEUE_WAIT));
    // Gossipsub's other timings, on the nodes' clock.
    let d = gossipsub::Config::default();
    builder
        .heartbeat_initial_delay(clock::real(d.heartbeat_initial_delay()))
        .fanout_ttl(clock::real(d.fanout_ttl()))
        .duplicate_cache_time(clock::real(d.duplicate_cache_time()))
        .prune_backoff(clock::real(d.prune_backoff()))
        .unsubscribe_backoff(clock::real(d.unsubscribe_backoff()))
        .graft_flood_threshold(clock::real(d.graft_flood_threshold()))
        .iwant_followup_time(clock::real(d.iwant_followup_time()))
        .forward_queue_duration(clock::real(d.forward_queue_duration()));
    if pubsub == Pubsub::Floodsub {
        builder.protocol_id(NO_MESHSUB_PROTOCOL, gossipsub::Version::V1_0);
    }
    builder.support_floodsub();
    if let Some(max) = relay_mesh_max {
        // Gossipsub needs D_out <= D_lo <= D <= D_hi and 2 * D_out <= D;
        // its defaults are 2, 5, 6 and 12.
        let max = max.max(1);
        let target = max.min(6);
        builder
            .mesh_n_high(max)
            .mesh_n(target)
            .mesh_n_low(target.min(5))
            .mesh_outbound_min((target / 2).min(2));
    }
    if peer_exchange {
        builder.do_px().prune_peers(PX_PEERS);
    }
    let config = builder.build().map_err(|e| err(&e))?;
    let mut behaviour = gossipsub::Behaviour::new_with_transform(
        MessageAuthenticity::Signed(keypair.clone()),
        config,
        tap,
    )
    .map_err(|e| err(&e))?;
    let defaults = PeerScoreParams::default();
    let params = PeerScoreParams {
        // Browsers behind one NAT, and every test peer on loopback, share an
        // IP address: that is no sign of a Sybil attack here.
        ip_colocation_factor_weight: 0.0,
        decay_interval: clock::real(defaults.decay_interval),
        retain_score: clock::real(defaults.retain_score),
        ..defaults
    };
    behaviour
        .with_peer_score(params, PeerScoreThresholds::default())
        .map_err(|e| err(&e))?;
    Ok(behaviour)
}

/// Score parameters for a room topic: invalid messages cost a lot, quiet
/// rooms cost nothing (a chat room may be silent for hours).
pub fn room_score_params() -> gossipsub::TopicScoreParams {
    let defaults = gossipsub::TopicScoreParams::default();
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: clock::real(Duration::from_secs(1)),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.3,
        mesh_message_deliveries_window: clock::real(defaults.mesh_message_deliveries_window),
        mesh_message_deliveries_activation: clock::real(
            defaults.mesh_message_deliveries_activation,
        ),
        ..defaults
    }
}
