//! The `/webrtc` transport: dials `…/p2p-circuit/webrtc/p2p/PEER`, listens
//! on `/webrtc`, and runs the signaling exchange over streams of relayed
//! connections (through libp2p-stream).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use futures_timer::Delay;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol,
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    multiaddr::Protocol,
};
use libp2p_stream::{Control, IncomingStreams};
use send_wrapper::SendWrapper;

use super::{
    connection::Connection,
    handshake::{Side, handshake},
};
use crate::{
    Config, Error, SIGNALING_PROTOCOL,
    addr::{is_listen_addr, listen_addr, parse_dial_addr},
    behaviour::{SharedDials, lock},
};

/// The `/webrtc` (browser-to-browser) transport. Make it with
/// [`crate::new`]; it must be tried before the relay client's transport,
/// which would take a `/webrtc` address for a plain circuit.
pub struct Transport {
    config: Config,
    control: Control,
    dials: SharedDials,
    listener: Option<(ListenerId, IncomingStreams)>,
}

type Output = (PeerId, Connection);

impl Transport {
    pub(crate) fn new(config: Config, control: Control, dials: SharedDials) -> Self {
        Self {
            config,
            control,
            dials,
            listener: None,
        }
    }
}

const SIGNALING: StreamProtocol = StreamProtocol::new(SIGNALING_PROTOCOL);

impl libp2p::core::Transport for Transport {
    type Output = Output;
    type Error = Error;
    type ListenerUpgrade = BoxFuture<'static, Result<Output, Error>>;
    type Dial = BoxFuture<'static, Result<Output, Error>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        if !is_listen_addr(&addr) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if self.listener.is_some() {
            return Err(TransportError::Other(Error::AlreadyListening));
        }
        let incoming = self
            .control
            .accept(SIGNALING)
            .map_err(|_| TransportError::Other(Error::AlreadyListening))?;
        self.listener = Some((id, incoming));
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener.as_ref().is_some_and(|(l, _)| *l == id) {
            self.listener = None;
            return true;
        }
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Error>> {
        if opts.role.is_listener() {
            // No hole punching here: the relayed signaling is our way.
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let Some((peer, circuit)) = parse_dial_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let relayed = lock(&self.dials).request(peer, circuit);
        let mut control = self.control.clone();
        let config = self.config.clone();
        Ok(SendWrapper::new(async move {
            let signaling = async {
                // First the relayed connection, then the stream on it:
                // asked for before, libp2p-stream would dial the peer
                // itself, at every address it can find.
                relayed
                    .await
                    .map_err(|_| "the swarm is gone".to_owned())??;
                control
                    .open_stream(peer, SIGNALING)
                    .await
                    .map_err(|e| e.to_string())
            };
            let stream = futures::select! {
                stream = signaling.fuse() => stream.map_err(|reason| Error::NoSignalingStream {
                    peer,
                    reason,
                })?,
                () = Delay::new(config.handshake_timeout).fuse() => return Err(Error::Timeout),
            };
            tracing::debug!(%peer, "signaling as the dialer");
            let connection = handshake(stream, Side::Dialer, &config).await?;
            tracing::debug!(%peer, "webrtc connection up");
            Ok((peer, connection))
        })
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Error>> {
        let config = self.config.clone();
        let Some((id, incoming)) = self.listener.as_mut() else {
            return Poll::Pending;
        };
        let id = *id;
        match incoming.poll_next_unpin(cx) {
            Poll::Ready(Some((peer, stream))) => {
                tracing::debug!(%peer, "signaling as the listener");
                let upgrade = SendWrapper::new(async move {
                    let connection = handshake(stream, Side::Listener, &config).await?;
                    tracing::debug!(%peer, "webrtc connection up");
                    Ok((peer, connection))
                })
                .boxed();
                Poll::Ready(TransportEvent::Incoming {
                    listener_id: id,
                    upgrade,
                    local_addr: listen_addr(),
                    send_back_addr: listen_addr().with(Protocol::P2p(peer)),
                })
            }
            Poll::Ready(None) => {
                self.listener = None;
                Poll::Ready(TransportEvent::ListenerClosed {
                    listener_id: id,
                    reason: Ok(()),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
