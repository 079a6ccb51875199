//! The page's Noise + Yamux upgrade, one for all its byte-stream transports.
//!
//! Noise and Yamux are generic over the byte stream they run on, so each
//! transport upgraded with its own stream type (the WebSocket, a circuit
//! through a relay) compiled into a copy of their code of its own in the
//! page's module. Each transport's streams are put behind one type,
//! [`AnyStream`], before they are upgraded: one copy.

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    PeerId, Transport,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    identity::Keypair,
    noise, yamux,
};

use super::{BoxedError, CONNECT_TIMEOUT};

/// A byte stream of any transport (futures reads and writes a boxed one).
type AnyStream = Box<dyn ByteStream>;

/// What a transport's stream must be to be secured.
trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// `transport` with Noise and Yamux over [`AnyStream`], and libp2p's usual
/// time limit on connecting.
pub fn secured<T>(
    transport: T,
    key: &Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxedError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    Ok(transport
        .map(|stream, _| -> AnyStream { Box::new(stream) })
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(CONNECT_TIMEOUT)
        .boxed())
}
