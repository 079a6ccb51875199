//! Neighbour management: where a node finds peers, which of them it dials,
//! and which connections it drops.
//!
//! [`Neighbours`] is plain state with no swarm in it: the engine tells it
//! what was discovered, connected, failed and closed, and asks it for a
//! [`Plan`] once a second. That keeps the policy in one place, testable
//! without sockets:
//!
//! - below the low watermark, dial: bootstrap addresses first, then known
//!   relays, then members of our rooms, then anything else discovered;
//! - for each of our rooms, dial a few members found through the DHT, as
//!   long as we stay under the high watermark;
//! - above the high watermark, drop the least useful connections (those
//!   sharing no room with us, the newest first), but never a few relays
//!   (the circuits to room members run through relays); a link younger
//!   than ten seconds is neither dropped nor counted against the mark;
//! - an address that fails waits before it is tried again, longer after
//!   each failure;
//! - random walks and room lookups run at their configured pace while
//!   they find something new and slow down, up to sixteen times, while
//!   they do not ([`Cadence`]): each Kademlia query reaches the relays
//!   closest to its key, and in a network of a few relays that is every
//!   relay, connections the neighbour manager then prunes again.
//!
//! A relay keeps every bootstrap address connected and links to the other
//! relays it discovers; it never prunes (its peers are its purpose; its
//! connection limits bound them).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt,
    str::FromStr,
    time::Duration,
};

use libp2p::{Multiaddr, PeerId, gossipsub::TopicHash, multiaddr::Protocol};
use web_time::Instant;

/// A way of finding peers. Each can be switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Addresses given at start (`--connect`, `--bootstrap`).
    Bootstrap,
    /// Kademlia queries for the peers closest to random keys.
    RandomWalk,
    /// Multicast DNS on the local network (native only).
    Mdns,
    /// Peers a gossipsub neighbour named when it pruned us from its mesh.
    PeerExchange,
    /// Members of our rooms, found as DHT providers of the room's key.
    Rooms,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 5] = [
        Source::Bootstrap,
        Source::RandomWalk,
        Source::Mdns,
        Source::PeerExchange,
        Source::Rooms,
    ];

    /// The name used in flags and output.
    pub fn name(self) -> &'static str {
        match self {
            Source::Bootstrap => "bootstrap",
            Source::RandomWalk => "random-walk",
            Source::Mdns => "mdns",
            Source::PeerExchange => "peer-exchange",
            Source::Rooms => "rooms",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no discovery source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown discovery source {0:?}: use bootstrap, random-walk, mdns, peer-exchange or rooms")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|source| source.name() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// Which discovery sources are on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources(BTreeSet<Source>);

impl Sources {
    /// These sources and no others.
    pub fn only(sources: impl IntoIterator<Item = Source>) -> Self {
        Self(sources.into_iter().collect())
    }

    /// Whether `source` is on.
    pub fn has(&self, source: Source) -> bool {
        self.0.contains(&source)
    }

    /// Switches `source` on or off.
    pub fn set(&mut self, source: Source, on: bool) {
        if on {
            self.0.insert(source);
        } else {
            self.0.remove(&source);
        }
    }
}

impl Default for Sources {
    /// Everything but mDNS, which multicasts on every interface and is
    /// switched on where a LAN is wanted.
    fn default() -> Self {
        Self::only([
            Source::Bootstrap,
            Source::RandomWalk,
            Source::PeerExchange,
            Source::Rooms,
        ])
    }
}

/// The range of connections a node aims for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Below this many connections, dial discovered peers.
    pub low: usize,
    /// Above this many, drop the least useful.
    pub high: usize,
}

impl Default for Watermarks {
    fn default() -> Self {
        Self { low: 2, high: 8 }
    }
}

/// How a node discovers and keeps its neighbours.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// Addresses dialed at start and kept connected: relays for a peer,
    /// other relays for a relay.
    pub bootstrap: Vec<Multiaddr>,
    /// Sources switched on.
    pub sources: Sources,
    /// Connection range.
    pub watermarks: Watermarks,
    /// Time between two random walks.
    pub random_walk_every: Duration,
    /// Time between two provider lookups for each room.
    pub room_lookup_every: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            sources: Sources::default(),
            watermarks: Watermarks::default(),
            random_walk_every: Duration::from_secs(30),
            room_lookup_every: Duration::from_secs(20),
        }
    }
}

