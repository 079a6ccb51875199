//! A cap on incoming connections from one IP address (one /64 for IPv6,
//! which a single host often holds whole), so one machine cannot take a
//! relay's every connection slot. Counts connections from their first
//! packet (pending handshakes too) until they close; relayed connections
//! carry no IP address of their own and are not counted.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, multiaddr::Protocol, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

/// An address, or the /64 an IPv6 address is in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(*a)),
            Source::V6(prefix) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(prefix);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
        }
    }
}

fn source(remote: &Multiaddr) -> Option<Source> {
    let mut ip = None;
    for p in remote.iter() {
        match p {
            Protocol::P2pCircuit => return None,
            Protocol::Ip4(a) if ip.is_none() => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) if ip.is_none() => ip = Some(IpAddr::V6(a)),
            _ => {}
        }
    }
    Some(match ip? {
        IpAddr::V4(a) => Source::V4(a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => Source::V4(v4.octets()),
            None => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&a.octets()[..8]);
                Source::V6(prefix)
            }
        },
    })
}

/// An incoming connection refused: its address already has its share.
#[derive(Debug)]
pub struct TooManyFromIp {
    from: Source,
    max: u32,
}

impl fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} already has {} connections, the most one address may hold",
            self.from, self.max
        )
    }
}

impl std::error::Error for TooManyFromIp {}

/// Caps incoming connections per IP address; `None` caps nothing.
pub struct IpLimits {
    max: Option<u32>,
    counts: HashMap<Source, u32>,
    connections: HashMap<ConnectionId, Source>,
}

impl IpLimits {
    /// At most `max` incoming connections from one address.
    pub fn new(max: Option<u32>) -> Self {
        Self {
            max,
            counts: HashMap::new(),
            connections: HashMap::new(),
        }
    }

    fn release(&mut self, id: ConnectionId) {
        if let Some(from) = self.connections.remove(&id)
            && let Some(count) = self.counts.get_mut(&from)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&from);
            }
        }
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let (Some(max), Some(from)) = (self.max, source(remote)) else {
            return Ok(());
        };
        let count = self.counts.entry(from).or_default();
        if *count >= max {
            return Err(ConnectionDenied::new(TooManyFromIp { from, max }));
        }
        *count += 1;
        self.connections.insert(id, from);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.release(closed.connection_id),
            FromSwarm::ListenFailure(failed) => self.release(failed.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_per_ipv6_64() {
        let a: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().expect("multiaddr");
        let b: Multiaddr = "/ip4/192.0.2.2/udp/1/quic-v1".parse().expect("multiaddr");
        let c: Multiaddr = "/ip6/2001:db8::1/tcp/1".parse().expect("multiaddr");
        let d: Multiaddr = "/ip6/2001:db8::ffff/tcp/2/ws".parse().expect("multiaddr");
        let relayed: Multiaddr = "/ip4/192.0.2.1/tcp/1/p2p/12D3KooWLjDYWJbfn1v6shGZo5wXnPvGJ1TM3SRSHoAnGTcYpN5W/p2p-circuit".parse().expect("multiaddr");
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("multiaddr");
        let mut limits = IpLimits::new(Some(2));
        let mut next = 0;
        let mut open = |limits: &mut IpLimits, remote: &Multiaddr| {
            next += 1;
            let id = ConnectionId::new_unchecked(next);
            limits
                .handle_pending_inbound_connection(id, &local, remote)
                .map(|()| id)
        };
        let first = open(&mut limits, &a).expect("first from a");
        open(&mut limits, &a).expect("within the cap");
        assert!(open(&mut limits, &a).is_err());
        open(&mut limits, &b).expect("another address");
        // Relayed connections are the relay's, not the address's.
        for _ in 0..5 {
            open(&mut limits, &relayed).expect("relayed");
        }
        // One IPv6 /64 counts as one address.
        open(&mut limits, &c).expect("first of the /64");
        open(&mut limits, &d).expect("second of the /64");
        assert!(open(&mut limits, &c).is_err());
        // A closed connection frees its slot.
        limits.release(first);
        open(&mut limits, &a).expect("within the cap");
    }
}
