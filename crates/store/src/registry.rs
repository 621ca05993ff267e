//! The model registry: versions per (device, tag), the live one, the pack.

use std::collections::BTreeMap;

use fleetscore_core::ModelKey;
use fleetscore_models::{format, Kind, Model, Pack, PackEntry};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use bytes::Bytes;

use crate::{ObjectVersion, PutIf, Store, StoreError};

const INDEX_KEY: &str = "models/index.json";
const PACK_KEY: &str = "models/pack.fsp";
const INDEX_FORMAT: &str = "fleetscore-model-index";
/// Concurrent object-store requests while writing or reading model files.
const CONCURRENCY: usize = 32;

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    /// 1, 2, 3, … per key.
    pub version: u32,
    /// SHA-256 of the model's binary encoding (its content identity).
    pub sha256: String,
    /// When it was imported (RFC 3339).
    pub imported_at: String,
    /// Where it came from (the imported file's path).
    pub source: String,
    /// One-line description, e.g. `Pipeline(StandardScaler, OneClassSVM(…))`.
    pub description: String,
    /// Input features.
    pub n_features: usize,
    /// What the model predicts: `outlier` (a detector: anomalies and a
    /// decision score), `regressor` or `classifier`. Indexes written
    /// before fleetscore had other kinds hold only detectors.
    #[serde(default = "outlier")]
    pub kind: String,
    /// A classifier's classes as text, in `classes_` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// `raw`: each reading's value is one row; `window`: each window of
    /// `window` (a span such as `1m`) is one row of the named `features`.
    pub input_mode: String,
    /// The window size of `window` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The window features, in the model's column order, of `window` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// `native` (compiled by fleetscore) or `python` (the file runs in the
    /// opt-in Python runtime).
    #[serde(default, skip_serializing_if = "Runtime::is_native")]
    pub runtime: Runtime,
    /// The methods a Python model is called with (empty: its kind's
    /// defaults; see `fleetscore_python::RUNNER`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// How a model version runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Compiled into fleetscore's own structs and evaluated natively.
    #[default]
    Native,
    /// Its file is loaded and called by the Python runtime's workers (its
    /// code is executed), in deployments with `[python] enabled = true`.
    Python,
}

impl Runtime {
    /// Whether it is [`Runtime::Native`].
    pub fn is_native(&self) -> bool {
        *self == Runtime::Native
    }

    /// `native` or `python`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Python => "python",
        }
    }

    /// Parses `native` or `python`.
    pub fn parse(text: &str) -> Result<Runtime, String> {
        match text {
            "native" => Ok(Runtime::Native),
            "python" => Ok(Runtime::Python),
            _ => Err(format!("runtime {text:?}: write `native` or `python`")),
        }
    }
}

/// The kind a Python model without a declared one is recorded with: its
/// workers tell it from the model when they score it.
pub const KIND_AUTO: &str = "auto";

impl VersionInfo {
    /// Its store key of the file a Python model runs from.
    pub fn python_object(&self, key: &ModelKey) -> String {
        format!("{}/model.pkl", version_dir(key, self.version))
    }

    /// A Python model's declared kind (`None`: its workers tell).
    pub fn declared_kind(&self) -> Option<Kind> {
        Kind::parse(&self.kind).ok()
    }
}

fn outlier() -> String {
    "outlier".to_string()
}

/// What a model takes as its rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelInput {
    /// Each reading's value is a row of one feature (the reference job).
    #[default]
    Raw,
    /// Each closed window of `size` is a row of `features` (from `count`,
    /// `sum`, `mean`, `min`, `max`, `std`, `first`, `last`).
    Window {
        /// Window size, e.g. `1m`.
        size: String,
        /// Feature names, in the model's column order.
        features: Vec<String>,
    },
}

/// The window features a model may take.
pub const WINDOW_FEATURES: [&str; 8] =
    ["count", "sum", "mean", "min", "max", "std", "first", "last"];

