//! Room history: what was said before a peer joined, served to it by the
//! peers that were there, so that nobody can forge the past.
//!
//! Every record is the author's own signed gossipsub message, exactly as it
//! travelled: source, data, sequence number, topic, signature and (for keys
//! not inlined in the peer id) the key. A receiver checks the signature the
//! way gossipsub does (over `"libp2p-pubsub:" ‖ the message without
//! signature and key`), that the topic is the room it asked for, and runs
//! [`crate::validate::accept`] on the content. A record that fails is
//! dropped and its server distrusted; nothing it sends is shown.
//!
//! - [`SignedMessage`], [`verify`] and [`sign`]: the record and its check.
//! - [`Tap`]: a gossipsub data transform that keeps the signatures of the
//!   messages gossipsub receives (gossipsub hands the application only the
//!   unsigned parts).
//! - [`store::Store`]: records per room, bounded by count and age.
//! - [`sync`]: the `/meshtalk/history/1.0.0` stream protocol.

pub mod store;
pub mod sync;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use libp2p::{
    PeerId,
    gossipsub::{self, DataTransform, RawMessage, TopicHash},
    identity::{Keypair, PublicKey},
};
use prost::Message as _;

use crate::{
    validate::{self, Rejection},
    wire::Payload,
};

/// What gossipsub signs: this prefix, then the message's protobuf without
/// its signature and key (libp2p pubsub spec, "Message Signing").
const SIGNING_PREFIX: &[u8] = b"libp2p-pubsub:";
/// Signatures the [`Tap`] keeps for messages the engine has not taken yet.
const TAP_CAPACITY: usize = 4096;

/// A room message as its author signed it: the pubsub spec's `Message`.
///
/// ```proto
/// message Message {
///   optional bytes from = 1;
///   optional bytes data = 2;
///   optional bytes seqno = 3;
///   required string topic = 4;
///   optional bytes signature = 5;
///   optional bytes key = 6;
/// }
/// ```
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignedMessage {
    /// The author's peer id.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub from: Option<Vec<u8>>,
    /// The room message (a `Request` of the course's format).
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
    /// The author's sequence number, 8 bytes big-endian.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub seqno: Option<Vec<u8>>,
    /// The room's topic.
    #[prost(string, optional, tag = "4")]
    pub topic: Option<String>,
    /// The author's signature.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub signature: Option<Vec<u8>>,
    /// The author's public key, when the peer id does not inline it.
    #[prost(bytes = "vec", optional, tag = "6")]
    pub key: Option<Vec<u8>>,
}

/// A record that passed [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The author.
    pub from: PeerId,
    /// The author's sequence number.
    pub seqno: u64,
    /// The room's topic.
    pub topic: TopicHash,
    /// What the author said (checked by [`validate::accept`]).
    pub payload: Payload,
}

/// Why a history record is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forged {
    /// Source, sequence number, topic or signature is absent.
    #[error("unsigned or incomplete record")]
    Incomplete,
    /// The source is not a peer id.
    #[error("source is not a peer id")]
    BadSource,
    /// The key is absent, undecodable, or not the source's.
    #[error("no key of the source")]
    BadKey,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// Signed for another room than the one asked about.
    #[error("record of another room")]
    OtherRoom,
    /// Signed, but its content breaks the room's rules.
    #[error("invalid content: {0}")]
    Content(Rejection),
}

/// The bytes gossipsub signs for a message.
fn signed_bytes(message: &SignedMessage) -> Vec<u8> {
    let unsigned = SignedMessage {
        signature: None,
        key: None,
        ..message.clone()
    };
    let mut bytes = SIGNING_PREFIX.to_vec();
    bytes.extend(unsigned.encode_to_vec());
    bytes
}

