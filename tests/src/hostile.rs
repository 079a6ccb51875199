//! A hostile peer: a real libp2p node on the meshtalk stack that publishes
//! whatever bytes it is given on a topic, bypassing every sender-side check.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use meshtalk_protocol::{
    arch,
    behaviour::{BehaviourConfig, Role},
    engine::{Engine, EngineConfig, Event},
    libp2p::{Multiaddr, identity::Keypair},
};

/// Connects to every address, publishes each payload on `topic`, waits until
/// all are on the wire, and returns the hostile peer's id.
pub fn publish_junk(addrs: &[Multiaddr], topic: &str, payloads: Vec<Vec<u8>>) -> Result<String> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let swarm = arch::build_swarm(
            Keypair::generate_ed25519(),
            Default::default(),
            &BehaviourConfig::default(),
        )
        .await?;
        let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, EngineConfig::default());
        let peer_id = engine.local_peer_id().to_string();
        let task = tokio::spawn(engine.run());
        for addr in addrs {
            handle.dial(addr.clone()).await?;
        }
        let mut connected = 0;
        tokio::time::timeout(crate::WAIT, async {
            while connected < addrs.len() {
                match events.next().await {
                    Some(Event::Connected { outbound: true, .. }) => connected += 1,
                    Some(Event::DialFailed { error, .. }) => bail!("hostile dial failed: {error}"),
                    Some(_) => {}
                    None => bail!("hostile engine stopped"),
                }
            }
            Ok(())
        })
        .await
        .context("hostile peer could not connect")??;
        // Give the targets' subscriptions time to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for payload in payloads {
            handle.publish_raw(topic, payload).await?;
        }
        handle.shutdown().await?;
        tokio::time::timeout(crate::WAIT, task)
            .await
            .context("hostile peer did not finish sending")??;
        Ok(peer_id)
    })
}
