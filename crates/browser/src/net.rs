//! The network side of the page: builds the libp2p node, runs the shared
//! chat engine, keeps a link to a relay (WebRTC-direct first, WebSocket as
//! fallback, reconnecting with backoff when the relay goes away) and turns
//! engine events into [`Model`] updates. The components talk to it only
//! through [`Action`]s.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use futures_timer::Delay;
use leptos::prelude::{GetUntracked, Set, Update, WithUntracked};
use meshtalk_protocol::{
    arch::files::FileSource,
    arch::{self, TransportConfig},
    behaviour::{BehaviourConfig, Role},
    discovery::{Discovery, Source, Sources},
    engine::{Engine, EngineConfig, EngineHandle, Event},
    files::{self, FileHash, Offer},
    libp2p::{Multiaddr, PeerId, multiaddr::Protocol},
    rooms::Room,
    transport::Transport,
};
use send_wrapper::SendWrapper;
use web_time::Instant;

use crate::{
    identity,
    model::{FileLine, FileState, LineKind, Model, PeerRow, Status, short_id},
    page,
    params::{Params, TransportChoice, candidates, prefer_last},
    saved,
};

/// How long one dial may take before it is given up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a dial may go unanswered before the next address is dialed
/// alongside it; the first to connect is the relay link and a later one is
/// closed (the "happy eyeballs" of RFC 8305). A network that drops UDP
/// thus reaches the relay over WebSocket about a second after the page
/// starts, not after [`DIAL_TIMEOUT`]. WebRTC-direct connects in about
/// 300 ms on loopback and in six or seven round trips across the
/// internet, so a working one is rarely raced.
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// First pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long after connecting (or switching rooms) the relay has to say it
/// is in our room. A stream the relay opens very early in a WebRTC-direct
/// connection can be lost in the browser (webrtc-websys listens for data
/// channels only after its handshake); meshtalk relays wait a moment before
/// opening any (`arch`), but another relay may not. If the lost stream is
/// the relay's gossipsub one, nothing would ever reach this page, so it
/// reconnects.
const ROOM_CHECK: Duration = Duration::from_secs(3);
/// How often connected peers are pinged (the peers table shows the RTT).
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Where the page's own relay lists its addresses.
const ADDRS_URL: &str = "/api/addrs";
/// `localStorage` key of the nickname.
pub const NICK_KEY: &str = "meshtalk.nick";
/// Where a tab keeps the transport it last reached a relay over
/// (`sessionStorage`): its reloads try that one first.
const LAST_TRANSPORT_KEY: &str = "meshtalk.relay-transport";

/// What a person can do on the page.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send a line to the current room.
    Send(String),
    /// Set the nickname.
    Nick(String),
    /// Switch to another room.
    Room(String),
    /// Connect to this relay address instead.
    Relay(String),
    /// Forget the current room's history in this browser.
    ClearHistory,
    /// Send a direct message: the peer id, the text.
    SendDm(String, String),
    /// Offer a file picked in the file input to the current room.
    SendFile(SendWrapper<web_sys::File>),
    /// Fetch a file offered in a room: its SHA-256 (hex).
    GetFile(String),
}

/// Sends [`Action`]s to the network side. Cheap to clone.
#[derive(Clone)]
pub struct Actions(UnboundedSender<Action>);

impl Actions {
    /// Queues an action; after the page has shut down it is dropped.
    pub fn send(&self, action: Action) {
        let _ = self.0.unbounded_send(action);
    }
}

/// Starts the node and the link task; returns the handle the components use.
pub fn start(model: Model, params: Params) -> Actions {
    let (tx, rx) = unbounded();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(reason) = run(model, params, rx).await {
            tracing::error!(%reason, "the chat node stopped");
            model.status.set(Status::Stopped { reason });
        }
    });
    Actions(tx)
}

