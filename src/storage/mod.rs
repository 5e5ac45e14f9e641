//! The object store behind a repository: a small trait with S3, local-directory and
//! in-memory implementations. Keys are `/`-separated and relative to the repository root
//! (the S3 prefix or the directory). Large objects arrive as a stream of chunks over a
//! bounded channel and become visible only when the producer sends [`UploadChunk::Finish`];
//! a stream that ends without it is aborted (no partial object, no open multipart upload).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};

pub mod local;
pub mod memory;
pub mod s3;

/// One message of a streamed upload.
#[derive(Debug)]
pub enum UploadChunk {
    Data(Bytes),
    /// Every byte has been sent and every producing stage succeeded: make the object durable.
    Finish,
}

/// An upload that started and never finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncompleteUpload {
    /// The object it would have become.
    pub key: String,
    /// The store's handle for it (an S3 upload id, a partial file's path).
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// A streamed object body.
pub type ObjectReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// What a replacement checks it is replacing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// The store's version tag (an S3 ETag), where it has one.
    pub etag: Option<String>,
}

/// How a replaced object was written: what went over the wire from vault, what the server
/// copied itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replaced {
    pub uploaded_bytes: u64,
    pub copied_bytes: u64,
    /// The kept bytes were copied inside the store (S3 UploadPartCopy), not sent again.
    pub server_side: bool,
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where this store points, for messages (`s3://bucket/prefix at http://...`).
    fn location(&self) -> String;

    /// Stores a small object whole.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    /// Reads a small object whole.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Reads an object as a stream from byte `offset` on, for dumps too large to hold (and
    /// to resume a broken download). A failure after the first byte surfaces as an I/O
    /// error from the reader.
    async fn download(&self, key: &str, offset: u64) -> Result<ObjectReader>;

    /// Stores a streamed object. Returns the number of bytes stored once the object is
    /// durable; if the channel closes before `Finish`, removes every trace and errors.
    /// `expected_bytes` is what the object will probably hold (S3 chooses its one part
    /// size from it); the object may be larger.
    async fn upload(
        &self,
        key: &str,
        expected_bytes: Option<u64>,
        chunks: mpsc::Receiver<UploadChunk>,
    ) -> Result<u64>;

    /// The size (and version tag) of an object; an error if it does not exist.
    async fn head(&self, key: &str) -> Result<ObjectHead>;

    /// Replaces `key` with `head` followed by the object's own bytes from `keep_from` on,
    /// atomically: readers see the old object or the new one. `old` is what the caller read;
    /// a store that can tell refuses to replace a different object. This default sends the
    /// kept bytes through vault again (download and upload); S3 copies them server-side.
    async fn replace_head(
        &self,
        key: &str,
        head: Bytes,
        keep_from: u64,
        old: &ObjectHead,
    ) -> Result<Replaced> {
        replace_by_streaming(self, key, head, keep_from, old).await
    }

    /// Every object under `prefix`, in key order, across as many pages as it takes.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Uploads that started under `prefix` and never finished (S3 multipart uploads, partial
    /// files of a directory repository): garbage of killed backups, for `vault prune`.
    async fn list_incomplete(&self, _prefix: &str) -> Result<Vec<IncompleteUpload>> {
        Ok(Vec::new())
    }

    /// Discards an unfinished upload.
    async fn abort_incomplete(&self, _upload: &IncompleteUpload) -> Result<()> {
        Ok(())
    }

    /// Until when S3 Object Lock forbids deleting `key`, if it has a retention date.
    async fn locked_until(&self, _key: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }

    /// A cheap check that the store exists and answers, run before a backup starts so a
    /// missing bucket or a dead endpoint fails before pg_dump does any work.
    async fn probe(&self) -> Result<()>;
}

/// The fault-injection point (`VAULT_FAULT_KILL_AT`) of a server-side replacement whose new
/// upload has started (its first part stored) and is not complete.
pub const REPLACE_STARTED: &str = "replace-started";

/// [`ObjectStore::replace_head`] by streaming: the kept bytes are downloaded and uploaded
/// again behind the new head, and the upload commits only if every one of them arrived.
pub(crate) async fn replace_by_streaming<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    head: Bytes,
    keep_from: u64,
    old: &ObjectHead,
) -> Result<Replaced> {
    let kept = old.size.checked_sub(keep_from).ok_or_else(|| {
        Error::Internal(format!(
            "replacing `{key}`: keeps from byte {keep_from} of {}",
            old.size
        ))
    })?;
    let new_size = head.len() as u64 + kept;
    let body = store.download(key, keep_from).await?;
    let uploaded = stream_into(
        store,
        key,
        new_size,
        head,
        body,
        |_| {},
        |read, _| {
            if read == kept {
                return Ok(());
            }
            Err(Error::Repository(format!(
                "`{key}` changed while it was being replaced ({read} bytes kept, {kept} expected); \
             nothing was replaced"
            )))
        },
    )
    .await?;
    Ok(Replaced {
        uploaded_bytes: uploaded,
        copied_bytes: 0,
        server_side: false,
    })
}

