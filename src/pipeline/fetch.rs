//! The download side of a restore: an async task pulls the object from the store into a
//! bounded channel, and [`ChunkReader`] hands those bytes to the blocking decrypt thread as a
//! `std::io::Read`. Network and decryption overlap; memory stays at `DOWNLOAD_CHUNKS` chunks.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::storage::ObjectReader;

/// Bytes read from the store per chunk, and chunks buffered ahead of the decrypt thread.
const DOWNLOAD_CHUNK: usize = 256 * 1024;
const DOWNLOAD_CHUNKS: usize = 8;

/// The store's read broke off mid-object: a repository failure, not damaged data.
#[derive(Debug, thiserror::Error)]
#[error("the download broke off: {0}")]
pub struct DownloadBroke(pub io::Error);

/// Starts pulling `body` into a channel; returns the reader for the blocking side and the
/// pump future, which the caller drives (it ends at the object's end, an error, or when the
/// reader is dropped).
pub fn download_channel(
    mut body: ObjectReader,
) -> (ChunkReader, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_CHUNKS);
    let pump = async move {
        loop {
            let mut chunk = BytesMut::with_capacity(DOWNLOAD_CHUNK);
            let message = match body.read_buf(&mut chunk).await {
                Ok(0) => return,
                Ok(_) => Ok(chunk.freeze()),
                Err(e) => Err(io::Error::other(DownloadBroke(e))),
            };
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    };
    (
        ChunkReader {
            rx,
            current: Bytes::new(),
        },
        pump,
    )
}

/// A blocking `Read` over the download channel. Use only on a blocking thread.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
