//! `cargo xtask bench --sim`: a thousand peers and twenty relays in one
//! process, over a simulated wide-area network ([`meshtalk_tests::sim`]).
//!
//! Every node is the real swarm and engine (gossipsub, Kademlia, identify,
//! neighbour management, relays with circuit relay and history) with
//! Noise and Yamux over in-memory links that delay each byte by the link's
//! one-way delay (20–150 ms by default, fixed per pair of nodes). The
//! relays bootstrap from the first one; each peer knows one relay at
//! random and finds the rest itself. All peers are in one room. Once the
//! network has settled, peers chosen at random publish `--rate` messages
//! a second for `--secs` seconds.
//!
//! Reports the delivery ratio (every message to every other peer), the
//! time from publishing to each delivery and to the last peer reached
//! (p50/p99), how many deliveries came within 300 ms, the pubsub copies
//! received per delivered message (duplicates included, relays too), and
//! the connections per peer. And where the time went: the fastest each
//! delivery could have come over the links the nodes held (link delays
//! alone), the hops each delivery took (every node's first copy traced
//! back to the publisher), and how long the receiving engine held a
//! message before the application had it. Writes `target/bench/sim.json`.
//! Not in CI: it takes minutes and gigabytes.
//!
//! Every node shares this machine's cores, so a network too large for them
//! runs slow: timers fire late, handshakes and pings time out, and the
//! figures then measure the machine rather than the protocol. A probe
//! therefore times how late a 50 ms timer fires all along, and the report
//! says when the simulation fell behind real time. `--dilation N` then
//! slows every node's clock N times ([`meshtalk_protocol::clock`]) and
//! lengthens every link delay N times: the network runs as it would on
//! machines N times faster, and every time reported (and every duration
//! given on the command line) is the nodes' time.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    num::NonZeroUsize,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    arch::IDLE_CONNECTION_TIMEOUT,
    behaviour::{
        Behaviour, BehaviourConfig, BehaviourEvent, Boxed, DHT_REPLICATION, GossipEvent, Role,
        TransportParts,
    },
    clock,
    discovery::{Discovery, Source, Sources, peer_of},
    engine::{Engine, EngineConfig, EngineHandle, Event, HistoryConfig},
    libp2p::{
        Multiaddr, PeerId, SwarmBuilder,
        core::{Transport as _, upgrade},
        gossipsub,
        identity::Keypair,
        noise,
        swarm::SwarmEvent,
        yamux,
    },
    libp2p_stream,
    rooms::Room,
    transport::Transport,
    wire::{self, Payload},
};
use meshtalk_tests::{
    load::rss_mb,
    sim::{SimNet, SimTransport, port_of},
    stats::{log_from_env, machine, percentile, write_results},
};
use serde_json::json;
use tokio::sync::mpsc;

/// meshtalk large-scale simulation (in one process, no real network).
#[derive(Parser)]
struct Args {
    /// Relays in the network.
    #[arg(long, default_value = "20")]
    relays: usize,
    /// Peers, each told about one relay.
    #[arg(long, default_value = "1000")]
    peers: usize,
    /// Shortest one-way link delay, in ms.
    #[arg(long, default_value = "20")]
    min_delay_ms: u64,
    /// Longest one-way link delay, in ms.
    #[arg(long, default_value = "150")]
    max_delay_ms: u64,
    /// Messages per second, all peers together.
    #[arg(long, default_value = "2")]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value = "30")]
    secs: u64,
    /// Seconds the network settles (discovery, meshes) before publishing.
    #[arg(long, default_value = "60")]
    settle: u64,
    /// Seed of the link delays and of who publishes.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Seconds to wait for deliveries after the last message was handed
    /// over; the run ends sooner once no delivery came for 10 s.
    #[arg(long, default_value = "60")]
    drain: u64,
    /// Peers that join the network per second, until all have (a network
    /// grows; it does not start whole). Settling starts after the last.
    #[arg(long, default_value = "250", value_parser = positive)]
    arrivals: f64,
    /// Kademlia's replication factor of every node: how many relays a
    /// room's provider records go to and a provider lookup looks for
    /// (bootstraps and random walks do not use it).
    #[arg(long, default_value_t = DHT_REPLICATION)]
    dht_replication: NonZeroUsize,
    /// Time dilation: every node's clock runs this many times slower than
    /// the wall clock and every link delay is this many times longer, so
    /// the network behaves as on machines this many times faster (for
    /// networks too large to run in real time here). Durations given
    /// above and reported are the nodes' time.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1000))]
    dilation: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/sim.json")]
    out: PathBuf,
}

