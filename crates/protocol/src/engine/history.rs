//! Room history: the engine's side (see [`crate::history`]).
//!
//! Every room message the engine accepts, and every one it publishes, is
//! kept as its author's signed record. When a room member or relay
//! subscribes to one of our rooms (on joining, and again after every
//! reconnect) a peer asks it, up to [`HISTORY_SOURCES`] of them per room,
//! for the lines newer than the newest it holds, following `more` for a
//! few pages. Answers are verified record by record; the new lines are
//! shown in `created` order, marked as history when said before we
//! joined the room (an answer can bring a line said since before
//! gossipsub does: that one is live). While a room has no other
//! neighbour in it (we just joined, or reconnected), its live lines wait
//! for the answers, up to [`HOLD_LIVE`], so history shows first; a room
//! heard live all along does not hold them. A server that sends a
//! forged record is asked no more, and gossipsub scores it down.
//!
//! A relay's answers also say how many peers it sees in the room. A peer
//! that joins a room announces itself once the answers are in (or after
//! [`ANNOUNCE_AT_THE_LATEST`]), unless one said the room is larger than
//! [`ANSWER_NEWCOMERS_UP_TO`]: then it announces itself just before it
//! first speaks, so a thousand newcomers do not cost a large room a
//! million deliveries of their names.

use std::collections::{HashMap, HashSet};

use web_time::{Duration, Instant};

use libp2p::{
    PeerId,
    gossipsub::{self, TopicHash},
};

use super::{ANSWER_NEWCOMERS_UP_TO, Engine, Event, due};
use crate::{
    behaviour::Role,
    clock,
    history::{
        SignedMessage, Verified,
        store::{Cursor, Journal, Limits, Loaded, MAX_ANSWER_RECORDS},
        sync::{HistoryAnswer, SyncEvent},
        verify,
    },
    rooms::Room,
    validate,
    wire::{ChatMessage, Payload},
};

/// Peers asked for a room's history after each (re)connection.
pub(super) const HISTORY_SOURCES: usize = 3;
/// Pages followed from one peer in one go.
const MAX_PAGES: u32 = 10;
/// Longest a room's live lines wait for the history asked for (so history
/// shows first, in order).
const HOLD_LIVE: Duration = Duration::from_secs(3);
/// The newest lines asked of a relay for the names of their authors, when
/// a line comes from an author we cannot name in a large room.
const NAMES_LINES: usize = 20;
/// Shortest gap between two such requests in one room.
const NAMES_GAP: Duration = Duration::from_secs(2);
/// Longest a peer that joined a room waits for history answers to say
/// how large the room is before it announces itself anyway (when no
/// relay answers at all).
const ANNOUNCE_AT_THE_LATEST: Duration = Duration::from_secs(10);
/// The application score of a peer that served a forged record: with
/// gossipsub's weight of 10 it lands below the graylist threshold (-80).
const FORGER_APP_SCORE: f64 = -10.0;

/// History settings of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// What to keep (and serve).
    pub limits: Limits,
    /// Whether to ask peers for what was said before we joined.
    pub fetch: bool,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            fetch: true,
        }
    }
}

impl Engine {
    /// Loads the history an earlier run saved and keeps writing it to
    /// `journal` (a relay's database, a page's IndexedDB). Call before
    /// [`Engine::run`]: the saved lines of each room show as history as
    /// soon as the engine joins it, before the network is back (a running
    /// engine takes them through
    /// [`EngineHandle::load_history`](super::EngineHandle::load_history)).
    pub fn load_history(&mut self, saved: Vec<SignedMessage>, journal: Box<dyn Journal>) -> Loaded {
        self.lock_history().load(saved, journal, validate::now_ms())
    }

    /// Reports what we keep of a room we join as history (a page shows its
    /// room from the browser's store; a room left and joined again shows
    /// again).
    pub(super) fn replay_history(&mut self, room: &Room) {
        if self.role != Role::Peer {
            return;
        }
        let topic = room.topic().hash();
        let page = self
            .lock_history()
            .page(&topic, None, MAX_ANSWER_RECORDS, validate::now_ms());
        for signed in page.nicks {
            if let Ok(Verified {
                from,
                payload: Payload::Nick(nick),
                ..
            }) = verify(&signed, &topic)
                && !nick.is_empty()
            {
                self.nicks.entry(from).or_insert(nick);
            }
        }
        for signed in page.lines {
            if let Ok(Verified {
                from,
                payload: Payload::Message(message),
                ..
            }) = verify(&signed, &topic)
            {
                let nick = self.nicks.get(&from).cloned();
                self.emit(Event::Message {
                    room: room.clone(),
                    from,
                    nick,
                    message,
                    history: true,
                });
            }
        }
    }

