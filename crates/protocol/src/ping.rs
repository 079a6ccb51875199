//! Ping, `/ipfs/ping/1.0.0`: the peer that opens the stream sends 32 random
//! bytes, the other side echoes them, and the round trip is timed; the
//! stream is reused for the next ping. Wire-compatible with every libp2p
//! implementation.
//!
//! It runs on plain streams (`libp2p-stream`) driven by the engine's event
//! loop. Upstream's `libp2p-ping` 0.48 forgets to poll a renewed inbound
//! future, so over QUIC an answer can wait until something else wakes the
//! connection; here every stream is polled by the task that waits on it.

use crate::clock;
use std::{collections::HashMap, io, time::Duration};

use futures::{
    AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt,
    future::{AbortHandle, Abortable, BoxFuture, Either, select},
    stream::FuturesUnordered,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};

use crate::framing::{Inbound, accept};

/// The ping protocol id.
pub const PING_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");
const PING_SIZE: usize = 32;
/// Bounds of the time a ping may wait for its answer: three intervals,
/// but never less than 5 s (a busy machine) nor more than 20 s.
const MIN_PING_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// An inbound ping stream idle this long is closed.
const INBOUND_IDLE: Duration = Duration::from_secs(120);
/// Inbound ping streams one peer may hold open.
const MAX_INBOUND_PER_PEER: usize = 2;
/// Pings left unanswered in a row before the peer counts as gone. On a
/// native node one can be a busy peer or a busy machine (a relay saturated
/// by a thousand newcomers answers late, and dropping its links then only
/// brings them back at once, handshakes and all); two in a row (the second
/// sent as soon as the first times out: 30 s with the usual 5 s interval)
/// is a peer or path that is gone. A page has one relay link, and its
/// browser would notice a dead relay's WebRTC connection only after ~30 s:
/// it gives up after one and dials another relay.
const MISSES_TO_GIVE_UP: u32 = if crate::arch::NATIVE { 2 } else { 1 };

enum Outcome {
    Pong {
        peer: PeerId,
        rtt: Duration,
        stream: Stream,
    },
    Failed {
        peer: PeerId,
        error: String,
        retry: bool,
        timed_out: bool,
    },
    InboundClosed {
        peer: PeerId,
    },
    /// The peer went away before its queued round ran.
    Cancelled,
}

enum Next {
    Inbound(Option<(PeerId, Stream)>),
    Outcome(Option<Outcome>),
}

/// What pinging a peer found.
pub(crate) enum PingEvent {
    /// An answer, after this round trip.
    Pong(PeerId, Duration),
    /// No answer to [`MISSES_TO_GIVE_UP`] pings in a row, each within the
    /// timeout: the peer (or the path to it) is gone, even if no transport
    /// has noticed yet.
    Unanswered(PeerId),
}

/// Pings every connected peer at an interval and answers their pings.
pub(crate) struct Pinger {
    control: Control,
    incoming: Option<Inbound>,
    interval: Duration,
    timeout: Duration,
    tasks: FuturesUnordered<BoxFuture<'static, Outcome>>,
    /// Peers being pinged, each with the handle that cancels its queued
    /// round: a round left to run after the peer is gone would open a
    /// stream, and libp2p-stream dials a peer to open one.
    pinging: HashMap<PeerId, AbortHandle>,
    inbound: HashMap<PeerId, usize>,
    /// Pings in a row each peer left unanswered, for those that did.
    misses: HashMap<PeerId, u32>,
}

impl Pinger {
    /// Takes over the ping protocol on `control`.
    pub(crate) fn new(mut control: Control, interval: Duration) -> Self {
        let incoming = accept(&mut control, PING_PROTOCOL);
        Self {
            control,
            incoming,
            interval,
            timeout: (interval * 3).clamp(MIN_PING_TIMEOUT, MAX_PING_TIMEOUT),
            tasks: FuturesUnordered::new(),
            pinging: HashMap::new(),
            inbound: HashMap::new(),
            misses: HashMap::new(),
        }
    }

