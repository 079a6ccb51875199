//! `cargo xtask bench`, part three: a network of several relays.
//!
//! 3 relays (joined with `--bootstrap`) and 30 peers on loopback, each peer
//! connected to one relay and left to its own discovery and neighbour
//! management (default watermarks). The peers take turns publishing to one
//! room, 10 messages/s in all for 60 s. Reports the delivery ratio (every
//! message to every other peer), publish-to-delivery latency p50/p99, and
//! each peer's connection count against the watermarks, and the pubsub
//! message copies that crossed the wire (every peer's and relay's count of
//! copies received, duplicates included) per delivered message.
//!
//! It runs the network once with gossipsub and once with floodsub (the
//! peers' router; relays always run gossipsub, which floods to floodsub
//! peers), the course's "gossipsub or floodsub?" as data. Writes
//! `target/bench/mesh.json`.

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    behaviour::Pubsub,
    discovery::{Discovery, Watermarks},
    engine::{EngineConfig, EngineHandle, Event},
    libp2p::PeerId,
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{
    Relay, peer, relay_network,
    stats::{log_from_env, machine, percentile, write_results},
};
use serde_json::json;
use tokio::sync::mpsc;

/// meshtalk multi-relay benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Relays in the network.
    #[arg(long, default_value = "3")]
    relays: usize,
    /// Peers, spread over the relays.
    #[arg(long, default_value = "30")]
    peers: usize,
    /// Messages per second, all peers together.
    #[arg(long, default_value = "10")]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value = "60")]
    secs: u64,
    /// Each peer's low watermark (dial below it).
    #[arg(long, default_value_t = Watermarks::default().low)]
    min_peers: usize,
    /// Each peer's high watermark (prune above it).
    #[arg(long, default_value_t = Watermarks::default().high)]
    max_peers: usize,
    /// Pubsub routers to compare, one network each, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "gossipsub,floodsub")]
    pubsub: Vec<Pubsub>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/mesh.json")]
    out: PathBuf,
}

/// What a peer's event reader passes on.
enum Seen {
    Message { seq: usize, sent_ns: u128 },
    Connected(PeerId),
    Disconnected(PeerId),
    Joined,
}

fn main() -> Result<()> {
    let args = Args::parse();
    log_from_env();
    let runtime = tokio::runtime::Runtime::new()?;
    let machine = machine();
    let mut results = Vec::new();
    for &pubsub in &args.pubsub {
        results.push(runtime.block_on(run(&args, pubsub, &machine))?);
    }
    if results.len() > 1 {
        println!("\n| router | deliveries | p50 | p99 | copies on the wire per delivery |");
        println!("|---|---|---|---|---|");
        for r in &results {
            println!(
                "| {} | {:.2} % | {:.2} ms | {:.2} ms | {:.2} |",
                r["pubsub"].as_str().unwrap_or_default(),
                r["deliveries"]["ratio"].as_f64().unwrap_or_default() * 100.0,
                r["latency_ms"]["p50"].as_f64().unwrap_or_default(),
                r["latency_ms"]["p99"].as_f64().unwrap_or_default(),
                r["wire"]["copies_per_delivery"]
                    .as_f64()
                    .unwrap_or_default(),
            );
        }
    }
    let json = json!({"machine": machine, "runs": results});
    write_results(&args.out, &json)?;
    Ok(())
}

/// Pubsub message copies every relay has received so far.
fn relay_copies(relays: &[Relay]) -> Result<u64> {
    let mut total = 0.0;
    for relay in relays {
        total += relay.metric("meshtalk_pubsub_copies_received_total")?;
    }
    Ok(total as u64)
}