    pub(super) fn lock_history(&self) -> std::sync::MutexGuard<'_, crate::history::store::Store> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a room message gossipsub delivered. Returns false when the
    /// line was known already (it came as history first): not to be shown
    /// again.
    pub(super) fn keep_received(
        &mut self,
        message: &gossipsub::Message,
        from: PeerId,
        payload: &Payload,
    ) -> bool {
        let topic = message.topic.clone();
        if let Payload::Message(line) = payload
            && self
                .lock_history()
                .contains(&topic, &(line.created_ms, line.id.0))
        {
            return false;
        }
        let Some(record) = self.swarm.behaviour().gossipsub.tap().record(message) else {
            return true;
        };
        let verified = Verified {
            from,
            seqno: message.sequence_number.unwrap_or_default(),
            topic,
            payload: payload.clone(),
        };
        self.lock_history()
            .insert(&verified, &record, validate::now_ms());
        true
    }

    /// Keeps a room message we published (gossipsub returned its id).
    pub(super) fn keep_published(
        &mut self,
        topic: &TopicHash,
        data: &[u8],
        id: &gossipsub::MessageId,
    ) {
        if !self.rooms.contains_key(topic) {
            return;
        }
        let local = self.local_peer_id();
        let Some(seqno) = crate::history::seqno_of(id, local) else {
            return;
        };
        let Ok(payload) = crate::wire::decode(data) else {
            return;
        };
        let record = self
            .swarm
            .behaviour()
            .gossipsub
            .tap()
            .sign(topic, data, seqno);
        let verified = Verified {
            from: local,
            seqno,
            topic: topic.clone(),
            payload,
        };
        self.lock_history()
            .insert(&verified, &record, validate::now_ms());
    }

