//! A child program's stdout (pg_dump, pg_basebackup) streamed through the pipeline into one
//! object, committed only if the child exited 0, every stage finished, and the work done
//! alongside (the dump-time facts) succeeded. Otherwise the upload is aborted and nothing
//! is stored.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::keys::Recipients;
use crate::pipeline::{self, ChunkSender, Compression, StreamSummary};
use crate::postgres::ChildProcess;
use crate::progress::Progress;
use crate::storage::ObjectStore;

/// Where and how a child's output is stored.
pub struct ChildStream<'a> {
    pub store: &'a dyn ObjectStore,
    pub key: &'a str,
    /// What the object will probably hold, for the store to size its upload.
    pub expected: Option<u64>,
    pub recipients: Arc<Recipients>,
    pub compression: Compression,
    pub progress: Arc<dyn Progress>,
    /// For messages: "the dump of app", "the base backup".
    pub what: String,
}

/// What a committed stream produced.
pub struct Streamed<R, T> {
    pub summary: StreamSummary,
    /// The reader the child's stdout was wrapped in, after the end (what it observed).
    pub source: R,
    /// What ran alongside.
    pub alongside: T,
    /// The tail of the child's stderr (its warnings).
    pub stderr: String,
}

/// Why the control side did not commit.
enum StageFailure {
    /// The upload went away; its own error is the cause.
    Upload,
    Failed(Error),
}

impl ChildStream<'_> {
    /// Streams `child`'s stdout, read through `wrap`, into the object; `alongside` runs
    /// meanwhile and must succeed too.
    pub async fn run<R, T>(
        self,
        mut child: ChildProcess,
        wrap: impl FnOnce(std::fs::File) -> R + Send + 'static,
        alongside: impl Future<Output = Result<T>>,
        mut cancel: Cancel,
    ) -> Result<Streamed<R, T>>
    where
        R: Read + Send + 'static,
    {
        let stdout = child.take_stdout().expect("stdout is piped");
        let stdout = std::fs::File::from(
            stdout
                .into_owned_fd()
                .map_err(|e| Error::io(format!("cannot read the output for {}", self.what), e))?,
        );
        let (sender, receiver) = ChunkSender::channel();
        let upload = self.store.upload(self.key, self.expected, receiver);

        let recipients = Arc::clone(&self.recipients);
        let progress = Arc::clone(&self.progress);
        let compression = self.compression;
        let stages = tokio::task::spawn_blocking(move || {
            let mut source = wrap(stdout);
            let (mut sender, summary) = pipeline::compress_encrypt(
                &mut source,
                sender,
                &recipients,
                compression,
                progress.as_ref(),
            )?;
            sender.flush_buffered()?;
            Ok::<_, std::io::Error>((sender, summary, source))
        });
        let what = &self.what;

        let control = async {
            let work = async {
                let (stages, alongside) = tokio::join!(stages, alongside);
                let stages = stages.map_err(|e| {
                    StageFailure::Failed(Error::task_failed("the pipeline thread", e))
                })?;
                let finished = child.wait().await;
                // The first failure in the stream's order is the cause: a stage that broke
                // (a closed upload, a zstd error) also kills the child with EPIPE.
                let (sender, summary, source) = match stages {
                    Ok(done) => done,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Err(StageFailure::Upload);
                    }
                    Err(e) => {
                        return Err(StageFailure::Failed(Error::io(
                            format!("compressing and encrypting {what} failed"),
                            e,
                        )));
                    }
                };
                let finished = finished.map_err(StageFailure::Failed)?;
                let alongside = alongside.map_err(StageFailure::Failed)?;
                Ok((sender, summary, source, alongside, finished.stderr))
            };
            tokio::select! {
                result = work => result,
                _ = cancel.cancelled() => Err(StageFailure::Failed(Error::Interrupted(format!(
                    "{what} was cancelled; the upload was aborted"
                )))),
            }
        };
        let committed = async {
            // Dropping the sender without committing aborts the upload.
            let (sender, summary, source, alongside, stderr) = control.await?;
            sender.commit().await.map_err(|()| StageFailure::Upload)?;
            Ok::<_, StageFailure>(Streamed {
                summary,
                source,
                alongside,
                stderr,
            })
        };
        let (uploaded, committed) = tokio::join!(upload, committed);
        match (committed, uploaded) {
            (Ok(streamed), Ok(stored_bytes)) => {
                debug_assert_eq!(stored_bytes, streamed.summary.stored.bytes);
                Ok(streamed)
            }
            (Err(StageFailure::Failed(e)), _) => Err(e),
            (_, Err(upload_error)) => Err(upload_error),
            (Err(StageFailure::Upload), Ok(_)) => Err(Error::Repository(format!(
                "the upload of {} stopped without an error",
                self.key
            ))),
        }
    }
}