/// Most other relays a relay links to.
pub const RELAY_LINKS: usize = 16;
/// Members of one room a peer links to directly, when it finds them.
pub const ROOM_LINKS: usize = 2;
/// The usefulness (see [`Neighbours::plan`]) of a link sharing a room.
pub const SHARES_A_ROOM: u32 = 10;
/// Relays a peer keeps links to however many it meets (more when it was
/// given more to bootstrap from); the others are pruned like any link.
pub const KEPT_RELAYS: usize = 3;
/// A new link is never pruned before it is this old: both sides get to
/// settle (a link dropped at once would be dialed again, and its messages
/// in flight lost).
const PRUNE_GRACE: Duration = Duration::from_secs(10);
/// First wait after a failed dial; it doubles with each failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two dials of a failing peer.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A link that lasted less than this counts as a failed dial.
const STABLE_LINK: Duration = Duration::from_secs(60);
/// A dial that has not finished by then counts as failed. Every dial ends
/// within the swarm's connection timeout (a page's is 40 s: a `/webrtc`
/// handshake may take 30); this only catches dials that never report.
const DIAL_DEADLINE: Duration = Duration::from_secs(45);
/// Addresses kept per discovered peer.
const MAX_ADDRS: usize = 8;
/// Discovered peers remembered; beyond it, new ones are not kept.
const MAX_KNOWN: usize = 1024;

/// Waits longer after each failure.
#[derive(Clone, Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now >= t)
    }

    fn failed(&mut self, now: Instant) {
        let wait = BACKOFF_BASE
            .saturating_mul(1 << self.failures.min(10))
            .min(BACKOFF_MAX);
        self.failures += 1;
        self.until = Some(now + wait);
    }
}

/// A bootstrap address (its peer id, when the address names one).
#[derive(Debug)]
struct BootEntry {
    addr: Multiaddr,
    peer: Option<PeerId>,
    backoff: Backoff,
    dialing: Option<Instant>,
}

/// A peer some source told us about.
#[derive(Debug, Default)]
struct Known {
    addrs: Vec<Multiaddr>,
    sources: BTreeSet<Source>,
    rooms: BTreeSet<TopicHash>,
    relay: bool,
    backoff: Backoff,
    dialing: Option<Instant>,
}

impl Known {
    /// Remembers new addresses, up to [`MAX_ADDRS`].
    fn add_addrs(&mut self, addrs: &[Multiaddr]) {
        for addr in addrs {
            if self.addrs.len() < MAX_ADDRS && !self.addrs.contains(addr) {
                self.addrs.push(addr.clone());
            }
        }
    }
}

/// An open link.
#[derive(Debug)]
struct Link {
    since: Instant,
}

/// What to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A bootstrap address.
    Addr(Multiaddr),
    /// A discovered peer at these addresses.
    Peer(PeerId, Vec<Multiaddr>),
}

/// What the engine should do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Dials to start.
    pub dial: Vec<Target>,
    /// Peers to disconnect.
    pub prune: Vec<PeerId>,
}

/// How much slower than its configured pace a discovery query that keeps
/// finding nothing new runs: sixteen times (a walk every 8 minutes, a room
/// lookup every 5 and a bit, with the defaults).
const CADENCE_SLOWEST: u32 = 16;

/// When a periodic discovery query (a random walk, a room's provider
/// lookup) runs next: at the configured pace while it finds peers it did
/// not know, twice as far apart after each run that found nothing new, up
/// to [`CADENCE_SLOWEST`] times the pace.
#[derive(Clone, Debug)]
pub struct Cadence {
    pace: Duration,
    every: Duration,
    next: Instant,
}

impl Cadence {
    /// A query every `pace`, the first at `first`.
    pub fn new(pace: Duration, first: Instant) -> Self {
        Self {
            pace,
            every: pace,
            next: first,
        }
    }

    /// Whether a query is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A query started: the next is due after the current interval (or
    /// sooner, once this one says what it found).
    pub fn started(&mut self, now: Instant) {
        self.next = now + self.every;
    }

    /// A query finished: back to the configured pace when it found
    /// something new, else half as often as before.
    pub fn finished(&mut self, now: Instant, found_new: bool) {
        self.every = if found_new {
            self.pace
        } else {
            (self.every * 2).min(self.pace * CADENCE_SLOWEST)
        };
        self.next = now + self.every;
    }

    /// Back to the configured pace (links were lost): the next query runs
    /// within one pace from now.
    pub fn hurry(&mut self, now: Instant) {
        self.every = self.pace;
        self.next = self.next.min(now + self.pace);
    }

    /// The time between two queries now.
    pub fn interval(&self) -> Duration {
        self.every
    }
}

