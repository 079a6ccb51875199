//! A `/webrtc` connection: one `RTCPeerConnection`, each stream a data
//! channel.
//!
//! The `datachannel` handler is set when the peer connection is made,
//! before the offer or answer: a remote that opens streams the moment the
//! connection is up (js-libp2p does, for identify) finds them queued here
//! until the swarm asks, never dropped.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use send_wrapper::SendWrapper;
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use web_sys::{
    Event, RtcConfiguration, RtcDataChannelEvent, RtcIceServer, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState,
};

use super::channel::Stream;
use crate::Error;

/// Inbound streams the swarm has not taken yet; past this, new channels
/// are refused (a remote opening thousands unasked is misbehaving).
const MAX_PENDING_INBOUND: usize = 256;
/// The label of the channel the dialer opens before its offer.
pub(crate) const INIT_LABEL: &str = "init";

/// What the peer connection's handlers share with the rest.
#[derive(Default)]
pub(crate) struct Events {
    pub(crate) inbound: RefCell<VecDeque<Stream>>,
    pub(crate) inbound_waker: RefCell<Option<Waker>>,
    /// Local ICE candidates as JSON, `None` once gathering is complete.
    pub(crate) candidates: RefCell<VecDeque<Option<String>>>,
    pub(crate) state: Cell<Option<RtcPeerConnectionState>>,
    /// Whoever waits for a candidate or a state change.
    pub(crate) waker: RefCell<Option<Waker>>,
}

impl Events {
    fn wake(slot: &RefCell<Option<Waker>>) {
        if let Some(w) = slot.borrow_mut().take() {
            w.wake();
        }
    }
}

/// An `RTCPeerConnection` with its handlers.
pub(crate) struct Peer {
    pub(crate) pc: RtcPeerConnection,
    pub(crate) events: Rc<Events>,
    _on_channel: Closure<dyn FnMut(RtcDataChannelEvent)>,
    _on_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _on_state: Closure<dyn FnMut(Event)>,
}

impl Peer {
    /// A new peer connection using `ice_servers` (STUN/TURN URLs; none on
    /// a LAN or loopback).
    pub(crate) fn new(ice_servers: &[String]) -> Result<Self, Error> {
        let config = RtcConfiguration::new();
        if !ice_servers.is_empty() {
            let servers = js_sys::Array::new();
            for url in ice_servers {
                let server = RtcIceServer::new();
                server.set_urls(&JsValue::from_str(url));
                servers.push(&server);
            }
            config.set_ice_servers(&servers);
        }
        let pc = RtcPeerConnection::new_with_configuration(&config).map_err(Error::js)?;
        let events = Rc::new(Events::default());

        let on_channel = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcDataChannelEvent)>::new(move |ev: RtcDataChannelEvent| {
                let channel = ev.channel();
                if channel.label() == INIT_LABEL {
                    // The dialer's first channel only makes its offer carry
                    // a data section; it closes it itself.
                    return;
                }
                let mut inbound = events.inbound.borrow_mut();
                if inbound.len() >= MAX_PENDING_INBOUND {
                    tracing::warn!("remote opened too many streams at once; refusing one");
                    channel.close();
                    return;
                }
                inbound.push_back(Stream::new(channel));
                drop(inbound);
                Events::wake(&events.inbound_waker);
            })
        };
        let on_candidate = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(
                move |ev: RtcPeerConnectionIceEvent| {
                    let json = ev.candidate().and_then(|c| {
                        js_sys::JSON::stringify(&c.to_json())
                            .ok()
                            .and_then(|s| s.as_string())
                    });
                    events.candidates.borrow_mut().push_back(json);
                    Events::wake(&events.waker);
                },
            )
        };
        let on_state = {
            let events = events.clone();
            let pc = pc.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                events.state.set(Some(pc.connection_state()));
                Events::wake(&events.waker);
                // A failed connection ends the muxer, which waits on this.
                Events::wake(&events.inbound_waker);
            })
        };
        pc.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        Ok(Self {
            pc,
            events,
            _on_channel: on_channel,
            _on_candidate: on_candidate,
            _on_state: on_state,
        })
    }

    fn failed(&self) -> bool {
        matches!(
            self.events.state.get(),
            Some(RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed)
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_ondatachannel(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}

/// A `/webrtc` connection, as the swarm's stream muxer.
pub struct Connection {
    peer: SendWrapper<Peer>,
}

impl Connection {
    pub(crate) fn new(peer: Peer) -> Self {
        Self {
            peer: SendWrapper::new(peer),
        }
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let peer = &*self.peer;
        if let Some(stream) = peer.events.inbound.borrow_mut().pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if peer.failed() {
            return Poll::Ready(Err(Error::Closed));
        }
        *peer.events.inbound_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if self.peer.failed() {
            return Poll::Ready(Err(Error::Closed));
        }
        // The stream waits for its channel to open before it writes.
        Poll::Ready(Ok(Stream::new(self.peer.pc.create_data_channel(""))))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.peer.pc.close();
        Poll::Ready(Ok(()))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        if self.peer.failed() {
            return Poll::Ready(Err(Error::Closed));
        }
        *self.peer.events.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