/// How often the lag probe's timer is due.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// A timer firing later than this on p99 means the simulation could not
/// keep up: lags of the order of the shortest link delay distort every
/// figure.
const BEHIND_MS: f64 = 20.0;

/// Times how late a periodic timer fires on the shared runtime: each
/// sample is (when, how late in the nodes' ms). Every engine's timers and
/// wake-ups wait in the same queues, so this is how far the simulation
/// runs behind the nodes' time.
fn lag_probe() -> Arc<Mutex<Vec<(Instant, f64)>>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    tokio::spawn(async move {
        loop {
            let due = Instant::now() + clock::real(PROBE_EVERY);
            tokio::time::sleep(clock::real(PROBE_EVERY)).await;
            let now = Instant::now();
            let late = ms(now.saturating_duration_since(due));
            out.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((now, late));
        }
    });
    samples
}

/// `wall` time as the nodes' milliseconds.
fn ms(wall: Duration) -> f64 {
    clock::node(wall).as_secs_f64() * 1e3
}

/// p50, p99 and the largest of the probe's lags between `from` and `to`.
fn lags(samples: &[(Instant, f64)], from: Instant, to: Instant) -> (f64, f64, f64) {
    let mut late: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .map(|(_, late)| *late)
        .collect();
    late.sort_by(f64::total_cmp);
    (
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
    )
}

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// What a peer's event reader passes on.
enum Seen {
    Message {
        seq: usize,
    },
    Connected {
        peer: PeerId,
        /// We dialed it.
        outbound: bool,
        /// Through a relay (a circuit).
        circuit: bool,
    },
    Disconnected(PeerId),
    /// The neighbour manager closed a link it did not need.
    Pruned(PeerId),
    /// A room message of ours went to gossipsub.
    Published,
    /// Our messages wait for a peer in the room.
    Held,
    /// Our neighbours' queues were full.
    Slowed,
}

/// Connections peers dialed, by kind, and links their neighbour managers
/// pruned: what churn is made of.
#[derive(Default)]
struct Opened {
    /// Direct connections to relays.
    to_relays: usize,
    /// Direct connections to other peers.
    to_peers: usize,
    /// Connections to other peers through a relay.
    through_relays: usize,
    /// Connections relays opened to peers.
    from_relays: usize,
    pruned: usize,
    /// Of those, links to relays.
    pruned_relays: usize,
    /// Which links were pruned (pruner, pruned): fewer than `pruned`
    /// when a link was pruned, opened again and pruned again.
    pruned_links: HashSet<(usize, PeerId)>,
}

impl Opened {
    fn count(&mut self, i: usize, seen: &Seen, relays: &HashSet<PeerId>) {
        match *seen {
            Seen::Connected {
                outbound: false,
                peer,
                ..
            } => self.from_relays += usize::from(relays.contains(&peer)),
            Seen::Connected { circuit: true, .. } => self.through_relays += 1,
            Seen::Connected { peer, .. } if relays.contains(&peer) => self.to_relays += 1,
            Seen::Connected { .. } => self.to_peers += 1,
            Seen::Pruned(peer) => {
                self.pruned += 1;
                self.pruned_relays += usize::from(relays.contains(&peer));
                self.pruned_links.insert((i, peer));
            }
            _ => {}
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "to_relays": self.to_relays,
            "to_peers": self.to_peers,
            "through_relays": self.through_relays,
            "from_relays": self.from_relays,
            "pruned": self.pruned,
            "pruned_relays": self.pruned_relays,
            "pruned_links": self.pruned_links.len(),
        })
    }
}

impl std::fmt::Display for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to relays, {} to peers directly, {} through relays ({} opened by relays); {} links pruned ({} to relays; {} different links)",
            self.to_relays,
            self.to_peers,
            self.through_relays,
            self.from_relays,
            self.pruned,
            self.pruned_relays,
            self.pruned_links.len()
        )
    }
}

/// What became of a message handed to a publisher's engine.
struct Handed {
    /// How long the engine took to take it.
    took: Duration,
    /// It did not take it within 5 s, or refused it.
    failed: bool,
}

