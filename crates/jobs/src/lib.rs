//! Scoring jobs: readings in, predictions out, one model per (device, tag).
//!
//! [`score`] groups readings by their (device, tag) with a stable counting
//! sort (time order within a model is kept), resolves each pair's model in
//! the pack (its own, else the fallback `(*, tag)`), and scores the groups
//! in parallel on rayon's pool, each model over its whole batch of rows.
//! A model that cannot score (no model, feature-count mismatch) is
//! reported with its reason and its rows are left out; the others go on.
//!
//! Around it, the scheduled service: [`db`] (the job store: records,
//! states, the store trait, its SQLite and PostgreSQL dialects),
//! [`schedule`] (cron schedules, catch-up, the injectable clock),
//! [`scheduler`] (the loop that creates due jobs and runs them),
//! [`backfill`] (the jobs of a range of windows, for the CLI and the API),
//! [`lease`] (lease times on the injected clock, renewals) and [`run`]
//! (jobs in tasks, with retries, outputs and logs in the object store).
#![deny(missing_docs)]
// `unsafe` only in the parallel scatter of readings by model
// (`SharedSlice`); every block says why it is sound
// (`undocumented_unsafe_blocks`, `unsafe_op_in_unsafe_fn` in the workspace lints).
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod backfill;
pub mod db;
pub mod lease;
pub mod python;
pub mod run;
pub mod schedule;
pub mod scheduler;
mod stage;
pub mod trace;

use std::collections::BTreeMap;
use std::ops::Range;

use fleetscore_codecs::{ModelOutput, PredictionColumns, Readings};
use fleetscore_models::{Kind, Pack};
use fleetscore_store::lake::DeviceCount;
use rayon::prelude::*;
use serde::Serialize;

/// Why a (device, tag) was not scored.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FailureReason {
    /// No model for the pair and no fallback `(*, tag)`.
    #[error("no model registered for this (device, tag) and no fallback (*, tag); import one with `fleetscore models import`")]
    NoModel,
    /// The model takes more than one feature, but raw readings give one.
    #[error("feature mismatch: the model expects {expected} features per row but raw readings give {found}")]
    FeatureMismatch {
        /// Features the model expects.
        expected: usize,
        /// Features the input gives.
        found: usize,
    },
    /// The model could not evaluate the input.
    #[error("evaluation failed: {message}")]
    Evaluation {
        /// What went wrong.
        message: String,
    },
    /// A model exists but the window holds no readings for it (scheduled
    /// jobs only).
    #[error("no readings for this (device, tag) in the window")]
    NoData,
    /// A model of the Python runtime raised, hit a limit, or its process
    /// died (see `fleetscore_python::CallError`).
    #[error("Python: {message}")]
    Python {
        /// Python's exception text, or the limit it hit.
        message: String,
    },
    /// The model runs in Python, and this deployment does not run Python
    /// models.
    #[error("this model runs in Python (registered with --runtime python), and this deployment does not run Python models: set [python] enabled = true and [python] interpreter (see the README's \"Python models\")")]
    PythonDisabled,
}

impl FailureReason {
    /// `no_model`, `feature_mismatch`, `evaluation`, `no_data`.
    pub fn code(&self) -> &'static str {
        match self {
            FailureReason::NoModel => "no_model",
            FailureReason::FeatureMismatch { .. } => "feature_mismatch",
            FailureReason::Evaluation { .. } => "evaluation",
            FailureReason::NoData => "no_data",
            FailureReason::Python { .. } => "python",
            FailureReason::PythonDisabled => "python_disabled",
        }
    }
}

/// A (device, tag) that was not scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFailure {
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// Readings that were not scored.
    pub rows: usize,
    /// Why.
    #[serde(flatten)]
    pub reason: FailureReason,
}

/// Predictions of one run, grouped by model.
#[derive(Debug, Default)]
pub struct Scored {
    /// Timestamps (ns).
    pub ts: Vec<i64>,
    /// Values scored.
    pub value: Vec<f64>,
    /// Per row, by its model's kind: 1 = anomaly, 0 = normal (detectors);
    /// the index of the predicted class in `classes` (classifiers);
    /// unused (regressors). See [`fleetscore_models::Model::evaluate_into`].
    pub label: Vec<u32>,
    /// Score: `decision_function` (detectors), `predict` (regressors), the
    /// predicted class's probability (classifiers).
    pub score: Vec<f64>,
    /// `(device, tag)` per key id.
    pub keys: Vec<(String, String)>,
    /// What each key id's model predicts (detectors for keys with no
    /// model, which have no rows).
    pub kinds: Vec<Kind>,
    /// A classifier's class texts per key id (empty for other kinds).
    pub classes: Vec<Vec<String>>,
    /// Scored models: key id and its row range in the arrays above, in
    /// (device, tag) order.
    pub groups: Vec<(u32, Range<usize>)>,
    /// Models that could not score.
    pub failures: Vec<ModelFailure>,
    /// Number of anomalies (detectors' rows only).
    pub anomalies: usize,
}

