//! Direct messages, `/meshtalk/dm/1.0.0`: a line to one peer, on a stream
//! of its own, acknowledged by the receiver.
//!
//! ```proto
//! message DirectMessage {
//!   optional string text = 1;        // UTF-8, at most 4096 bytes
//!   optional int64 created_ms = 2;   // when the author sent it
//!   optional bytes id = 3;           // 16 bytes, the author's id for it
//!   optional string nick = 4;        // the author's nickname, if any
//! }
//! message DmAck { optional bytes id = 1; }  // the id received
//! ```
//!
//! Each is varint-length-prefixed ([`crate::framing`]). The stream runs over
//! any connection, relayed ones included, so the relay carries only Noise
//! ciphertext: nobody but the two peers reads the line. The sender is the
//! connection's authenticated peer.
//!
//! [`Dms`] drives the streams for the engine; the engine decides when to
//! dial, retries, and reports. It also speaks universal-connectivity's
//! direct messages ([`crate::uc::DM_PROTOCOL`]): it receives them always,
//! and sends them for `--compat uc`.

use std::time::Duration;

use futures::{
    AsyncWriteExt, FutureExt,
    future::{BoxFuture, Either, select},
    stream::FuturesUnordered,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::Control;
use prost::Message as _;

use crate::{
    framing::{
        Inbound, Next, PerMinute, accept, ask, next_inbound, next_of, read_message, within,
        write_message,
    },
    uc,
    validate::{self, MAX_NICK_BYTES, Rejection},
    wire::{ChatMessage, MESSAGE_ID_LEN, MessageId, Payload},
};

/// The direct-message protocol id.
pub const DM_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshtalk/dm/1.0.0");
/// Direct messages one peer may send us in a minute.
pub const DMS_PER_MINUTE: u32 = 120;
/// Largest message read (text, nickname and fields).
const MAX_DM: usize = 8 * 1024;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A direct message on the wire.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DirectMessage {
    /// The line.
    #[prost(string, optional, tag = "1")]
    pub text: Option<String>,
    /// When the author sent it, ms since the Unix epoch.
    #[prost(int64, optional, tag = "2")]
    pub created_ms: Option<i64>,
    /// The author's id for it, 16 bytes.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub id: Option<Vec<u8>>,
    /// The author's nickname.
    #[prost(string, optional, tag = "4")]
    pub nick: Option<String>,
}

/// The receiver's acknowledgement.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DmAck {
    /// The id of the message received.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub id: Option<Vec<u8>>,
}

impl DirectMessage {
    /// The wire form of a line and our nickname.
    pub fn new(message: &ChatMessage, nick: Option<&str>) -> Self {
        Self {
            text: Some(message.text.clone()),
            created_ms: Some(message.created_ms),
            id: Some(message.id.0.to_vec()),
            nick: nick.map(str::to_owned),
        }
    }

    /// The line and nickname, if they pass the rules room messages pass.
    pub fn check(self, now_ms: i64) -> Result<(ChatMessage, Option<String>), Rejection> {
        let text = self.text.ok_or(Rejection::MissingField("text"))?;
        let created_ms = self.created_ms.ok_or(Rejection::MissingField("created"))?;
        let id = self.id.ok_or(Rejection::MissingField("id"))?;
        let id: [u8; MESSAGE_ID_LEN] = id
            .as_slice()
            .try_into()
            .map_err(|_| Rejection::BadId(id.len()))?;
        let message = ChatMessage {
            text,
            created_ms,
            id: MessageId(id),
        };
        validate::check(&Payload::Message(message.clone()), now_ms)?;
        let nick = self.nick.filter(|n| !n.is_empty());
        if let Some(nick) = &nick
            && nick.len() > MAX_NICK_BYTES
        {
            return Err(Rejection::NickTooLong(nick.len()));
        }
        Ok((message, nick))
    }
}