/// Builds a node on the simulated network: the usual behaviour and engine
/// over a [`SimTransport`]. Returns the engine (not started), its handle
/// and events, and its address.
fn node(
    net: &SimNet,
    role: Role,
    sources: &Sources,
    dht_replication: NonZeroUsize,
    mut config: EngineConfig,
) -> Result<(
    Engine,
    EngineHandle,
    futures::channel::mpsc::UnboundedReceiver<Event>,
    Multiaddr,
)> {
    let transport: SimTransport = net.node();
    let addr = transport.addr();
    if role == Role::Relay {
        // Relays are reachable where they listen, as a deployed relay
        // says with --external-address.
        config.external_addrs.push(addr.clone());
    }
    let behaviour = BehaviourConfig {
        role,
        sources: sources.clone(),
        dht_replication,
        ..BehaviourConfig::default()
    };
    let swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_other_transport(|key| -> Result<_, BoxedError> {
            Ok(transport
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .context("cannot build a simulated transport")?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .context("cannot build a simulated relay client")?
        .with_behaviour(|key, relay_client| {
            let parts = TransportParts {
                relay_client,
                streams: libp2p_stream::Behaviour::new(),
                webrtc: None,
            };
            Behaviour::new(key, parts, &behaviour)
                .map(Boxed::new)
                .map_err(BoxedError::from)
        })
        .map_err(|e| anyhow::anyhow!("cannot build a simulated node: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(clock::real(IDLE_CONNECTION_TIMEOUT)))
        .build();
    let peer_id = *swarm.local_peer_id();
    let full = addr.clone().with_p2p(peer_id).unwrap_or(addr);
    let (engine, handle, events) = Engine::new(swarm, role, config);
    Ok((engine, handle, events, full))
}

fn main() -> Result<()> {
    let args = Args::parse();
    log_from_env();
    clock::dilate(args.dilation)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let machine = machine();
    let result = runtime.block_on(run(&args, &machine))?;
    let json = json!({"machine": machine, "run": result});
    write_results(&args.out, &json)?;
    // A thousand engines take a while to drop; the figures are out.
    runtime.shutdown_background();
    Ok(())
}

/// A pseudo-random number from a seed and a counter.
fn pick(seed: u64, i: u64, below: usize) -> usize {
    let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % below.max(1) as u64) as usize
}

async fn run(args: &Args, machine: &str) -> Result<serde_json::Value> {
    let n = args.peers;
    anyhow::ensure!(
        n >= 2 && args.relays >= 1,
        "need at least 2 peers and 1 relay"
    );
    anyhow::ensure!(
        args.min_delay_ms <= args.max_delay_ms,
        "--min-delay-ms is above --max-delay-ms"
    );
    let wall_ms = |ms: u64| clock::real(Duration::from_millis(ms));
    let net = SimNet::new(
        wall_ms(args.min_delay_ms)..=wall_ms(args.max_delay_ms),
        args.seed,
    );
    let room = Room::new("sim")?;
    let started = Instant::now();
    // Nodes' events: peers are nodes 0..n, relays n.. in order.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Seen, Instant)>();
    let arrivals = Arrivals::default();
    let probe = lag_probe();
    let rss_start = rss_mb(std::process::id())?;

    // Relays: as `meshtalk-relay` runs them, without disk or HTTP.
    let relay_sources =
        Sources::only([Source::Bootstrap, Source::RandomWalk, Source::PeerExchange]);
    let mut relay_addrs: Vec<Multiaddr> = Vec::new();
    let mut relay_handles = Vec::new();
    let mut relay_tasks = Vec::new();
    for r in 0..args.relays {
        let config = EngineConfig {
            ping_interval: Some(Duration::from_secs(15)),
            discovery: Discovery {
                bootstrap: relay_addrs.first().cloned().into_iter().collect(),
                sources: relay_sources.clone(),
                ..Discovery::default()
            },
            history: HistoryConfig {
                fetch: false,
                ..HistoryConfig::default()
            },
            ..EngineConfig::default()
        };
        let (mut engine, handle, events, addr) = node(
            &net,
            Role::Relay,
            &relay_sources,
            args.dht_replication,
            config,
        )?;
        watch_arrivals(&mut engine, n + r, &arrivals);
        relay_tasks.push(tokio::spawn(engine.run()));
        tokio::spawn(read_events(n + r, events, tx.clone()));
        handle.listen(bare(&addr)).await?;
        relay_addrs.push(addr);
        relay_handles.push(handle);
    }
    eprintln!("bench: sim: {} relays up", args.relays);

    // Peers: native peers as `meshtalk` runs them, minus mDNS (there is no
    // LAN here), each told one relay.
    let peer_sources = Sources::only([
        Source::Bootstrap,
        Source::RandomWalk,
        Source::PeerExchange,
        Source::Rooms,
    ]);
    let mut handles = Vec::with_capacity(n);
    let mut peer_addrs = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n + args.relays);
    for i in 0..n {
        let relay = &relay_addrs[pick(args.seed, i as u64, relay_addrs.len())];
        let config = EngineConfig {
            rooms: vec![room.clone()],
            discovery: Discovery {
                bootstrap: vec![relay.clone()],
                sources: peer_sources.clone(),
                ..Discovery::default()
            },
            ..EngineConfig::default()
        };
        let (mut engine, handle, events, addr) = node(
            &net,
            Role::Peer,
            &peer_sources,
            args.dht_replication,
            config,
        )?;
        watch_arrivals(&mut engine, i, &arrivals);
        tasks.push(tokio::spawn(engine.run()));
        // Not awaited one by one: a thousand busy engines would take
        // minutes to start in turn.
        peer_addrs.push(addr.clone());
        let (starting, relay) = (handle.clone(), relay.clone());
        tokio::spawn(async move {
            if let Err(e) = starting.listen(bare(&addr)).await {
                eprintln!("bench: sim: a peer cannot listen: {e}");
            }
            if let Err(e) = starting.dial(relay).await {
                eprintln!("bench: sim: a peer cannot dial its relay: {e}");
            }
        });
        handles.push(handle);
        tokio::spawn(read_events(i, events, tx.clone()));
        // Peers arrive at `--arrivals` a second, not all in one instant.
        if i % 10 == 9 {
            tokio::time::sleep(clock::real(Duration::from_secs_f64(10.0 / args.arrivals))).await;
        }
    }
    drop(tx);
    let relay_ids: HashSet<PeerId> = relay_addrs.iter().filter_map(peer_of).collect();
    eprintln!(
        "bench: sim: {n} peers started after {:.1} s; settling {} s",
        clock::node(started.elapsed()).as_secs_f64(),
        args.settle
    );

    // Each node's links (peer → through a relay), peers first.
    let mut links: Vec<HashMap<PeerId, bool>> = vec![HashMap::new(); n + args.relays];
    let copies = |handles: &[EngineHandle]| -> u64 {
        handles
            .iter()
            .map(EngineHandle::pubsub_copies_received)
            .sum()
    };
    // The last seconds of settling measure the background: pubsub copies
    // that are not the benchmark's messages (peer records, presence).
    let background_window = Duration::from_secs(args.settle.min(10));
    let (settle, window) = (
        clock::real(Duration::from_secs(args.settle)),
        clock::real(background_window),
    );
    let settle_end = tokio::time::Instant::now() + settle;
    // The settled network is judged over the same last seconds.
    let quiet_from = Instant::now() + settle - window;
    let mut background_start = None;
    // Connections peers dialed in the last seconds of settling.
    let mut opened_settled = Opened::default();
    loop {
        let window_start = settle_end - window;
        if background_start.is_none() && tokio::time::Instant::now() >= window_start {
            background_start = Some(copies(&handles) + copies(&relay_handles));
        }
        let until = if background_start.is_none() {
            window_start
        } else {
            settle_end
        };
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some((i, seen, _))) => {
                if background_start.is_some() && i < n {
                    opened_settled.count(i, &seen, &relay_ids);
                }
                record(&mut links, i, seen);
            }
            Ok(None) => break,
            Err(_) if until == settle_end => break,
            Err(_) => {}
        }
    }
    let settled_at = Instant::now();
    let nodes: Vec<Multiaddr> = peer_addrs.iter().chain(&relay_addrs).cloned().collect();
    let index = node_index(&nodes);
    let paths = Paths::new(&links, &nodes, &index, &net);
    let rss_settled = rss_mb(std::process::id())?;
    let copies_before = copies(&handles) + copies(&relay_handles);
    let background_per_s = (copies_before - background_start.unwrap_or(copies_before)) as f64
        / background_window.as_secs_f64().max(1.0);

    let total = (args.rate * args.secs) as usize;
    let mut sent_at: Vec<Option<Instant>> = vec![None; total];
    let mut sender_of = vec![0usize; total];
    let mut got: Vec<Vec<Option<Duration>>> = vec![vec![None; n]; total];
    eprintln!(
        "bench: sim: publishing {} msg/s for {} s",
        args.rate, args.secs
    );
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last_delivery = Instant::now();
    // What the publishers' engines said of the messages handed to them.
    let (mut published, mut held, mut slowed) = (0usize, 0usize, 0usize);
    // How long the publishers' engines took to take a message (ms).
    let mut answered: Vec<f64> = Vec::with_capacity(total);
    let mut unanswered = 0usize;
    // Connections peers dialed while messages went round.
    let mut opened_publishing = Opened::default();
    let (handed_tx, mut handed_rx) = mpsc::unbounded_channel::<Handed>();
    let quiet_after = clock::real(Duration::from_secs(10));
    let drain = clock::real(Duration::from_secs(args.drain));
    let mut all_handed: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let elapsed = clock::node(start.elapsed()).as_secs_f64();
                let due = ((elapsed * args.rate as f64) as usize).min(total);
                while sent < due {
                    let from = pick(args.seed ^ 0x5eed, sent as u64, n);
                    sender_of[sent] = from;
                    sent_at[sent] = Some(Instant::now());
                    // Handed over in a task of its own: an engine too busy
                    // to take a message must not hold up the schedule.
                    let (handle, room, text) = (handles[from].clone(), room.clone(), format!("{sent}|"));
                    let handed = handed_tx.clone();
                    tokio::spawn(async move {
                        let asked = Instant::now();
                        let failed = !matches!(
                            tokio::time::timeout(clock::real(Duration::from_secs(5)), handle.send(room, text)).await,
                            Ok(Ok(()))
                        );
                        let _ = handed.send(Handed { took: clock::node(asked.elapsed()), failed });
                    });
                    sent += 1;
                }
                if sent == total && answered.len() + unanswered == total {
                    let handed = *all_handed.get_or_insert_with(Instant::now);
                    let quiet = last_delivery.elapsed().min(handed.elapsed()) > quiet_after;
                    if quiet || handed.elapsed() > drain {
                        break;
                    }
                }
            }
            Some(handed) = handed_rx.recv() => {
                if handed.failed {
                    unanswered += 1;
                } else {
                    answered.push(handed.took.as_secs_f64() * 1e3);
                }
            }
            next = rx.recv() => {
                let Some((i, seen, at)) = next else { break };
                match seen {
                    Seen::Message { seq } if seq < total && i < n => {
                        if let (Some(sent), None) = (sent_at[seq], got[seq][i]) {
                            got[seq][i] = Some(clock::node(at.saturating_duration_since(sent)));
                            last_delivery = Instant::now();
                        }
                    }
                    Seen::Message { .. } => {}
                    Seen::Published => published += 1,
                    Seen::Held => held += 1,
                    Seen::Slowed => slowed += 1,
                    other => {
                        if i < n {
                            opened_publishing.count(i, &other, &relay_ids);
                        }
                        record(&mut links, i, other);
                    }
                }
            }
        }
    }
    let ended = Instant::now();
    let wire = copies(&handles) + copies(&relay_handles) - copies_before;
    let background = background_per_s * clock::node(start.elapsed()).as_secs_f64();
    // An engine that stopped before the end panicked (it runs until its
    // handle is dropped).
    let stopped = tasks.iter().filter(|t| t.is_finished()).count();
    let relays_stopped = relay_tasks.iter().filter(|t| t.is_finished()).count();
    let rss_end = rss_mb(std::process::id())?;

    let expected = total * (n - 1);
    let mut latencies = Vec::with_capacity(expected);
    let mut to_all = Vec::new();
    // The fastest path to each receiver over the links held when
    // publishing began, and how much longer each delivery took.
    let mut fastest = Vec::with_capacity(expected);
    let mut beyond_fastest = Vec::with_capacity(expected);
    for (seq, receivers) in got.iter().enumerate() {
        let mut slowest = Duration::ZERO;
        let mut everyone = true;
        let best = paths.fastest_from(sender_of[seq]);
        for (i, delivery) in receivers.iter().enumerate() {
            if i == sender_of[seq] {
                continue;
            }
            fastest.push(best[i]);
            match delivery {
                Some(d) => {
                    let ms = d.as_secs_f64() * 1e3;
                    latencies.push(ms);
                    if best[i].is_finite() {
                        beyond_fastest.push(ms - best[i]);
                    }
                    slowest = slowest.max(*d);
                }
                None => everyone = false,
            }
        }
        if everyone {
            to_all.push(slowest.as_secs_f64() * 1e3);
        }
    }
    let delivered = latencies.len();
    latencies.sort_by(f64::total_cmp);
    to_all.sort_by(f64::total_cmp);
    let within_300 = latencies.iter().filter(|ms| **ms <= 300.0).count();
    let ways = Ways::new(&arrivals, &index, &sender_of, &sent_at, &got);
    fastest.sort_by(f64::total_cmp);
    beyond_fastest.sort_by(f64::total_cmp);
    let fastest_300 = fastest.iter().filter(|ms| **ms <= 300.0).count();
    let no_path = fastest.iter().filter(|ms| !ms.is_finite()).count();
    let (fast50, fast99) = (percentile(&fastest, 0.5), percentile(&fastest, 0.99));
    let (beyond50, beyond99) = (
        percentile(&beyond_fastest, 0.5),
        percentile(&beyond_fastest, 0.99),
    );
    let ratio = delivered as f64 / expected.max(1) as f64;
    let per_delivery = wire as f64 / delivered.max(1) as f64;
    let per_delivery_net = (wire as f64 - background).max(0.0) / delivered.max(1) as f64;
    // Connections: to other peers, and to relays.
    let mut counts: Vec<usize> = links[..n].iter().map(HashMap::len).collect();
    counts.sort_unstable();
    let mut relay_counts: Vec<usize> = links[..n]
        .iter()
        .map(|l| l.keys().filter(|p| relay_ids.contains(p)).count())
        .collect();
    relay_counts.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let (all50, all99) = (percentile(&to_all, 0.5), percentile(&to_all, 0.99));

    println!("\nmeshtalk simulation on {machine}");
    println!(
        "{} relays, {n} peers, one-way link delays {}–{} ms, {} msg/s for {} s",
        args.relays, args.min_delay_ms, args.max_delay_ms, args.rate, args.secs
    );
    if args.dilation > 1 {
        println!(
            "time dilated {}×: nodes' clocks ran {0} times slower than the wall clock (the run took {:.0} s), and every time here is theirs",
            args.dilation,
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "deliveries: {delivered}/{expected} ({:.2} %); {:.2} % of deliveries within 300 ms",
        ratio * 100.0,
        within_300 as f64 * 100.0 / expected.max(1) as f64
    );
    println!(
        "published: {published} of {total} went to gossipsub; held for want of a peer in the room {held} times, neighbours' queues full {slowed} times"
    );
    answered.sort_by(f64::total_cmp);
    let (took50, took_max) = (
        percentile(&answered, 0.5),
        answered.last().copied().unwrap_or(0.0),
    );
    println!(
        "engines took a message to send in p50 {took50:.0} ms, at most {took_max:.0} ms; {unanswered} did not take it within 5 s or refused it"
    );
    println!("publish to delivery: p50 {p50:.0} ms, p99 {p99:.0} ms");
    println!(
        "fastest path over the links held when publishing began (link delays only): p50 {fast50:.0} ms, p99 {fast99:.0} ms; {:.2} % of deliveries had one within 300 ms, {no_path} had none at all; deliveries took p50 {beyond50:.0} ms, p99 {beyond99:.0} ms longer than theirs",
        fastest_300 as f64 * 100.0 / expected.max(1) as f64
    );
    println!("{ways}");
    println!(
        "publish to the last peer: {}/{total} messages reached every peer; p50 {all50:.0} ms, p99 {all99:.0} ms",
        to_all.len()
    );
    println!(
        "pubsub copies received per delivered message: {per_delivery_net:.2} ({per_delivery:.2} with the background of {background_per_s:.0} copies/s)"
    );
    let stat = |c: &[usize]| {
        format!(
            "min {}, median {}, max {}",
            c.first().copied().unwrap_or(0),
            c.get(c.len() / 2).copied().unwrap_or(0),
            c.last().copied().unwrap_or(0)
        )
    };
    println!(
        "connections per peer: {} (of which to relays: {})",
        stat(&counts),
        stat(&relay_counts)
    );
    if stopped + relays_stopped > 0 {
        println!("engines that stopped (panicked): {stopped} peers, {relays_stopped} relays");
    }
    println!(
        "connections peers dialed, last {} s of settling: {opened_settled}",
        background_window.as_secs(),
    );
    println!(
        "connections peers dialed while publishing ({:.0} s): {opened_publishing}",
        clock::node(ended.duration_since(start)).as_secs_f64()
    );
    println!(
        "process memory: {rss_start:.0} MB at start, {rss_settled:.0} MB settled, {rss_end:.0} MB at the end"
    );
    let samples = probe.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let settling = lags(&samples, quiet_from, settled_at);
    let publishing = lags(&samples, start, ended);
    println!(
        "timer lag (a {} ms timer, how late it fired): last {} s of settling p50 {:.1} / p99 {:.1} / max {:.0} ms, publishing p50 {:.1} / p99 {:.1} / max {:.0} ms",
        PROBE_EVERY.as_millis(),
        background_window.as_secs(),
        settling.0,
        settling.1,
        settling.2,
        publishing.0,
        publishing.1,
        publishing.2
    );
    let behind = settling.1.max(publishing.1) > BEHIND_MS;
    if behind {
        println!(
            "this machine could not keep up: timers fired more than {BEHIND_MS:.0} ms late (p99), so the figures above measure its cores, not the protocol; simulate fewer peers or use more cores"
        );
    }

    Ok(json!({
        "relays": args.relays,
        "peers": n,
        "delay_ms": {"min": args.min_delay_ms, "max": args.max_delay_ms, "seed": args.seed},
        "rate_per_s": args.rate,
        "secs": args.secs,
        "settle_s": args.settle,
        "arrivals_per_s": args.arrivals,
        "dht_replication": args.dht_replication,
        "dilation": args.dilation,
        "deliveries": {"expected": expected, "delivered": delivered, "ratio": ratio, "within_300_ms": within_300},
        "published": {"to_gossipsub": published, "held": held, "slowed": slowed, "command_ms": {"p50": took50, "max": took_max}, "unanswered": unanswered},
        "latency_ms": {"p50": p50, "p99": p99},
        "ways": ways.json(),
        "fastest_path_ms": {"p50": fast50, "p99": fast99, "within_300_ms": fastest_300, "none": no_path, "beyond_p50": beyond50, "beyond_p99": beyond99},
        "to_every_peer_ms": {"messages": to_all.len(), "of": total, "p50": all50, "p99": all99},
        "copies_per_delivery": {"net": per_delivery_net, "raw": per_delivery, "background_per_s": background_per_s},
        "connections_per_peer": counts,
        "relay_connections_per_peer": relay_counts,
        "engines_stopped": {"peers": stopped, "relays": relays_stopped},
        "rss_mb": {"start": rss_start, "settled": rss_settled, "end": rss_end},
        "connections_dialed": {"settled_window": opened_settled.json(), "publishing": opened_publishing.json()},
        "timer_lag_ms": {
            "settling": {"p50": settling.0, "p99": settling.1, "max": settling.2},
            "publishing": {"p50": publishing.0, "p99": publishing.1, "max": publishing.2},
        },
        "fell_behind": behind,
    }))
}

