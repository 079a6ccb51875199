//! A meshtalk peer inside the test process: the real engine and swarm,
//! driven directly (for hostile peers and benchmarks).

use anyhow::{Result, bail};
use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use meshtalk_protocol::{
    arch,
    behaviour::{BehaviourConfig, Role},
    engine::{Engine, EngineConfig, EngineHandle, Event},
    libp2p::{Multiaddr, PeerId, identity::Keypair},
};
use tokio::task::JoinHandle;

/// A running in-process peer.
pub struct Peer {
    /// Its id.
    pub peer_id: PeerId,
    /// Commands in.
    pub handle: EngineHandle,
    /// Events out.
    pub events: UnboundedReceiver<Event>,
    /// The engine task.
    pub task: JoinHandle<()>,
}

impl Peer {
    /// Starts a peer (on the current tokio runtime) and connects it to every
    /// address, failing if any dial fails or takes longer than [`crate::WAIT`].
    pub async fn connect(config: EngineConfig, addrs: &[Multiaddr]) -> Result<Self> {
        let swarm = arch::build_swarm(
            Keypair::generate_ed25519(),
            Default::default(),
            &BehaviourConfig::default(),
        )
        .await?;
        let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, config);
        let peer_id = engine.local_peer_id();
        let task = tokio::spawn(engine.run());
        for addr in addrs {
            handle.dial(addr.clone()).await?;
        }
        let mut connected = 0;
        tokio::time::timeout(crate::WAIT, async {
            while connected < addrs.len() {
                match events.next().await {
                    Some(Event::Connected { outbound: true, .. }) => connected += 1,
                    Some(Event::DialFailed { error, .. }) => bail!("dial failed: {error}"),
                    Some(_) => {}
                    None => bail!("engine stopped"),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("peer could not connect to {addrs:?}"))??;
        Ok(Self {
            peer_id,
            handle,
            events,
            task,
        })
    }

    /// Waits (bounded) until an event matches.
    pub async fn wait_for(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> bool,
    ) -> Result<()> {
        tokio::time::timeout(crate::WAIT, async {
            while let Some(event) = self.events.next().await {
                if pick(&event) {
                    return Ok(());
                }
            }
            bail!("engine stopped while waiting for {what}")
        })
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))?
    }
}
