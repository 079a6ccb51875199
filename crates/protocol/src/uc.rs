//! Universal-connectivity compatibility: what libp2p's best-known chat demo
//! (github.com/libp2p/universal-connectivity, its js peer) speaks, so that
//! its users and ours chat together (`meshtalk chat --compat uc`).
//!
//! - Chat: the topic [`CHAT_TOPIC`], each message raw UTF-8 text, signed.
//! - Message ids on its topics: SHA-256 of the message's sequence number
//!   written in decimal ([`message_id`]). Every meshtalk node, relays
//!   included, uses them on these topics, so all agree on what a duplicate
//!   is (and IHAVE/IWANT work across implementations).
//! - Direct messages: [`DM_PROTOCOL`], one varint-length-prefixed
//!   [`DirectMessageRequest`] answered by one [`DirectMessageResponse`]
//!   with status 200 (proto3, `proto/uc_direct_message.proto`).
//!
//! - Browser peer discovery: pages with `?compat=uc` publish and read
//!   their peer records (js-libp2p's pubsub-peer-discovery format, which
//!   meshtalk's pages use anyway) on [`BROWSER_DISCOVERY_TOPIC`], and link
//!   directly (`/webrtc`) to the browsers they find there.
//!
//! - Files: announced on [`FILE_TOPIC`] by an id alone (UTF-8; its js
//!   peer uses a UUID, meshtalk the SHA-256 in hex), fetched from the
//!   peer that announced it with [`FILE_PROTOCOL`]: the id, length-prefixed,
//!   answered by the whole file, length-prefixed. Its peers fetch every
//!   announced file at once and read at most [`MAX_FILE`] (js's default
//!   length-prefix limit), so meshtalk does the same with `--compat uc`
//!   (within `--max-file-size`) and announces nothing larger.

use libp2p::{PeerId, StreamProtocol, gossipsub};
use sha2::{Digest, Sha256};

use crate::{
    rooms::Room,
    validate::{MAX_TEXT_BYTES, Rejection},
};

/// The chat topic.
pub const CHAT_TOPIC: &str = "universal-connectivity";
/// The topic on which files are announced.
pub const FILE_TOPIC: &str = "universal-connectivity-file";
/// The file-exchange protocol.
pub const FILE_PROTOCOL: StreamProtocol = StreamProtocol::new("/universal-connectivity-file/1");
/// The largest file its peers take: 4 MiB, the default limit of the
/// length-prefix decoder its js peer reads files with.
pub const MAX_FILE: u64 = 4 * 1024 * 1024;
/// The longest file id taken, in bytes.
pub const MAX_FILE_ID: usize = 256;
/// The browser peers' pubsub-peer-discovery topic.
pub const BROWSER_DISCOVERY_TOPIC: &str = "universal-connectivity-browser-peer-discovery";
/// The direct-message protocol.
pub const DM_PROTOCOL: StreamProtocol = StreamProtocol::new("/universal-connectivity/dm/1.0.0");
/// The only direct-message type it sends and accepts.
pub const TEXT_PLAIN: &str = "text/plain";
/// The client version we give in direct messages' metadata.
pub const CLIENT_VERSION: &str = concat!("meshtalk/", env!("CARGO_PKG_VERSION"));
/// `Status.OK`.
pub const STATUS_OK: i32 = 200;
/// `Status.ERROR`.
pub const STATUS_ERROR: i32 = 500;

/// Whether `topic` is one of universal-connectivity's.
pub fn is_uc_topic(topic: &gossipsub::TopicHash) -> bool {
    [CHAT_TOPIC, FILE_TOPIC, BROWSER_DISCOVERY_TOPIC].contains(&topic.as_str())
}

/// The file topic, to subscribe and publish to.
pub fn file_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(FILE_TOPIC)
}

/// The room its chat shows as (events and screens name rooms).
pub fn room() -> Room {
    Room::new(CHAT_TOPIC).unwrap_or_else(|_| Room::lobby())
}

/// The gossipsub message id: universal-connectivity's on its topics
/// (SHA-256 of the decimal sequence number), gossipsub's default elsewhere
/// (the source's base58 peer id followed by the decimal sequence number,
/// which meshtalk's history relies on).
pub fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let seqno = message.sequence_number.unwrap_or_default().to_string();
    if is_uc_topic(&message.topic) {
        return gossipsub::MessageId::new(&Sha256::digest(seqno.as_bytes()));
    }
    let source = match message.source {
        Some(peer) => peer.to_base58(),
        // What gossipsub's default names unsigned messages by.
        None => PeerId::from_bytes(&[0, 1, 0])
            .map(|p| p.to_base58())
            .unwrap_or_default(),
    };
    gossipsub::MessageId::from(source + &seqno)
}

/// The text of a chat message, if it is a line we show: UTF-8 and at most
/// [`MAX_TEXT_BYTES`], like meshtalk's own lines.
pub fn check_chat(data: &[u8]) -> Result<&str, Rejection> {
    if data.len() > MAX_TEXT_BYTES {
        return Err(Rejection::TextTooLong(data.len()));
    }
    std::str::from_utf8(data).map_err(|_| Rejection::NotUtf8("text"))
}