/// The links the nodes held, weighted by each link's one-way delay: how
/// fast a message could have gone at best (no time spent in any node).
/// Links through a relay are left out: they add no path the relay's own
/// two links do not.
struct Paths {
    /// Per node: (neighbour, delay in the nodes' µs).
    adjacent: Vec<Vec<(usize, u64)>>,
}

impl Paths {
    /// `links[i]` are node `i`'s links (peer → through a relay), `nodes[i]`
    /// its address; `index` finds a node by its peer id.
    fn new(
        links: &[HashMap<PeerId, bool>],
        nodes: &[Multiaddr],
        index: &HashMap<PeerId, usize>,
        net: &SimNet,
    ) -> Self {
        let ports: Vec<Option<u64>> = nodes.iter().map(port_of).collect();
        let mut adjacent = vec![Vec::new(); nodes.len()];
        let mut done = HashSet::new();
        for (i, held) in links.iter().enumerate() {
            for (peer, through_relay) in held {
                let Some(&j) = index.get(peer).filter(|_| !through_relay) else {
                    continue;
                };
                let (a, b) = (i.min(j), i.max(j));
                if let (true, Some(pa), Some(pb)) = (done.insert((a, b)), ports[a], ports[b]) {
                    let us = clock::node(net.delay(pa, pb)).as_micros() as u64;
                    adjacent[a].push((b, us));
                    adjacent[b].push((a, us));
                }
            }
        }
        Self { adjacent }
    }