/// Checks a record: signed by its source, for `room`, with valid content.
pub fn verify(message: &SignedMessage, room: &TopicHash) -> Result<Verified, Forged> {
    let (Some(from), Some(data), Some(seqno), Some(topic), Some(signature)) = (
        &message.from,
        &message.data,
        &message.seqno,
        &message.topic,
        &message.signature,
    ) else {
        return Err(Forged::Incomplete);
    };
    let from = PeerId::from_bytes(from).map_err(|_| Forged::BadSource)?;
    let seqno: [u8; 8] = seqno
        .as_slice()
        .try_into()
        .map_err(|_| Forged::Incomplete)?;
    let key = match &message.key {
        Some(key) => PublicKey::try_decode_protobuf(key).map_err(|_| Forged::BadKey)?,
        None => crate::peer_record::public_key_of(from).ok_or(Forged::BadKey)?,
    };
    if key.to_peer_id() != from {
        return Err(Forged::BadKey);
    }
    if !key.verify(&signed_bytes(message), signature) {
        return Err(Forged::BadSignature);
    }
    if topic.as_str() != room.as_str() {
        return Err(Forged::OtherRoom);
    }
    let payload = validate::accept(data, validate::now_ms()).map_err(Forged::Content)?;
    Ok(Verified {
        from,
        seqno: u64::from_be_bytes(seqno),
        topic: room.clone(),
        payload,
    })
}

/// Signs `data` on `topic` as gossipsub would have (our own messages: the
/// record others keep of them is the same).
pub fn sign(keypair: &Keypair, topic: &TopicHash, data: &[u8], seqno: u64) -> SignedMessage {
    let public = keypair.public();
    let from = public.to_peer_id();
    let mut message = SignedMessage {
        from: Some(from.to_bytes()),
        data: Some(data.to_vec()),
        seqno: Some(seqno.to_be_bytes().to_vec()),
        topic: Some(topic.to_string()),
        signature: None,
        key: None,
    };
    // Ed25519 keys (ours) are inlined in the peer id; others travel along.
    if crate::peer_record::public_key_of(from).is_none() {
        message.key = Some(public.encode_protobuf());
    }
    // Signing with an Ed25519 key cannot fail.
    message.signature = keypair.sign(&signed_bytes(&message)).ok();
    message
}

/// The sequence number in a gossipsub message id of the default form
/// (the source's base58 then the decimal sequence number), which is what
/// `publish` returns.
pub fn seqno_of(id: &gossipsub::MessageId, source: PeerId) -> Option<u64> {
    let id = std::str::from_utf8(&id.0).ok()?;
    id.strip_prefix(&source.to_base58())?.parse().ok()
}

/// Keeps the signature of each message gossipsub receives, for the engine
/// to take when gossipsub hands it the message (without it), and signs the
/// records of our own messages with the key gossipsub signs them with.
#[derive(Clone)]
pub struct Tap(Arc<TapShared>);

struct TapShared {
    keypair: Keypair,
    inner: Mutex<TapInner>,
    /// Message copies received, duplicates included.
    copies: AtomicU64,
}

/// A message's signature, and its key when not inlined in the peer id.
pub type Signature = (Vec<u8>, Option<Vec<u8>>);

#[derive(Default)]
struct TapInner {
    kept: HashMap<(PeerId, u64), Signature>,
    order: VecDeque<(PeerId, u64)>,
}

impl Tap {
    /// A tap for a node signing with `keypair`.
    pub fn new(keypair: &Keypair) -> Self {
        Self(Arc::new(TapShared {
            keypair: keypair.clone(),
            inner: Mutex::default(),
            copies: AtomicU64::new(0),
        }))
    }

    /// The record of a message we publish on `topic` with `seqno`.
    pub fn sign(&self, topic: &TopicHash, data: &[u8], seqno: u64) -> SignedMessage {
        sign(&self.0.keypair, topic, data, seqno)
    }

    /// How many pubsub message copies have arrived, duplicates included:
    /// what pubsub costs on the wire, next to what it delivers.
    pub fn copies_received(&self) -> u64 {
        self.0.copies.load(Ordering::Relaxed)
    }

