//! The object store, and the model registry laid out in it.
//!
//! Everything fleetscore keeps lives under one object-store root (a local
//! folder by default; `s3://`, `az://`, `gs://` when built with the cargo
//! features `s3`, `azure`, `gcp`), reached through the `object_store` crate
//! so that a local folder and a cloud bucket behave the same: the same keys,
//! the same listings, whole-object writes that readers see entirely or not
//! at all. [`Store::open`] lists the URLs; how a cloud store is configured
//! from the environment and how it retries is in [`RetrySettings`] and the
//! `backend` module. The model registry's layout:
//!
//! ```text
//! models/index.json                        every key, its versions, the live one
//! models/<device>/<tag>/v<N>/model.fsm     the model (native format, JSON)
//! models/<device>/<tag>/v<N>/meta.json     where it came from, its hash, when
//! models/pack.fsp                          all live models in one file
//! ```
//!
//! Readings, their windows and their predictions, as Parquet partitioned
//! by UTC hour, are the [`lake`], which owns that layout both ways (every
//! key under `raw/`, `windows/` and `predictions/` is built there, and
//! readers of predictions see only the parts a manifest names):
//!
//! ```text
//! raw/date=YYYY-MM-DD/hour=HH/part-<id>.parquet                  ts, device, tag, value
//! windows/size=<size>[_hop=<hop>]/date=…/hour=…/part-….parquet   windows, by spec
//! predictions/date=…/hour=…/part-….parquet, manifest-….json      scored windows
//! ```
//!
//! Writes are ordered so that a crash never leaves the registry pointing at
//! something missing: version files first, then the index, then the pack.
//! The pack records the index generation it was built from; a reader that
//! finds them disagreeing rebuilds the pack from the version files.
//!
//! # Concurrent writers
//! Any number of writers (imports, API uploads, `models train`, promotes,
//! pack rebuilds) may work on one registry at once, in any processes on any
//! hosts, on every backend. None of their changes is lost, and the index
//! never names a version file that is missing or holds another model.
//! (Before this, each import rewrote the index from its own earlier read:
//! of 8 imports at once, 2 to 4 stayed registered.) The rules:
//!
//! - **The index is replaced by compare-and-swap** ([`Store::put_if`]): a
//!   writer reads `index.json` with its version, applies its change, and
//!   writes the result only if the index is still the version it read. If
//!   another writer got there first, it reads the new index and applies its
//!   change to that, after a random wait that doubles each time (5 ms to
//!   2 s). After [`MAX_ATTEMPTS`] lost races in a row it fails with
//!   [`StoreError::Contended`], having registered nothing; it never drops a
//!   change silently. Each lost race means another writer's change went in,
//!   so with fewer writers at once than that, every one succeeds.
//! - **Version files are never replaced.** `model.fsm` and then `meta.json`
//!   are written only if missing (create-only). A writer that finds
//!   `v<N>` taken by another model (registered, or left by a writer that
//!   crashed or lost the race for the index) takes the next free number,
//!   so **version numbers may have gaps**, and folders the index does not
//!   name may exist; both are harmless, and scoring reads only what the
//!   index names. A writer that finds its own model already there (from
//!   its earlier attempt, or a writer of the same model) uses that folder.
//! - **The pack is derived data**, replaced by compare-and-swap too: the
//!   writer that won generation `G` updates it in place only from the pack
//!   of the generation its winning attempt read, and otherwise rebuilds it
//!   from the index; a pack is never replaced by one built from an older
//!   index. If other writers keep replacing it, the writer leaves it to
//!   them: readers rebuild any pack whose generation is not the index's.
//!
//! How each backend makes [`Store::put_if`] atomic: S3 with `If-Match` and
//! `If-None-Match` (AWS S3, MinIO, R2; `AWS_CONDITIONAL_PUT=disabled`
//! makes registry writes fail, saying so), Azure Blob and Azurite with the
//! same headers, Google Cloud Storage with generation preconditions,
//! `memory://` natively. A local folder creates files with a hard link
//! (which fails if the file exists) and replaces them under an exclusive
//! OS file lock on a file in `.fleetscore-locks/` inside the folder
//! (hidden from listings), comparing the file's bytes with those read; the
//! lock holds across processes, and across hosts where the shared file
//! system supports locks (NFSv4 does). Readers never lock.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod backend;
pub mod lake;
mod registry;

