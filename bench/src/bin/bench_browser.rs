//! `cargo xtask bench`, browser part: the chat page in headless Chromium
//! against a release relay on loopback.
//!
//! - Page weight: every file of `dist/`, raw, gzip and Brotli (the twins
//!   `cargo xtask web` writes), and what a cold load transferred, as the
//!   browser's resource timing counts it (budget: 700 KB).
//! - Page load to `connected`, over WebRTC-direct and over WebSocket, and
//!   where UDP is dropped (the page is given a WebRTC-direct address that
//!   never answers, then the WebSocket one), each
//!   load in a fresh browser profile (cold cache) once the browser has
//!   finished its own start-up work (as for a person whose browser is
//!   already open), then reloaded 3 s later
//!   (a person coming back: files and compiled code cached), with where the time
//!   goes: HTML in, wasm module in, module compiled and started,
//!   `/api/addrs` answered, link to the relay made (`WebSocket` or
//!   `RTCPeerConnection` created), link open, first bytes sent over it,
//!   connected (handshake and room subscription).
//! - Browser → relay → browser latency: page A sends at 50 messages/s,
//!   page B timestamps each message when it enters its DOM (pages opened
//!   with `?direct=off`).
//! - Direct links (`/webrtc`): time from both pages connected to their
//!   relay to both showing the direct link; the same latency run over the
//!   direct link; and, for both runs, the chat messages the relay took in
//!   (its `meshtalk_messages_total`).
//!
//! Prints a table and writes `target/bench/browser.json`.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{
    Relay, WAIT,
    load::{ProcStat, proc_stat},
    page::ChatPage,
    stats::{machine, percentile},
    temp_dir, udp_blackhole, web_dir,
    webdriver::Driver,
};
use serde_json::{Value, json};

/// meshtalk browser benchmark (loopback only).
#[derive(Parser)]
struct Args {
    /// Page loads measured per transport.
    #[arg(long, default_value = "5")]
    loads: usize,
    /// Messages per second page A sends.
    #[arg(long, default_value = "50")]
    rate: u32,
    /// Seconds page A sends for.
    #[arg(long, default_value = "10")]
    secs: u32,
    /// Page pairs timed from connected to directly linked.
    #[arg(long, default_value = "3")]
    links: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/browser.json")]
    out: PathBuf,
    /// The page to serve [default: the workspace's dist/], e.g. a copy of
    /// an older build to compare with.
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Only the page loads (weight and load to connected): no latency or
    /// direct-link runs.
    #[arg(long)]
    connect_only: bool,
}

/// What a cold load may transfer.
const PAGE_BUDGET_BYTES: u64 = 700_000;
/// Load-to-connected target on loopback.
const CONNECT_BUDGET_MS: f64 = 300.0;
const TRANSPORTS: [&str; 2] = ["webrtc-direct", "ws"];
/// The name of the load series where UDP gets no answer.
const UDP_DROPPED: &str = "udp dropped";

/// Installed before the page's scripts: notes when the wasm module has
/// started, when the page made its link to the relay (a `WebSocket` or an
/// `RTCPeerConnection`), when that link opened (the socket's `open`, the
/// peer connection's `connected`), when the page's first message went
/// over it and when the status first says connected, in ms since
/// navigation start.
const CONNECT_PROBE: &str = "addEventListener('meshtalk-started', \
      () => { window.__startedAt = performance.now(); }); \
    window.__wire = {}; \
    const note = k => { if (window.__wire[k] === undefined) window.__wire[k] = performance.now(); }; \
    const WS = window.WebSocket; \
    window.WebSocket = class extends WS { \
      constructor(...a) { super(...a); note('dial'); this.addEventListener('open', () => note('open')); \
        this.addEventListener('message', () => note('first_in')); } \
      send(d) { note('first_out'); return super.send(d); } }; \
    const PC = window.RTCPeerConnection; \
    window.RTCPeerConnection = class extends PC { \
      constructor(...a) { super(...a); note('dial'); \
        this.addEventListener('connectionstatechange', () => { if (this.connectionState === 'connected') note('open'); }); } }; \
    const send = RTCDataChannel.prototype.send; \
    RTCDataChannel.prototype.send = function (d) { note('first_out'); return send.call(this, d); }; \
    new MutationObserver((_, obs) => { \
      const s = document.querySelector('[data-testid=status]'); \
      if (s && s.dataset.state === 'connected') { \
        window.__connectedAt = performance.now(); obs.disconnect(); } \
    }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });";

