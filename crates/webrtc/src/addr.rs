//! The addresses of `/webrtc`: a peer listening through a relay is
//! `<relay address>/p2p/RELAY/p2p-circuit/webrtc/p2p/PEER`.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// The address a dialer gives the transport to listen with: `/webrtc`.
pub fn listen_addr() -> Multiaddr {
    Multiaddr::empty().with(Protocol::WebRTC)
}

/// Whether `addr` is the `/webrtc` listen address.
pub fn is_listen_addr(addr: &Multiaddr) -> bool {
    let mut it = addr.iter();
    matches!((it.next(), it.next()), (Some(Protocol::WebRTC), None))
}

/// Splits a `/webrtc` dial address into the peer and the relayed address
/// that reaches it for signaling (`…/p2p-circuit/p2p/PEER`). `None` for
/// any other address.
pub fn parse_dial_addr(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    let [
        prefix @ ..,
        Protocol::P2pCircuit,
        Protocol::WebRTC,
        Protocol::P2p(peer),
    ] = protocols.as_slice()
    else {
        return None;
    };
    if !prefix.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        // Without the relay's id there is no relay to go through.
        return None;
    }
    let circuit = prefix
        .iter()
        .cloned()
        .chain([Protocol::P2pCircuit, Protocol::P2p(*peer)])
        .collect();
    Some((*peer, circuit))
}

/// The `/webrtc` address at which a relayed listen address (`…/p2p-circuit`,
/// with or without our `/p2p/` after it) reaches `local`.
pub fn webrtc_addr_of_circuit(circuit: &Multiaddr, local: PeerId) -> Option<Multiaddr> {
    let mut base: Vec<Protocol<'_>> = circuit.iter().collect();
    if let Some(Protocol::P2p(_)) = base.last() {
        base.pop();
    }
    if base.last() != Some(&Protocol::P2pCircuit) {
        return None;
    }
    Some(
        base.into_iter()
            .collect::<Multiaddr>()
            .with(Protocol::WebRTC)
            .with(Protocol::P2p(local)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
            .expect("key")
            .public()
            .to_peer_id()
    }

    #[test]
    fn dial_addresses_name_the_circuit_that_carries_signaling() {
        let (relay, b) = (peer(1), peer(2));
        let addr: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/4002/ws/p2p/{relay}/p2p-circuit/webrtc/p2p/{b}")
                .parse()
                .expect("addr");
        let (target, circuit) = parse_dial_addr(&addr).expect("a /webrtc address");
        assert_eq!(target, b);
        assert_eq!(
            circuit.to_string(),
            format!("/ip4/127.0.0.1/tcp/4002/ws/p2p/{relay}/p2p-circuit/p2p/{b}")
        );
    }

    #[test]
    fn other_addresses_are_not_ours() {
        let (relay, b) = (peer(1), peer(2));
        for addr in [
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{b}"),
            format!("/ip4/127.0.0.1/udp/1/webrtc-direct/p2p/{b}"),
            format!("/p2p-circuit/webrtc/p2p/{b}"),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/webrtc"),
        ] {
            let addr: Multiaddr = addr.parse().expect("addr");
            assert_eq!(parse_dial_addr(&addr), None, "{addr}");
        }
        assert!(is_listen_addr(&listen_addr()));
        assert!(!is_listen_addr(
            &"/webrtc/p2p-circuit".parse().expect("addr")
        ));
    }

    #[test]
    fn relayed_listen_addresses_become_webrtc_addresses() {
        let (relay, me) = (peer(1), peer(2));
        let expected = format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/webrtc/p2p/{me}");
        for circuit in [
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit"),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}"),
        ] {
            let circuit: Multiaddr = circuit.parse().expect("addr");
            let addr = webrtc_addr_of_circuit(&circuit, me).expect("relayed");
            assert_eq!(addr.to_string(), expected);
            assert_eq!(parse_dial_addr(&addr).map(|(p, _)| p), Some(me));
        }
        let direct: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        assert_eq!(webrtc_addr_of_circuit(&direct, me), None);
    }
}