/// A file id from an announcement or a request: UTF-8, not empty, at most
/// [`MAX_FILE_ID`] bytes.
pub fn check_file_id(data: &[u8]) -> Result<&str, Rejection> {
    if data.is_empty() || data.len() > MAX_FILE_ID {
        return Err(Rejection::Malformed(format!(
            "file id of {} bytes (1 to {MAX_FILE_ID})",
            data.len()
        )));
    }
    std::str::from_utf8(data).map_err(|_| Rejection::NotUtf8("file id"))
}

/// `Metadata`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Metadata {
    /// The sender's software.
    #[prost(string, tag = "1")]
    pub client_version: String,
    /// When it was sent; the js peer writes milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

impl Metadata {
    /// Ours, now.
    pub fn now() -> Self {
        Self {
            client_version: CLIENT_VERSION.to_owned(),
            timestamp: crate::validate::now_ms(),
        }
    }
}

/// `DirectMessageRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DirectMessageRequest {
    /// Who sent it, and when.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    /// The text.
    #[prost(string, tag = "2")]
    pub content: String,
    /// Its media type: always [`TEXT_PLAIN`].
    #[prost(string, tag = "3")]
    pub r#type: String,
}

/// `DirectMessageResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DirectMessageResponse {
    /// Who answered, and when.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    /// [`STATUS_OK`] or [`STATUS_ERROR`].
    #[prost(int32, tag = "2")]
    pub status: i32,
    /// Why, with an error.
    #[prost(string, optional, tag = "3")]
    pub status_text: Option<String>,
}

impl DirectMessageRequest {
    /// A line of ours.
    pub fn new(text: &str) -> Self {
        Self {
            metadata: Some(Metadata::now()),
            content: text.to_owned(),
            r#type: TEXT_PLAIN.to_owned(),
        }
    }

    /// The text, if it is a line we show.
    pub fn check(&self) -> Result<&str, Rejection> {
        if self.r#type != TEXT_PLAIN {
            return Err(Rejection::Malformed(format!(
                "media type {:?}, not {TEXT_PLAIN}",
                self.r#type
            )));
        }
        check_chat(self.content.as_bytes())
    }
}

impl DirectMessageResponse {
    /// Our answer: OK, or an error saying why.
    pub fn answer(result: Result<(), String>) -> Self {
        let (status, status_text) = match result {
            Ok(()) => (STATUS_OK, None),
            Err(why) => (STATUS_ERROR, Some(why)),
        };
        Self {
            metadata: Some(Metadata::now()),
            status,
            status_text,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn message(topic: &str, seqno: u64) -> gossipsub::Message {
        gossipsub::Message {
            source: Some(PeerId::random()),
            data: b"hi".to_vec(),
            sequence_number: Some(seqno),
            topic: gossipsub::TopicHash::from_raw(topic),
        }
    }

    #[test]
    fn message_ids_are_universal_connectivitys_on_its_topics_only() {
        // SHA-256("42"), as its js peer computes it.
        let id = message_id(&message(CHAT_TOPIC, 42));
        assert_eq!(
            hex::encode(&id.0),
            "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"
        );
        let room = message(&Room::lobby().topic().to_string(), 42);
        let id = message_id(&room);
        let expected = format!("{}42", room.source.expect("source").to_base58());
        assert_eq!(id.0, expected.into_bytes());
    }

    #[test]
    fn chat_lines_are_utf8_and_bounded() {
        assert_eq!(check_chat("héllo".as_bytes()), Ok("héllo"));
        assert_eq!(check_chat(&[0xff, 0xfe]), Err(Rejection::NotUtf8("text")));
        assert_eq!(
            check_chat(&vec![b'x'; MAX_TEXT_BYTES + 1]),
            Err(Rejection::TextTooLong(MAX_TEXT_BYTES + 1))
        );
    }

    #[test]
    fn file_ids_are_short_utf8() {
        let uuid = "0b8e7c9a-5b7e-4c1e-9f3a-2d6f1c0e8a47";
        assert_eq!(check_file_id(uuid.as_bytes()), Ok(uuid));
        assert!(check_file_id(b"").is_err());
        assert!(check_file_id(&[0xff]).is_err());
        assert!(check_file_id(&[b'a'; MAX_FILE_ID + 1]).is_err());
    }

    #[test]
    fn direct_messages_round_trip_and_refuse_other_types() {
        let request = DirectMessageRequest::new("hello");
        let back =
            DirectMessageRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back.check(), Ok("hello"));
        let image = DirectMessageRequest {
            r#type: "image/png".into(),
            ..back
        };
        assert!(image.check().is_err());
        let answer = DirectMessageResponse::answer(Err("no".into()));
        assert_eq!(answer.status, STATUS_ERROR);
    }
}
