//! Relay settings: command-line flags, environment variables and an optional
//! TOML file, resolved into one [`Settings`]. Flags and variables win over
//! the file; the file wins over defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use meshtalk_protocol::{
    behaviour::Limits, engine::PublishLimit, history, libp2p::Multiaddr, transport::Transport,
};
use serde::Deserialize;

use crate::{
    tls::Tls,
    web::{self, WebRoot},
};

/// meshtalk relay and bootstrap node: circuit relay v2, Kademlia server,
/// AutoNAT server and a gossipsub member of every room its peers use.
/// Serves an HTTP API with its addresses and Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "meshtalk-relay", version)]
pub struct Args {
    /// Listen address (repeatable or comma-separated); replaces the four
    /// defaults (TCP 4001, QUIC 4001, WebSocket 4002, WebRTC-direct 4002 on
    /// 127.0.0.1). Port 0 picks a free port.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "MESHTALK_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<Multiaddr>,

    /// Address announced to peers in addition to the listen addresses, for a
    /// relay behind NAT or a load balancer (repeatable or comma-separated).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "MESHTALK_EXTERNAL_ADDR",
        value_delimiter = ','
    )]
    pub external_addr: Vec<Multiaddr>,

    /// Another relay to join (repeatable or comma-separated), e.g.
    /// /ip4/203.0.113.7/tcp/4001/p2p/12D3Koo... The relays share one DHT and
    /// one gossipsub mesh, so peers on different relays chat together. A
    /// lost connection is dialed again, waiting longer after each failure;
    /// relays found in the DHT are linked to as well.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "MESHTALK_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<Multiaddr>,

    /// HTTP API address (`/api/addrs`, `/metrics`, `/healthz`); port 0 picks
    /// a free port. [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", env = "MESHTALK_HTTP")]
    pub http: Option<SocketAddr>,

    /// Directory for the identity key and WebRTC certificate, so the peer id
    /// and certhash survive restarts. [default: the platform data directory]
    #[arg(long, value_name = "DIR", env = "MESHTALK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Directory of the browser page served at `/` (`cargo xtask web` builds it).
    /// [default: the workspace's dist/ when `cargo xtask web` has built it]
    #[arg(long, value_name = "DIR", env = "MESHTALK_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Most HTTP connections open at once (the page, the API, metrics);
    /// more are closed at once. [default: 256]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_HTTP_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_connections: Option<u32>,

    /// PEM certificate chain (leaf first) for TLS; with --tls-key the relay
    /// serves HTTP over HTTPS and can listen on secure WebSocket
    /// (`/tls/ws`), which pages served over https need. Without --listen it
    /// adds /ip4/127.0.0.1/tcp/4003/tls/ws to the defaults.
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHTALK_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHTALK_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// TOML file with any of these settings (keys as the flag names).
    #[arg(long, value_name = "FILE", env = "MESHTALK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Most established connections in total. [default: 2048]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,

    /// Most established connections with one peer. [default: 4]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<u32>,

    /// Most incoming connections from one IP address (IPv6: one /64),
    /// handshakes included; 0 for no cap (and no per-address limit on
    /// relay reservations and circuits either). Behind a reverse proxy
    /// every connection comes from the proxy: raise it or turn it off.
    /// [default: 64]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<u32>,

    /// Most relay reservations held at once. [default: 1024]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_RESERVATIONS")]
    pub max_reservations: Option<usize>,

    /// Most relayed circuits at once. [default: 512]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_CIRCUITS")]
    pub max_circuits: Option<usize>,

    /// Most relayed circuits per peer. [default: 16]
    #[arg(long, value_name = "N", env = "MESHTALK_MAX_CIRCUITS_PER_PEER")]
    pub max_circuits_per_peer: Option<usize>,

    /// Longest life of a relayed circuit, in seconds. [default: 1800]
    #[arg(long, value_name = "SECS", env = "MESHTALK_MAX_CIRCUIT_SECS")]
    pub max_circuit_secs: Option<u64>,

    /// Most bytes relayed through one circuit. [default: 67108864]
    #[arg(long, value_name = "BYTES", env = "MESHTALK_MAX_CIRCUIT_BYTES")]
    pub max_circuit_bytes: Option<u64>,

    /// Most peers kept in the relay's mesh of one room; above it the relay
    /// prunes some and names other members to them (gossipsub peer
    /// exchange), so they link to each other. Lower it to spare a busy
    /// relay of native peers; pages cannot link to each other, and pruned
    /// ones get messages only by gossip, late and not always. [default: 4096]
    #[arg(long, value_name = "N", env = "MESHTALK_ROOM_MESH_MAX",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub room_mesh_max: Option<u16>,

    /// Chat lines of each room the relay keeps and serves to peers that
    /// join later; 0 keeps none. [default: 1000]
    #[arg(long, value_name = "N", env = "MESHTALK_HISTORY_PER_ROOM")]
    pub history_per_room: Option<usize>,

    /// Messages a second the relay forwards from one author (any topic);
    /// beyond it, after a burst of --publish-burst, they are dropped, and
    /// an author that sends them itself loses gossipsub score until it is
    /// graylisted and disconnected. 0 forwards everything. [default: 100]
    #[arg(long, value_name = "N", env = "MESHTALK_PUBLISH_RATE")]
    pub publish_rate: Option<u32>,

    /// Messages one author may publish at once before --publish-rate
    /// applies. [default: 1000]
    #[arg(long, value_name = "N", env = "MESHTALK_PUBLISH_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub publish_burst: Option<u32>,

    /// Chat lines the relay keeps in all rooms together; beyond it the
    /// oldest go, whatever their room. [default: 100000]
    #[arg(long, value_name = "N", env = "MESHTALK_HISTORY_TOTAL")]
    pub history_total: Option<usize>,

    /// Age in hours after which a room's lines are no longer kept.
    /// [default: 168, a week]
    #[arg(long, value_name = "HOURS", env = "MESHTALK_HISTORY_MAX_AGE",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_age: Option<u64>,
}

