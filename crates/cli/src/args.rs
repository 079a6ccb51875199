//! Command-line arguments.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use meshtalk::node::{Node, listen_addrs};
use meshtalk_protocol::{
    behaviour::Pubsub,
    discovery::{Discovery, Source, Sources, Watermarks},
    engine::EngineConfig,
    keyfile,
    libp2p::{Multiaddr, PeerId},
    rooms::Room,
};

/// meshtalk: a peer-to-peer chat over libp2p gossipsub. Chat in rooms with
/// browsers and other native peers, publish and subscribe to any topic,
/// ping peers, and explore the DHT.
#[derive(Debug, Parser)]
#[command(name = "meshtalk", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat in a room: stdin lines are sent, received messages are printed
    /// as `[room] nick: text`. `/nick NAME` sets the nickname.
    Chat(ChatArgs),
    /// Publish each stdin line to a gossipsub topic.
    Publish(PubSubArgs),
    /// Print every message on a gossipsub topic, one per line.
    Subscribe(PubSubArgs),
    /// Dial a peer and print ping round-trip times and the transport used.
    Ping(PingArgs),
    /// Listen, print our full addresses, and stay up for others to dial.
    Listen(ListenArgs),
    /// Explore the Kademlia DHT through a relay.
    Dht(DhtArgs),
    /// Run a bot that answers `!help`, `!ping`, `!peers`, `!time` and
    /// `!echo TEXT` in its room and by direct message.
    Bot(BotArgs),
}

/// Options every networked subcommand shares.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Relay or peer to connect to (repeatable or comma-separated), e.g.
    /// /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo... These are the bootstrap list:
    /// when a connection to one drops, the peer dials it again (waiting
    /// longer after each failure) and meanwhile chats through the others or
    /// through relays found in the DHT. Without it, peers on the local
    /// network are found by mDNS.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "MESHTALK_CONNECT",
        value_delimiter = ','
    )]
    pub connect: Vec<Multiaddr>,

    /// Address to listen on as well (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// Seconds to wait for a connection before giving up (each dial,
    /// handshakes included, may take this long).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,

    /// Discovery sources to use, comma-separated, from: bootstrap (the
    /// --connect list), random-walk (Kademlia queries for random keys), mdns
    /// (the local network), peer-exchange (gossipsub names peers when it
    /// prunes), rooms (members of our rooms announced in the DHT).
    /// [default: all but mdns; mdns alone when --connect is not given]
    #[arg(
        long,
        value_name = "SOURCES",
        env = "MESHTALK_DISCOVERY",
        value_delimiter = ','
    )]
    pub discovery: Option<Vec<Source>>,

    /// Low watermark: with fewer connections than this, dial discovered
    /// peers.
    #[arg(long, value_name = "N", default_value = "2")]
    pub min_peers: usize,

    /// High watermark: with more connections than this, close the least
    /// useful ones (those sharing no room with us, newest first).
    #[arg(long, value_name = "N", default_value = "8")]
    pub max_peers: usize,

    /// Keep our peer id in this file (created if missing, readable by us
    /// only), so others know us across restarts; without it each run is
    /// a new peer. One running peer per file: libp2p cannot have one peer
    /// id twice.
    #[arg(long, value_name = "FILE", env = "MESHTALK_IDENTITY")]
    pub identity: Option<PathBuf>,

    /// Pubsub router: gossipsub (a few mesh links per room, gossip for the
    /// rest) or floodsub (every message to every connected member).
    /// Relays speak both, so the two kinds share rooms.
    #[arg(long, value_name = "ROUTER", default_value = "gossipsub")]
    pub pubsub: Pubsub,
}

impl NetArgs {
    /// Starts a peer with these flags' discovery settings and listen
    /// addresses (not connected yet: see [`Node::connect`]).
    pub async fn start(&self, engine: EngineConfig) -> Result<Node> {
        let engine = EngineConfig {
            discovery: self.discovery()?,
            ..engine
        };
        let listen = listen_addrs(&self.connect, &self.listen);
        let keypair = keyfile::identity(self.identity.as_deref())?;
        Node::start_as(keypair, engine, self.pubsub, &listen, self.timeout).await
    }

    /// The discovery settings these flags ask for.
    pub fn discovery(&self) -> Result<Discovery> {
        if self.max_peers == 0 || self.min_peers > self.max_peers {
            bail!(
                "--min-peers {} and --max-peers {}: need 1 <= max-peers and min-peers <= max-peers",
                self.min_peers,
                self.max_peers
            );
        }
        let sources = match &self.discovery {
            Some(list) => Sources::only(list.iter().copied()),
            None if self.connect.is_empty() => Sources::only([Source::Mdns]),
            None => Sources::default(),
        };
        Ok(Discovery {
            bootstrap: self.connect.clone(),
            sources,
            watermarks: Watermarks {
                low: self.min_peers,
                high: self.max_peers,
            },
            ..Discovery::default()
        })
    }
}

