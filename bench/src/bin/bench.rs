//! `cargo xtask bench`: native → relay → native on loopback.
//!
//! For TCP and QUIC: publish-to-delivery latency (p50/p99) of 100-byte
//! messages at 1,000 messages/s, and the highest rate sustained for 10 s with
//! zero loss. Then the relay's resident memory with 1,000 idle connected
//! peers (TCP and WebSocket in turn), 10 s after the last one connected and
//! once they have settled (60 s), with the connections still open and the
//! relay's CPU use meanwhile.
//! Prints a table and writes `target/bench/native.json`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use meshtalk_protocol::{engine::EngineConfig, rooms::Room, transport::Transport};
use meshtalk_tests::{
    Relay,
    load::{MESSAGE_BYTES, cpu_seconds, load, pair, relay_only, rss_mb},
    peer,
    stats::{log_from_env, machine, write_results},
    temp_dir,
};
use serde_json::json;

/// meshtalk native benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Seconds of the 1,000 messages/s latency run.
    #[arg(long, default_value = "10")]
    latency_secs: u64,
    /// Seconds at 1,000 messages/s before the latency run, not measured:
    /// the start-up exchanges (identify, Kademlia, AutoNAT, the gossipsub
    /// mesh forming) are over by then.
    #[arg(long, default_value = "2")]
    warmup_secs: u64,
    /// Seconds each rate step must hold with zero loss.
    #[arg(long, default_value = "10")]
    step_secs: u64,
    /// Rates (messages/s) tried in order for the sustained-rate run; the run
    /// stops at the first rate that loses a message.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,5000,8000,12000,16000"
    )]
    rates: Vec<u64>,
    /// Idle peers connected for the memory measurement.
    #[arg(long, default_value = "1000")]
    idle_peers: usize,
    /// Seconds from the last idle peer's connection to the second memory
    /// reading (the first is after 10 s).
    #[arg(long, default_value = "60")]
    idle_settle: u64,
    /// Only the memory measurement.
    #[arg(long)]
    idle_only: bool,
    /// Transports the idle peers use, in turn.
    #[arg(long, value_delimiter = ',', default_value = "tcp,ws", value_parser = transport)]
    idle_transports: Vec<Transport>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/native.json")]
    out: PathBuf,
}

fn transport(name: &str) -> Result<Transport, String> {
    [Transport::Tcp, Transport::WebSocket, Transport::Quic]
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| format!("unknown transport {name:?} (tcp, ws or quic)"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    log_from_env();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let mut results = Vec::new();
    let transports: &[Transport] = if args.idle_only {
        &[]
    } else {
        &[Transport::Tcp, Transport::Quic]
    };
    for &transport in transports {
        // The relay's forwarding capacity is measured, not its per-author
        // limit (100 messages/s by default), so the limit is off.
        let relay = Relay::start_with(&temp_dir("bench"), &["--publish-rate", "0"])?;
        let addr = relay.addr(transport)?;
        let (sender, mut receiver, room) = pair(&addr).await?;
        if args.warmup_secs > 0 {
            eprintln!(
                "bench: {transport}: warming up at 1000 msg/s for {} s",
                args.warmup_secs
            );
            load(&sender, &mut receiver, &room, 1000, args.warmup_secs).await?;
        }
        eprintln!(
            "bench: {transport}: latency at 1000 msg/s for {} s",
            args.latency_secs
        );
        let latency = load(&sender, &mut receiver, &room, 1000, args.latency_secs).await?;
        let mut sustained = 0;
        let mut steps = Vec::new();
        for &rate in &args.rates {
            eprintln!("bench: {transport}: {rate} msg/s for {} s", args.step_secs);
            let step = load(&sender, &mut receiver, &room, rate, args.step_secs).await?;
            let lossless = step.lost == 0 && step.achieved_rate >= rate as f64 * 0.95;
            steps.push(
                json!({"rate": rate, "lost": step.lost, "achieved_rate": step.achieved_rate,
                "p50_ms": step.p50_ms, "p99_ms": step.p99_ms}),
            );
            if !lossless {
                break;
            }
            sustained = rate;
        }
        results.push((transport, latency, sustained, steps));
    }

    eprintln!("bench: relay memory with {} idle peers", args.idle_peers);
    let idle = idle_memory(
        args.idle_peers,
        &args.idle_transports,
        Duration::from_secs(args.idle_settle),
    )
    .await?;

    let machine = machine();
    println!("\nmeshtalk native benchmark on {machine}");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>22}",
        "", "p50 ms", "p99 ms", "lost", "sustained msg/s (0 loss)"
    );
    for (transport, latency, sustained, _) in &results {
        println!(
            "{:<6} {:>10.3} {:>10.3} {:>10} {:>22}",
            transport.name(),
            latency.p50_ms,
            latency.p99_ms,
            latency.lost,
            sustained
        );
    }
    let per_peer = |mb: f64| (mb - idle.before_mb) * 1024.0 / args.idle_peers.max(1) as f64;
    println!(
        "relay RSS: {:.1} MB idle; with {} idle peers {:.1} MB after 10 s ({:.0} KB per peer, {} connections open), {:.1} MB after {} s ({:.0} KB per peer, {} connections open); relay CPU {:.0} % of one core meanwhile; {} connection attempts failed and were made again",
        idle.before_mb,
        args.idle_peers,
        idle.early_mb,
        per_peer(idle.early_mb),
        idle.early_connected,
        idle.settled_mb,
        args.idle_settle,
        per_peer(idle.settled_mb),
        idle.settled_connected,
        idle.cpu_s * 100.0 / idle.wall_s.max(1.0),
        idle.retries,
    );
    println!("targets: p50 <= 1 ms, p99 <= 5 ms, >= 5000 msg/s, <= 100 KB per idle peer");

    let json = json!({
        "machine": machine,
        "message_bytes": MESSAGE_BYTES,
        "transports": results.iter().map(|(t, l, s, steps)| json!({
            "transport": t.name(),
            "latency_at_1000_per_s": {"p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "sent": l.sent, "lost": l.lost},
            "sustained_rate_zero_loss": s,
            "steps": steps,
        })).collect::<Vec<_>>(),
        "relay_idle_peers": {
            "peers": args.idle_peers,
            "idle_mb": idle.before_mb,
            "after_10_s": {"rss_mb": idle.early_mb, "per_peer_kb": per_peer(idle.early_mb), "connections": idle.early_connected},
            "settled": {"after_s": args.idle_settle, "rss_mb": idle.settled_mb, "per_peer_kb": per_peer(idle.settled_mb), "connections": idle.settled_connected},
            "relay_cpu_share": idle.cpu_s / idle.wall_s.max(1.0),
            "connect_retries": idle.retries,
        },
    });
    write_results(&args.out, &json)?;
    Ok(())
}

