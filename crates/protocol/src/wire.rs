//! The wire format: [`Payload`] to and from the protobuf `Request` of
//! `proto/meshtalk.proto`.
//!
//! Decoding checks structure (it is protobuf, required fields are present,
//! text is UTF-8); content limits are [`crate::validate`]'s job.

use std::fmt;

use prost::Message as _;

use crate::validate::Rejection;

/// Types generated from `proto/meshtalk.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/meshtalk.rs"));
}

/// Length of a message id in bytes.
pub const MESSAGE_ID_LEN: usize = 16;

/// The author-chosen id of a chat message: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; MESSAGE_ID_LEN]);

impl MessageId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// A chat line as its author wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// The text, UTF-8.
    pub text: String,
    /// When the author sent it, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The author's id for this message.
    pub id: MessageId,
}

impl ChatMessage {
    /// A new message stamped with the current time and a random id.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            created_ms: crate::validate::now_ms(),
            id: MessageId::random(),
        }
    }
}

/// What one gossipsub message on a room topic carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `SEND_MESSAGE`: a chat line.
    Message(ChatMessage),
    /// `UPDATE_PEER`: the sender's nickname; empty clears it.
    Nick(String),
}

/// Encodes a payload as a protobuf `Request`.
pub fn encode(payload: &Payload) -> Vec<u8> {
    use proto::request::Type;
    let request = match payload {
        Payload::Message(m) => proto::Request {
            r#type: Type::SendMessage as i32,
            send_message: Some(proto::SendMessage {
                data: m.text.as_bytes().to_vec(),
                created: m.created_ms,
                id: m.id.0.to_vec(),
            }),
            update_peer: None,
        },
        Payload::Nick(nick) => proto::Request {
            r#type: Type::UpdatePeer as i32,
            send_message: None,
            update_peer: Some(proto::UpdatePeer {
                user_handle: Some(nick.as_bytes().to_vec()),
            }),
        },
    };
    request.encode_to_vec()
}