/// A direct message as it goes on the wire: ours, or
/// universal-connectivity's (which carries only the text).
#[derive(Clone)]
pub(crate) enum DmWire {
    /// `/meshtalk/dm/1.0.0`.
    Meshtalk(DirectMessage),
    /// `/universal-connectivity/dm/1.0.0`.
    Uc(uc::DirectMessageRequest),
}

/// What the direct-message streams did.
pub(crate) enum DmEvent {
    /// A peer sent us a line (acknowledged).
    Received {
        from: PeerId,
        message: ChatMessage,
        nick: Option<String>,
    },
    /// A peer sent something that breaks the rules (not acknowledged).
    Refused { from: PeerId, reason: String },
    /// Our line reached `to`.
    Acked { to: PeerId, id: MessageId },
    /// Our line did not reach `to` this time.
    Failed {
        to: PeerId,
        id: MessageId,
        error: String,
    },
}

/// Sends our direct messages and receives others'.
pub(crate) struct Dms {
    control: Control,
    incoming: Option<Inbound>,
    uc_incoming: Option<Inbound>,
    tasks: FuturesUnordered<BoxFuture<'static, DmEvent>>,
    received: PerMinute,
}

impl Dms {
    /// Takes over both protocols on `control`.
    pub(crate) fn new(mut control: Control) -> Self {
        let incoming = accept(&mut control, DM_PROTOCOL);
        let uc_incoming = accept(&mut control, uc::DM_PROTOCOL);
        Self {
            control,
            incoming,
            uc_incoming,
            tasks: FuturesUnordered::new(),
            received: PerMinute::new(DMS_PER_MINUTE),
        }
    }

    /// Sends `wire` to `to` (connected, or reachable by libp2p-stream's
    /// own dial) and waits for the acknowledgement.
    pub(crate) fn send(&mut self, to: PeerId, wire: DmWire, id: MessageId) {
        let control = self.control.clone();
        let task = async move {
            let result = match wire {
                DmWire::Meshtalk(message) => {
                    within(EXCHANGE_TIMEOUT, send_meshtalk(control, to, message, id)).await
                }
                DmWire::Uc(request) => {
                    within(EXCHANGE_TIMEOUT, send_uc(control, to, request)).await
                }
            };
            match result {
                Ok(()) => DmEvent::Acked { to, id },
                Err(error) => DmEvent::Failed { to, id, error },
            }
        };
        self.tasks.push(task.boxed());
    }

    fn receive(&mut self, from: PeerId, mut stream: Stream) {
        let task = async move {
            let exchange = async {
                let bytes = read_message(&mut stream, MAX_DM)
                    .await
                    .map_err(|e| e.to_string())?;
                let dm = DirectMessage::decode(bytes.as_slice())
                    .map_err(|e| format!("undecodable: {e}"))?;
                let (message, nick) = dm.check(validate::now_ms()).map_err(|e| e.to_string())?;
                let ack = DmAck {
                    id: Some(message.id.0.to_vec()),
                };
                write_message(&mut stream, &ack.encode_to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.close().await;
                Ok((message, nick))
            };
            match within(EXCHANGE_TIMEOUT, exchange).await {
                Ok((message, nick)) => DmEvent::Received {
                    from,
                    message,
                    nick,
                },
                Err(reason) => DmEvent::Refused { from, reason },
            }
        };
        self.tasks.push(task.boxed());
    }

    fn receive_uc(&mut self, from: PeerId, mut stream: Stream) {
        let task = async move {
            match within(EXCHANGE_TIMEOUT, receive_uc(&mut stream)).await {
                Ok(message) => DmEvent::Received {
                    from,
                    message,
                    nick: None,
                },
                Err(reason) => DmEvent::Refused { from, reason },
            }
        };
        self.tasks.push(task.boxed());
    }

    /// The next thing that happened. Pending forever when there is nothing
    /// to do, so it can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> DmEvent {
        loop {
            let next = {
                let ours = next_of(&mut self.incoming, &mut self.tasks);
                let theirs = next_inbound(&mut self.uc_incoming);
                match select(std::pin::pin!(ours), std::pin::pin!(theirs)).await {
                    Either::Left((next, _)) => Either::Left(next),
                    Either::Right((inbound, _)) => Either::Right(inbound),
                }
            };
            let (peer, stream, uc) = match next {
                Either::Left(Next::Done(event)) => return event,
                Either::Left(Next::Inbound(peer, stream)) => (peer, *stream, false),
                Either::Right((peer, stream)) => (peer, stream, true),
            };
            if !self.received.allow(peer) {
                drop(stream);
                return DmEvent::Refused {
                    from: peer,
                    reason: "too many direct messages".into(),
                };
            }
            if uc {
                self.receive_uc(peer, stream);
            } else {
                self.receive(peer, stream);
            }
        }
    }
}

