//! The chat engine: one event loop that owns the swarm. Binaries send it
//! [`Command`]s through an [`EngineHandle`] and read [`Event`]s; none of them
//! runs a loop of its own over the swarm.
//!
//! The loop is executor-agnostic (futures channels and timers), so the same
//! code runs on tokio in native peers and on the browser's event loop.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    channel::{mpsc, oneshot},
    select,
    stream::{self, BoxStream, Fuse, FusedStream},
};
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::{ConnectedPoint, transport::ListenerId},
    gossipsub::{self, IdentTopic, MessageAcceptance, PublishError, TopicHash},
    identify, kad,
    swarm::{ConnectionId, DialError, SwarmEvent},
};
use web_time::Instant;

use crate::{
    arch,
    arch::files::{FileSource, Saved},
    behaviour::{
        Behaviour, BehaviourEvent, Boxed, GossipEvent, KAD_PROTOCOL, RELAY_APP_SCORE, Role,
        is_relay_agent, relay_addrs, room_score_params,
    },
    clock,
    discovery::{Cadence, Discovery, Neighbours, Source},
    dm::Dms,
    files::{FileHash, Files, Offer},
    history::{
        SignedMessage, Tap,
        store::{Journal, Store},
        sync::{HistorySync, RoomSizes},
    },
    peer_record,
    ping::{PingEvent, Pinger},
    rooms::{Members, Room},
    transport::Transport,
    uc,
    validate::{self, Rejection},
    wire::{self, ChatMessage, MessageId, Payload},
};

mod direct;
mod dm;
mod files;
mod guard;
mod history;
mod neighbourhood;

pub use dm::DM_DEADLINE;
pub use files::FileConfig;
pub use guard::PublishLimit;
pub use history::HistoryConfig;

/// How often held messages are retried and deadlines checked.
const TICK: Duration = Duration::from_millis(200);
/// After the last message is handed to gossipsub at shutdown, how long the
/// swarm keeps running so it reaches the wire.
const LINGER: Duration = Duration::from_millis(700);
/// Shortest gap between two nickname announcements in one room: a burst of
/// newcomers costs one announcement.
const NICK_ANNOUNCE_GAP: Duration = Duration::from_secs(2);
/// Rooms where we know at most this many members answer each newcomer
/// with a nickname announcement (at most one per [`NICK_ANNOUNCE_GAP`]).
/// Every announcement reaches every member, so in a larger room answers
/// would cost members² deliveries as it fills up, and keep its relays busy
/// for minutes: there a member announces itself again only before it next
/// speaks, so its name still comes before its words.
pub const ANSWER_NEWCOMERS_UP_TO: usize = 50;
/// Most topics a relay follows on its peers' behalf.
const MAX_FOLLOWED_TOPICS: usize = 4096;
/// Most members tracked per room: beyond it the one heard from least
/// recently is forgotten (a flood of fresh identities cannot grow memory).
const MAX_MEMBERS: usize = 4096;
/// Most nicknames kept; beyond it those of peers in none of our rooms go.
const MAX_NICKS: usize = 2 * MAX_MEMBERS;
/// Ticks between two rounds of neighbour management (one second).
const NEIGHBOUR_TICKS: u32 = 5;
/// Wait before asking a relay for a reservation again after one failed;
/// it doubles with each failure in a row (a relay at its limits is not
/// asked again every few seconds by each of its peers), up to
/// [`RESERVE_RETRY_MAX`].
const RESERVE_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between reservation attempts.
const RESERVE_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// Wait before the first random walk, once connected.
const FIRST_WALK: Duration = Duration::from_secs(2);

/// Settings of an [`Engine`].
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// Rooms to join at start.
    pub rooms: Vec<Room>,
    /// Nickname to announce in every room.
    pub nick: Option<String>,
    /// Addresses others can reach us at (public deployments).
    pub external_addrs: Vec<Multiaddr>,
    /// How often to ping each connected peer; `None` for the default (5 s).
    pub ping_interval: Option<Duration>,
    /// Where to find peers and how many connections to keep.
    pub discovery: Discovery,
    /// What room history to keep and whether to ask for it.
    pub history: HistoryConfig,
    /// How long a direct message is tried before it is reported as
    /// failed; `None` for [`DM_DEADLINE`].
    pub dm_deadline: Option<Duration>,
    /// Largest file fetched, and where fetched files go.
    pub files: FileConfig,
    /// Universal-connectivity compatibility ([`crate::uc`]): chat on its
    /// topic (shown as the room [`crate::uc::room`]) and direct messages
    /// with its protocol. Rooms of our own may be joined as well.
    pub uc: bool,
    /// A publish rate limit per author on the messages this node forwards
    /// (relays); `None` forwards every valid message.
    pub publish_limit: Option<PublishLimit>,
}

/// How often refused messages from one peer are logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peers whose last logged refusal is remembered.
const MAX_REFUSALS_LOGGED: usize = 1024;

