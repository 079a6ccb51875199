//! `cargo xtask bench` (flood): a relay with its default limits, two honest
//! peers chatting through it at 20 messages/s, first alone, then while one
//! attacker publishes valid messages as fast as its engine takes them and
//! another publishes junk (undecodable, oversized, not UTF-8, from the
//! future) as fast as it can. Both runs are measured here, one after the
//! other, so the comparison holds on a noisy machine.
//!
//! Reports the honest peers' delivery p50/p99 and loss in each run, what
//! the relay said of the attackers (rejections by reason, peers graylisted
//! and disconnected), how long `/healthz` and a new peer's connection took
//! under attack, and how many of the flooder's messages the honest receiver
//! got. Writes `target/bench/flood.json`.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    engine::{EngineConfig, Event},
    transport::Transport,
    wire::{self, ChatMessage, Payload},
};
use meshtalk_tests::{
    Relay, http_get,
    load::{Load, load, pair, relay_only},
    peer::{self, Node},
    stats::{machine, write_results},
    temp_dir,
};
use serde_json::json;

/// meshtalk flood benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Honest messages a second.
    #[arg(long, default_value = "20")]
    rate: u64,
    /// Seconds of each run (quiet, then under attack).
    #[arg(long, default_value = "20")]
    secs: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/flood.json")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

/// What one attacker did.
#[derive(Default)]
struct Attack {
    published: AtomicU64,
    disconnected: AtomicU64,
}

/// Publishes on `topic` what `payload` makes, as fast as `node`'s engine
/// takes it (each publish waits until gossipsub has taken the message),
/// until `stop`; counts what was published and the links lost.
fn attack(
    node: Node,
    topic: String,
    stop: Arc<AtomicBool>,
    payload: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> Arc<Attack> {
    let attack = Arc::new(Attack::default());
    let Node {
        handle, mut events, ..
    } = node;
    let counted = Arc::clone(&attack);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if matches!(event, Event::Disconnected { remaining: 0, .. }) {
                counted.disconnected.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let counted = Arc::clone(&attack);
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(
                Duration::from_secs(1),
                handle.publish_raw(&topic, payload(i)),
            )
            .await
            {
                Ok(Ok(())) => {
                    counted.published.fetch_add(1, Ordering::Relaxed);
                }
                // Refused or stuck (no neighbour takes it): try again.
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            i += 1;
        }
        let _ = handle.shutdown().await;
    });
    attack
}

fn junk() -> Vec<Vec<u8>> {
    let oversized = wire::encode(&Payload::Message(ChatMessage::new("x".repeat(5000))));
    let mut not_utf8 = wire::encode(&Payload::Message(ChatMessage::new("JUNK-UTF8")));
    if let Some(at) = not_utf8.windows(4).position(|w| w == b"JUNK") {
        not_utf8[at] = 0xff;
    }
    let mut future = ChatMessage::new("JUNK-FUTURE");
    future.created_ms += 10 * 60 * 1000;
    vec![
        b"JUNK not protobuf".to_vec(),
        oversized,
        not_utf8,
        wire::encode(&Payload::Message(future)),
    ]
}

fn row(name: &str, l: &Load) -> String {
    format!(
        "| {name} | {:.1} ms | {:.1} ms | {}/{} |",
        l.p50_ms,
        l.p99_ms,
        l.sent - l.lost,
        l.sent
    )
}