/// Relay RSS (MB) before and after `count` idle peers connect (over
/// `transports` in turn) and join a room.
/// The relay with idle peers: its memory before them, 10 s after the last
/// one connected and after the network has settled, and the connections
/// open then.
struct Idle {
    before_mb: f64,
    early_mb: f64,
    early_connected: f64,
    settled_mb: f64,
    settled_connected: f64,
    /// Relay CPU time from the first peer to the end, and that time.
    cpu_s: f64,
    wall_s: f64,
    /// Connection attempts that failed and were made again.
    retries: usize,
}

/// Attempts an idle peer makes to connect before the benchmark gives up.
const CONNECT_TRIES: usize = 3;

async fn idle_memory(count: usize, transports: &[Transport], settle: Duration) -> Result<Idle> {
    // Every peer comes from 127.0.0.1: the per-address cap is off.
    let relay = Relay::start_with(&temp_dir("bench-idle"), &["--max-connections-per-ip", "0"])?;
    let addrs = transports
        .iter()
        .map(|t| relay.addr(*t))
        .collect::<Result<Vec<_>>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = relay.proc.pid();
    let before_mb = rss_mb(pid)?;
    let cpu_start = cpu_seconds(pid)?;
    let start = Instant::now();
    let config = EngineConfig {
        rooms: vec![Room::new("idle")?],
        discovery: relay_only(),
        ..EngineConfig::default()
    };
    let mut peers = Vec::with_capacity(count);
    let mut retries = 0;
    // Batches stay under the relay's pending-handshake limit.
    for batch in (0..count).collect::<Vec<_>>().chunks(50) {
        let joins = batch.iter().map(|i| {
            let (config, addr) = (config.clone(), addrs[i % addrs.len()].clone());
            async move {
                // A relay busy with hundreds of newcomers fails a handshake
                // now and then; a peer tries again, as a user would.
                let mut tries = 0;
                loop {
                    tries += 1;
                    match peer::connect(config.clone(), std::slice::from_ref(&addr)).await {
                        Ok(peer) => return Ok((peer, tries - 1)),
                        Err(e) if tries >= CONNECT_TRIES => return Err(e),
                        Err(e) => {
                            eprintln!(
                                "bench: an idle peer could not connect ({e:#}); trying again"
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        for joined in futures::future::join_all(joins).await {
            let (peer, again) = joined?;
            peers.push(peer);
            retries += again;
        }
    }
    let connected = || -> f64 {
        ["tcp", "ws", "quic", "webrtc-direct"]
            .iter()
            .map(|t| {
                relay
                    .metric(&format!("meshtalk_connections{{transport=\"{t}\"}}"))
                    .unwrap_or(0.0)
            })
            .sum()
    };
    // Identify, Kademlia and gossipsub exchanges, and every member's
    // announcement reaching every other.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let early_mb = rss_mb(pid)?;
    let early_connected = connected();
    eprintln!("bench: {early_connected} connections open at the relay for {count} idle peers");
    tokio::time::sleep(settle.saturating_sub(Duration::from_secs(10))).await;
    let settled_mb = rss_mb(pid)?;
    let settled_connected = connected();
    let cpu_s = cpu_seconds(pid)? - cpu_start;
    let wall_s = start.elapsed().as_secs_f64();
    drop(peers);
    Ok(Idle {
        before_mb,
        early_mb,
        early_connected,
        settled_mb,
        settled_connected,
        cpu_s,
        wall_s,
        retries,
    })
}
