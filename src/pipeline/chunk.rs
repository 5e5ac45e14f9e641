//! The bridge from the blocking pipeline thread to the async uploader: a `Write` that cuts
//! the stream into chunks and sends them over a bounded channel, blocking when the uploader
//! is behind (backpressure is what bounds memory).

use std::io::{self, Write};

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::storage::UploadChunk;

/// Bytes per channel message.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Messages the channel holds while the uploader is busy.
pub const CHANNEL_CHUNKS: usize = 4;

pub struct ChunkSender {
    tx: mpsc::Sender<UploadChunk>,
    buffer: BytesMut,
}

impl ChunkSender {
    /// A sender and the receiving end to hand to `ObjectStore::upload`.
    pub fn channel() -> (ChunkSender, mpsc::Receiver<UploadChunk>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            ChunkSender {
                tx,
                buffer: BytesMut::with_capacity(CHUNK_SIZE),
            },
            rx,
        )
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(CHUNK_SIZE);
        self.tx
            .blocking_send(UploadChunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is buffered (from a blocking thread). The object is not committed yet.
    pub fn flush_buffered(&mut self) -> io::Result<()> {
        self.send_buffer()
    }

    /// Commits the object: every byte was sent and every stage succeeded (from async code).
    pub async fn commit(self) -> Result<(), ()> {
        debug_assert!(self.buffer.is_empty(), "flush_buffered runs before commit");
        self.tx.send(UploadChunk::Finish).await.map_err(|_| ())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buffer.len();
        let n = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= CHUNK_SIZE {
            self.send_buffer()?;
        }
        Ok(n)
    }

    /// Deliberately a no-op: zstd and age flush often, and a flush must not send tiny chunks.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