impl Scored {
    /// What each key's rows hold, for the predictions writer.
    pub fn outputs(&self) -> Vec<ModelOutput<'_>> {
        model_outputs(&self.kinds, &self.classes)
    }

    /// The columns the predictions writers take; `outputs` is
    /// [`Scored::outputs`].
    pub fn columns<'a>(&'a self, outputs: &'a [ModelOutput<'a>]) -> PredictionColumns<'a> {
        PredictionColumns {
            ts: &self.ts,
            value: &self.value,
            label: &self.label,
            score: &self.score,
            keys: &self.keys,
            outputs,
            groups: &self.groups,
        }
    }

    /// Rows scored.
    pub fn rows(&self) -> usize {
        self.groups.iter().map(|(_, g)| g.len()).sum()
    }

    /// Rows and anomalies (of outlier detectors) by device, for a
    /// manifest.
    pub fn device_counts(&self) -> BTreeMap<String, DeviceCount> {
        let mut devices: BTreeMap<String, DeviceCount> = BTreeMap::new();
        for (k, g) in &self.groups {
            let c = devices.entry(self.keys[*k as usize].0.clone()).or_default();
            c.rows += g.len() as u64;
            if self.kinds[*k as usize] == Kind::Outlier {
                c.anomalies += self.label[g.clone()].iter().filter(|&&p| p == 1).count() as u64;
            }
        }
        devices
    }
}

/// What each key's rows hold, from the kinds and class texts per key.
pub fn model_outputs<'a>(kinds: &[Kind], classes: &'a [Vec<String>]) -> Vec<ModelOutput<'a>> {
    kinds
        .iter()
        .zip(classes)
        .map(|(k, c)| match k {
            Kind::Outlier => ModelOutput::Outlier,
            Kind::Regressor => ModelOutput::Regressor,
            Kind::Classifier => ModelOutput::Classifier(c),
        })
        .collect()
}

