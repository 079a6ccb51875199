//! Gossipsub, with what peer exchange finds handed to the engine.
//!
//! When a peer prunes us from a room's mesh it may name other members of
//! the room (gossipsub v1.1 peer exchange, "PX"). rust-libp2p's gossipsub
//! then dials them by peer id alone, which fails unless some behaviour
//! already holds an address for them, and tells nobody. [`Gossip`] wraps
//! gossipsub and turns those dials into [`GossipEvent::PeerExchange`]: the
//! engine's neighbour manager decides whether to link to them (under the
//! watermarks, with backoff, through the relay that named them), and
//! `meshtalk dht discover` reports them like any other source.
//!
//! Gossipsub also drops, before anybody sees them, messages whose envelope
//! is wrong: unsigned (another implementation configured without
//! `StrictSign`), badly signed, without a sequence number. [`Gossip`]
//! reports those as [`GossipEvent::Refused`], so that a mixed network's
//! operator sees why a peer's messages never arrive.
//!
//! A page that reloads comes back as the same peer over a new WebRTC-direct
//! connection while its old one still looks open here: libp2p-webrtc
//! notices a browser gone only when its ICE checks fail, about 30 s later.
//! Gossipsub keeps one message queue per peer that every connection's
//! handler takes from, and greets a peer (its subscriptions) only on the
//! first connection: the new page would never hear that we are in its
//! room, and half of what we send it would go down the dead connection.
//! So a newer inbound WebRTC-direct connection from a peer replaces the
//! older one: [`Gossip`] tells gossipsub the older one closed before the
//! newer one arrives (so gossipsub greets the peer afresh, on a queue of
//! its own), hides the older one from it from then on, and closes it.
//!
//! Everything else is gossipsub's own: [`Gossip`] dereferences to it.

use std::{
    collections::{HashMap, VecDeque},
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    gossipsub,
    swarm::{
        CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
        behaviour::{ConnectionClosed, ConnectionEstablished},
    },
};

use crate::{history::Tap, transport::Transport, validate::Rejection};

/// Refusals waiting to be reported; beyond this many (a flood within one
/// poll) the rest go unreported, though gossipsub still drops them.
const MAX_REFUSALS_QUEUED: usize = 256;

/// What gossipsub's connection handler hands it.
type HandlerEvent = THandlerOutEvent<gossipsub::Behaviour<Tap>>;

/// Gossipsub whose peer-exchange dials become events.
pub struct Gossip {
    inner: gossipsub::Behaviour<Tap>,
    tap: Tap,
    /// The peer whose RPC gossipsub handled last. Gossipsub asks for a dial
    /// only while handling a PRUNE with peer exchange, and the swarm drains
    /// a behaviour's events before it hands over the next RPC, so the
    /// dials that follow name peers this one told us about.
    last_sender: Option<PeerId>,
    refused: VecDeque<GossipEvent>,
    /// Established connections by peer, replaced ones included.
    established: HashMap<PeerId, usize>,
    /// Each peer's newest inbound WebRTC-direct connection, and its
    /// endpoint.
    webrtc_direct_in: HashMap<PeerId, (ConnectionId, ConnectedPoint)>,
    /// Connections a newer one replaced: gossipsub has been told they
    /// closed, and hears nothing more of them.
    replaced: HashMap<ConnectionId, PeerId>,
    /// Replaced connections to close.
    to_close: VecDeque<(PeerId, ConnectionId)>,
}

/// What [`Gossip`] reports.
#[derive(Debug)]
pub enum GossipEvent {
    /// Gossipsub's own event.
    Pubsub(gossipsub::Event),
    /// `from` pruned us from a mesh and named `peer`, another member of
    /// the topic, to link to instead.
    PeerExchange {
        /// The peer that sent the PRUNE.
        from: PeerId,
        /// The member it named.
        peer: PeerId,
    },
    /// `via` sent a message gossipsub dropped for its envelope.
    Refused {
        /// The neighbour that sent it.
        via: PeerId,
        /// The topic it claimed.
        topic: gossipsub::TopicHash,
        /// Why.
        reason: Rejection,
    },
}

/// Our reason for gossipsub's.
fn rejection(error: gossipsub::ValidationError) -> Rejection {
    use gossipsub::ValidationError as E;
    match error {
        E::InvalidSignature => Rejection::BadSignature,
        E::EmptySequenceNumber => Rejection::BadEnvelope("no sequence number"),
        E::InvalidSequenceNumber => Rejection::BadEnvelope("sequence number not 8 bytes"),
        E::InvalidPeerId => Rejection::BadEnvelope("source is not a peer id"),
        E::MessageSizeTooLargeForTopic => Rejection::BadEnvelope("too large"),
        E::TransformFailed => Rejection::BadEnvelope("cannot be read"),
        E::SignaturePresent | E::SequenceNumberPresent | E::MessageSourcePresent => {
            Rejection::BadEnvelope("anonymous fields present")
        }
    }
}