pub use backend::RetrySettings;

// The lake's entry points most callers need, also at the crate root.
pub use lake::{
    aggregate, hour_partition, ingest_file, partition_start, raw_objects, window_prefix,
    AggregateOutcome, IngestOutcome, LakeError, HOUR_NS,
};
pub use registry::{
    ImportOutcome, ImportRequest, Index, KeyEntry, ModelBody, ModelInput, PythonModel, Registry,
    Runtime, VersionInfo, KIND_AUTO, MAX_ATTEMPTS, WINDOW_FEATURES,
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
    /// A read or write failed (after the backend's own retries); retrying
    /// later may help if the cause is transient.
    // The backend's error is shown in full here and not chained as a
    // `source()`: its own chain repeats each cause in its message.
    #[error("store {url}: {op} {key}: {error}{hint}")]
    Backend {
        /// The store root.
        url: String,
        /// `get`, `put`, `list`, `delete`.
        op: &'static str,
        /// The object key.
        key: String,
        /// The backend's error.
        error: Box<object_store::Error>,
        /// What usually causes this error, in parentheses, or "".
        hint: &'static str,
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
    /// A registry write lost the race for `key` to other writers this many
    /// times in a row and gave up; nothing of it was registered. Retrying
    /// helps: each lost race was another writer's change going in.
    #[error(
        "store {url}: {key}: other writers replaced it first {attempts} times in a row, so \
         nothing was registered; run the command again (with this many writers at once, \
         write fewer, larger batches)"
    )]
    Contended {
        /// The store root.
        url: String,
        /// The object key (`models/index.json`).
        key: String,
        /// The attempts made.
        attempts: u32,
    },
    /// An object read by version ([`Store::get_ranges_if`]) was replaced
    /// since that version was listed.
    #[error("store {url}: {key} was replaced since it was listed (version {version})")]
    Changed {
        /// The store root.
        url: String,
        /// The object key.
        key: String,
        /// The version asked for (its ETag).
        version: String,
    },
}

/// An object as listed: its key, length and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key, as written.
    pub key: String,
    /// Length, bytes.
    pub size: u64,
    /// Its version (the backend's ETag), if the backend gives one: a read
    /// with it fails if the object was replaced meanwhile.
    pub version: Option<String>,
}

/// What [`Store::get_if_changed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// There is no such object.
    Missing,
    /// It is still the version asked about.
    Unchanged,
    /// The object as it is now.
    Found {
        /// Its bytes.
        bytes: Bytes,
        /// Its version (the backend's ETag), if the backend gives one.
        version: Option<String>,
    },
}

/// An object's version as [`Store::get_versioned`] read it: what a
/// conditional write ([`Store::put_if`]) compares with the object's
/// current version, so that it replaces only what was read.
#[derive(Debug, Clone)]
pub struct ObjectVersion {
    /// The backend's ETag (S3, Azure, memory).
    e_tag: Option<String>,
    /// The backend's object version (Google Cloud Storage's generation,
    /// which its conditional writes compare instead of the ETag).
    version: Option<String>,
    /// A local folder's object as read: compared byte for byte under the
    /// folder's lock, since a file's ETag (inode, mtime, size) can repeat
    /// when a freed inode is reused within one clock tick.
    content: Option<Bytes>,
}

impl ObjectVersion {
    /// The ETag, for messages and logs.
    pub fn e_tag(&self) -> Option<&str> {
        self.e_tag.as_deref()
    }
}

/// What a conditional write ([`Store::put_if`]) did.
#[derive(Debug, Clone)]
pub enum PutIf {
    /// The object was written; this is its new version.
    Written(ObjectVersion),
    /// The object was not written: it exists although it was expected not
    /// to, or was replaced or deleted since the expected version was read.
    /// Another writer won; read it again and redo the change.
    Conflict,
}

/// The folder, inside a local store's root, of the lock files that
/// serialise conditional writes across processes. Never listed.
const LOCKS_DIR: &str = ".fleetscore-locks";

/// An object-store root.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The folder of a local store (for the locks of [`Store::put_if`]).
    local: Option<std::path::PathBuf>,
}

