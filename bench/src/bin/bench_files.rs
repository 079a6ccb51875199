//! `cargo xtask bench`, files and direct messages, on loopback:
//!
//! - File throughput, native → native: a 50 MiB file from one in-process
//!   `meshtalk` node to another connected to it directly over TCP, then
//!   over QUIC (from the offer arriving to the file saved and verified).
//! - File throughput, page → native: the same file picked in the page in
//!   headless Chromium (WebSocket to a release relay) and fetched by a
//!   native node through a relay circuit.
//! - Direct-message round trip: from `send_dm` to the acknowledgement,
//!   one at a time, between the two native nodes over TCP.
//!
//! Prints a table and writes `target/bench/files.json`.

use std::{path::PathBuf, time::Instant};

use anyhow::{Result, bail};
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    arch::files::Downloads,
    engine::{EngineConfig, Event, FileConfig},
    files::FileHash,
    libp2p::{Multiaddr, multiaddr::Protocol},
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{
    Relay, WAIT,
    load::relay_only,
    noise,
    page::ChatPage,
    peer::{self, Node},
    stats::{machine, percentile, summary, write_results},
    temp_dir, web_dir,
    webdriver::Driver,
};
use serde_json::{Value, json};

/// meshtalk files and direct-messages benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Size of the file sent, in MiB.
    #[arg(long, default_value = "50")]
    mib: u64,
    /// Transfers of each kind.
    #[arg(long, default_value = "2")]
    rounds: usize,
    /// Direct messages timed (a peer takes 120 a minute from one sender:
    /// keep below).
    #[arg(long, default_value = "100")]
    dms: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/files.json")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = temp_dir("bench-files");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("payload.bin");
    let size = args.mib * 1024 * 1024;
    let bytes = noise(size as usize, 7);
    std::fs::write(&file, &bytes)?;
    drop(bytes);

    let mut native = serde_json::Map::new();
    let mut dm = Value::Null;
    for transport in [Transport::Tcp, Transport::Quic] {
        let mut rates = Vec::new();
        for round in 0..args.rounds {
            eprintln!(
                "bench: {} MiB native → native over {transport}, round {round}",
                args.mib
            );
            let (rate, rtts) = runtime.block_on(native_pair(
                &file,
                transport,
                &dir.join(format!("{transport}-{round}")),
                if transport == Transport::Tcp && round == 0 {
                    args.dms
                } else {
                    0
                },
            ))?;
            rates.push(rate);
            if let Some(mut rtts) = rtts {
                rtts.sort_by(f64::total_cmp);
                dm = json!({
                    "transport": "tcp",
                    "messages": rtts.len(),
                    "p50_ms": percentile(&rtts, 0.5),
                    "p99_ms": percentile(&rtts, 0.99),
                });
            }
        }
        native.insert(transport.to_string(), summary(&mut rates));
    }

    eprintln!("bench: {} MiB page → native", args.mib);
    let mut page_rates = Vec::new();
    let web = web_dir()?.display().to_string();
    let driver = Driver::start()?;
    for round in 0..args.rounds {
        let relay = Relay::start_with(
            &temp_dir(&format!("bench-files-relay-{round}")),
            &["--web-dir", &web],
        )?;
        page_rates.push(page_to_native(
            &runtime,
            &driver,
            &relay,
            &file,
            &dir.join(format!("page-{round}")),
        )?);
    }

    let result = json!({
        "machine": machine(),
        "file_mib": args.mib,
        "native_mb_per_s": native,
        "page_to_native_mb_per_s": summary(&mut page_rates),
        "dm_round_trip": dm,
    });
    report(&result);
    write_results(&args.out, &result)?;
    // The file and its copies: a few hundred MB.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A node in room `bench` that saves files into `downloads`.
fn config(downloads: &std::path::Path) -> Result<EngineConfig> {
    std::fs::create_dir_all(downloads)?;
    Ok(EngineConfig {
        rooms: vec![Room::new("bench")?],
        discovery: relay_only(),
        files: FileConfig {
            max_size: u64::MAX,
            downloads: Downloads::dir(downloads),
        },
        ..EngineConfig::default()
    })
}

