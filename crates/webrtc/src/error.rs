//! What can go wrong with a `/webrtc` connection.

/// A `/webrtc` dial, listen or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The browser's WebRTC API refused something.
    #[error("browser WebRTC: {0}")]
    Js(String),
    /// The remote broke the signaling protocol.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The signaling stream failed.
    #[error("signaling stream: {0}")]
    Io(#[from] std::io::Error),
    /// No signaling stream could be opened over a relayed connection.
    #[error("no signaling stream: {reason}")]
    NoSignalingStream {
        /// The peer dialed.
        peer: libp2p::PeerId,
        /// Why.
        reason: String,
    },
    /// The handshake took longer than allowed.
    #[error("handshake timed out")]
    Timeout,
    /// ICE found no path between the two browsers.
    #[error("ICE failed: no network path between the peers")]
    IceFailed,
    /// The peer connection closed or failed.
    #[error("connection closed")]
    Closed,
    /// There is a `/webrtc` listener already.
    #[error("already listening on /webrtc")]
    AlreadyListening,
}

impl Error {
    /// An I/O error of the signaling stream.
    pub fn io(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}