/// Decodes a protobuf `Request`, checking that it is well formed.
pub fn decode(bytes: &[u8]) -> Result<Payload, Rejection> {
    use proto::request::Type;
    let request = proto::Request::decode(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
    // prost fills absent proto2 `required` fields with defaults, so presence
    // is checked on the encoded bytes.
    require(bytes, &[(1, "Request.type")])?;
    match Type::try_from(request.r#type) {
        Ok(Type::SendMessage) => {
            let m = request
                .send_message
                .ok_or(Rejection::MissingField("Request.sendMessage"))?;
            let inner = field_bytes(bytes, 2).unwrap_or_default();
            require(
                &inner,
                &[
                    (1, "SendMessage.data"),
                    (2, "SendMessage.created"),
                    (3, "SendMessage.id"),
                ],
            )?;
            let text =
                String::from_utf8(m.data).map_err(|_| Rejection::NotUtf8("SendMessage.data"))?;
            let id = <[u8; MESSAGE_ID_LEN]>::try_from(m.id.as_slice())
                .map_err(|_| Rejection::BadId(m.id.len()))?;
            Ok(Payload::Message(ChatMessage {
                text,
                created_ms: m.created,
                id: MessageId(id),
            }))
        }
        Ok(Type::UpdatePeer) => {
            let update = request
                .update_peer
                .ok_or(Rejection::MissingField("Request.updatePeer"))?;
            let nick = String::from_utf8(update.user_handle.unwrap_or_default())
                .map_err(|_| Rejection::NotUtf8("UpdatePeer.userHandle"))?;
            Ok(Payload::Nick(nick))
        }
        Err(_) => Err(Rejection::UnknownType(request.r#type)),
    }
}

/// Fails with the name of the first required field that `message` lacks.
fn require(message: &[u8], fields: &[(u32, &'static str)]) -> Result<(), Rejection> {
    let present = present_fields(message)?;
    match fields
        .iter()
        .find(|(number, _)| present & (1u64 << number) == 0)
    {
        Some((_, name)) => Err(Rejection::MissingField(name)),
        None => Ok(()),
    }
}

/// Bit `n` is set when field number `n` (below 64) occurs in `message`.
fn present_fields(message: &[u8]) -> Result<u64, Rejection> {
    let mut present = 0u64;
    let mut buf = message;
    while !buf.is_empty() {
        let (number, _) = next_field(&mut buf)?;
        if number < 64 {
            present |= 1 << number;
        }
    }
    Ok(present)
}

/// The concatenated contents of every length-delimited occurrence of field
/// `number` (protobuf merges repeated occurrences of a message field).
fn field_bytes(message: &[u8], number: u32) -> Option<Vec<u8>> {
    let mut buf = message;
    let mut out: Option<Vec<u8>> = None;
    while !buf.is_empty() {
        let (n, value) = next_field(&mut buf).ok()?;
        if let (true, Some(v)) = (n == number, value) {
            out.get_or_insert_with(Vec::new).extend_from_slice(v);
        }
    }
    out
}

/// Reads one field: its number and, when length-delimited, its contents.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<(u32, Option<&'a [u8]>), Rejection> {
    let malformed = || Rejection::Malformed("truncated field".into());
    let key = prost::encoding::decode_varint(buf).map_err(|_| malformed())?;
    let number = u32::try_from(key >> 3).map_err(|_| malformed())?;
    let value = match key & 7 {
        0 => {
            prost::encoding::decode_varint(buf).map_err(|_| malformed())?;
            None
        }
        1 => Some(take(buf, 8).ok_or_else(malformed)?),
        2 => {
            let len = prost::encoding::decode_varint(buf).map_err(|_| malformed())?;
            let len = usize::try_from(len).map_err(|_| malformed())?;
            Some(take(buf, len).ok_or_else(malformed)?)
        }
        5 => Some(take(buf, 4).ok_or_else(malformed)?),
        other => return Err(Rejection::Malformed(format!("wire type {other}"))),
    };
    Ok((number, value))
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            text: text.into(),
            created_ms: 1_700_000_000_000,
            id: MessageId([7; 16]),
        }
    }

    #[test]
    fn message_round_trips() {
        let p = Payload::Message(message("hello"));
        assert_eq!(decode(&encode(&p)), Ok(p));
    }

    #[test]
    fn nick_round_trips() {
        let p = Payload::Nick("ada".into());
        assert_eq!(decode(&encode(&p)), Ok(p));
    }

    /// A `Request` of type SEND_MESSAGE written byte by byte with the
    /// course's field numbers: type (1, varint), sendMessage (2, len) holding
    /// data (1, len), created (2, varint, left out when `None`) and id
    /// (3, len). Every length stays below 128, so each is one varint byte.
    fn raw_send_message(data: &[u8], created: Option<u8>, id: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x0a, data.len() as u8];
        inner.extend_from_slice(data);
        if let Some(created) = created {
            inner.extend_from_slice(&[0x10, created]);
        }
        inner.extend_from_slice(&[0x1a, id.len() as u8]);
        inner.extend_from_slice(id);
        let mut bytes = vec![0x08, 0x00, 0x12, inner.len() as u8];
        bytes.extend_from_slice(&inner);
        bytes
    }

    #[test]
    fn field_numbers_match_the_course_protocol() {
        let bytes = raw_send_message(b"hi", Some(5), &[9; 16]);
        let expected = Payload::Message(ChatMessage {
            text: "hi".into(),
            created_ms: 5,
            id: MessageId([9; 16]),
        });
        assert_eq!(decode(&bytes), Ok(expected.clone()));
        assert_eq!(encode(&expected), bytes);
        // type=1, updatePeer (3:len) { userHandle (1:len) "bo" }
        let nick = [0x08, 0x01, 0x1a, 4, 0x0a, 2, b'b', b'o'];
        assert_eq!(decode(&nick), Ok(Payload::Nick("bo".into())));
    }

    #[test]
    fn missing_required_fields_are_rejected() {
        // No type field at all.
        assert_eq!(
            decode(&[0x1a, 0x00]),
            Err(Rejection::MissingField("Request.type"))
        );
        // SEND_MESSAGE without the message.
        assert_eq!(
            decode(&[0x08, 0x00]),
            Err(Rejection::MissingField("Request.sendMessage"))
        );
        assert_eq!(
            decode(&raw_send_message(b"hi", None, &[1; 16])),
            Err(Rejection::MissingField("SendMessage.created"))
        );
    }

    #[test]
    fn garbage_and_non_utf8_are_rejected() {
        assert!(matches!(
            decode(b"\xff\xff\xff"),
            Err(Rejection::Malformed(_))
        ));
        assert_eq!(decode(&[0x08, 0x07]), Err(Rejection::UnknownType(7)));
        assert_eq!(
            decode(&raw_send_message(&[0xc3, 0x28], Some(5), &[1; 16])),
            Err(Rejection::NotUtf8("SendMessage.data"))
        );
    }

    #[test]
    fn wrong_id_length_is_rejected() {
        assert_eq!(
            decode(&raw_send_message(b"hi", Some(5), &[1, 2])),
            Err(Rejection::BadId(2))
        );
    }

    proptest! {
        #[test]
        fn any_message_round_trips(text in ".{0,300}", created in any::<i64>(), id in any::<[u8; 16]>()) {
            let p = Payload::Message(ChatMessage { text, created_ms: created, id: MessageId(id) });
            prop_assert_eq!(decode(&encode(&p)), Ok(p));
        }

        #[test]
        fn any_nick_round_trips(nick in ".{0,64}") {
            let p = Payload::Nick(nick);
            prop_assert_eq!(decode(&encode(&p)), Ok(p));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
