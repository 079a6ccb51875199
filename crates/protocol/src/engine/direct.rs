//! Direct links between pages over `/webrtc`: the engine's side.
//!
//! A page listens on `/webrtc` and holds a relay reservation; each relayed
//! address `…/p2p-circuit` it gets makes it reachable at
//! `…/p2p-circuit/webrtc/p2p/ME`. It announces those addresses in a peer
//! record ([`crate::peer_record`]) on each room's peers topic, every
//! [`RECORD_EVERY`] and whenever they change. A member reading a record
//! hands the addresses to the neighbour manager, which links to a few
//! members per room like to any other room member it finds. Once a direct
//! link is up, the relayed connection that carried its signaling is closed
//! so gossipsub uses the direct one.

use libp2p::{
    Multiaddr, PeerId,
    gossipsub::{IdentTopic, MessageAcceptance, TopicHash},
    multiaddr::Protocol,
    swarm::ConnectionId,
};
use web_time::{Duration, Instant};

use super::Engine;
use crate::{
    arch, behaviour::Role, clock, discovery::Source, peer_record, rooms::Room,
    transport::Transport, uc,
};

/// How often a page announces its `/webrtc` addresses to its rooms.
pub(super) const RECORD_EVERY: Duration = Duration::from_secs(10);
/// How long the relayed connection stays after a direct link is up: the
/// remote may still be closing its signaling stream on it (js-libp2p
/// closes its `init` channel first).
const RELAYED_LINGER: Duration = Duration::from_secs(5);
/// A page whose record has not arrived for this long is gone: three
/// announcements missed.
const MEMBER_SILENCE: Duration = Duration::from_secs(3 * RECORD_EVERY.as_secs());

impl Engine {
    /// Whether this node links to pages directly: pages do, when the
    /// [`Source::Rooms`] discovery source is on (a page that turns it off
    /// neither listens on `/webrtc` nor announces itself, so no other page
    /// learns its IP addresses).
    pub(super) fn links_directly(&self) -> bool {
        self.role == Role::Peer && arch::WEBRTC && self.discovery.sources.has(Source::Rooms)
    }

    /// Starts listening for `/webrtc` links (pages).
    pub(super) fn listen_direct(&mut self) {
        if !self.links_directly() {
            return;
        }
        if let Err(e) = self.swarm.listen_on(meshtalk_webrtc::addr::listen_addr()) {
            tracing::warn!(error = %e, "cannot listen for direct links");
        }
    }

    /// Where a room's peer records go: its peers topic, or, for
    /// universal-connectivity's chat (`--compat uc`), its browser peer
    /// discovery topic, whose records have the same format.
    fn records_topic(&self, room: &Room) -> IdentTopic {
        if self.uc && *room == uc::room() {
            IdentTopic::new(uc::BROWSER_DISCOVERY_TOPIC)
        } else {
            peer_record::topic(room)
        }
    }

    /// The topic of the room whose record this is, for the neighbour
    /// manager (which links members sharing a topic with us).
    fn record_room_topic(&self, room: &Room) -> TopicHash {
        if self.uc && *room == uc::room() {
            IdentTopic::new(uc::CHAT_TOPIC).hash()
        } else {
            room.topic().hash()
        }
    }

    /// Joins (or leaves) the peers topic of a room we join (or leave).
    pub(super) fn peers_topic(&mut self, room: &Room, join: bool) {
        if !self.links_directly() {
            return;
        }
        let topic = self.records_topic(room);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if join {
            if let Err(e) = gossipsub.subscribe(&topic) {
                tracing::warn!(%room, error = ?e, "cannot join the room's peers topic");
            }
            self.record_due = clock::now();
        } else {
            gossipsub.unsubscribe(&topic);
        }
    }

    /// A relayed listen address appeared (`added`) or went: our `/webrtc`
    /// addresses follow it.
    pub(super) fn relayed_addr(&mut self, circuit: &Multiaddr, added: bool) {
        if !self.links_directly() {
            return;
        }
        let local = self.local_peer_id();
        let Some(addr) = meshtalk_webrtc::addr::webrtc_addr_of_circuit(circuit, local) else {
            return;
        };
        if added {
            if !self.webrtc_addrs.contains(&addr) {
                tracing::info!(%addr, "reachable directly at");
                self.webrtc_addrs.push(addr.clone());
                self.swarm.add_external_address(addr);
            }
        } else {
            self.webrtc_addrs.retain(|a| *a != addr);
            self.swarm.remove_external_address(&addr);
        }
        self.record_due = clock::now();
    }

    /// Our reservation is gone: so are the `/webrtc` addresses through it.
    pub(super) fn relayed_addrs_lost(&mut self) {
        for addr in std::mem::take(&mut self.webrtc_addrs) {
            self.swarm.remove_external_address(&addr);
        }
    }