    /// The signature and key of the message `source` sent with `seqno`,
    /// if it came signed and was not taken yet.
    pub fn take(&self, source: PeerId, seqno: u64) -> Option<Signature> {
        let mut inner = self.0.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.kept.remove(&(source, seqno))
    }

    /// The record of a message gossipsub delivered, if its signature was
    /// kept.
    pub fn record(&self, message: &gossipsub::Message) -> Option<SignedMessage> {
        let source = message.source?;
        let seqno = message.sequence_number?;
        let (signature, key) = self.take(source, seqno)?;
        Some(SignedMessage {
            from: Some(source.to_bytes()),
            data: Some(message.data.clone()),
            seqno: Some(seqno.to_be_bytes().to_vec()),
            topic: Some(message.topic.to_string()),
            signature: Some(signature),
            key,
        })
    }

    fn keep(&self, raw: &RawMessage) {
        let (Some(source), Some(seqno), Some(signature)) =
            (raw.source, raw.sequence_number, &raw.signature)
        else {
            return;
        };
        let mut inner = self.0.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner
            .kept
            .insert((source, seqno), (signature.clone(), raw.key.clone()))
            .is_none()
        {
            inner.order.push_back((source, seqno));
        }
        // Messages the engine never takes (rejected before delivery) go
        // first once the tap is full.
        while inner.order.len() > TAP_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.kept.remove(&old);
            }
        }
    }
}

impl DataTransform for Tap {
    fn inbound_transform(&self, raw: RawMessage) -> Result<gossipsub::Message, std::io::Error> {
        // Gossipsub transforms every copy before it looks for duplicates.
        self.0.copies.fetch_add(1, Ordering::Relaxed);
        self.keep(&raw);
        Ok(gossipsub::Message {
            source: raw.source,
            data: raw.data,
            sequence_number: raw.sequence_number,
            topic: raw.topic,
        })
    }

    fn outbound_transform(
        &self,
        _topic: &TopicHash,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, std::io::Error> {
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ChatMessage, encode};

    fn room() -> TopicHash {
        TopicHash::from_raw("meshtalk/room/history")
    }

    #[test]
    fn a_signed_record_verifies_and_any_change_is_caught() {
        let key = Keypair::generate_ed25519();
        let data = encode(&Payload::Message(ChatMessage::new("hello")));
        let record = sign(&key, &room(), &data, 7);
        let ok = verify(&record, &room()).expect("verifies");
        assert_eq!(ok.from, key.public().to_peer_id());
        assert_eq!(ok.seqno, 7);

        let mut altered = record.clone();
        altered.data = Some(encode(&Payload::Message(ChatMessage::new("goodbye"))));
        assert_eq!(verify(&altered, &room()), Err(Forged::BadSignature));

        let mut renumbered = record.clone();
        renumbered.seqno = Some(8u64.to_be_bytes().to_vec());
        assert_eq!(verify(&renumbered, &room()), Err(Forged::BadSignature));

        let other = Keypair::generate_ed25519().public().to_peer_id();
        let mut stolen = record.clone();
        stolen.from = Some(other.to_bytes());
        assert_eq!(verify(&stolen, &room()), Err(Forged::BadSignature));

        let elsewhere = TopicHash::from_raw("meshtalk/room/elsewhere");
        assert_eq!(verify(&record, &elsewhere), Err(Forged::OtherRoom));

        let mut unsigned = record;
        unsigned.signature = None;
        assert_eq!(verify(&unsigned, &room()), Err(Forged::Incomplete));
    }

    #[test]
    fn signed_junk_is_refused_for_its_content() {
        let key = Keypair::generate_ed25519();
        let record = sign(&key, &room(), b"\xff\x00junk", 1);
        assert!(matches!(verify(&record, &room()), Err(Forged::Content(_))));
    }

    #[test]
    fn the_sequence_number_comes_back_from_a_default_message_id() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let id = gossipsub::MessageId::from(format!("{}{}", peer.to_base58(), 42u64));
        assert_eq!(seqno_of(&id, peer), Some(42));
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(seqno_of(&id, other), None);
    }
}