impl Store {
    /// Opens a store:
    ///
    /// - a plain path or `file://PATH`: a local folder (created if missing);
    /// - `memory://`: in memory, for tests;
    /// - `s3://BUCKET[/PREFIX]` (feature `s3`): AWS S3 or an S3-compatible
    ///   service, configured by the `AWS_…` environment variables;
    /// - `az://CONTAINER[/PREFIX]` or `azure://…` (feature `azure`): Azure
    ///   Blob storage or Azurite, configured by the `AZURE_…` variables;
    /// - `gs://BUCKET[/PREFIX]` (feature `gcp`): Google Cloud Storage,
    ///   configured by the `GOOGLE_…` variables.
    ///
    /// With a `PREFIX`, every key of the store lives under it. Cloud
    /// requests retry as [`RetrySettings::from_env`] says. Nothing is sent
    /// yet: a missing bucket shows at the first read or write, with a hint.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_in(url, &backend::Env::process(), &RetrySettings::default())
    }

    /// [`Store::open`] with other retry settings (from a config file, say)
    /// in place of the defaults; the `FLEETSCORE_STORE_…` variables still
    /// override them.
    pub fn open_with(url: &str, retry: &RetrySettings) -> Result<Store, StoreError> {
        Self::open_in(url, &backend::Env::process(), retry)
    }

    /// [`Store::open`] with the given environment variables instead of the
    /// process's (for programs and tests that talk to several stores).
    pub fn open_with_env(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Store, StoreError> {
        Self::open_in(
            url,
            &backend::Env::from_pairs(vars),
            &RetrySettings::default(),
        )
    }

    fn open_in(url: &str, env: &backend::Env, retry: &RetrySettings) -> Result<Store, StoreError> {
        let bad = |reason: String| StoreError::Url {
            url: url.to_string(),
            reason,
        };
        let mut local = None;
        let inner: Arc<dyn ObjectStore> = if url.starts_with("memory://") {
            Arc::new(InMemory::new())
        } else if let Some(cloud) =
            backend::split(url).filter(|u| matches!(u.scheme, "s3" | "az" | "azure" | "gs"))
        {
            backend::open_cloud_with(&cloud, env, retry).map_err(bad)?
        } else {
            let path = if let Some(rest) = url.strip_prefix("file://") {
                std::path::PathBuf::from(rest)
            } else if url.contains("://") {
                return Err(bad(
                    "unknown scheme; use a path, file://, s3://BUCKET[/PREFIX], \
                     az://CONTAINER[/PREFIX], gs://BUCKET[/PREFIX] or memory://"
                        .into(),
                ));
            } else {
                std::path::PathBuf::from(url)
            };
            std::fs::create_dir_all(&path)
                .map_err(|e| bad(format!("cannot create the folder: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
            local = Some(path);
            Arc::new(fs.with_automatic_cleanup(true))
        };
        Ok(Store {
            inner,
            url: url.to_string(),
            local,
        })
    }

    /// The URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The absolute path of `key`'s file in a local store (`None` for
    /// other stores): for a reader in another process on this host.
    pub fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        let root = self.local.as_ref()?;
        std::path::absolute(root.join(key)).ok()
    }

    fn err(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError::Backend {
            url: self.url.clone(),
            op,
            key: key.to_string(),
            hint: backend::hint(&self.url, &source),
            error: Box::new(source),
        }
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        // Asked about no version, so never `Unchanged`.
        Ok(match self.get_if_changed(key, None).await? {
            Fetched::Found { bytes, .. } => Some(bytes),
            Fetched::Missing | Fetched::Unchanged => None,
        })
    }

    /// Reads an object unless it is still `version` (a version an earlier
    /// read gave: [`Fetched::Unchanged`], one request, nothing sent back).
    pub async fn get_if_changed(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        let path = ObjectPath::from(key);
        let opts = object_store::GetOptions {
            if_none_match: version.map(str::to_string),
            ..Default::default()
        };
        match self.inner.get_opts(&path, opts).await {
            Ok(r) => {
                let version = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| self.err("get", key, e))?;
                Ok(Fetched::Found { bytes, version })
            }
            Err(object_store::Error::NotModified { .. }) => Ok(Fetched::Unchanged),
            // A missing bucket answers 404 too: an error, not an empty store.
            Err(e @ object_store::Error::NotFound { .. }) if !backend::missing_bucket(&e) => {
                Ok(Fetched::Missing)
            }
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    /// Reads bytes `range` of an object (fewer if it ends sooner); `None`
    /// if it does not exist.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>, StoreError> {
        let path = ObjectPath::from(key);
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        match self.inner.get_opts(&path, opts).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err("get", key, e))?)),
            Err(e @ object_store::Error::NotFound { .. }) if !backend::missing_bucket(&e) => {
                Ok(None)
            }
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

    /// Reads an object and its version, for a conditional write
    /// ([`Store::put_if`]) of what replaces it; `None` if it does not exist.
    pub async fn get_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(Bytes, ObjectVersion)>, StoreError> {
        let path = ObjectPath::from(key);
        match self.inner.get_opts(&path, Default::default()).await {
            Ok(r) => {
                let (e_tag, version) = (r.meta.e_tag.clone(), r.meta.version.clone());
                let bytes = r.bytes().await.map_err(|e| self.err("get", key, e))?;
                let content = self.local.is_some().then(|| bytes.clone());
                Ok(Some((
                    bytes,
                    ObjectVersion {
                        e_tag,
                        version,
                        content,
                    },
                )))
            }
            Err(e @ object_store::Error::NotFound { .. }) if !backend::missing_bucket(&e) => {
                Ok(None)
            }
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    /// Writes an object only if it is still as read: `expected` is the
    /// version [`Store::get_versioned`] gave, or `None` for "must not
    /// exist". Otherwise nothing is written and the answer is
    /// [`PutIf::Conflict`]: another writer got there first.
    ///
    /// This is a compare-and-swap that holds across any number of
    /// processes and hosts, in every backend: S3 (`If-Match` /
    /// `If-None-Match`, which AWS S3, MinIO, R2 and moto honour; unless
    /// `AWS_CONDITIONAL_PUT=disabled`), Azure Blob and Azurite (the same
    /// headers), Google Cloud Storage (generation match) and memory do it
    /// natively. A local folder creates with a hard link (atomic; fails if
    /// the file exists), and replaces under an exclusive lock on a file in
    /// `.fleetscore-locks/` inside the folder (an OS file lock, so every
    /// process on the host, and on other hosts where the shared file
    /// system supports locks, as NFSv4 does, waits its turn), comparing the
    /// file's current bytes with those read. Readers take no lock: every
    /// write replaces the file atomically.
    pub async fn put_if(
        &self,
        key: &str,
        data: impl Into<Bytes>,
        expected: Option<&ObjectVersion>,
    ) -> Result<PutIf, StoreError> {
        let data = data.into();
        let path = ObjectPath::from(key);
        let mode = match (expected, &self.local) {
            (None, _) => object_store::PutMode::Create,
            (Some(expected), Some(root)) => {
                return self.put_if_local(root, key, data, expected).await;
            }
            (Some(expected), None) => object_store::PutMode::Update(object_store::UpdateVersion {
                e_tag: expected.e_tag.clone(),
                version: expected.version.clone(),
            }),
        };
        let written = self
            .inner
            .put_opts(&path, PutPayload::from(data.clone()), mode.into())
            .await;
        match written {
            Ok(r) => Ok(PutIf::Written(ObjectVersion {
                e_tag: r.e_tag,
                version: r.version,
                content: self.local.is_some().then_some(data),
            })),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(PutIf::Conflict),
            Err(e) => Err(self.err("put", key, e)),
        }
    }

    /// [`Store::put_if`] replacing a file of a local folder: under the
    /// key's lock, compare the file's bytes with those read, then replace
    /// it (a rename, so readers never see half of it).
    async fn put_if_local(
        &self,
        root: &std::path::Path,
        key: &str,
        data: Bytes,
        expected: &ObjectVersion,
    ) -> Result<PutIf, StoreError> {
        use sha2::Digest;
        let Some(want) = expected.content.clone() else {
            return Err(StoreError::Invalid(format!(
                "store {}: {key}: a conditional write needs the version read from this store",
                self.url
            )));
        };
        // One lock file per key, so writers of different keys (the index,
        // the pack) do not wait for each other.
        let digest = sha2::Sha256::digest(key.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let lock_path = root.join(LOCKS_DIR).join(format!("{name}.lock"));
        let lock_err = |e: std::io::Error| {
            StoreError::Backend {
            url: self.url.clone(),
            op: "lock",
            key: key.to_string(),
            hint: " (conditional writes to a local folder lock a file in its .fleetscore-locks                    folder: check that the folder is writable and its file system supports locks)",
            error: Box::new(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
        }
        };
        // Writers in this process queue here without holding a thread: a
        // file lock can only be waited for by blocking one, and with many
        // waiters blocked the holder could find no thread left to finish
        // its own write (the binary keeps 8 blocking threads).
        let in_process = {
            static LOCKS: std::sync::OnceLock<
                std::sync::Mutex<
                    std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>,
                >,
            > = std::sync::OnceLock::new();
            let mut map = LOCKS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(lock_path.clone()).or_default())
        };
        let _in_process = in_process.lock().await;
        // Then the other processes' turn: waiting for the file lock blocks
        // a thread, so off the async workers.
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(lock_path.parent().expect("has a parent"))?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| lock_err(std::io::Error::other(e)))?
        .map_err(lock_err)?;
        let current = self.get(key).await?;
        let outcome = if current.as_deref() != Some(&want[..]) {
            PutIf::Conflict
        } else {
            let path = ObjectPath::from(key);
            let r = self
                .inner
                .put(&path, PutPayload::from(data.clone()))
                .await
                .map_err(|e| self.err("put", key, e))?;
            PutIf::Written(ObjectVersion {
                e_tag: r.e_tag,
                version: r.version,
                content: Some(data),
            })
        };
        // Closing the file releases the lock (also if this task is
        // dropped or the process dies).
        drop(lock);
        Ok(outcome)
    }

    /// Deletes an object; deleting one that does not exist is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = ObjectPath::from(key);
        match self.inner.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e @ object_store::Error::NotFound { .. }) if !backend::missing_bucket(&e) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    /// Keys of every object under `prefix` (a folder such as `raw/`; an
    /// empty prefix lists everything), sorted. A missing folder lists as
    /// empty. The prefix matches whole segments: `raw/date=2024-01-0` lists
    /// nothing of `raw/date=2024-01-01/`, in every backend.
    ///
    /// Keys come back as they were written, so that [`Store::get`] reads
    /// each: `object_store` percent-encodes characters such as `*` or `%`
    /// inside a key (`models/*/t/…` is stored as `models/%2A/t/…`), and
    /// listing decodes them again.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_sizes(prefix)
            .await?
            .into_iter()
            .map(|l| l.key)
            .collect())
    }

    /// [`Store::list`] with each object's length and version.
    pub async fn list_sizes(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let locks = format!("{LOCKS_DIR}/");
        use futures::TryStreamExt;
        let trimmed = prefix.trim_end_matches('/');
        let path = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let mut keys: Vec<Listed> = self
            .inner
            .list(path.as_ref())
            .map_ok(|meta| Listed {
                key: percent_encoding::percent_decode_str(meta.location.as_ref())
                    .decode_utf8_lossy()
                    .into_owned(),
                size: meta.size,
                version: meta.e_tag,
            })
            .try_filter(|l| futures::future::ready(!l.key.starts_with(&locks)))
            .try_collect()
            .await
            .map_err(|e| self.err("list", prefix, e))?;
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(keys)
    }

    /// The names of the folders directly under `prefix` (one level, not
    /// recursive; `raw/` gives `date=2024-03-01`, …), sorted: one listing
    /// request per thousand folders however many objects they hold, so
    /// finding where partitioned data starts and ends stays cheap. A
    /// missing folder lists as empty.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = prefix.trim_end_matches('/');
        let path = (!trimmed.is_empty()).then(|| ObjectPath::from(trimmed));
        let listed = match self.inner.list_with_delimiter(path.as_ref()).await {
            Ok(l) => l,
            Err(e @ object_store::Error::NotFound { .. }) if !backend::missing_bucket(&e) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(|n| {
                percent_encoding::percent_decode_str(n)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|n| n != LOCKS_DIR)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads byte `ranges` of an object (one request each), of `version`
    /// if given ([`Listed::version`]): [`StoreError::Changed`] if it was
    /// replaced since. `None` if it does not exist. Each range must lie
    /// within the object.
    pub async fn get_ranges_if(
        &self,
        key: &str,
        ranges: &[std::ops::Range<u64>],
        version: Option<&str>,
    ) -> Result<Option<Vec<Bytes>>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let path = ObjectPath::from(key);
        let path = &path;
        let parts: Vec<Option<Bytes>> = futures::stream::iter(ranges.iter().cloned())
            .map(|range| async move {
                let opts = object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(range)),
                    if_match: version.map(str::to_string),
                    ..Default::default()
                };
                match self.inner.get_opts(path, opts).await {
                    Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err("get", key, e))?)),
                    Err(e @ object_store::Error::NotFound { .. })
                        if !backend::missing_bucket(&e) =>
                    {
                        Ok(None)
                    }
                    Err(object_store::Error::Precondition { .. }) => Err(StoreError::Changed {
                        url: self.url.clone(),
                        key: key.to_string(),
                        version: version.unwrap_or_default().to_string(),
                    }),
                    Err(e) => Err(self.err("get", key, e)),
                }
            })
            .buffered(4)
            .try_collect()
            .await?;
        Ok(parts.into_iter().collect())
    }

    pub(crate) fn corrupt(&self, key: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            url: self.url.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: keys with characters that `object_store` percent-encodes
    /// (the fallback models' `*`) listed in their encoded form, which
    /// `get` then could not read.
    #[test]
    fn listed_keys_read_back_in_every_local_backend() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for url in ["memory://", dir.path().to_str().unwrap()] {
            let store = Store::open(url).unwrap();
            rt.block_on(async {
                let keys = [
                    "models/*/1/v1/meta.json",
                    "a b/c%41d.txt",
                    "raw/date=2024-01-01/hour=00/part-x.parquet",
                    "raw/date=2024-01-01/hour=000/part-y.parquet",
                ];
                for k in keys {
                    store.put(k, k.as_bytes().to_vec()).await.unwrap();
                }
                let listed = store.list("").await.unwrap();
                let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                want.sort();
                assert_eq!(listed, want, "{url}");
                for k in &listed {
                    assert_eq!(store.get(k).await.unwrap().unwrap().as_ref(), k.as_bytes());
                }
                assert_eq!(
                    store.list("raw/date=2024-01-01/hour=00/").await.unwrap(),
                    ["raw/date=2024-01-01/hour=00/part-x.parquet"],
                    "{url}: a prefix matches whole segments"
                );
                assert!(store.list("raw/date=2024-01").await.unwrap().is_empty());
                assert_eq!(store.list("models/*").await.unwrap().len(), 1);
                let sized = store.list_sizes("raw/").await.unwrap();
                assert_eq!(sized.len(), 2);
                for l in sized {
                    assert_eq!(l.size, l.key.len() as u64, "{url}: {}", l.key);
                    // Read by version; replaced, the same version is refused.
                    let v = l.version.clone();
                    assert!(v.is_some(), "{url}: no version");
                    let got = store
                        .get_ranges_if(&l.key, &[0..3, 4..6], v.as_deref())
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(got[0].as_ref(), &l.key.as_bytes()[0..3]);
                    assert_eq!(got[1].as_ref(), &l.key.as_bytes()[4..6]);
                    store.put(&l.key, l.key.to_uppercase()).await.unwrap();
                    let err = store
                        .get_ranges_if(&l.key, std::slice::from_ref(&(0..3)), v.as_deref())
                        .await
                        .unwrap_err();
                    assert!(matches!(err, StoreError::Changed { .. }), "{url}: {err}");
                    assert!(store
                        .get_ranges_if("raw/nope", std::slice::from_ref(&(0..3)), None)
                        .await
                        .unwrap()
                        .is_none());
                }
            });
        }
    }

    /// `put_if` creates only what is missing, replaces only the version
    /// read, and its lock files never show in listings.
    #[test]
    fn conditional_writes_compare_and_swap_in_every_local_backend() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for url in ["memory://", dir.path().to_str().unwrap()] {
            let store = Store::open(url).unwrap();
            rt.block_on(async {
                let k = "models/index.json";
                assert!(matches!(
                    store.put_if(k, "a", None).await.unwrap(),
                    PutIf::Written(_)
                ));
                assert!(matches!(
                    store.put_if(k, "b", None).await.unwrap(),
                    PutIf::Conflict
                ));
                let (bytes, v1) = store.get_versioned(k).await.unwrap().unwrap();
                assert_eq!(bytes.as_ref(), b"a");
                assert!(matches!(
                    store.put_if(k, "c", Some(&v1)).await.unwrap(),
                    PutIf::Written(_)
                ));
                // v1 is stale now: refused, and nothing written.
                assert!(matches!(
                    store.put_if(k, "d", Some(&v1)).await.unwrap(),
                    PutIf::Conflict
                ));
                assert_eq!(store.get(k).await.unwrap().unwrap().as_ref(), b"c");
                // Deleted since read: refused too.
                let (_, v2) = store.get_versioned(k).await.unwrap().unwrap();
                store.delete(k).await.unwrap();
                assert!(matches!(
                    store.put_if(k, "e", Some(&v2)).await.unwrap(),
                    PutIf::Conflict
                ));
                assert!(store.get(k).await.unwrap().is_none());
                store.put(k, "f").await.unwrap();
                let (_, v3) = store.get_versioned(k).await.unwrap().unwrap();
                assert!(matches!(
                    store.put_if(k, "g", Some(&v3)).await.unwrap(),
                    PutIf::Written(_)
                ));
                assert_eq!(
                    store.list("").await.unwrap(),
                    [k],
                    "{url}: no lock files listed"
                );
            });
        }
    }

    /// Many writers, each with its own `Store` on its own thread, add one
    /// to a counter by compare-and-swap, retrying when they lose: no
    /// increment is lost (the mechanism under every registry write).
    #[test]
    fn concurrent_compare_and_swap_loses_no_increment() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Store::open("memory://").unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        for shared in [Some(memory), None] {
            let (writers, each) = (8, 25);
            let barrier = Arc::new(std::sync::Barrier::new(writers));
            let threads: Vec<_> = (0..writers)
                .map(|_| {
                    let store = shared
                        .clone()
                        .unwrap_or_else(|| Store::open(&path).unwrap());
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap();
                        barrier.wait();
                        rt.block_on(async {
                            let mut lost = 0;
                            for _ in 0..each {
                                loop {
                                    let read = store.get_versioned("n").await.unwrap();
                                    let n: u64 = read.as_ref().map_or(0, |(b, _)| {
                                        std::str::from_utf8(b).unwrap().parse().unwrap()
                                    });
                                    let v = read.map(|(_, v)| v);
                                    match store
                                        .put_if("n", (n + 1).to_string(), v.as_ref())
                                        .await
                                        .unwrap()
                                    {
                                        PutIf::Written(_) => break,
                                        PutIf::Conflict => lost += 1,
                                    }
                                }
                            }
                            lost
                        })
                    })
                })
                .collect();
            let lost: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let store = shared.unwrap_or_else(|| Store::open(&path).unwrap());
            let n = rt_get(&store, "n");
            assert_eq!(
                n,
                (writers * each).to_string(),
                "{} ({lost} races lost and retried)",
                store.url()
            );
        }
    }

    /// Regression: writers in one process each blocked a thread waiting
    /// for a local folder's lock, so with as many writers as the runtime's
    /// blocking threads (the binary keeps 8) the holder had none left to
    /// finish its write, and every upload hung.
    #[test]
    fn local_conditional_writes_do_not_exhaust_blocking_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let n = rt.block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        loop {
                            let read = store.get_versioned("n").await.unwrap();
                            let n: u64 = read.as_ref().map_or(0, |(b, _)| {
                                std::str::from_utf8(b).unwrap().parse().unwrap()
                            });
                            let v = read.map(|(_, v)| v);
                            let next = (n + 1).to_string();
                            if let PutIf::Written(_) =
                                store.put_if("n", next, v.as_ref()).await.unwrap()
                            {
                                break;
                            }
                        }
                    })
                })
                .collect();
            let all = futures::future::join_all(tasks);
            tokio::time::timeout(std::time::Duration::from_secs(60), all)
                .await
                .expect("writers finished (no deadlock)");
            store.get("n").await.unwrap().unwrap()
        });
        assert_eq!(n.as_ref(), b"16");
    }

    fn rt_get(store: &Store, key: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = rt.block_on(store.get(key)).unwrap().unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn unknown_schemes_and_missing_buckets_say_what_to_write() {
        let e = Store::open("ftp://host/x").unwrap_err().to_string();
        assert!(
            e.contains("unknown scheme") && e.contains("s3://BUCKET"),
            "{e}"
        );
        let e = Store::open_with_env("s3://", Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://BUCKET[/PREFIX]"), "{e}");
    }
}