/// The same settings in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<Vec<Multiaddr>>,
    external_addr: Option<Vec<Multiaddr>>,
    bootstrap: Option<Vec<Multiaddr>>,
    http: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    web_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_http_connections: Option<u32>,
    max_connections: Option<u32>,
    max_connections_per_peer: Option<u32>,
    max_connections_per_ip: Option<u32>,
    max_reservations: Option<usize>,
    max_circuits: Option<usize>,
    max_circuits_per_peer: Option<usize>,
    max_circuit_secs: Option<u64>,
    max_circuit_bytes: Option<u64>,
    room_mesh_max: Option<u16>,
    history_per_room: Option<usize>,
    history_total: Option<usize>,
    history_max_age: Option<u64>,
    publish_rate: Option<u32>,
    publish_burst: Option<u32>,
}

/// Resolved relay settings.
#[derive(Debug)]
pub struct Settings {
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Announced external addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// Other relays to join.
    pub bootstrap: Vec<Multiaddr>,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Where keys live.
    pub data_dir: PathBuf,
    /// The browser page.
    pub web: WebRoot,
    /// TLS for HTTPS and `/tls/ws`, when configured.
    pub tls: Option<Tls>,
    /// Most HTTP connections open at once.
    pub max_http_connections: usize,
    /// Connection and relay limits.
    pub limits: Limits,
    /// Room history kept and served.
    pub history: history::store::Limits,
    /// The publish rate limit per author; `None`: none.
    pub publish_limit: Option<PublishLimit>,
}