    /// `peer` subscribed to `topic`: if it is one of our rooms and we have
    /// asked fewer than [`HISTORY_SOURCES`] peers since connecting, ask it.
    pub(super) fn ask_history(&mut self, peer: PeerId, topic: &TopicHash) {
        if self.role != Role::Peer
            || !self.history_config.fetch
            || !self.rooms.contains_key(topic)
            || self.distrusted.contains(&peer)
        {
            return;
        }
        let asked = self.history_asked.entry(topic.clone()).or_default();
        if asked.len() >= HISTORY_SOURCES || !asked.insert(peer) {
            return;
        }
        let after = self.lock_history().newest(topic);
        tracing::debug!(%peer, %topic, ?after, "asking for history");
        self.history_pages.insert((peer, topic.clone()), 1);
        // Live lines wait for the answer only while the room has no other
        // neighbour in it (on joining, after a reconnect), or while they
        // wait anyway. A room heard live all along has nothing to wait
        // for: the answer can only fill a gap, and a peer whose asked
        // neighbour went (a pruned link, a relay restarting) held every
        // line of the room for a round trip when the next was asked.
        let heard_live = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(p, topics)| *p != peer && topics.contains(&topic));
        if !heard_live || self.held_live.contains_key(topic) {
            self.wait_for(peer, topic);
        }
        self.history_sync.fetch(peer, topic.clone(), after);
    }

    /// The last connection to `peer` closed: once it is back, it is asked
    /// again.
    pub(super) fn history_peer_gone(&mut self, peer: &PeerId) {
        self.history_sync.cancel(peer);
        for asked in self.history_asked.values_mut() {
            asked.remove(peer);
        }
        self.history_pages.retain(|(p, _), _| p != peer);
        let rooms: Vec<TopicHash> = self.held_live.keys().cloned().collect();
        for topic in rooms {
            self.history_done(*peer, &topic);
        }
    }

    /// What the history protocol reported.
    pub(super) fn on_history(&mut self, event: SyncEvent) {
        match event {
            SyncEvent::Fetched { peer, room, answer } => self.on_history_answer(peer, room, answer),
            SyncEvent::Failed { peer, room, error } => {
                tracing::debug!(%peer, %room, %error, "no history from this peer");
                self.history_done(peer, &room);
            }
            SyncEvent::Refused { peer } => {
                tracing::info!(%peer, "history requests too frequent; refused");
            }
            SyncEvent::Served => {}
        }
    }

    fn on_history_answer(&mut self, peer: PeerId, topic: TopicHash, answer: HistoryAnswer) {
        let Some(room) = self.rooms.get(&topic).cloned() else {
            return;
        };
        if let Some(members) = answer.members {
            let heard = self.room_size_heard.entry(topic.clone()).or_default();
            *heard = (*heard).max(members);
            if self.large_room(&topic) && self.announce_deferred.remove(&topic).is_some() {
                tracing::debug!(%room, members, "a large room: we announce ourselves when we first speak");
                self.announce_owed.insert(topic.clone());
            }
        }
        let now = validate::now_ms();
        let mut forged = 0;
        let mut check = |signed: &SignedMessage| match verify(signed, &topic) {
            Ok(verified) => Some(verified),
            Err(reason) => {
                forged += 1;
                tracing::warn!(%peer, %reason, "forged history record dropped");
                None
            }
        };
        let nicks: Vec<(Verified, &SignedMessage)> = answer
            .nicks
            .iter()
            .filter_map(|s| check(s).map(|v| (v, s)))
            .collect();
        let mut lines: Vec<(Verified, &SignedMessage, ChatMessage)> = answer
            .lines
            .iter()
            .filter_map(|s| check(s).map(|v| (v, s)))
            .filter_map(|(v, s)| match &v.payload {
                Payload::Message(line) => {
                    let line = line.clone();
                    Some((v, s, line))
                }
                Payload::Nick(_) => None,
            })
            .collect();
        let last: Option<Cursor> = lines.last().map(|(_, _, l)| (l.created_ms, l.id.0));

        if forged > 0 {
            self.distrusted.insert(peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, FORGER_APP_SCORE);
            self.emit(Event::HistoryRejected {
                room: room.clone(),
                peer,
                records: forged,
            });
        }

        // Names first, so the lines show under them; a name heard live
        // is newer than any in history.
        for (verified, signed) in nicks {
            self.lock_history().insert(&verified, signed, now);
            if let Payload::Nick(nick) = verified.payload
                && !nick.is_empty()
                && !self.nicks.contains_key(&verified.from)
            {
                self.nicks.insert(verified.from, nick);
            }
        }
        lines.sort_by_key(|(_, _, l)| (l.created_ms, l.id.0));
        let joined = self.joined_ms.get(&topic).copied().unwrap_or(i64::MAX);
        let mut shown = 0;
        for (verified, signed, line) in lines {
            let cursor = (line.created_ms, line.id.0);
            let mut history = self.lock_history();
            if history.contains(&topic, &cursor) {
                continue;
            }
            history.insert(&verified, signed, now);
            drop(history);
            shown += 1;
            let nick = self.nicks.get(&verified.from).cloned();
            self.emit(Event::Message {
                room: room.clone(),
                from: verified.from,
                nick,
                history: line.created_ms < joined,
                message: line,
            });
        }
        tracing::debug!(%peer, %topic, shown, forged, "history answer");
        self.emit(Event::HistoryFetched {
            room,
            peer,
            lines: shown,
        });
        self.history_done(peer, &topic);

        // Follow an honest server's further pages, a few at most.
        let pages = self.history_pages.entry((peer, topic.clone())).or_default();
        if answer.more == Some(true) && forged == 0 && *pages < MAX_PAGES {
            *pages += 1;
            if let Some(after) = last {
                self.history_sync.fetch(peer, topic, Some(after));
            }
        }
    }
}

/// Peers asked for history, by room.
pub(super) type Asked = HashMap<TopicHash, HashSet<PeerId>>;

/// A room's live lines, held while its history is on the way.
pub(super) struct HeldLive {
    waiting: HashSet<PeerId>,
    since: Instant,
    events: Vec<Event>,
}

impl Engine {
    /// `peer` was asked for lines of `topic`: the room's live lines wait
    /// for its answer.
    fn wait_for(&mut self, peer: PeerId, topic: &TopicHash) {
        self.held_live
            .entry(topic.clone())
            .or_insert_with(|| HeldLive {
                waiting: HashSet::new(),
                since: clock::now(),
                events: Vec::new(),
            })
            .waiting
            .insert(peer);
    }

    /// Holds a live line of a room whose history is on the way; returns it
    /// back when there is nothing to wait for.
    pub(super) fn hold_live(&mut self, topic: &TopicHash, event: Event) -> Option<Event> {
        match self.held_live.get_mut(topic) {
            Some(held) if !held.waiting.is_empty() => {
                held.events.push(event);
                None
            }
            _ => Some(event),
        }
    }