impl Gossip {
    /// Wraps a gossipsub behaviour.
    pub fn new(inner: gossipsub::Behaviour<Tap>, tap: Tap) -> Self {
        Self {
            inner,
            tap,
            last_sender: None,
            refused: VecDeque::new(),
            established: HashMap::new(),
            webrtc_direct_in: HashMap::new(),
            replaced: HashMap::new(),
            to_close: VecDeque::new(),
        }
    }

    /// How many of `peer`'s connections were replaced (and not yet closed).
    fn replaced_of(&self, peer: PeerId) -> usize {
        self.replaced.values().filter(|p| **p == peer).count()
    }

    /// `connection`, a new inbound one from `peer`, replaces the peer's
    /// older inbound WebRTC-direct connection, if it is one and there is
    /// one: gossipsub is told the older one closed, now.
    fn replace_older(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) {
        if Transport::of(local_addr) != Transport::WebRtcDirect {
            return;
        }
        let endpoint = ConnectedPoint::Listener {
            local_addr: local_addr.clone(),
            send_back_addr: remote_addr.clone(),
        };
        let Some((older, older_endpoint)) =
            self.webrtc_direct_in.insert(peer, (connection, endpoint))
        else {
            return;
        };
        let visible = self
            .established
            .get(&peer)
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.replaced_of(peer));
        tracing::info!(%peer, "a newer WebRTC-direct connection replaces the older one (a reloaded page)");
        self.inner
            .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id: peer,
                connection_id: older,
                endpoint: &older_endpoint,
                cause: None,
                remaining_established: visible.saturating_sub(1),
            }));
        self.replaced.insert(older, peer);
        self.to_close.push_back((peer, older));
    }
}

impl Gossip {
    /// The signatures of received messages, for history records.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl Deref for Gossip {
    type Target = gossipsub::Behaviour<Tap>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Gossip {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for Gossip {
    type ConnectionHandler = THandler<gossipsub::Behaviour<Tap>>;
    type ToSwarm = GossipEvent;

    pass_connections_to_inner!(handler = std::convert::identity, except inbound and swarm events);

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.replace_older(connection_id, peer, local_addr, remote_addr);
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let peer = established.peer_id;
                // Gossipsub counts only the connections it knows of.
                let other_established = established
                    .other_established
                    .saturating_sub(self.replaced_of(peer));
                *self.established.entry(peer).or_default() += 1;
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..established
                    },
                ));
            }
            FromSwarm::ConnectionClosed(closed) => {
                let peer = closed.peer_id;
                if let Some(count) = self.established.get_mut(&peer) {
                    *count -= 1;
                    if *count == 0 {
                        self.established.remove(&peer);
                    }
                }
                if self.replaced.remove(&closed.connection_id).is_some() {
                    // Gossipsub heard of it when it was replaced.
                    return;
                }
                if self
                    .webrtc_direct_in
                    .get(&peer)
                    .is_some_and(|(c, _)| *c == closed.connection_id)
                {
                    self.webrtc_direct_in.remove(&peer);
                }
                let remaining_established = closed
                    .remaining_established
                    .saturating_sub(self.replaced_of(peer));
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..closed
                    }));
            }
            event => self.inner.on_swarm_event(event),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if self.replaced.contains_key(&connection_id) {
            return;
        }
        self.last_sender = Some(peer);
        if let HandlerEvent::Message {
            invalid_messages, ..
        } = &event
        {
            for (message, error) in invalid_messages {
                if self.refused.len() < MAX_REFUSALS_QUEUED {
                    self.refused.push_back(GossipEvent::Refused {
                        via: peer,
                        topic: message.topic.clone(),
                        reason: rejection(*error),
                    });
                }
            }
        }
        self.inner
            .on_connection_handler_event(peer, connection_id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<GossipEvent, THandlerInEvent<Self>>> {
        if let Some(refused) = self.refused.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(refused));
        }
        if let Some((peer_id, connection)) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            });
        }
        loop {
            return match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::Dial { opts }) => {
                    match (opts.get_peer_id(), self.last_sender) {
                        (Some(peer), Some(from)) if peer != from => {
                            Poll::Ready(ToSwarm::GenerateEvent(GossipEvent::PeerExchange {
                                from,
                                peer,
                            }))
                        }
                        // Nobody to credit (explicit peers, which meshtalk
                        // does not use): drop the dial.
                        _ => continue,
                    }
                }
                Poll::Ready(event) => Poll::Ready(event.map_out(GossipEvent::Pubsub)),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