/// The neighbour manager's state.
pub struct Neighbours {
    relay_role: bool,
    watermarks: Watermarks,
    boot: Vec<BootEntry>,
    known: HashMap<PeerId, Known>,
    links: HashMap<PeerId, Link>,
    local: PeerId,
}

impl Neighbours {
    /// State for a node (`relay_role` for a relay) with these settings.
    pub fn new(local: PeerId, relay_role: bool, discovery: &Discovery) -> Self {
        let boot = if discovery.sources.has(Source::Bootstrap) {
            discovery
                .bootstrap
                .iter()
                .map(|addr| BootEntry {
                    peer: peer_of(addr),
                    addr: addr.clone(),
                    backoff: Backoff::default(),
                    dialing: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            relay_role,
            watermarks: discovery.watermarks,
            boot,
            known: HashMap::new(),
            links: HashMap::new(),
            local,
        }
    }

    /// A source named a peer. Returns true the first time this source
    /// names it.
    pub fn discovered(&mut self, peer: PeerId, addrs: &[Multiaddr], source: Source) -> bool {
        if peer == self.local || (self.known.len() >= MAX_KNOWN && !self.known.contains_key(&peer))
        {
            return false;
        }
        let known = self.known.entry(peer).or_default();
        known.add_addrs(addrs);
        known.sources.insert(source)
    }

    /// A source (room providers, peer exchange) named a member of one of
    /// our rooms. Returns true the first time this source names it.
    pub fn room_member(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        room: TopicHash,
        source: Source,
    ) -> bool {
        let first = self.discovered(peer, addrs, source);
        if let Some(known) = self.known.get_mut(&peer) {
            known.rooms.insert(room);
        }
        first
    }

    /// `source` no longer names `peer` (a page stopped announcing its
    /// address). A peer no other source names, and that is no relay, is
    /// forgotten: not dialed again until a source finds it anew. Returns
    /// whether the source had named it.
    pub fn forget(&mut self, peer: &PeerId, source: Source) -> bool {
        let Some(known) = self.known.get_mut(peer) else {
            return false;
        };
        let named = known.sources.remove(&source);
        if known.sources.is_empty() && !known.relay {
            self.known.remove(peer);
        }
        named
    }

    /// We left a room: its members are no reason to dial any more.
    pub fn left_room(&mut self, room: &TopicHash) {
        for known in self.known.values_mut() {
            known.rooms.remove(room);
        }
    }

    /// Identify said this peer is a relay (its listen addresses attached).
    pub fn is_relay(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if peer == self.local {
            return;
        }
        let known = self.known.entry(peer).or_default();
        known.relay = true;
        known.add_addrs(addrs);
    }

    /// Whether a peer is a relay we know of.
    pub fn relay(&self, peer: &PeerId) -> bool {
        self.known.get(peer).is_some_and(|k| k.relay)
            || self.boot.iter().any(|b| b.peer == Some(*peer))
    }

    /// Every known relay other than us, with its addresses.
    pub fn relays(&self) -> impl Iterator<Item = (&PeerId, &[Multiaddr])> {
        self.known
            .iter()
            .filter(|(_, k)| k.relay)
            .map(|(p, k)| (p, k.addrs.as_slice()))
    }

    /// We are dialing `addr` ourselves (asked by a command): a bootstrap
    /// entry for it is not dialed a second time.
    pub fn dialing_addr(&mut self, addr: &Multiaddr, now: Instant) {
        for entry in &mut self.boot {
            if same_target(addr, &entry.addr) {
                entry.dialing = Some(now);
            }
        }
    }

    /// A connection to `peer` opened (`dialed`: the address we dialed).
    /// Returns the bootstrap address it was, if it was one.
    pub fn connected(
        &mut self,
        peer: PeerId,
        dialed: Option<&Multiaddr>,
        now: Instant,
    ) -> Option<Multiaddr> {
        self.links.entry(peer).or_insert(Link { since: now });
        let mut boot = None;
        for entry in &mut self.boot {
            if entry.peer == Some(peer) || dialed.is_some_and(|a| same_target(a, &entry.addr)) {
                entry.peer.get_or_insert(peer);
                entry.backoff = Backoff::default();
                entry.dialing = None;
                boot = Some(entry.addr.clone());
            }
        }
        // The wait before a dial resets when a link proves stable (see
        // `disconnected`), not when it opens: a member that prunes each
        // link soon after it opens must be dialed less and less often.
        if let Some(known) = self.known.get_mut(&peer) {
            known.dialing = None;
        }
        boot
    }

    /// The last connection to `peer` closed. A link that closes soon after
    /// it opened (the other side pruned it, or it is unstable) counts as a
    /// failure, and the wait doubles with each one: dialing it again at
    /// once would only churn connections, and every churned connection
    /// loses the messages in flight on it. A link that lasted resets the
    /// wait.
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) {
        let Some(link) = self.links.remove(peer) else {
            return;
        };
        if let Some(known) = self.known.get_mut(peer) {
            if now.duration_since(link.since) < STABLE_LINK {
                known.backoff.failed(now);
            } else {
                known.backoff = Backoff::default();
            }
        }
    }

    /// A dial failed (peer known or not; `addr` when we dialed one).
    pub fn dial_failed(&mut self, peer: Option<PeerId>, addr: Option<&Multiaddr>, now: Instant) {
        for entry in &mut self.boot {
            let hit = (peer.is_some() && entry.peer == peer)
                || addr.is_some_and(|a| same_target(a, &entry.addr));
            if hit && entry.dialing.is_some() {
                entry.dialing = None;
                entry.backoff.failed(now);
            }
        }
        if let Some(known) = peer.and_then(|p| self.known.get_mut(&p))
            && known.dialing.is_some()
        {
            known.dialing = None;
            known.backoff.failed(now);
        }
    }

    /// Open links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Whether a random walk that is due should run. A relay's walks keep
    /// its backbone up to date. A peer walks to learn of relays to fall
    /// back on: once it knows as many as it may hold links, it walks only
    /// when it is short of links. Each walk links a peer to relays that it
    /// prunes again, and some walk nearly always names a relay none had
    /// named before, so a peer that went on walking kept a settled
    /// network of many relays churning.
    pub fn walk_wanted(&self) -> bool {
        self.relay_role
            || self.links.len() < self.watermarks.low
            || self.relays().count() < self.watermarks.high
    }

    /// What to dial and prune now. `useful` rates a connected peer (higher
    /// is more useful): [`SHARES_A_ROOM`] for each room it shares with us,
    /// plus one when it is in one of our gossipsub meshes.
    pub fn plan(&mut self, now: Instant, useful: impl Fn(&PeerId) -> u32) -> Plan {
        self.expire_dials(now);
        let mut plan = Plan::default();
        let pending = self.boot.iter().filter(|b| b.dialing.is_some()).count()
            + self.known.values().filter(|k| k.dialing.is_some()).count();
        let mut budget = if self.relay_role {
            usize::MAX
        } else {
            self.watermarks
                .low
                .saturating_sub(self.links.len() + pending)
        };

        // Bootstrap addresses: a relay keeps all of them; a peer takes them
        // first when it is short of links.
        for entry in &mut self.boot {
            if budget == 0 {
                break;
            }
            let linked = entry.peer.is_some_and(|p| self.links.contains_key(&p));
            if !linked && entry.dialing.is_none() && entry.backoff.ready(now) {
                entry.dialing = Some(now);
                plan.dial.push(Target::Addr(entry.addr.clone()));
                budget -= 1;
            }
        }

        let mut candidates: Vec<(u8, PeerId)> = self
            .known
            .iter()
            .filter(|(p, k)| {
                !self.links.contains_key(p)
                    && k.dialing.is_none()
                    && k.backoff.ready(now)
                    && !k.addrs.is_empty()
            })
            .map(|(p, k)| {
                // Peers are DHT clients, so what a random walk finds are
                // relays (DHT servers), even before identify says so.
                let dht_server = k.sources.contains(&Source::RandomWalk);
                let rank = if k.relay || (self.relay_role && dht_server) {
                    0
                } else if !k.rooms.is_empty() {
                    1
                } else {
                    2
                };
                (rank, *p)
            })
            .collect();
        candidates.sort();

        if self.relay_role {
            // The relay backbone: every other relay we learn of, up to a cap
            // (its peers do not count: they are what a relay is for).
            let linked = self.links.keys().filter(|p| self.relay(p)).count();
            let room = RELAY_LINKS.saturating_sub(linked);
            for (_, peer) in candidates.iter().filter(|(r, _)| *r == 0).take(room) {
                self.start_dial(*peer, now, &mut plan);
            }
            return plan;
        }

        for (_, peer) in candidates.iter().take(budget) {
            self.start_dial(*peer, now, &mut plan);
        }

        // Rooms as subnets: a few direct links to members of each room.
        let mut rooms: HashMap<TopicHash, usize> = HashMap::new();
        for (peer, known) in &self.known {
            if self.links.contains_key(peer) {
                for room in &known.rooms {
                    *rooms.entry(room.clone()).or_default() += 1;
                }
            }
        }
        let mut room_dials = Vec::new();
        let mut total = self.links.len() + pending + plan.dial.len();
        for (_, peer) in candidates.iter().filter(|(r, _)| *r == 1) {
            if total >= self.watermarks.high {
                break;
            }
            let Some(known) = self.known.get(peer).filter(|k| k.dialing.is_none()) else {
                continue;
            };
            let wanted = known
                .rooms
                .iter()
                .find(|room| rooms.get(*room).copied().unwrap_or(0) < ROOM_LINKS);
            if let Some(room) = wanted.cloned() {
                *rooms.entry(room).or_default() += 1;
                room_dials.push(*peer);
                total += 1;
            }
        }
        for peer in room_dials {
            self.start_dial(peer, now, &mut plan);
        }

        // Above the high watermark: drop the least useful, newest first.
        // Relays stay, a few of them: our bootstrap relays, then the most
        // useful others up to [`KEPT_RELAYS`] (the circuits to our rooms'
        // members run through them). In a network of many relays the rest
        // go like any link, or every peer would end up linked to every
        // relay its DHT walks meet.
        // Links still in their grace count only once it is over: counted
        // at once, a burst of new links (each Kademlia query opens some)
        // pushed out older, more useful ones, gossipsub mesh links among
        // them, in favour of links that were pruned in turn soon after.
        let settled = |link: &Link| now.duration_since(link.since) >= PRUNE_GRACE;
        let old = self.links.values().filter(|link| settled(link)).count();
        if old > self.watermarks.high {
            let excess = old - self.watermarks.high;
            let kept = self.kept_relays(&useful);
            let mut ranked: Vec<(u32, std::cmp::Reverse<Instant>, PeerId)> = self
                .links
                .iter()
                .filter(|(p, link)| settled(link) && !kept.contains(p))
                .map(|(p, link)| (useful(p), std::cmp::Reverse(link.since), *p))
                .collect();
            ranked.sort();
            plan.prune = ranked
                .into_iter()
                .take(excess)
                .map(|(_, _, peer)| peer)
                .collect();
        }
        plan
    }

    /// The relays we are linked to that pruning spares: the bootstrap
    /// ones, then others by usefulness and age, [`KEPT_RELAYS`] in all (or
    /// more, when we bootstrapped from more).
    fn kept_relays(&self, useful: &impl Fn(&PeerId) -> u32) -> HashSet<PeerId> {
        let mut kept: HashSet<PeerId> = self
            .boot
            .iter()
            .filter_map(|b| b.peer)
            .filter(|p| self.links.contains_key(p))
            .collect();
        let mut others: Vec<(std::cmp::Reverse<u32>, Instant, PeerId)> = self
            .links
            .iter()
            .filter(|(p, _)| !kept.contains(*p) && self.relay(p))
            .map(|(p, link)| (std::cmp::Reverse(useful(p)), link.since, *p))
            .collect();
        others.sort();
        let room = KEPT_RELAYS.saturating_sub(kept.len());
        kept.extend(others.into_iter().take(room).map(|(_, _, p)| p));
        kept
    }

    fn start_dial(&mut self, peer: PeerId, now: Instant, plan: &mut Plan) {
        if let Some(known) = self.known.get_mut(&peer) {
            known.dialing = Some(now);
            plan.dial.push(Target::Peer(peer, known.addrs.clone()));
        }
    }

    /// Dials that never reported back count as failed.
    fn expire_dials(&mut self, now: Instant) {
        let stale = |t: &Option<Instant>| t.is_some_and(|t| now.duration_since(t) > DIAL_DEADLINE);
        for entry in &mut self.boot {
            if stale(&entry.dialing) {
                entry.dialing = None;
                entry.backoff.failed(now);
            }
        }
        for known in self.known.values_mut() {
            if stale(&known.dialing) {
                known.dialing = None;
                known.backoff.failed(now);
            }
        }
    }

    /// What each source found: (peer, sources, addresses), for `meshtalk dht`.
    pub fn found(&self) -> Vec<(PeerId, Vec<Source>, Vec<Multiaddr>)> {
        self.known
            .iter()
            .map(|(p, k)| (*p, k.sources.iter().copied().collect(), k.addrs.clone()))
            .collect()
    }
}

/// The peer id at the end of an address.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Whether two addresses name the same place (one may lack `/p2p/`).
fn same_target(a: &Multiaddr, b: &Multiaddr) -> bool {
    let strip = |m: &Multiaddr| -> Multiaddr {
        m.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may read the wall clock
mod tests {
    use super::*;

    fn addr(port: u16, peer: PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
            .parse()
            .expect("valid multiaddr")
    }

    fn peer_node(bootstrap: Vec<Multiaddr>, low: usize, high: usize) -> Neighbours {
        let discovery = Discovery {
            bootstrap,
            watermarks: Watermarks { low, high },
            ..Discovery::default()
        };
        Neighbours::new(PeerId::random(), false, &discovery)
    }

    fn dialed_peers(plan: &Plan) -> Vec<PeerId> {
        plan.dial
            .iter()
            .map(|t| match t {
                Target::Peer(p, _) => *p,
                Target::Addr(a) => peer_of(a).expect("test addresses name a peer"),
            })
            .collect()
    }

    #[test]
    fn a_query_that_finds_nothing_new_runs_half_as_often_down_to_a_sixteenth() {
        let pace = Duration::from_secs(30);
        let start = Instant::now();
        let mut cadence = Cadence::new(pace, start);
        assert!(cadence.due(start));
        let mut now = start;
        let mut intervals = Vec::new();
        for _ in 0..6 {
            cadence.started(now);
            assert!(!cadence.due(now));
            cadence.finished(now, false);
            intervals.push(cadence.interval().as_secs());
            assert!(!cadence.due(now + cadence.interval() - Duration::from_secs(1)));
            now += cadence.interval();
            assert!(cadence.due(now));
        }
        assert_eq!(intervals, [60, 120, 240, 480, 480, 480]);
        // Something new: back to the pace at once.
        cadence.started(now);
        cadence.finished(now, true);
        assert_eq!(cadence.interval(), pace);
        assert!(cadence.due(now + pace));
    }

    #[test]
    fn a_slowed_query_hurries_back_when_links_are_lost() {
        let pace = Duration::from_secs(20);
        let start = Instant::now();
        let mut cadence = Cadence::new(pace, start);
        for _ in 0..4 {
            cadence.started(start);
            cadence.finished(start, false);
        }
        assert_eq!(cadence.interval(), pace * 16);
        cadence.hurry(start + Duration::from_secs(5));
        assert_eq!(cadence.interval(), pace);
        assert!(cadence.due(start + Duration::from_secs(25)));
        // Hurrying never postpones a query that is due sooner.
        let mut soon = Cadence::new(pace, start);
        soon.hurry(start + Duration::from_secs(5));
        assert!(soon.due(start));
    }

    #[test]
    fn below_the_low_mark_bootstrap_comes_first_then_relays_then_members() {
        let (boot, relay, member, other) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let mut n = peer_node(vec![addr(1, boot)], 3, 8);
        n.discovered(other, &[addr(4, other)], Source::RandomWalk);
        n.room_member(
            member,
            &[addr(3, member)],
            TopicHash::from_raw("r"),
            Source::Rooms,
        );
        n.discovered(relay, &[addr(2, relay)], Source::RandomWalk);
        n.is_relay(relay, &[]);
        let now = Instant::now();
        assert_eq!(dialed_peers(&n.plan(now, |_| 0)), vec![boot, relay, member]);
        // Dials in flight count: nothing more until they report back.
        assert_eq!(n.plan(now, |_| 0), Plan::default());
    }

    #[test]
    fn a_failed_address_waits_longer_each_time() {
        let boot = PeerId::random();
        let mut n = peer_node(vec![addr(1, boot)], 1, 4);
        let t0 = Instant::now();
        assert_eq!(n.plan(t0, |_| 0).dial.len(), 1);
        n.dial_failed(Some(boot), None, t0);
        assert!(
            n.plan(t0 + Duration::from_millis(500), |_| 0)
                .dial
                .is_empty()
        );
        assert_eq!(n.plan(t0 + Duration::from_secs(1), |_| 0).dial.len(), 1);
        let t1 = t0 + Duration::from_secs(1);
        n.dial_failed(Some(boot), None, t1);
        assert!(
            n.plan(t1 + Duration::from_millis(1500), |_| 0)
                .dial
                .is_empty()
        );
        assert_eq!(n.plan(t1 + Duration::from_secs(2), |_| 0).dial.len(), 1);
        // Success resets the wait.
        n.connected(boot, None, t1);
        n.disconnected(&boot, t1 + STABLE_LINK);
        assert_eq!(n.plan(t1 + Duration::from_secs(2), |_| 0).dial.len(), 1);
    }

    #[test]
    fn a_member_that_keeps_dropping_us_soon_is_dialed_less_and_less_often() {
        // As a member above its high mark does: it prunes each link of
        // ours once the link is 10 s old.
        let mut n = peer_node(vec![], 0, 4);
        let room = TopicHash::from_raw("meshtalk/room/r");
        let m = PeerId::random();
        n.room_member(m, &[addr(10, m)], room, Source::Rooms);
        let mut t = Instant::now();
        for wait in [1, 2, 4, 8] {
            assert_eq!(dialed_peers(&n.plan(t, |_| 0)), vec![m]);
            n.connected(m, None, t);
            let dropped = t + Duration::from_secs(10);
            n.disconnected(&m, dropped);
            let early = dropped + Duration::from_secs(wait) - Duration::from_millis(100);
            assert!(
                n.plan(early, |_| 0).dial.is_empty(),
                "dialed again within {wait} s"
            );
            t = dropped + Duration::from_secs(wait);
        }
        // A link that lasts resets the wait.
        assert_eq!(dialed_peers(&n.plan(t, |_| 0)), vec![m]);
        n.connected(m, None, t);
        let dropped = t + STABLE_LINK;
        n.disconnected(&m, dropped);
        assert_eq!(dialed_peers(&n.plan(dropped, |_| 0)), vec![m]);
    }

    #[test]
    fn a_dial_that_never_reports_counts_as_failed() {
        let boot = PeerId::random();
        let mut n = peer_node(vec![addr(1, boot)], 1, 4);
        let t0 = Instant::now();
        assert_eq!(n.plan(t0, |_| 0).dial.len(), 1);
        let expired = t0 + DIAL_DEADLINE + Duration::from_millis(1);
        assert!(n.plan(expired, |_| 0).dial.is_empty());
        assert_eq!(n.plan(expired + BACKOFF_BASE, |_| 0).dial.len(), 1);
    }

    #[test]
    fn above_the_high_mark_the_least_useful_go_and_relays_stay() {
        let relay = PeerId::random();
        let mut n = peer_node(vec![addr(1, relay)], 1, 2);
        let t0 = Instant::now();
        let useful_peer = PeerId::random();
        let idle_old = PeerId::random();
        let idle_new = PeerId::random();
        n.connected(relay, None, t0);
        n.connected(useful_peer, None, t0);
        n.connected(idle_old, None, t0);
        n.connected(idle_new, None, t0 + Duration::from_secs(1));
        let useful = |p: &PeerId| u32::from(*p == useful_peer) * 10;
        // New links get time to settle first.
        assert!(n.plan(t0 + Duration::from_secs(2), useful).prune.is_empty());
        let settled = t0 + PRUNE_GRACE + Duration::from_secs(1);
        assert_eq!(n.plan(settled, useful).prune, vec![idle_new, idle_old]);
        // New links do not push out settled ones before they are settled
        // themselves: then the least useful go, whatever their age.
        let mut n = peer_node(vec![addr(1, relay)], 1, 2);
        n.connected(relay, None, t0);
        n.connected(useful_peer, None, t0);
        let young: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let later = t0 + PRUNE_GRACE;
        for (i, peer) in young.iter().enumerate() {
            n.connected(*peer, None, later + Duration::from_secs(i as u64));
        }
        assert!(
            n.plan(later + Duration::from_secs(3), useful)
                .prune
                .is_empty()
        );
        let mut pruned = n.plan(later + PRUNE_GRACE * 2, useful).prune;
        pruned.sort();
        let mut expected = young.clone();
        expected.sort();
        assert_eq!(pruned, expected);
        // A relay never goes, even when it is the least useful.
        let mut n = peer_node(vec![addr(1, relay)], 1, 1);
        n.connected(relay, None, t0);
        n.connected(useful_peer, None, t0);
        assert_eq!(n.plan(settled, useful).prune, vec![useful_peer]);
    }

    #[test]
    fn a_peer_stops_walking_once_it_knows_enough_relays_unless_short_of_links() {
        let mut n = peer_node(vec![], 2, 4);
        let t0 = Instant::now();
        let relays: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, relay) in relays.iter().enumerate() {
            assert!(n.walk_wanted(), "knows {i} relays");
            n.is_relay(*relay, &[addr(10 + i as u16, *relay)]);
            n.connected(*relay, None, t0);
        }
        assert!(!n.walk_wanted());
        // Down to one link (under the low watermark): walk again.
        for relay in &relays[1..] {
            n.disconnected(relay, t0 + Duration::from_secs(1));
        }
        assert!(n.walk_wanted());
        // A relay always walks.
        let discovery = Discovery {
            watermarks: Watermarks { low: 0, high: 0 },
            ..Discovery::default()
        };
        assert!(Neighbours::new(PeerId::random(), true, &discovery).walk_wanted());
    }

    #[test]
    fn a_few_relays_stay_and_the_rest_are_pruned_like_any_link() {
        let boot = PeerId::random();
        let mut n = peer_node(vec![addr(1, boot)], 1, 2);
        let t0 = Instant::now();
        n.connected(boot, None, t0);
        let met: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, relay) in met.iter().enumerate() {
            n.is_relay(*relay, &[addr(10 + i as u16, *relay)]);
            n.connected(*relay, None, t0 + Duration::from_secs(i as u64));
        }
        // The one carrying our circuits is the most useful.
        let useful = |p: &PeerId| u32::from(*p == met[4]) * 10;
        let settled = t0 + PRUNE_GRACE + Duration::from_secs(10);
        let mut pruned = n.plan(settled, useful).prune;
        pruned.sort();
        // The bootstrap relay, the useful one and the oldest other stay.
        let mut expected = vec![met[1], met[2], met[3]];
        expected.sort();
        assert_eq!(pruned, expected);
    }

    #[test]
    fn room_members_are_linked_up_to_a_few_per_room_under_the_high_mark() {
        let mut n = peer_node(vec![], 0, 4);
        let room = TopicHash::from_raw("meshtalk/room/r");
        let members: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for (i, m) in members.iter().enumerate() {
            n.room_member(*m, &[addr(10 + i as u16, *m)], room.clone(), Source::Rooms);
        }
        let plan = n.plan(Instant::now(), |_| 0);
        assert_eq!(plan.dial.len(), ROOM_LINKS);
        // After leaving the room its members are no reason to dial.
        let mut n = peer_node(vec![], 0, 4);
        n.room_member(
            members[0],
            &[addr(10, members[0])],
            room.clone(),
            Source::PeerExchange,
        );
        n.left_room(&room);
        assert!(n.plan(Instant::now(), |_| 0).dial.is_empty());
    }

    #[test]
    fn a_forgotten_member_is_not_dialed_until_found_again() {
        let mut n = peer_node(vec![], 0, 4);
        let room = TopicHash::from_raw("meshtalk/room/r");
        let page = PeerId::random();
        n.room_member(page, &[addr(10, page)], room.clone(), Source::Rooms);
        let plan = n.plan(Instant::now(), |_| 0);
        assert_eq!(dialed_peers(&plan), vec![page]);
        n.dial_failed(Some(page), None, Instant::now());
        assert!(n.forget(&page, Source::Rooms));
        assert!(!n.forget(&page, Source::Rooms));
        // Long after any back-off, it is still not dialed.
        let later = Instant::now() + BACKOFF_MAX * 2;
        assert!(n.plan(later, |_| 0).dial.is_empty());
        assert!(n.found().is_empty());
        // Found again, it is dialed again (a fresh start, no back-off).
        assert!(n.room_member(page, &[addr(10, page)], room, Source::Rooms));
        assert_eq!(dialed_peers(&n.plan(later, |_| 0)), vec![page]);
    }

    #[test]
    fn a_relay_keeps_every_bootstrap_and_links_to_relays_it_finds() {
        let boots: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let discovery = Discovery {
            bootstrap: boots
                .iter()
                .enumerate()
                .map(|(i, p)| addr(i as u16, *p))
                .collect(),
            watermarks: Watermarks { low: 1, high: 8 },
            ..Discovery::default()
        };
        let mut n = Neighbours::new(PeerId::random(), true, &discovery);
        let other_relay = PeerId::random();
        n.discovered(other_relay, &[addr(9, other_relay)], Source::RandomWalk);
        n.is_relay(other_relay, &[]);
        // What a random walk finds is a DHT server, so a relay: dialed too.
        let walked = PeerId::random();
        n.discovered(walked, &[addr(7, walked)], Source::RandomWalk);
        let plain = PeerId::random();
        n.discovered(plain, &[addr(8, plain)], Source::Mdns);
        let t0 = Instant::now();
        let mut dialed = dialed_peers(&n.plan(t0, |_| 0));
        dialed.sort();
        let mut want = boots.clone();
        want.extend([other_relay, walked]);
        want.sort();
        assert_eq!(dialed, want);
        for p in &want {
            n.connected(*p, None, t0);
        }
        for _ in 0..20 {
            n.connected(PeerId::random(), None, t0);
        }
        let later = t0 + PRUNE_GRACE + Duration::from_secs(1);
        assert!(n.plan(later, |_| 0).prune.is_empty(), "relays never prune");
    }

    #[test]
    fn sources_parse_by_name_and_unknown_ones_are_refused() {
        for source in Source::ALL {
            assert_eq!(source.name().parse::<Source>(), Ok(source));
        }
        assert!("dht".parse::<Source>().is_err());
        assert!(!Sources::default().has(Source::Mdns));
    }
}