    /// Publishes our peer record in every room when it is due.
    pub(super) fn announce_record(&mut self) {
        let now = clock::now();
        if !self.links_directly() || self.webrtc_addrs.is_empty() || now < self.record_due {
            return;
        }
        self.record_due = now + RECORD_EVERY;
        let Some(key) = &self.public_key else {
            tracing::warn!("our key is not inlined in our peer id: no peer record");
            return;
        };
        let record = peer_record::encode(key, &self.webrtc_addrs);
        let mut rooms: Vec<Room> = self.rooms.values().cloned().collect();
        if self.uc {
            rooms.push(uc::room());
        }
        for room in rooms {
            let topic = self.records_topic(&room);
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, record.clone())
            {
                tracing::debug!(%room, error = %e, "peer record not published");
            }
        }
    }

    /// A record on a peers topic: relays check and pass it on; pages also
    /// hand its addresses to the neighbour manager.
    pub(super) fn on_record(
        &mut self,
        room: &Room,
        author: Option<PeerId>,
        data: &[u8],
    ) -> MessageAcceptance {
        let Some(author) = author else {
            return MessageAcceptance::Reject;
        };
        let addrs = match peer_record::decode(data, author) {
            Ok(addrs) => addrs,
            Err(e) => {
                tracing::debug!(%author, error = %e, "bad peer record");
                return MessageAcceptance::Reject;
            }
        };
        if self.links_directly()
            && author != self.local_peer_id()
            && let Some(addr) = self.best_webrtc_addr(&addrs)
        {
            let topic = self.record_room_topic(room);
            self.records_seen.insert(author, clock::now());
            self.member_found(author, vec![addr], [topic], Source::Rooms);
        }
        MessageAcceptance::Accept
    }

    /// Forgets the pages whose records stopped coming: a closed page
    /// would otherwise be dialed forever (with back-off), each dial a
    /// failure to report.
    pub(super) fn forget_silent_members(&mut self) {
        let now = clock::now();
        let silent: Vec<PeerId> = self
            .records_seen
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > MEMBER_SILENCE)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in silent {
            self.records_seen.remove(&peer);
            if self.neighbours.forget(&peer, Source::Rooms) {
                tracing::info!(%peer, "the page stopped announcing itself; no more direct dials to it");
                self.emit(super::Event::DirectPeerGone { peer });
            }
        }
    }

    /// The one address of a record to dial: the swarm would try them all at
    /// once, each a WebRTC handshake of its own. One through a relay we
    /// are connected to comes first (its signaling goes over that link),
    /// then one through a relay a browser can dial.
    fn best_webrtc_addr(&self, addrs: &[Multiaddr]) -> Option<Multiaddr> {
        let relay_part = |addr: &Multiaddr| -> Multiaddr {
            addr.iter()
                .take_while(|p| !matches!(p, Protocol::P2pCircuit))
                .collect()
        };
        let linked = addrs.iter().find(|addr| {
            relay_part(addr).iter().any(|p| match p {
                Protocol::P2p(relay) => self.swarm.is_connected(&relay),
                _ => false,
            })
        });
        linked
            .or_else(|| {
                addrs.iter().find(|addr| {
                    matches!(
                        Transport::of(&relay_part(addr)),
                        Transport::WebSocket | Transport::WebRtcDirect
                    )
                })
            })
            .cloned()
    }

    /// Whether a connection over `transport` is only there for the
    /// signaling of direct links (a page's relayed connections).
    pub(super) fn signaling_only(&self, transport: Transport) -> bool {
        self.links_directly() && transport == Transport::Circuit
    }

    /// Whether `peer` still has a connection that counts as a link.
    pub(super) fn linked_beyond_signaling(&self, peer: PeerId) -> bool {
        self.connections
            .values()
            .any(|(p, addr)| *p == peer && !self.signaling_only(Transport::of(addr)))
    }

    /// A direct dial to `peer` failed: the relayed connection that carried
    /// its signaling goes (the chat goes on through the relay's mesh), and
    /// the neighbour manager, which counted the failure, dials again later.
    /// A dial started before the page was forgotten may fail after it:
    /// that is no news.
    pub(super) fn direct_link_failed(&mut self, peer: PeerId, error: String) {
        if !self.linked_beyond_signaling(peer) {
            // At once: the next attempt must not reuse it.
            self.close_relayed(peer, clock::now());
            self.close_due_relayed();
        }
        if !self.records_seen.contains_key(&peer) {
            tracing::debug!(%peer, %error, "no direct link to a page we forgot");
            return;
        }
        tracing::info!(%peer, %error, "no direct link");
        self.emit(super::Event::DirectLinkFailed { peer, error });
    }

    /// A direct link to `peer` is up: its relayed connections close soon.
    /// Two pages that found each other at once may both have dialed: of a
    /// link in each direction, both keep the one the smaller peer id
    /// dialed, so they close the same one.
    pub(super) fn direct_link_up(&mut self, peer: PeerId, id: ConnectionId, outbound: bool) {
        self.close_relayed(peer, clock::now() + RELAYED_LINGER);
        self.direct.insert(id, (peer, outbound));
        let keep_outbound = self.local_peer_id() < peer;
        let (kept, extra): (Vec<_>, Vec<_>) = self
            .direct
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .partition(|(_, (_, out))| *out == keep_outbound);
        if kept.is_empty() {
            return;
        }
        for (id, _) in extra {
            tracing::debug!(%peer, connection = %id, "closing the second direct link: both pages dialed");
            self.swarm.close_connection(*id);
        }
    }

    /// Schedules closing the relayed connections to `peer` at `at`.
    fn close_relayed(&mut self, peer: PeerId, at: Instant) {
        let due = self
            .relayed
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(id, _)| (at, *id));
        self.close_at.extend(due);
    }

    /// Closes the relayed connections whose time has come.
    pub(super) fn close_due_relayed(&mut self) {
        let now = clock::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.close_at.drain(..).partition(|(at, _)| *at <= now);
        self.close_at = later;
        for (_, id) in due {
            if self.relayed.contains_key(&id) {
                tracing::debug!(connection = %id, "closing the relayed connection: the direct link carries the traffic");
                self.swarm.close_connection(id);
            }
        }
    }
}