/// `meshtalk chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub net: NetArgs,

    /// Room to join: 1 to 64 characters from A-Z a-z 0-9 . _ -
    #[arg(
        long,
        value_name = "ROOM",
        default_value = "lobby",
        env = "MESHTALK_ROOM"
    )]
    pub room: Room,

    /// Nickname shown to others (at most 64 bytes).
    #[arg(long, value_name = "NAME", env = "MESHTALK_NICK")]
    pub nick: Option<String>,

    /// Print one JSON object per line on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Seconds a direct message (`/msg PEER_ID TEXT`) is tried before it
    /// is reported as failed.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub dm_timeout: Duration,

    /// Do not ask peers for what was said in the room before we joined
    /// (history lines are marked "(earlier)", or `"history": true`).
    #[arg(long)]
    pub no_history: bool,

    /// Largest file `/get` fetches, in bytes (K, M and G suffixes, powers
    /// of 1024, are accepted: 100M). With `--compat uc`, also the largest
    /// file its peers' announcements fetch (4M at most).
    #[arg(long, value_name = "BYTES", default_value = "100M", value_parser = parse_size)]
    pub max_file_size: u64,

    /// Directory `/get` saves files into (under their announced names,
    /// never overwriting); with `--compat uc`, also the files its peers
    /// announce (under their ids).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub download_dir: PathBuf,

    /// Chat with another application's peers: `uc` is libp2p's
    /// universal-connectivity demo (its chat topic, plain-text lines, its
    /// direct messages, its files: fetched at once when announced, as its
    /// peers do). The room is then `universal-connectivity`.
    #[arg(long, value_name = "APP", value_parser = ["uc"])]
    pub compat: Option<String>,
}

/// A size in bytes: `300000`, `64K`, `100M`, `2G`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size (like 300000, 64K, 100M or 2G)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 300000, 64K, 100M or 2G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `meshtalk publish` and `meshtalk subscribe`.
#[derive(Debug, Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub net: NetArgs,

    /// Gossipsub topic, e.g. `meshtalk/room/lobby` or another program's
    /// topic such as `p2p-pubsub`.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,

    /// Carry bytes as they are instead of meshtalk chat messages (one
    /// message per line, newline stripped).
    #[arg(long)]
    pub raw: bool,
}

/// `meshtalk ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Address of the peer to ping.
    #[arg(value_name = "MULTIADDR")]
    pub addr: Multiaddr,

    /// Number of round trips to measure.
    #[arg(long, short = 'c', default_value = "5", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// Seconds to wait for the connection and for each reply.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

/// `meshtalk listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on (repeatable). [default: TCP, QUIC, WebSocket and
    /// WebRTC-direct on 0.0.0.0, free ports]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// Room to join while listening, so chat peers that dial us form a mesh.
    #[arg(long, value_name = "ROOM", default_value = "lobby")]
    pub room: Room,

    /// Keep our peer id in this file (created if missing, readable by us
    /// only): the addresses we print stay valid across restarts.
    #[arg(long, value_name = "FILE", env = "MESHTALK_IDENTITY")]
    pub identity: Option<PathBuf>,
}

/// `meshtalk bot`.
#[derive(Debug, Args)]
pub struct BotArgs {
    /// Relay to connect to (repeatable or comma-separated); dialed again
    /// after a loss.
    #[arg(long, value_name = "MULTIADDR", required = true, value_delimiter = ',')]
    pub connect: Vec<Multiaddr>,

    /// Room the bot serves.
    #[arg(long, value_name = "ROOM", default_value = "lobby")]
    pub room: Room,

    /// The bot's nickname.
    #[arg(long, value_name = "NAME", default_value = "robot")]
    pub nick: String,

    /// Keep the bot's peer id in this file (created if missing), so people
    /// can /msg it across restarts.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// `meshtalk dht`.
#[derive(Debug, Args)]
pub struct DhtArgs {
    #[command(flatten)]
    pub net: NetArgs,

    /// What to do in the DHT.
    #[command(subcommand)]
    pub action: DhtAction,
}

/// DHT actions.
#[derive(Debug, Subcommand)]
pub enum DhtAction {
    /// Bootstrap and print each routing-table update.
    Bootstrap {
        /// Keep running and printing updates after the bootstrap.
        #[arg(long)]
        watch: bool,
    },
    /// Find a peer's addresses by its id.
    FindPeer {
        /// The peer id to look for.
        #[arg(value_name = "PEER_ID")]
        peer: PeerId,
    },
    /// List the members of a room announced in the DHT (providers of the
    /// room's key), with their addresses.
    Providers {
        /// The room.
        #[arg(long, value_name = "ROOM")]
        room: Room,
    },
    /// Run discovery for a while and print what each source found.
    Discover {
        /// Seconds to run.
        #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
        duration: Duration,
        /// Join this room meanwhile (as a silent member), so that its
        /// members are looked up in the DHT (rooms) and a peer pruning us
        /// from the room's mesh can name others (peer-exchange).
        #[arg(long, value_name = "ROOM")]
        room: Option<Room>,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("300000"), Ok(300_000));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("100M"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