/// The state of the link to the relay.
enum Link {
    /// Dials in flight (`tries`, oldest first) and the addresses not tried
    /// yet, the next of which starts at `next_at` unless one connects.
    Dialing {
        tries: Vec<Try>,
        rest: VecDeque<(Transport, Multiaddr)>,
        next_at: Option<Instant>,
        /// Why the last dial that ended failed, for when all do.
        reason: String,
    },
    /// Connected to this relay at `addr` over `transport`; until `check`
    /// passes, it has not yet shown that it is in our room, and the page
    /// does not say "connected".
    Up {
        relay: PeerId,
        addr: Multiaddr,
        transport: Transport,
        check: Option<Instant>,
    },
    /// Waiting before the next attempt.
    Down { until: Instant },
    /// Waiting for the person to give an address.
    Idle,
}

/// One dial to a relay address in flight.
struct Try {
    addr: Multiaddr,
    deadline: Instant,
}

impl Link {
    /// When the link needs looking at again, if ever.
    fn wake_at(&self) -> Option<Instant> {
        match self {
            Link::Dialing { tries, next_at, .. } => {
                tries.iter().map(|t| t.deadline).chain(*next_at).min()
            }
            Link::Down { until } => Some(*until),
            Link::Up { check, .. } => *check,
            Link::Idle => None,
        }
    }
}

struct Net {
    model: Model,
    params: Params,
    handle: EngineHandle,
    room: Room,
    link: Link,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    /// The origin's `/api/addrs`, asked for at start, for the first
    /// attempt.
    prefetched: Option<futures::channel::oneshot::Receiver<RelayAddrs>>,
    /// The other relays the origin's relay listed, remembered: when it
    /// dies, so does its `/api/addrs`, and these are where the page goes.
    other_relays: Vec<Vec<Multiaddr>>,
    /// Open connections by peer: the peers table shows the best one.
    links: HashMap<PeerId, Vec<(Transport, Multiaddr)>>,
    /// The member the status line's direct-link problem is about.
    direct_problem_peer: Option<PeerId>,
}

async fn run(
    model: Model,
    params: Params,
    mut actions: UnboundedReceiver<Action>,
) -> Result<(), String> {
    // The relay's addresses are asked for at once and arrive while the
    // node starts (keys, swarm, saved history), not after.
    let prefetched = params.relays.is_empty().then(|| {
        let (tx, rx) = futures::channel::oneshot::channel();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = tx.send(relay_addrs().await);
        });
        rx
    });
    // So is the saved history (IndexedDB works while the node is built and
    // connects).
    let (saved_tx, saved_rx) = futures::channel::oneshot::channel();
    wasm_bindgen_futures::spawn_local(async move {
        let _ = saved_tx.send(saved::open().await);
    });
    let keypair = identity::for_this_tab().await;
    // Room members found through the rooms' peer records are the only
    // discovery source: the neighbour manager links the page directly
    // (`/webrtc`) to a few of them, unless `?direct=off`. The relay link is
    // kept by `Link` below.
    let sources = if params.no_direct {
        Sources::only([])
    } else {
        Sources::only([Source::Rooms])
    };
    let behaviour = BehaviourConfig {
        role: Role::Peer,
        sources: sources.clone(),
        pubsub: params.pubsub,
        ..BehaviourConfig::default()
    };
    let swarm = arch::build_swarm(keypair, TransportConfig::default(), &behaviour)
        .await
        .map_err(|e| format!("cannot start the libp2p node: {e}"))?;
    let nick = model.nick.get_untracked();
    let config = EngineConfig {
        rooms: if params.uc {
            Vec::new()
        } else {
            vec![params.room.clone()]
        },
        uc: params.uc,
        nick: (!nick.is_empty()).then_some(nick),
        ping_interval: Some(PING_INTERVAL),
        // The page keeps its one link to a relay itself (`Link` below); the
        // engine dials only the direct links to room members.
        discovery: Discovery {
            sources,
            ..Discovery::default()
        },
        ..EngineConfig::default()
    };
    let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, config);
    model.me.set(engine.local_peer_id().to_string());
    wasm_bindgen_futures::spawn_local(engine.run());
    // What this browser saved shows as soon as IndexedDB has it, while the
    // page connects (on a first visit, making the database takes longer
    // than building the node): the engine keeps what it hears meanwhile.
    let loader = handle.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let saved = saved_rx
            .await
            .unwrap_or_else(|_| Err("the saved history was not read".into()));
        match saved {
            Ok((records, journal)) => {
                let _ = loader.load_history(records, Box::new(journal)).await;
            }
            Err(e) => tracing::warn!(error = %e, "no history saved in this browser"),
        }
    });

    let mut net = Net {
        model,
        room: params.room.clone(),
        params,
        handle,
        link: Link::Idle,
        failures: 0,
        prefetched,
        other_relays: Vec::new(),
        links: HashMap::new(),
        direct_problem_peer: None,
    };
    for problem in std::mem::take(&mut net.params.problems) {
        net.notice(problem);
    }
    net.attempt().await;
    loop {
        let wait = net.link.wake_at();
        let timer = async move {
            match wait {
                Some(at) => Delay::new(at.saturating_duration_since(Instant::now())).await,
                None => futures::future::pending().await,
            }
        };
        futures::select! {
            event = events.next() => match event {
                Some(event) => net.on_event(event).await,
                None => return Err("the chat engine stopped".into()),
            },
            action = actions.next() => match action {
                Some(action) => net.on_action(action).await,
                None => return Ok(()),
            },
            () = timer.fuse() => net.on_timer().await,
        }
    }
}