/// One `/meshtalk/dm/1.0.0` exchange: the line, then its acknowledgement.
async fn send_meshtalk(
    control: Control,
    to: PeerId,
    message: DirectMessage,
    id: MessageId,
) -> Result<(), String> {
    let request = message.encode_to_vec();
    let bytes = ask(
        control,
        to,
        DM_PROTOCOL,
        &request,
        256,
        "no acknowledgement: ",
    )
    .await?;
    let ack = DmAck::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    if ack.id.as_deref() == Some(id.0.as_slice()) {
        Ok(())
    } else {
        Err("acknowledged another message".to_owned())
    }
}

/// One universal-connectivity exchange: the request, then a response that
/// must say 200.
async fn send_uc(
    control: Control,
    to: PeerId,
    request: uc::DirectMessageRequest,
) -> Result<(), String> {
    let request = request.encode_to_vec();
    let bytes = ask(
        control,
        to,
        uc::DM_PROTOCOL,
        &request,
        MAX_DM,
        "no response: ",
    )
    .await?;
    let response =
        uc::DirectMessageResponse::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    if response.status == uc::STATUS_OK {
        Ok(())
    } else {
        Err(format!(
            "refused with status {}{}",
            response.status,
            response
                .status_text
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        ))
    }
}

/// Reads a universal-connectivity direct message and answers it.
async fn receive_uc(stream: &mut Stream) -> Result<ChatMessage, String> {
    let bytes = read_message(stream, MAX_DM)
        .await
        .map_err(|e| e.to_string())?;
    let request = uc::DirectMessageRequest::decode(bytes.as_slice())
        .map_err(|e| format!("undecodable: {e}"))?;
    let checked = request
        .check()
        .map(str::to_owned)
        .map_err(|e| e.to_string());
    let answer =
        uc::DirectMessageResponse::answer(checked.as_ref().map(drop).map_err(Clone::clone));
    write_message(stream, &answer.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.close().await;
    let text = checked?;
    // Its timestamp is the sender's clock; ours orders our screen.
    Ok(ChatMessage::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_message_passes_the_room_rules() {
        let line = ChatMessage::new("hello");
        let (back, nick) = DirectMessage::new(&line, Some("ada"))
            .check(line.created_ms)
            .expect("valid");
        assert_eq!(back, line);
        assert_eq!(nick.as_deref(), Some("ada"));

        let long = ChatMessage::new("x".repeat(5000));
        assert!(matches!(
            DirectMessage::new(&long, None).check(long.created_ms),
            Err(Rejection::TextTooLong(5000))
        ));
        let mut bad_id = DirectMessage::new(&line, None);
        bad_id.id = Some(vec![1, 2, 3]);
        assert_eq!(bad_id.check(line.created_ms), Err(Rejection::BadId(3)));
        let mut no_text = DirectMessage::new(&line, None);
        no_text.text = None;
        assert_eq!(
            no_text.check(line.created_ms),
            Err(Rejection::MissingField("text"))
        );
    }
}
