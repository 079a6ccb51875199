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
//! Everything else is gossipsub's own: [`Gossip`] dereferences to it.

use std::{
    collections::VecDeque,
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    gossipsub,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
};

use crate::{history::Tap, validate::Rejection};

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
        }
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

    pass_connections_to_inner!();

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
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
