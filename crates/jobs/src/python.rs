//! Pairs whose model runs in the Python runtime: found in the index, split
//! off the native scoring, scored by the pool, merged into [`Scored`].
//!
//! A pair's model is its own entry in the index, else the fallback
//! `(*, tag)`, as in the pack. When its live version has
//! `runtime = python`, the pair is scored here: by the deployment's
//! [`Pool`] if it runs Python models (`[python] enabled = true`), else it
//! fails `python_disabled` and no Python process is started.

use std::ops::Range;
use std::sync::Arc;

use fleetscore_codecs::Readings;
use fleetscore_models::{Kind, Pack};
use fleetscore_python::{Call, CallError, Loader, ModelFile, ModelRef, Pool};
use fleetscore_store::{Index, Runtime, Store};
use rustc_hash::FxHashMap;

use crate::{FailureReason, ModelFailure, Scored};

/// The Python models of some pairs, and how to run them.
#[derive(Clone, Default)]
pub struct PythonModels {
    /// Each pair's model, for the pairs whose model runs in Python.
    refs: FxHashMap<(String, String), Arc<ModelRef>>,
    /// The pool (`None`: this deployment does not run Python models).
    pool: Option<Arc<Pool>>,
    /// Reads a model's file for a worker.
    loader: Option<Arc<Loader>>,
}

impl std::fmt::Debug for PythonModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonModels")
            .field("models", &self.refs.len())
            .field("enabled", &self.pool.is_some())
            .finish()
    }
}

/// The Python model of `(device, tag)` in `index`, if its model (its own,
/// else the fallback `(*, tag)`) runs in Python.
pub fn python_model(index: &Index, device: &str, tag: &str) -> Option<ModelRef> {
    let (entry, key_device) = match index.models.get(&format!("{device}/{tag}")) {
        Some(e) => (e, device),
        None => (index.models.get(&format!("*/{tag}"))?, "*"),
    };
    let live = entry.live_version()?;
    if live.runtime != Runtime::Python {
        return None;
    }
    let key = fleetscore_core::ModelKey::new(key_device, tag).ok()?;
    Some(ModelRef {
        id: live.sha256.clone(),
        object: live.python_object(&key),
        kind: live.declared_kind(),
        methods: live.methods.clone(),
    })
}

impl PythonModels {
    /// The Python models of `pairs` in `index`, run by `pool` (if any),
    /// their files read from `store`. Call from within a Tokio runtime (the
    /// loader blocks on it from the pool's threads).
    pub fn resolve<'a>(
        index: &Index,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        pool: Option<Arc<Pool>>,
        store: &Store,
    ) -> PythonModels {
        let mut refs = FxHashMap::default();
        for (d, t) in pairs {
            if let Some(m) = python_model(index, d, t) {
                refs.insert((d.to_string(), t.to_string()), Arc::new(m));
            }
        }
        let loader: Option<Arc<Loader>> = if refs.is_empty() {
            None
        } else {
            let handle = tokio::runtime::Handle::current();
            let store = store.clone();
            Some(Arc::new(move |m: &ModelRef| {
                // A local store's file is read by the worker itself.
                if let Some(path) = store.local_file(&m.object).filter(|p| p.is_file()) {
                    return Ok(ModelFile::Path(path));
                }
                handle
                    .block_on(store.get(&m.object))
                    .map_err(|e| e.to_string())?
                    .map(|b| ModelFile::Bytes(b.to_vec()))
                    .ok_or_else(|| format!("{} is missing from the store", m.object))
            }))
        };
        PythonModels { refs, pool, loader }
    }

    /// Whether no pair here runs in Python.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The Python model of a pair, if it has one.
    pub fn get(&self, device: &str, tag: &str) -> Option<&Arc<ModelRef>> {
        if self.refs.is_empty() {
            return None;
        }
        self.refs.get(&(device.to_string(), tag.to_string()))
    }
}

/// The pool was shut down (the service is stopping) while models of a
/// task were being scored: the task is to be tried again, no model failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Python runtime was stopped (fleetscore is shutting down) before every Python model of the task was scored")]
pub struct Interrupted;

/// One pair's rows for a Python model.
#[derive(Debug)]
pub struct PythonUnit {
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// Its model.
    pub model: Arc<ModelRef>,
    /// Per row: the timestamp and the value written beside the prediction.
    pub ts: Vec<i64>,
    /// See `ts`.
    pub value: Vec<f64>,
    /// The rows, row-major, `width` each.
    pub rows: Vec<f64>,
    /// Columns per row.
    pub width: usize,
}

