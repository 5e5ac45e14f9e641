//! The last stage of a restore on a thread of its own: sha256 of the plain dump and the
//! write into pg_restore's stdin or the temporary file. With a second core this takes the
//! hashing and copying off the decrypt/decompress thread (a third of its time, measured
//! with perf on a 190 MB dump). Memory: `QUEUED` buffers of `BUFFER` bytes plus the one
//! being filled.

use std::io::{self, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::hash::{Digest, HashingWriter};

const BUFFER: usize = 256 * 1024;

/// A panic in one of vault's own threads, carried inside an I/O error: a bug, not a
/// property of the data being streamed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ThreadPanicked(pub String);
const QUEUED: usize = 4;

pub struct OffloadedHashingWriter<W> {
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<(W, Digest)>>>,
    buffer: Vec<u8>,
}

impl<W: Write + Send + 'static> OffloadedHashingWriter<W> {
    pub fn new(sink: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED);
        let worker = std::thread::Builder::new()
            .name("vault-sink".into())
            .spawn(move || {
                let mut writer = HashingWriter::new(sink);
                for buffer in rx {
                    writer.write_all(&buffer)?;
                }
                Ok(writer.finish())
            })?;
        Ok(OffloadedHashingWriter {
            tx: Some(tx),
            worker: Some(worker),
            buffer: Vec::with_capacity(BUFFER),
        })
    }

    /// Waits for every byte to be written; returns the sink (not flushed or closed) and
    /// the digest of what went through, or the sink's first write error.
    pub fn finish(mut self) -> io::Result<(W, Digest)> {
        self.send_buffer()?;
        self.tx = None;
        self.join()
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(BUFFER));
        let sent = self.tx.as_ref().map(|tx| tx.send(full).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The worker stopped: its error is the cause.
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("the sink thread ended early")),
        }
    }

    fn join(&mut self) -> io::Result<(W, Digest)> {
        let worker = self
            .worker
            .take()
            .ok_or_else(|| io::Error::other("the sink thread already ended"))?;
        worker.join().unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(io::Error::other(ThreadPanicked(format!(
                "the sink thread panicked ({what})"
            ))))
        })
    }
}

impl<W: Write + Send + 'static> Write for OffloadedHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BUFFER - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == BUFFER {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_arrives_in_order_and_is_hashed() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut writer = OffloadedHashingWriter::new(Vec::new()).unwrap();
        for chunk in data.chunks(70_001) {
            writer.write_all(chunk).unwrap();
        }
        let (out, digest) = writer.finish().unwrap();
        assert!(out == data);
        assert_eq!(digest, Digest::of(&data));
    }

    /// A sink that fails after `left` bytes, as a pg_restore that exited does.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_sinks_error_comes_back_with_its_kind() {
        let mut writer = OffloadedHashingWriter::new(Failing { left: 300_000 }).unwrap();
        let chunk = vec![7u8; 100_000];
        let err = (0..100)
            .try_for_each(|_| writer.write_all(&chunk))
            .and_then(|()| writer.finish().map(|_| ()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    }
}
