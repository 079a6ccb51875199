//! What meshtalk's own stream protocols (history, direct messages) share:
//! messages framed as an unsigned-varint length then that many bytes (a
//! protobuf), as libp2p protocols usually frame them; one request and its
//! answer on a stream of its own; a time limit per exchange; a per-peer
//! rate; and the loop that waits for a peer's stream or for one of our
//! exchanges to end.

use crate::clock;
use std::{collections::HashMap, io, time::Duration};

use futures::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt,
    channel::mpsc,
    future::{Either, select},
    stream::FuturesUnordered,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use web_time::Instant;

/// Peers remembered by a [`PerMinute`] before the quiet ones are forgotten.
const RATE_PEERS: usize = 4096;

/// Counts how often each peer opens a protocol's streams, per minute.
pub(crate) struct PerMinute {
    limit: u32,
    seen: HashMap<PeerId, (Instant, u32)>,
}

impl PerMinute {
    /// At most `limit` a minute per peer.
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: HashMap::new(),
        }
    }

    /// Whether `peer` may have one more now (and counts it).
    pub(crate) fn allow(&mut self, peer: PeerId) -> bool {
        let now = clock::now();
        let minute = Duration::from_secs(60);
        if self.seen.len() > RATE_PEERS {
            self.seen
                .retain(|_, (since, _)| now.duration_since(*since) < minute);
        }
        let (since, count) = self.seen.entry(peer).or_insert((now, 0));
        if now.duration_since(*since) >= minute {
            *since = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.limit
    }
}

/// Takes over `protocol` on `control`: the streams peers open with it.
/// `None` (with a warning) when something else took it already.
pub(crate) fn accept(control: &mut Control, protocol: StreamProtocol) -> Option<Inbound> {
    match control.accept(protocol.clone()) {
        Ok(incoming) => {
            let (to, queue) = mpsc::channel(INBOUND_QUEUE);
            Some(Inbound {
                queue,
                taker: Some(Taker {
                    protocol,
                    from: incoming,
                    to,
                }),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, %protocol, "protocol already taken");
            None
        }
    }
}

/// Streams peers opened with one of our protocols and we have not taken
/// yet, at most this many: beyond, a stream is dropped (reset).
const INBOUND_QUEUE: usize = 128;

/// The streams peers open with one of our protocols.
///
/// libp2p-stream hands a stream over only while the one before it has been
/// taken, and drops (resets) it otherwise: when fifty newcomers ask a busy
/// relay for history at once, many of them would be refused while the
/// engine's task handles other events. A [`Taker`], a task of its own
/// ([`crate::arch::spawn`], started when the streams are first waited for),
/// takes them as they come into a queue of [`INBOUND_QUEUE`].
pub(crate) struct Inbound {
    queue: mpsc::Receiver<(PeerId, Stream)>,
    /// The task, until it starts.
    taker: Option<Taker>,
}

impl futures::Stream for Inbound {
    type Item = (PeerId, Stream);

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(taker) = self.taker.take() {
            crate::arch::spawn(taker.run());
        }
        self.queue.poll_next_unpin(cx)
    }
}

/// Moves the streams peers open with `protocol` from libp2p-stream into
/// an [`Inbound`]'s queue.
struct Taker {
    protocol: StreamProtocol,
    from: IncomingStreams,
    to: mpsc::Sender<(PeerId, Stream)>,
}

impl Taker {
    /// Until either side is gone.
    async fn run(mut self) {
        while let Some(inbound) = self.from.next().await {
            if let Err(e) = self.to.try_send(inbound) {
                if e.is_disconnected() {
                    return;
                }
                let protocol = &self.protocol;
                tracing::debug!(%protocol, "{INBOUND_QUEUE} streams waiting already: one more dropped");
            }
        }
    }
}

/// The next stream a peer opens on `incoming`; pending forever without one.
pub(crate) async fn next_inbound(incoming: &mut Option<Inbound>) -> (PeerId, Stream) {
    match incoming.as_mut() {
        Some(listener) => match listener.next().await {
            Some(inbound) => inbound,
            None => futures::future::pending().await,
        },
        None => futures::future::pending().await,
    }
}

