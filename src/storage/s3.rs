//! The S3 (and S3-compatible) object store. Streamed objects go up as a multipart upload that
//! starts only once the first part is full (smaller objects are one PUT); at most
//! `parts_in_flight` parts upload at once. Every part but the last has the same size, chosen
//! once per object before it starts ([`PartPlan`]): Cloudflare R2 refuses parts of unequal
//! size, and S3 allows at most 10,000 parts, so the size comes from the expected size of the
//! object (twice it, for growth), never below `repository.part_size_mib`. Any failure, or a
//! stream that ends without `Finish`, aborts the multipart upload.
//!
//! Memory budget: one part being filled plus `parts_in_flight` parts uploading, i.e.
//! (1 + parts_in_flight) × part size: 24 MiB at the defaults (8 MiB, 2 in flight), for any
//! object up to 40 GB expected; above, the part size (and the budget) grows with the object.
//! The part buffers are allocated once per upload and reused as parts complete, so a slow
//! server holds no more than those (1 + parts_in_flight) buffers.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockRetention, ObjectLockRetentionMode,
};
use bytes::{Buf, Bytes, BytesMut};
use percent_encoding::utf8_percent_encode;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{ObjectInfo, ObjectStore, UploadChunk, join_key};
use crate::config::{ChecksumMode, ObjectLockConfig, ObjectLockMode, RepositoryConfig};
use crate::error::{Error, Result};

const MIB: usize = 1024 * 1024;
const MAX_PARTS: u32 = 10_000;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The part size leaves room for the object to be this many times its expected size.
const GROWTH_HEADROOM: u64 = 2;

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    base_part_size: usize,
    parts_in_flight: usize,
    object_lock: Option<ObjectLockConfig>,
}

/// An S3 timestamp as chrono's.
fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The one part size of an upload, chosen before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    /// Bytes in every part but the last.
    pub size: usize,
    /// What the object was expected to hold, if anything was known.
    pub expected: Option<u64>,
}

impl PartPlan {
    /// `minimum` (`repository.part_size_mib`), raised in whole MiB until 10,000 parts hold
    /// twice `expected`.
    pub fn new(minimum: usize, expected: Option<u64>) -> PartPlan {
        let needed = expected.map_or(0, |bytes| {
            let per_part = bytes
                .saturating_mul(GROWTH_HEADROOM)
                .div_ceil(u64::from(MAX_PARTS));
            per_part.div_ceil(MIB as u64) * MIB as u64
        });
        let size = needed.max(minimum as u64).min(MAX_PART_SIZE) as usize;
        PartPlan { size, expected }
    }

    /// The most this plan can store.
    pub fn capacity(&self) -> u64 {
        self.size as u64 * u64::from(MAX_PARTS)
    }

    /// Why an object that outgrew the plan failed, and what to set.
    fn outgrown(&self, key: &str) -> Error {
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        let expected = self.expected.map_or_else(
            || "nothing was known of its size beforehand".to_string(),
            |e| format!("it was expected to hold {:.1} GiB", gib(e)),
        );
        let suggestion = (self.size / MIB) * 4;
        Error::Repository(format!(
            "object `{key}` outgrew its multipart upload: {MAX_PARTS} parts of {} MiB hold \
             {:.1} GiB, and {expected}. The upload was aborted and nothing was kept; set \
             repository.part_size_mib = {suggestion} (or more) and run it again",
            self.size / MIB,
            gib(self.capacity())
        ))
    }
}

