//! History records per room, in `created` order, bounded by count and age.
//!
//! Chat lines (`SEND_MESSAGE`) are kept by `(created, message id)`; of
//! nickname records (`UPDATE_PEER`) only each author's newest, so a late
//! joiner sees history under the names people chose.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    time::Duration,
};

use libp2p::{PeerId, gossipsub::TopicHash};
use prost::Message as _;

use super::{SignedMessage, Verified};
use crate::wire::{MESSAGE_ID_LEN, Payload};

/// Most records one answer carries.
pub const MAX_ANSWER_RECORDS: usize = 500;
/// Most bytes of records one answer carries.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Where a room's history continues: after this message.
pub type Cursor = (i64, [u8; MESSAGE_ID_LEN]);

/// How much history to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Chat lines kept per room; 0 keeps none.
    pub per_room: usize,
    /// Chat lines kept in all rooms together; beyond it the oldest go,
    /// whatever their room.
    pub total: usize,
    /// Lines older than this go.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_room: 1000,
            total: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Default)]
struct RoomHistory {
    lines: BTreeMap<Cursor, SignedMessage>,
    nicks: HashMap<PeerId, SignedMessage>,
}

/// Which record of a room a [`Journal`] entry is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A chat line.
    Line(Cursor),
    /// An author's newest nickname record.
    Nick(PeerId),
}

/// Where a [`Store`] writes down what it keeps and drops, so that the next
/// run can load it (a relay's database). Calls must not block for long:
/// they are made from the engine's loop.
pub trait Journal: Send {
    /// A record was kept (a nickname record replaces the author's last).
    fn kept(&mut self, room: &TopicHash, key: &Key, record: &SignedMessage);
    /// A line went: over the count or the age limit.
    fn dropped(&mut self, room: &TopicHash, key: &Key);
}

/// What [`Store::load`] did with saved records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Records kept.
    pub kept: usize,
    /// Records that failed verification (tampered or damaged), dropped.
    pub refused: usize,
}

/// A page of a room's history.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Chat lines, oldest first.
    pub lines: Vec<SignedMessage>,
    /// The newest nickname record of each author of those lines.
    pub nicks: Vec<SignedMessage>,
    /// Whether more lines follow the last.
    pub more: bool,
}

/// History records per room.
pub struct Store {
    limits: Limits,
    rooms: HashMap<TopicHash, RoomHistory>,
    journal: Option<Box<dyn Journal>>,
    /// Lines in all rooms.
    lines: usize,
}

