//! Which transport a connection uses, read from its multiaddr.

use std::fmt;

use libp2p::{Multiaddr, multiaddr::Protocol};

/// The transport of a connection, as people name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// TCP with Noise and Yamux.
    Tcp,
    /// QUIC v1.
    Quic,
    /// WebSocket (plain or TLS) with Noise and Yamux.
    #[serde(rename = "ws")]
    WebSocket,
    /// WebRTC-direct (browser to server, certhash in the address).
    WebRtcDirect,
    /// Browser-to-browser WebRTC.
    WebRtc,
    /// WebTransport.
    WebTransport,
    /// A circuit through a relay.
    Circuit,
    /// Anything else.
    Other,
}

impl Transport {
    /// Classifies a connection address.
    pub fn of(addr: &Multiaddr) -> Self {
        let mut found = Transport::Other;
        let mut circuit = false;
        for p in addr.iter() {
            match p {
                // `…/p2p-circuit/webrtc/…` is a direct link that was only
                // set up through the circuit.
                Protocol::P2pCircuit => circuit = true,
                Protocol::WebRTCDirect => found = Transport::WebRtcDirect,
                Protocol::WebRTC => found = Transport::WebRtc,
                Protocol::WebTransport => found = Transport::WebTransport,
                Protocol::Ws(_) | Protocol::Wss(_) => found = Transport::WebSocket,
                Protocol::QuicV1 if found == Transport::Other => found = Transport::Quic,
                Protocol::Tcp(_) if found == Transport::Other => found = Transport::Tcp,
                _ => {}
            }
        }
        match found {
            Transport::WebRtc => Transport::WebRtc,
            _ if circuit => Transport::Circuit,
            _ => found,
        }
    }

    /// Whether `addr` is secure WebSocket (`/tls/ws` or `/wss`): a node
    /// needs a certificate to listen on it, and it is the only WebSocket a
    /// page served over https may open.
    pub fn is_secure_websocket(addr: &Multiaddr) -> bool {
        let mut tls = false;
        for p in addr.iter() {
            match p {
                Protocol::Tls => tls = true,
                Protocol::Wss(_) => return true,
                Protocol::Ws(_) if tls => return true,
                _ => {}
            }
        }
        false
    }

    /// The short name: `tcp`, `quic`, `ws`, `webrtc-direct`, `circuit`, ...
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::WebSocket => "ws",
            Transport::WebRtcDirect => "webrtc-direct",
            Transport::WebRtc => "webrtc",
            Transport::WebTransport => "webtransport",
            Transport::Circuit => "circuit",
            Transport::Other => "other",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Transport {
        Transport::of(&s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn addresses_are_classified() {
        assert_eq!(t("/ip4/127.0.0.1/tcp/1"), Transport::Tcp);
        assert_eq!(t("/ip4/127.0.0.1/udp/1/quic-v1"), Transport::Quic);
        assert_eq!(t("/ip4/127.0.0.1/tcp/1/ws"), Transport::WebSocket);
        let secure = |a: &str| Transport::is_secure_websocket(&a.parse().expect("multiaddr"));
        assert!(secure("/ip4/127.0.0.1/tcp/1/tls/ws"));
        assert!(secure("/dns4/example.org/tcp/443/tls/sni/example.org/ws"));
        assert!(secure("/ip4/127.0.0.1/tcp/1/wss"));
        assert!(!secure("/ip4/127.0.0.1/tcp/1/ws"));
        assert!(!secure("/ip4/127.0.0.1/tcp/1/tls"));
        assert_eq!(t("/ip6/::1/udp/1/webrtc-direct"), Transport::WebRtcDirect);
        assert_eq!(
            t(
                "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            ),
            Transport::Circuit
        );
    }
}
