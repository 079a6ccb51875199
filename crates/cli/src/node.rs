//! Starting a peer and connecting it: what every subcommand does first.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use meshtalk_protocol::{
    arch::{self, TransportConfig},
    behaviour::{BehaviourConfig, Pubsub, Role},
    engine::{Engine, EngineConfig, EngineHandle, Event},
    libp2p::{Multiaddr, PeerId, identity::Keypair},
};
use tokio::task::JoinHandle;

/// Pause before the second round of dials.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// A running peer.
pub struct Node {
    /// Our peer id (a new one each run).
    pub peer_id: PeerId,
    /// Commands in.
    pub handle: EngineHandle,
    /// Events out.
    pub events: UnboundedReceiver<Event>,
    /// The engine's task; it ends after shutdown.
    pub task: JoinHandle<()>,
}

impl Node {
    /// Builds the swarm (with the discovery sources `engine` names, and
    /// gossipsub), starts the engine and the listeners. A connection
    /// attempt may take `timeout` (`--timeout`), handshakes included.
    pub async fn start(
        engine: EngineConfig,
        listen: &[Multiaddr],
        timeout: Duration,
    ) -> Result<Self> {
        Self::start_as(
            Keypair::generate_ed25519(),
            engine,
            Pubsub::default(),
            listen,
            timeout,
        )
        .await
    }

    /// [`Node::start`] with an identity of our own (`--identity`) and a
    /// pubsub router of our choice (`--pubsub`).
    pub async fn start_as(
        keypair: Keypair,
        engine: EngineConfig,
        pubsub: Pubsub,
        listen: &[Multiaddr],
        timeout: Duration,
    ) -> Result<Self> {
        let behaviour = BehaviourConfig {
            role: Role::Peer,
            sources: engine.discovery.sources.clone(),
            pubsub,
            ..BehaviourConfig::default()
        };
        let transport = TransportConfig {
            connect_timeout: Some(timeout),
            ..TransportConfig::default()
        };
        let swarm = arch::build_swarm(keypair, transport, &behaviour)
            .await
            .context("cannot start the libp2p node")?;
        let (engine, handle, events) = Engine::new(swarm, Role::Peer, engine);
        let peer_id = engine.local_peer_id();
        let task = tokio::spawn(engine.run());
        for addr in listen {
            handle.listen(addr.clone()).await?;
        }
        Ok(Self {
            peer_id,
            handle,
            events,
            task,
        })
    }

    /// Dials every address and waits until one connection is up. A round
    /// in which every dial fails is tried once more (handshakes, WebRTC's
    /// above all, sometimes fail once on a busy machine). Fails with one
    /// line when that fails too, or nothing connects within `timeout`.
    /// Returns events that arrived meanwhile, for the caller to handle.
    pub async fn connect(&mut self, addrs: &[Multiaddr], timeout: Duration) -> Result<Vec<Event>> {
        let mut seen = Vec::new();
        let timed_out = || {
            anyhow::anyhow!(
                "timed out after {} s connecting to {}",
                timeout.as_secs_f64(),
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let start = tokio::time::Instant::now();
        let wait = async {
            for round in 0..2 {
                if round > 0 {
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                for addr in addrs {
                    self.handle.dial(addr.clone()).await?;
                }
                // A handshake can also hang rather than fail: the second
                // round starts after half the time at the latest (the first
                // dials go on meanwhile; whichever connects first wins).
                let round_end = tokio::time::Instant::now() + timeout / 2;
                let mut failures = Vec::new();
                loop {
                    let event = match tokio::time::timeout_at(round_end, self.events.next()).await {
                        Ok(Some(event)) => event,
                        Ok(None) => bail!("the node stopped while connecting"),
                        Err(_) if round == 0 => break,
                        // The overall timeout reports the last round.
                        Err(_) => std::future::pending().await,
                    };
                    match &event {
                        Event::Connected { outbound: true, .. } => {
                            seen.push(event);
                            return Ok(());
                        }
                        Event::DialFailed { error, .. } => {
                            failures.push(error.clone());
                            if failures.len() == addrs.len() {
                                break;
                            }
                        }
                        _ => seen.push(event),
                    }
                }
                if round > 0 {
                    // Each attempt has `timeout` too (see `start_as`): a
                    // first dial that fails when the time is up timed out,
                    // whichever timer fired first.
                    if start.elapsed() >= timeout {
                        return Err(timed_out());
                    }
                    bail!("cannot connect: {}", failures.join("; "));
                }
                tracing::debug!(
                    ?failures,
                    "no connection in the first round; trying once more"
                );
            }
            bail!("the node stopped while connecting")
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result.map(|()| seen),
            Err(_) => Err(timed_out()),
        }
    }

    /// Asks the engine to send what it holds and stop, and waits for it.
    pub async fn finish(self) {
        let _ = self.handle.shutdown().await;
        let _ = self.task.await;
    }
}

/// Where a CLI peer listens: the `--listen` addresses when given; with no
/// `--connect` either, TCP and QUIC on every interface at free ports, so
/// that peers found by mDNS have an address of ours to dial (mDNS announces
/// listen addresses, and a peer with none cannot be found).
pub fn listen_addrs(connect: &[Multiaddr], listen: &[Multiaddr]) -> Vec<Multiaddr> {
    if !listen.is_empty() || !connect.is_empty() {
        return listen.to_vec();
    }
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}