impl ModelInput {
    /// Parses `raw` or `window:SIZE:FEATURE,FEATURE…` (e.g.
    /// `window:1m:mean,std`).
    pub fn parse(text: &str) -> Result<ModelInput, String> {
        if text == "raw" {
            return Ok(ModelInput::Raw);
        }
        let bad = || {
            format!(
                "input {text:?}: write `raw` or `window:SIZE:FEATURES`, e.g. `window:1m:mean,std` (features: {})",
                WINDOW_FEATURES.join(", ")
            )
        };
        let rest = text.strip_prefix("window:").ok_or_else(bad)?;
        let (size, features) = rest.split_once(':').ok_or_else(bad)?;
        let span: fleetscore_stream::Span =
            size.parse().map_err(|e| format!("input {text:?}: {e}"))?;
        if span.as_nanos() <= 0 {
            return Err(bad());
        }
        let features: Vec<String> = features.split(',').map(|f| f.trim().to_string()).collect();
        if let Some(f) = features
            .iter()
            .find(|f| !WINDOW_FEATURES.contains(&f.as_str()))
        {
            return Err(format!(
                "input {text:?}: unknown window feature {f:?}; use {}",
                WINDOW_FEATURES.join(", ")
            ));
        }
        Ok(ModelInput::Window {
            size: span.to_string(),
            features,
        })
    }

    /// The input of a stored version.
    pub fn of(v: &VersionInfo) -> ModelInput {
        match (v.input_mode.as_str(), &v.window) {
            ("window", Some(size)) => ModelInput::Window {
                size: size.clone(),
                features: v.features.clone(),
            },
            _ => ModelInput::Raw,
        }
    }
}

/// All versions of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// The version that scores.
    pub live: u32,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl KeyEntry {
    /// The live version's record.
    pub fn live_version(&self) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.version == self.live)
    }
}

/// `models/index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always `fleetscore-model-index`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Increases with every change; the pack records the one it matches.
    pub generation: u64,
    /// Entries by `device/tag`.
    pub models: BTreeMap<String, KeyEntry>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            format: INDEX_FORMAT.to_string(),
            version: 1,
            generation: 0,
            models: BTreeMap::new(),
        }
    }
}

fn index_key(key: &ModelKey) -> String {
    format!("{}/{}", key.device, key.tag)
}

fn version_dir(key: &ModelKey, v: u32) -> String {
    format!("models/{}/{}/v{v}", key.device, key.tag)
}

/// What is registered: a compiled model, or a file for the Python runtime.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per import request, moved once
pub enum ModelBody {
    /// Compiled by fleetscore (its `model.fsm`).
    Native(Model),
    /// A pickle or joblib file, stored as given and never read by
    /// fleetscore itself (its `model.pkl`).
    Python(PythonModel),
}

impl From<Model> for ModelBody {
    fn from(m: Model) -> ModelBody {
        ModelBody::Native(m)
    }
}

/// A model file for the Python runtime.
#[derive(Debug, Clone)]
pub struct PythonModel {
    /// The file's bytes.
    pub bytes: Bytes,
    /// What it predicts, if the user said (else its workers tell).
    pub kind: Option<Kind>,
    /// The methods to call (empty: the kind's defaults).
    pub methods: Vec<String>,
}

impl PythonModel {
    /// `methods` trimmed, checked to be at most two Python names (a score
    /// and a label method).
    pub fn check_methods(methods: &[String]) -> Result<Vec<String>, String> {
        let methods: Vec<String> = methods.iter().map(|m| m.trim().to_string()).collect();
        if let Some(bad) = methods.iter().find(|m| {
            m.is_empty()
                || m.starts_with(|c: char| c.is_ascii_digit())
                || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(format!(
                "{bad:?} is not a method name (e.g. decision_function,predict)"
            ));
        }
        if methods.len() > 2 {
            return Err(format!(
                "at most two (a score and a label method), got {}",
                methods.len()
            ));
        }
        Ok(methods)
    }
}

/// A model to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// Its key.
    pub key: ModelKey,
    /// The model.
    pub model: ModelBody,
    /// Where it came from, for the record.
    pub source: String,
    /// What it takes as rows.
    pub input: ModelInput,
}

/// What importing one model did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImportOutcome {
    /// A new key, registered as version 1.
    Added {
        /// Key.
        key: ModelKey,
        /// Version (1).
        version: u32,
    },
    /// A changed model for a known key: a new live version.
    NewVersion {
        /// Key.
        key: ModelKey,
        /// The new version.
        version: u32,
    },
    /// The same model as an existing version: nothing written.
    Unchanged {
        /// Key.
        key: ModelKey,
        /// The existing version with the same content.
        version: u32,
    },
}