impl Store {
    /// An empty store keeping what `limits` allow.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: HashMap::new(),
            journal: None,
            lines: 0,
        }
    }

    /// Loads records saved by an earlier run, verifying each as if a peer
    /// had served it, and from then on writes what is kept and dropped to
    /// `journal` (which holds the loaded records already; what the limits
    /// drop of them is written as dropped).
    ///
    /// The store may hold records already (a page reads its saved history
    /// while it connects): those go to the journal too, and an author's
    /// nickname kept already is newer than a saved one, so it stays.
    pub fn load(
        &mut self,
        saved: Vec<SignedMessage>,
        journal: Box<dyn Journal>,
        now_ms: i64,
    ) -> Loaded {
        let held: Vec<(TopicHash, Key, SignedMessage)> =
            self.rooms
                .iter()
                .flat_map(|(topic, room)| {
                    let lines = room.lines.iter().map(|(cursor, record)| {
                        (topic.clone(), Key::Line(*cursor), record.clone())
                    });
                    let nicks = room
                        .nicks
                        .iter()
                        .map(|(peer, record)| (topic.clone(), Key::Nick(*peer), record.clone()));
                    lines.chain(nicks)
                })
                .collect();
        let mut loaded = Loaded::default();
        let mut keys = Vec::new();
        for record in saved {
            let topic = TopicHash::from_raw(record.topic.clone().unwrap_or_default());
            match super::verify(&record, &topic) {
                Ok(verified) => {
                    let key = key_of(&verified);
                    let newer_nick = matches!(&key, Key::Nick(peer) if self.has_nick(&topic, peer));
                    keys.push((topic, key));
                    if !newer_nick {
                        self.insert(&verified, &record, now_ms);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "saved history record refused");
                    loaded.refused += 1;
                }
            }
        }
        // Records held before the load that the limits left in place go
        // to the journal too.
        let held: Vec<_> = held
            .into_iter()
            .filter(|(topic, key, _)| match key {
                Key::Line(cursor) => self.contains(topic, cursor),
                Key::Nick(peer) => self.has_nick(topic, peer),
            })
            .collect();
        let journal = self.journal.insert(journal);
        for (topic, key, record) in held {
            journal.kept(&topic, &key, &record);
        }
        // What did not fit (or aged out) goes from the journal too.
        for (topic, key) in keys {
            let here = match &key {
                Key::Line(cursor) => self.contains(&topic, cursor),
                Key::Nick(_) => true,
            };
            if here {
                loaded.kept += 1;
            } else if let Some(journal) = self.journal.as_mut() {
                journal.dropped(&topic, &key);
            }
        }
        loaded
    }

    /// Whether this store keeps anything.
    pub fn enabled(&self) -> bool {
        self.limits.per_room > 0
    }

    /// Keeps a verified record. Returns false when it was there already
    /// (or is not kept: too old, or history is off).
    pub fn insert(&mut self, record: &Verified, signed: &SignedMessage, now_ms: i64) -> bool {
        if !self.enabled() {
            return false;
        }
        match &record.payload {
            Payload::Message(line) => {
                let oldest = now_ms.saturating_sub(self.limits.max_age.as_millis() as i64);
                if line.created_ms < oldest {
                    return false;
                }
                let topic = &record.topic;
                let key = (line.created_ms, line.id.0);
                let room = self.rooms.entry(topic.clone()).or_default();
                if room.lines.contains_key(&key) {
                    return false;
                }
                room.lines.insert(key, signed.clone());
                let mut gone = Vec::new();
                while room.lines.len() > self.limits.per_room {
                    if let Some((old, _)) = room.lines.pop_first() {
                        gone.push((topic.clone(), old));
                    }
                }
                self.lines = self.lines + 1 - gone.len();
                while self.lines > self.limits.total {
                    match self.pop_oldest() {
                        Some(old) => gone.push(old),
                        None => break,
                    }
                }
                let kept = self.contains(topic, &key);
                if let Some(journal) = self.journal.as_mut() {
                    for (room, old) in gone {
                        if room != *topic || old != key {
                            journal.dropped(&room, &Key::Line(old));
                        }
                    }
                    if kept {
                        journal.kept(topic, &Key::Line(key), signed);
                    }
                }
                kept
            }
            Payload::Nick(_) => {
                let room = self.rooms.entry(record.topic.clone()).or_default();
                let new = room.nicks.get(&record.from) != Some(signed);
                room.nicks.insert(record.from, signed.clone());
                // As many names as lines, at most: made-up authors do not
                // grow the store without bound.
                let extra = room.nicks.len().saturating_sub(self.limits.per_room);
                let gone: Vec<PeerId> = room
                    .nicks
                    .keys()
                    .filter(|peer| **peer != record.from)
                    .take(extra)
                    .copied()
                    .collect();
                for peer in &gone {
                    room.nicks.remove(peer);
                }
                if let Some(journal) = self.journal.as_mut() {
                    for peer in gone {
                        journal.dropped(&record.topic, &Key::Nick(peer));
                    }
                    if new {
                        journal.kept(&record.topic, &Key::Nick(record.from), signed);
                    }
                }
                new
            }
        }
    }

    /// Whether the room holds the line with this cursor.
    pub fn contains(&self, room: &TopicHash, cursor: &Cursor) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.lines.contains_key(cursor))
    }

    /// Whether the room holds a nickname record of this author.
    fn has_nick(&self, room: &TopicHash, peer: &PeerId) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.nicks.contains_key(peer))
    }

    /// The newest line's cursor in a room.
    pub fn newest(&self, room: &TopicHash) -> Option<Cursor> {
        self.rooms
            .get(room)?
            .lines
            .last_key_value()
            .map(|(k, _)| *k)
    }

    /// Lines of a room: after `after` (oldest first, then `more` says
    /// whether others follow), or with no cursor the newest; at most
    /// `limit` (and [`MAX_ANSWER_RECORDS`], [`MAX_ANSWER_BYTES`]).
    pub fn page(
        &mut self,
        room: &TopicHash,
        after: Option<Cursor>,
        limit: usize,
        now_ms: i64,
    ) -> Page {
        self.expire(now_ms);
        let Some(history) = self.rooms.get(room) else {
            return Page::default();
        };
        let limit = limit.clamp(1, MAX_ANSWER_RECORDS);
        let mut bytes = 0;
        let mut fits = |line: &SignedMessage| {
            bytes += line.encoded_len() + 8;
            bytes <= MAX_ANSWER_BYTES
        };
        let (lines, more) = match after {
            Some(cursor) => {
                let mut rest = history
                    .lines
                    .range((Bound::Excluded(cursor), Bound::Unbounded))
                    .map(|(_, line)| line);
                let lines: Vec<SignedMessage> = rest
                    .by_ref()
                    .take(limit)
                    .take_while(|line| fits(line))
                    .cloned()
                    .collect();
                let more = history
                    .lines
                    .range((Bound::Excluded(cursor), Bound::Unbounded))
                    .nth(lines.len())
                    .is_some();
                (lines, more)
            }
            None => {
                let mut lines: Vec<SignedMessage> = history
                    .lines
                    .values()
                    .rev()
                    .take(limit)
                    .take_while(|line| fits(line))
                    .cloned()
                    .collect();
                lines.reverse();
                (lines, false)
            }
        };
        let authors: std::collections::HashSet<Vec<u8>> =
            lines.iter().filter_map(|l| l.from.clone()).collect();
        let nicks = history
            .nicks
            .iter()
            .filter(|(peer, _)| authors.contains(&peer.to_bytes()))
            .map(|(_, nick)| nick.clone())
            .collect();
        Page { lines, nicks, more }
    }

    /// Takes the oldest line of all rooms out.
    fn pop_oldest(&mut self) -> Option<(TopicHash, Cursor)> {
        let topic = self
            .rooms
            .iter()
            .filter_map(|(topic, r)| r.lines.first_key_value().map(|(k, _)| (*k, topic)))
            .min()
            .map(|(_, topic)| topic.clone())?;
        let (old, _) = self.rooms.get_mut(&topic)?.lines.pop_first()?;
        self.lines -= 1;
        Some((topic, old))
    }

    /// Forgets a room's history (the journal hears of every record).
    pub fn clear(&mut self, room: &TopicHash) {
        let Some(history) = self.rooms.remove(room) else {
            return;
        };
        self.lines -= history.lines.len();
        if let Some(journal) = self.journal.as_mut() {
            for cursor in history.lines.into_keys() {
                journal.dropped(room, &Key::Line(cursor));
            }
            for peer in history.nicks.into_keys() {
                journal.dropped(room, &Key::Nick(peer));
            }
        }
    }

    /// Drops the lines older than the age limit.
    pub fn expire(&mut self, now_ms: i64) {
        let oldest = now_ms.saturating_sub(self.limits.max_age.as_millis() as i64);
        for (topic, history) in &mut self.rooms {
            while history
                .lines
                .first_key_value()
                .is_some_and(|((created, _), _)| *created < oldest)
            {
                let popped = history.lines.pop_first();
                self.lines -= usize::from(popped.is_some());
                if let (Some((old, _)), Some(journal)) = (popped, self.journal.as_mut()) {
                    journal.dropped(topic, &Key::Line(old));
                }
            }
        }
    }

    /// Lines kept in all rooms.
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record's key in a database: the room, then the line's cursor or the
/// nickname's author. All of a room's keys start with
/// [`room_key_prefix`].
pub fn storage_key(room: &TopicHash, key: &Key) -> Vec<u8> {
    let mut bytes = room_key_prefix(room);
    match key {
        Key::Line((created, id)) => {
            bytes.push(0);
            bytes.extend_from_slice(&created.to_be_bytes());
            bytes.extend_from_slice(id);
        }
        Key::Nick(peer) => {
            bytes.push(1);
            bytes.extend_from_slice(&peer.to_bytes());
        }
    }
    bytes
}

