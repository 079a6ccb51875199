//! `meshtalk ping`: round-trip times to one peer, and the transport used.

use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use meshtalk_protocol::{
    discovery::{Discovery, Sources},
    engine::{EngineConfig, Event},
    libp2p::multiaddr::Protocol,
};

use meshtalk::node::Node;

use crate::args::PingArgs;

/// Pings `args.addr` `args.count` times, printing each round trip, then a
/// summary.
pub async fn run(args: PingArgs) -> Result<()> {
    // Only the pinged peer: no discovery, no other connections.
    let engine = EngineConfig {
        ping_interval: Some(Duration::from_secs(1)),
        discovery: Discovery {
            sources: Sources::only([]),
            ..Discovery::default()
        },
        ..EngineConfig::default()
    };
    let mut node = Node::start(engine, &[], args.timeout).await?;
    let early = node
        .connect(std::slice::from_ref(&args.addr), args.timeout)
        .await?;
    let target = args.addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    });
    let target = target.or_else(|| {
        early.iter().find_map(|e| match e {
            Event::Connected {
                peer,
                outbound: true,
                ..
            } => Some(*peer),
            _ => None,
        })
    });
    let Some(target) = target else {
        bail!(
            "connected, but could not tell which peer answered at {}",
            args.addr
        );
    };
    println!("PING {target} at {}", args.addr);

    let mut rtts = Vec::new();
    let mut transport = None;
    while rtts.len() < args.count as usize {
        let next = tokio::time::timeout(args.timeout, node.events.next()).await;
        match next {
            Err(_) => bail!(
                "no ping reply from {target} within {} s",
                args.timeout.as_secs_f64()
            ),
            Ok(None) => bail!("the node stopped"),
            Ok(Some(Event::Ping {
                peer,
                rtt,
                transport: t,
                ..
            })) if peer == target => {
                let ms = rtt.as_secs_f64() * 1000.0;
                println!(
                    "reply from {peer} over {t}: seq={} time={ms:.3} ms",
                    rtts.len() + 1
                );
                rtts.push(ms);
                transport = Some(t);
            }
            Ok(Some(Event::Disconnected {
                peer, remaining: 0, ..
            })) if peer == target => bail!("{target} closed the connection"),
            Ok(Some(_)) => {}
        }
    }
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
    println!(
        "--- {target} over {} ---\n{} replies, rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms",
        transport.map(|t| t.name()).unwrap_or("?"),
        rtts.len()
    );
    node.finish().await;
    Ok(())
}
