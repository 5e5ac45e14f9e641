//! An in-memory object store for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{ObjectInfo, ObjectStore, UploadChunk};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.objects.lock().unwrap().insert(key.to_string(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Repository(format!("object `{key}` not found in memory store")))
    }

    async fn head(&self, key: &str) -> Result<super::ObjectHead> {
        let size = self.get(key).await?.len() as u64;
        Ok(super::ObjectHead { size, etag: None })
    }

    async fn download(&self, key: &str, offset: u64) -> Result<super::ObjectReader> {
        let body = self.get(key).await?;
        let start = (offset as usize).min(body.len());
        Ok(Box::new(std::io::Cursor::new(body.slice(start..))))
    }

    async fn upload(
        &self,
        key: &str,
        _expected_bytes: Option<u64>,
        mut chunks: mpsc::Receiver<UploadChunk>,
    ) -> Result<u64> {
        let mut body = BytesMut::new();
        while let Some(chunk) = chunks.recv().await {
            match chunk {
                UploadChunk::Data(data) => body.extend_from_slice(&data),
                UploadChunk::Finish => {
                    let len = body.len() as u64;
                    self.put(key, body.freeze()).await?;
                    return Ok(len);
                }
            }
        }
        Err(Error::Repository(format!(
            "upload of `{key}` aborted before it finished"
        )))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
                last_modified: None,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    async fn probe(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        let store = super::MemoryStore::default();
        super::super::contract::upload_commits_only_on_finish(&store).await;
        super::super::contract::replace_head_keeps_the_tail(&store).await;
    }
}
