//! `/meshtalk/history/1.0.0`: one request and one answer per stream, each
//! a varint-length-prefixed protobuf.
//!
//! ```proto
//! message HistoryRequest {
//!   optional string topic = 1;            // the room's topic
//!   optional int64 after_created_ms = 2;  // with after_id: lines after
//!   optional bytes after_id = 3;          //   this one, oldest first
//!   optional uint32 limit = 4;            // at most 500
//! }
//! message HistoryAnswer {
//!   repeated Message lines = 1;  // pubsub Messages, as their authors signed them
//!   repeated Message nicks = 2;  // the newest UPDATE_PEER of each author of those lines
//!   optional bool more = 3;      // lines follow the last one
//!   optional uint32 members = 4; // other peers the answering relay sees in the room
//! }
//! ```
//!
//! `members` lets a newcomer tell a large room from a small one before it
//! announces itself (PROTOCOL.md); only relays set it, and it counts only
//! the peers linked to the relay that answers, so it is a lower bound.
//!
//! Without a cursor the answer holds the newest lines. Answers carry at
//! most 500 lines and 1 MiB; a peer may ask [`REQUESTS_PER_MINUTE`] times a
//! minute, and is refused (the stream dropped) beyond.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{
    AsyncWriteExt, FutureExt,
    future::{AbortHandle, Abortable, BoxFuture},
    stream::FuturesUnordered,
};
use libp2p::{PeerId, Stream, StreamProtocol, gossipsub::TopicHash};
use libp2p_stream::Control;
use prost::Message as _;

use super::{
    SignedMessage,
    store::{Cursor, MAX_ANSWER_BYTES, MAX_ANSWER_RECORDS, Store},
};
use crate::{
    clock,
    framing::{
        Inbound, Next, PerMinute, accept, ask, next_of, read_message, within, write_message,
    },
    wire::MESSAGE_ID_LEN,
};

/// The history protocol id.
pub const HISTORY_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshtalk/history/1.0.0");
/// Requests one peer may make in a minute.
pub const REQUESTS_PER_MINUTE: u32 = 30;
/// Largest request accepted.
const MAX_REQUEST: usize = 1024;
/// Largest answer read: the line limit plus room for the nicknames.
const MAX_ANSWER: usize = MAX_ANSWER_BYTES + 256 * 1024;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Times a request is made before it fails: a busy relay's libp2p-stream
/// resets streams that come faster than its engine takes them (see
/// `framing::Inbound`), so a newcomer among many asks again, after a pause
/// of [`RETRY_PAUSE_MS`] (random, so the many do not come back together).
const FETCH_TRIES: u32 = 3;
/// Shortest and longest pause before asking again, in milliseconds.
const RETRY_PAUSE_MS: (u64, u64) = (100, 800);

/// A request for a room's lines.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HistoryRequest {
    /// The room's topic.
    #[prost(string, optional, tag = "1")]
    pub topic: Option<String>,
    /// With `after_id`: the line after which to go on.
    #[prost(int64, optional, tag = "2")]
    pub after_created_ms: Option<i64>,
    /// With `after_created_ms`: the line after which to go on.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub after_id: Option<Vec<u8>>,
    /// Most lines wanted.
    #[prost(uint32, optional, tag = "4")]
    pub limit: Option<u32>,
}

/// A page of a room's lines.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HistoryAnswer {
    /// Chat lines, oldest first.
    #[prost(message, repeated, tag = "1")]
    pub lines: Vec<SignedMessage>,
    /// Nickname records of their authors.
    #[prost(message, repeated, tag = "2")]
    pub nicks: Vec<SignedMessage>,
    /// Whether more lines follow.
    #[prost(bool, optional, tag = "3")]
    pub more: Option<bool>,
    /// Peers other than the asker the answering relay sees subscribed to
    /// the room (relays not counted).
    #[prost(uint32, optional, tag = "4")]
    pub members: Option<u32>,
}

/// The peers subscribed to each room as a relay sees them, shared by the
/// engine (which looks once a second) and the answers it serves.
pub(crate) type RoomSizes = Arc<Mutex<HashMap<TopicHash, HashSet<PeerId>>>>;

impl HistoryRequest {
    fn cursor(&self) -> Option<Cursor> {
        let id: [u8; MESSAGE_ID_LEN] = self.after_id.as_deref()?.try_into().ok()?;
        Some((self.after_created_ms?, id))
    }
}

/// What the history protocol did.
pub(crate) enum SyncEvent {
    /// A peer answered our request.
    Fetched {
        peer: PeerId,
        room: TopicHash,
        answer: HistoryAnswer,
    },
    /// Asking a peer failed.
    Failed {
        peer: PeerId,
        room: TopicHash,
        error: String,
    },
    /// A peer asked more often than allowed and was refused.
    Refused { peer: PeerId },
    /// An exchange we served ended (its outcome is logged).
    Served,
}