    /// `peer` answered (or failed) about `topic`: once nobody is left to
    /// wait for, the held live lines go out and, none having said the room
    /// is large, a peer that joined announces itself (not when the held
    /// lines merely time out: a relay slow to answer may yet say so).
    fn history_done(&mut self, peer: PeerId, topic: &TopicHash) {
        let all_in = match self.held_live.get_mut(topic) {
            Some(held) => {
                held.waiting.remove(&peer);
                held.waiting.is_empty()
            }
            // Released when they took too long: this answer was the one
            // waited for.
            None => true,
        };
        if !all_in {
            return;
        }
        self.release_live(topic);
        if self.announce_deferred.contains_key(topic) {
            self.announce_nick(topic.clone());
        }
    }

    fn release_live(&mut self, topic: &TopicHash) {
        if let Some(held) = self.held_live.remove(topic) {
            for mut event in held.events {
                // A name that came with the history meanwhile.
                if let Event::Message {
                    from,
                    nick: nick @ None,
                    ..
                } = &mut event
                {
                    *nick = self.nicks.get(from).cloned();
                }
                self.emit(event);
            }
        }
    }

    /// A line came from an author we cannot name, in a large room where
    /// nobody announced themselves to us: asks a relay in the room for its
    /// newest lines, whose answer carries their authors' names, and holds
    /// the room's live lines meanwhile (briefly, as for history).
    pub(super) fn ask_for_names(&mut self, topic: &TopicHash) {
        if self
            .held_live
            .get(topic)
            .is_some_and(|h| !h.waiting.is_empty())
            || self
                .names_asked
                .get(topic)
                .is_some_and(|at| clock::since(*at) < NAMES_GAP)
        {
            return;
        }
        let relay = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(p, topics)| {
                topics.contains(&topic) && self.neighbours.relay(p) && !self.distrusted.contains(p)
            })
            .map(|(p, _)| *p)
            .next();
        let Some(relay) = relay else {
            return;
        };
        tracing::debug!(%relay, %topic, "asking for the names of the room's speakers");
        self.names_asked.insert(topic.clone(), clock::now());
        // One page only: the newest lines are all it is for.
        self.history_pages.insert((relay, topic.clone()), MAX_PAGES);
        self.wait_for(relay, topic);
        self.history_sync
            .fetch_up_to(relay, topic.clone(), None, NAMES_LINES);
    }

    /// Whether a room is too large to answer each newcomer in: we know
    /// more than [`ANSWER_NEWCOMERS_UP_TO`] members, or a relay told us of
    /// more.
    pub(super) fn large_room(&self, topic: &TopicHash) -> bool {
        let told = self.room_size_heard.get(topic).map_or(0, |n| *n as usize);
        self.members.count(topic).max(told) > ANSWER_NEWCOMERS_UP_TO
    }

    /// We joined `topic`: a peer that asks for history waits for the
    /// answers (they say how large the room is) before it announces
    /// itself. Returns whether the announcement waits.
    pub(super) fn defer_announce(&mut self, topic: TopicHash) -> bool {
        if self.role != Role::Peer || !self.history_config.fetch {
            return false;
        }
        self.announce_deferred
            .insert(topic, clock::now() + ANNOUNCE_AT_THE_LATEST);
        true
    }

    /// Announces ourselves in the rooms whose size nobody told us in time.
    pub(super) fn announce_deferred_due(&mut self) {
        for topic in due(&self.announce_deferred) {
            self.announce_nick(topic);
        }
    }

    /// A relay counts the peers in each room once a second, for its
    /// history answers.
    pub(super) fn count_room_members(&mut self) {
        if self.role != Role::Relay {
            return;
        }
        let mut sizes: HashMap<TopicHash, HashSet<PeerId>> = HashMap::new();
        // Other relays follow rooms for their own peers: not members.
        let peers = self.swarm.behaviour().gossipsub.all_peers();
        for (peer, topics) in peers.filter(|(p, _)| !self.neighbours.relay(p)) {
            for topic in topics {
                sizes.entry(topic.clone()).or_default().insert(*peer);
            }
        }
        *self
            .room_sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sizes;
    }

    /// Live lines held longer than [`HOLD_LIVE`] go out anyway.
    pub(super) fn release_late_live(&mut self) {
        let now = clock::now();
        let late: Vec<TopicHash> = self
            .held_live
            .iter()
            .filter(|(_, held)| now.duration_since(held.since) >= HOLD_LIVE)
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in late {
            self.release_live(&topic);
        }
    }
}
