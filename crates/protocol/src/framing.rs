//! Messages on meshtalk's own streams: each an unsigned-varint length,
//! then that many bytes (a protobuf), as libp2p protocols usually frame
//! them.

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use futures_timer::Delay;

/// Runs `work`, or fails with "timed out" after `limit`.
pub async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    futures::select! {
        result = work.fuse() => result,
        () = Delay::new(limit).fuse() => Err("timed out".into()),
    }
}

/// Writes `bytes` with an unsigned-varint length prefix.
pub async fn write_message<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(5);
    let mut len = bytes.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    writer.write_all(&prefix).await?;
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Reads one unsigned-varint-length-prefixed message of at most `max`
/// bytes.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut len: usize = 0;
    for i in 0..5 {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).await?;
        len |= usize::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message of {len} bytes, at most {max} allowed"),
                ));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await?;
            return Ok(body);
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
