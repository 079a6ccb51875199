//! Load for benchmarks: a sender publishing at a fixed rate and a
//! receiver timing each message's delivery; process figures from /proc.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use meshtalk_protocol::{
    discovery::{Discovery, Sources},
    engine::{EngineConfig, Event},
    libp2p::Multiaddr,
    rooms::Room,
};

use crate::{
    peer::{self, Node},
    stats::percentile,
};

/// Size of each benchmark message's text.
pub const MESSAGE_BYTES: usize = 100;

/// What one load run measured.
pub struct Load {
    /// Messages sent.
    pub sent: usize,
    /// Messages never delivered.
    pub lost: usize,
    /// Messages per second the sender managed.
    pub achieved_rate: f64,
    /// Median delivery latency.
    pub p50_ms: f64,
    /// 99th percentile delivery latency.
    pub p99_ms: f64,
}

/// A sender and a receiver in room `bench`, both connected to the relay at
/// `addr` only, the receiver having heard from the sender.
pub async fn pair(addr: &Multiaddr) -> Result<(Node, Node, Room)> {
    let room = Room::new("bench")?;
    let config = EngineConfig {
        rooms: vec![room.clone()],
        discovery: relay_only(),
        ..EngineConfig::default()
    };
    let sender = peer::connect(config.clone(), std::slice::from_ref(addr)).await?;
    let mut receiver = peer::connect(config, std::slice::from_ref(addr)).await?;
    let sender_id = sender.peer_id;
    peer::wait_for(
        &mut receiver,
        "sender joined",
        |e| matches!(e, Event::PeerJoined { peer, .. } if *peer == sender_id),
    )
    .await?;
    Ok((sender, receiver, room))
}

/// Sends `rate` messages/s for `secs` and measures each one's delivery.
pub async fn load(
    sender: &Node,
    receiver: &mut Node,
    room: &Room,
    rate: u64,
    secs: u64,
) -> Result<Load> {
    let total = (rate * secs) as usize;
    let base = Instant::now();
    let handle = sender.handle.clone();
    let room_for_sender = room.clone();
    let sending = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < total {
            let due = ((base.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
            while sent < due {
                let stamp = base.elapsed().as_nanos();
                let mut text = format!("{sent:010}|{stamp:020}|");
                text.extend(std::iter::repeat_n('x', MESSAGE_BYTES - text.len()));
                handle.send(room_for_sender.clone(), text).await?;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::Ok(base.elapsed())
    });

    let mut seen = vec![false; total];
    let mut received = 0usize;
    let mut latencies = Vec::with_capacity(total);
    let mut send_time = None;
    let quiet = Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout(quiet, receiver.events.next()).await;
        match next {
            Ok(Some(Event::Message { message, .. })) => {
                let now = base.elapsed().as_nanos();
                let mut parts = message.text.split('|');
                let (Some(seq), Some(stamp)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(seq), Ok(stamp)) = (seq.parse::<usize>(), stamp.parse::<u128>()) else {
                    continue;
                };
                if seq < total && !seen[seq] {
                    seen[seq] = true;
                    received += 1;
                    latencies.push((now.saturating_sub(stamp)) as f64 / 1e6);
                }
                if received == total {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("receiver stopped"),
            Err(_) => break, // nothing for 5 s: the rest is lost
        }
        if send_time.is_none() && sending.is_finished() {
            send_time = Some(base.elapsed());
        }
    }
    let elapsed = sending.await??;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Ok(Load {
        sent: total,
        lost: total - received,
        achieved_rate: total as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// No discovery: the peers talk through the relay only, which is what these
/// figures measure (`bench_mesh` measures a network with discovery on).
pub fn relay_only() -> Discovery {
    Discovery {
        sources: Sources::only([]),
        ..Discovery::default()
    }
}

/// Resident memory of a process, in MB.
pub fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// CPU time (user and system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    Ok(proc_stat(pid)?.cpu_seconds)
}

/// What Linux's `/proc/PID/stat` says of a process that the benchmarks use.
#[derive(Clone, Copy, Debug)]
pub struct ProcStat {
    /// Its parent's process id.
    pub parent: u32,
    /// CPU time (user and system) it has used, in seconds.
    pub cpu_seconds: f64,
}

/// Reads `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Result<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from the
    // third: the parent is the 4th, utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("no command name in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("short stat line")
    };
    let parent = fields
        .get(1)
        .and_then(|v| v.parse::<u32>().ok())
        .context("short stat line")?;
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    Ok(ProcStat {
        parent,
        cpu_seconds: (field(11)? + field(12)?) / 100.0,
    })
}
