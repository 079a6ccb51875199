//! The engine's side of discovery: it carries out what the neighbour
//! manager ([`crate::discovery::Neighbours`]) plans, runs the queries the
//! discovery sources need (random walks, room provider lookups and
//! announcements), and keeps the relay reservation that gives a native
//! peer a relayed address.

use std::collections::HashMap;

use libp2p::{
    Multiaddr, PeerId,
    core::Endpoint,
    gossipsub::TopicHash,
    kad,
    multiaddr::Protocol,
    swarm::{
        ConnectionId, NetworkBehaviour,
        dial_opts::{DialOpts, PeerCondition},
    },
};

use super::{CommandError, Engine, Event, FIRST_WALK, ProviderQuery, dial_error_text};
use crate::{
    arch,
    behaviour::Role,
    clock,
    discovery::{Cadence, SHARES_A_ROOM, Source, Target},
    rooms::Room,
    transport::Transport,
};

impl Engine {
    /// Whether this node takes part in the DHT: relays always, peers when
    /// a DHT-based discovery source is on.
    pub(super) fn uses_dht(&self) -> bool {
        let sources = &self.discovery.sources;
        self.role == Role::Relay
            || sources.has(Source::RandomWalk)
            || (arch::NATIVE && sources.has(Source::Rooms))
    }

    /// Whether this node announces its rooms in the DHT and looks up their
    /// members: native peers only. Relays follow rooms but are no members,
    /// and a browser cannot be dialed back by the members it would find.
    fn room_subnets(&self) -> bool {
        self.role == Role::Peer && arch::NATIVE && self.discovery.sources.has(Source::Rooms)
    }

    /// Whether this node holds a relay reservation, so that others reach
    /// it through the relay: members who learn of it (from the DHT or by
    /// peer exchange) link to it, and direct messages and file requests
    /// find it. Every chat peer, pages included (their `/webrtc` address
    /// goes through it too).
    fn reachable_through_relay(&self) -> bool {
        self.role == Role::Peer
    }

    /// The relayed address prefix through a relay we are directly
    /// connected to: `<relay address>/p2p/<relay>/p2p-circuit`.
    fn circuit_via(&self, relay: PeerId) -> Option<Multiaddr> {
        self.connections
            .values()
            .filter(|(peer, _)| *peer == relay)
            .find_map(|(_, addr)| circuit_prefix(relay, addr))
    }

    /// Announces us in the DHT as a member of `room` (again: the record
    /// carries our current addresses) and looks its members up soon.
    pub(super) fn provide(&mut self, room: &Room) {
        if !self.room_subnets() {
            return;
        }
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(room.provider_key())
        {
            tracing::warn!(%room, error = %e, "cannot announce the room in the DHT");
        }
        let now = clock::now();
        self.lookup_cadence.insert(
            room.topic().hash(),
            Cadence::new(self.discovery.room_lookup_every, now),
        );
    }

    /// Announces every room again (new addresses, a newly reachable DHT).
    pub(super) fn provide_all(&mut self) {
        let rooms: Vec<Room> = self.rooms.values().cloned().collect();
        for room in rooms {
            self.provide(&room);
        }
    }

    /// Dials an address (with no peer id needed), opening the local socket
    /// a WebRTC-direct dial goes out from first.
    pub(super) fn dial_addr(&mut self, addr: Multiaddr) -> Result<ConnectionId, CommandError> {
        self.dial_listener(&addr)
            .map_err(|reason| CommandError::Dial {
                addr: addr.clone(),
                reason,
            })?;
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        let id = opts.connection_id();
        self.swarm.dial(opts).map_err(|e| CommandError::Dial {
            addr: addr.clone(),
            reason: dial_error_text(&e),
        })?;
        self.dialing.insert(id, Some(addr));
        Ok(id)
    }