    /// Starts pinging a newly connected peer (at once, then every interval).
    pub(crate) fn start(&mut self, peer: PeerId) {
        if !self.pinging.contains_key(&peer) {
            self.schedule(peer, None, Duration::ZERO);
        }
    }

    /// Queues the next ping of `peer` after `delay`, on `stream` if one is
    /// open.
    fn schedule(&mut self, peer: PeerId, stream: Option<Stream>, delay: Duration) {
        let (cancel, registration) = AbortHandle::new_pair();
        let round = round(self.control.clone(), peer, stream, delay, self.timeout);
        self.tasks.push(
            Abortable::new(round, registration)
                .map(|done| done.unwrap_or(Outcome::Cancelled))
                .boxed(),
        );
        self.pinging.insert(peer, cancel);
    }

    /// Stops pinging a peer we are no longer connected to.
    pub(crate) fn stop(&mut self, peer: &PeerId) {
        if let Some(cancel) = self.pinging.remove(peer) {
            cancel.abort();
        }
        self.misses.remove(peer);
    }

    /// The next round trip or unanswered ping. Pending forever when there
    /// is nothing to do, so it can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> PingEvent {
        loop {
            let next = {
                let incoming = &mut self.incoming;
                let tasks = &mut self.tasks;
                let inbound = async move {
                    match incoming.as_mut() {
                        Some(incoming) => incoming.next().await,
                        None => futures::future::pending().await,
                    }
                };
                let outcome = async move {
                    if tasks.is_empty() {
                        futures::future::pending::<()>().await;
                    }
                    tasks.next().await
                };
                match select(Box::pin(inbound), Box::pin(outcome)).await {
                    Either::Left((stream, _)) => Next::Inbound(stream),
                    Either::Right((outcome, _)) => Next::Outcome(outcome),
                }
            };
            match next {
                Next::Inbound(Some((peer, stream))) => self.answer(peer, stream),
                Next::Inbound(None) => self.incoming = None,
                Next::Outcome(Some(outcome)) => {
                    if let Some(event) = self.on_outcome(outcome) {
                        return event;
                    }
                }
                Next::Outcome(None) => {}
            }
        }
    }

    fn answer(&mut self, peer: PeerId, stream: Stream) {
        let open = self.inbound.entry(peer).or_default();
        if *open >= MAX_INBOUND_PER_PEER {
            tracing::debug!(%peer, "too many inbound ping streams; dropping one");
            return;
        }
        *open += 1;
        self.tasks.push(echo(peer, stream).boxed());
    }

    fn on_outcome(&mut self, outcome: Outcome) -> Option<PingEvent> {
        match outcome {
            Outcome::Cancelled => None,
            Outcome::Pong { peer, rtt, stream } => {
                if self.pinging.contains_key(&peer) {
                    self.misses.remove(&peer);
                    self.schedule(peer, Some(stream), self.interval);
                    return Some(PingEvent::Pong(peer, rtt));
                }
                None
            }
            Outcome::Failed {
                peer,
                error,
                retry,
                timed_out,
            } => {
                tracing::debug!(%peer, %error, "ping failed");
                let pinged = self.pinging.contains_key(&peer);
                if retry && pinged {
                    // After a time-out the next ping goes at once: it
                    // decides whether the peer is gone.
                    let delay = if timed_out {
                        Duration::ZERO
                    } else {
                        self.interval
                    };
                    self.schedule(peer, None, delay);
                } else {
                    self.pinging.remove(&peer);
                }
                if !(timed_out && pinged) {
                    return None;
                }
                let misses = self.misses.entry(peer).or_default();
                *misses += 1;
                if *misses < MISSES_TO_GIVE_UP {
                    tracing::debug!(%peer, "ping unanswered; trying once more");
                    return None;
                }
                self.misses.remove(&peer);
                Some(PingEvent::Unanswered(peer))
            }
            Outcome::InboundClosed { peer } => {
                if let Some(open) = self.inbound.get_mut(&peer) {
                    *open = open.saturating_sub(1);
                    if *open == 0 {
                        self.inbound.remove(&peer);
                    }
                }
                None
            }
        }
    }
}

