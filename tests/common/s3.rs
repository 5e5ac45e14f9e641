//! The S3 server the suite runs against (any S3-compatible server: endpoint and credentials
//! in the environment, see scripts/s3-test-server; moto's for Object Lock), and what tests
//! do to it behind vault's back: read, put, delete and list objects, clone backups.

/// The S3 server the suite runs against.
#[derive(Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
}

impl S3Env {
    pub fn from_env() -> S3Env {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run the suite with scripts/test, which starts an S3 \
                     server and exports VAULT_TEST_S3_ENDPOINT, VAULT_TEST_S3_BUCKET and AWS \
                     credentials"
                )
            })
        };
        var("AWS_ACCESS_KEY_ID");
        var("AWS_SECRET_ACCESS_KEY");
        S3Env {
            endpoint: var("VAULT_TEST_S3_ENDPOINT"),
            bucket: var("VAULT_TEST_S3_BUCKET"),
        }
    }

    /// The same bucket behind a port nothing listens on: the server gone, as vault sees it.
    pub fn unreachable(&self) -> S3Env {
        S3Env {
            endpoint: format!("http://127.0.0.1:{}", closed_port()),
            bucket: self.bucket.clone(),
        }
    }

    /// `[repositories.<name>]` for this server's bucket under `prefix`: a copy repository.
    pub fn copy_repository(&self, name: &str, prefix: &str) -> String {
        format!(
            "[repositories.{name}]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\nforce_path_style = true\npart_size_mib = 5",
            self.bucket, self.endpoint
        )
    }

    /// A raw client, for checking what vault stored with plain S3 calls.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                std::env::var("AWS_ACCESS_KEY_ID").unwrap(),
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap(),
                None,
                None,
                "test",
            ))
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn get_object(&self, key: &str) -> Vec<u8> {
        block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("get object");
            out.body
                .collect()
                .await
                .expect("read body")
                .into_bytes()
                .to_vec()
        })
    }

    /// The moto S3 server the suite started, with a new plain bucket: the second S3
    /// implementation.
    pub fn moto(test: &str) -> S3Env {
        Self::moto_bucket(test, false)
    }

    /// The moto S3 server the suite started (`VAULT_TEST_MOTO_ENDPOINT`), with a new bucket
    /// that has Object Lock enabled: the second S3 implementation, for Object Lock.
    pub fn moto_with_object_lock(test: &str) -> S3Env {
        Self::moto_bucket(test, true)
    }

    fn moto_bucket(test: &str, object_lock: bool) -> S3Env {
        let endpoint = std::env::var("VAULT_TEST_MOTO_ENDPOINT").expect(
            "VAULT_TEST_MOTO_ENDPOINT is not set: run the suite with scripts/test, which starts \
             moto's S3 server",
        );
        let env = S3Env {
            endpoint,
            bucket: format!(
                "lock-{}",
                unique_prefix(test).to_lowercase().replace(['_', '/'], "-")
            ),
        };
        block_on(async {
            env.client()
                .create_bucket()
                .bucket(&env.bucket)
                .object_lock_enabled_for_bucket(object_lock)
                .send()
                .await
                .expect("create a bucket with Object Lock on moto");
        });
        env
    }

    /// Copies backup `id` of `database` under `prefix` (manifest and data objects) to new
    /// ids that started at the given times, pinned or not: how tests get backups of many
    /// ages without waiting for them. Each clone is signed anew with `signing_key` (the
    /// writer's), as a backup of that id would be. Returns the new ids, in the order given.
    pub fn clone_backup(
        &self,
        prefix: &str,
        database: &str,
        id: &str,
        clones: &[(chrono::DateTime<chrono::Utc>, bool)],
        signing_key: &std::path::Path,
    ) -> Vec<String> {
        let signer = vault::trust::SigningKey::load(signing_key).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &self.get_object(&format!("{prefix}/manifests/{database}/{id}.json")),
        )
        .unwrap();
        let client = self.client();
        block_on(async {
            let mut ids = Vec::new();
            let mut tasks = tokio::task::JoinSet::new();
            for (n, (started, pinned)) in clones.iter().enumerate() {
                let clone_id = format!("{}-{:06x}", started.format("%Y%m%dT%H%M%SZ"), n);
                let mut copy = manifest.clone();
                copy["id"] = clone_id.clone().into();
                copy["started_at"] = started.to_rfc3339().into();
                copy["finished_at"] = started.to_rfc3339().into();
                copy["pinned"] = (*pinned).into();
                let mut copies = Vec::new();
                for object in ["dump", "facts", "globals"] {
                    let from = copy[object]["key"].as_str().unwrap().to_string();
                    let to = from.replace(id, &clone_id);
                    copy[object]["key"] = to.clone().into();
                    copies.push((format!("{prefix}/{from}"), format!("{prefix}/{to}")));
                }
                let copy = resign(copy, id, &clone_id, &signer);
                let manifest_key = format!("{prefix}/manifests/{database}/{clone_id}.json");
                let (client, bucket) = (client.clone(), self.bucket.clone());
                tasks.spawn(async move {
                    for (from, to) in copies {
                        client
                            .copy_object()
                            .bucket(&bucket)
                            .copy_source(format!("{bucket}/{from}"))
                            .key(to)
                            .send()
                            .await
                            .expect("copy object");
                    }
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(manifest_key)
                        .body(serde_json::to_vec(&copy).unwrap().into())
                        .send()
                        .await
                        .expect("put manifest");
                });
                while tasks.len() >= 32 {
                    tasks.join_next().await.unwrap().unwrap();
                }
                ids.push(clone_id);
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            ids
        })
    }

    pub fn delete_object(&self, key: &str) {
        block_on(async {
            self.client()
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("delete object");
        })
    }

    /// Overwrites an object: how a test damages what vault stored.
    pub fn put_object(&self, key: &str, body: Vec<u8>) {
        block_on(async {
            self.client()
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .expect("put object");
        })
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.etags(prefix).into_iter().map(|(key, _)| key).collect()
    }

    /// Every key under `prefix` with its ETag: what changed, what did not.
    pub fn etags(&self, prefix: &str) -> Vec<(String, String)> {
        block_on(async {
            let mut out = Vec::new();
            let mut pages = self
                .client()
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.expect("list objects").contents() {
                    out.push((
                        o.key().unwrap().to_string(),
                        o.e_tag().unwrap_or_default().to_string(),
                    ));
                }
            }
            out
        })
    }

    /// Keys of multipart uploads still open under `prefix`.
    pub fn open_uploads(&self, prefix: &str) -> Vec<String> {
        block_on(async {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send()
                .await
                .expect("list multipart uploads");
            out.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect()
        })
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A unique S3 prefix per test, so tests share one bucket without seeing each other.
pub fn unique_prefix(test: &str) -> String {
    format!("t/{test}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// `manifest` (a clone of backup `id` as `clone_id`) with a statement signed by `signer`
/// for its new id, start and keys, committing to the same file keys as the original.
fn resign(
    manifest: serde_json::Value,
    id: &str,
    clone_id: &str,
    signer: &vault::trust::SigningKey,
) -> serde_json::Value {
    let mut m: vault::catalog::Manifest = serde_json::from_value(manifest).unwrap();
    let original = m.signature.as_ref().expect("the original is signed");
    let commitments = original
        .verify()
        .unwrap()
        .statement
        .commitments()
        .into_iter()
        .map(|(key, c)| (key.replace(id, clone_id), c))
        .collect();
    let plain = original.verify().unwrap().statement.plain();
    let plain = plain
        .into_iter()
        .map(|(key, p)| (key.replace(id, clone_id), p))
        .collect();
    let statement = vault::trust::Statement::for_dump(&m, &commitments)
        .unwrap()
        .with_plain(&plain);
    m.signature = Some(vault::trust::Signature::sign(&statement, signer).unwrap());
    serde_json::from_slice(&m.to_json()).unwrap()
}