/// Answers history requests from the store and asks peers for theirs.
pub(crate) struct HistorySync {
    control: Control,
    incoming: Option<Inbound>,
    store: Arc<Mutex<Store>>,
    sizes: RoomSizes,
    /// Exchanges under way, each with the fetch it belongs to (none for
    /// those we serve).
    tasks: FuturesUnordered<BoxFuture<'static, (Option<u64>, SyncEvent)>>,
    /// Our fetches under way: whom each asks, and how to call it off.
    fetches: HashMap<u64, (PeerId, AbortHandle)>,
    next_fetch: u64,
    asked: PerMinute,
}

impl HistorySync {
    /// Takes over the history protocol on `control`, serving `store` (a
    /// store that keeps nothing serves nothing: the protocol stays free),
    /// with the room sizes in `sizes` (empty but on relays).
    pub(crate) fn new(mut control: Control, store: Arc<Mutex<Store>>, sizes: RoomSizes) -> Self {
        let serve = store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled();
        let incoming = serve
            .then(|| accept(&mut control, HISTORY_PROTOCOL))
            .flatten();
        Self {
            control,
            incoming,
            store,
            sizes,
            tasks: FuturesUnordered::new(),
            fetches: HashMap::new(),
            next_fetch: 0,
            asked: PerMinute::new(REQUESTS_PER_MINUTE),
        }
    }

    /// Asks `peer` for the lines of `room` after `after` (the newest when
    /// none).
    pub(crate) fn fetch(&mut self, peer: PeerId, room: TopicHash, after: Option<Cursor>) {
        self.fetch_up_to(peer, room, after, MAX_ANSWER_RECORDS);
    }

    /// [`Self::fetch`], for at most `limit` lines.
    pub(crate) fn fetch_up_to(
        &mut self,
        peer: PeerId,
        room: TopicHash,
        after: Option<Cursor>,
        limit: usize,
    ) {
        let request = HistoryRequest {
            topic: Some(room.to_string()),
            after_created_ms: after.map(|(created, _)| created),
            after_id: after.map(|(_, id)| id.to_vec()),
            limit: Some(limit.min(MAX_ANSWER_RECORDS) as u32),
        };
        let control = self.control.clone();
        let exchange = async move {
            let request = request.encode_to_vec();
            let mut tries = 0;
            let bytes = loop {
                tries += 1;
                let asked = ask(
                    control.clone(),
                    peer,
                    HISTORY_PROTOCOL,
                    &request,
                    MAX_ANSWER,
                    "",
                )
                .await;
                match asked {
                    Ok(bytes) => break bytes,
                    Err(e) if tries < FETCH_TRIES => {
                        tracing::debug!(%peer, error = %e, "history request failed; asking again");
                        let (least, most) = RETRY_PAUSE_MS;
                        let pause = rand::random_range(least..=most);
                        clock::sleep(Duration::from_millis(pause)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            HistoryAnswer::decode(bytes.as_slice()).map_err(|e| format!("undecodable answer: {e}"))
        };
        let (abort, registration) = AbortHandle::new_pair();
        let id = self.next_fetch;
        self.next_fetch = self.next_fetch.wrapping_add(1);
        self.fetches.insert(id, (peer, abort));
        let task = async move {
            let event = match Abortable::new(within(EXCHANGE_TIMEOUT, exchange), registration).await
            {
                Ok(Ok(answer)) => SyncEvent::Fetched { peer, room, answer },
                Ok(Err(error)) => SyncEvent::Failed { peer, room, error },
                Err(_aborted) => SyncEvent::Failed {
                    peer,
                    room,
                    error: "the connection closed".to_owned(),
                },
            };
            (Some(id), event)
        };
        self.tasks.push(task.boxed());
    }

    /// Calls off our fetches from `peer`, whose last connection closed:
    /// asking again would dial it, and a peer the neighbour manager let go
    /// (or a relay a DHT query reached for a moment) is not to be dialed
    /// for history. The engine asks it again once it is back.
    pub(crate) fn cancel(&mut self, peer: &PeerId) {
        self.fetches.retain(|_, (asked, abort)| {
            let keep = asked != peer;
            if !keep {
                abort.abort();
            }
            keep
        });
    }

    fn serve(&mut self, peer: PeerId, stream: Stream) {
        let (store, sizes) = (self.store.clone(), self.sizes.clone());
        let task = async move {
            if let Err(e) = within(EXCHANGE_TIMEOUT, answer(peer, stream, store, sizes)).await {
                tracing::debug!(%peer, error = %e, "history request not answered");
            }
            (None, SyncEvent::Served)
        };
        self.tasks.push(task.boxed());
    }

    /// The next thing that happened. Pending forever when there is nothing
    /// to do, so it can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> SyncEvent {
        loop {
            match next_of(&mut self.incoming, &mut self.tasks).await {
                Next::Inbound(peer, stream) if self.asked.allow(peer) => self.serve(peer, *stream),
                Next::Inbound(peer, stream) => {
                    drop(stream);
                    return SyncEvent::Refused { peer };
                }
                Next::Done((fetch, event)) => {
                    if let Some(fetch) = fetch {
                        self.fetches.remove(&fetch);
                    }
                    return event;
                }
            }
        }
    }
}

/// Reads a request, answers it from the store, closes the stream.
async fn answer(
    asker: PeerId,
    mut stream: Stream,
    store: Arc<Mutex<Store>>,
    sizes: RoomSizes,
) -> Result<(), String> {
    let bytes = read_message(&mut stream, MAX_REQUEST)
        .await
        .map_err(|e| e.to_string())?;
    let request =
        HistoryRequest::decode(bytes.as_slice()).map_err(|e| format!("undecodable: {e}"))?;
    let topic = request.topic.clone().ok_or("request without a topic")?;
    let limit = request.limit.map_or(MAX_ANSWER_RECORDS, |l| l as usize);
    let topic = TopicHash::from_raw(topic);
    let page = store.lock().unwrap_or_else(PoisonError::into_inner).page(
        &topic,
        request.cursor(),
        limit,
        crate::validate::now_ms(),
    );
    // The members other than the asker.
    let members = sizes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&topic)
        .map(|peers| (peers.len() - usize::from(peers.contains(&asker))) as u32);
    let answer = HistoryAnswer {
        lines: page.lines,
        nicks: page.nicks,
        more: Some(page.more),
        members,
    };
    write_message(&mut stream, &answer.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    stream.close().await.map_err(|e| e.to_string())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::{Multiaddr, Swarm, swarm::SwarmEvent};

    use super::*;
    use crate::{history::store::Limits, testing::memory_node};

    /// A node on libp2p's in-memory transport that speaks only
    /// libp2p-stream, listening at `/memory/{port}`.
    fn node(port: u64) -> (Swarm<libp2p_stream::Behaviour>, Multiaddr) {
        memory_node(port, |_| libp2p_stream::Behaviour::new())
    }

    /// The swarm's next event, failing the test after `deadline`.
    async fn drive(
        swarm: &mut Swarm<libp2p_stream::Behaviour>,
        deadline: tokio::time::Instant,
    ) -> SwarmEvent<()> {
        tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .expect("timed out")
    }

    #[tokio::test]
    async fn a_fetch_is_called_off_with_its_connection_and_never_dials_again() {
        let base = 7_500_000 + u64::from(std::process::id() % 1_000) * 10;
        // The asked peer takes the request and never answers.
        let (mut holder, holder_addr) = node(base);
        let holder_id = *holder.local_peer_id();
        let mut incoming = holder
            .behaviour()
            .new_control()
            .accept(HISTORY_PROTOCOL)
            .expect("accept");
        let (arrived, mut request_in) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut arrived = Some(arrived);
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = holder.select_next_some() => {}
                    Some(stream) = incoming.next() => {
                        held.push(stream);
                        if let Some(arrived) = arrived.take() {
                            let _ = arrived.send(());
                        }
                    }
                }
            }
        });

