//! A simulated wide-area network inside one process, for the large-scale
//! benchmark (`cargo xtask bench --sim`).
//!
//! Every node gets its own [`SimTransport`] with an address `/memory/N`.
//! A dial hands both ends a [`Pipe`]: bytes written on one end can be read
//! on the other only after the link's one-way delay, which is fixed per
//! pair of nodes and spread evenly over a range (20–150 ms by default), so
//! round trips differ from link to link as they do across the internet.
//! Bandwidth is not limited and nothing is lost: the simulation measures
//! the protocols' latency and redundancy, not congestion.
//!
//! Noise and Yamux run over the pipes as over TCP, so a node in the
//! simulation is the real swarm and engine with only its sockets replaced.

use std::{
    collections::{HashMap, VecDeque},
    io,
    ops::RangeInclusive,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, future};
use meshtalk_protocol::libp2p::{
    Multiaddr,
    core::{
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent},
    },
};
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};

/// A simulated network: who listens where, and each link's delay.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<Net>>,
}

struct Net {
    /// Where each listening node takes its incoming connections.
    listeners: HashMap<u64, mpsc::UnboundedSender<Incoming>>,
    next_port: u64,
    delays_ms: RangeInclusive<u64>,
    seed: u64,
}

/// A connection on its way to a listener.
struct Incoming {
    pipe: Pipe,
    from: u64,
}

impl SimNet {
    /// A network whose links delay each byte by a one-way delay drawn from
    /// `delays` (whole milliseconds), the same for a pair of nodes every
    /// time; `seed` picks which pair gets which.
    pub fn new(delays: RangeInclusive<Duration>, seed: u64) -> Self {
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            inner: Arc::new(Mutex::new(Net {
                listeners: HashMap::new(),
                next_port: 1,
                delays_ms: ms(delays.start())..=ms(delays.end()),
                seed,
            })),
        }
    }

    fn net(&self) -> std::sync::MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A transport for a new node, with an address of its own.
    pub fn node(&self) -> SimTransport {
        let mut net = self.net();
        let port = net.next_port;
        net.next_port += 1;
        SimTransport {
            net: self.clone(),
            port,
            listener: None,
            events: VecDeque::new(),
        }
    }

    /// The one-way delay between the nodes on ports `a` and `b`.
    pub fn delay(&self, a: u64, b: u64) -> Duration {
        let net = self.net();
        let (lo, hi) = (net.delays_ms.start(), net.delays_ms.end());
        let span = hi.saturating_sub(*lo) + 1;
        let pair = mix(net.seed ^ mix(a.min(b)) ^ mix(a.max(b)).rotate_left(17));
        Duration::from_millis(lo + pair % span)
    }
}