impl S3Store {
    pub async fn connect(config: &RepositoryConfig, bucket: &str, prefix: &str) -> Result<S3Store> {
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "repository.endpoint `{endpoint}` must start with http:// or https://"
            )));
        }
        // Region: the config's, else the environment's; a custom endpoint rarely cares, so it
        // gets us-east-1 rather than a slow, noisy instance-metadata lookup.
        let explicit = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| config.endpoint.as_ref().map(|_| "us-east-1".to_string()));
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            explicit.map(aws_config::Region::new),
        )
        .or_default_provider()
        .or_else(aws_config::Region::from_static("us-east-1"));
        // Transient failures (5xx, throttling, dropped connections) are retried with
        // backoff; part bodies are in memory, so every attempt can resend them. An attempt
        // that hangs is abandoned rather than stalling the backup forever.
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(600))
                    .build(),
            )
            .load()
            .await;
        let custom_endpoint = config.endpoint.is_some();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style.unwrap_or(custom_endpoint));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let checksums = config.checksums.unwrap_or(if custom_endpoint {
            ChecksumMode::WhenRequired
        } else {
            ChecksumMode::WhenSupported
        });
        if checksums == ChecksumMode::WhenRequired {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: config
                .endpoint
                .clone()
                .unwrap_or_else(|| "AWS S3".to_string()),
            base_part_size: config.part_size_mib as usize * MIB,
            parts_in_flight: config.parts_in_flight,
            object_lock: config.object_lock.clone(),
        })
    }

    fn full_key(&self, key: &str) -> String {
        join_key(&self.prefix, key)
    }

    /// Turns an SDK error into a sentence that says what is wrong and what to do.
    /// With `repository.object_lock`, gives a just-stored object its retention date. Set
    /// after the upload (one call for single and multipart objects alike); S3 then refuses
    /// to delete that version before the date.
    async fn protect(&self, key: &str) -> Result<()> {
        let Some(lock) = &self.object_lock else {
            return Ok(());
        };
        let until = chrono::Utc::now() + chrono::Duration::days(i64::from(lock.days));
        let mode = match lock.mode {
            ObjectLockMode::Governance => ObjectLockRetentionMode::Governance,
            ObjectLockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                        until.timestamp(),
                    ))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.explain("set the object lock retention of", key, e))?;
        Ok(())
    }

    /// HEAD of `key`; `action` says why in an error ("read the size of").
    async fn head_object(
        &self,
        key: &str,
        action: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        let full = self.full_key(key);
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.explain(action, &full, e))
    }

    /// Starts a GET of `key` from byte `offset`; returns the full key and the response with
    /// its body unread.
    async fn get_object(
        &self,
        key: &str,
        offset: u64,
    ) -> Result<(String, aws_sdk_s3::operation::get_object::GetObjectOutput)> {
        let full = self.full_key(key);
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .set_range((offset > 0).then(|| format!("bytes={offset}-")))
            .send()
            .await
            .map_err(|e| self.explain("read", &full, e))?;
        Ok((full, output))
    }

    fn explain<E>(&self, action: &str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.target().explain(action, key, err)
    }

    fn target(&self) -> BucketAt {
        BucketAt {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = result {
            // The upload stays open; `vault prune` removes stale multipart uploads.
            tracing::warn!(key, error = %DisplayErrorContext(&e), "could not abort multipart upload");
        }
    }

    /// Runs the streamed upload; on error the caller aborts the multipart upload it opened.
    async fn stream_parts(
        &self,
        key: &str,
        plan: PartPlan,
        chunks: &mut mpsc::Receiver<UploadChunk>,
        upload_id: &mut Option<String>,
    ) -> Result<u64> {
        let target = plan.size;
        let mut part = BytesMut::with_capacity(target);
        // Buffers of finished parts, reused for the next ones.
        let mut spare: Vec<BytesMut> = Vec::new();
        let mut number: u32 = 1;
        let mut total = 0u64;
        let mut in_flight: JoinSet<Result<(CompletedPart, Bytes)>> = JoinSet::new();
        let mut completed = Vec::new();
        loop {
            let Some(chunk) = chunks.recv().await else {
                return Err(Error::Repository(format!(
                    "upload of `{key}` aborted before it finished; nothing was kept"
                )));
            };
            let mut data = match chunk {
                UploadChunk::Data(data) => data,
                UploadChunk::Finish => break,
            };
            total += data.len() as u64;
            while !data.is_empty() {
                if number > MAX_PARTS {
                    return Err(plan.outgrown(key));
                }
                let take = (target - part.len()).min(data.len());
                part.extend_from_slice(&data.split_to(take));
                if part.len() < target {
                    continue;
                }
                let id = match upload_id {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.create_multipart(key).await?;
                        tracing::debug!(key, "multipart upload started");
                        *upload_id = Some(id.clone());
                        id
                    }
                };
                while in_flight.len() >= self.parts_in_flight {
                    completed.push(join_part(&mut in_flight, &mut spare).await?);
                }
                let next = spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(target));
                let body = std::mem::replace(&mut part, next).freeze();
                in_flight.spawn(self.upload_part(key, &id, number, body));
                number += 1;
            }
        }

        let Some(id) = upload_id.clone() else {
            // Smaller than one part: a single PUT.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(part.freeze()))
                .send()
                .await
                .map_err(|e| self.explain("upload", key, e))?;
            return Ok(total);
        };
        if !part.is_empty() {
            in_flight.spawn(self.upload_part(key, &id, number, part.freeze()));
        }
        while !in_flight.is_empty() {
            completed.push(join_part(&mut in_flight, &mut spare).await?);
        }
        completed.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.explain("complete the upload of", key, e))?;
        Ok(total)
    }

    async fn create_multipart(&self, key: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.explain("start a multipart upload of", key, e))?;
        created.upload_id().map(str::to_string).ok_or_else(|| {
            Error::Repository(format!(
                "{} returned no upload id for `{key}`",
                self.endpoint
            ))
        })
    }

    /// A future uploading one part; owns everything it needs so it can be spawned. Gives
    /// the body back, for its buffer to be reused once the request has let go of it.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> impl Future<Output = Result<(CompletedPart, Bytes)>> + Send + 'static {
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .body(ByteStream::from(body.clone()));
        let target = self.target();
        let key = key.to_string();
        async move {
            let output = request
                .send()
                .await
                .map_err(|e| target.explain(&format!("upload part {number} of"), &key, e))?;
            let part = CompletedPart::builder()
                .set_e_tag(output.e_tag().map(str::to_string))
                .part_number(number as i32)
                .build();
            Ok((part, body))
        }
    }
}