/// Installed before the page's scripts: notes (in ms since the epoch, to
/// compare pages) when the status first says connected, and when it first
/// counts a direct link.
const DIRECT_PROBE: &str = "new MutationObserver(() => { \
      const s = document.querySelector('[data-testid=status]'); \
      if (!s) return; \
      const now = performance.timeOrigin + performance.now(); \
      if (window.__connectedAt === undefined && s.dataset.state === 'connected') window.__connectedAt = now; \
      if (window.__directAt === undefined && Number(s.dataset.direct) >= 1) window.__directAt = now; \
    }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });";

/// Run in page B: records `[seq, sent_ms, received_ms]` for each bench
/// message as it enters the DOM.
const RECEIVE_PROBE: &str = "window.__recv = []; \
    new MutationObserver(muts => { \
      const now = performance.timeOrigin + performance.now(); \
      for (const m of muts) for (const n of m.addedNodes) { \
        if (n.nodeType !== 1 || n.dataset.testid !== 'message') continue; \
        const t = n.querySelector('[data-testid=message-text]').textContent.split(' '); \
        if (t[0] === 'bench') window.__recv.push([+t[1], +t[2], now]); } \
    }).observe(document.querySelector('.lines'), { childList: true }); return true;";

fn main() -> Result<()> {
    let args = Args::parse();
    let dist = match &args.web_dir {
        Some(dir) => dir.clone(),
        None => web_dir()?,
    };
    let weight = page_weight(&dist)?;
    let relay = Relay::start_with(
        &temp_dir("bench-browser"),
        &["--web-dir", &dist.display().to_string()],
    )?;
    let driver = Driver::start()?;

    // A WebRTC-direct address of the relay's whose port only swallows
    // datagrams (a socket that is never read: no ICMP error either), as on
    // a network that drops UDP; the page is told it first, then WebSocket.
    // As on a network that drops UDP: the page is told a WebRTC-direct
    // address that never answers first, then the WebSocket one.
    let (_blackhole, dropped) = udp_blackhole(&relay.addr(Transport::WebRtcDirect)?)?;
    let ws = relay.addr(Transport::WebSocket)?;
    let dropped_url = format!(
        "{}/?relay={dropped}&relay={ws}&room=bench-dropped",
        relay.http
    );

    let mut connect = Vec::new();
    let mut latency = Vec::new();
    for transport in TRANSPORTS.into_iter().chain([UDP_DROPPED]) {
        let url = if transport == UDP_DROPPED {
            dropped_url.clone()
        } else {
            format!(
                "{}/?transport={transport}&room=bench-{transport}",
                relay.http
            )
        };
        let mut loads = Vec::new();
        let mut reloads = Vec::new();
        for _ in 0..args.loads {
            let (cold, reload) = load_to_connected(&driver, &url)?;
            loads.push(cold);
            reloads.push(reload);
        }
        let mut series = load_summary(&loads);
        series["transport"] = json!(transport);
        series["loads"] = json!(loads);
        series["reload"] = load_summary(&reloads);
        series["reload"]["loads"] = json!(reloads);
        connect.push(series);
        if args.connect_only || transport == UDP_DROPPED {
            continue;
        }
        let relayed = format!("{url}&direct=off");
        latency.push(message_latency(
            &driver, &relay, &relayed, transport, false, &args,
        )?);
    }
    // The direct link, against the relayed run over the same transport
    // just before.
    let mut links = Vec::new();
    if !args.connect_only {
        let transport = "webrtc-direct";
        let url = format!("{}/?transport={transport}&room=bench-direct", relay.http);
        for _ in 0..args.links {
            let (a, b) = direct_pair(&driver, &url, transport)?;
            links.push(link_time(&a, &b)?);
        }
        links.sort_by(f64::total_cmp);
        latency.push(message_latency(
            &driver, &relay, &url, transport, true, &args,
        )?);
    }

    let result = json!({
        "machine": machine(),
        "page": weight,
        "connect": connect,
        "direct_link": {
            "median_ms": percentile(&links, 0.5),
            "max_ms": percentile(&links, 1.0),
            "links_ms": links,
        },
        "latency": latency,
    });
    report(&result);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

/// Raw, gzip and Brotli size of each file the page ships (the
/// compressed ones are the twins `cargo xtask web` wrote).
fn page_weight(dist: &std::path::Path) -> Result<Value> {
    let mut files = Vec::new();
    let (mut raw_total, mut gz_total, mut br_total) = (0u64, 0u64, 0u64);
    for entry in std::fs::read_dir(dist)? {
        let path = entry?.path();
        let twin = path.extension().is_some_and(|e| e == "gz" || e == "br");
        if !path.is_file() || twin {
            continue;
        }
        let size_of_twin = |ext: &str| -> Result<u64> {
            let mut name = path.clone().into_os_string();
            name.push(ext);
            std::fs::metadata(&name).map(|m| m.len()).with_context(|| {
                format!("no {ext} twin of {}: run cargo xtask web", path.display())
            })
        };
        let raw = std::fs::metadata(&path)?.len();
        let (gz, br) = (size_of_twin(".gz")?, size_of_twin(".br")?);
        raw_total += raw;
        gz_total += gz;
        br_total += br;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        files.push(json!({ "file": name, "bytes": raw, "gzip_bytes": gz, "brotli_bytes": br }));
    }
    Ok(json!({
        "files": files,
        "bytes": raw_total,
        "gzip_bytes": gz_total,
        "brotli_bytes": br_total,
        "budget_transfer_bytes": PAGE_BUDGET_BYTES,
    }))
}

/// After a load: its phases in ms since navigation start, and the bytes
/// it transferred (headers included), from the browser's own timings.
const LOAD_TIMINGS: &str = "const r = performance.getEntriesByType('resource'); \
    const nav = performance.getEntriesByType('navigation')[0]; \
    const find = f => r.find(e => f(e.name)); \
    const wasm = find(n => n.endsWith('.wasm')); \
    const addrs = find(n => n.includes('/api/addrs')); \
    return { connected: window.__connectedAt, started: window.__startedAt ?? null, \
      html: nav.responseEnd, wasm: wasm ? wasm.responseEnd : null, \
      addrs_asked: addrs ? addrs.startTime : null, addrs: addrs ? addrs.responseEnd : null, \
      dial: window.__wire.dial ?? null, open: window.__wire.open ?? null, \
      first_out: window.__wire.first_out ?? null, first_in: window.__wire.first_in ?? null, \
      transfer: nav.transferSize + r.reduce((s, e) => s + e.transferSize, 0) };";

/// How long a page stays open before it is reloaded: long enough for the
/// browser to keep the module's compiled code (Chromium caches it once
/// its optimizing tier has made enough, or a couple of seconds after the
/// module was compiled), as for a person who comes back to the page.
const RELOAD_AFTER: Duration = Duration::from_secs(3);

/// One cold page load (a fresh browser profile), then a reload of the same
/// tab (the same peer, its files cached, its saved history read): when
/// each phase of each ended, in ms since navigation start, and what it
/// transferred.
fn load_to_connected(driver: &Driver, url: &str) -> Result<(Value, Value)> {
    let session = driver.session()?;
    session.on_new_document(CONNECT_PROBE)?;
    let idle_after = wait_until_browser_idle(driver.proc.pid());
    let load = || -> Result<Value> {
        session.open(url)?;
        session.wait_for(
            "connected",
            WAIT,
            "return window.__connectedAt === undefined ? null : window.__connectedAt",
        )?;
        let timings = session.eval(LOAD_TIMINGS)?;
        timings["connected"]
            .as_f64()
            .context("connect time is not a number")?;
        Ok(timings)
    };
    let mut cold = load()?;
    cold["browser_idle_after_ms"] = json!(idle_after.as_millis());
    std::thread::sleep(RELOAD_AFTER);
    Ok((cold, load()?))
}

/// How much of a core the browser may use and still count as idle.
const IDLE_SHARE: f64 = 0.1;
/// Over how long the browser's use of the CPU is sampled.
const IDLE_WINDOW: Duration = Duration::from_millis(500);
/// How long to wait at most for an idle browser.
const IDLE_WAIT: Duration = Duration::from_secs(20);

/// Waits until a browser just opened has done its own start-up work, as
/// for a person whose browser is already open when they first visit the
/// page: a headless Chromium keeps about a core busy for a second or two
/// after it opens (its profile, its built-in pages), which on two cores
/// would be measured as the page's. Idle: chromedriver's descendant
/// processes used less than [`IDLE_SHARE`] of a core over [`IDLE_WINDOW`]
/// (Linux's `/proc`; elsewhere it waits 3 s). Gives up after
/// [`IDLE_WAIT`]. Returns how long it waited.
fn wait_until_browser_idle(driver_pid: u32) -> Duration {
    let start = std::time::Instant::now();
    if !std::path::Path::new("/proc/self/stat").exists() {
        std::thread::sleep(Duration::from_secs(3));
        return start.elapsed();
    }
    let mut before = cpu_seconds_of_tree(driver_pid);
    while start.elapsed() < IDLE_WAIT {
        std::thread::sleep(IDLE_WINDOW);
        let now = cpu_seconds_of_tree(driver_pid);
        if now - before < IDLE_SHARE * IDLE_WINDOW.as_secs_f64() {
            break;
        }
        before = now;
    }
    start.elapsed()
}

/// CPU time (user and system, in seconds) used so far by the processes
/// descended from `root` that are still running.
fn cpu_seconds_of_tree(root: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let procs: HashMap<u32, ProcStat> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid).ok()?)))
        .collect();
    let descends = |mut pid: u32| {
        while let Some(stat) = procs.get(&pid) {
            if stat.parent == root {
                return true;
            }
            if stat.parent <= 1 {
                return false;
            }
            pid = stat.parent;
        }
        false
    };
    procs
        .iter()
        .filter(|&(&pid, _)| descends(pid))
        .map(|(_, stat)| stat.cpu_seconds)
        .sum()
}

