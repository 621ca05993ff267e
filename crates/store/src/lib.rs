//! The object store, and the model registry laid out in it.
//!
//! Everything fleetscore keeps lives under one object-store root (a local
//! folder by default; `s3://`, `az://`, `gs://` when built with those
//! features), reached through the `object_store` crate so that a local
//! folder and a cloud bucket behave the same. The model registry's layout:
//!
//! ```text
//! models/index.json                        every key, its versions, the live one
//! models/<device>/<tag>/v<N>/model.fsm     the model (native format, JSON)
//! models/<device>/<tag>/v<N>/meta.json     where it came from, its hash, when
//! models/pack.fsp                          all live models in one file
//! ```
//!
//! Readings and their windows, as Parquet, partitioned by UTC hour (see
//! [`ingest_file`] and [`aggregate`]):
//!
//! ```text
//! raw/date=YYYY-MM-DD/hour=HH/part-<id>.parquet      ts, device, tag, value
//! windows/size=<size>/date=YYYY-MM-DD/hour=HH/part-0.parquet
//! windows/size=<size>_hop=<hop>/date=…/hour=…/part-0.parquet   (hopping)
//! ```
//!
//! Writes are ordered so that a crash never leaves the registry pointing at
//! something missing: version files first, then the index, then the pack.
//! The pack records the index generation it was built from; a reader that
//! finds them disagreeing rebuilds the pack from the version files.
#![deny(missing_docs)]

mod lake;
mod registry;

pub use lake::{
    aggregate, hour_partition, ingest_file, partition_start, raw_objects, window_prefix,
    AggregateOutcome, IngestOutcome, LakeError, HOUR_NS,
};
pub use registry::{
    ImportOutcome, ImportRequest, Index, KeyEntry, ModelInput, Registry, VersionInfo,
    WINDOW_FEATURES,
};

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not usable.
    #[error("store {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A read or write failed; retrying may help if the cause is transient.
    #[error("store {url}: {op} {key}: {source}")]
    Backend {
        /// The store root.
        url: String,
        /// `get`, `put`, `list`, `delete`.
        op: &'static str,
        /// The object key.
        key: String,
        /// The backend's error.
        source: Box<object_store::Error>,
    },
    /// An object exists but its content is not what fleetscore wrote.
    #[error("store {url}: {key} is corrupt: {reason}")]
    Corrupt {
        /// The store root.
        url: String,
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A model key or request was invalid.
    #[error("{0}")]
    Invalid(String),
}

/// An object-store root.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
}

impl Store {
    /// Opens a store: a plain path or `file://` URL (created if missing),
    /// or `memory://` (for tests).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |reason: String| StoreError::Url {
            url: url.to_string(),
            reason,
        };
        let inner: Arc<dyn ObjectStore> = if url == "memory://" || url.starts_with("memory://") {
            Arc::new(InMemory::new())
        } else if let Some(scheme) = [
            "s3://", "az://", "azure://", "abfs://", "gs://", "http://", "https://",
        ]
        .iter()
        .find(|s| url.starts_with(**s))
        {
            return Err(bad(format!(
                "{scheme} stores are not available in this build yet; use a local folder (a path or file://)"
            )));
        } else {
            let path = if let Some(rest) = url.strip_prefix("file://") {
                std::path::PathBuf::from(rest)
            } else if url.contains("://") {
                return Err(bad(
                    "unknown scheme; use a path, file://, or memory://".into()
                ));
            } else {
                std::path::PathBuf::from(url)
            };
            std::fs::create_dir_all(&path)
                .map_err(|e| bad(format!("cannot create the folder: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
            Arc::new(fs.with_automatic_cleanup(true))
        };
        Ok(Store {
            inner,
            url: url.to_string(),
        })
    }

    /// The URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError::Backend {
            url: self.url.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = ObjectPath::from(key);
        match self.inner.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err("get", key, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    /// Writes an object (atomically: readers see the old or the new one).
    pub async fn put(&self, key: &str, data: impl Into<Bytes>) -> Result<(), StoreError> {
        let path = ObjectPath::from(key);
        self.inner
            .put(&path, PutPayload::from(data.into()))
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Deletes an object; deleting one that does not exist is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = ObjectPath::from(key);
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    /// Keys of every object under `prefix` (a folder such as `raw/`; an
    /// empty prefix lists everything), sorted. A missing folder lists as
    /// empty.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt;
        let trimmed = prefix.trim_end_matches('/');
        let path = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let mut keys: Vec<String> = self
            .inner
            .list(path.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.err("list", prefix, e))?;
        keys.sort();
        Ok(keys)
    }

    pub(crate) fn corrupt(&self, key: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            url: self.url.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
