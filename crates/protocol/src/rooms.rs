//! Rooms: a room `R` is the gossipsub topic `meshtalk/room/R`.

use std::{collections::HashMap, fmt, str::FromStr};

use libp2p::{
    PeerId,
    gossipsub::{IdentTopic, TopicHash},
};
use web_time::Instant;

/// Prefix of every room topic.
pub const TOPIC_PREFIX: &str = "meshtalk/room/";
/// The room peers join when none is given.
pub const DEFAULT_ROOM: &str = "lobby";
/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// A valid room name: 1 to 64 characters from `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room(String);

/// A room name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid room name {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
pub struct InvalidRoom(pub String);

impl Room {
    /// Checks `name` against the naming rule.
    pub fn new(name: &str) -> Result<Self, InvalidRoom> {
        let ok = (1..=MAX_ROOM_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidRoom(name.to_owned()))
        }
    }

    /// The default room, `lobby`.
    pub fn lobby() -> Self {
        Self(DEFAULT_ROOM.to_owned())
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The room's gossipsub topic.
    pub fn topic(&self) -> IdentTopic {
        IdentTopic::new(self.topic_string())
    }

    /// The topic string, `meshtalk/room/<name>`.
    pub fn topic_string(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.0)
    }

    /// The DHT key whose providers are the room's members: the bytes of
    /// the topic string.
    pub fn provider_key(&self) -> libp2p::kad::RecordKey {
        libp2p::kad::RecordKey::new(&self.topic_string())
    }

    /// The room a topic belongs to, if it is a valid room topic.
    pub fn from_topic(topic: &TopicHash) -> Option<Self> {
        Self::new(topic.as_str().strip_prefix(TOPIC_PREFIX)?).ok()
    }
}

impl Default for Room {
    fn default() -> Self {
        Self::lobby()
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Room {
    type Err = InvalidRoom;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The members of each room we have heard from, at most `cap` per room:
/// beyond it the one heard from least recently is forgotten, so a flood of
/// fresh identities cannot grow memory without bound.
#[derive(Debug)]
pub struct Members {
    rooms: HashMap<TopicHash, HashMap<PeerId, Instant>>,
    cap: usize,
}

/// What hearing from a peer changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// The peer was not a member yet.
    pub new: bool,
    /// The member forgotten to make room for it.
    pub forgotten: Option<PeerId>,
}

impl Members {
    /// No members yet; at most `cap` per room.
    pub fn new(cap: usize) -> Self {
        Self {
            rooms: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// We heard from `peer` in `room` at `now`.
    pub fn heard(&mut self, room: &TopicHash, peer: PeerId, now: Instant) -> Heard {
        let members = self.rooms.entry(room.clone()).or_default();
        if members.insert(peer, now).is_some() {
            return Heard::default();
        }
        let forgotten = if members.len() > self.cap {
            let quietest = members
                .iter()
                .filter(|(p, _)| **p != peer)
                .min_by_key(|(_, heard)| **heard)
                .map(|(p, _)| *p);
            if let Some(p) = quietest {
                members.remove(&p);
            }
            quietest
        } else {
            None
        };
        Heard {
            new: true,
            forgotten,
        }
    }

    /// How many members of `room` we know.
    pub fn count(&self, room: &TopicHash) -> usize {
        self.rooms.get(room).map_or(0, HashMap::len)
    }

    /// `peer` left `room`; true if it was a member.
    pub fn left(&mut self, room: &TopicHash, peer: &PeerId) -> bool {
        self.rooms
            .get_mut(room)
            .is_some_and(|members| members.remove(peer).is_some())
    }

    /// We left `room`: forget its members.
    pub fn forget_room(&mut self, room: &TopicHash) {
        self.rooms.remove(room);
    }

    /// The rooms we know members of.
    pub fn rooms(&self) -> Vec<TopicHash> {
        self.rooms.keys().cloned().collect()
    }

    /// Whether `peer` is a member of any room.
    pub fn anywhere(&self, peer: &PeerId) -> bool {
        self.rooms.values().any(|m| m.contains_key(peer))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may read the wall clock
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn beyond_the_cap_the_quietest_member_is_forgotten() {
        let room = Room::lobby().topic().hash();
        let mut members = Members::new(2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        assert!(members.heard(&room, a, t0).new);
        assert!(members.heard(&room, b, later(1)).new);
        // a speaks again: b is now the quietest.
        assert_eq!(members.heard(&room, a, later(2)), Heard::default());
        let heard = members.heard(&room, c, later(3));
        assert_eq!(
            heard,
            Heard {
                new: true,
                forgotten: Some(b)
            }
        );
        assert!(members.anywhere(&a) && members.anywhere(&c) && !members.anywhere(&b));
        assert!(members.left(&room, &a));
        assert!(!members.left(&room, &a));
    }

    #[test]
    fn names_follow_the_rule() {
        for good in ["lobby", "a", "Rust-2024_v1.0", &"x".repeat(64)] {
            assert!(Room::new(good).is_ok(), "{good}");
        }
        for bad in ["", "with space", "slash/room", "ünï", &"x".repeat(65)] {
            assert_eq!(Room::new(bad), Err(InvalidRoom(bad.to_owned())));
        }
    }

    #[test]
    fn topic_round_trips() {
        let room = Room::new("dev").unwrap_or_default();
        assert_eq!(room.topic_string(), "meshtalk/room/dev");
        assert_eq!(Room::from_topic(&room.topic().hash()), Some(room));
        assert_eq!(
            Room::from_topic(&IdentTopic::new("p2p-pubsub").hash()),
            None
        );
        assert_eq!(
            Room::from_topic(&IdentTopic::new("meshtalk/room/a b").hash()),
            None
        );
    }
}