/// Ping interval when the config names none.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// A command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The text breaks the limits every peer enforces.
    #[error("message not sent: {0}")]
    Invalid(#[from] Rejection),
    /// The engine has stopped.
    #[error("the chat engine has stopped")]
    Stopped,
    /// A dial could not start.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A listener could not start.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A direct message could not be queued.
    #[error("direct message not sent: {0}")]
    Dm(String),
    /// A file could not be shared or fetched.
    #[error("{0}")]
    File(String),
    /// Gossipsub refused to publish (too large, for instance).
    #[error("message not published: {0}")]
    Publish(String),
    /// A topic could not be subscribed to.
    #[error("cannot subscribe to {topic}: {reason}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// What the engine reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// Listening on this full address (with `/p2p/`, and `/certhash/` for
    /// WebRTC-direct).
    Listening(Multiaddr),
    /// A connection opened.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: Multiaddr,
        /// The transport.
        transport: Transport,
        /// Whether we dialed.
        outbound: bool,
    },
    /// A connection closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// The transport of the closed connection.
        transport: Transport,
        /// Connections still open with the peer.
        remaining: u32,
    },
    /// A dial asked for with [`EngineHandle::dial`] failed.
    DialFailed {
        /// The peer, when known.
        peer: Option<PeerId>,
        /// The address dialed, when one was given.
        addr: Option<Multiaddr>,
        /// What went wrong, for a person.
        error: String,
    },
    /// A member showed up in a room: the first valid message (usually its
    /// join announcement) signed by that peer.
    PeerJoined {
        /// The room.
        room: Room,
        /// The member.
        peer: PeerId,
    },
    /// A member we are directly connected to left a room (members reached
    /// only through a relay cannot be seen leaving).
    PeerLeft {
        /// The room.
        room: Room,
        /// The member.
        peer: PeerId,
    },
    /// A neighbour (a member or a relay) subscribed to one of our rooms:
    /// what we publish there now reaches it.
    Subscribed {
        /// The room.
        room: Room,
        /// The neighbour.
        peer: PeerId,
    },
    /// A chat message arrived and passed validation.
    Message {
        /// The room.
        room: Room,
        /// The author (the message's signed source).
        from: PeerId,
        /// The author's nickname, when known.
        nick: Option<String>,
        /// The message.
        message: ChatMessage,
        /// Whether it was said before we joined the room (by its author's
        /// clock): kept history, or history a peer served. A line said
        /// after we joined is live even when a history answer brings it
        /// before gossipsub does.
        history: bool,
    },
    /// A peer sent us a direct message.
    DirectMessage {
        /// The author (the connection's authenticated peer).
        from: PeerId,
        /// The nickname it gave, or the one we know.
        nick: Option<String>,
        /// The message.
        message: ChatMessage,
    },
    /// Our direct message reached its peer, which acknowledged it.
    DmSent {
        /// The peer.
        to: PeerId,
        /// The message's id.
        id: MessageId,
    },
    /// Our direct message could not be delivered within [`DM_DEADLINE`].
    DmFailed {
        /// The peer.
        to: PeerId,
        /// The message's id.
        id: MessageId,
        /// The last reason it did not get through.
        error: String,
    },
    /// A peer answered our request for a room's history.
    HistoryFetched {
        /// The room.
        room: Room,
        /// The peer that answered.
        peer: PeerId,
        /// Lines new to us in its answer (shown as [`Event::Message`]s).
        lines: usize,
    },
    /// A peer served history records that are not what their authors
    /// signed; they were dropped, and the peer is asked no more.
    HistoryRejected {
        /// The room.
        room: Room,
        /// The peer that served them.
        peer: PeerId,
        /// How many records were dropped.
        records: usize,
    },
    /// A peer set its nickname (empty: cleared).
    Nick {
        /// The room it was announced in.
        room: Room,
        /// The peer.
        from: PeerId,
        /// The nickname.
        nick: String,
    },
    /// A message on a raw (non-room) topic we subscribed to.
    Raw {
        /// The topic.
        topic: String,
        /// The signed source.
        from: Option<PeerId>,
        /// The bytes as published.
        data: Vec<u8>,
    },
    /// A connected peer speaks none of our pubsub protocols (another
    /// implementation with other versions): no room message reaches it.
    PubsubUnsupported {
        /// The peer.
        peer: PeerId,
    },
    /// A peer's gossipsub score fell below the graylist threshold and the
    /// relay closed its connections.
    Graylisted {
        /// The peer.
        peer: PeerId,
        /// Its score.
        score: f64,
    },
    /// A received message failed validation and was dropped.
    Rejected {
        /// The neighbour that forwarded it (its score was lowered, unless
        /// the message was only over its author's rate limit).
        via: PeerId,
        /// The claimed author.
        source: Option<PeerId>,
        /// Why.
        reason: Rejection,
    },
    /// Messages are waiting for a peer in their topic.
    Held {
        /// The topic.
        topic: String,
        /// How many wait.
        pending: usize,
    },
    /// Our neighbours' queues are full: messages to `topic` wait until
    /// they drain (said once until they take messages again; nothing is
    /// dropped).
    Slowed {
        /// The topic.
        topic: String,
    },
    /// Our message was handed to gossipsub.
    Sent {
        /// The topic.
        topic: String,
        /// The chat message id, for room messages.
        id: Option<MessageId>,
    },
    /// A ping round trip.
    Ping {
        /// The peer.
        peer: PeerId,
        /// Round-trip time.
        rtt: Duration,
        /// The transport of the pinged connection.
        transport: Transport,
        /// The peer's address on it.
        addr: Multiaddr,
    },
    /// Identify told us about a peer.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version.
        agent: String,
        /// Its listen addresses.
        listen_addrs: Vec<Multiaddr>,
    },
    /// The Kademlia routing table changed.
    Routing {
        /// The peer added or updated.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Whether it was newly added.
        new: bool,
    },
    /// A Kademlia bootstrap step finished.
    Bootstrapped {
        /// Buckets still to refresh.
        remaining: u32,
    },
    /// A discovery source named a peer (first time per source).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// The source.
        source: Source,
        /// Its addresses, as far as known.
        addrs: Vec<Multiaddr>,
    },
    /// A provider lookup asked for with [`EngineHandle::find_providers`]
    /// finished.
    Providers {
        /// The room.
        room: Room,
        /// The members announced in the DHT, with their addresses.
        providers: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    /// A direct (`/webrtc`) link to a room member could not be made; the
    /// chat with it goes on through the relay, and the neighbour manager
    /// tries again later, waiting longer after each failure.
    DirectLinkFailed {
        /// The member.
        peer: PeerId,
        /// What went wrong, for a person.
        error: String,
    },
    /// A room member that announced a direct address stopped announcing
    /// it (the page was closed or lost its relay): no more direct dials
    /// to it, and what was said about failed links to it no longer holds.
    DirectPeerGone {
        /// The member.
        peer: PeerId,
    },
    /// The neighbour manager dropped a connection above the high watermark.
    Pruned {
        /// The peer.
        peer: PeerId,
    },
    /// A peer lookup finished.
    PeerLookup {
        /// The peer looked for.
        peer: PeerId,
        /// Its addresses, empty when not found.
        addrs: Vec<Multiaddr>,
    },
    /// A file was offered in one of our rooms (once per file; others
    /// offering it later become holders silently).
    FileOffered {
        /// The room.
        room: Room,
        /// Who offered it first.
        from: PeerId,
        /// Its nickname, when known.
        nick: Option<String>,
        /// The file.
        offer: Offer,
    },
    /// More of a file we fetch arrived.
    FileProgress {
        /// The file.
        sha256: FileHash,
        /// Bytes received so far.
        received: u64,
        /// Its size.
        size: u64,
    },
    /// A file we fetched arrived whole and matched its hash; we now serve
    /// it and offer it too.
    FileSaved {
        /// The file.
        sha256: FileHash,
        /// Its (sanitised) name.
        name: String,
        /// Where it is: a path natively, a `Blob` in a browser.
        saved: Saved,
    },
    /// A file could not be fetched (nobody answered, or its bytes did not
    /// match its hash: nothing is kept).
    FileFailed {
        /// The file.
        sha256: FileHash,
        /// Why, for a person.
        error: String,
    },
    /// A file a universal-connectivity peer announced was not fetched
    /// (with `--compat uc`; one that arrives is [`Event::FileOffered`] then
    /// [`Event::FileSaved`]).
    UcFileFailed {
        /// Who announced it.
        from: PeerId,
        /// Its id, as announced.
        id: String,
        /// Why, for a person.
        error: String,
    },
}

enum Command {
    Dial(Multiaddr),
    Disconnect(PeerId),
    CloseConnection(PeerId, Multiaddr),
    Listen(Multiaddr),
    Join(Room),
    Leave(Room),
    Send(Room, String),
    SendDm(PeerId, String),
    ShareFile(Room, Offer, FileSource),
    FetchFile(FileHash),
    SetNick(String),
    ClearHistory(Room),
    LoadHistory(Vec<SignedMessage>, Box<dyn Journal>),
    PublishRaw(String, Vec<u8>),
    SubscribeRaw(String),
    FindPeer(PeerId),
    FindProviders(Room),
    Bootstrap,
    Shutdown,
}

type Request = (Command, oneshot::Sender<Result<(), CommandError>>);

/// Sends commands to a running [`Engine`]. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Request>,
    streams: libp2p_stream::Control,
    tap: Tap,
}

impl EngineHandle {
    /// Opens and accepts streams of protocols of your own on the engine's
    /// swarm (libp2p's "custom protocol"): `accept` a protocol to serve
    /// it, `open_stream` to a peer to use it. The engine dials the peer if
    /// it is not connected.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// Pubsub message copies this peer has received, duplicates included
    /// (see [`Tap::copies_received`]).
    pub fn pubsub_copies_received(&self) -> u64 {
        self.tap.copies_received()
    }