    /// The fastest time (ms) from node `from` to every node; infinite
    /// where there is no path (Dijkstra's).
    fn fastest_from(&self, from: usize) -> Vec<f64> {
        let mut best = vec![u64::MAX; self.adjacent.len()];
        let mut queue = BinaryHeap::new();
        best[from] = 0;
        queue.push(Reverse((0u64, from)));
        while let Some(Reverse((at, node))) = queue.pop() {
            if at > best[node] {
                continue;
            }
            for &(next, us) in &self.adjacent[node] {
                let then = at + us;
                if then < best[next] {
                    best[next] = then;
                    queue.push(Reverse((then, next)));
                }
            }
        }
        best.into_iter()
            .map(|us| {
                if us == u64::MAX {
                    f64::INFINITY
                } else {
                    us as f64 / 1e3
                }
            })
            .collect()
    }
}

/// The first copy of a benchmark message gossipsub handed each node:
/// (node, message, the neighbour it came from, when).
type Arrivals = Arc<Mutex<Vec<(usize, usize, PeerId, Instant)>>>;

/// Records in `arrivals` each benchmark message node `i` receives first.
fn watch_arrivals(engine: &mut Engine, i: usize, arrivals: &Arrivals) {
    let arrivals = arrivals.clone();
    engine.observe(Box::new(move |event| {
        if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(GossipEvent::Pubsub(
            gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            },
        ))) = event
            && let Ok(Payload::Message(m)) = wire::decode(&message.data)
            && let Some(seq) = seq_of(&m.text)
        {
            arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((i, seq, *propagation_source, Instant::now()));
        }
    }));
}

