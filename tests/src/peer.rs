//! A meshtalk peer inside the test process: the CLI's own [`Node`] (the real
//! engine and swarm), for hostile peers and benchmarks.

use anyhow::{Result, bail};
use futures::StreamExt;
pub use meshtalk::node::Node;
use meshtalk_protocol::{
    behaviour::Pubsub,
    engine::{EngineConfig, Event},
    libp2p::{Multiaddr, identity::Keypair},
};

/// Starts a peer on the current tokio runtime and connects it to every
/// address in turn.
pub async fn connect(config: EngineConfig, addrs: &[Multiaddr]) -> Result<Node> {
    connect_with(config, Pubsub::default(), addrs).await
}

/// [`connect`] with the pubsub router of our choice.
pub async fn connect_with(
    config: EngineConfig,
    pubsub: Pubsub,
    addrs: &[Multiaddr],
) -> Result<Node> {
    let keypair = Keypair::generate_ed25519();
    let mut node = Node::start_as(keypair, config, pubsub, &[], crate::WAIT).await?;
    for addr in addrs {
        node.connect(std::slice::from_ref(addr), crate::WAIT)
            .await?;
    }
    Ok(node)
}

/// Waits (bounded by [`crate::WAIT`]) until an event of `node` matches.
pub async fn wait_for(
    node: &mut Node,
    what: &str,
    mut pick: impl FnMut(&Event) -> bool,
) -> Result<()> {
    tokio::time::timeout(crate::WAIT, async {
        while let Some(event) = node.events.next().await {
            if pick(&event) {
                return Ok(());
            }
        }
        bail!("engine stopped while waiting for {what}")
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))?
}
