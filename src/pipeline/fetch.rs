//! The download side of a restore: an async task pulls the object from the store into a
//! bounded channel, and [`ChunkReader`] hands those bytes to the blocking decrypt thread as a
//! `std::io::Read`. Network and decryption overlap; memory stays at `DOWNLOAD_CHUNKS` chunks.
//! A download that breaks off is resumed from the byte it reached (a ranged GET), a few
//! times with backoff: a dropped connection an hour into a large restore must not end it.
//! Whatever arrives is still checked end to end by age and the stored sha256.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::storage::ObjectStore;

/// Bytes read from the store per chunk, and chunks buffered ahead of the decrypt thread.
const DOWNLOAD_CHUNK: usize = 256 * 1024;
const DOWNLOAD_CHUNKS: usize = 8;
/// Resumptions in a row without a byte of progress before a download is given up.
const RESUME_ATTEMPTS: u32 = 5;
#[cfg(not(test))]
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
#[cfg(test)]
const FIRST_BACKOFF: Duration = Duration::from_millis(1);

/// The store's read broke off mid-object, and resuming did not help: a repository failure,
/// not damaged data.
#[derive(Debug, thiserror::Error)]
#[error("the download broke off: {0}")]
pub struct DownloadBroke(pub io::Error);

/// Opens `key` for reading; returns the reader for the blocking side and the pump future,
/// which the caller drives (it ends at the object's end, on a failure it could not resume
/// from, or when the reader is dropped). A missing object is an error here, at once.
pub async fn download_channel(
    store: Arc<dyn ObjectStore>,
    key: String,
) -> Result<(ChunkReader, impl Future<Output = ()> + Send + 'static)> {
    let mut body = store.download(&key, 0).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_CHUNKS);
    let pump = async move {
        let mut offset = 0u64;
        let mut failed_in_a_row = 0;
        loop {
            let mut chunk = BytesMut::with_capacity(DOWNLOAD_CHUNK);
            match body.read_buf(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => {
                    offset += n as u64;
                    failed_in_a_row = 0;
                    if tx.send(Ok(chunk.freeze())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let reopened = loop {
                        if failed_in_a_row >= RESUME_ATTEMPTS {
                            break None;
                        }
                        tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(failed_in_a_row)).await;
                        failed_in_a_row += 1;
                        tracing::warn!(key, offset, attempt = failed_in_a_row, error = %e, "download broke off; resuming");
                        if let Ok(body) = store.download(&key, offset).await {
                            break Some(body);
                        }
                    };
                    match reopened {
                        Some(next) => body = next,
                        None => {
                            let _ = tx.send(Err(io::Error::other(DownloadBroke(e)))).await;
                            return;
                        }
                    }
                }
            }
        }
    };
    Ok((
        ChunkReader {
            rx,
            current: Bytes::new(),
        },
        pump,
    ))
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;
    use crate::storage::memory::MemoryStore;
    use crate::storage::{IncompleteUpload, ObjectInfo, ObjectReader, UploadChunk};

    /// A memory store whose streams break after `break_after` bytes, `breaks` times.
    struct Flaky {
        inner: MemoryStore,
        break_after: usize,
        breaks: AtomicU32,
    }

    struct BreakingReader {
        inner: ObjectReader,
        left: usize,
    }

    impl AsyncRead for BreakingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.left == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                )));
            }
            let mut limited = buf.take(self.left);
            let before = limited.filled().len();
            let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
            let n = limited.filled().len() - before;
            // SAFETY: `limited` wrote only into `buf`'s unfilled part, now initialized.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            self.left -= n;
            poll
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        async fn put(&self, key: &str, body: Bytes) -> Result<()> {
            self.inner.put(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.inner.get(key).await
        }
        async fn head(&self, key: &str) -> Result<crate::storage::ObjectHead> {
            self.inner.head(key).await
        }
        async fn download(&self, key: &str, offset: u64) -> Result<ObjectReader> {
            let inner = self.inner.download(key, offset).await?;
            let breaking = self
                .breaks
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            Ok(if breaking {
                Box::new(BreakingReader {
                    inner,
                    left: self.break_after,
                })
            } else {
                inner
            })
        }
        async fn upload(
            &self,
            key: &str,
            expected_bytes: Option<u64>,
            chunks: mpsc::Receiver<UploadChunk>,
        ) -> Result<u64> {
            self.inner.upload(key, expected_bytes, chunks).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn list_incomplete(&self, _prefix: &str) -> Result<Vec<IncompleteUpload>> {
            Ok(Vec::new())
        }
        async fn probe(&self) -> Result<()> {
            Ok(())
        }
    }

    async fn fetch_all(store: Arc<dyn ObjectStore>) -> io::Result<Vec<u8>> {
        let (mut reader, pump) = download_channel(store, "k".into()).await.unwrap();
        let pump = tokio::spawn(pump);
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .await
        .unwrap();
        pump.await.unwrap();
        read
    }

    fn flaky(breaks: u32, break_after: usize) -> (Arc<Flaky>, Vec<u8>) {
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let store = Arc::new(Flaky {
            inner: MemoryStore::default(),
            break_after,
            breaks: AtomicU32::new(breaks),
        });
        (store, body)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_broken_download_resumes_where_it_stopped() {
        // Breaks every 100 kB, ten times: more breaks than attempts, but every resumption
        // makes progress, so the download completes.
        let (store, body) = flaky(10, 100_000);
        store.put("k", Bytes::from(body.clone())).await.unwrap();
        let got = fetch_all(store.clone()).await.unwrap();
        assert!(
            got == body,
            "every byte once, in order, across ten resumptions"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_download_that_keeps_breaking_fails_as_a_broken_download() {
        // Every attempt breaks before its first byte.
        let (store, body) = flaky(u32::MAX, 0);
        store.put("k", Bytes::from(body)).await.unwrap();
        let err = fetch_all(store).await.map(|got| got.len()).unwrap_err();
        assert!(
            err.get_ref().is_some_and(|e| e.is::<DownloadBroke>()),
            "{err}"
        );
    }
}