/// Splits the readings of pairs with a Python model off `readings` (which
/// keeps the rest), one unit per pair, rows in their order.
pub fn split_readings(readings: &mut Readings, python: &PythonModels) -> Vec<PythonUnit> {
    if python.is_empty() {
        return Vec::new();
    }
    let keys: Vec<(String, String)> = readings
        .keys()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect();
    let mut unit_of: Vec<Option<usize>> = vec![None; keys.len()];
    let mut units: Vec<PythonUnit> = Vec::new();
    for (k, (d, t)) in keys.iter().enumerate() {
        if let Some(m) = python.get(d, t) {
            unit_of[k] = Some(units.len());
            units.push(PythonUnit {
                device: d.clone(),
                tag: t.clone(),
                model: Arc::clone(m),
                ts: Vec::new(),
                value: Vec::new(),
                rows: Vec::new(),
                width: 1,
            });
        }
    }
    if units.is_empty() {
        return units;
    }
    for ((&ts, &v), &k) in readings
        .ts()
        .iter()
        .zip(readings.values())
        .zip(readings.key_ids())
    {
        if let Some(u) = unit_of[k as usize] {
            let u = &mut units[u];
            u.ts.push(ts);
            u.value.push(v);
            u.rows.push(v);
        }
    }
    let keep: Vec<bool> = unit_of.iter().map(Option::is_none).collect();
    readings.retain_keys(&keep);
    units
}

/// [`crate::score`] for readings whose pairs may have Python models: the
/// native ones as usual, the Python ones by the pool (each a failure of
/// its own if it cannot score), all in one [`Scored`].
pub fn score_with_python(
    mut readings: Readings,
    pack: &Pack,
    python: &PythonModels,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Scored, Interrupted> {
    let units = split_readings(&mut readings, python);
    let mut scored = crate::score(readings, pack, progress);
    if !units.is_empty() {
        score_units(&mut scored, units, python, progress)?;
        scored
            .failures
            .sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
    }
    Ok(scored)
}

/// Scores Python units and appends them to `scored` (rows, groups,
/// anomalies; failures at the end); groups stay in (device, tag) order.
pub fn score_units(
    scored: &mut Scored,
    mut units: Vec<PythonUnit>,
    python: &PythonModels,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), Interrupted> {
    if units.is_empty() {
        return Ok(());
    }
    let results: Vec<Result<fleetscore_python::Output, FailureReason>> =
        match (&python.pool, &python.loader) {
            (Some(pool), Some(loader)) => {
                // The rows go to the pool; the units keep what is written
                // beside the predictions.
                let calls = units
                    .iter_mut()
                    .map(|u| Call {
                        model: Arc::clone(&u.model),
                        width: u.width,
                        rows: std::mem::take(&mut u.rows),
                    })
                    .collect();
                let results = pool.score_with_progress(calls, loader, progress);
                if results.iter().any(|r| matches!(r, Err(CallError::Stopped))) {
                    return Err(Interrupted);
                }
                results
                    .into_iter()
                    .map(|r| r.map_err(python_failure))
                    .collect()
            }
            _ => units
                .iter()
                .map(|_| Err(FailureReason::PythonDisabled))
                .collect(),
        };
    for (u, r) in units.into_iter().zip(results) {
        let n = u.ts.len();
        match r {
            Ok(out)
                if out.kind == Kind::Classifier
                    && out.label.contains(&fleetscore_models::NO_LABEL) =>
            {
                scored.failures.push(ModelFailure {
                    device: u.device,
                    tag: u.tag,
                    rows: n,
                    reason: FailureReason::Python {
                        message: "the classifier predicted a class that is not in its classes_"
                            .into(),
                    },
                });
            }
            Ok(out) => {
                let k = scored.keys.len() as u32;
                if out.kind == Kind::Outlier {
                    scored.anomalies += out.label.iter().filter(|&&l| l == 1).count();
                }
                scored.keys.push((u.device, u.tag));
                scored.kinds.push(out.kind);
                scored.classes.push(out.classes);
                let from = scored.ts.len();
                scored.ts.extend_from_slice(&u.ts);
                scored.value.extend_from_slice(&u.value);
                scored.score.extend_from_slice(&out.score);
                scored.label.extend_from_slice(&out.label);
                scored.groups.push((k, from..scored.ts.len()));
            }
            Err(reason) => scored.failures.push(ModelFailure {
                device: u.device,
                tag: u.tag,
                rows: n,
                reason,
            }),
        }
    }
    sort_groups(scored);
    Ok(())
}

/// Puts the groups in (device, tag) order again.
fn sort_groups(scored: &mut Scored) {
    let keys = &scored.keys;
    scored
        .groups
        .sort_by(|a: &(u32, Range<usize>), b| keys[a.0 as usize].cmp(&keys[b.0 as usize]));
}

/// The failure of a model the pool could not score.
fn python_failure(e: CallError) -> FailureReason {
    FailureReason::Python {
        message: e.to_string(),
    }
}