        let (mut asker, _) = node(base + 1);
        let store = Arc::new(Mutex::new(Store::new(Limits {
            per_room: 0,
            ..Limits::default()
        })));
        let mut sync =
            HistorySync::new(asker.behaviour().new_control(), store, RoomSizes::default());
        asker.dial(holder_addr).expect("dial");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !matches!(
            drive(&mut asker, deadline).await,
            SwarmEvent::ConnectionEstablished { .. }
        ) {}
        sync.fetch(holder_id, TopicHash::from_raw("room"), None);
        // Once the holder has the request, the connection closes as when
        // the neighbour manager lets a peer go.
        loop {
            tokio::select! {
                _ = drive(&mut asker, deadline) => {}
                _ = sync.next() => panic!("the fetch ended before the holder had it"),
                _ = &mut request_in => break,
            }
        }
        assert!(asker.disconnect_peer_id(holder_id).is_ok(), "not connected");
        while !matches!(
            drive(&mut asker, deadline).await,
            SwarmEvent::ConnectionClosed { .. }
        ) {}
        sync.cancel(&holder_id);

        // The fetch fails at once, and for longer than the longest pause
        // before a retry nothing dials the holder again.
        let quiet = tokio::time::sleep(Duration::from_millis(3 * RETRY_PAUSE_MS.1));
        tokio::pin!(quiet);
        let mut failed = None;
        loop {
            tokio::select! {
                event = drive(&mut asker, deadline) => {
                    assert!(
                        !matches!(event, SwarmEvent::Dialing { .. } | SwarmEvent::ConnectionEstablished { .. }),
                        "the holder was dialed again: {event:?}"
                    );
                }
                event = sync.next() => match event {
                    SyncEvent::Failed { peer, error, .. } => failed = Some((peer, error)),
                    _ => panic!("unexpected history event"),
                },
                () = &mut quiet => break,
            }
        }
        let (peer, error) = failed.expect("the fetch did not end");
        assert_eq!(peer, holder_id);
        assert_eq!(error, "the connection closed");
    }
}