/// Scores every reading with its model. `progress` is called with the
/// number of readings of each model as it finishes.
pub fn score(readings: Readings, pack: &Pack, progress: &(dyn Fn(u64) + Sync)) -> Scored {
    let n_rows = readings.len();
    let (in_ts, in_value, in_key, keys) = readings.into_columns();
    let n_keys = keys.len();
    // Output order: (device, tag), independent of the input's order.
    let mut order: Vec<u32> = (0..n_keys as u32).collect();
    order.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));

    // Stable counting sort of rows by key, in parallel: each thread counts
    // its own slice of rows, then scatters them to positions reserved for
    // (its slice, key), which keeps time order within a key.
    let threads = rayon::current_num_threads().max(1);
    let chunk = n_rows.div_ceil(threads).max(1);
    let hist: Vec<Vec<usize>> = in_key
        .par_chunks(chunk)
        .map(|keys| {
            let mut h = vec![0usize; n_keys];
            for &k in keys {
                h[k as usize] += 1;
            }
            h
        })
        .collect();
    let mut counts = vec![0usize; n_keys];
    for h in &hist {
        for (c, n) in counts.iter_mut().zip(h) {
            *c += n;
        }
    }
    let mut start = vec![0usize; n_keys];
    let mut acc = 0;
    for &k in &order {
        start[k as usize] = acc;
        acc += counts[k as usize];
    }
    // Where each slice's rows of each key begin.
    let mut cursors: Vec<Vec<usize>> = Vec::with_capacity(hist.len());
    let mut next = start.clone();
    for h in &hist {
        cursors.push(next.clone());
        for (n, c) in next.iter_mut().zip(h) {
            *n += c;
        }
    }
    drop(next);
    let mut ts = vec![0i64; n_rows];
    let mut value = vec![0f64; n_rows];
    {
        let ts_out = SharedSlice::new(&mut ts);
        let value_out = SharedSlice::new(&mut value);
        in_key
            .par_chunks(chunk)
            .zip(in_ts.par_chunks(chunk))
            .zip(in_value.par_chunks(chunk))
            .zip(cursors.into_par_iter())
            .for_each(|(((keys, t), v), mut cur)| {
                for i in 0..keys.len() {
                    let k = keys[i] as usize;
                    // SAFETY: positions cur[k].. are reserved for this slice's
                    // rows of key k, so no two writes hit the same index, and
                    // every index is < n_rows.
                    unsafe {
                        ts_out.write(cur[k], t[i]);
                        value_out.write(cur[k], v[i]);
                    }
                    cur[k] += 1;
                }
            });
    }

    let mut failures = Vec::new();
    let mut work = Vec::with_capacity(n_keys);
    for &k in &order {
        let (device, tag) = &keys[k as usize];
        let range = start[k as usize]..start[k as usize] + counts[k as usize];
        match pack.get(device, tag) {
            None => failures.push(ModelFailure {
                device: device.clone(),
                tag: tag.clone(),
                rows: range.len(),
                reason: FailureReason::NoModel,
            }),
            Some(e) if e.model.n_features != 1 => failures.push(ModelFailure {
                device: device.clone(),
                tag: tag.clone(),
                rows: range.len(),
                reason: FailureReason::FeatureMismatch {
                    expected: e.model.n_features,
                    found: 1,
                },
            }),
            Some(e) => work.push((k, range, &e.model)),
        }
    }

    // The input columns are no longer needed: reuse the values' buffer for
    // the scores (fresh memory costs a page fault and a zeroed page per
    // 4 KiB, which was a fifth of the job) and free the rest now.
    let mut score = in_value;
    drop((in_ts, in_key));
    let mut label = vec![0u32; n_rows];
    let mut kinds = vec![Kind::Outlier; keys.len()];
    let mut classes = vec![Vec::new(); keys.len()];
    for (k, _, model) in &work {
        kinds[*k as usize] = model.kind();
        classes[*k as usize] = model.classes().to_vec();
    }
    // Disjoint output slices, one per model, for the parallel loop.
    let mut tasks = Vec::with_capacity(work.len());
    {
        let mut rest_s: &mut [f64] = &mut score;
        let mut rest_p: &mut [u32] = &mut label;
        let mut offset = 0;
        for (k, range, model) in &work {
            let skip = range.start - offset;
            let (_, tail_s) = std::mem::take(&mut rest_s).split_at_mut(skip);
            let (mine_s, tail_s) = tail_s.split_at_mut(range.len());
            let (_, tail_p) = std::mem::take(&mut rest_p).split_at_mut(skip);
            let (mine_p, tail_p) = tail_p.split_at_mut(range.len());
            rest_s = tail_s;
            rest_p = tail_p;
            offset = range.end;
            tasks.push((*k, range.clone(), *model, mine_s, mine_p));
        }
    }
    let results: Vec<(Option<(u32, String)>, usize)> = tasks
        .into_par_iter()
        .with_max_len(1)
        .map(|(k, range, model, out, pred)| {
            let r = model
                .evaluate_into(&value[range.clone()], 1, out, pred)
                .map_err(|e| e.to_string())
                .and_then(|a| check_labels(model, pred).map(|()| a));
            progress(range.len() as u64);
            match r {
                Ok(anomalies) => (None, anomalies),
                Err(e) => (Some((k, e)), 0),
            }
        })
        .collect();
    let anomalies = results.iter().map(|(_, a)| a).sum();
    let mut failed = std::collections::HashSet::new();
    for (k, message) in results.into_iter().filter_map(|(e, _)| e) {
        let (device, tag) = &keys[k as usize];
        failed.insert(k);
        failures.push(ModelFailure {
            device: device.clone(),
            tag: tag.clone(),
            rows: counts[k as usize],
            reason: FailureReason::Evaluation { message },
        });
    }
    let groups: Vec<(u32, Range<usize>)> = work
        .iter()
        .filter(|(k, _, _)| !failed.contains(k))
        .map(|(k, r, _)| (*k, r.clone()))
        .collect();
    Scored {
        ts,
        value,
        label,
        score,
        keys,
        kinds,
        classes,
        groups,
        failures,
        anomalies,
    }
}

/// A classifier gives no label to a row scikit-learn would refuse (a
/// missing value the model cannot route): the model fails, with the row,
/// rather than writing a row without its class.
pub fn check_labels(model: &fleetscore_models::Model, label: &[u32]) -> Result<(), String> {
    if model.kind() != Kind::Classifier {
        return Ok(());
    }
    match label.iter().position(|&l| l == fleetscore_models::NO_LABEL) {
        None => Ok(()),
        Some(i) => Err(format!(
            "row {i}: the classifier cannot predict a missing (NaN) input, which scikit-learn refuses too"
        )),
    }
}

/// A slice that several threads write to at disjoint indices.
struct SharedSlice<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: writers promise disjoint indices (see `write`).
unsafe impl<T: Send> Sync for SharedSlice<T> {}
// SAFETY: it only hands `T`s to other threads (`T: Send`); the slice it
// points into outlives every thread that writes (scoped rayon work).
unsafe impl<T: Send> Send for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    fn new(s: &mut [T]) -> Self {
        SharedSlice {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// No other thread may write or read index `i` concurrently.
    unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked) and exclusive (the caller's promise).
        unsafe { self.ptr.add(i).write(v) }
    }
}