async fn run(args: Args) -> Result<()> {
    let relay = Relay::start(&temp_dir("bench-flood"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let (sender, mut receiver, room) = pair(&addr).await?;
    eprintln!("bench: flood: warming up");
    load(&sender, &mut receiver, &room, args.rate, 2).await?;
    eprintln!(
        "bench: flood: {} msg/s for {} s, no attackers",
        args.rate, args.secs
    );
    let quiet = load(&sender, &mut receiver, &room, args.rate, args.secs).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let config = EngineConfig {
        rooms: vec![room.clone()],
        discovery: relay_only(),
        ..EngineConfig::default()
    };
    let topic = room.topic().hash().to_string();
    let flooder = peer::connect(config, std::slice::from_ref(&addr)).await?;
    let flooder_id = flooder.peer_id;
    let flood = attack(flooder, topic.clone(), Arc::clone(&stop), |i| {
        wire::encode(&Payload::Message(ChatMessage::new(format!("flood {i}"))))
    });
    let junker = peer::connect(
        EngineConfig {
            discovery: relay_only(),
            ..EngineConfig::default()
        },
        std::slice::from_ref(&addr),
    )
    .await?;
    let payloads = junk();
    let junk_attack = attack(junker, topic, Arc::clone(&stop), move |i| {
        payloads[i as usize % payloads.len()].clone()
    });
    // The attack is under way before the measured run.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // While the honest peers chat: the relay's health and a newcomer.
    let probe_addr = addr.clone();
    let http = relay.http.clone();
    let probes = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at = Instant::now();
        let healthy = tokio::task::spawn_blocking(move || http_get(&http, "/healthz")).await;
        let healthz_ms = at.elapsed().as_secs_f64() * 1e3;
        let healthy = matches!(healthy, Ok(Ok(ref body)) if body.trim() == "ok");
        let at = Instant::now();
        let newcomer = peer::connect(
            EngineConfig {
                discovery: relay_only(),
                ..EngineConfig::default()
            },
            std::slice::from_ref(&probe_addr),
        )
        .await;
        let connect_ms = at.elapsed().as_secs_f64() * 1e3;
        let connected = newcomer.is_ok();
        if let Ok(node) = newcomer {
            let _ = node.handle.shutdown().await;
        }
        (healthy, healthz_ms, connected, connect_ms)
    });

    eprintln!(
        "bench: flood: {} msg/s for {} s, with a flooder and a junk sender",
        args.rate, args.secs
    );
    // Count what the receiver gets from the flooder alongside the load.
    let attacked = load(&sender, &mut receiver, &room, args.rate, args.secs).await?;
    stop.store(true, Ordering::Relaxed);
    let (healthy, healthz_ms, connected, connect_ms) = probes.await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let metric = |series: &str| relay.metric(series).unwrap_or(f64::NAN);
    let rate_limited = metric("meshtalk_rejected_messages_total{reason=\"rate_limited\"}");
    let junk_rejected = metric("meshtalk_rejected_messages_total") - rate_limited;
    let graylisted = metric("meshtalk_graylisted_peers_total");
    let flooded = flood.published.load(Ordering::Relaxed);
    let junked = junk_attack.published.load(Ordering::Relaxed);
    let ratio = attacked.p99_ms / quiet.p99_ms;

    println!(
        "\n## flood: relay with default limits, honest pair at {} msg/s, {} s per run\n",
        args.rate, args.secs
    );
    println!("| run | p50 | p99 | delivered |");
    println!("|---|---|---|---|");
    println!("{}", row("no attackers", &quiet));
    println!("{}", row("flooder + junk sender", &attacked));
    println!(
        "\nhonest p99 under attack: {ratio:.2}x the quiet run (goal: at most 2x)\n\
         flooder ({flooder_id}): {flooded} messages published, {} lost links to the relay\n\
         junk sender: {junked} payloads published, {} lost links to the relay\n\
         relay: {rate_limited} over the rate limit, {junk_rejected} junk rejected, {graylisted} peers graylisted and disconnected\n\
         under attack: /healthz {} in {healthz_ms:.0} ms, a new peer {} in {connect_ms:.0} ms",
        flood.disconnected.load(Ordering::Relaxed),
        junk_attack.disconnected.load(Ordering::Relaxed),
        if healthy { "answered" } else { "FAILED" },
        if connected {
            "connected"
        } else {
            "FAILED to connect"
        },
    );
    let results = json!({
        "machine": machine(),
        "rate_per_s": args.rate,
        "secs": args.secs,
        "quiet": {"p50_ms": quiet.p50_ms, "p99_ms": quiet.p99_ms, "lost": quiet.lost, "sent": quiet.sent},
        "attacked": {"p50_ms": attacked.p50_ms, "p99_ms": attacked.p99_ms, "lost": attacked.lost, "sent": attacked.sent},
        "p99_ratio": ratio,
        "flooder_published": flooded,
        "junk_published": junked,
        "flooder_lost_links": flood.disconnected.load(Ordering::Relaxed),
        "junk_lost_links": junk_attack.disconnected.load(Ordering::Relaxed),
        "relay_rate_limited": rate_limited,
        "relay_junk_rejected": junk_rejected,
        "relay_graylisted": graylisted,
        "healthz_ok": healthy,
        "healthz_ms": healthz_ms,
        "newcomer_connected": connected,
        "newcomer_connect_ms": connect_ms,
    });
    write_results(&args.out, &results)?;
    Ok(())
}
