//! Holding back the streams we open on an accepted WebRTC-direct
//! connection until the browser can take them.
//!
//! A browser (rust-libp2p's webrtc-websys) starts listening for the data
//! channels we open only once its side of the Noise handshake is done, which
//! is after ours: a stream we opened at once was lost, often the gossipsub
//! one, and the page never heard from us. The browser opens its own streams
//! (identify, gossipsub) as soon as it is ready, so the first stream it opens
//! is the sign: until it comes, or until [`Settle::new`]'s `at_most` has
//! passed (for dialers that open nothing), streams we open wait. Streams the
//! browser opens are never held.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::FutureExt as _;
use futures_timer::Delay;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

/// A muxer whose outbound streams wait until the remote has opened one.
pub struct Settle<M> {
    inner: M,
    /// Until the remote's first stream, or the time limit.
    waiting: Option<Delay>,
}

impl<M> Settle<M> {
    /// Wraps `inner`; with `at_most`, outbound streams wait until the
    /// remote's first stream or that long, whichever comes first; without,
    /// they do not wait (connections we dialed).
    pub fn new(inner: M, at_most: Option<Duration>) -> Self {
        Self {
            inner,
            // The browser's WebRTC stack waits in wall-clock time.
            #[allow(clippy::disallowed_methods)]
            waiting: at_most.map(Delay::new),
        }
    }
}

impl<M: StreamMuxer + Unpin> StreamMuxer for Settle<M> {
    type Substream = M::Substream;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_inbound(cx);
        if polled.is_ready() {
            // The swarm polls outbound requests again after an inbound
            // stream, so nothing more needs waking.
            this.waiting = None;
        }
        polled
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(delay) = &mut this.waiting {
            if delay.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            this.waiting = None;
        }
        Pin::new(&mut this.inner).poll_outbound(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}
