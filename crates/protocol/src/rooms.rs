//! Rooms: a room `R` is the gossipsub topic `meshtalk/room/R`.

use std::{fmt, str::FromStr};

use libp2p::gossipsub::{IdentTopic, TopicHash};

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

#[cfg(test)]
mod tests {
    use super::*;

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
