//! A repository in a local directory: the embedded default for a first run, and what
//! `file:///path` or a plain path means. Objects are written to a hidden temporary name,
//! fsynced, then renamed into place, so a crash never leaves a half-written object under a
//! real key.
//!
//! Every file operation that may block — an fsync of a whole dump, a walk of the tree on
//! every listing — runs on a blocking thread (`off_runtime`), never on the async runtime,
//! which also serves the daemon's `/metrics` and drives the other stages.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ObjectInfo, ObjectStore, UploadChunk};
use crate::error::{Error, Result};

/// Temporary files carry this marker and are never listed as objects.
const PARTIAL_MARKER: &str = ".partial-";

#[derive(Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Runs `work` (blocking file I/O) on a blocking thread.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::task_failed("a file operation in the repository directory", e))?
}

impl LocalStore {
    pub fn new(root: PathBuf) -> LocalStore {
        LocalStore { root }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        if key.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::Repository(format!("invalid object key `{key}`")));
        }
        Ok(self.root.join(relative))
    }

    fn io_error(&self, action: &str, path: &Path, e: std::io::Error) -> Error {
        Error::Repository(format!(
            "cannot {action} `{}` in repository directory `{}`: {e}",
            path.display(),
            self.root.display()
        ))
    }

    /// Creates the temp file beside `path` that an upload writes into.
    fn create_partial(&self, path: &Path) -> Result<(PathBuf, std::fs::File)> {
        let parent = path.parent().expect("object paths have a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| self.io_error("create directory", parent, e))?;
        let name = path
            .file_name()
            .expect("object paths have a name")
            .to_string_lossy();
        let temp = parent.join(format!(
            ".{name}{PARTIAL_MARKER}{:016x}",
            rand::random::<u64>()
        ));
        let file = std::fs::File::create(&temp).map_err(|e| self.io_error("create", &temp, e))?;
        Ok((temp, file))
    }

    /// Every file below the folder `prefix` names (its part up to the last `/`), partial
    /// ones included, keys relative to the root: a listing of one WAL folder does not walk
    /// every backup.
    fn walk(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let folder = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let start = if folder.is_empty() {
            self.root.clone()
        } else {
            self.path_of(folder)?
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_error("list", &dir, e))?;
                let meta = entry
                    .metadata()
                    .map_err(|e| self.io_error("stat", &entry.path(), e))?;
                if meta.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let path = entry.path();
                let relative = path.strip_prefix(&self.root).expect("below root");
                out.push(ObjectInfo {
                    key: relative.to_string_lossy().into_owned(),
                    size: meta.len(),
                    last_modified: meta.modified().ok().map(Into::into),
                });
            }
        }
        Ok(out)
    }

    async fn walk_off_runtime(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let store = self.clone();
        let prefix = prefix.to_string();
        off_runtime(move || store.walk(&prefix)).await
    }

    fn commit_partial(&self, temp: &Path, file: std::fs::File, path: &Path) -> Result<()> {
        file.sync_all()
            .map_err(|e| self.io_error("sync", temp, e))?;
        std::fs::rename(temp, path).map_err(|e| self.io_error("rename into", path, e))?;
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(path.parent().expect("has parent")) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> String {
        format!("directory `{}`", self.root.display())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let store = self.clone();
        off_runtime(move || {
            let (temp, mut file) = store.create_partial(&path)?;
            let written = file
                .write_all(&body)
                .map_err(|e| store.io_error("write", &temp, e));
            match written.and_then(|()| store.commit_partial(&temp, file, &path)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    Err(e)
                }
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| self.io_error("read", &path, e))
    }

    async fn head(&self, key: &str) -> Result<super::ObjectHead> {
        let path = self.path_of(key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| self.io_error("read", &path, e))?;
        Ok(super::ObjectHead {
            size: meta.len(),
            etag: None,
        })
    }

    async fn download(&self, key: &str, offset: u64) -> Result<super::ObjectReader> {
        use tokio::io::AsyncSeekExt;
        let path = self.path_of(key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io_error("read", &path, e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| self.io_error("seek in", &path, e))?;
        Ok(Box::new(file))
    }

    async fn upload(
        &self,
        key: &str,
        _expected_bytes: Option<u64>,
        mut chunks: mpsc::Receiver<UploadChunk>,
    ) -> Result<u64> {
        let path = self.path_of(key)?;
        let store = self.clone();
        let (temp, file) = {
            let path = path.clone();
            off_runtime(move || store.create_partial(&path)).await?
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut written = 0u64;
        let outcome: Result<bool> = async {
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = chunks.recv().await {
                match chunk {
                    UploadChunk::Data(data) => {
                        file.write_all(&data)
                            .await
                            .map_err(|e| self.io_error("write", &temp, e))?;
                        written += data.len() as u64;
                    }
                    UploadChunk::Finish => return Ok(true),
                }
            }
            Ok(false)
        }
        .await;
        match outcome {
            Ok(true) => {
                let file = file.into_std().await;
                let store = self.clone();
                off_runtime(move || {
                    store.commit_partial(&temp, file, &path).inspect_err(|_| {
                        let _ = std::fs::remove_file(&temp);
                    })
                })
                .await?;
                Ok(written)
            }
            Ok(false) => {
                drop(file);
                let _ = tokio::fs::remove_file(&temp).await;
                Err(Error::Repository(format!(
                    "upload of `{key}` aborted before it finished; nothing was kept"
                )))
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> = self
            .walk_off_runtime(prefix)
            .await?
            .into_iter()
            .filter(|o| !o.key.contains(PARTIAL_MARKER) && o.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_incomplete(&self, prefix: &str) -> Result<Vec<super::IncompleteUpload>> {
        let mut out = Vec::new();
        for file in self.walk_off_runtime(prefix).await? {
            // `dir/.name.partial-<random>` is an unfinished `dir/name`.
            let (dir, name) = file.key.rsplit_once('/').unwrap_or(("", &file.key));
            let Some((object, _)) = name
                .strip_prefix('.')
                .and_then(|n| n.split_once(PARTIAL_MARKER))
            else {
                continue;
            };
            let key = if dir.is_empty() {
                object.to_string()
            } else {
                format!("{dir}/{object}")
            };
            if key.starts_with(prefix) {
                out.push(super::IncompleteUpload {
                    key,
                    upload_id: file.key,
                    initiated: file.last_modified,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn abort_incomplete(&self, upload: &super::IncompleteUpload) -> Result<()> {
        if !upload.upload_id.contains(PARTIAL_MARKER) {
            return Err(Error::Repository(format!(
                "`{}` is not a partial file of this repository",
                upload.upload_id
            )));
        }
        self.delete(&upload.upload_id).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_error("delete", &path, e)),
        }
        // A backup's own directory (`data/<db>/<id>/`) goes with its last object, so pruning
        // leaves no empty directories; shared ones (`data/<db>/`) stay, as a backup may be
        // creating a file in them right now.
        if key.split('/').count() >= 4 {
            let _ = tokio::fs::remove_dir(path.parent().expect("has parent")).await;
        }
        Ok(())
    }

    async fn probe(&self) -> Result<()> {
        tokio::fs::create_dir_all(&self.root).await.map_err(|e| {
            Error::Repository(format!(
                "cannot create repository directory `{}`: {e}; fix repository.url or the \
                 directory's permissions",
                self.root.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        super::super::contract::upload_commits_only_on_finish(&store).await;
        super::super::contract::replace_head_keeps_the_tail(&store).await;
        // A partial file of a killed writer is an incomplete upload, and aborting removes it.
        let partial = dir.path().join("a/.four.partial-0123456789abcdef");
        std::fs::write(&partial, b"half").unwrap();
        let incomplete = store.list_incomplete("a/").await.unwrap();
        assert_eq!(incomplete.len(), 1);
        assert_eq!(incomplete[0].key, "a/four");
        assert!(
            store
                .list("a/")
                .await
                .unwrap()
                .iter()
                .all(|o| o.key != "a/four")
        );
        store.abort_incomplete(&incomplete[0]).await.unwrap();
        assert!(!partial.exists());
        // No temporary files are left behind by the aborted upload.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, vec!["three".to_string()]);
    }

    /// Regression: listing walked the directory tree (and `put` fsynced) on the async
    /// runtime, stalling everything else on it — in the daemon, `/metrics` — for as long.
    /// On a single-threaded runtime a task that ticks must get to run while a listing of a
    /// large tree and a put are in progress.
    #[test]
    fn file_work_runs_off_the_async_runtime() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..40 {
            let sub = dir.path().join(format!("data/app/{d:03}"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..250 {
                std::fs::write(sub.join(format!("{f}.json")), b"{}").unwrap();
            }
        }
        let store = LocalStore::new(dir.path().to_path_buf());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for round in 0..2 {
                let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
                let ticker = {
                    let ticks = std::sync::Arc::clone(&ticks);
                    tokio::spawn(async move {
                        loop {
                            ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                    })
                };
                if round == 0 {
                    assert_eq!(store.list("data/").await.unwrap().len(), 10_000);
                } else {
                    store
                        .put("data/app/big", Bytes::from(vec![7u8; 16 << 20]))
                        .await
                        .unwrap();
                }
                let seen = ticks.load(std::sync::atomic::Ordering::SeqCst);
                ticker.abort();
                assert!(
                    seen > 0,
                    "round {round}: the runtime was blocked for the whole operation"
                );
            }
        });
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let store = LocalStore::new("/tmp/root".into());
        assert!(store.path_of("../etc/passwd").is_err());
        assert!(store.path_of("/etc/passwd").is_err());
        assert!(store.path_of("manifests/app/x.json").is_ok());
    }
}