/// Medians of a series of loads: connected (and its maximum), each phase,
/// what was transferred.
fn load_summary(loads: &[Value]) -> Value {
    let sorted = |key: &str| {
        let mut v: Vec<f64> = loads.iter().filter_map(|l| l[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let median = |key: &str| percentile(&sorted(key), 0.5);
    json!({
        "median_ms": median("connected"),
        "max_ms": percentile(&sorted("connected"), 1.0),
        "phases_median_ms": {
            "html": median("html"),
            "wasm": median("wasm"),
            "started": median("started"),
            "addrs_asked": median("addrs_asked"),
            "addrs": median("addrs"),
            "dial": median("dial"),
            "open": median("open"),
            "first_out": median("first_out"),
            "connected": median("connected"),
        },
        "transfer_bytes": median("transfer"),
    })
}

/// Two pages in one room, linked directly.
fn direct_pair<'a>(
    driver: &'a Driver,
    url: &str,
    transport: &str,
) -> Result<(ChatPage<'a>, ChatPage<'a>)> {
    let a = ChatPage::open_with(driver, url, Some(transport), Some(DIRECT_PROBE))?;
    let b = ChatPage::open_with(driver, url, Some(transport), Some(DIRECT_PROBE))?;
    a.wait_direct(&b.peer_id, WAIT)?;
    b.wait_direct(&a.peer_id, WAIT)?;
    Ok((a, b))
}

/// From both pages connected to their relay to both linked directly, ms.
fn link_time(a: &ChatPage, b: &ChatPage) -> Result<f64> {
    let times = |page: &ChatPage| -> Result<(f64, f64)> {
        let v = page
            .session
            .eval("return [window.__connectedAt, window.__directAt]")?;
        Ok((
            v[0].as_f64().context("no connect time")?,
            v[1].as_f64().context("no direct-link time")?,
        ))
    };
    let ((ca, da), (cb, db)) = (times(a)?, times(b)?);
    Ok(da.max(db) - ca.max(cb))
}

/// The relay's count of chat messages it took in.
fn relay_messages(relay: &Relay) -> Result<f64> {
    let metrics = relay.get("/metrics")?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshtalk_messages_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no meshtalk_messages_total in the relay's metrics")
}

/// Page A sends `rate` messages/s for `secs`; page B's DOM arrival times
/// give the latency of each. `direct`: the pages are linked directly first.
fn message_latency(
    driver: &Driver,
    relay: &Relay,
    url: &str,
    transport: &str,
    direct: bool,
    args: &Args,
) -> Result<Value> {
    let (a, b) = if direct {
        direct_pair(driver, url, transport)?
    } else {
        (
            ChatPage::open(driver, url, Some(transport))?,
            ChatPage::open(driver, url, Some(transport))?,
        )
    };
    a.wait_member(&b.peer_id)?;
    b.wait_member(&a.peer_id)?;
    b.session.eval(RECEIVE_PROBE)?;
    let relay_before = relay_messages(relay)?;
    let total = args.rate * args.secs;
    a.session.eval(&format!(
        "const input = document.querySelector('[data-testid=message-input]'); \
         let i = 0; \
         const timer = setInterval(() => {{ \
           input.value = `bench ${{i}} ${{performance.timeOrigin + performance.now()}}`; \
           input.dispatchEvent(new KeyboardEvent('keydown', {{ key: 'Enter', bubbles: true }})); \
           if (++i >= {total}) clearInterval(timer); \
         }}, {interval});",
        interval = 1000.0 / f64::from(args.rate)
    ))?;
    let sending = Duration::from_secs(u64::from(args.secs));
    std::thread::sleep(sending);
    let _ = b.session.wait_for(
        "every bench message",
        Duration::from_secs(10),
        &format!("return window.__recv.length >= {total}"),
    );
    let received = b.session.eval("return window.__recv")?;
    let rows = received.as_array().cloned().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut ms: Vec<f64> = rows
        .iter()
        .filter(|r| seen.insert(r[0].as_u64()))
        .filter_map(|r| Some(r[2].as_f64()? - r[1].as_f64()?))
        .collect();
    ms.sort_by(f64::total_cmp);
    let relay_took = relay_messages(relay)? - relay_before;
    Ok(json!({
        "path": if direct { "direct" } else { "relay" },
        "relay_messages": relay_took,
        "transport": transport,
        "rate_per_s": args.rate,
        "sent": total,
        "received": ms.len(),
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": percentile(&ms, 1.0),
    }))
}

fn report(result: &Value) {
    let page = &result["page"];
    let kb = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1000.0;
    println!(
        "meshtalk browser benchmark ({})",
        result["machine"].as_str().unwrap_or("")
    );
    println!(
        "page files: {:.1} KB raw, {:.1} KB gzip, {:.1} KB brotli",
        kb(&page["bytes"]),
        kb(&page["gzip_bytes"]),
        kb(&page["brotli_bytes"]),
    );
    for c in result["connect"].as_array().into_iter().flatten() {
        let transfer = c["transfer_bytes"].as_f64().unwrap_or(f64::NAN);
        println!(
            "load over {:<13} transferred {:.1} KB (budget 700 KB: {})",
            c["transport"].as_str().unwrap_or(""),
            transfer / 1000.0,
            verdict(transfer <= PAGE_BUDGET_BYTES as f64),
        );
        for (what, s) in [("first visit", c), ("reload", &c["reload"])] {
            let median = s["median_ms"].as_f64().unwrap_or(f64::NAN);
            let phase = |key: &str| s["phases_median_ms"][key].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {what:<11} connected median {:.0} ms, max {:.0} ms (budget 300 ms: {}); phases (median ms since navigation): html {:.0}, wasm in {:.0}, started {:.0}, /api/addrs asked {:.0} answered {:.0}, dialed {:.0}, link open {:.0}, first bytes sent {:.0}",
                median,
                s["max_ms"].as_f64().unwrap_or(f64::NAN),
                verdict(median < CONNECT_BUDGET_MS),
                phase("html"),
                phase("wasm"),
                phase("started"),
                phase("addrs_asked"),
                phase("addrs"),
                phase("dial"),
                phase("open"),
                phase("first_out"),
            );
        }
    }
    let link = &result["direct_link"];
    println!(
        "both connected to directly linked: median {:.0} ms, max {:.0} ms",
        link["median_ms"].as_f64().unwrap_or(f64::NAN),
        link["max_ms"].as_f64().unwrap_or(f64::NAN),
    );
    for l in result["latency"].as_array().into_iter().flatten() {
        let path = if l["path"] == "direct" {
            "browser->browser (direct, /webrtc)"
        } else {
            "browser->relay->browser"
        };
        println!(
            "{path} over {:<13} {} msg/s: p50 {:.1} ms, p99 {:.1} ms, {}/{} delivered, relay took {} messages",
            l["transport"].as_str().unwrap_or(""),
            l["rate_per_s"],
            l["p50_ms"].as_f64().unwrap_or(f64::NAN),
            l["p99_ms"].as_f64().unwrap_or(f64::NAN),
            l["received"],
            l["sent"],
            l["relay_messages"],
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
