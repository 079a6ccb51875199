//! The two message types of libp2p's WebRTC transport (libp2p specs,
//! `webrtc/webrtc.md` and `webrtc/README.md`), and the unsigned-varint
//! length prefix every one of them travels with.
//!
//! ```proto
//! // On the `/webrtc-signaling/0.0.1` stream, over a relayed connection.
//! message Message {
//!   enum Type { SDP_OFFER = 0; SDP_ANSWER = 1; ICE_CANDIDATE = 2; }
//!   optional Type type = 1;
//!   optional string data = 2;
//! }
//! // On every data channel of a `/webrtc` connection.
//! message Message {
//!   enum Flag { FIN = 0; STOP_SENDING = 1; RESET_STREAM = 2; FIN_ACK = 3; }
//!   optional Flag flag = 1;
//!   optional bytes message = 2;
//! }
//! ```

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message as _;

use crate::Error;

/// A message on the signaling stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Signal {
    /// What `data` holds.
    #[prost(enumeration = "SignalType", optional, tag = "1")]
    pub r#type: Option<i32>,
    /// An SDP, or the JSON of `RTCIceCandidate.toJSON()`.
    #[prost(string, optional, tag = "2")]
    pub data: Option<String>,
}

/// What a [`Signal`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SignalType {
    /// The initiator's SDP offer.
    SdpOffer = 0,
    /// The recipient's SDP answer.
    SdpAnswer = 1,
    /// One trickled ICE candidate; `null` when gathering is complete.
    IceCandidate = 2,
}

impl Signal {
    /// A signal of `kind` carrying `data`.
    pub fn new(kind: SignalType, data: impl Into<String>) -> Self {
        Self {
            r#type: Some(kind as i32),
            data: Some(data.into()),
        }
    }

    /// The kind, if it is one we know.
    pub fn kind(&self) -> Option<SignalType> {
        SignalType::try_from(self.r#type?).ok()
    }
}

/// A message on a data channel: a flag, data, or both.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Frame {
    /// A change of the stream's state.
    #[prost(enumeration = "Flag", optional, tag = "1")]
    pub flag: Option<i32>,
    /// Stream data.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub message: Option<Vec<u8>>,
}

/// The flags of a [`Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Flag {
    /// The sender will send no more data.
    Fin = 0,
    /// The sender will read no more data.
    StopSending = 1,
    /// The sender abandons the stream at once.
    ResetStream = 2,
    /// The sender saw our FIN.
    FinAck = 3,
}

/// Largest data-channel message, length prefix included (the spec's
/// 16 KiB, which every browser delivers whole).
pub const MAX_FRAME: usize = 16 * 1024;
/// Length prefix (2 bytes up to 16383) plus the protobuf tags and lengths
/// around the data (flag: 2 bytes; data: tag 1, length up to 3).
const FRAME_OVERHEAD: usize = 2 + 2 + 4;
/// Most stream data one frame carries.
pub const MAX_FRAME_DATA: usize = MAX_FRAME - FRAME_OVERHEAD;
/// Largest signaling message we accept (an SDP offer is a few KiB).
pub const MAX_SIGNAL: usize = 64 * 1024;

impl Frame {
    /// A frame with data only.
    pub fn data(data: &[u8]) -> Self {
        Self {
            flag: None,
            message: Some(data.to_vec()),
        }
    }

    /// A frame with a flag only.
    pub fn with_flag(flag: Flag) -> Self {
        Self {
            flag: Some(flag as i32),
            message: None,
        }
    }

    /// The flag, if there is one we know.
    pub fn known_flag(&self) -> Option<Flag> {
        Flag::try_from(self.flag?).ok()
    }
}

/// Encodes a message with its length prefix.
pub fn encode(message: &impl prost::Message) -> Vec<u8> {
    message.encode_length_delimited_to_vec()
}

/// Bytes that cannot be a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces more than the limit.
    #[error("message of {len} bytes announced, at most {max} allowed")]
    TooLong {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The length prefix is not a valid varint.
    #[error("bad length prefix")]
    BadPrefix,
    /// The message is not valid protobuf.
    #[error("undecodable message: {0}")]
    Protobuf(String),
}