/// The way each delivery came: how many hops from its publisher (each
/// node's first copy came from the node before it), and how long the
/// receiving engine held the message between gossipsub handing it over
/// and the application getting it.
struct Ways {
    /// Deliveries traced.
    traced: usize,
    /// Hops of each traced delivery.
    hops: Vec<f64>,
    /// Nodes' ms from gossipsub's copy to the application's.
    held: Vec<f64>,
}

impl Ways {
    fn new(
        arrivals: &Arrivals,
        index: &HashMap<PeerId, usize>,
        sender_of: &[usize],
        sent_at: &[Option<Instant>],
        got: &[Vec<Option<Duration>>],
    ) -> Self {
        let arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let first: HashMap<(usize, usize), (PeerId, Instant)> = arrivals
            .iter()
            .map(|&(i, seq, from, at)| ((i, seq), (from, at)))
            .collect();
        let (mut traced, mut hops, mut held) = (0, Vec::new(), Vec::new());
        for (seq, receivers) in got.iter().enumerate() {
            let Some(sent) = sent_at[seq] else { continue };
            for (i, delivery) in receivers.iter().enumerate() {
                let (Some(delivery), Some(&(_, at))) = (delivery, first.get(&(i, seq))) else {
                    continue;
                };
                traced += 1;
                let shown = sent + clock::real(*delivery);
                held.push(clock::node(shown.saturating_duration_since(at)).as_secs_f64() * 1e3);
                // Back to the publisher, one first copy at a time (a gap
                // or a loop ends the count).
                let (mut node, mut count) = (i, 0);
                while node != sender_of[seq] && count < 64 {
                    match first.get(&(node, seq)).and_then(|(f, _)| index.get(f)) {
                        Some(&prev) => (node, count) = (prev, count + 1),
                        None => break,
                    }
                }
                hops.push(f64::from(count));
            }
        }
        hops.sort_by(f64::total_cmp);
        held.sort_by(f64::total_cmp);
        Ways { traced, hops, held }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "traced": self.traced,
            "hops": {"p50": percentile(&self.hops, 0.5), "p99": percentile(&self.hops, 0.99), "max": self.hops.last()},
            "held_by_engine_ms": {"p50": percentile(&self.held, 0.5), "p99": percentile(&self.held, 0.99), "max": self.held.last()},
        })
    }
}