impl Net {
    /// Starts a connection attempt: finds the relays' addresses (the
    /// origin's relay first, then the others it lists), then dials the
    /// first candidate.
    async fn attempt(&mut self) {
        let mut relays = Vec::new();
        if self.params.relays.is_empty() {
            let answer = match self.prefetched.take() {
                Some(early) => early
                    .await
                    .unwrap_or_else(|_| Err("the relay's addresses were not fetched".into())),
                None => relay_addrs().await,
            };
            match answer {
                Ok((own, others)) => {
                    relays.push(own);
                    self.other_relays = others;
                }
                Err(reason) if self.other_relays.is_empty() => return self.down(reason),
                Err(reason) => {
                    tracing::info!(%reason, "the page's relay is unreachable; trying the others it listed");
                }
            }
        } else {
            relays.extend(self.params.relays.iter().map(|a| vec![a.clone()]));
        }
        relays.extend(self.other_relays.iter().cloned());
        let secure = crate::page::served_over_https();
        let mut queue: Vec<_> = relays
            .iter()
            .flat_map(|addrs| candidates(addrs, self.params.transport, secure))
            .collect();
        if self.params.transport == TransportChoice::Auto
            && let Some(last) = crate::page::stored_for_tab(LAST_TRANSPORT_KEY)
        {
            prefer_last(&mut queue, &last);
        }
        if queue.is_empty() {
            return self.stop(format!(
                "the relay offers no address for transport {}; give one with ?relay=",
                self.params.transport
            ));
        }
        self.launch(Vec::new(), queue.into(), String::new()).await;
    }