    /// Dials a discovered peer at its known addresses (and any other
    /// behaviour knows), unless already connected or dialing.
    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        for addr in &addrs {
            if let Err(reason) = self.dial_listener(addr) {
                tracing::debug!(%addr, %reason, "no local socket for the dial");
            }
        }
        let opts = if self.links_directly() {
            // A page links to members directly, at the `/webrtc` address it
            // was given and no other (what Kademlia or identify know of
            // the member are relayed addresses: a relayed connection would
            // count as the link). It may hold a relayed connection to the
            // member already (signaling, or the member's own dial).
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::NotDialing)
                .build()
        } else {
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .extend_addresses_through_behaviour()
                .build()
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dialing.insert(id, None);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %dial_error_text(&e), "cannot dial");
                self.neighbours.dial_failed(Some(peer), None, clock::now());
            }
        }
    }

    fn dial_listener(&mut self, addr: &Multiaddr) -> Result<(), String> {
        if let Some(listen) = arch::listener_for_dial(addr)
            && !self.dial_listeners.contains_key(&listen)
        {
            let id = self
                .swarm
                .listen_on(listen.clone())
                .map_err(|e| format!("cannot open a local {listen} socket: {e}"))?;
            self.dial_listeners.insert(listen, id);
        }
        Ok(())
    }

    /// A WebRTC-direct dial failed. libp2p-webrtc leaves the failed
    /// connection running on the socket it went out from, and that socket
    /// hands whatever comes from the same remote address to it: dialed
    /// again from there, the same relay is not reached until the old
    /// connection times out (seen on a busy machine, where the relay's first
    /// Noise message can arrive before our end of the handshake channel
    /// exists, webrtc-rs issue 748, and the dial then fails after 10 s).
    /// So once no WebRTC-direct connection or dial of ours needs them, the
    /// sockets we opened to dial from are closed, and the next dial opens
    /// a fresh one.
    pub(super) fn renew_dial_listeners(&mut self) {
        let webrtc_direct = |addr: &Multiaddr| Transport::of(addr) == Transport::WebRtcDirect;
        let in_use = self
            .connections
            .values()
            .any(|(_, addr)| webrtc_direct(addr))
            || self.dialing.values().flatten().any(webrtc_direct);
        if in_use {
            return;
        }
        for (listen, id) in self.dial_listeners.drain() {
            tracing::debug!(%listen, "closing the socket a failed WebRTC-direct dial went out from");
            self.swarm.remove_listener(id);
        }
    }

    /// Once a second: dial and prune as the neighbour manager says, and
    /// run the discovery queries that are due.
    pub(super) fn manage_neighbours(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let now = clock::now();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut useful: HashMap<PeerId, u32> = HashMap::new();
        for (peer, topics) in gossipsub.all_peers() {
            let shared = topics.iter().filter(|t| self.is_room_topic(t)).count();
            useful.insert(*peer, SHARES_A_ROOM * shared as u32);
        }
        for peer in gossipsub.all_mesh_peers() {
            *useful.entry(*peer).or_default() += 1;
        }
        // The relay holding our reservation, and those our relayed links
        // run through, are the relays to keep.
        let in_use = self.reservation.map(|(relay, _)| relay).into_iter().chain(
            self.relayed.keys().filter_map(|conn| {
                let (_, addr) = self.connections.get(conn)?;
                relay_of(addr)
            }),
        );
        for relay in in_use {
            *useful.entry(relay).or_default() += RELAY_IN_USE;
        }
        let plan = self
            .neighbours
            .plan(now, |p| useful.get(p).copied().unwrap_or(0));
        for target in plan.dial {
            match target {
                Target::Addr(addr) => {
                    if let Err(e) = self.dial_addr(addr.clone()) {
                        tracing::debug!(error = %e, "bootstrap dial failed");
                        self.neighbours.dial_failed(None, Some(&addr), now);
                    }
                }
                Target::Peer(peer, addrs) => self.dial_peer(peer, addrs),
            }
        }
        for peer in plan.prune {
            tracing::info!(%peer, "above the high watermark: closing the least useful connection");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.emit(Event::Pruned { peer });
        }
        if self.neighbours.link_count() == 0 {
            return;
        }
        self.reserve();
        let sources = &self.discovery.sources;
        if sources.has(Source::RandomWalk) {
            let every = self.discovery.random_walk_every;
            let walk = self
                .walk_cadence
                .get_or_insert_with(|| Cadence::new(every, now + FIRST_WALK));
            if self.neighbours.link_count() < self.discovery.watermarks.low {
                walk.hurry(now);
            }
            if walk.due(now) && self.neighbours.walk_wanted() {
                walk.started(now);
                // A relay's walk looks for the whole backbone; a peer's only
                // for a few relays to fall back on. Kademlia's
                // `get_closest_peers` asks for 20 whatever the replication
                // factor, which in a network of 20 relays links every
                // peer to every relay on each walk.
                let wanted = match self.role {
                    Role::Relay => kad::K_VALUE,
                    Role::Peer => PEER_WALK_RESULTS,
                };
                let query = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_n_closest_peers(PeerId::random(), wanted);
                self.walks.insert(query);
            }
        }
        if self.room_subnets() {
            let due: Vec<Room> = self
                .rooms
                .iter()
                .filter(|(topic, _)| self.lookup_cadence.get(*topic).is_some_and(|c| c.due(now)))
                .map(|(_, room)| room.clone())
                .collect();
            for room in due {
                if let Some(cadence) = self.lookup_cadence.get_mut(&room.topic().hash()) {
                    cadence.started(now);
                }
                let query = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(room.provider_key());
                self.provider_queries.insert(
                    query,
                    ProviderQuery {
                        room,
                        asked: false,
                        found: Vec::new(),
                        found_new: false,
                    },
                );
            }
        }
    }

    /// A chat peer holds a reservation on one of its relays, so the
    /// members of its rooms can reach it through a relayed address (which
    /// a native peer's provider records carry).
    pub(super) fn reserve(&mut self) {
        if !self.reachable_through_relay()
            || self.reservation.is_some()
            || clock::now() < self.next_reserve
        {
            return;
        }
        let circuit = self
            .connections
            .values()
            .filter(|(peer, _)| self.neighbours.relay(peer))
            .find_map(|(peer, addr)| Some((*peer, circuit_prefix(*peer, addr)?)));
        let Some((relay, circuit)) = circuit else {
            return;
        };
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::debug!(%circuit, "reserving a relayed address");
                self.reservation = Some((relay, id));
            }
            Err(e) => tracing::debug!(%circuit, error = %e, "cannot reserve"),
        }
    }

    /// Records what a source found, reporting it the first time. Returns
    /// whether it was the first time.
    pub(super) fn discovered(&mut self, peer: PeerId, addrs: &[Multiaddr], source: Source) -> bool {
        let first = self.neighbours.discovered(peer, addrs, source);
        if first {
            tracing::debug!(%peer, %source, "discovered");
            self.emit(Event::Discovered {
                peer,
                source,
                addrs: addrs.to_vec(),
            });
        }
        first
    }

    pub(super) fn on_providers(
        &mut self,
        id: kad::QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let local = *self.swarm.local_peer_id();
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
            for peer in providers.into_iter().filter(|p| *p != local) {
                // Kademlia reports providers by id; the addresses from their
                // records are only held while the query runs, so ask now.
                let addrs = self.kad_addresses(peer);
                let Some(query) = self.provider_queries.get_mut(&id) else {
                    continue;
                };
                if !query.found.iter().any(|(p, _)| *p == peer) {
                    query.found.push((peer, addrs.clone()));
                }
                let topic = query.room.topic().hash();
                if self.member_found(peer, addrs, [topic], Source::Rooms)
                    && let Some(query) = self.provider_queries.get_mut(&id)
                {
                    query.found_new = true;
                }
            }
        }
        if !last {
            // Enough members for our links: the relays not asked yet need
            // not be (each one asked is a connection; in a network of many
            // relays that meant every peer linked to every relay at each
            // lookup). A lookup asked for by a command goes on to the end.
            if let Some(query) = self.provider_queries.get(&id)
                && !query.asked
                && query.found.len() >= LOOKUP_ENOUGH
                && let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&id)
            {
                running.finish();
            }
            return;
        }
        let Some(query) = self.provider_queries.remove(&id) else {
            return;
        };
        if query.asked {
            self.emit(Event::Providers {
                room: query.room,
                providers: query.found,
            });
        } else if let Some(cadence) = self.lookup_cadence.get_mut(&query.room.topic().hash()) {
            cadence.finished(clock::now(), query.found_new);
            tracing::debug!(room = %query.room, found_new = query.found_new, next_in = ?cadence.interval(), "room lookup done");
        }
    }

    /// `from` pruned us from a room's mesh and named `peer`, another member
    /// of the topic. Peer exchange carries no addresses: we reach `peer`
    /// through `from` when `from` is a relay (members reserve a slot on
    /// their relays), or at whatever addresses Kademlia knows. It counts as
    /// a member of every room we share with `from`.
    pub(super) fn on_peer_exchange(&mut self, from: PeerId, peer: PeerId) {
        if !self.discovery.sources.has(Source::PeerExchange) || peer == self.local_peer_id() {
            return;
        }
        let mut addrs = self.kad_addresses(peer);
        if self.neighbours.relay(&from)
            && let Some(circuit) = self.circuit_via(from)
        {
            addrs.push(circuit.with(Protocol::P2p(peer)));
        }
        let shared: Vec<_> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(p, _)| **p == from)
            .flat_map(|(_, topics)| topics.into_iter().cloned())
            .collect();
        tracing::debug!(%peer, %from, "named by peer exchange");
        self.member_found(peer, addrs, shared, Source::PeerExchange);
    }

    /// A source named `peer` as a member of `topics`: those that are our
    /// rooms count, and the find is reported (and true returned) the first
    /// time this source names it.
    pub(super) fn member_found(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        topics: impl IntoIterator<Item = TopicHash>,
        source: Source,
    ) -> bool {
        let mut first = false;
        for topic in topics {
            if self.is_room_topic(&topic) {
                first |= self.neighbours.room_member(peer, &addrs, topic, source);
            }
        }
        if first {
            self.emit(Event::Discovered {
                peer,
                source,
                addrs,
            });
        }
        first
    }

    /// Addresses Kademlia knows for a peer (routing table and running
    /// queries).
    pub(super) fn kad_addresses(&mut self, peer: PeerId) -> Vec<Multiaddr> {
        self.swarm
            .behaviour_mut()
            .kad
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                Some(peer),
                &[],
                Endpoint::Dialer,
            )
            .unwrap_or_default()
    }
}

/// How many DHT servers (relays) a peer's random walk looks for: a few
/// more than the relays it keeps.
const PEER_WALK_RESULTS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(5).unwrap();

/// Members a room lookup must find before it stops asking relays: twice
/// the links a room gets, so a member we cannot reach has a stand-in.
const LOOKUP_ENOUGH: usize = 2 * crate::discovery::ROOM_LINKS;

/// Usefulness a relay gains for carrying our reservation or a relayed link
/// (a shared room counts [`SHARES_A_ROOM`]).
const RELAY_IN_USE: u32 = 1000;

/// The relay a relayed address runs through: the peer named just before
/// `/p2p-circuit`.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => relay = Some(id),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// `<addr without /p2p/>/p2p/<relay>/p2p-circuit` for a direct connection to
/// `relay` at `addr`; none when `addr` is itself relayed.
pub(super) fn circuit_prefix(relay: PeerId, addr: &Multiaddr) -> Option<Multiaddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    Some(
        addr.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect::<Multiaddr>()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit),
    )
}
