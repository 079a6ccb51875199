//! The browser's WebSocket connection without its 100 ms flushes.
//!
//! libp2p-websocket-websys (0.6) answers a flush only once the socket's
//! `bufferedAmount` is back to zero, and learns that from a timer that
//! fires every 100 ms (browsers have no "buffer drained" event for
//! WebSockets). Noise and Yamux flush after every message they write, so
//! each step of a handshake that waited for the previous write's flush
//! lost up to 100 ms: about 300 ms between the socket opening and the
//! relay's room subscription arriving, on loopback.
//!
//! Bytes handed to `WebSocket.send()` are the browser's to deliver; there
//! is nothing left for a flush to push. So here a flush succeeds at once.
//! Writing still waits when the browser holds too much unsent data (the
//! inner connection's limit), which is the back-pressure that matters, and
//! a failed socket still fails the next read or write.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};

/// A connection whose flush does not wait for the browser's send buffer.
pub struct NoFlushWait<C>(pub C);

impl<C: AsyncRead + Unpin> AsyncRead for NoFlushWait<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for NoFlushWait<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt, executor::block_on, io::Cursor};

    use super::*;

    /// A writer whose flush never completes, like the socket's while its
    /// timer has not fired.
    struct SlowFlush(Vec<u8>);

    impl AsyncWrite for SlowFlush {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn writes_pass_through_and_a_flush_does_not_wait() {
        let mut conn = NoFlushWait(SlowFlush(Vec::new()));
        block_on(async {
            conn.write_all(b"noise").await?;
            conn.flush().await?;
            conn.close().await
        })
        .expect("write, flush and close succeed");
        assert_eq!(conn.0.0, b"noise");
    }

    #[test]
    fn reads_pass_through() {
        let mut conn = NoFlushWait(Cursor::new(b"yamux".to_vec()));
        let mut read = Vec::new();
        block_on(conn.read_to_end(&mut read)).expect("read");
        assert_eq!(read, b"yamux");
    }
}