/// A 64-bit mixing function (splitmix64's finaliser): spreads nearby
/// numbers over the whole range.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `/memory/N` address of a port.
pub fn addr_of(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

/// The port of a `/memory/N` address (with or without its `/p2p/` part).
pub fn port_of(addr: &Multiaddr) -> Option<u64> {
    let mut parts = addr.iter();
    match (parts.next(), parts.next()) {
        (Some(Protocol::Memory(port)), None | Some(Protocol::P2p(_))) => Some(port),
        _ => None,
    }
}

/// One node's transport in a [`SimNet`]: it listens on its own port only.
pub struct SimTransport {
    net: SimNet,
    port: u64,
    listener: Option<(ListenerId, mpsc::UnboundedReceiver<Incoming>)>,
    events: VecDeque<TransportEvent<future::Ready<Result<Pipe, io::Error>>, io::Error>>,
}

impl SimTransport {
    /// This node's address.
    pub fn addr(&self) -> Multiaddr {
        addr_of(self.port)
    }
}

impl Transport for SimTransport {
    type Output = Pipe;
    type Error = io::Error;
    type ListenerUpgrade = future::Ready<Result<Pipe, io::Error>>;
    type Dial = future::Ready<Result<Pipe, io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        match port_of(&addr) {
            Some(port) if port == 0 || port == self.port => {}
            _ => return Err(TransportError::MultiaddrNotSupported(addr)),
        }
        if self.listener.is_some() {
            return Err(TransportError::Other(io::Error::new(
                io::ErrorKind::AddrInUse,
                "this simulated node listens already",
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.net.net().listeners.insert(self.port, tx);
        self.listener = Some((id, rx));
        self.events.push_back(TransportEvent::NewAddress {
            listener_id: id,
            listen_addr: self.addr(),
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener.as_ref().is_some_and(|(l, _)| *l == id) {
            self.listener = None;
            self.net.net().listeners.remove(&self.port);
            self.events.push_back(TransportEvent::ListenerClosed {
                listener_id: id,
                reason: Ok(()),
            });
            return true;
        }
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(port) = port_of(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let delay = self.net.delay(self.port, port);
        let listener = self.net.net().listeners.get(&port).cloned();
        let Some(listener) = listener else {
            return Ok(future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nobody listens on {addr}"),
            ))));
        };
        let (ours, theirs) = Pipe::pair(delay);
        let sent = listener.send(Incoming {
            pipe: theirs,
            from: self.port,
        });
        Ok(future::ready(match sent {
            Ok(()) => Ok(ours),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr} stopped listening"),
            )),
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let local_addr = self.addr();
        let Some((id, incoming)) = self.listener.as_mut() else {
            return Poll::Pending;
        };
        match incoming.poll_recv(cx) {
            Poll::Ready(Some(Incoming { pipe, from })) => Poll::Ready(TransportEvent::Incoming {
                listener_id: *id,
                upgrade: future::ready(Ok(pipe)),
                local_addr,
                send_back_addr: addr_of(from),
            }),
            // The sender lives in the net while we listen.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// One end of a simulated link: what is written reaches the other end
/// after the link's delay.
pub struct Pipe {
    delay: Duration,
    tx: Option<mpsc::UnboundedSender<(Instant, Vec<u8>)>>,
    rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    /// The chunk being read, from this offset.
    head: Option<(Instant, Vec<u8>, usize)>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pipe {
    fn pair(delay: Duration) -> (Self, Self) {
        let (a_tx, b_rx) = mpsc::unbounded_channel();
        let (b_tx, a_rx) = mpsc::unbounded_channel();
        let end = |tx, rx| Self {
            delay,
            tx: Some(tx),
            rx,
            head: None,
            sleep: None,
        };
        (end(a_tx, a_rx), end(b_tx, b_rx))
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut filled = 0;
        while filled < buf.len() {
            if this.head.is_none() {
                match this.rx.poll_recv(cx) {
                    Poll::Ready(Some((at, bytes))) => this.head = Some((at, bytes, 0)),
                    Poll::Ready(None) => return Poll::Ready(Ok(filled)),
                    Poll::Pending if filled > 0 => return Poll::Ready(Ok(filled)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some((at, bytes, offset)) = this.head.as_mut() else {
                continue;
            };
            if *at > Instant::now() {
                if filled > 0 {
                    return Poll::Ready(Ok(filled));
                }
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*at)));
                sleep.as_mut().reset(*at);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let n = (bytes.len() - *offset).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&bytes[*offset..*offset + n]);
            *offset += n;
            filled += n;
            if *offset == bytes.len() {
                this.head = None;
            }
        }
        Poll::Ready(Ok(filled))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let at = Instant::now() + self.delay;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((at, buf.to_vec())).is_ok());
        if sent {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn delays_are_per_pair_and_in_range() {
        let net = SimNet::new(Duration::from_millis(20)..=Duration::from_millis(150), 7);
        let mut seen = std::collections::HashSet::new();
        for a in 1..40 {
            for b in 1..40 {
                let d = net.delay(a, b);
                assert_eq!(d, net.delay(b, a));
                assert!((20..=150).contains(&d.as_millis()), "{d:?}");
                seen.insert(d);
            }
        }
        assert!(seen.len() > 50, "delays hardly differ: {}", seen.len());
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_after_the_delay() -> io::Result<()> {
        let delay = Duration::from_millis(60);
        let (mut a, mut b) = Pipe::pair(delay);
        let start = Instant::now();
        a.write_all(b"hello ").await?;
        a.write_all(b"world").await?;
        a.close().await?;
        let mut got = Vec::new();
        b.read_to_end(&mut got).await?;
        assert_eq!(got, b"hello world");
        assert!(start.elapsed() >= delay, "{:?}", start.elapsed());
        Ok(())
    }
}