/// Streams `head`, then `body`, into a new object `key` of about `expected` bytes (S3
/// sizes its parts from it); the upload commits only if
/// `accept(bytes read from body, their sha256)` agrees, else it is aborted (nothing of it
/// is kept) and `accept`'s error returned. `on_read` sees each chunk's size. Returns the
/// bytes stored. The memory budget: one 1 MiB chunk being read, four in the channel, and
/// what the store buffers.
pub(crate) async fn stream_into<S: ObjectStore + ?Sized>(
    store: &S,
    key: &str,
    expected: u64,
    head: Bytes,
    mut body: ObjectReader,
    on_read: impl Fn(u64) + Send,
    accept: impl FnOnce(u64, String) -> Result<()> + Send,
) -> Result<u64> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let (tx, rx) = mpsc::channel(4);
    let produce = async move {
        if !head.is_empty() && tx.send(UploadChunk::Data(head)).await.is_err() {
            return Ok(());
        }
        let mut hasher = sha2::Sha256::new();
        let mut read = 0u64;
        loop {
            let mut chunk = bytes::BytesMut::with_capacity(1024 * 1024);
            let n = body
                .read_buf(&mut chunk)
                .await
                .map_err(|e| Error::Repository(format!("reading `{key}` broke off: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&chunk);
            read += n as u64;
            on_read(n as u64);
            if tx.send(UploadChunk::Data(chunk.freeze())).await.is_err() {
                // The upload ended first: its error is the cause.
                return Ok(());
            }
        }
        // Dropping the sender without Finish aborts the upload.
        accept(read, hex::encode(hasher.finalize()))?;
        let _ = tx.send(UploadChunk::Finish).await;
        Ok(())
    };
    let (produced, uploaded) = tokio::join!(produce, store.upload(key, Some(expected), rx));
    produced?;
    uploaded
}

/// Where `[repository]` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Directory(std::path::PathBuf),
}

/// Parses `repository.url`: `s3://bucket/prefix`, `file:///path` or a plain path.
pub fn locate(config: &RepositoryConfig) -> Result<Location> {
    let url = config.url.trim();
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "repository.url `{url}` names no bucket: use s3://BUCKET/PREFIX"
            )));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    } else if let Some(path) = url.strip_prefix("file://") {
        Ok(Location::Directory(path.into()))
    } else if url.contains("://") {
        Err(Error::Config(format!(
            "repository.url `{url}` has an unknown scheme: use s3://bucket/prefix, \
             file:///path or a plain path"
        )))
    } else {
        Ok(Location::Directory(url.into()))
    }
}

/// Opens the store named by `[repository]`.
pub async fn open(config: &RepositoryConfig) -> Result<Box<dyn ObjectStore>> {
    Ok(match locate(config)? {
        Location::S3 { bucket, prefix } => {
            Box::new(s3::S3Store::connect(config, &bucket, &prefix).await?)
        }
        Location::Directory(path) => Box::new(local::LocalStore::new(path)),
    })
}

/// Joins a store prefix and a key with exactly one `/` between them.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every store must share, run against each implementation.
    use super::*;

    async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
        let objects = store.list(prefix).await.unwrap();
        objects.into_iter().map(|o| o.key).collect()
    }

    pub async fn upload_commits_only_on_finish(store: &dyn ObjectStore) {
        let (tx, rx) = mpsc::channel(4);
        tx.send(UploadChunk::Data(Bytes::from_static(b"hello ")))
            .await
            .unwrap();
        tx.send(UploadChunk::Data(Bytes::from_static(b"world")))
            .await
            .unwrap();
        tx.send(UploadChunk::Finish).await.unwrap();
        assert_eq!(store.upload("a/one", None, rx).await.unwrap(), 11);
        assert_eq!(&store.get("a/one").await.unwrap()[..], b"hello world");
        let mut streamed = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(
            &mut store.download("a/one", 0).await.unwrap(),
            &mut streamed,
        )
        .await
        .unwrap();
        assert_eq!(streamed, b"hello world");
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(
            &mut store.download("a/one", 6).await.unwrap(),
            &mut rest,
        )
        .await
        .unwrap();
        assert_eq!(rest, b"world");
        assert!(store.download("a/missing", 0).await.is_err());

        let (tx, rx) = mpsc::channel(4);
        tx.send(UploadChunk::Data(Bytes::from_static(b"partial")))
            .await
            .unwrap();
        drop(tx);
        assert!(store.upload("a/two", None, rx).await.is_err());
        let keys = keys_under(store, "a/").await;
        assert_eq!(
            keys,
            vec!["a/one".to_string()],
            "an aborted upload leaves nothing"
        );

        store
            .put("a/three", Bytes::from_static(b"3"))
            .await
            .unwrap();
        store.delete("a/one").await.unwrap();
        store.delete("a/one").await.unwrap();
        let keys = keys_under(store, "a/").await;
        assert_eq!(keys, vec!["a/three".to_string()]);
        assert!(store.get("a/one").await.is_err());
    }

    /// A new head before an object's own bytes from an offset on, and the object's head.
    pub async fn replace_head_keeps_the_tail(store: &dyn ObjectStore) {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        store
            .put("r/object", Bytes::from(body.clone()))
            .await
            .unwrap();
        let old = store.head("r/object").await.unwrap();
        assert_eq!(old.size, body.len() as u64);
        let replaced = store
            .replace_head("r/object", Bytes::from_static(b"NEW HEAD"), 100, &old)
            .await
            .unwrap();
        let mut expected = b"NEW HEAD".to_vec();
        expected.extend_from_slice(&body[100..]);
        let stored = store.get("r/object").await.unwrap();
        assert_eq!(stored.len(), expected.len());
        assert!(
            stored[..] == expected[..],
            "new head then the old bytes from 100 on"
        );
        assert_eq!(
            replaced.uploaded_bytes + replaced.copied_bytes,
            expected.len() as u64
        );
        assert_eq!(
            store.head("r/object").await.unwrap().size,
            expected.len() as u64
        );
        assert!(store.head("r/missing").await.is_err());
        assert_eq!(keys_under(store, "r/").await, vec!["r/object".to_string()]);
    }
}
