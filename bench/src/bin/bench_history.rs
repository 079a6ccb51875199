//! `cargo xtask bench`, history part, against release relays on loopback.
//!
//! - What keeping history costs the relay: the same 1,000 messages/s run
//!   (100-byte messages over TCP, native peer → relay → native peer)
//!   through a relay that keeps no history and one that keeps it on disk,
//!   alternated in one run: delivery latency p50/p99, the relay's CPU time
//!   per message, its database's size and the records it committed.
//! - A late joiner's wait for a room's last 500 lines: a `meshtalk` peer
//!   (connect to 500th history line) and the page in headless Chromium
//!   (navigation to the 500th history line in its DOM, fresh profile).
//!
//! Prints a table and writes `target/bench/history.json`.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    engine::{EngineConfig, Event},
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{
    Relay, WAIT,
    load::{cpu_seconds, load, pair, relay_only},
    page::ChatPage,
    peer,
    stats::{machine, summary, write_results},
    temp_dir, web_dir,
    webdriver::Driver,
};
use serde_json::{Value, json};

/// meshtalk history benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Seconds of each 1,000 messages/s run.
    #[arg(long, default_value = "10")]
    secs: u64,
    /// Unmeasured seconds before each run (mesh forming, history asked).
    #[arg(long, default_value = "4")]
    warmup_secs: u64,
    /// Runs of each kind, alternated (history off, on, off, on…).
    #[arg(long, default_value = "2")]
    rounds: usize,
    /// Late joiners timed, of each kind.
    #[arg(long, default_value = "3")]
    joiners: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/history.json")]
    out: PathBuf,
}

const RATE: u64 = 1000;
/// History lines a late joiner waits for (one answer's worth).
const LATE_LINES: usize = 500;

/// Installed before the page's scripts: notes when the page first shows
/// the 500th history line, in ms since navigation start.
const HISTORY_PROBE: &str = "new MutationObserver((_, obs) => { \
      if (document.querySelectorAll('[data-testid=message][data-history=true]').length >= 500) { \
        window.__historyAt = performance.now(); obs.disconnect(); } \
    }).observe(document, { subtree: true, childList: true });";

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let dist = web_dir()?;
    let web = dist.display().to_string();

    let mut runs = Vec::new();
    let mut kept = None;
    for round in 0..args.rounds {
        for history in [false, true] {
            let dir = temp_dir(&format!("bench-history-{round}-{history}"));
            let keep = if history { "1000" } else { "0" };
            let relay = Relay::start_with(
                // One author at RATE: the per-author limit is off.
                &dir,
                &[
                    "--web-dir",
                    &web,
                    "--history-per-room",
                    keep,
                    "--publish-rate",
                    "0",
                ],
            )?;
            eprintln!(
                "bench: history {}: {RATE} msg/s for {} s",
                if history { "on" } else { "off" },
                args.secs
            );
            let run = runtime.block_on(measure(&relay, args.warmup_secs, args.secs))?;
            let db = std::fs::metadata(dir.join("history.redb")).map_or(0, |m| m.len());
            let saved = saved_records(&relay)?;
            runs.push(json!({
                "history": history,
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
                "lost": run.lost,
                "relay_cpu_us_per_message": run.cpu_us_per_message,
                "db_bytes": db,
                "records_saved": saved,
            }));
            if history {
                kept = Some(relay);
            }
        }
    }
    let relay = kept.context("no history run")?;

    eprintln!("bench: late joiners, {LATE_LINES} lines of history");
    let mut cli = Vec::new();
    for _ in 0..args.joiners {
        cli.push(runtime.block_on(cli_late_joiner(&relay))?);
    }
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=bench&direct=off", relay.http);
    let mut page = Vec::new();
    for _ in 0..args.joiners {
        let joiner = ChatPage::open_with(&driver, &url, Some("ws"), Some(HISTORY_PROBE))?;
        let at = joiner.session.wait_for(
            "500 history lines",
            WAIT,
            "return window.__historyAt === undefined ? null : window.__historyAt",
        )?;
        page.push(at.as_f64().context("not a time")?);
    }

    let result = json!({
        "machine": machine(),
        "rate": RATE,
        "runs": runs,
        "late_joiner_ms": {"cli": summary(&mut cli), "page": summary(&mut page), "lines": LATE_LINES},
    });
    report(&result);
    write_results(&args.out, &result)?;
    Ok(())
}

struct Run {
    p50_ms: f64,
    p99_ms: f64,
    lost: usize,
    cpu_us_per_message: f64,
}

/// Two peers through `relay` over TCP: a warm-up, then the measured run,
/// with the relay's CPU time over it.
async fn measure(relay: &Relay, warmup: u64, secs: u64) -> Result<Run> {
    let addr = relay.addr(Transport::Tcp)?;
    let (sender, mut receiver, room) = pair(&addr).await?;
    load(&sender, &mut receiver, &room, RATE, warmup).await?;
    let before = cpu_seconds(relay.proc.pid())?;
    let run = load(&sender, &mut receiver, &room, RATE, secs).await?;
    let cpu = cpu_seconds(relay.proc.pid())? - before;
    Ok(Run {
        p50_ms: run.p50_ms,
        p99_ms: run.p99_ms,
        lost: run.lost,
        cpu_us_per_message: cpu * 1e6 / run.sent as f64,
    })
}

/// A new peer joins the room: ms from dialing to its 500th history line.
async fn cli_late_joiner(relay: &Relay) -> Result<f64> {
    let config = EngineConfig {
        rooms: vec![Room::new("bench")?],
        discovery: relay_only(),
        ..EngineConfig::default()
    };
    let start = Instant::now();
    let mut node = peer::connect(config, &[relay.addr(Transport::Tcp)?]).await?;
    let mut lines = 0;
    let wait = async {
        while let Some(event) = node.events.next().await {
            if let Event::Message { history: true, .. } = event {
                lines += 1;
                if lines == LATE_LINES {
                    return Ok(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        bail!("the peer stopped")
    };
    let ms = tokio::time::timeout(WAIT, wait)
        .await
        .map_err(|_| anyhow::anyhow!("only {lines} history lines arrived"))??;
    node.handle.shutdown().await?;
    Ok(ms)
}

/// The relay's `meshtalk_history_records_saved_total`.
fn saved_records(relay: &Relay) -> Result<u64> {
    Ok(relay
        .get("/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix("meshtalk_history_records_saved_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

fn report(result: &Value) {
    println!("\nmeshtalk history benchmark on {}", result["machine"]);
    println!(
        "{:<12} {:>8} {:>8} {:>6} {:>16} {:>10} {:>8}",
        "relay", "p50 ms", "p99 ms", "lost", "CPU µs/message", "db bytes", "saved"
    );
    for run in result["runs"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:>8.3} {:>8.3} {:>6} {:>16.1} {:>10} {:>8}",
            if run["history"] == true {
                "history on"
            } else {
                "history off"
            },
            run["p50_ms"].as_f64().unwrap_or(f64::NAN),
            run["p99_ms"].as_f64().unwrap_or(f64::NAN),
            run["lost"],
            run["relay_cpu_us_per_message"].as_f64().unwrap_or(f64::NAN),
            run["db_bytes"],
            run["records_saved"],
        );
    }
    let late = &result["late_joiner_ms"];
    println!(
        "late joiner, {} lines of history: meshtalk {:.0} ms, page {:.0} ms (medians)",
        late["lines"],
        late["cli"]["median"].as_f64().unwrap_or(f64::NAN),
        late["page"]["median"].as_f64().unwrap_or(f64::NAN),
    );
}