/// Where the parts of a replaced object come from: part 1 is the new head and the first
/// `first_kept` kept bytes (uploaded); part k ≥ 2 is the old object's bytes at the same new
/// offsets, shifted by the difference in head length (copied by the server).
struct TailCopy {
    etag: String,
    head: Bytes,
    keep_from: u64,
    first_kept: u64,
    new_size: u64,
    part: u64,
}

impl TailCopy {
    fn parts(&self) -> u32 {
        self.new_size.div_ceil(self.part) as u32
    }

    /// The old object's bytes (first and last, inclusive) that make part `number` ≥ 2.
    fn source_range(&self, number: u32) -> (u64, u64) {
        let start = u64::from(number - 1) * self.part;
        let end = (start + self.part).min(self.new_size);
        let shift = |at: u64| at - self.head.len() as u64 + self.keep_from;
        (shift(start), shift(end) - 1)
    }
}

enum CopyFailed {
    /// The server does not do UploadPartCopy: send everything instead.
    Unsupported(String),
    /// The old object is no longer the one read (a 412 on its ETag).
    Changed,
    Other(Error),
}

/// Copy requests in flight at once: the server does the work, vault only waits.
const COPIES_IN_FLIGHT: usize = 4;

impl S3Store {
    /// Uploads part 1 and has the server copy the others from the old object (which must
    /// still carry `layout.etag`), then completes the upload. The caller aborts it on error.
    async fn copy_behind(
        &self,
        full: &str,
        upload_id: &str,
        layout: &TailCopy,
    ) -> std::result::Result<super::Replaced, CopyFailed> {
        let first = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .range(format!(
                "bytes={}-{}",
                layout.keep_from,
                layout.keep_from + layout.first_kept - 1
            ))
            .if_match(&layout.etag)
            .send()
            .await;
        let first = match first {
            Ok(output) => output,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Err(CopyFailed::Changed);
            }
            Err(e) => return Err(CopyFailed::Other(self.explain("read", full, e))),
        };
        let kept = first.body.collect().await.map_err(|e| {
            CopyFailed::Other(Error::Repository(format!(
                "reading `{full}` from {} broke off: {e}",
                self.endpoint
            )))
        })?;
        let mut part_one = BytesMut::with_capacity(layout.head.len() + kept.remaining());
        part_one.extend_from_slice(&layout.head);
        part_one.extend_from_slice(&kept.into_bytes());
        let uploaded = part_one.len() as u64;
        let (one, _) = self
            .upload_part(full, upload_id, 1, part_one.freeze())
            .await
            .map_err(CopyFailed::Other)?;
        let mut completed = vec![one];
        crate::fault::point(super::REPLACE_STARTED);
        let source =
            utf8_percent_encode(&format!("{}/{full}", self.bucket), COPY_SOURCE).to_string();
        let mut in_flight = JoinSet::new();
        for number in 2..=layout.parts() {
            while in_flight.len() >= COPIES_IN_FLIGHT {
                completed.push(join_copy(&mut in_flight, full).await?);
            }
            let (first, last) = layout.source_range(number);
            let request = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number as i32)
                .copy_source(&source)
                .copy_source_range(format!("bytes={first}-{last}"))
                .copy_source_if_match(&layout.etag);
            let target = self.target();
            let key = full.to_string();
            in_flight.spawn(async move {
                let output = request.send().await.map_err(|e| {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if status == Some(501) || e.code() == Some("NotImplemented") {
                        CopyFailed::Unsupported(DisplayErrorContext(&e).to_string())
                    } else if status == Some(412) {
                        CopyFailed::Changed
                    } else {
                        CopyFailed::Other(target.explain(
                            &format!("copy part {number} of"),
                            &key,
                            e,
                        ))
                    }
                })?;
                Ok(CompletedPart::builder()
                    .set_e_tag(
                        output
                            .copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_string),
                    )
                    .part_number(number as i32)
                    .build())
            });
        }
        while !in_flight.is_empty() {
            completed.push(join_copy(&mut in_flight, full).await?);
        }
        completed.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| CopyFailed::Other(self.explain("complete the replacement of", full, e)))?;
        Ok(super::Replaced {
            uploaded_bytes: uploaded,
            copied_bytes: layout.new_size - uploaded,
            server_side: true,
        })
    }
}