/// What a protocol's driver gets next.
pub(crate) enum Next<T> {
    /// A peer opened a stream (boxed: a stream is large, an ending small).
    Inbound(PeerId, Box<Stream>),
    /// One of our exchanges ended.
    Done(T),
}

/// Waits for a stream a peer opens or for one of `tasks` to end; pending
/// forever with neither, so it can sit in a `select!` (a listener that
/// ends is waited on no more: [`next_inbound`]).
pub(crate) async fn next_of<T, F: Future<Output = T> + Unpin>(
    incoming: &mut Option<Inbound>,
    tasks: &mut FuturesUnordered<F>,
) -> Next<T> {
    let outcome = async move {
        match tasks.next().await {
            Some(done) => done,
            None => futures::future::pending().await,
        }
    };
    match select(
        std::pin::pin!(next_inbound(incoming)),
        std::pin::pin!(outcome),
    )
    .await
    {
        Either::Left(((peer, stream), _)) => Next::Inbound(peer, Box::new(stream)),
        Either::Right((done, _)) => Next::Done(done),
    }
}

/// Runs `work`, or fails with "timed out" after `limit`.
pub async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    futures::select! {
        result = work.fuse() => result,
        () = clock::sleep(limit).fuse() => Err("timed out".into()),
    }
}

/// One request and its answer: opens a stream of `protocol` to `peer`,
/// writes `request`, reads one answer of at most `max` bytes and closes
/// the stream. A failure to read the answer is `no_answer` followed by
/// the reason (empty: the reason alone).
pub(crate) async fn ask(
    mut control: Control,
    peer: PeerId,
    protocol: StreamProtocol,
    request: &[u8],
    max: usize,
    no_answer: &str,
) -> Result<Vec<u8>, String> {
    let mut stream = control
        .open_stream(peer, protocol)
        .await
        .map_err(|e| e.to_string())?;
    write_message(&mut stream, request)
        .await
        .map_err(|e| e.to_string())?;
    let answer = read_message(&mut stream, max)
        .await
        .map_err(|e| format!("{no_answer}{e}"))?;
    let _ = stream.close().await;
    Ok(answer)
}

/// Writes `bytes` with an unsigned-varint length prefix.
pub async fn write_message<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    write_length(writer, bytes.len() as u64).await?;
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Writes the unsigned-varint length prefix of a message of `len` bytes
/// (its body follows, written by the caller).
pub async fn write_length<W: AsyncWrite + Unpin>(writer: &mut W, mut len: u64) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(10);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    writer.write_all(&prefix).await
}

/// Reads one unsigned-varint-length-prefixed message of at most `max`
/// bytes.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let len = read_length(reader).await?;
    if len > max as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes, at most {max} allowed"),
        ));
    }
    let mut body = vec![0; len as usize];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads a message's unsigned-varint length prefix (at most five bytes:
/// lengths under 32 GiB); the caller reads the body.
pub async fn read_length<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<u64> {
    let mut len = 0u64;
    for i in 0..5 {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(len);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "bad length prefix",
    ))
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor as Buffer;

    use super::*;

    #[test]
    fn messages_round_trip_and_oversized_ones_are_refused() {
        futures::executor::block_on(async {
            let body = vec![7u8; 300];
            let mut buf = Vec::new();
            write_message(&mut buf, &body).await.expect("writes");
            assert_eq!(buf.len(), 302);
            let mut reader = Buffer::new(buf.clone());
            assert_eq!(read_message(&mut reader, 300).await.expect("reads"), body);
            let mut reader = Buffer::new(buf);
            assert!(read_message(&mut reader, 299).await.is_err());
            let mut reader = Buffer::new(vec![0xff; 8]);
            assert!(read_message(&mut reader, usize::MAX).await.is_err());
        });
    }
}