impl std::fmt::Display for Ways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the way deliveries came ({} traced): hops from the publisher p50 {}, p99 {}; held by the receiving engine (gossipsub's copy to the application's) p50 {:.1} ms, p99 {:.1} ms",
            self.traced,
            percentile(&self.hops, 0.5),
            percentile(&self.hops, 0.99),
            percentile(&self.held, 0.5),
            percentile(&self.held, 0.99),
        )
    }
}

/// The number of a benchmark message (its text is `N|`).
fn seq_of(text: &str) -> Option<usize> {
    text.split('|').next()?.parse().ok()
}

/// Each node's index in `nodes`, by its peer id.
fn node_index(nodes: &[Multiaddr]) -> HashMap<PeerId, usize> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((peer_of(a)?, i)))
        .collect()
}

/// Passes node `i`'s events on to the benchmark, as [`Seen`].
async fn read_events(
    i: usize,
    mut events: futures::channel::mpsc::UnboundedReceiver<Event>,
    tx: mpsc::UnboundedSender<(usize, Seen, Instant)>,
) {
    while let Some(event) = events.next().await {
        let seen = match event {
            Event::Message { message, .. } => match seq_of(&message.text) {
                Some(seq) => Seen::Message { seq },
                None => continue,
            },
            Event::Connected {
                peer,
                outbound,
                transport,
                ..
            } => Seen::Connected {
                peer,
                outbound,
                circuit: transport == Transport::Circuit,
            },
            Event::Pruned { peer } => Seen::Pruned(peer),
            Event::Sent { id: Some(_), .. } => Seen::Published,
            Event::Held { .. } => Seen::Held,
            Event::Slowed { .. } => Seen::Slowed,
            Event::Disconnected {
                peer, remaining: 0, ..
            } => Seen::Disconnected(peer),
            _ => continue,
        };
        if tx.send((i, seen, Instant::now())).is_err() {
            break;
        }
    }
}

/// A number of arrivals per second above zero.
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number above 0")),
    }
}

/// An address without its `/p2p/` part (to listen on).
fn bare(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, meshtalk_protocol::libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}

fn record(links: &mut [HashMap<PeerId, bool>], i: usize, seen: Seen) {
    match seen {
        Seen::Connected { peer, circuit, .. } => {
            links[i].insert(peer, circuit);
        }
        Seen::Disconnected(peer) => {
            links[i].remove(&peer);
        }
        Seen::Message { .. } | Seen::Published | Seen::Held | Seen::Slowed | Seen::Pruned(_) => {}
    }
}