/// The four default listen addresses, on loopback: exposing a relay is a
/// deliberate `--listen`.
pub fn default_listen() -> Vec<Multiaddr> {
    [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/127.0.0.1/tcp/4002/ws",
        "/ip4/127.0.0.1/udp/4002/webrtc-direct",
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// The secure WebSocket address added to the defaults when TLS is set.
const DEFAULT_TLS_LISTEN: &str = "/ip4/127.0.0.1/tcp/4003/tls/ws";

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("meshtalk")
        .join("relay")
}

impl Settings {
    /// Resolves flags, the config file they name, and defaults.
    pub fn resolve(args: Args) -> Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
            }
            None => FileConfig::default(),
        };
        let pick_vec = |flag: Vec<Multiaddr>, file: Option<Vec<Multiaddr>>| {
            if flag.is_empty() { file } else { Some(flag) }
        };
        let defaults = Limits::default();
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(Tls::load(&cert, &key)?),
            (None, None) => None,
            _ => anyhow::bail!("tls-cert and tls-key go together: give both or neither"),
        };
        let listen = match pick_vec(args.listen, file.listen) {
            Some(listen) => listen,
            None => {
                let mut listen = default_listen();
                if tls.is_some() {
                    listen.extend(DEFAULT_TLS_LISTEN.parse().ok());
                }
                listen
            }
        };
        if tls.is_none()
            && let Some(addr) = listen.iter().find(|a| Transport::is_secure_websocket(a))
        {
            anyhow::bail!(
                "listen address {addr} is secure WebSocket: give --tls-cert and --tls-key"
            );
        }
        let publish_limit = {
            let defaults = PublishLimit::default();
            match args.publish_rate.or(file.publish_rate) {
                Some(0) => None,
                rate => Some(PublishLimit {
                    per_second: rate.unwrap_or(defaults.per_second),
                    burst: match args.publish_burst.or(file.publish_burst) {
                        Some(0) => anyhow::bail!("publish-burst must be at least 1"),
                        Some(burst) => burst,
                        None => defaults.burst,
                    },
                }),
            }
        };
        Ok(Self {
            listen,
            tls,
            publish_limit,
            external_addrs: pick_vec(args.external_addr, file.external_addr).unwrap_or_default(),
            bootstrap: pick_vec(args.bootstrap, file.bootstrap).unwrap_or_default(),
            http: args
                .http
                .or(file.http)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(default_data_dir),
            web: match args.web_dir.or(file.web_dir) {
                Some(dir) => WebRoot::Dir(web::check_dir(&dir)?),
                None => web::workspace_dist().map_or(WebRoot::Missing, WebRoot::Dir),
            },
            max_http_connections: match args.max_http_connections.or(file.max_http_connections) {
                Some(0) => anyhow::bail!("max-http-connections must be at least 1"),
                Some(n) => n as usize,
                None => crate::http::MAX_CONNECTIONS,
            },
            limits: Limits {
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.max_connections),
                max_connections_per_peer: args
                    .max_connections_per_peer
                    .or(file.max_connections_per_peer)
                    .unwrap_or(defaults.max_connections_per_peer),
                max_connections_per_ip: match args
                    .max_connections_per_ip
                    .or(file.max_connections_per_ip)
                {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => defaults.max_connections_per_ip,
                },
                max_reservations: args
                    .max_reservations
                    .or(file.max_reservations)
                    .unwrap_or(defaults.max_reservations),
                max_circuits: args
                    .max_circuits
                    .or(file.max_circuits)
                    .unwrap_or(defaults.max_circuits),
                max_circuits_per_peer: args
                    .max_circuits_per_peer
                    .or(file.max_circuits_per_peer)
                    .unwrap_or(defaults.max_circuits_per_peer),
                max_circuit_duration: args
                    .max_circuit_secs
                    .or(file.max_circuit_secs)
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.max_circuit_duration),
                max_circuit_bytes: args
                    .max_circuit_bytes
                    .or(file.max_circuit_bytes)
                    .unwrap_or(defaults.max_circuit_bytes),
                room_mesh_max: match args.room_mesh_max.or(file.room_mesh_max) {
                    Some(0) => anyhow::bail!("room-mesh-max must be at least 1"),
                    Some(n) => usize::from(n),
                    None => defaults.room_mesh_max,
                },
                ..defaults
            },
            history: {
                let defaults = history::store::Limits::default();
                history::store::Limits {
                    per_room: args
                        .history_per_room
                        .or(file.history_per_room)
                        .unwrap_or(defaults.per_room),
                    total: args
                        .history_total
                        .or(file.history_total)
                        .unwrap_or(defaults.total),
                    max_age: match args.history_max_age.or(file.history_max_age) {
                        Some(0) => anyhow::bail!("history-max-age must be at least 1 hour"),
                        Some(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                        None => defaults.max_age,
                    },
                }
            },
        })
    }
}