/// An index as read, with its version in the store.
type VersionedIndex = (String, std::sync::Arc<Index>);

/// The model registry in a store.
#[derive(Clone, Debug)]
pub struct Registry {
    store: Store,
    /// The index as last read by [`Registry::index_shared`], with its
    /// version in the store (shared by clones).
    cached: std::sync::Arc<std::sync::Mutex<Option<VersionedIndex>>>,
}

impl Registry {
    /// The registry in `store`.
    pub fn new(store: Store) -> Registry {
        Registry {
            store,
            cached: Default::default(),
        }
    }

    /// The store it lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the index (empty if none was written yet).
    pub async fn index(&self) -> Result<Index, StoreError> {
        let Some(bytes) = self.store.get(INDEX_KEY).await? else {
            return Ok(Index::default());
        };
        self.parse_index(&bytes)
    }

    /// The index, for reading only (job planning): read and parsed again
    /// only if it changed in the store since this registry (or a clone of
    /// it) last read it this way, as the store's version of it (ETag)
    /// says. With many models the index is large (about 550 bytes a
    /// model): parsing it again for every job was a serial part of each.
    /// Without versions from the backend, it is read every time.
    pub async fn index_shared(&self) -> Result<std::sync::Arc<Index>, StoreError> {
        let known = self.cached.lock().ok().and_then(|c| c.clone());
        let asked = known.as_ref().map(|(v, _)| v.as_str());
        match self.store.get_if_changed(INDEX_KEY, asked).await? {
            crate::Fetched::Unchanged => match known {
                Some((_, index)) => Ok(index),
                // Not asked about a version, so not expected: read it.
                None => Ok(std::sync::Arc::new(self.index().await?)),
            },
            crate::Fetched::Missing => Ok(std::sync::Arc::new(Index::default())),
            crate::Fetched::Found { bytes, version } => {
                let index = std::sync::Arc::new(self.parse_index(&bytes)?);
                if let Ok(mut c) = self.cached.lock() {
                    *c = version.map(|v| (v, std::sync::Arc::clone(&index)));
                }
                Ok(index)
            }
        }
    }

