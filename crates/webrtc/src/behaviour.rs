//! The transport's helper inside the swarm: a `/webrtc` dial needs a
//! relayed connection to carry its signaling stream, and only a behaviour
//! can ask the swarm for one.
//!
//! libp2p-stream would dial the peer by id on its own, but with the
//! condition "not connected and not dialing", which the `/webrtc` dial in
//! progress makes false: it would wait forever (and when it does dial, it
//! takes every address other behaviours know, each a relayed connection of
//! its own). So this behaviour dials the relayed address itself,
//! unconditionally, and tells the transport when the connection is up; only
//! then does the transport open its signaling stream.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use futures::channel::oneshot;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dial_opts::DialOpts, dial_opts::PeerCondition, dummy,
    },
};

/// Whether the relayed connection a `/webrtc` dial waits for is up, or why
/// not.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) type Ready = oneshot::Receiver<Result<(), String>>;
/// The other end of [`Ready`].
type Waiter = oneshot::Sender<Result<(), String>>;

/// Relayed dials the transport asks for.
#[derive(Default)]
pub(crate) struct Dials {
    queue: VecDeque<(PeerId, Multiaddr, Waiter)>,
    waker: Option<Waker>,
}

/// What the transport and the behaviour share.
pub(crate) type SharedDials = Arc<Mutex<Dials>>;

pub(crate) fn lock(dials: &SharedDials) -> MutexGuard<'_, Dials> {
    dials.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dials {
    /// Asks for a relayed connection to `peer` at `circuit`; the answer
    /// comes once there is one (or the dial failed).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn request(&mut self, peer: PeerId, circuit: Multiaddr) -> Ready {
        let (tx, rx) = oneshot::channel();
        self.queue.push_back((peer, circuit, tx));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        rx
    }
}

/// The `/webrtc` transport's companion behaviour; put it in the swarm's
/// behaviour next to `libp2p_stream::Behaviour`.
pub struct Behaviour {
    dials: SharedDials,
    connected: HashMap<PeerId, usize>,
    /// Relayed dials in flight, with the `/webrtc` dials waiting for each:
    /// several to one peer share one.
    dialing: HashMap<PeerId, (ConnectionId, Vec<Waiter>)>,
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
                for waiter in self
                    .dialing
                    .remove(&e.peer_id)
                    .into_iter()
                    .flat_map(|(_, w)| w)
                {
                    let _ = waiter.send(Ok(()));
                }
            }
            FromSwarm::DialFailure(e) => {
                let failed = self
                    .dialing
                    .iter()
                    .find(|(_, (id, _))| *id == e.connection_id)
                    .map(|(peer, _)| *peer);
                if let Some((_, waiters)) = failed.and_then(|peer| self.dialing.remove(&peer)) {
                    let reason = format!("no relayed connection: {}", e.error);
                    for waiter in waiters {
                        let _ = waiter.send(Err(reason.clone()));
                    }
                }
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
        while let Some((peer, circuit, ready)) = dials.queue.pop_front() {
            if self.connected.contains_key(&peer) {
                // The signaling stream goes out on a connection we have.
                let _ = ready.send(Ok(()));
                continue;
            }
            if let Some((_, waiters)) = self.dialing.get_mut(&peer) {
                // Or on the one coming.
                waiters.push(ready);
                continue;
            }
            tracing::debug!(%peer, %circuit, "relayed connection for /webrtc signaling");
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![circuit])
                .condition(PeerCondition::Always)
                .build();
            self.dialing
                .insert(peer, (opts.connection_id(), vec![ready]));
            return Poll::Ready(ToSwarm::Dial { opts });
        }
        dials.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