    async fn call(&self, command: Command) -> Result<(), CommandError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .unbounded_send((command, reply))
            .map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }

    /// Dials an address; the outcome arrives as [`Event::Connected`] or
    /// [`Event::DialFailed`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), CommandError> {
        self.call(Command::Dial(addr)).await
    }

    /// Listens on an address.
    pub async fn listen(&self, addr: Multiaddr) -> Result<(), CommandError> {
        self.call(Command::Listen(addr)).await
    }

    /// Closes every connection with a peer.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), CommandError> {
        self.call(Command::Disconnect(peer)).await
    }

    /// Closes the connections with a peer at one address (as
    /// [`Event::Connected`] gave it), keeping the others: the loser of two
    /// dials raced to one relay.
    pub async fn close_connection(
        &self,
        peer: PeerId,
        addr: Multiaddr,
    ) -> Result<(), CommandError> {
        self.call(Command::CloseConnection(peer, addr)).await
    }

    /// Joins a room (and announces our nickname there).
    pub async fn join(&self, room: Room) -> Result<(), CommandError> {
        self.call(Command::Join(room)).await
    }

    /// Leaves a room.
    pub async fn leave(&self, room: Room) -> Result<(), CommandError> {
        self.call(Command::Leave(room)).await
    }

    /// Sends a chat line to a room. It is held, not dropped, while the room
    /// has no other peer.
    pub async fn send(&self, room: Room, text: impl Into<String>) -> Result<(), CommandError> {
        self.call(Command::Send(room, text.into())).await
    }

    /// Sets our nickname and announces it in every room we are in.
    pub async fn set_nick(&self, nick: impl Into<String>) -> Result<(), CommandError> {
        self.call(Command::SetNick(nick.into())).await
    }

    /// Sends a direct message to one peer: [`Event::DmSent`] when it
    /// acknowledges it, [`Event::DmFailed`] if it cannot be reached within
    /// [`DM_DEADLINE`] (tried again meanwhile).
    pub async fn send_dm(&self, to: PeerId, text: impl Into<String>) -> Result<(), CommandError> {
        self.call(Command::SendDm(to, text.into())).await
    }

    /// Offers a file in `room` (described with [`crate::files::describe`])
    /// and serves it while we run.
    pub async fn share_file(
        &self,
        room: Room,
        offer: Offer,
        source: FileSource,
    ) -> Result<(), CommandError> {
        self.call(Command::ShareFile(room, offer, source)).await
    }

    /// Fetches a file offered in one of our rooms: [`Event::FileProgress`]
    /// on the way, then [`Event::FileSaved`] or [`Event::FileFailed`].
    pub async fn fetch_file(&self, sha256: FileHash) -> Result<(), CommandError> {
        self.call(Command::FetchFile(sha256)).await
    }

    /// Forgets what we keep of a room's history (here, and in the journal
    /// that saves it); peers still hold theirs.
    pub async fn clear_history(&self, room: Room) -> Result<(), CommandError> {
        self.call(Command::ClearHistory(room)).await
    }

    /// Loads saved history into a running engine, as
    /// [`Engine::load_history`] does before it runs: a page reads its
    /// IndexedDB while it connects instead of before. What the engine
    /// heard meanwhile is kept and written to `journal` too, and the rooms
    /// we are in show the loaded lines as history.
    pub async fn load_history(
        &self,
        saved: Vec<SignedMessage>,
        journal: Box<dyn Journal>,
    ) -> Result<(), CommandError> {
        self.call(Command::LoadHistory(saved, journal)).await
    }

    /// Publishes bytes as they are to any topic. Returns once gossipsub
    /// has taken them: while the topic has no peer, or every neighbour's
    /// queue is full, it waits, so input goes at the pace of the network
    /// (back-pressure) and nothing is dropped.
    pub async fn publish_raw(
        &self,
        topic: impl Into<String>,
        data: Vec<u8>,
    ) -> Result<(), CommandError> {
        self.call(Command::PublishRaw(topic.into(), data)).await
    }

    /// Subscribes to any topic; its messages arrive as [`Event::Raw`].
    pub async fn subscribe_raw(&self, topic: impl Into<String>) -> Result<(), CommandError> {
        self.call(Command::SubscribeRaw(topic.into())).await
    }

    /// Looks a peer up in the DHT; the answer is [`Event::PeerLookup`].
    pub async fn find_peer(&self, peer: PeerId) -> Result<(), CommandError> {
        self.call(Command::FindPeer(peer)).await
    }

    /// Looks up the members of a room announced in the DHT; the answer is
    /// [`Event::Providers`].
    pub async fn find_providers(&self, room: Room) -> Result<(), CommandError> {
        self.call(Command::FindProviders(room)).await
    }

    /// Starts a Kademlia bootstrap.
    pub async fn bootstrap(&self) -> Result<(), CommandError> {
        self.call(Command::Bootstrap).await
    }

    /// Stops the engine once every held message has been sent. Resolves
    /// when the request is taken; the engine's `run` future ends after.
    pub async fn shutdown(&self) -> Result<(), CommandError> {
        self.call(Command::Shutdown).await
    }
}

/// Something we published or will publish.
struct Outgoing {
    topic: TopicHash,
    data: Vec<u8>,
    id: Option<MessageId>,
    /// A nickname announcement, not something a person typed.
    announce: bool,
    /// Told once gossipsub has taken it (`publish_raw` waits for this:
    /// input slows down to what the network takes instead of piling up).
    ack: Option<oneshot::Sender<Result<(), CommandError>>>,
}

/// Hook that sees every swarm event (metrics recording, for instance).
pub type Observer = Box<dyn FnMut(&SwarmEvent<BehaviourEvent>) + Send>;

/// The chat engine. Build the swarm with [`crate::arch::build_swarm`], then
/// [`Engine::new`], then drive [`Engine::run`] on the executor at hand.
pub struct Engine {
    swarm: Swarm<Boxed<Behaviour>>,
    role: Role,
    commands: mpsc::UnboundedReceiver<Request>,
    events: mpsc::UnboundedSender<Event>,
    observer: Option<Observer>,
    start: Option<EngineConfig>,
    /// The per-author publish rate limit, when configured.
    limiter: Option<guard::RateLimiter>,
    /// Peers refused until then (graylisted; oldest first).
    blocked: VecDeque<(Instant, PeerId)>,
    /// When each neighbour last sent us a message we rejected (relays).
    offenders: HashMap<PeerId, Instant>,
    rooms: HashMap<TopicHash, Room>,
    raw_topics: HashSet<TopicHash>,
    outbox: VecDeque<Outgoing>,
    /// Topics whose messages wait for full queues to drain.
    slowed: HashSet<TopicHash>,
    nick: Option<String>,
    nicks: HashMap<PeerId, String>,
    /// Authors who said they go without a name (an empty `UpdatePeer`):
    /// their lines are no reason to ask a relay for names.
    nameless: HashSet<PeerId>,
    members: Members,
    last_announce: HashMap<TopicHash, Instant>,
    announce_due: HashMap<TopicHash, Instant>,
    /// Large rooms with members who joined since our last announcement:
    /// we announce ourselves before we next speak there.
    announce_owed: HashSet<TopicHash>,
    /// Rooms we joined and have not announced ourselves in yet, waiting to
    /// learn from history answers whether they are large, each with the
    /// time we announce ourselves anyway.
    announce_deferred: HashMap<TopicHash, Instant>,
    /// The largest room size a history answer gave us, by room (members
    /// of a large room who stay silent are not heard of otherwise).
    room_size_heard: HashMap<TopicHash, u32>,
    /// A relay's count of the peers in each room, served in its history
    /// answers.
    room_sizes: RoomSizes,
    /// When we last asked a relay for the names of a room's speakers.
    names_asked: HashMap<TopicHash, Instant>,
    connections: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Direct (`/webrtc`) connections: the peer, and whether we dialed.
    direct: HashMap<ConnectionId, (PeerId, bool)>,
    pinger: Pinger,
    lookups: HashMap<kad::QueryId, PeerId>,
    /// The sockets we opened only to dial from (native WebRTC-direct).
    dial_listeners: HashMap<Multiaddr, ListenerId>,
    shutdown: Option<Option<Instant>>,
    discovery: Discovery,
    neighbours: Neighbours,
    /// Our own dials in flight, with the address dialed when there was one.
    dialing: HashMap<ConnectionId, Option<Multiaddr>>,
    /// Dials asked for by a command: their failures are reported.
    commanded: HashSet<ConnectionId>,
    walks: HashSet<kad::QueryId>,
    /// When the next random walk runs (set by the first link).
    walk_cadence: Option<Cadence>,
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    /// When each room's members are looked up next.
    lookup_cadence: HashMap<TopicHash, Cadence>,
    /// The relay holding our reservation, and the listener for it.
    reservation: Option<(PeerId, ListenerId)>,
    next_reserve: Instant,
    /// Reservations refused or lost in a row.
    reserve_failures: u32,
    /// External addresses were configured (else a relay's listen
    /// addresses are taken as external).
    configured_external: bool,
    ticks: u32,
    /// Our key, for the peer records pages publish.
    public_key: Option<libp2p::identity::PublicKey>,
    /// Where other pages reach us directly (`…/p2p-circuit/webrtc/p2p/ME`).
    webrtc_addrs: Vec<Multiaddr>,
    /// When our peer record is next published.
    record_due: Instant,
    /// `created` of the last line we sent.
    last_created: i64,
    /// Room history, shared with the tasks that serve it.
    history: Arc<Mutex<Store>>,
    history_config: HistoryConfig,
    history_sync: HistorySync,
    /// Peers asked for each room's history since they connected.
    history_asked: history::Asked,
    /// Live lines held while their room's history is on the way.
    held_live: HashMap<TopicHash, history::HeldLive>,
    /// When we joined each room (ms since the epoch): a line a history
    /// answer brings that was said later is live, not history.
    joined_ms: HashMap<TopicHash, i64>,
    /// Pages of history taken from a peer, per room.
    history_pages: HashMap<(PeerId, TopicHash), u32>,
    /// Direct messages: the streams, and ours not yet acknowledged.
    dms: Dms,
    pending_dms: dm::PendingDms,
    dm_deadline: Duration,
    /// Files: the streams, the offers seen, what we fetch.
    files: Files,
    offers: files::Offers,
    fetching: HashSet<FileHash>,
    file_config: FileConfig,
    /// Peers that served forged history.
    distrusted: HashSet<PeerId>,
    /// When a refused message from each peer was last logged.
    refusals_logged: HashMap<PeerId, Instant>,
    /// Universal-connectivity compatibility (see [`EngineConfig::uc`]).
    uc: bool,
    /// When each page's peer record last arrived (pages only).
    records_seen: HashMap<PeerId, Instant>,
    /// Relayed connections, by peer.
    relayed: HashMap<ConnectionId, PeerId>,
    /// Relayed connections to close once their direct link has settled.
    close_at: Vec<(Instant, ConnectionId)>,
}

