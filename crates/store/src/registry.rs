//! The model registry: versions per (device, tag), the live one, the pack.

use std::collections::BTreeMap;

use fleetscore_core::ModelKey;
use fleetscore_models::{format, Model, Pack, PackEntry};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

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
    /// `raw`: each reading's value is one row; `window`: each window of
    /// `window` (a span such as `1m`) is one row of the named `features`.
    pub input_mode: String,
    /// The window size of `window` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The window features, in the model's column order, of `window` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
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

/// A model to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// Its key.
    pub key: ModelKey,
    /// The model.
    pub model: Model,
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
    pub async fn import(
        &self,
        requests: Vec<ImportRequest>,
        now: &str,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let mut index = self.index().await?;
        let old_generation = index.generation;
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut writes: Vec<(ModelKey, u32, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut changed: BTreeMap<ModelKey, (u32, Model)> = BTreeMap::new();
        for req in requests {
            let sha = format::content_hash(&req.model);
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
            let (input_mode, window, features) = match &req.input {
                ModelInput::Raw => ("raw".to_string(), None, Vec::new()),
                ModelInput::Window { size, features } => {
                    ("window".to_string(), Some(size.clone()), features.clone())
                }
            };
            let ik = index_key(&req.key);
            let entry = index.models.entry(ik).or_insert_with(|| KeyEntry {
                device: req.key.device.clone(),
                tag: req.key.tag.clone(),
                live: 0,
                versions: Vec::new(),
            });
            if let Some(v) = entry.versions.iter().find(|v| {
                v.sha256 == sha
                    && v.input_mode == input_mode
                    && v.window == window
                    && v.features == features
            }) {
                outcomes.push(ImportOutcome::Unchanged {
                    key: req.key,
                    version: v.version,
                });
                continue;
            }
            let version = entry.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            let info = VersionInfo {
                version,
                sha256: sha,
                imported_at: now.to_string(),
                source: req.source,
                description: req.model.describe(),
                n_features: req.model.n_features,
                input_mode,
                window,
                features,
            };
            let meta = serde_json::to_vec_pretty(&serde_json::json!({
                "key": {"device": req.key.device, "tag": req.key.tag},
                "info": info,
            }))
            .expect("plain JSON");
            entry.versions.push(info);
            entry.live = version;
            writes.push((req.key.clone(), version, format::to_json(&req.model), meta));
            outcomes.push(if version == 1 {
                ImportOutcome::Added {
                    key: req.key.clone(),
                    version,
                }
            } else {
                ImportOutcome::NewVersion {
                    key: req.key.clone(),
                    version,
                }
            });
            changed.insert(req.key, (version, req.model));
        }
        if writes.is_empty() {
            return Ok(outcomes);
        }
        let store = self.store.clone();
        stream::iter(writes)
            .map(move |(key, v, model, meta)| {
                let store = store.clone();
                async move {
                    let dir = version_dir(&key, v);
                    store.put(&format!("{dir}/model.fsm"), model).await?;
                    store.put(&format!("{dir}/meta.json"), meta).await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        index.generation += 1;
        self.write_index(&index).await?;
        // Update the pack in place when it matches the previous index;
        // otherwise rebuild it from the version files.
        let pack = match self.read_pack().await? {
            Some(p) if p.generation == old_generation => {
                let mut entries: Vec<PackEntry> = p.entries().to_vec();
                entries.retain(|e| !changed.contains_key(&e.key));
                entries.extend(
                    changed
                        .into_iter()
                        .map(|(key, (version, model))| PackEntry {
                            key,
                            version,
                            model,
                        }),
                );
                Pack::new(index.generation, entries)
            }
            _ => self.build_pack(&index).await?,
        };
        self.store.put(PACK_KEY, pack.encode()).await?;
        Ok(outcomes)
    }

    /// Makes `version` the live version of `key` (to roll back, or forward
    /// again), and updates the pack. Returns the entry after the change;
    /// promoting the live version again changes nothing.
    pub async fn promote(&self, key: &ModelKey, version: u32) -> Result<KeyEntry, StoreError> {
        let mut index = self.index().await?;
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
        index.generation += 1;
        self.write_index(&index).await?;
        self.rebuild_pack().await?;
        Ok(out)
    }

    async fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).expect("plain JSON");
        self.store.put(INDEX_KEY, bytes).await
    }

    async fn read_pack(&self) -> Result<Option<Pack>, StoreError> {
        let Some(bytes) = self.store.get(PACK_KEY).await? else {
            return Ok(None);
        };
        match Pack::decode(&bytes) {
            Ok(p) => Ok(Some(p)),
            // A damaged pack is derived data: rebuild it.
            Err(_) => Ok(None),
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

    async fn build_pack(&self, index: &Index) -> Result<Pack, StoreError> {
        // Owned items and an owned registry per future, so the future is
        // `Send` for any caller (an HTTP handler, a spawned task).
        let wanted: Vec<(String, String, u32)> = index
            .models
            .values()
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
        let (index_bytes, pack) = futures::try_join!(self.store.get(INDEX_KEY), self.read_pack())?;
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

    /// Rebuilds the pack from the live version files and writes it.
    pub async fn rebuild_pack(&self) -> Result<Pack, StoreError> {
        let index = self.index().await?;
        let pack = self.build_pack(&index).await?;
        if !index.models.is_empty() {
            self.store.put(PACK_KEY, pack.encode()).await?;
        }
        Ok(pack)
    }
}