/// Waits `delay`, opens a stream if there is none, and pings once, giving
/// up after `timeout`.
fn round(
    mut control: Control,
    peer: PeerId,
    stream: Option<Stream>,
    delay: Duration,
    timeout: Duration,
) -> BoxFuture<'static, Outcome> {
    async move {
        if !delay.is_zero() {
            clock::sleep(delay).await;
        }
        let stream = match stream {
            Some(stream) => stream,
            None => match control.open_stream(peer, PING_PROTOCOL).await {
                Ok(stream) => stream,
                Err(e) => {
                    // A peer without ping stays unpinged; anything else may pass.
                    let retry = !matches!(e, OpenStreamError::UnsupportedProtocol(_));
                    return Outcome::Failed {
                        peer,
                        error: e.to_string(),
                        retry,
                        timed_out: false,
                    };
                }
            },
        };
        match with_timeout(timeout, ping_once(stream)).await {
            Ok((stream, rtt)) => Outcome::Pong { peer, rtt, stream },
            Err(e) => Outcome::Failed {
                peer,
                error: e.to_string(),
                retry: true,
                timed_out: e.kind() == io::ErrorKind::TimedOut,
            },
        }
    }
    .boxed()
}

async fn ping_once(mut stream: Stream) -> io::Result<(Stream, Duration)> {
    let payload: [u8; PING_SIZE] = rand::random();
    stream.write_all(&payload).await?;
    stream.flush().await?;
    let started = clock::now();
    let mut echoed = [0u8; PING_SIZE];
    stream.read_exact(&mut echoed).await?;
    if echoed != payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ping payload mismatch",
        ));
    }
    Ok((stream, clock::since(started)))
}

/// Echoes pings on one inbound stream until it closes or idles out.
async fn echo(peer: PeerId, mut stream: Stream) -> Outcome {
    let mut payload = [0u8; PING_SIZE];
    loop {
        let answered = with_timeout(INBOUND_IDLE, async {
            stream.read_exact(&mut payload).await?;
            stream.write_all(&payload).await?;
            stream.flush().await
        })
        .await;
        if let Err(e) = answered {
            tracing::trace!(%peer, error = %e, "inbound ping stream ended");
            let _ = stream.close().await;
            return Outcome::InboundClosed { peer };
        }
    }
}

async fn with_timeout<T>(
    limit: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match select(Box::pin(work), clock::sleep(limit)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "ping timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed_out(peer: PeerId) -> Outcome {
        Outcome::Failed {
            peer,
            error: "timed out".into(),
            retry: true,
            timed_out: true,
        }
    }

    #[test]
    // A native node's rule (a page gives up after one).
    fn a_peer_is_given_up_after_two_unanswered_pings_in_a_row_not_one() {
        let control = libp2p_stream::Behaviour::new().new_control();
        let mut pinger = Pinger::new(control, Duration::from_secs(5));
        let (slow, gone) = (PeerId::random(), PeerId::random());
        pinger.start(slow);
        pinger.start(gone);
        assert!(pinger.on_outcome(timed_out(slow)).is_none());
        assert!(pinger.on_outcome(timed_out(gone)).is_none());
        assert!(matches!(
            pinger.on_outcome(timed_out(gone)),
            Some(PingEvent::Unanswered(p)) if p == gone
        ));
        // A peer that left and came back starts with a clean slate.
        pinger.stop(&slow);
        pinger.start(slow);
        assert!(pinger.on_outcome(timed_out(slow)).is_none());
        // A failure that is no time-out (a stream refused) is no miss.
        let refused = Outcome::Failed {
            peer: slow,
            error: "refused".into(),
            retry: true,
            timed_out: false,
        };
        assert!(pinger.on_outcome(refused).is_none());
        assert!(matches!(
            pinger.on_outcome(timed_out(slow)),
            Some(PingEvent::Unanswered(p)) if p == slow
        ));
    }
}
