//! Kademlia, without dialing the providers of a room.
//!
//! rust-libp2p's Kademlia (0.49) counts the providers a `GET_PROVIDERS`
//! answer names among the peers its query goes on to ask, so every room
//! lookup dials the room's members: through their relays (a provider
//! record carries relayed addresses), and then hole punching adds a direct
//! connection. Members are DHT clients and refuse the request, so each of
//! those connections carries nothing; the neighbour manager prunes them as
//! soon as they are old enough, and the next lookup dials them again. In a
//! simulated room of 30 peers that was about 900 dials in 45 s, and Noise
//! handshakes took a tenth of the CPU of a 1,000-peer run.
//!
//! [`Dht`] wraps Kademlia, remembers whom a lookup named as a provider, and
//! answers the query's dial of such a peer with an immediate failure
//! (unless the peer is in the routing table, which holds DHT servers only):
//! the query goes on with the servers, and the engine's neighbour manager
//! alone decides which members to link to. Everything else is Kademlia's
//! own: [`Dht`] dereferences to it.

use std::{
    collections::HashSet,
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    kad::{self, store::MemoryStore},
    swarm::{
        ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
};

/// Providers remembered; past this many the set starts afresh (a member
/// forgotten is at worst dialed once more).
const MAX_PROVIDERS: usize = 4096;

/// Kademlia whose queries do not dial the providers they found.
pub struct Dht {
    inner: kad::Behaviour<MemoryStore>,
    /// Peers a lookup named as providers (room members).
    providers: HashSet<PeerId>,
}

impl Dht {
    /// Wraps a Kademlia behaviour.
    pub fn new(inner: kad::Behaviour<MemoryStore>) -> Self {
        Self {
            inner,
            providers: HashSet::new(),
        }
    }

    /// Whether a query's dial of `peer` is one to skip: a provider that is
    /// no DHT server of ours.
    fn skip_dial(&mut self, peer: &PeerId) -> bool {
        self.providers.contains(peer)
            && !self
                .inner
                .kbucket(*peer)
                .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
    }

    fn remember(&mut self, providers: &HashSet<PeerId>) {
        if self.providers.len() + providers.len() > MAX_PROVIDERS {
            self.providers.clear();
        }
        self.providers.extend(providers.iter().copied());
    }
}

impl Deref for Dht {
    type Target = kad::Behaviour<MemoryStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Dht {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for Dht {
    type ConnectionHandler = THandler<kad::Behaviour<MemoryStore>>;
    type ToSwarm = kad::Event;

    pass_connections_to_inner!();

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection_id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<kad::Event, THandlerInEvent<Self>>> {
        loop {
            let event = match self.inner.poll(cx) {
                Poll::Ready(event) => event,
                Poll::Pending => return Poll::Pending,
            };
            match &event {
                // Kademlia hands its events out before it polls its queries
                // again, so the providers are known before the dials.
                ToSwarm::GenerateEvent(kad::Event::OutboundQueryProgressed {
                    result:
                        kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                            providers,
                            ..
                        })),
                    ..
                }) => self.remember(providers),
                ToSwarm::Dial { opts } => {
                    if let Some(peer) = opts.get_peer_id()
                        && self.skip_dial(&peer)
                    {
                        tracing::trace!(%peer, "not dialing a room member for a DHT query");
                        // The query counts the peer as failed and asks the
                        // next one at once.
                        self.inner
                            .on_swarm_event(FromSwarm::DialFailure(DialFailure {
                                peer_id: Some(peer),
                                error: &DialError::Aborted,
                                connection_id: opts.connection_id(),
                            }));
                        continue;
                    }
                }
                _ => {}
            }
            return Poll::Ready(event);
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::{
        Multiaddr, PeerId, StreamProtocol, Swarm,
        kad::{self, store::MemoryStore},
        swarm::SwarmEvent,
    };

    use super::Dht;
    use crate::testing::memory_node;

    const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshtalk/kad-test/1.0.0");

    /// A node on libp2p's in-memory transport, listening at `/memory/{port}`.
    async fn node(port: u64, mode: kad::Mode) -> (Swarm<Dht>, Multiaddr) {
        let (mut swarm, addr) = memory_node(port, |key| {
            let id = key.public().to_peer_id();
            let mut config = kad::Config::new(PROTOCOL);
            config.set_query_timeout(Duration::from_secs(10));
            let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
            kad.set_mode(Some(mode));
            Dht::new(kad)
        });
        swarm.add_external_address(addr.clone());
        (swarm, addr)
    }

    /// Drives a swarm until `done` says so (at most 20 s); the events
    /// seen go to `seen`.
    async fn until<F>(swarm: &mut Swarm<Dht>, seen: &mut Vec<String>, mut done: F)
    where
        F: FnMut(&SwarmEvent<kad::Event>) -> bool,
    {
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    seen.push(format!("{event:?}"));
                    if done(&event) {
                        return;
                    }
                }
                () = &mut deadline => panic!("timed out; events: {seen:#?}"),
            }
        }
    }

    /// Drives the other swarms in the background.
    fn drive(mut swarm: Swarm<Dht>) {
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
    }

    #[tokio::test]
    async fn a_room_lookup_finds_members_without_dialing_them() {
        let base = 7_000_000 + u64::from(std::process::id() % 1_000) * 10;
        let (mut server, server_addr) = node(base, kad::Mode::Server).await;
        let server_id = *server.local_peer_id();
        let (mut member, _) = node(base + 1, kad::Mode::Client).await;
        let member_id = *member.local_peer_id();
        let (mut asker, _) = node(base + 2, kad::Mode::Client).await;
        let key = kad::RecordKey::new(&"room");
        let mut seen = Vec::new();

        // The member announces itself to the server.
        member
            .behaviour_mut()
            .add_address(&server_id, server_addr.clone());
        until(&mut server, &mut seen, |e| {
            matches!(e, SwarmEvent::NewListenAddr { .. })
        })
        .await;
        drive(server);
        member
            .behaviour_mut()
            .start_providing(key.clone())
            .expect("providing");
        until(&mut member, &mut seen, |e| {
            matches!(
                e,
                SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::StartProviding(_),
                    ..
                })
            )
        })
        .await;
        drive(member);

        // Another peer looks the room up: it learns of the member and
        // never dials it.
        asker.behaviour_mut().add_address(&server_id, server_addr);
        asker.behaviour_mut().get_providers(key);
        let mut found: Vec<PeerId> = Vec::new();
        let mut dialed: Vec<PeerId> = Vec::new();
        until(&mut asker, &mut seen, |e| match e {
            SwarmEvent::Dialing {
                peer_id: Some(peer),
                ..
            }
            | SwarmEvent::ConnectionEstablished { peer_id: peer, .. } => {
                dialed.push(*peer);
                false
            }
            SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { result, step, .. }) => {
                if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) = result
                {
                    found.extend(providers.iter().copied());
                }
                step.last
            }
            _ => false,
        })
        .await;
        assert!(found.contains(&member_id), "the member was not found");
        assert!(
            !dialed.contains(&member_id),
            "the lookup dialed the member; events: {seen:#?}"
        );
        assert!(dialed.contains(&server_id), "the server was never asked");
    }
}