/// Two nodes linked directly over `transport`: the file's throughput
/// (MB/s) and, when `dms` > 0, that many direct-message round trips (ms).
async fn native_pair(
    file: &std::path::Path,
    transport: Transport,
    dir: &std::path::Path,
    dms: usize,
) -> Result<(f64, Option<Vec<f64>>)> {
    let listen: Multiaddr = match transport {
        Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
        _ => "/ip4/127.0.0.1/tcp/0".parse()?,
    };
    let mut sender = Node::start(
        config(&dir.join("sender"))?,
        &[listen],
        meshtalk_tests::WAIT,
    )
    .await?;
    let mut addr = None;
    peer::wait_for(&mut sender, "a listen address", |e| match e {
        Event::Listening(a) if Transport::of(a) == transport => {
            addr = Some(a.clone());
            true
        }
        _ => false,
    })
    .await?;
    let Some(addr) = addr else {
        bail!("no {transport} address")
    };
    let addr = addr.with(Protocol::P2p(sender.peer_id));
    let mut receiver = peer::connect(config(&dir.join("receiver"))?, &[addr]).await?;
    let sender_id = sender.peer_id;
    peer::wait_for(
        &mut receiver,
        "the sender in the room",
        |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == sender_id),
    )
    .await?;
    let source = meshtalk_protocol::arch::files::FileSource::path(file);
    let offer =
        meshtalk_protocol::files::describe(&source, "payload.bin", "application/octet-stream")
            .await?;
    sender
        .handle
        .share_file(Room::new("bench")?, offer, source)
        .await?;
    let rate = fetch(&mut receiver).await?;

    let rtts = if dms > 0 {
        let mut rtts = Vec::with_capacity(dms);
        for i in 0..dms {
            let start = Instant::now();
            receiver
                .handle
                .send_dm(sender_id, format!("ping {i}"))
                .await?;
            peer::wait_for(
                &mut receiver,
                "an acknowledgement",
                |e| matches!(e, Event::DmSent { to, .. } if *to == sender_id),
            )
            .await?;
            rtts.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        Some(rtts)
    } else {
        None
    };
    receiver.handle.shutdown().await?;
    sender.handle.shutdown().await?;
    Ok((rate, rtts))
}

/// Waits for an offer, fetches it, and returns MB/s (10^6 bytes) from
/// the fetch to the file saved.
async fn fetch(receiver: &mut Node) -> Result<f64> {
    let mut offered: Option<(FileHash, u64)> = None;
    peer::wait_for(receiver, "the offer", |e| match e {
        Event::FileOffered { offer, .. } => {
            offered = Some((offer.sha256, offer.size));
            true
        }
        _ => false,
    })
    .await?;
    let Some((sha256, size)) = offered else {
        bail!("no offer")
    };
    let start = Instant::now();
    receiver.handle.fetch_file(sha256).await?;
    let outcome = tokio::time::timeout(WAIT * 4, async {
        while let Some(event) = receiver.events.next().await {
            match event {
                Event::FileSaved { sha256: s, .. } if s == sha256 => return Ok(()),
                Event::FileFailed { sha256: s, error } if s == sha256 => {
                    bail!("fetch failed: {error}")
                }
                _ => {}
            }
        }
        bail!("the node stopped")
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(size as f64 / start.elapsed().as_secs_f64() / 1e6),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("the file did not arrive in {:?}", WAIT * 4),
    }
}

/// The page offers the file; a native node connected to the same relay
/// fetches it. MB/s.
fn page_to_native(
    runtime: &tokio::runtime::Runtime,
    driver: &Driver,
    relay: &Relay,
    file: &std::path::Path,
    dir: &std::path::Path,
) -> Result<f64> {
    let log = if std::env::var_os("BENCH_CONSOLE").is_some() {
        "&log=debug"
    } else {
        ""
    };
    let url = format!("{}/?transport=ws&room=bench&direct=off{log}", relay.http);
    let page = ChatPage::open(driver, &url, Some("ws"))?;
    let mut receiver =
        runtime.block_on(peer::connect(config(dir)?, &[relay.addr(Transport::Tcp)?]))?;
    page.wait_member(&receiver.peer_id.to_string())?;
    page.session
        .type_into("[data-testid=file-input]", &file.display().to_string())?;
    let rate = runtime.block_on(fetch(&mut receiver));
    if std::env::var_os("BENCH_CONSOLE").is_some() {
        eprintln!("{}", page.session.console().join("\n"));
    }
    let rate = rate?;
    runtime.block_on(receiver.handle.shutdown())?;
    Ok(rate)
}

fn report(result: &Value) {
    let median = |v: &Value| v["median"].as_f64().unwrap_or(f64::NAN);
    println!("\nmeshtalk files benchmark on {}", result["machine"]);
    println!("{} MiB file, MB/s (medians):", result["file_mib"]);
    for (transport, runs) in result["native_mb_per_s"].as_object().into_iter().flatten() {
        println!(
            "  native → native over {transport:<5} {:>8.1}",
            median(runs)
        );
    }
    println!(
        "  page → native (ws, circuit) {:>8.1}",
        median(&result["page_to_native_mb_per_s"])
    );
    let dm = &result["dm_round_trip"];
    println!(
        "direct message round trip over {}: p50 {:.2} ms, p99 {:.2} ms ({} messages)",
        dm["transport"].as_str().unwrap_or("?"),
        dm["p50_ms"].as_f64().unwrap_or(f64::NAN),
        dm["p99_ms"].as_f64().unwrap_or(f64::NAN),
        dm["messages"],
    );
}