/// A provider lookup in flight.
pub(crate) struct ProviderQuery {
    room: Room,
    /// Asked for by a command: report the result as an event.
    asked: bool,
    found: Vec<(PeerId, Vec<Multiaddr>)>,
    /// It named a member we did not know.
    found_new: bool,
}

impl Engine {
    /// Wraps a swarm. Returns the engine, a handle for commands and the
    /// stream of events.
    pub fn new(
        swarm: Swarm<Boxed<Behaviour>>,
        role: Role,
        config: EngineConfig,
    ) -> (Self, EngineHandle, mpsc::UnboundedReceiver<Event>) {
        let (tx, commands) = mpsc::unbounded();
        let pinger = Pinger::new(
            swarm.behaviour().streams.new_control(),
            config.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL),
        );
        let (events, events_rx) = mpsc::unbounded();
        let neighbours = Neighbours::new(
            *swarm.local_peer_id(),
            role == Role::Relay,
            &config.discovery,
        );
        let discovery = config.discovery.clone();
        let swarm_peer = *swarm.local_peer_id();
        let history = Arc::new(Mutex::new(Store::new(config.history.limits)));
        let room_sizes = RoomSizes::default();
        let history_config = config.history;
        let dm_deadline = config.dm_deadline;
        let uc = config.uc;
        let limiter = config.publish_limit.map(guard::RateLimiter::new);
        let swarm_streams = swarm.behaviour().streams.new_control();
        let dm_streams = swarm.behaviour().streams.new_control();
        let file_streams = swarm.behaviour().streams.new_control();
        let file_config = config.files.clone();
        let engine = Self {
            swarm,
            role,
            commands,
            events,
            observer: None,
            limiter,
            blocked: VecDeque::new(),
            offenders: HashMap::new(),
            nick: config.nick.clone(),
            start: Some(config),
            rooms: HashMap::new(),
            raw_topics: HashSet::new(),
            outbox: VecDeque::new(),
            slowed: HashSet::new(),
            nicks: HashMap::new(),
            nameless: HashSet::new(),
            members: Members::new(MAX_MEMBERS),
            last_announce: HashMap::new(),
            announce_due: HashMap::new(),
            announce_owed: HashSet::new(),
            announce_deferred: HashMap::new(),
            room_size_heard: HashMap::new(),
            room_sizes: room_sizes.clone(),
            names_asked: HashMap::new(),
            connections: HashMap::new(),
            direct: HashMap::new(),
            pinger,
            lookups: HashMap::new(),
            dial_listeners: HashMap::new(),
            shutdown: None,
            discovery,
            neighbours,
            dialing: HashMap::new(),
            commanded: HashSet::new(),
            walks: HashSet::new(),
            walk_cadence: None,
            provider_queries: HashMap::new(),
            lookup_cadence: HashMap::new(),
            reservation: None,
            next_reserve: clock::now(),
            reserve_failures: 0,
            configured_external: false,
            ticks: 0,
            public_key: peer_record::public_key_of(swarm_peer),
            webrtc_addrs: Vec::new(),
            record_due: clock::now(),
            records_seen: HashMap::new(),
            history_sync: HistorySync::new(swarm_streams, history.clone(), room_sizes),
            history,
            history_config,
            last_created: 0,
            history_asked: HashMap::new(),
            history_pages: HashMap::new(),
            held_live: HashMap::new(),
            joined_ms: HashMap::new(),
            distrusted: HashSet::new(),
            refusals_logged: HashMap::new(),
            uc,
            dms: Dms::new(dm_streams),
            pending_dms: HashMap::new(),
            dm_deadline: dm_deadline.unwrap_or(DM_DEADLINE),
            files: Files::new(file_streams),
            offers: files::Offers::default(),
            fetching: HashSet::new(),
            file_config,
            relayed: HashMap::new(),
            close_at: Vec::new(),
        };
        let streams = engine.swarm.behaviour().streams.new_control();
        let tap = engine.swarm.behaviour().gossipsub.tap().clone();
        (engine, EngineHandle { tx, streams, tap }, events_rx)
    }

    /// Lets `observer` see every swarm event before the engine handles it.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs until shut down (or every handle is dropped) and every held
    /// message has been sent.
    pub async fn run(mut self) {
        if let Err(e) = self.apply_start() {
            tracing::error!(error = %e, "start-up failed");
            return;
        }
        let mut ticks: Fuse<BoxStream<'static, ()>> = stream::unfold((), |()| async {
            clock::sleep(TICK).await;
            Some(((), ()))
        })
        .boxed()
        .fuse();
        loop {
            select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                ping = self.pinger.next().fuse() => match ping {
                    PingEvent::Pong(peer, rtt) => self.on_ping(peer, rtt),
                    PingEvent::Unanswered(peer) => {
                        // Dead peers can keep a connection "open" for long
                        // (WebRTC notices after ~30 s): close it now.
                        tracing::info!(%peer, "pings unanswered; closing the connection");
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                },
                event = self.history_sync.next().fuse() => self.on_history(event),
                event = self.dms.next().fuse() => self.on_dm(event),
                event = self.files.next().fuse() => self.on_file(event),
                request = self.commands.next() => match request {
                    Some((Command::PublishRaw(topic, data), reply)) => {
                        // Answered once published (see `Outgoing::ack`).
                        self.queue(Outgoing {
                            topic: IdentTopic::new(topic).hash(),
                            data,
                            id: None,
                            announce: false,
                            ack: Some(reply),
                        });
                    }
                    Some((command, reply)) => {
                        let _ = reply.send(self.on_command(command));
                    }
                    None => self.begin_shutdown(),
                },
                _ = ticks.next() => {
                    self.ticks = self.ticks.wrapping_add(1);
                    if self.ticks.is_multiple_of(NEIGHBOUR_TICKS) {
                        self.manage_neighbours();
                        self.count_room_members();
                        self.redial_holders();
                    }
                    self.close_graylisted();
                    self.announce_due_nicks();
                    self.reoffer_due();
                    self.announce_record();
                    self.forget_silent_members();
                    self.release_late_live();
                    self.announce_deferred_due();
                    self.retry_dms();
                    self.close_due_relayed();
                    self.flush();
                    if self.shutdown_complete() {
                        break;
                    }
                }
            }
            // Once the command channel is closed `next` would return None
            // forever; stop polling it.
            if self.commands.is_terminated() && self.shutdown.is_none() {
                self.begin_shutdown();
            }
        }
        tracing::debug!("engine stopped");
    }

    fn apply_start(&mut self) -> Result<(), CommandError> {
        let Some(config) = self.start.take() else {
            return Ok(());
        };
        self.configured_external = !config.external_addrs.is_empty();
        for addr in config.external_addrs {
            self.swarm.add_external_address(addr);
        }
        for room in config.rooms {
            self.on_command(Command::Join(room))?;
        }
        if self.uc {
            self.on_command(Command::SubscribeRaw(uc::CHAT_TOPIC.to_owned()))?;
            self.subscribe(&uc::file_topic())?;
            self.peers_topic(&uc::room(), true);
        }
        self.listen_direct();
        Ok(())
    }

    fn emit(&self, event: Event) {
        // A consumer that went away does not stop the node (a relay may run
        // without reading events).
        let _ = self.events.unbounded_send(event);
    }

    fn on_command(&mut self, command: Command) -> Result<(), CommandError> {
        match command {
            Command::Dial(addr) => {
                self.neighbours.dialing_addr(&addr, clock::now());
                let id = self.dial_addr(addr)?;
                self.commanded.insert(id);
            }
            Command::Listen(addr) => {
                self.swarm.listen_on(addr.clone()).map_err(|e| {
                    let mut reason = error_chain(&e);
                    if reason.is_empty() {
                        // Some transports (WebRTC) give an error with no text.
                        reason = "the transport refused it (is the port in use?)".into();
                    }
                    CommandError::Listen { addr, reason }
                })?;
            }
            Command::Join(room) => self.join(room)?,
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::CloseConnection(peer, addr) => {
                let ids: Vec<ConnectionId> = self
                    .connections
                    .iter()
                    .filter(|(_, (p, a))| *p == peer && *a == addr)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.swarm.close_connection(id);
                }
            }
            Command::Leave(room) => {
                self.peers_topic(&room, false);
                self.files_topic(&room, false);
                let topic = room.topic();
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                self.rooms.remove(&topic.hash());
                self.joined_ms.remove(&topic.hash());
                self.members.forget_room(&topic.hash());
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&room.provider_key());
                self.neighbours.left_room(&topic.hash());
                self.lookup_cadence.remove(&topic.hash());
                self.last_announce.remove(&topic.hash());
                self.announce_due.remove(&topic.hash());
                self.announce_owed.remove(&topic.hash());
                self.announce_deferred.remove(&topic.hash());
                self.room_size_heard.remove(&topic.hash());
                self.names_asked.remove(&topic.hash());
            }
            Command::Send(room, text) => {
                let mut message = ChatMessage::new(text);
                // Lines sent within one millisecond still sort in the
                // order they were typed (history orders by `created`).
                message.created_ms = message.created_ms.max(self.last_created + 1);
                self.last_created = message.created_ms;
                let payload = Payload::Message(message.clone());
                validate::check(&payload, message.created_ms)?;
                if self.uc && room == uc::room() {
                    // Universal-connectivity's chat: the text, as it is.
                    self.queue(Outgoing {
                        topic: IdentTopic::new(uc::CHAT_TOPIC).hash(),
                        data: message.text.into_bytes(),
                        id: Some(message.id),
                        announce: false,
                        ack: None,
                    });
                    return Ok(());
                }
                let topic = room.topic().hash();
                if !self.rooms.contains_key(&topic) {
                    self.join(room.clone())?;
                }
                // Newcomers who have not heard our name yet hear it first.
                if self.announce_owed.contains(&topic)
                    || self.announce_due.contains_key(&topic)
                    || self.announce_deferred.contains_key(&topic)
                {
                    self.announce_nick(topic.clone());
                }
                self.queue(Outgoing {
                    topic,
                    data: wire::encode(&payload),
                    id: Some(message.id),
                    announce: false,
                    ack: None,
                });
            }
            Command::SendDm(to, text) => self.send_dm(to, text)?,
            Command::ShareFile(room, offer, source) if self.uc && room == uc::room() => {
                self.share_uc_file(offer, source)?;
            }
            Command::ShareFile(room, offer, source) => {
                if !self.rooms.contains_key(&room.topic().hash()) {
                    return Err(CommandError::File(format!("not in room {room}")));
                }
                self.share_file(room, offer, source);
            }
            Command::FetchFile(sha256) => self.fetch_file(sha256)?,
            Command::ClearHistory(room) => self.lock_history().clear(&room.topic().hash()),
            Command::LoadHistory(saved, journal) => {
                let loaded = self.load_history(saved, journal);
                tracing::info!(
                    kept = loaded.kept,
                    refused = loaded.refused,
                    "saved history loaded"
                );
                let rooms: Vec<Room> = self.rooms.values().cloned().collect();
                for room in rooms {
                    self.replay_history(&room);
                }
            }
            Command::SetNick(nick) => {
                validate::check(&Payload::Nick(nick.clone()), 0)?;
                self.nick = Some(nick);
                let topics: Vec<TopicHash> = self.rooms.keys().cloned().collect();
                for topic in topics {
                    self.announce_nick(topic);
                }
            }
            Command::PublishRaw(..) => {
                unreachable!("the command loop queues raw messages itself")
            }
            Command::SubscribeRaw(topic) => {
                let topic = IdentTopic::new(topic);
                self.subscribe(&topic)?;
                self.raw_topics.insert(topic.hash());
            }
            Command::FindPeer(peer) => {
                let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.lookups.insert(query, peer);
            }
            Command::FindProviders(room) => {
                let query = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(room.provider_key());
                self.provider_queries.insert(
                    query,
                    ProviderQuery {
                        room,
                        asked: true,
                        found: Vec::new(),
                        found_new: false,
                    },
                );
            }
            Command::Bootstrap => {
                if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                    tracing::debug!(error = %e, "no peers to bootstrap from yet");
                }
            }
            Command::Shutdown => self.begin_shutdown(),
        }
        Ok(())
    }

    fn subscribe(&mut self, topic: &IdentTopic) -> Result<(), CommandError> {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .map_err(|e| CommandError::Subscribe {
                topic: topic.to_string(),
                reason: format!("{e:?}"),
            })?;
        Ok(())
    }

    fn join(&mut self, room: Room) -> Result<(), CommandError> {
        let topic = room.topic();
        if self.rooms.contains_key(&topic.hash()) {
            return Ok(());
        }
        self.subscribe(&topic)?;
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .set_topic_params(topic.clone(), room_score_params())
        {
            tracing::warn!(%room, error = e, "room score parameters refused");
        }
        self.rooms.insert(topic.hash(), room.clone());
        self.joined_ms.insert(topic.hash(), validate::now_ms());
        if !self.defer_announce(topic.hash()) {
            self.announce_nick(topic.hash());
        }
        self.provide(&room);
        self.peers_topic(&room, true);
        self.files_topic(&room, true);
        self.replay_history(&room);
        Ok(())
    }

    /// Announces our nickname (empty when we have none) in a room: it tells
    /// the room we are here. Relays are not members and never announce.
    fn announce_nick(&mut self, topic: TopicHash) {
        if self.role == Role::Relay {
            return;
        }
        self.announce_due.remove(&topic);
        self.announce_owed.remove(&topic);
        self.announce_deferred.remove(&topic);
        self.last_announce.insert(topic.clone(), clock::now());
        let nick = self.nick.clone().unwrap_or_default();
        self.queue(Outgoing {
            topic,
            data: wire::encode(&Payload::Nick(nick)),
            id: None,
            announce: true,
            ack: None,
        });
    }

    /// Announces now, or as soon as the gap since the last announcement
    /// has passed.
    fn schedule_announce(&mut self, topic: TopicHash) {
        match self.last_announce.get(&topic) {
            Some(last) if clock::since(*last) < NICK_ANNOUNCE_GAP => {
                let due = *last + NICK_ANNOUNCE_GAP;
                self.announce_due.entry(topic).or_insert(due);
            }
            _ => self.announce_nick(topic),
        }
    }

    fn announce_due_nicks(&mut self) {
        for topic in due(&self.announce_due) {
            // The room grew large since the answer was put off: newcomers
            // hear our name when we next speak instead.
            if self.large_room(&topic) {
                self.announce_due.remove(&topic);
                self.announce_owed.insert(topic);
                continue;
            }
            self.announce_nick(topic);
        }
    }

    fn queue(&mut self, out: Outgoing) {
        self.outbox.push_back(out);
        self.flush();
    }

    /// Publishes held messages, in order, topic by topic.
    fn flush(&mut self) {
        let mut waiting: HashMap<TopicHash, usize> = HashMap::new();
        let mut kept = VecDeque::new();
        while let Some(mut out) = self.outbox.pop_front() {
            if let Some(pending) = waiting.get_mut(&out.topic) {
                *pending += usize::from(!out.announce);
                kept.push_back(out);
                continue;
            }
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(out.topic.clone(), out.data.clone())
            {
                Ok(id) => {
                    self.keep_published(&out.topic, &out.data, &id);
                    if self.slowed.remove(&out.topic) {
                        tracing::debug!(topic = %out.topic, "the network takes messages again");
                    }
                    if let Some(ack) = out.ack.take() {
                        let _ = ack.send(Ok(()));
                    }
                    self.emit(Event::Sent {
                        topic: out.topic.to_string(),
                        id: out.id,
                    });
                }
                Err(PublishError::NoPeersSubscribedToTopic) => {
                    waiting.insert(out.topic.clone(), usize::from(!out.announce));
                    kept.push_back(out);
                }
                Err(PublishError::AllQueuesFull(_)) => {
                    // Every neighbour's queue is full: wait for them to
                    // drain (held messages go again each tick).
                    if self.slowed.insert(out.topic.clone()) {
                        self.emit(Event::Slowed {
                            topic: out.topic.to_string(),
                        });
                    }
                    waiting.insert(out.topic.clone(), 0);
                    kept.push_back(out);
                }
                Err(e) => {
                    tracing::warn!(topic = %out.topic, error = %e, "message could not be published");
                    if let Some(ack) = out.ack.take() {
                        let _ = ack.send(Err(CommandError::Publish(e.to_string())));
                    }
                }
            }
        }
        self.outbox = kept;
        for (topic, pending) in waiting.into_iter().filter(|(_, n)| *n > 0) {
            self.emit(Event::Held {
                topic: topic.to_string(),
                pending,
            });
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown.is_none() {
            self.shutdown = Some(None);
        }
    }

    /// True once shutdown was asked for, nothing is held, and the linger
    /// time after the last send has passed.
    fn shutdown_complete(&mut self) -> bool {
        let Some(linger) = self.shutdown.as_mut() else {
            return false;
        };
        if !self.outbox.is_empty() || !self.pending_dms.is_empty() {
            *linger = None;
            return false;
        }
        let deadline = *linger.get_or_insert_with(|| clock::now() + LINGER);
        clock::now() >= deadline
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(observer) = self.observer.as_mut() {
            observer(&event);
        }
        let local = *self.swarm.local_peer_id();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.role == Role::Relay && !self.configured_external {
                    // A relay with no --external-addr is reached at its
                    // listen addresses; the relay protocol grants
                    // reservations only once it has an external address.
                    self.swarm.add_external_address(address.clone());
                }
                self.relayed_addr(&address, true);
                self.emit(Event::Listening(
                    address.with_p2p(local).unwrap_or_else(|a| a),
                ));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.relayed_addr(&address, false),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let transport = transport_of(&endpoint);
                let outbound = endpoint.is_dialer();
                let addr = endpoint.get_remote_address().clone();
                // Who asked for the connection: the engine (its neighbour
                // manager or a command), a behaviour (Kademlia's queries,
                // the relay client), or the remote peer.
                let dialing = self.dialing.remove(&connection_id);
                let by = match (&dialing, outbound) {
                    (Some(_), _) => "engine",
                    (None, true) => "behaviour",
                    (None, false) => "remote",
                };
                tracing::debug!(peer = %peer_id, %addr, %transport, dialed_by = by, "connected");
                let dialed = dialing.flatten();
                self.commanded.remove(&connection_id);
                // A page's relayed connections only carry the signaling of
                // direct links: they are no link of their own.
                if !self.signaling_only(transport)
                    && let Some(boot) =
                        self.neighbours
                            .connected(peer_id, dialed.as_ref(), clock::now())
                {
                    self.discovered(peer_id, &[boot], Source::Bootstrap);
                }
                if self.neighbours.relay(&peer_id) {
                    // Before any of its gossipsub messages is handled: a
                    // PRUNE may come at once, and its names count only from
                    // a peer scored high enough.
                    self.trust_relay(peer_id);
                }
                self.connections
                    .insert(connection_id, (peer_id, addr.clone()));
                match transport {
                    Transport::Circuit => {
                        self.relayed.insert(connection_id, peer_id);
                    }
                    Transport::WebRtc => self.direct_link_up(peer_id, connection_id, outbound),
                    _ => {}
                }
                self.pinger.start(peer_id);
                self.dm_connected(peer_id);
                self.emit(Event::Connected {
                    peer: peer_id,
                    addr,
                    transport,
                    outbound,
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), ?cause, "connection closed");
                self.connections.remove(&connection_id);
                self.relayed.remove(&connection_id);
                self.direct.remove(&connection_id);
                if num_established > 0 && !self.linked_beyond_signaling(peer_id) {
                    self.neighbours.disconnected(&peer_id, clock::now());
                }
                if num_established == 0 {
                    self.neighbours.disconnected(&peer_id, clock::now());
                    if let Some((relay, listener)) = self.reservation
                        && relay == peer_id
                    {
                        self.swarm.remove_listener(listener);
                        self.reservation = None;
                    }
                    self.pinger.stop(&peer_id);
                    self.history_peer_gone(&peer_id);
                    for topic in self.members.rooms() {
                        self.member_left(&topic, peer_id);
                    }
                }
                self.emit(Event::Disconnected {
                    peer: peer_id,
                    transport: transport_of(&endpoint),
                    remaining: num_established,
                });
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                let dialed = self.dialing.remove(&connection_id).flatten();
                self.neighbours
                    .dial_failed(peer_id, dialed.as_ref(), clock::now());
                // The addresses tried, each with why it failed.
                let tried = match &error {
                    DialError::Transport(errors) => errors.as_slice(),
                    _ => &[],
                };
                let webrtc_direct = dialed
                    .iter()
                    .chain(tried.iter().map(|(a, _)| a))
                    .any(|a| Transport::of(a) == Transport::WebRtcDirect);
                if webrtc_direct {
                    self.renew_dial_listeners();
                }
                // A failed direct link says why without its long address.
                let direct = tried
                    .iter()
                    .find(|(a, _)| Transport::of(a) == Transport::WebRtc)
                    .map(|(_, e)| error_chain(e));
                let error = dial_error_text(&error);
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    self.dm_dial_failed(peer, &error);
                }
                if let (Some(reason), Some(peer)) = (direct, peer_id) {
                    self.direct_link_failed(peer, reason);
                }
                // Only dials asked for are reported: the neighbour manager's,
                // Kademlia's and hole punching's are retried or given up on
                // by their owners.
                if self.commanded.remove(&connection_id) {
                    self.emit(Event::DialFailed {
                        peer: peer_id,
                        addr: dialed,
                        error,
                    });
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "reachable at");
                // Provider records carry our addresses: announce again.
                self.provide_all();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } if self.reservation.is_some_and(|(_, id)| id == listener_id) => {
                tracing::info!(?reason, "relayed address lost");
                self.reservation = None;
                self.relayed_addrs_lost();
                let wait = RESERVE_RETRY
                    .saturating_mul(1 << self.reserve_failures.min(10))
                    .min(RESERVE_RETRY_MAX);
                self.reserve_failures = self.reserve_failures.saturating_add(1);
                self.next_reserve = clock::now() + wait;
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(GossipEvent::Pubsub(event)) => self.on_gossipsub(event),
            BehaviourEvent::Gossipsub(GossipEvent::PeerExchange { from, peer }) => {
                self.on_peer_exchange(from, peer);
            }
            BehaviourEvent::Gossipsub(GossipEvent::Refused { via, topic, reason }) => {
                self.refused(via, &topic, reason);
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Only identify-confirmed Kademlia peers enter the routing
                // table, and only on nodes that use the DHT: Kademlia
                // bootstraps by itself (and dials what it finds) as soon as
                // its table has a peer, which a node with no DHT-based
                // discovery (a browser page, `meshtalk ping`) must not do.
                if self.uses_dht() && info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in &info.listen_addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                if is_relay_agent(&info.agent_version) {
                    let addrs = relay_addrs(peer_id, &info.listen_addrs);
                    self.neighbours.is_relay(peer_id, &addrs);
                    self.trust_relay(peer_id);
                    self.reserve();
                }
                self.emit(Event::Identified {
                    peer: peer_id,
                    agent: info.agent_version,
                    listen_addrs: info.listen_addrs,
                });
            }
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted {
                ..
            }) => self.reserve_failures = 0,
            BehaviourEvent::Mdns(event) => {
                for (peer, addr) in arch::mdns_discovered(event) {
                    self.discovered(peer, std::slice::from_ref(&addr), Source::Mdns);
                    if !self.swarm.is_connected(&peer) {
                        tracing::info!(%peer, %addr, "found on the local network");
                        if let Err(e) = self.swarm.dial(addr) {
                            tracing::debug!(%peer, error = %e, "cannot dial mDNS peer");
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Relays (and the bootstrap peers we were given) are the network's
    /// bootstrappers: their gossipsub score clears the peer-exchange
    /// threshold ([`RELAY_APP_SCORE`]).
    fn trust_relay(&mut self, peer: PeerId) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, RELAY_APP_SCORE);
    }

    fn on_ping(&mut self, peer: PeerId, rtt: Duration) {
        // The stream may run over any of the peer's connections; report the
        // newest.
        let addr = self
            .connections
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .max_by_key(|(id, _)| **id)
            .map(|(_, (_, addr))| addr.clone());
        if let Some(addr) = addr {
            self.emit(Event::Ping {
                peer,
                rtt,
                transport: Transport::of(&addr),
                addr,
            });
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer,
                addresses,
                is_new_peer,
                ..
            } => {
                let table: usize = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                if is_new_peer && table == 1 {
                    // The first DHT server: now our rooms can be announced.
                    self.provide_all();
                }
                self.emit(Event::Routing {
                    peer,
                    addrs: addresses.into_vec(),
                    new: is_new_peer,
                })
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => {
                if step.last {
                    tracing::debug!(
                        query = %kad_query_kind(&result),
                        requests = stats.num_requests(),
                        successes = stats.num_successes(),
                        failures = stats.num_failures(),
                        "DHT query done"
                    );
                }
                match result {
                    kad::QueryResult::Bootstrap(result) => self.emit(Event::Bootstrapped {
                        remaining: match result {
                            Ok(ok) => ok.num_remaining,
                            Err(kad::BootstrapError::Timeout { num_remaining, .. }) => {
                                num_remaining.unwrap_or(0)
                            }
                        },
                    }),
                    kad::QueryResult::GetClosestPeers(result) if self.walks.remove(&id) => {
                        let peers = match result {
                            Ok(ok) => ok.peers,
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                        };
                        let mut found_new = false;
                        for info in peers {
                            found_new |=
                                self.discovered(info.peer_id, &info.addrs, Source::RandomWalk);
                        }
                        if let Some(cadence) = self.walk_cadence.as_mut() {
                            cadence.finished(clock::now(), found_new);
                            tracing::debug!(found_new, next_in = ?cadence.interval(), "random walk done");
                        }
                    }
                    kad::QueryResult::GetProviders(result) => {
                        self.on_providers(id, result, step.last)
                    }
                    kad::QueryResult::GetClosestPeers(result) if step.last => {
                        if let Some(target) = self.lookups.remove(&id) {
                            let peers = match result {
                                Ok(ok) => ok.peers,
                                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                            };
                            let mut addrs = peers
                                .into_iter()
                                .find(|p| p.peer_id == target)
                                .map(|p| p.addrs)
                                .unwrap_or_default();
                            // Peers never list themselves among the closest to
                            // their own id; our routing table may know them.
                            if addrs.is_empty() {
                                addrs = self.kad_addresses(target);
                            }
                            self.emit(Event::PeerLookup {
                                peer: target,
                                addrs,
                            });
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_message(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if self.role == Role::Relay && !self.is_subscribed(&topic) {
                    self.follow(&topic);
                }
                if let Some(room) = self.rooms.get(&topic).cloned() {
                    self.emit(Event::Subscribed {
                        room,
                        peer: peer_id,
                    });
                    self.ask_history(peer_id, &topic);
                } else if self.uc && topic.as_str() == uc::CHAT_TOPIC {
                    self.emit(Event::Subscribed {
                        room: uc::room(),
                        peer: peer_id,
                    });
                }
                // Held messages may now have someone to go to.
                self.flush();
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => self.member_left(&topic, peer_id),
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::warn!(
                    peer = %peer_id,
                    "the peer speaks none of our pubsub protocols (/meshsub/1.0.0 to 1.3.0, /floodsub/1.0.0): it cannot take part in rooms"
                );
                self.emit(Event::PubsubUnsupported { peer: peer_id });
            }
            _ => {}
        }
    }

    /// Whether `topic` is the topic of a room we are in: one of ours, or
    /// universal-connectivity's chat with `--compat uc`.
    fn is_room_topic(&self, topic: &TopicHash) -> bool {
        self.rooms.contains_key(topic) || (self.uc && topic.as_str() == uc::CHAT_TOPIC)
    }

    fn is_subscribed(&self, topic: &TopicHash) -> bool {
        self.rooms.contains_key(topic) || self.raw_topics.contains(topic)
    }

    /// A relay joins every topic its peers use, so peers connected only to
    /// it reach each other.
    fn follow(&mut self, topic: &TopicHash) {
        if self.rooms.len() + self.raw_topics.len() >= MAX_FOLLOWED_TOPICS {
            tracing::warn!(%topic, "not following more topics: limit reached");
            return;
        }
        let result = match Room::from_topic(topic) {
            Some(room) => self.join(room),
            None => self.on_command(Command::SubscribeRaw(topic.to_string())),
        };
        match result {
            Ok(()) => tracing::info!(%topic, "following topic"),
            Err(e) => tracing::warn!(%topic, error = %e, "cannot follow topic"),
        }
    }

    fn on_message(&mut self, via: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let verdict = match self.over_rate_limit(via, message.source) {
            Some(verdict) => verdict,
            None => self.judge(via, &id, message),
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &via, verdict);
    }

    /// The verdict on a message over its author's publish rate limit
    /// (relays); `None` when it is within the limit or there is none.
    fn over_rate_limit(
        &mut self,
        via: PeerId,
        author: Option<PeerId>,
    ) -> Option<MessageAcceptance> {
        let (limiter, author) = (self.limiter.as_mut()?, author?);
        if limiter.check(author, clock::now()) == guard::Verdict::Pass {
            return None;
        }
        let per_second = limiter.limit().per_second;
        self.reject(via, Some(author), Rejection::RateLimited(per_second));
        // Only the flooder itself is punished (see `guard`).
        Some(if via == author {
            MessageAcceptance::Reject
        } else {
            MessageAcceptance::Ignore
        })
    }

    /// What a message within the rate limit comes to, by its topic.
    fn judge(
        &mut self,
        via: PeerId,
        id: &gossipsub::MessageId,
        message: gossipsub::Message,
    ) -> MessageAcceptance {
        if let Some(room) = self.rooms.get(&message.topic).cloned() {
            let checked = validate::accept(&message.data, validate::now_ms());
            match self.signed(via, message.source, checked) {
                Some((payload, from)) => {
                    if self.keep_received(&message, from, &payload) {
                        self.deliver(room, from, payload);
                    }
                    MessageAcceptance::Accept
                }
                None => MessageAcceptance::Reject,
            }
        } else if let Some(room) = peer_record::room_of(&message.topic) {
            self.on_record(&room, message.source, &message.data)
        } else if let Some(room) = crate::files::room_of(&message.topic) {
            self.on_offer(&room, message.source, &message.data)
        } else if message.topic.as_str() == uc::CHAT_TOPIC {
            self.on_uc_chat(via, id, message)
        } else if message.topic.as_str() == uc::FILE_TOPIC {
            self.on_uc_file(via, message.source, &message.data)
        } else if message.topic.as_str() == uc::BROWSER_DISCOVERY_TOPIC {
            self.on_record(&uc::room(), message.source, &message.data)
        } else if self.raw_topics.contains(&message.topic) {
            self.emit(Event::Raw {
                topic: message.topic.to_string(),
                from: message.source,
                data: message.data,
            });
            MessageAcceptance::Accept
        } else {
            MessageAcceptance::Ignore
        }
    }

    /// What `checked` found in a message, with its author; `None` once the
    /// refusal is reported (a message without a source is refused too).
    fn signed<T>(
        &mut self,
        via: PeerId,
        source: Option<PeerId>,
        checked: Result<T, Rejection>,
    ) -> Option<(T, PeerId)> {
        match (checked, source) {
            (Ok(content), Some(from)) => Some((content, from)),
            (Ok(_), None) => {
                self.reject(via, None, Rejection::MissingField("gossipsub source"));
                None
            }
            (Err(reason), source) => {
                self.reject(via, source, reason);
                None
            }
        }
    }

    fn reject(&mut self, via: PeerId, source: Option<PeerId>, reason: Rejection) {
        tracing::debug!(%via, ?source, %reason, "message rejected");
        if self.role == Role::Relay {
            self.offenders.insert(via, clock::now());
        }
        self.emit(Event::Rejected {
            via,
            source,
            reason,
        });
    }

    /// A line on universal-connectivity's chat topic: checked like ours
    /// (by relays too, which forward it); shown with `--compat uc`, handed
    /// on as it is to `meshtalk subscribe --topic universal-connectivity`.
    fn on_uc_chat(
        &mut self,
        via: PeerId,
        id: &gossipsub::MessageId,
        message: gossipsub::Message,
    ) -> MessageAcceptance {
        let checked = uc::check_chat(&message.data).map(str::to_owned);
        let Some((text, from)) = self.signed(via, message.source, checked) else {
            return MessageAcceptance::Reject;
        };
        // Its message id (a SHA-256) names the line.
        let mut line_id = [0; wire::MESSAGE_ID_LEN];
        for (to, from) in line_id.iter_mut().zip(&id.0) {
            *to = *from;
        }
        let line = ChatMessage {
            text,
            created_ms: validate::now_ms(),
            id: wire::MessageId(line_id),
        };
        if self.uc || self.role == Role::Relay {
            let room = uc::room();
            if self.role == Role::Peer {
                let topic = message.topic.clone();
                if self.members.heard(&topic, from, clock::now()).new {
                    self.emit(Event::PeerJoined {
                        room: room.clone(),
                        peer: from,
                    });
                }
            }
            self.emit(Event::Message {
                room,
                from,
                nick: None,
                message: line,
                history: false,
            });
        } else if self.raw_topics.contains(&message.topic) {
            self.emit(Event::Raw {
                topic: message.topic.to_string(),
                from: Some(from),
                data: message.data,
            });
        }
        MessageAcceptance::Accept
    }

    /// A message gossipsub dropped for its envelope (unsigned, say): a peer
    /// of another implementation configured differently, or a hostile one.
    /// Logged once a minute per peer at most, counted always.
    fn refused(&mut self, via: PeerId, topic: &TopicHash, reason: Rejection) {
        let now = clock::now();
        let due = self
            .refusals_logged
            .get(&via)
            .is_none_or(|last| now.duration_since(*last) >= REFUSAL_LOG_INTERVAL);
        if due {
            if self.refusals_logged.len() >= MAX_REFUSALS_LOGGED {
                self.refusals_logged.clear();
            }
            self.refusals_logged.insert(via, now);
            tracing::warn!(
                "dropped a message on {topic} from {via}: {reason} (logged once a minute per peer)"
            );
        }
        self.reject(via, None, reason);
    }

    fn member_left(&mut self, topic: &TopicHash, peer: PeerId) {
        let removed = self.members.left(topic, &peer);
        if let (true, Some(room)) = (removed, self.rooms.get(topic).cloned()) {
            self.emit(Event::PeerLeft { room, peer });
        }
    }

    fn deliver(&mut self, room: Room, from: PeerId, payload: Payload) {
        if self.role == Role::Relay {
            // A relay passes rooms on and counts their messages; it keeps
            // no member lists or nicknames (it follows thousands of rooms).
            if let Payload::Message(message) = payload {
                self.emit(Event::Message {
                    room,
                    from,
                    nick: None,
                    message,
                    history: false,
                });
            }
            return;
        }
        let topic = room.topic().hash();
        let heard = self.members.heard(&topic, from, clock::now());
        if heard.new {
            self.emit(Event::PeerJoined {
                room: room.clone(),
                peer: from,
            });
            if let Some(peer) = heard.forgotten {
                tracing::debug!(%room, %peer, "too many members: forgetting the quietest");
                self.emit(Event::PeerLeft {
                    room: room.clone(),
                    peer,
                });
                if !self.members.anywhere(&peer) {
                    self.nicks.remove(&peer);
                    self.nameless.remove(&peer);
                }
            }
            // The newcomer learns who we are (in a large room, when we
            // next speak), and what we offer. While our own announcement
            // waits for the answers that say how large the room is, it
            // serves this newcomer too: answering now would announce us
            // in a room that may be large.
            if !self.announce_deferred.contains_key(&topic) {
                if self.large_room(&topic) {
                    self.announce_owed.insert(topic.clone());
                } else {
                    self.schedule_announce(topic.clone());
                }
            }
            self.files_newcomer(room.clone());
        }
        match payload {
            Payload::Message(message) => {
                let nick = self.nicks.get(&from).cloned();
                let unnamed = nick.is_none();
                let line = Event::Message {
                    room,
                    from,
                    nick,
                    message,
                    history: false,
                };
                if unnamed && !self.nameless.contains(&from) && self.large_room(&topic) {
                    self.ask_for_names(&topic);
                }
                // History first: a live line waits (briefly) for the
                // history on its way.
                if let Some(line) = self.hold_live(&topic, line) {
                    self.emit(line);
                }
            }
            Payload::Nick(nick) => {
                let previous = if nick.is_empty() {
                    self.nameless.insert(from);
                    self.nicks.remove(&from)
                } else {
                    self.nameless.remove(&from);
                    self.nicks.insert(from, nick.clone())
                };
                if self.nicks.len() + self.nameless.len() > MAX_NICKS {
                    let members = &self.members;
                    self.nicks.retain(|peer, _| members.anywhere(peer));
                    self.nameless.retain(|peer| members.anywhere(peer));
                }
                if previous.unwrap_or_default() != nick {
                    self.emit(Event::Nick { room, from, nick });
                }
            }
        }
    }
}

/// The keys of `schedule` whose time has come.
fn due<K: Clone>(schedule: &HashMap<K, Instant>) -> Vec<K> {
    let now = clock::now();
    schedule
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(key, _)| key.clone())
        .collect()
}

/// The transport of a connection. An inbound connection's shows in our own
/// listen address; the remote's send-back address may lack it.
fn transport_of(endpoint: &ConnectedPoint) -> Transport {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => Transport::of(address),
        ConnectedPoint::Listener { local_addr, .. } => Transport::of(local_addr),
    }
}

/// One line a person can read for a failed dial.
pub fn dial_error_text(error: &DialError) -> String {
    match error {
        DialError::WrongPeerId { obtained, address } => {
            format!("{address} belongs to peer {obtained}, not the peer id in the address")
        }
        DialError::Transport(errors) => errors
            .iter()
            .map(|(addr, e)| format!("{addr}: {}", error_chain(e)))
            .collect::<Vec<_>>()
            .join("; "),
        DialError::NoAddresses => "no address to dial".into(),
        DialError::LocalPeerId { address } => format!("{address} is this peer itself"),
        other => error_chain(other),
    }
}

/// An error with its causes, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        // Some libp2p errors span lines ("Multiple dial errors occurred:\n - ...").
        let text = e
            .to_string()
            .lines()
            .map(|l| l.trim().trim_start_matches("- ").trim_end_matches(':'))
            .filter(|l| !l.is_empty() && *l != "Multiple dial errors occurred")
            .collect::<Vec<_>>()
            .join("; ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// What kind of DHT query a result is of, for the log.
fn kad_query_kind(result: &kad::QueryResult) -> &'static str {
    match result {
        kad::QueryResult::Bootstrap(_) => "bootstrap",
        kad::QueryResult::GetClosestPeers(_) => "closest peers",
        kad::QueryResult::GetProviders(_) => "providers",
        kad::QueryResult::StartProviding(_) => "announce",
        kad::QueryResult::RepublishProvider(_) => "announce again",
        kad::QueryResult::GetRecord(_) => "get record",
        kad::QueryResult::PutRecord(_) => "put record",
        kad::QueryResult::RepublishRecord(_) => "put record again",
    }
}
