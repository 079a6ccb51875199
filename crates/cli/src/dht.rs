//! `meshtalk dht`: bootstrap against a relay, watch the routing table, find
//! peers.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use futures::StreamExt;
use meshtalk_protocol::{
    discovery::Source,
    engine::{EngineConfig, Event},
    libp2p::{Multiaddr, PeerId},
};

use crate::args::{DhtAction, DhtArgs};

/// Runs a DHT action.
pub async fn run(args: DhtArgs) -> Result<()> {
    if args.net.connect.is_empty() {
        bail!("meshtalk dht needs --connect with a relay or another DHT peer");
    }
    let rooms = match &args.action {
        DhtAction::Discover {
            room: Some(room), ..
        } => vec![room.clone()],
        _ => Vec::new(),
    };
    let mut node = args
        .net
        .start(EngineConfig {
            rooms,
            ..EngineConfig::default()
        })
        .await?;
    // Events that arrive before the action starts, for `discover`.
    let mut early = node.connect(&args.net.connect, args.net.timeout).await?;

    // Kademlia learns a peer's addresses from identify; wait for the first
    // routing-table entry before asking anything.
    let mut table = 0usize;
    let first = tokio::time::timeout(args.net.timeout, async {
        while let Some(event) = node.events.next().await {
            if let Event::Routing { peer, addrs, new } = event {
                print_route(&peer, &addrs, new);
                return true;
            }
            early.push(event);
        }
        false
    })
    .await;
    if !matches!(first, Ok(true)) {
        bail!("no DHT peer answered: is --connect a meshtalk relay?");
    }
    table += 1;

    match args.action {
        DhtAction::Bootstrap { watch } => {
            node.handle.bootstrap().await?;
            while let Some(event) = node.events.next().await {
                match event {
                    Event::Routing { peer, addrs, new } => {
                        table += usize::from(new);
                        print_route(&peer, &addrs, new);
                    }
                    Event::Bootstrapped { remaining: 0 } if !watch => {
                        println!("bootstrap done: {table} peer(s) in the routing table");
                        break;
                    }
                    _ => {}
                }
            }
        }
        DhtAction::FindPeer { peer } => {
            node.handle.find_peer(peer).await?;
            while let Some(event) = node.events.next().await {
                if let Event::PeerLookup { peer: found, addrs } = event {
                    if found != peer {
                        continue;
                    }
                    if addrs.is_empty() {
                        bail!("peer {peer} not found in the DHT");
                    }
                    for addr in addrs {
                        println!("{peer} at {addr}");
                    }
                    break;
                }
            }
        }
        DhtAction::Providers { room } => {
            node.handle.find_providers(room.clone()).await?;
            while let Some(event) = node.events.next().await {
                if let Event::Providers {
                    room: found,
                    providers,
                } = event
                {
                    if found != room {
                        continue;
                    }
                    for (peer, addrs) in &providers {
                        println!("provider {peer} {}", join(addrs));
                    }
                    println!(
                        "{} member(s) of room {room} announced in the DHT",
                        providers.len()
                    );
                    break;
                }
            }
        }
        DhtAction::Discover { duration, .. } => {
            let sources = args.net.discovery()?.sources;
            let mut found: BTreeMap<Source, usize> = BTreeMap::new();
            let run = async {
                let events = futures::stream::iter(early).chain(&mut node.events);
                futures::pin_mut!(events);
                while let Some(event) = events.next().await {
                    if let Event::Discovered {
                        peer,
                        source,
                        addrs,
                    } = event
                    {
                        *found.entry(source).or_default() += 1;
                        println!("found {peer} via {source} {}", join(&addrs));
                    }
                }
            };
            let _ = tokio::time::timeout(duration, run).await;
            for source in Source::ALL {
                match (sources.has(source), found.get(&source)) {
                    (false, _) => println!("{source}: off"),
                    (true, n) => println!("{source}: {} peer(s)", n.copied().unwrap_or(0)),
                }
            }
        }
    }
    node.finish().await;
    Ok(())
}

fn join(addrs: &[Multiaddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_route(peer: &PeerId, addrs: &[Multiaddr], new: bool) {
    println!(
        "routing table {} {peer} {}",
        if new { "+" } else { "~" },
        join(addrs)
    );
}