/// What every [`storage_key`] of a room starts with.
pub fn room_key_prefix(room: &TopicHash) -> Vec<u8> {
    let topic = room.as_str().as_bytes();
    let mut bytes = Vec::with_capacity(topic.len() + 32);
    bytes.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    bytes.extend_from_slice(topic);
    bytes
}

/// The key a verified record is kept under.
fn key_of(record: &Verified) -> Key {
    match &record.payload {
        Payload::Message(line) => Key::Line((line.created_ms, line.id.0)),
        Payload::Nick(_) => Key::Nick(record.from),
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::{
        history::{sign, verify},
        wire::{ChatMessage, MessageId, encode},
    };

    fn room() -> TopicHash {
        TopicHash::from_raw("meshtalk/room/store")
    }

    fn line(key: &Keypair, created_ms: i64, n: u8) -> (Verified, SignedMessage) {
        let message = ChatMessage {
            text: format!("line {n}"),
            created_ms,
            id: MessageId([n; MESSAGE_ID_LEN]),
        };
        let signed = sign(key, &room(), &encode(&Payload::Message(message)), n.into());
        (verify(&signed, &room()).expect("valid"), signed)
    }

    fn texts(page: &Page) -> Vec<String> {
        page.lines
            .iter()
            .map(|l| match verify(l, &room()).expect("valid").payload {
                Payload::Message(m) => m.text,
                Payload::Nick(n) => n,
            })
            .collect()
    }

    #[test]
    fn lines_come_in_created_order_once_each_and_page_by_cursor() {
        let key = Keypair::generate_ed25519();
        let now = 1_000_000_000;
        let mut store = Store::new(Limits::default());
        for n in [3u8, 1, 2] {
            let (v, s) = line(&key, now + i64::from(n), n);
            assert!(store.insert(&v, &s, now));
            assert!(!store.insert(&v, &s, now), "a duplicate is no news");
        }
        let all = store.page(&room(), None, 10, now);
        assert_eq!(texts(&all), ["line 1", "line 2", "line 3"]);
        assert!(!all.more);
        let first = store.page(&room(), Some((0, [0; MESSAGE_ID_LEN])), 2, now);
        assert_eq!(texts(&first), ["line 1", "line 2"]);
        assert!(first.more);
        let cursor = (now + 2, [2; MESSAGE_ID_LEN]);
        let rest = store.page(&room(), Some(cursor), 2, now);
        assert_eq!(texts(&rest), ["line 3"]);
        assert!(!rest.more);
        assert_eq!(store.newest(&room()), Some((now + 3, [3; MESSAGE_ID_LEN])));
    }

    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Journal for Recorder {
        fn kept(&mut self, _: &TopicHash, key: &Key, _: &SignedMessage) {
            self.0.lock().expect("lock").push(format!("kept {key:?}"));
        }
        fn dropped(&mut self, _: &TopicHash, key: &Key) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("dropped {key:?}"));
        }
    }

    #[test]
    fn a_journal_hears_of_what_is_kept_and_dropped_and_saved_records_are_checked() {
        let key = Keypair::generate_ed25519();
        let now = 1_000_000_000;
        let limits = Limits {
            per_room: 2,
            ..Limits::default()
        };
        let saved: Vec<SignedMessage> = (1..=3u8)
            .map(|n| line(&key, now + i64::from(n), n).1)
            .collect();
        let mut tampered = saved[0].clone();
        tampered.data = Some(b"changed on disk".to_vec());
        let recorder = Recorder::default();
        let mut store = Store::new(limits);
        let mut all = saved.clone();
        all.push(tampered);
        let loaded = store.load(all, Box::new(recorder.clone()), now);
        assert_eq!(
            loaded,
            Loaded {
                kept: 2,
                refused: 1
            }
        );
        // The oldest saved line did not fit: it goes from the journal.
        let cursor = |n: u8| (now + i64::from(n), [n; MESSAGE_ID_LEN]);
        assert_eq!(
            *recorder.0.lock().expect("lock"),
            [format!("dropped {:?}", Key::Line(cursor(1)))]
        );
        let (v, s) = line(&key, now + 4, 4);
        assert!(store.insert(&v, &s, now));
        assert_eq!(
            recorder.0.lock().expect("lock")[1..],
            [
                format!("dropped {:?}", Key::Line(cursor(2))),
                format!("kept {:?}", Key::Line(cursor(4))),
            ]
        );
    }

    fn nick(key: &Keypair, name: &str, seq: u64) -> (Verified, SignedMessage) {
        let signed = sign(key, &room(), &encode(&Payload::Nick(name.into())), seq);
        (verify(&signed, &room()).expect("valid"), signed)
    }

    #[test]
    fn records_held_before_a_late_load_are_journaled_and_their_newer_nick_stays() {
        let key = Keypair::generate_ed25519();
        let now = 1_000_000_000;
        let mut store = Store::new(Limits::default());
        // Heard from the network while the saved history was being read.
        let (v, s) = line(&key, now + 2, 2);
        assert!(store.insert(&v, &s, now));
        let (v, s) = nick(&key, "now", 10);
        assert!(store.insert(&v, &s, now));

        let saved = vec![line(&key, now + 1, 1).1, nick(&key, "before", 1).1];
        let recorder = Recorder::default();
        let loaded = store.load(saved, Box::new(recorder.clone()), now);
        assert_eq!(
            loaded,
            Loaded {
                kept: 2,
                refused: 0
            }
        );
        let all = store.page(&room(), None, 10, now);
        assert_eq!(texts(&all), ["line 1", "line 2"]);
        assert_eq!(
            texts(&Page {
                lines: all.nicks,
                ..Page::default()
            }),
            ["now"]
        );
        let journal = recorder.0.lock().expect("lock").clone();
        let cursor = (now + 2, [2; MESSAGE_ID_LEN]);
        assert!(
            journal.contains(&format!("kept {:?}", Key::Line(cursor))),
            "{journal:?}"
        );
        assert!(
            journal.contains(&format!("kept {:?}", Key::Nick(key.public().to_peer_id()))),
            "{journal:?}"
        );
        assert_eq!(
            journal.len(),
            2,
            "the saved records are the journal's already: {journal:?}"
        );
    }

    #[test]
    fn count_and_age_limits_hold() {
        let key = Keypair::generate_ed25519();
        let now = 10_000_000_000;
        let limits = Limits {
            per_room: 3,
            max_age: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        for n in 1..=5u8 {
            let (v, s) = line(&key, now + i64::from(n), n);
            store.insert(&v, &s, now);
        }
        assert_eq!(
            texts(&store.page(&room(), None, 10, now)),
            ["line 3", "line 4", "line 5"]
        );
        // Older than a minute: not kept, and what ages out goes.
        let (v, s) = line(&key, now - 61_000, 9);
        assert!(!store.insert(&v, &s, now));
        assert!(store.page(&room(), None, 10, now + 61_000).lines.is_empty());
        assert!(store.is_empty());
        // Over the total, the oldest line of any room goes.
        let mut store = Store::new(Limits {
            per_room: 10,
            total: 3,
            ..Limits::default()
        });
        let other = TopicHash::from_raw("meshtalk/room/other");
        for n in 1..=4u8 {
            let message = ChatMessage {
                text: format!("other {n}"),
                created_ms: now + i64::from(n) * 10,
                id: MessageId([n; MESSAGE_ID_LEN]),
            };
            let signed = sign(&key, &other, &encode(&Payload::Message(message)), n.into());
            let verified = verify(&signed, &other).expect("valid");
            store.insert(&verified, &signed, now);
            let (v, s) = line(&key, now + i64::from(n) * 10 + 5, n);
            store.insert(&v, &s, now);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(
            texts(&store.page(&room(), None, 10, now)),
            ["line 3", "line 4"]
        );
        assert_eq!(store.page(&other, None, 10, now).lines.len(), 1);
        // Off: nothing kept.
        let mut off = Store::new(Limits {
            per_room: 0,
            ..Limits::default()
        });
        let (v, s) = line(&key, now, 1);
        assert!(!off.insert(&v, &s, now));
    }
}