/// Waits for one part copy.
async fn join_copy(
    set: &mut JoinSet<std::result::Result<CompletedPart, CopyFailed>>,
    full: &str,
) -> std::result::Result<CompletedPart, CopyFailed> {
    match set.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(join)) => Err(CopyFailed::Other(Error::task_failed(
            &format!("a part copy of `{full}`"),
            join,
        ))),
        None => unreachable!("join_copy is only called on a non-empty set"),
    }
}

/// `x-amz-copy-source` is `bucket/key`, URL-encoded by the caller (the SDK does not:
/// awslabs/aws-sdk-rust#1357); vault's keys hold `%` from percent-encoded database names.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The deepest error in a chain: for connection failures, the sentence that matters
/// ("Connection refused (os error 111)") without the SDK's layers of wrapping.
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Where requests go, owned, so spawned part uploads can explain their own failures.
struct BucketAt {
    endpoint: String,
    bucket: String,
}

impl BucketAt {
    /// Turns an SDK error into a sentence that says what is wrong and what to do.
    fn explain<E>(&self, action: &str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let BucketAt { bucket, endpoint } = self;
        if matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        ) {
            let detail = DisplayErrorContext(&err).to_string();
            if detail.contains("credentials") {
                return Error::Repository(format!(
                    "no usable S3 credentials to {action} `{key}` at {endpoint}: set \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for a key \
                     that may read and write bucket `{bucket}`"
                ));
            }
            return Error::transient(Error::Repository(format!(
                "cannot reach the S3 endpoint {endpoint} to {action} `{key}`: {}; check \
                 repository.endpoint and that the server is running and reachable",
                innermost_cause(&err)
            )));
        }
        // The server's own trouble (5xx, throttling) or a reply cut short: a retry may do.
        let status = err.raw_response().map(|r| r.status().as_u16());
        if matches!(err, SdkError::ResponseError(_))
            || status.is_some_and(|s| s >= 500)
            || matches!(
                err.code(),
                Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout")
            )
        {
            return Error::transient(Error::Repository(format!(
                "S3 request to {action} `{key}` in bucket `{bucket}` at {endpoint} failed \
                 (the server may be overloaded or restarting; retry later): {}",
                DisplayErrorContext(&err)
            )));
        }
        match err.code() {
            Some("NoSuchBucket") => Error::Repository(format!(
                "bucket `{bucket}` does not exist at {endpoint}: create it, or fix repository.url"
            )),
            Some(
                code @ ("AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "Forbidden"),
            ) => Error::Repository(format!(
                "{endpoint} refused to {action} `{key}` in bucket `{bucket}` ({code}): check \
                 the S3 credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) \
                 and that the key may read and write this bucket"
            )),
            Some("NoSuchKey") => Error::Repository(format!(
                "object `{key}` does not exist in bucket `{bucket}` at {endpoint}"
            )),
            _ => Error::Repository(format!(
                "S3 request to {action} `{key}` in bucket `{bucket}` at {endpoint} failed: {}",
                DisplayErrorContext(&err)
            )),
        }
    }
}

