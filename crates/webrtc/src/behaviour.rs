//! The transport's helper inside the swarm: a `/webrtc` dial needs a
//! relayed connection to carry its signaling stream, and only a behaviour
//! can ask the swarm for one.
//!
//! libp2p-stream would dial the peer by id on its own, but with the
//! condition "not connected and not dialing", which the `/webrtc` dial in
//! progress makes false: it would wait forever. So this behaviour dials the
//! relayed address itself, unconditionally, and the stream waiting for the
//! peer goes out on that connection once it is up.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dial_opts::DialOpts, dial_opts::PeerCondition, dummy,
    },
};

/// Relayed dials the transport asks for.
#[derive(Default)]
pub(crate) struct Dials {
    queue: VecDeque<(PeerId, Multiaddr)>,
    waker: Option<Waker>,
}

/// What the transport and the behaviour share.
pub(crate) type SharedDials = Arc<Mutex<Dials>>;

pub(crate) fn lock(dials: &SharedDials) -> MutexGuard<'_, Dials> {
    dials.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dials {
    /// Asks for a relayed connection to `peer` at `circuit`.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn request(&mut self, peer: PeerId, circuit: Multiaddr) {
        self.queue.push_back((peer, circuit));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The `/webrtc` transport's companion behaviour; put it in the swarm's
/// behaviour next to `libp2p_stream::Behaviour`.
pub struct Behaviour {
    dials: SharedDials,
    connected: HashMap<PeerId, usize>,
    /// Relayed dials in flight: several `/webrtc` dials to one peer (the
    /// swarm tries a peer's addresses concurrently) share one.
    dialing: HashMap<PeerId, ConnectionId>,
}

impl Behaviour {
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn new(dials: SharedDials) -> Self {
        Self {
            dials,
            connected: HashMap::new(),
            dialing: HashMap::new(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                *self.connected.entry(e.peer_id).or_default() += 1;
                self.dialing.remove(&e.peer_id);
            }
            FromSwarm::DialFailure(e) => {
                self.dialing.retain(|_, id| *id != e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        let mut dials = lock(&self.dials);
        while let Some((peer, circuit)) = dials.queue.pop_front() {
            if self.connected.contains_key(&peer) || self.dialing.contains_key(&peer) {
                // The signaling stream goes out on a connection we have,
                // or on the one coming.
                continue;
            }
            tracing::debug!(%peer, %circuit, "relayed connection for /webrtc signaling");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![circuit])
                .condition(PeerCondition::Always)
                .build();
            self.dialing.insert(peer, opts.connection_id());
            return Poll::Ready(ToSwarm::Dial { opts });
        }
        dials.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
