//! Peer records: where a page can be reached directly, announced to its
//! room.
//!
//! A record is js-libp2p's `@libp2p/pubsub-peer-discovery` message
//! (`Peer { bytes publicKey = 1; repeated bytes addrs = 2 }`,
//! `proto/peer_record.proto`), published on the room's peers topic
//! `meshtalk/peers/<room>`. Pages publish their `/webrtc` addresses
//! (`…/p2p/RELAY/p2p-circuit/webrtc/p2p/ME`) there; members that read them
//! link to the page directly. A record counts only if its key is the
//! gossipsub author's: nobody can announce addresses for someone else.

use libp2p::{
    Multiaddr, PeerId,
    gossipsub::{IdentTopic, TopicHash},
    identity::PublicKey,
};
use prost::Message as _;

use crate::rooms::Room;

mod proto {
    include!(concat!(env!("OUT_DIR"), "/peer_record.rs"));
}

/// Prefix of every room's peers topic.
pub const PEERS_TOPIC_PREFIX: &str = "meshtalk/peers/";
/// Largest record accepted.
pub const MAX_RECORD: usize = 4096;
/// Most addresses a record may carry.
pub const MAX_ADDRS: usize = 16;

/// The peers topic of `room`: `meshtalk/peers/<room>`.
pub fn topic(room: &Room) -> IdentTopic {
    IdentTopic::new(format!("{PEERS_TOPIC_PREFIX}{}", room.name()))
}

/// The room whose peers topic `topic` is, if it is one.
pub fn room_of(topic: &TopicHash) -> Option<Room> {
    Room::new(topic.as_str().strip_prefix(PEERS_TOPIC_PREFIX)?).ok()
}

/// Encodes our record.
pub fn encode(key: &PublicKey, addrs: &[Multiaddr]) -> Vec<u8> {
    proto::Peer {
        public_key: key.encode_protobuf(),
        addrs: addrs.iter().map(|a| a.to_vec()).collect(),
    }
    .encode_to_vec()
}

/// The public key inside a peer id, where the id holds it whole (ed25519
/// keys, which every meshtalk peer uses, are inlined in their ids): what a
/// record needs when only the peer id is at hand.
pub fn public_key_of(peer: PeerId) -> Option<PublicKey> {
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    (hash.code() == 0)
        .then(|| PublicKey::try_decode_protobuf(hash.digest()).ok())
        .flatten()
}

/// A record that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    /// Over [`MAX_RECORD`] bytes.
    #[error("record of {0} bytes, at most {MAX_RECORD} allowed")]
    TooLarge(usize),
    /// Not a `Peer` message.
    #[error("undecodable record: {0}")]
    Malformed(String),
    /// The key is not a libp2p public key.
    #[error("bad public key: {0}")]
    BadKey(String),
    /// The key is not the author's.
    #[error("the record holds the key of {0}, not its author's")]
    NotTheAuthor(Box<PeerId>),
    /// Too many addresses.
    #[error("{0} addresses, at most {MAX_ADDRS} allowed")]
    TooManyAddrs(usize),
}

/// Checks a record `author` published and returns the addresses at which
/// it can be linked to directly: its `/webrtc` addresses that end in its
/// own id. Addresses we cannot use are skipped, not errors (js peers
/// announce others too).
pub fn decode(data: &[u8], author: PeerId) -> Result<Vec<Multiaddr>, BadRecord> {
    if data.len() > MAX_RECORD {
        return Err(BadRecord::TooLarge(data.len()));
    }
    let record = proto::Peer::decode(data).map_err(|e| BadRecord::Malformed(e.to_string()))?;
    let key = PublicKey::try_decode_protobuf(&record.public_key)
        .map_err(|e| BadRecord::BadKey(e.to_string()))?;
    let claimed = key.to_peer_id();
    if claimed != author {
        return Err(BadRecord::NotTheAuthor(Box::new(claimed)));
    }
    if record.addrs.len() > MAX_ADDRS {
        return Err(BadRecord::TooManyAddrs(record.addrs.len()));
    }
    Ok(record
        .addrs
        .into_iter()
        .filter_map(|bytes| Multiaddr::try_from(bytes).ok())
        .filter(|addr| is_webrtc_addr_of(addr, author))
        .collect())
}

/// Whether `addr` is a `/webrtc` address of `peer`.
fn is_webrtc_addr_of(addr: &Multiaddr, peer: PeerId) -> bool {
    meshtalk_webrtc::addr::parse_dial_addr(addr).is_some_and(|(p, _)| p == peer)
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    fn webrtc_addr(relay: PeerId, peer: PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/4002/ws/p2p/{relay}/p2p-circuit/webrtc/p2p/{peer}")
            .parse()
            .expect("addr")
    }

    #[test]
    fn a_record_gives_the_authors_webrtc_addresses() {
        let me = Keypair::generate_ed25519();
        let relay = Keypair::generate_ed25519().public().to_peer_id();
        let id = me.public().to_peer_id();
        let direct: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        let data = encode(&me.public(), &[webrtc_addr(relay, id), direct]);
        assert_eq!(decode(&data, id), Ok(vec![webrtc_addr(relay, id)]));
    }

    #[test]
    fn nobody_announces_for_someone_else() {
        let me = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let data = encode(&me.public(), &[]);
        assert!(matches!(
            decode(&data, other),
            Err(BadRecord::NotTheAuthor(_))
        ));
    }

    #[test]
    fn addresses_of_another_peer_are_dropped() {
        let me = Keypair::generate_ed25519();
        let id = me.public().to_peer_id();
        let relay = Keypair::generate_ed25519().public().to_peer_id();
        let victim = Keypair::generate_ed25519().public().to_peer_id();
        let data = encode(&me.public(), &[webrtc_addr(relay, victim)]);
        assert_eq!(decode(&data, id), Ok(vec![]));
    }

    #[test]
    fn junk_and_oversized_records_are_errors() {
        let id = Keypair::generate_ed25519().public().to_peer_id();
        assert!(matches!(
            decode(&[0xff; 8], id),
            Err(BadRecord::Malformed(_))
        ));
        assert!(matches!(
            decode(&vec![0; MAX_RECORD + 1], id),
            Err(BadRecord::TooLarge(_))
        ));
        let no_key = proto::Peer {
            public_key: vec![1, 2, 3],
            addrs: vec![],
        }
        .encode_to_vec();
        assert!(matches!(decode(&no_key, id), Err(BadRecord::BadKey(_))));
    }

    #[test]
    fn peers_topics_name_their_room() {
        let room = Room::new("dev-1").expect("room");
        let t = topic(&room);
        assert_eq!(t.to_string(), "meshtalk/peers/dev-1");
        assert_eq!(room_of(&t.hash()), Some(room));
        assert_eq!(room_of(&Room::lobby().topic().hash()), None);
    }
}
