//! The rules every received room message must pass before it is shown to a
//! user or forwarded to other peers (gossipsub manual validation).

use web_time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::{self, Payload};

/// Longest chat text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest nickname, in bytes of UTF-8.
pub const MAX_NICK_BYTES: usize = 64;
/// How far in the future a message's `created` may be (clock skew allowance).
pub const MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a protobuf `Request` at all.
    #[error("undecodable: {0}")]
    Malformed(String),
    /// A proto2 `required` field is absent.
    #[error("missing required field {0}")]
    MissingField(&'static str),
    /// `Request.type` is not a known value.
    #[error("unknown request type {0}")]
    UnknownType(i32),
    /// A text field holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// The message id is not 16 bytes.
    #[error("message id is {0} bytes, not 16")]
    BadId(usize),
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error("text is {0} bytes, more than the {MAX_TEXT_BYTES} allowed")]
    TextTooLong(usize),
    /// The nickname is longer than [`MAX_NICK_BYTES`].
    #[error("nickname is {0} bytes, more than the {MAX_NICK_BYTES} allowed")]
    NickTooLong(usize),
    /// `created` is further ahead than [`MAX_FUTURE`].
    #[error("created {0} ms in the future, more than 5 minutes")]
    FromTheFuture(i64),
    /// The pubsub message is unsigned or its signature does not verify:
    /// meshtalk requires every message signed by its author (libp2p's
    /// `StrictSign`). Gossipsub drops these before the rules above.
    #[error("unsigned or badly signed (every message must be signed by its author: StrictSign)")]
    BadSignature,
    /// The pubsub envelope is wrong otherwise (sequence number, source
    /// peer id, size); gossipsub's reason.
    #[error("malformed pubsub envelope: {0}")]
    BadEnvelope(&'static str),
    /// Its author published more than the relay forwards
    /// ([`crate::engine::PublishLimit`], this many a second).
    #[error("over its author's publish rate limit ({0} messages a second)")]
    RateLimited(u32),
}

impl Rejection {
    /// Every [`Rejection::label`], for metrics that should show zeros.
    pub const LABELS: [&'static str; 11] = [
        "malformed",
        "missing_field",
        "unknown_type",
        "not_utf8",
        "bad_id",
        "text_too_long",
        "nick_too_long",
        "from_the_future",
        "bad_signature",
        "bad_envelope",
        "rate_limited",
    ];

    /// A short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::MissingField(_) => "missing_field",
            Rejection::UnknownType(_) => "unknown_type",
            Rejection::NotUtf8(_) => "not_utf8",
            Rejection::BadId(_) => "bad_id",
            Rejection::TextTooLong(_) => "text_too_long",
            Rejection::NickTooLong(_) => "nick_too_long",
            Rejection::FromTheFuture(_) => "from_the_future",
            Rejection::BadSignature => "bad_signature",
            Rejection::BadEnvelope(_) => "bad_envelope",
            Rejection::RateLimited(_) => "rate_limited",
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks a decoded payload's content against the limits, at time `now_ms`.
pub fn check(payload: &Payload, now_ms: i64) -> Result<(), Rejection> {
    match payload {
        Payload::Message(m) => {
            if m.text.len() > MAX_TEXT_BYTES {
                return Err(Rejection::TextTooLong(m.text.len()));
            }
            let ahead = m.created_ms.saturating_sub(now_ms);
            if ahead > MAX_FUTURE.as_millis() as i64 {
                return Err(Rejection::FromTheFuture(ahead));
            }
            Ok(())
        }
        Payload::Nick(nick) if nick.len() > MAX_NICK_BYTES => {
            Err(Rejection::NickTooLong(nick.len()))
        }
        Payload::Nick(_) => Ok(()),
    }
}

/// Decodes and checks a received message: the whole validation a peer runs.
pub fn accept(bytes: &[u8], now_ms: i64) -> Result<Payload, Rejection> {
    let payload = wire::decode(bytes)?;
    check(&payload, now_ms)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ChatMessage, MessageId, encode};

    const NOW: i64 = 1_800_000_000_000;

    fn msg(text: String, created_ms: i64) -> Payload {
        Payload::Message(ChatMessage {
            text,
            created_ms,
            id: MessageId([1; 16]),
        })
    }

    #[test]
    fn text_of_exactly_4_kib_is_accepted_and_one_more_byte_rejected() {
        assert!(accept(&encode(&msg("a".repeat(4096), NOW)), NOW).is_ok());
        assert_eq!(
            accept(&encode(&msg("a".repeat(4097), NOW)), NOW),
            Err(Rejection::TextTooLong(4097))
        );
    }

    #[test]
    fn nick_longer_than_64_bytes_is_rejected() {
        assert!(accept(&encode(&Payload::Nick("é".repeat(32))), NOW).is_ok());
        assert_eq!(
            accept(&encode(&Payload::Nick("x".repeat(65))), NOW),
            Err(Rejection::NickTooLong(65))
        );
    }

    #[test]
    fn created_more_than_five_minutes_ahead_is_rejected() {
        let limit = 5 * 60 * 1000;
        assert!(accept(&encode(&msg("hi".into(), NOW + limit)), NOW).is_ok());
        assert_eq!(
            accept(&encode(&msg("hi".into(), NOW + limit + 1)), NOW),
            Err(Rejection::FromTheFuture(limit + 1))
        );
        // Old messages are fine: peers that join late may see them.
        assert!(accept(&encode(&msg("hi".into(), 0)), NOW).is_ok());
    }

    #[test]
    fn labels_lists_every_label() {
        let all = [
            Rejection::Malformed(String::new()),
            Rejection::MissingField(""),
            Rejection::UnknownType(0),
            Rejection::NotUtf8(""),
            Rejection::BadId(0),
            Rejection::TextTooLong(0),
            Rejection::NickTooLong(0),
            Rejection::FromTheFuture(0),
            Rejection::BadSignature,
            Rejection::BadEnvelope(""),
            Rejection::RateLimited(0),
        ];
        let labels: Vec<&str> = all.iter().map(Rejection::label).collect();
        assert_eq!(labels, Rejection::LABELS);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