/// One network of `args.relays` relays and `args.peers` peers running
/// `pubsub`; returns its results.
async fn run(args: &Args, pubsub: Pubsub, machine: &str) -> Result<serde_json::Value> {
    eprintln!(
        "bench: mesh: {} relays, {} {pubsub} peers",
        args.relays, args.peers
    );
    let relays = relay_network(args.relays, &[])?;
    let room = Room::new("mesh")?;
    let watermarks = Watermarks {
        low: args.min_peers,
        high: args.max_peers,
    };
    let base = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Seen)>();
    let mut handles = Vec::new();
    for i in 0..args.peers {
        let addr = relays[i % relays.len()].addr(Transport::Tcp)?;
        let config = EngineConfig {
            rooms: vec![room.clone()],
            discovery: Discovery {
                bootstrap: vec![addr.clone()],
                watermarks,
                ..Discovery::default()
            },
            ..EngineConfig::default()
        };
        let mut node = peer::connect_with(config, pubsub, std::slice::from_ref(&addr)).await?;
        handles.push(node.handle.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = node.events.next().await {
                let seen = match event {
                    Event::Message { message, .. } => {
                        let mut parts = message.text.split('|');
                        let seq = parts.next().and_then(|s| s.parse().ok());
                        let sent = parts.next().and_then(|s| s.parse().ok());
                        match (seq, sent) {
                            (Some(seq), Some(sent_ns)) => Seen::Message { seq, sent_ns },
                            _ => continue,
                        }
                    }
                    Event::Connected { peer, .. } => Seen::Connected(peer),
                    Event::Disconnected {
                        peer, remaining: 0, ..
                    } => Seen::Disconnected(peer),
                    Event::PeerJoined { .. } => Seen::Joined,
                    _ => continue,
                };
                if tx.send((i, seen)).is_err() {
                    break;
                }
            }
            drop(node);
        });
    }
    drop(tx);

    let n = args.peers;
    let mut links: Vec<HashSet<PeerId>> = vec![HashSet::new(); n];
    let mut joined = vec![0usize; n];
    // Settle: everyone has seen everyone, or 60 s have passed.
    let settle = Instant::now();
    while joined.iter().any(|j| *j < n - 1) && settle.elapsed() < Duration::from_secs(60) {
        let Ok(Some((i, seen))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        else {
            continue;
        };
        record(&mut links, &mut joined, i, seen);
    }
    let fully_joined = joined.iter().filter(|j| **j >= n - 1).count();
    eprintln!(
        "bench: mesh: {fully_joined}/{n} peers saw every other after {:.1} s; publishing {} msg/s for {} s",
        settle.elapsed().as_secs_f64(),
        args.rate,
        args.secs
    );

    // What crossed the wire before publishing (announcements) is not
    // counted.
    let copies = |handles: &[EngineHandle]| -> Result<u64> {
        let peers: u64 = handles
            .iter()
            .map(EngineHandle::pubsub_copies_received)
            .sum();
        Ok(peers + relay_copies(&relays)?)
    };
    let copies_before = copies(&handles)?;

    let total = (args.rate * args.secs) as usize;
    let mut got = vec![vec![false; n]; total];
    let mut latencies = Vec::with_capacity(total * (n - 1));
    let mut sender_of = vec![0usize; total];
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let quiet_after = Duration::from_secs(5);
    let mut last_delivery = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let due = ((start.elapsed().as_secs_f64() * args.rate as f64) as usize).min(total);
                while sent < due {
                    let from = sent % n;
                    sender_of[sent] = from;
                    let text = format!("{sent}|{}|", base.elapsed().as_nanos());
                    handles[from].send(room.clone(), text).await?;
                    sent += 1;
                }
                if sent == total && last_delivery.elapsed() > quiet_after {
                    break;
                }
            }
            next = rx.recv() => {
                let Some((i, seen)) = next else { break };
                if let Seen::Message { seq, sent_ns } = seen {
                    if seq < total && !got[seq][i] {
                        got[seq][i] = true;
                        latencies.push(base.elapsed().as_nanos().saturating_sub(sent_ns) as f64 / 1e6);
                        last_delivery = Instant::now();
                    }
                } else {
                    record(&mut links, &mut joined, i, seen);
                }
            }
        }
    }
    let wire = copies(&handles)? - copies_before;
    // Where deliveries went missing: by receiver, and by second of sending.
    let mut lost_by_receiver = vec![0usize; n];
    let mut lost_by_second = vec![0usize; args.secs as usize];
    for (seq, receivers) in got.iter().enumerate() {
        for (i, received) in receivers.iter().enumerate() {
            if !received && i != sender_of[seq] {
                lost_by_receiver[i] += 1;
                lost_by_second[seq / args.rate as usize] += 1;
            }
        }
    }
    let expected = total * (n - 1);
    let delivered = latencies.len();
    latencies.sort_by(f64::total_cmp);
    let ratio = delivered as f64 / expected as f64;
    let mut counts: Vec<usize> = links.iter().map(HashSet::len).collect();
    counts.sort_unstable();
    let within = counts
        .iter()
        .filter(|c| (watermarks.low..=watermarks.high).contains(*c))
        .count();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));

    let per_delivery = wire as f64 / delivered.max(1) as f64;
    println!("\nmeshtalk multi-relay benchmark on {machine}, {pubsub}");
    println!(
        "{} relays, {n} peers, {} msg/s for {} s: {delivered}/{expected} deliveries ({:.2} %)",
        args.relays,
        args.rate,
        args.secs,
        ratio * 100.0
    );
    println!("latency p50 {p50:.2} ms, p99 {p99:.2} ms");
    println!("pubsub copies on the wire: {wire} ({per_delivery:.2} per delivered message)");
    println!(
        "connections per peer: min {}, median {}, max {}; {within}/{n} within the watermarks {}..={}",
        counts.first().copied().unwrap_or(0),
        counts.get(n / 2).copied().unwrap_or(0),
        counts.last().copied().unwrap_or(0),
        watermarks.low,
        watermarks.high
    );
    if delivered < expected {
        println!("missed deliveries by receiver: {lost_by_receiver:?}");
        println!("missed deliveries by second of sending: {lost_by_second:?}");
    }
    println!("target: 100 % delivery");

    drop(relays);
    Ok(json!({
        "pubsub": pubsub.to_string(),
        "relays": args.relays,
        "peers": n,
        "rate_per_s": args.rate,
        "secs": args.secs,
        "fully_joined_before_publishing": fully_joined,
        "deliveries": {"expected": expected, "delivered": delivered, "ratio": ratio},
        "latency_ms": {"p50": p50, "p99": p99},
        "wire": {"copies": wire, "copies_per_delivery": per_delivery},
        "connections_per_peer": counts,
        "watermarks": {"low": watermarks.low, "high": watermarks.high, "peers_within": within},
        "lost_by_receiver": lost_by_receiver,
        "lost_by_second": lost_by_second,
    }))
}

fn record(links: &mut [HashSet<PeerId>], joined: &mut [usize], i: usize, seen: Seen) {
    match seen {
        Seen::Connected(peer) => {
            links[i].insert(peer);
        }
        Seen::Disconnected(peer) => {
            links[i].remove(&peer);
        }
        Seen::Joined => joined[i] += 1,
        Seen::Message { .. } => {}
    }
}