/// Reads a length prefix from the start of `buf`: `Ok(None)` when `buf`
/// holds only part of it, else the length and the prefix's size.
pub fn read_prefix(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut len: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| DecodeError::BadPrefix)?;
            if len > max {
                return Err(DecodeError::TooLong { len, max });
            }
            return Ok(Some((len, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err(DecodeError::BadPrefix);
    }
    Ok(None)
}

/// Reads one signal from a signaling stream: `None` at a clean end of the
/// stream.
pub async fn read_signal<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Signal>, Error> {
    let mut prefix = Vec::with_capacity(3);
    let (len, _) = loop {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).await.map_err(Error::io)? == 0 {
            if prefix.is_empty() {
                return Ok(None);
            }
            return Err(Error::Signaling("stream ended inside a message".into()));
        }
        prefix.push(byte[0]);
        match read_prefix(&prefix, MAX_SIGNAL) {
            Ok(Some(found)) => break found,
            Ok(None) => {}
            Err(e) => return Err(Error::Signaling(e.to_string())),
        }
    };
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(Error::io)?;
    Signal::decode(body.as_slice())
        .map(Some)
        .map_err(|e| Error::Signaling(format!("undecodable signal: {e}")))
}

/// Writes one signal to a signaling stream and flushes it.
pub async fn write_signal<W: AsyncWrite + Unpin>(
    writer: &mut W,
    signal: Signal,
) -> Result<(), Error> {
    writer
        .write_all(&encode(&signal))
        .await
        .map_err(Error::io)?;
    writer.flush().await.map_err(Error::io)
}

/// Takes whole frames from a data channel's bytes as they arrive (a
/// browser delivers each message whole, but nothing in the spec forbids a
/// frame spanning two).
#[derive(Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some((len, prefix)) = read_prefix(&self.buf, MAX_FRAME)? else {
            return Ok(None);
        };
        if self.buf.len() < prefix + len {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[prefix..prefix + len])
            .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        self.buf.drain(..prefix + len);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_full_frame_fits_the_spec_limit() {
        let frame = Frame {
            flag: Some(Flag::Fin as i32),
            message: Some(vec![0xab; MAX_FRAME_DATA]),
        };
        assert!(encode(&frame).len() <= MAX_FRAME);
    }

    #[test]
    fn flags_have_the_spec_numbers() {
        // The numbers are what goes on the wire; js-libp2p sends FIN_ACK.
        assert_eq!(encode(&Frame::with_flag(Flag::Fin)), [2, 0x08, 0]);
        assert_eq!(encode(&Frame::with_flag(Flag::FinAck)), [2, 0x08, 3]);
        let frame = Frame::decode(&[0x08u8, 3][..]).expect("decodes");
        assert_eq!(frame.known_flag(), Some(Flag::FinAck));
    }

    #[test]
    fn signals_round_trip() {
        let signal = Signal::new(SignalType::IceCandidate, r#"{"candidate":""}"#);
        let bytes = encode(&signal);
        let (len, prefix) = read_prefix(&bytes, MAX_SIGNAL)
            .expect("valid")
            .expect("whole");
        let back = Signal::decode(&bytes[prefix..prefix + len]).expect("decodes");
        assert_eq!(back.kind(), Some(SignalType::IceCandidate));
        assert_eq!(back, signal);
    }

    #[test]
    fn oversized_and_broken_prefixes_are_errors() {
        assert_eq!(
            read_prefix(&[0x81, 0x80, 0x01], MAX_FRAME),
            Err(DecodeError::TooLong {
                len: 16385,
                max: MAX_FRAME
            })
        );
        assert_eq!(
            read_prefix(&[0xff; 10], MAX_FRAME),
            Err(DecodeError::BadPrefix)
        );
        assert_eq!(read_prefix(&[0xff; 3], usize::MAX), Ok(None));
        let mut d = Deframer::default();
        d.push(&[3, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(DecodeError::Protobuf(_))));
    }

    proptest! {
        #[test]
        fn frames_survive_any_split(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cut in 0usize..4000,
        ) {
            let mut bytes = Vec::new();
            for p in &payloads {
                bytes.extend(encode(&Frame::data(p)));
            }
            let cut = cut.min(bytes.len());
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                d.push(part);
                while let Some(frame) = d.next_frame().expect("valid frames") {
                    got.push(frame.message.unwrap_or_default());
                }
            }
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Deframer::default();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
