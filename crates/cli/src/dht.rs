//! `meshtalk dht`: bootstrap against a relay, watch the routing table, find
//! peers.

use anyhow::{Result, bail};
use futures::StreamExt;
use meshtalk_protocol::engine::{EngineConfig, Event};

use meshtalk::node::{Node, peer_behaviour};

use crate::args::{DhtAction, DhtArgs};

/// Runs a DHT action.
pub async fn run(args: DhtArgs) -> Result<()> {
    if args.net.connect.is_empty() {
        bail!("meshtalk dht needs --connect with a relay or another DHT peer");
    }
    let mut node = Node::start(
        peer_behaviour(&args.net.connect),
        EngineConfig::default(),
        &args.net.listen,
    )
    .await?;
    node.connect(&args.net.connect, args.net.timeout).await?;

    // Kademlia learns a peer's addresses from identify; wait for the first
    // routing-table entry before asking anything.
    let mut table = 0usize;
    let first = tokio::time::timeout(args.net.timeout, async {
        while let Some(event) = node.events.next().await {
            if let Event::Routing { peer, addrs, new } = event {
                print_route(&peer, &addrs, new);
                return true;
            }
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
    }
    node.finish().await;
    Ok(())
}

fn print_route(
    peer: &meshtalk_protocol::libp2p::PeerId,
    addrs: &[meshtalk_protocol::libp2p::Multiaddr],
    new: bool,
) {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    println!(
        "routing table {} {peer} {}",
        if new { "+" } else { "~" },
        addrs.join(" ")
    );
}