    fn parse_index(&self, bytes: &[u8]) -> Result<Index, StoreError> {
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| self.store.corrupt(INDEX_KEY, e.to_string()))?;
        if index.format != INDEX_FORMAT || index.version != 1 {
            return Err(self.store.corrupt(
                INDEX_KEY,
                format!(
                    "format {:?} version {} is not one this build reads",
                    index.format, index.version
                ),
            ));
        }
        Ok(index)
    }

    /// Imports models: unchanged ones are no-ops, changed ones become new
    /// live versions. Writes version files, then the index, then the pack.
    ///
    /// Safe with any number of writers at once, in any processes on any
    /// hosts (see the crate docs, "Concurrent writers"): the index is
    /// replaced only if it is still the one this import read; when another
    /// writer got there first, the import reads the new index and applies
    /// its change again, up to [`MAX_ATTEMPTS`] times, then fails with
    /// [`StoreError::Contended`] (never a silent loss).
    pub async fn import(
        &self,
        requests: Vec<ImportRequest>,
        now: &str,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let prepared = std::sync::Arc::new(
            requests
                .into_iter()
                .map(|r| Prepared::new(r, now))
                .collect::<Result<Vec<_>, _>>()?,
        );
        // The requests of each key, in the order given, so that several
        // models for one key in one import become consecutive versions.
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in prepared.iter().enumerate() {
            by_key.entry(index_key(&p.key)).or_default().push(i);
        }
        let mut backoff = Backoff::default();
        loop {
            let (mut index, read_version) = self.index_versioned().await?;
            let base_generation = index.generation;
            // Owned items and owned handles per future, so that the future
            // is `Send` for any caller (an HTTP handler, a spawned task).
            let work: Vec<(String, Vec<usize>, Option<KeyEntry>)> = by_key
                .iter()
                .map(|(ik, idx)| (ik.clone(), idx.clone(), index.models.get(ik).cloned()))
                .collect();
            let (store, shared) = (self.store.clone(), std::sync::Arc::clone(&prepared));
            let groups: Vec<KeyImport> = stream::iter(work)
                .map(move |(ik, idx, entry)| {
                    let (store, prepared) = (store.clone(), std::sync::Arc::clone(&shared));
                    async move { import_key(&store, &prepared, ik, idx, entry).await }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            let mut outcomes: Vec<Option<ImportOutcome>> = vec![None; prepared.len()];
            let mut changed: BTreeMap<ModelKey, Option<(u32, Model)>> = BTreeMap::new();
            for g in groups {
                for (i, o) in g.outcomes {
                    outcomes[i] = Some(o);
                }
                if let Some((version, i)) = g.live_from {
                    let p = &prepared[i];
                    // A Python model leaves the pack (it holds native ones).
                    let packed = match &p.model {
                        ModelBody::Native(m) => Some((version, m.clone())),
                        ModelBody::Python(_) => None,
                    };
                    changed.insert(p.key.clone(), packed);
                    index.models.insert(g.index_key, g.entry);
                }
            }
            let outcomes: Vec<ImportOutcome> = outcomes.into_iter().flatten().collect();
            if changed.is_empty() {
                return Ok(outcomes);
            }
            index.generation += 1;
            if self.replace_index(&index, read_version.as_ref()).await? {
                self.settle_pack(base_generation, index.generation, changed)
                    .await;
                return Ok(outcomes);
            }
            backoff.lost(self.store.url(), INDEX_KEY).await?;
        }
    }

    /// Makes `version` the live version of `key` (to roll back, or forward
    /// again), and updates the pack. Returns the entry after the change;
    /// promoting the live version again changes nothing. Safe with other
    /// writers at once, as [`Registry::import`] is.
    pub async fn promote(&self, key: &ModelKey, version: u32) -> Result<KeyEntry, StoreError> {
        let mut backoff = Backoff::default();
        loop {
            let (mut index, read_version) = self.index_versioned().await?;
            let base_generation = index.generation;
            let entry = index.models.get_mut(&index_key(key)).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "no model ({}, {}) is registered; see `fleetscore models list`",
                    key.device, key.tag
                ))
            })?;
            if !entry.versions.iter().any(|v| v.version == version) {
                let known: Vec<String> = entry
                    .versions
                    .iter()
                    .map(|v| v.version.to_string())
                    .collect();
                return Err(StoreError::Invalid(format!(
                    "model ({}, {}) has no version {version}; it has {}",
                    key.device,
                    key.tag,
                    known.join(", ")
                )));
            }
            if entry.live == version {
                return Ok(entry.clone());
            }
            entry.live = version;
            let out = entry.clone();
            let python = out
                .live_version()
                .is_some_and(|v| v.runtime == Runtime::Python);
            index.generation += 1;
            if self.replace_index(&index, read_version.as_ref()).await? {
                let changed = if python {
                    BTreeMap::from([(key.clone(), None)])
                } else {
                    match self.model(key, version).await {
                        Ok(model) => BTreeMap::from([(key.clone(), Some((version, model)))]),
                        // The pack is then rebuilt from the index.
                        Err(_) => BTreeMap::new(),
                    }
                };
                self.settle_pack(base_generation, index.generation, changed)
                    .await;
                return Ok(out);
            }
            backoff.lost(self.store.url(), INDEX_KEY).await?;
        }
    }

    /// The index with its version in the store (`None`: there is none yet).
    async fn index_versioned(&self) -> Result<(Index, Option<ObjectVersion>), StoreError> {
        match self.store.get_versioned(INDEX_KEY).await? {
            None => Ok((Index::default(), None)),
            Some((bytes, version)) => Ok((self.parse_index(&bytes)?, Some(version))),
        }
    }

    /// Writes `index` if the stored one is still `read` (the version it was
    /// changed from; `None`: none existed). `false`: another writer won.
    async fn replace_index(
        &self,
        index: &Index,
        read: Option<&ObjectVersion>,
    ) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec_pretty(index).expect("plain JSON");
        match self.store.put_if(INDEX_KEY, bytes.clone(), read).await? {
            PutIf::Written(_) => Ok(true),
            // A write whose answer was lost (a timeout, a 5xx after the
            // store applied it) is retried by the backend and then found
            // "changed": by itself. The index's bytes hold its generation
            // and this import's timestamps, so equal bytes mean ours.
            PutIf::Conflict => Ok(self.store.get(INDEX_KEY).await?.as_deref() == Some(&bytes[..])),
        }
    }

    /// [`Registry::update_pack`] once the index is committed: the change
    /// has taken effect whatever happens to the pack, which is derived
    /// data (a reader that finds it behind the index rebuilds it), so a
    /// failure here is logged, not returned; a caller that retried would
    /// find its change already made.
    async fn settle_pack(
        &self,
        base: u64,
        generation: u64,
        changed: BTreeMap<ModelKey, Option<(u32, Model)>>,
    ) {
        let with_change = !changed.is_empty();
        let result = if with_change {
            self.update_pack(base, generation, changed).await
        } else {
            self.rebuild_pack().await.map(|_| ())
        };
        if let Err(e) = result {
            tracing::warn!(
                store = self.store.url(),
                generation,
                "the model index is updated, but writing the pack failed (the next reader rebuilds it): {e}"
            );
        }
    }

    /// Brings the pack to `generation` after this writer replaced the
    /// index of `base` with it, changing `changed`: in place when the pack
    /// is still at `base`, else rebuilt from the index. The pack is derived
    /// data that every reader checks against the index's generation, so
    /// this never fails an import over a race: a pack already past
    /// `generation` is left alone, and one that keeps changing under this
    /// writer is left for the next reader to rebuild.
    async fn update_pack(
        &self,
        base: u64,
        generation: u64,
        changed: BTreeMap<ModelKey, Option<(u32, Model)>>,
    ) -> Result<(), StoreError> {
        for _ in 0..PACK_ATTEMPTS {
            let (pack, read) = self.pack_versioned().await?;
            let old = match pack {
                Some(p) if p.generation >= generation => return Ok(()),
                Some(p) if p.generation == base => p,
                None if base == 0 && read.is_none() => Pack::new(0, Vec::new()),
                // Older than `base`, damaged, or missing after models were
                // registered: what it lacks is not known here.
                _ => return self.rebuild_pack().await.map(|_| ()),
            };
            let mut entries: Vec<PackEntry> = old.entries().to_vec();
            entries.retain(|e| !changed.contains_key(&e.key));
            entries.extend(changed.iter().filter_map(|(key, packed)| {
                let (version, model) = packed.as_ref()?;
                Some(PackEntry {
                    key: key.clone(),
                    version: *version,
                    model: model.clone(),
                })
            }));
            let pack = Pack::new(generation, entries);
            if let PutIf::Written(_) = self
                .store
                .put_if(PACK_KEY, pack.encode(), read.as_ref())
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The stored pack (`None` if missing or damaged: derived data, to be
    /// rebuilt) and the version of the object read (`None` if missing).
    async fn pack_versioned(&self) -> Result<(Option<Pack>, Option<ObjectVersion>), StoreError> {
        match self.store.get_versioned(PACK_KEY).await? {
            None => Ok((None, None)),
            Some((bytes, version)) => Ok((Pack::decode(&bytes).ok(), Some(version))),
        }
    }

    /// Reads one stored model version.
    pub async fn model(&self, key: &ModelKey, version: u32) -> Result<Model, StoreError> {
        let k = format!("{}/model.fsm", version_dir(key, version));
        let bytes = self
            .store
            .get(&k)
            .await?
            .ok_or_else(|| self.store.corrupt(&k, "listed in the index but missing"))?;
        format::from_json(&bytes).map_err(|e| self.store.corrupt(&k, e.to_string()))
    }

    /// Reads the file of a Python model's version (`info` from the index).
    pub async fn python_file(
        &self,
        key: &ModelKey,
        info: &VersionInfo,
    ) -> Result<Bytes, StoreError> {
        let k = info.python_object(key);
        self.store
            .get(&k)
            .await?
            .ok_or_else(|| self.store.corrupt(&k, "listed in the index but missing"))
    }

    async fn build_pack(&self, index: &Index) -> Result<Pack, StoreError> {
        // Owned items and an owned registry per future, so the future is
        // `Send` for any caller (an HTTP handler, a spawned task).
        // The pack holds the native models; Python ones run from their files.
        let wanted: Vec<(String, String, u32)> = index
            .models
            .values()
            .filter(|e| e.live_version().is_none_or(|v| v.runtime.is_native()))
            .map(|e| (e.device.clone(), e.tag.clone(), e.live))
            .collect();
        let this = self.clone();
        let entries: Vec<PackEntry> = stream::iter(wanted)
            .map(move |(device, tag, live)| {
                let this = this.clone();
                async move {
                    let key = ModelKey::new(device, tag)
                        .map_err(|err| StoreError::Invalid(err.to_string()))?;
                    let model = this.model(&key, live).await?;
                    Ok::<_, StoreError>(PackEntry {
                        key,
                        version: live,
                        model,
                    })
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Pack::new(index.generation, entries))
    }

    /// The pack of all live models, rebuilt (and rewritten) if it is
    /// missing, damaged or older than the index.
    pub async fn pack(&self) -> Result<Pack, StoreError> {
        // Only the generation is needed to validate the pack; skip building
        // the whole index (tens of megabytes for a large fleet).
        #[derive(Deserialize)]
        struct Generation {
            generation: u64,
        }
        let (index_bytes, (pack, _)) =
            futures::try_join!(self.store.get(INDEX_KEY), self.pack_versioned())?;
        let generation = match &index_bytes {
            Some(b) => {
                serde_json::from_slice::<Generation>(b)
                    .map_err(|e| self.store.corrupt(INDEX_KEY, e.to_string()))?
                    .generation
            }
            None => 0,
        };
        if let Some(p) = pack {
            if p.generation == generation {
                return Ok(p);
            }
        }
        self.rebuild_pack().await
    }

    /// Rebuilds the pack from the live version files and writes it, unless
    /// the stored one already matches the index. Safe with other writers
    /// at once: the pack is read before the index and replaced only if it
    /// is still the one read, so a pack built from an older index never
    /// replaces a newer one. Returns a pack of the index as read (also when
    /// other writers kept replacing the pack and this one was not written:
    /// theirs is checked by every reader the same way).
    pub async fn rebuild_pack(&self) -> Result<Pack, StoreError> {
        let mut built = None;
        for _ in 0..PACK_ATTEMPTS {
            // The pack first: a pack is only written after its index, so
            // one read before the index is never newer than it.
            let (stored, read) = self.pack_versioned().await?;
            let index = self.index().await?;
            if let Some(p) = stored {
                if p.generation == index.generation {
                    return Ok(p);
                }
            }
            let pack = self.build_pack(&index).await?;
            if index.models.is_empty() {
                return Ok(pack);
            }
            if let PutIf::Written(_) = self
                .store
                .put_if(PACK_KEY, pack.encode(), read.as_ref())
                .await?
            {
                return Ok(pack);
            }
            built = Some(pack);
        }
        Ok(built.expect("at least one attempt"))
    }
}

/// Registry writes that lose the race for the index to other writers try
/// again this many times, then fail with [`StoreError::Contended`]. Each
/// lost race means another writer's change was registered, so with fewer
/// than this many writers at once every one succeeds. Between attempts a
/// writer waits a random time up to 5 ms × 2^(attempt − 1), at most 2 s
/// (so that writers that collided do not collide again in step): all 64
/// waits add up to about a minute on average, two at most.
pub const MAX_ATTEMPTS: u32 = 64;

/// Attempts to bring the pack up to date before leaving it to readers.
const PACK_ATTEMPTS: u32 = 8;

/// Jittered exponential waits between the attempts of a registry write,
/// so that writers that collided do not collide again in step.
#[derive(Default)]
struct Backoff {
    lost: u32,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(2);

    /// Counts a lost race on `key` and waits a random time up to
    /// 5 ms × 2^(lost − 1), at most 2 s; an error after [`MAX_ATTEMPTS`].
    async fn lost(&mut self, url: &str, key: &str) -> Result<(), StoreError> {
        use std::hash::BuildHasher;
        self.lost += 1;
        if self.lost >= MAX_ATTEMPTS {
            return Err(StoreError::Contended {
                url: url.to_string(),
                key: key.to_string(),
                attempts: self.lost,
            });
        }
        let cap = Self::FIRST
            .saturating_mul(1 << (self.lost - 1).min(16))
            .min(Self::MAX);
        // A fresh `RandomState` is randomly keyed: a random number without
        // a dependency for it.
        let r = std::hash::RandomState::new().hash_one(self.lost);
        let wait = cap.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// A request to import, checked, with what its version files hold.
struct Prepared {
    key: ModelKey,
    model: ModelBody,
    /// The version's model file: `model.fsm` (native) or `model.pkl`.
    file: &'static str,
    /// Its bytes.
    json: Bytes,
    /// Its record, with `version` set when a version folder is claimed.
    info: VersionInfo,
}

impl Prepared {
    fn new(req: ImportRequest, now: &str) -> Result<Prepared, StoreError> {
        let model = match req.model {
            ModelBody::Native(m) => m,
            ModelBody::Python(py) => {
                return Ok(Prepared::python(req.key, py, req.source, &req.input, now))
            }
        };
        let req = NativeRequest {
            key: req.key,
            model,
            source: req.source,
            input: req.input,
        };
        if let ModelInput::Window { features, .. } = &req.input {
            if features.len() != req.model.n_features {
                return Err(StoreError::Invalid(format!(
                    "model ({}, {}) takes {} features but its input names {} ({})",
                    req.key.device,
                    req.key.tag,
                    req.model.n_features,
                    features.len(),
                    features.join(",")
                )));
            }
        }
        let (input_mode, window, features) = input_fields(&req.input);
        let info = VersionInfo {
            version: 0,
            sha256: format::content_hash(&req.model),
            imported_at: now.to_string(),
            source: req.source,
            description: req.model.describe(),
            n_features: req.model.n_features,
            kind: req.model.kind().name().to_string(),
            classes: req.model.classes().to_vec(),
            input_mode,
            window,
            features,
            runtime: Runtime::Native,
            methods: Vec::new(),
        };
        Ok(Prepared {
            json: format::to_json(&req.model).into(),
            file: "model.fsm",
            key: req.key,
            model: ModelBody::Native(req.model),
            info,
        })
    }

    /// A Python model: its file is stored as given, nothing in it is read.
    fn python(
        key: ModelKey,
        py: PythonModel,
        source: String,
        input: &ModelInput,
        now: &str,
    ) -> Prepared {
        let (input_mode, window, features) = input_fields(input);
        let info = VersionInfo {
            version: 0,
            sha256: hex(&Sha256::digest(&py.bytes)),
            imported_at: now.to_string(),
            source,
            description: format!(
                "a {} file for the Python runtime ({} bytes; not read by fleetscore)",
                if py.bytes.starts_with(&[0x80]) {
                    "pickle"
                } else {
                    "joblib or pickle"
                },
                py.bytes.len()
            ),
            n_features: features.len().max(1),
            kind: py.kind.map_or(KIND_AUTO, |k| k.name()).to_string(),
            classes: Vec::new(),
            input_mode,
            window,
            features,
            runtime: Runtime::Python,
            methods: py.methods.clone(),
        };
        Prepared {
            json: py.bytes.clone(),
            file: "model.pkl",
            key,
            model: ModelBody::Python(py),
            info,
        }
    }

    /// Whether `v` is this model with this input (what makes an import of
    /// it a no-op).
    fn same_as(&self, v: &VersionInfo) -> bool {
        v.sha256 == self.info.sha256
            && v.runtime == self.info.runtime
            && v.kind == self.info.kind
            && v.methods == self.info.methods
            && v.input_mode == self.info.input_mode
            && v.window == self.info.window
            && v.features == self.info.features
    }

    fn meta(&self, info: &VersionInfo) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "key": {"device": self.key.device, "tag": self.key.tag},
            "info": info,
        }))
        .expect("plain JSON")
    }
}

/// A native model's request, unpacked.
struct NativeRequest {
    key: ModelKey,
    model: Model,
    source: String,
    input: ModelInput,
}

/// `input_mode`, `window` and `features` of a version's record.
fn input_fields(input: &ModelInput) -> (String, Option<String>, Vec<String>) {
    match input {
        ModelInput::Raw => ("raw".to_string(), None, Vec::new()),
        ModelInput::Window { size, features } => {
            ("window".to_string(), Some(size.clone()), features.clone())
        }
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What importing one key's requests did to its entry.
struct KeyImport {
    index_key: String,
    entry: KeyEntry,
    /// Outcomes by request position.
    outcomes: Vec<(usize, ImportOutcome)>,
    /// The new live version and the request it came from, if any.
    live_from: Option<(u32, usize)>,
}

/// Applies the requests `idx` of one key to its `entry` as read (`None`:
/// a new key), claiming a version folder for each changed model.
async fn import_key(
    store: &Store,
    prepared: &[Prepared],
    index_key: String,
    idx: Vec<usize>,
    entry: Option<KeyEntry>,
) -> Result<KeyImport, StoreError> {
    let first = &prepared[idx[0]].key;
    let mut entry = entry.unwrap_or_else(|| KeyEntry {
        device: first.device.clone(),
        tag: first.tag.clone(),
        live: 0,
        versions: Vec::new(),
    });
    let mut outcomes = Vec::with_capacity(idx.len());
    let mut live_from = None;
    for i in idx {
        let p = &prepared[i];
        if let Some(v) = entry.versions.iter().find(|v| p.same_as(v)) {
            outcomes.push((
                i,
                ImportOutcome::Unchanged {
                    key: p.key.clone(),
                    version: v.version,
                },
            ));
            continue;
        }
        let next = entry.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let info = claim_version(store, p, next).await?;
        let version = info.version;
        entry.versions.push(info);
        entry.live = version;
        live_from = Some((version, i));
        outcomes.push((
            i,
            if entry.versions.len() == 1 {
                ImportOutcome::Added {
                    key: p.key.clone(),
                    version,
                }
            } else {
                ImportOutcome::NewVersion {
                    key: p.key.clone(),
                    version,
                }
            },
        ));
    }
    Ok(KeyImport {
        index_key,
        entry,
        outcomes,
        live_from,
    })
}

/// Version numbers a claim tries above the first before giving up: each
/// one taken is an orphan of a writer that crashed or lost a race with
/// another model, so this many means something else is wrong.
const MAX_PROBES: u32 = 1000;

/// Claims the first version folder from `first` up that is free or
/// already holds this model with this input (left by an earlier attempt
/// of this import, or by a writer of the same model), and returns the
/// record the index names it by.
///
/// Version files are never replaced: `model.fsm` and then `meta.json` are
/// written only if missing. A folder whose `model.fsm` holds another model,
/// or whose `meta.json` records another input, belongs to another writer
/// (registered, or an orphan of a crash or a lost race), and the next
/// number is tried; so version numbers may have gaps.
async fn claim_version(store: &Store, p: &Prepared, first: u32) -> Result<VersionInfo, StoreError> {
    for version in first..first.saturating_add(MAX_PROBES) {
        let dir = version_dir(&p.key, version);
        let model_key = format!("{dir}/{}", p.file);
        if let PutIf::Conflict = store.put_if(&model_key, p.json.clone(), None).await? {
            let same = match store.get(&model_key).await? {
                Some(b) if b == p.json => true,
                Some(b) if p.info.runtime.is_native() => {
                    format::from_json(&b).is_ok_and(|m| format::content_hash(&m) == p.info.sha256)
                }
                _ => false,
            };
            if !same {
                continue;
            }
        }
        let info = VersionInfo {
            version,
            ..p.info.clone()
        };
        let meta_key = format!("{dir}/meta.json");
        match store.put_if(&meta_key, p.meta(&info), None).await? {
            PutIf::Written(_) => return Ok(info),
            PutIf::Conflict => {
                // Another writer of the same model got this folder's
                // record in first: its record (source, time) is the one.
                #[derive(Deserialize)]
                struct Meta {
                    info: VersionInfo,
                }
                let theirs = store
                    .get(&meta_key)
                    .await?
                    .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
                if let Some(Meta { info: theirs }) = theirs {
                    if theirs.version == version && p.same_as(&theirs) {
                        return Ok(theirs);
                    }
                }
            }
        }
    }
    Err(store.corrupt(
        &version_dir(&p.key, first),
        format!(
            "versions {first} to {} of this model key are all taken by other models; \
             remove the version folders the index does not name (see `fleetscore models show`)",
            first.saturating_add(MAX_PROBES - 1)
        ),
    ))
}