    /// Dials the next address alongside the `tries` in flight (skipping
    /// those the engine refuses at once); with nothing left in flight the
    /// link goes down for `reason`, the last failure.
    async fn launch(
        &mut self,
        mut tries: Vec<Try>,
        mut rest: VecDeque<(Transport, Multiaddr)>,
        mut reason: String,
    ) {
        while let Some((transport, addr)) = rest.pop_front() {
            tracing::info!(%addr, "dialing the relay");
            match self.handle.dial(addr.clone()).await {
                Ok(()) => {
                    self.model.status.set(Status::Connecting {
                        transport: transport.to_string(),
                    });
                    tries.push(Try {
                        addr,
                        deadline: Instant::now() + DIAL_TIMEOUT,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dial refused");
                    reason = e.to_string();
                }
            }
        }
        if tries.is_empty() {
            return self.down(reason);
        }
        let next_at = (!rest.is_empty()).then(|| Instant::now() + HEDGE_AFTER);
        self.link = Link::Dialing {
            tries,
            rest,
            next_at,
            reason,
        };
    }

    fn down(&mut self, reason: String) {
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(5))
            .min(MAX_BACKOFF);
        self.failures += 1;
        tracing::info!(%reason, ?backoff, "relay unreachable");
        self.model.status.set(Status::Offline {
            reason,
            retry_secs: backoff.as_secs_f64(),
        });
        self.link = Link::Down {
            until: Instant::now() + backoff,
        };
    }

    fn stop(&mut self, reason: String) {
        self.model.status.set(Status::Stopped { reason });
        self.link = Link::Idle;
    }

    async fn on_timer(&mut self) {
        match std::mem::replace(&mut self.link, Link::Idle) {
            Link::Dialing {
                mut tries,
                rest,
                next_at,
                mut reason,
            } => {
                let now = Instant::now();
                tries.retain(|t| {
                    let waiting = t.deadline > now;
                    if !waiting {
                        reason = format!(
                            "no answer from {} within {} s",
                            t.addr,
                            DIAL_TIMEOUT.as_secs()
                        );
                    }
                    waiting
                });
                if tries.is_empty() || next_at.is_some_and(|at| at <= now) {
                    self.launch(tries, rest, reason).await;
                } else {
                    self.link = Link::Dialing {
                        tries,
                        rest,
                        next_at,
                        reason,
                    };
                }
            }
            Link::Down { .. } => self.attempt().await,
            Link::Up {
                relay,
                addr,
                transport,
                check: Some(_),
            } => {
                tracing::warn!(%relay, "the relay never joined our room; reconnecting");
                self.link = Link::Up {
                    relay,
                    addr,
                    transport,
                    check: None,
                };
                let _ = self.handle.disconnect(relay).await;
            }
            link => self.link = link,
        }
    }

    async fn on_action(&mut self, action: Action) {
        match action {
            Action::Send(text) => {
                let text = text.trim().to_owned();
                if text.is_empty() {
                    return;
                }
                match self.handle.send(self.room.clone(), text.clone()).await {
                    Ok(()) => {
                        let me = self.model.me.get_untracked();
                        let nick = self.model.nick.get_untracked();
                        self.model.push(
                            self.room.name(),
                            LineKind::Message {
                                from: me,
                                nick: (!nick.is_empty()).then_some(nick),
                                mine: true,
                                pending: true,
                                history: false,
                                id: String::new(),
                            },
                            page::clock(page_now()),
                            text,
                        );
                    }
                    Err(e) => self.notice(e.to_string()),
                }
            }
            Action::Nick(nick) => {
                let nick = nick.trim().to_owned();
                match self.handle.set_nick(nick.clone()).await {
                    Ok(()) => {
                        page::store(NICK_KEY, &nick);
                        self.model.nick.set(nick);
                    }
                    Err(e) => self.notice(e.to_string()),
                }
            }
            Action::Room(name) => match Room::new(name.trim()) {
                Ok(room) if room == self.room => {}
                Ok(room) => {
                    let old = std::mem::replace(&mut self.room, room.clone());
                    let _ = self.handle.leave(old).await;
                    if let Err(e) = self.handle.join(room.clone()).await {
                        self.notice(e.to_string());
                    }
                    page::set_query_param("room", room.name());
                    self.model.room.set(room.name().to_owned());
                    if let Link::Up { check, .. } = &mut self.link {
                        *check = Some(Instant::now() + ROOM_CHECK);
                    }
                }
                Err(e) => self.notice(e.to_string()),
            },
            Action::SendDm(peer, text) => match peer.parse::<PeerId>() {
                Ok(to) => match self.handle.send_dm(to, text.clone()).await {
                    Ok(()) => self.model.dm_sending(&peer, text, page::clock(page_now())),
                    Err(e) => self.notice(e.to_string()),
                },
                Err(_) => self.notice(format!("{peer} is not a peer id")),
            },
            Action::SendFile(file) => self.send_file(file.take()).await,
            Action::GetFile(sha256) => match sha256.parse::<FileHash>() {
                Ok(hash) => match self.handle.fetch_file(hash).await {
                    Ok(()) => self.model.set_file(
                        &sha256,
                        FileState::Fetching {
                            received: 0,
                            size: 0,
                        },
                    ),
                    Err(e) => self
                        .model
                        .set_file(&sha256, FileState::Failed(e.to_string())),
                },
                Err(e) => self.notice(e),
            },
            Action::ClearHistory => {
                if let Err(e) = self.handle.clear_history(self.room.clone()).await {
                    self.notice(e.to_string());
                }
                self.model.clear_messages(self.room.name());
                self.notice(format!(
                    "history of {} cleared in this browser",
                    self.room.name()
                ));
            }
            Action::Relay(text) => match text.trim().parse::<Multiaddr>() {
                Ok(addr) => {
                    self.params.relays = vec![addr];
                    self.other_relays.clear();
                    self.failures = 0;
                    if !matches!(self.link, Link::Up { .. }) {
                        self.attempt().await;
                    }
                }
                Err(e) => self.notice(format!("{:?} is not a multiaddr: {e}", text.trim())),
            },
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected {
                peer,
                addr,
                transport,
                outbound,
            } => {
                self.links
                    .entry(peer)
                    .or_default()
                    .push((transport, addr.clone()));
                self.show_links(peer);
                if transport == Transport::WebRtc {
                    self.direct_problem_peer = None;
                    self.model.direct_problem.set(None);
                }
                // A direct link (or its relayed signaling connection) is
                // never the relay link.
                let to_relay = !matches!(transport, Transport::WebRtc | Transport::Circuit);
                if !(outbound && to_relay) {
                    return;
                }
                match &self.link {
                    // A dial that lost the race (or was given up on)
                    // connected after all: one relay link is enough.
                    Link::Up {
                        relay, addr: up, ..
                    } => {
                        if (peer, &addr) != (*relay, up) {
                            tracing::info!(%peer, %addr, "a second link to a relay: closing it");
                            let _ = self.handle.close_connection(peer, addr).await;
                        }
                    }
                    _ => {
                        tracing::info!(%peer, %transport, "connected to the relay; joining the room");
                        crate::page::store_for_tab(LAST_TRANSPORT_KEY, transport.name());
                        self.failures = 0;
                        self.link = Link::Up {
                            relay: peer,
                            addr,
                            transport,
                            check: Some(Instant::now() + ROOM_CHECK),
                        };
                    }
                }
            }
            Event::Disconnected {
                peer,
                transport,
                remaining,
            } => {
                if let Some(links) = self.links.get_mut(&peer)
                    && let Some(i) = links.iter().position(|(t, _)| *t == transport)
                {
                    links.remove(i);
                }
                if remaining == 0 {
                    self.links.remove(&peer);
                }
                self.show_links(peer);
                if remaining == 0 && matches!(self.link, Link::Up { relay, .. } if relay == peer) {
                    self.failures = 0;
                    self.down("the relay went away".into());
                }
            }
            Event::DialFailed { addr, error, .. } => {
                // Only a dial in flight counts; a stale one failing later
                // must not disturb a link that is up or waiting.
                let Link::Dialing { tries, reason, .. } = &mut self.link else {
                    return;
                };
                let Some(i) = tries.iter().position(|t| Some(&t.addr) == addr.as_ref()) else {
                    return;
                };
                tries.remove(i);
                *reason = error;
                if tries.is_empty()
                    && let Link::Dialing {
                        tries,
                        rest,
                        reason,
                        ..
                    } = std::mem::replace(&mut self.link, Link::Idle)
                {
                    self.launch(tries, rest, reason).await;
                }
            }
            Event::Subscribed { room, peer } => {
                if let Link::Up {
                    relay,
                    transport,
                    check,
                    ..
                } = &mut self.link
                    && *relay == peer
                    && room == self.room
                    && check.take().is_some()
                {
                    self.model.status.set(Status::Connected {
                        transport: transport.to_string(),
                    });
                }
            }
            Event::DirectLinkFailed { peer, error } => {
                tracing::info!(%peer, %error, "no direct link");
                self.model.direct_failures.update(|n| *n += 1);
                self.direct_problem_peer = Some(peer);
                self.model.direct_problem.set(Some(format!(
                    "no direct link to {} ({error}); the relay carries the chat, trying again later",
                    short_id(&peer.to_string())
                )));
            }
            // A closed page is no problem of ours: the status forgets it.
            Event::DirectPeerGone { peer } if self.direct_problem_peer == Some(peer) => {
                self.direct_problem_peer = None;
                self.model.direct_problem.set(None);
            }
            Event::Ping { peer, rtt, .. } => self.model.peers.update(|peers| {
                if let Some(row) = peers.get_mut(&peer.to_string()) {
                    row.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                }
            }),
            Event::Message {
                room,
                from,
                nick,
                message,
                history,
            } => {
                let id = message.id.to_string();
                // A room joined again shows its history again: what is on
                // screen already (ours too: a sent line has its id) is not
                // repeated.
                if history && self.model.shows(room.name(), &id) {
                    return;
                }
                let mine = from.to_string() == self.model.me.get_untracked();
                self.model.push(
                    room.name(),
                    LineKind::Message {
                        from: from.to_string(),
                        nick,
                        mine,
                        pending: false,
                        history,
                        id,
                    },
                    page::clock(message.created_ms),
                    message.text,
                );
            }
            Event::Nick { room, from, nick } => {
                let peer = from.to_string();
                let before = self.model.nicks.with_untracked(|n| n.get(&peer).cloned());
                if before.as_deref() == Some(nick.as_str()) {
                    return;
                }
                self.model.nicks.update(|n| {
                    n.insert(peer.clone(), nick.clone());
                });
                let old = before.unwrap_or_else(|| short_id(&peer));
                self.model.push(
                    room.name(),
                    LineKind::Notice,
                    page::clock(page_now()),
                    format!("{old} is now known as {nick}"),
                );
            }
            Event::PeerJoined { room, peer } => self.model.members.update(|m| {
                m.entry(room.name().to_owned())
                    .or_default()
                    .insert(peer.to_string(), ());
            }),
            Event::PeerLeft { room, peer } => self.model.members.update(|m| {
                if let Some(members) = m.get_mut(room.name()) {
                    members.remove(&peer.to_string());
                }
            }),
            Event::DirectMessage {
                from,
                nick,
                message,
            } => {
                let from = from.to_string();
                if let Some(nick) = nick {
                    self.model.nicks.update(|n| {
                        n.entry(from.clone()).or_insert(nick);
                    });
                }
                self.model
                    .dm_received(&from, message.text, page::clock(message.created_ms));
            }
            Event::DmSent { to, .. } => self.model.dm_outcome(&to.to_string(), true),
            Event::FileOffered {
                room,
                from,
                nick,
                offer,
            } => self.show_offer(room.name(), from.to_string(), nick, &offer, false),
            Event::FileProgress {
                sha256,
                received,
                size,
            } => self
                .model
                .set_file(&sha256.to_string(), FileState::Fetching { received, size }),
            Event::FileSaved { sha256, saved, .. } => {
                let state = match web_sys::Url::create_object_url_with_blob(&saved) {
                    Ok(url) => FileState::Ready { url },
                    Err(e) => FileState::Failed(format!("cannot show it: {e:?}")),
                };
                self.model.set_file(&sha256.to_string(), state);
            }
            Event::FileFailed { sha256, error } => {
                self.model
                    .set_file(&sha256.to_string(), FileState::Failed(error));
            }
            Event::UcFileFailed { from, id, error } => self.notice(format!(
                "file {id} from {} not fetched: {error}",
                short_id(&from.to_string())
            )),
            Event::DmFailed { to, error, .. } => {
                let to = to.to_string();
                self.model.dm_outcome(&to, false);
                self.notice(format!(
                    "direct message to {} not delivered: {error}",
                    short_id(&to)
                ));
            }
            Event::Sent {
                topic,
                id: Some(id),
            } => {
                if let Some(room) = topic.strip_prefix(meshtalk_protocol::rooms::TOPIC_PREFIX) {
                    self.model.mark_sent(room, id.to_string());
                }
            }
            _ => {}
        }
    }

    /// Updates `peer`'s row of the peers table from its open connections:
    /// a direct link shows before a relayed one, so the row says
    /// `webrtc` as long as the pages are linked directly.
    fn show_links(&self, peer: PeerId) {
        let connections = self.links.get(&peer).map_or(0, Vec::len);
        let best = self.links.get(&peer).and_then(|links| {
            links
                .iter()
                .max_by_key(|(t, _)| match t {
                    Transport::WebRtc => 2,
                    Transport::Circuit => 0,
                    _ => 1,
                })
                .cloned()
        });
        let id = peer.to_string();
        self.model.peers.update(|peers| match best {
            Some((transport, addr)) => {
                let row = peers.entry(id.clone()).or_insert_with(|| PeerRow {
                    peer: id,
                    transport: String::new(),
                    addr: String::new(),
                    rtt_ms: None,
                    connections,
                });
                row.connections = connections;
                row.transport = transport.to_string();
                row.addr = addr.to_string();
            }
            None => {
                peers.remove(&id);
            }
        });
    }

    /// Offers a file picked on the page: hashes it (in chunks), hands it
    /// to the engine, shows it as ours.
    async fn send_file(&mut self, file: web_sys::File) {
        let name = file.name();
        let media_type = match file.type_() {
            t if t.is_empty() => files::media_type_of(&name).to_owned(),
            t => t,
        };
        let source = FileSource::blob(file.into());
        let offer = match files::describe(&source, &name, &media_type).await {
            Ok(offer) => offer,
            Err(e) => return self.notice(format!("{name} not sent: {e}")),
        };
        let url = source.object_url();
        if let Err(e) = self
            .handle
            .share_file(self.room.clone(), offer.clone(), source)
            .await
        {
            return self.notice(format!("{name} not sent: {e}"));
        }
        let me = self.model.me.get_untracked();
        let nick = self.model.nick.get_untracked();
        let room = self.room.name().to_owned();
        self.show_offer(&room, me, (!nick.is_empty()).then_some(nick), &offer, true);
        if let Some(url) = url {
            self.model
                .set_file(&offer.sha256.to_string(), FileState::Ready { url });
        }
    }

    /// A file card in the room's timeline.
    fn show_offer(
        &self,
        room: &str,
        from: String,
        nick: Option<String>,
        offer: &Offer,
        mine: bool,
    ) {
        let sha256 = offer.sha256.to_string();
        if !mine {
            self.model.set_file(&sha256, FileState::Offered);
        }
        self.model.push(
            room,
            LineKind::File(FileLine {
                sha256,
                size: offer.size,
                media_type: offer.media_type.clone(),
                image: offer.is_image(),
                from,
                nick,
                mine,
            }),
            page::clock(page_now()),
            offer.name.clone(),
        );
    }

    fn notice(&self, text: String) {
        self.model.push(
            self.room.name(),
            LineKind::Notice,
            page::clock(page_now()),
            text,
        );
    }
}

/// The origin relay's addresses and the other relays' it lists, or why not.
type RelayAddrs = Result<(Vec<Multiaddr>, Vec<Vec<Multiaddr>>), String>;

/// The relay addresses the page's origin serves at [`ADDRS_URL`].
async fn relay_addrs() -> RelayAddrs {
    #[derive(serde::Deserialize)]
    struct Relay {
        addrs: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Addrs {
        addrs: Vec<String>,
        /// Other relays of the network (absent from older relays).
        #[serde(default)]
        relays: Vec<Relay>,
    }
    let body = page::fetch_text(ADDRS_URL).await?;
    let parsed: Addrs = serde_json::from_str(&body)
        .map_err(|e| format!("{ADDRS_URL} is not a relay's address list: {e}"))?;
    let full = |addrs: &[String]| -> Vec<Multiaddr> {
        addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .filter(|a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::P2p(_))))
            .collect()
    };
    let others = parsed
        .relays
        .iter()
        .map(|r| full(&r.addrs))
        .filter(|a| !a.is_empty())
        .collect();
    Ok((full(&parsed.addrs), others))
}

#[allow(clippy::cast_possible_truncation)] // ms since 1970 fit i64
fn page_now() -> i64 {
    page::now_ms() as i64
}
