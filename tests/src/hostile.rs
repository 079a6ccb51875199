//! A hostile peer: a real libp2p node on the meshtalk stack that publishes
//! whatever bytes it is given on a topic, bypassing every sender-side check.

use std::time::Duration;

use anyhow::{Context, Result};
use meshtalk_protocol::{engine::EngineConfig, libp2p::Multiaddr};

use crate::peer;

/// How long one message may wait for a neighbour to take it before the
/// hostile peer counts itself cut off.
const CUT_OFF: Duration = Duration::from_secs(5);

/// Connects to every address, publishes each payload on `topic`, waits until
/// all are on the wire (or the targets cut it off), and returns the hostile
/// peer's id.
pub fn publish_junk(addrs: &[Multiaddr], topic: &str, payloads: Vec<Vec<u8>>) -> Result<String> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let peer = peer::connect(EngineConfig::default(), addrs).await?;
        // Give the targets' subscriptions time to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for payload in payloads {
            let sent = peer.handle.publish_raw(topic, payload);
            let Ok(sent) = tokio::time::timeout(CUT_OFF, sent).await else {
                // Nobody takes our messages any more: the targets cut us
                // off (graylisted peers are refused for ten minutes). What
                // got through is what the caller looks at; the rest stays
                // held, so there is nothing to wait for.
                return Ok(peer.peer_id.to_string());
            };
            sent?;
        }
        peer.handle.shutdown().await?;
        tokio::time::timeout(crate::WAIT, peer.task)
            .await
            .context("hostile peer did not finish sending")??;
        Ok(peer.peer_id.to_string())
    })
}