/// Waits for one part upload; its buffer goes to `spare` when nothing else holds it.
async fn join_part(
    set: &mut JoinSet<Result<(CompletedPart, Bytes)>>,
    spare: &mut Vec<BytesMut>,
) -> Result<CompletedPart> {
    match set.join_next().await {
        Some(Ok(result)) => {
            let (part, body) = result?;
            if let Ok(mut buffer) = body.try_into_mut() {
                buffer.clear();
                spare.push(buffer);
            }
            Ok(part)
        }
        Some(Err(join)) => Err(Error::task_failed("a part upload task", join)),
        None => unreachable!("join_part is only called on a non-empty set"),
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        let mut url = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            url = format!("{url}/{}", self.prefix);
        }
        format!("{url} at {}", self.endpoint)
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.explain("write", &full, e))?;
        self.protect(&full).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let (full, output) = self.get_object(key, 0).await?;
        let body = output.body.collect().await.map_err(|e| {
            Error::Repository(format!(
                "reading `{full}` from {} broke off: {e}",
                self.endpoint
            ))
        })?;
        Ok(body.into_bytes())
    }

    async fn download(&self, key: &str, offset: u64) -> Result<super::ObjectReader> {
        let (_, output) = self.get_object(key, offset).await?;
        Ok(Box::new(output.body.into_async_read()))
    }

    async fn upload(
        &self,
        key: &str,
        expected_bytes: Option<u64>,
        mut chunks: mpsc::Receiver<UploadChunk>,
    ) -> Result<u64> {
        let full = self.full_key(key);
        let plan = PartPlan::new(self.base_part_size, expected_bytes);
        tracing::debug!(
            key,
            part_mib = plan.size / MIB,
            expected_bytes,
            "one part size for the whole object"
        );
        let mut upload_id = None;
        let result = self
            .stream_parts(&full, plan, &mut chunks, &mut upload_id)
            .await;
        if result.is_err()
            && let Some(id) = &upload_id
        {
            self.abort(&full, id).await;
        }
        let stored = result?;
        self.protect(&full).await?;
        Ok(stored)
    }

    async fn head(&self, key: &str) -> Result<super::ObjectHead> {
        let head = self.head_object(key, "read the size of").await?;
        Ok(super::ObjectHead {
            size: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head.e_tag().map(str::to_string),
        })
    }

    async fn replace_head(
        &self,
        key: &str,
        head: Bytes,
        keep_from: u64,
        old: &super::ObjectHead,
    ) -> Result<super::Replaced> {
        let new_size = head.len() as u64 + old.size.saturating_sub(keep_from);
        let plan = PartPlan::new(self.base_part_size, Some(new_size));
        let first_part_kept = (plan.size as u64).checked_sub(head.len() as u64);
        let (Some(etag), Some(first_kept)) = (&old.etag, first_part_kept) else {
            return super::replace_by_streaming(self, key, head, keep_from, old).await;
        };
        if new_size <= plan.size as u64 {
            return super::replace_by_streaming(self, key, head, keep_from, old).await;
        }
        let full = self.full_key(key);
        let layout = TailCopy {
            etag: etag.clone(),
            head: head.clone(),
            keep_from,
            first_kept,
            new_size,
            part: plan.size as u64,
        };
        let upload_id = self.create_multipart(&full).await?;
        let copied = self.copy_behind(&full, &upload_id, &layout).await;
        match copied {
            Ok(replaced) => {
                self.protect(&full).await?;
                Ok(replaced)
            }
            Err(CopyFailed::Unsupported(reason)) => {
                self.abort(&full, &upload_id).await;
                tracing::warn!(
                    key,
                    reason,
                    "the S3 server cannot copy byte ranges (UploadPartCopy); sending the whole \
                     object again instead"
                );
                super::replace_by_streaming(self, key, head, keep_from, old).await
            }
            Err(CopyFailed::Changed) => {
                self.abort(&full, &upload_id).await;
                Err(Error::Repository(format!(
                    "`{full}` changed while vault was replacing it (its ETag is no longer {etag}); \
                     nothing was replaced: run it again"
                )))
            }
            Err(CopyFailed::Other(e)) => {
                self.abort(&full, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.explain("list", &full_prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    key: key[strip.min(key.len())..].to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(to_chrono),
                });
            }
        }
        Ok(out)
    }

    async fn list_incomplete(&self, prefix: &str) -> Result<Vec<super::IncompleteUpload>> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.explain("list the multipart uploads under", &full_prefix, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                out.push(super::IncompleteUpload {
                    key: key[strip.min(key.len())..].to_string(),
                    upload_id: id.to_string(),
                    initiated: upload.initiated().and_then(to_chrono),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn abort_incomplete(&self, upload: &super::IncompleteUpload) -> Result<()> {
        let full = self.full_key(&upload.key);
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| self.explain("abort the multipart upload of", &full, e))?;
        Ok(())
    }

    async fn locked_until(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let head = self.head_object(key, "read the retention of").await?;
        Ok(head.object_lock_retain_until_date().and_then(to_chrono))
    }

    async fn probe(&self) -> Result<()> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        match result {
            Ok(_) => Ok(()),
            // HEAD responses carry no error code: read the status instead.
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {
                Err(Error::Repository(format!(
                    "bucket `{}` does not exist at {}: create it, or fix repository.url",
                    self.bucket, self.endpoint
                )))
            }
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 403 => {
                Err(Error::Repository(format!(
                    "{} refused access to bucket `{}` (403): check the S3 credentials \
                     (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket policy",
                    self.endpoint, self.bucket
                )))
            }
            Err(e) => Err(self.explain("open bucket", &self.bucket, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.explain("delete", &full, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite's S3 server (scripts/test starts one and exports these variables).
    async fn test_store(part_size_mib: u64) -> S3Store {
        let endpoint = std::env::var("VAULT_TEST_S3_ENDPOINT")
            .expect("VAULT_TEST_S3_ENDPOINT is not set: run the suite with scripts/test");
        let bucket = std::env::var("VAULT_TEST_S3_BUCKET").expect("VAULT_TEST_S3_BUCKET");
        let config = RepositoryConfig {
            url: String::new(),
            endpoint: Some(endpoint),
            region: None,
            force_path_style: None,
            checksums: None,
            part_size_mib,
            parts_in_flight: 2,
            object_lock: None,
            retention: None,
        };
        let prefix = format!("unit/{:016x}", rand::random::<u64>());
        S3Store::connect(&config, &bucket, &prefix).await.unwrap()
    }

    #[tokio::test]
    async fn unfinished_multipart_uploads_are_listed_and_aborted() {
        let store = test_store(5).await;
        let full = store.full_key("data/app/x/dump.pgdump.zst.age");
        let id = store.create_multipart(&full).await.unwrap();
        let open = store.list_incomplete("data/").await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].key, "data/app/x/dump.pgdump.zst.age");
        assert_eq!(open[0].upload_id, id);
        assert!(open[0].initiated.is_some());
        store.abort_incomplete(&open[0]).await.unwrap();
        assert!(store.list_incomplete("data/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn s3_store_meets_the_contract() {
        let store = test_store(5).await;
        super::super::contract::upload_commits_only_on_finish(&store).await;
        super::super::contract::replace_head_keeps_the_tail(&store).await;
    }

    /// An object of several parts gets its new head in the first part, uploaded, and the
    /// rest copied by the server from its own ranges; a changed source is refused.
    #[tokio::test]
    async fn replace_head_copies_the_tail_server_side() {
        let store = test_store(5).await;
        let key = "replace/large%20one";
        let body: Vec<u8> = (0..13 * MIB as u32).map(|i| (i % 249) as u8).collect();
        store.put(key, Bytes::from(body.clone())).await.unwrap();
        let old = store.head(key).await.unwrap();
        assert!(old.etag.is_some());
        let head = Bytes::from(vec![b'H'; 300]);
        let replaced = store
            .replace_head(key, head.clone(), 200, &old)
            .await
            .unwrap();
        let stored = store.get(key).await.unwrap();
        assert_eq!(stored.len(), body.len() + 100);
        assert!(stored[..300] == head[..] && stored[300..] == body[200..]);
        assert!(replaced.server_side, "{replaced:?}");
        assert!(
            replaced.uploaded_bytes <= 5 * MIB as u64 * 2 && replaced.copied_bytes > 0,
            "{replaced:?}"
        );
        assert_eq!(
            replaced.uploaded_bytes + replaced.copied_bytes,
            stored.len() as u64
        );
        // `old` no longer describes the object: nothing is replaced.
        let err = store
            .replace_head(key, head, 300, &old)
            .await
            .expect_err("a changed source must be refused");
        assert!(err.to_string().contains(key), "{err}");
        assert_eq!(store.get(key).await.unwrap(), stored);
        assert!(store.list_incomplete("replace/").await.unwrap().is_empty());
        store.delete(key).await.unwrap();
    }

    /// Odd-sized chunks across several part boundaries come back byte for byte, as one
    /// multipart object.
    #[tokio::test]
    async fn multipart_upload_reassembles_parts_in_order() {
        let store = test_store(5).await;
        let data: Vec<u8> = (0..(12 * MIB + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (tx, rx) = mpsc::channel(4);
        let sending = data.clone();
        let producer = tokio::spawn(async move {
            for chunk in sending.chunks(777_777) {
                tx.send(UploadChunk::Data(Bytes::copy_from_slice(chunk)))
                    .await
                    .unwrap();
            }
            tx.send(UploadChunk::Finish).await.unwrap();
        });
        assert_eq!(
            store.upload("big", None, rx).await.unwrap(),
            data.len() as u64
        );
        producer.await.unwrap();
        let head = store
            .client
            .head_object()
            .bucket(&store.bucket)
            .key(store.full_key("big"))
            .send()
            .await
            .unwrap();
        assert!(
            head.e_tag().unwrap().ends_with("-3\""),
            "three parts: {:?}",
            head.e_tag()
        );
        assert_eq!(&store.get("big").await.unwrap()[..], &data[..]);
    }

    /// Regression: parts doubled every 1,000 parts, which Cloudflare R2 refuses (every part
    /// but the last must be the same size), so any backup past ~8 GiB failed there.
    #[test]
    fn one_part_size_holds_twice_the_expected_object_in_ten_thousand_parts() {
        let minimum = 8 * MIB;
        assert_eq!(PartPlan::new(minimum, None).size, minimum);
        assert_eq!(PartPlan::new(minimum, Some(1 << 30)).size, minimum);
        for expected in [9u64 << 30, 41 << 30, 500 << 30, 4 << 40] {
            let plan = PartPlan::new(minimum, Some(expected));
            assert!(plan.capacity() >= 2 * expected, "{expected}: {plan:?}");
            assert_eq!(plan.size % MIB, 0, "whole MiB");
            assert!(
                plan.size == minimum
                    || plan.capacity() < 2 * expected + MAX_PARTS as u64 * MIB as u64,
                "no larger than needed: {plan:?}"
            );
        }
        assert_eq!(
            PartPlan::new(minimum, Some(500 << 30)).size,
            103 * MIB,
            "500 GiB expected: 1 TiB / 10,000 parts, rounded up to whole MiB"
        );
        // Beyond S3's 5 TiB object limit the size stops at S3's largest part.
        assert_eq!(
            PartPlan::new(minimum, Some(u64::MAX)).size as u64,
            MAX_PART_SIZE
        );
        let message = PartPlan::new(minimum, Some(1 << 30))
            .outgrown("data/app/x/dump")
            .to_string();
        assert!(
            message.contains("repository.part_size_mib = 32") && message.contains("1.0 GiB"),
            "{message}"
        );
    }

    /// Every part of a multipart upload, listed on the S3 server before the upload is
    /// completed, has the plan's one size (the last part is sent only at the end).
    #[tokio::test]
    async fn the_parts_of_an_upload_are_all_the_same_size_on_the_server() {
        let store = test_store(5).await;
        let expected = 30_000 * MIB as u64; // 6 MiB parts: 10,000 of them hold twice it
        let plan = PartPlan::new(5 * MIB, Some(expected));
        assert_eq!(plan.size, 6 * MIB);
        let (tx, rx) = mpsc::channel(4);
        let upload = store.upload("equal", Some(expected), rx);
        let full = store.full_key("equal");
        let inspect = async {
            // 4 whole parts and a bit, in chunks that straddle the part boundaries.
            let chunk = vec![42u8; 999_983];
            let mut sent = 0;
            while sent < 4 * plan.size + 12_345 {
                let n = chunk.len().min(4 * plan.size + 12_345 - sent);
                tx.send(UploadChunk::Data(Bytes::copy_from_slice(&chunk[..n])))
                    .await
                    .unwrap();
                sent += n;
            }
            let parts = loop {
                let uploads = store
                    .client
                    .list_multipart_uploads()
                    .bucket(&store.bucket)
                    .prefix(&full)
                    .send()
                    .await
                    .unwrap();
                if let Some(id) = uploads.uploads().first().and_then(|u| u.upload_id()) {
                    let listed = store
                        .client
                        .list_parts()
                        .bucket(&store.bucket)
                        .key(&full)
                        .upload_id(id)
                        .send()
                        .await
                        .unwrap();
                    if listed.parts().len() == 4 {
                        break listed;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            let sizes: Vec<i64> = parts.parts().iter().map(|p| p.size().unwrap()).collect();
            tx.send(UploadChunk::Finish).await.unwrap();
            sizes
        };
        let (stored, sizes) = tokio::join!(upload, inspect);
        assert_eq!(stored.unwrap(), 4 * plan.size as u64 + 12_345);
        assert_eq!(sizes, vec![plan.size as i64; 4], "every part one size");
    }
}
