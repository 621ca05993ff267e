//! Scoring jobs: readings in, predictions out, one model per (device, tag).
//!
//! [`score`] groups readings by their (device, tag) with a stable counting
//! sort (time order within a model is kept), resolves each pair's model in
//! the pack (its own, else the fallback `(*, tag)`), and scores the groups
//! in parallel on rayon's pool, each model over its whole batch of rows.
//! A model that cannot score (no model, feature-count mismatch) is
//! reported with its reason and its rows are left out; the others go on.
#![deny(missing_docs)]

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetscore_codecs::Readings;
use fleetscore_models::{is_inlier, Pack};
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
    /// 1 = anomaly, 0 = normal.
    pub prediction: Vec<u8>,
    /// Decision function.
    pub score: Vec<f64>,
    /// `(device, tag)` per key id.
    pub keys: Vec<(String, String)>,
    /// Scored models: key id and its row range in the arrays above, in
    /// (device, tag) order.
    pub groups: Vec<(u32, Range<usize>)>,
    /// Models that could not score.
    pub failures: Vec<ModelFailure>,
    /// Number of anomalies.
    pub anomalies: usize,
}

/// Scores every reading with its model. `progress` is called with the
/// number of readings of each model as it finishes.
pub fn score(readings: Readings, pack: &Pack, progress: &(dyn Fn(u64) + Sync)) -> Scored {
    let n_keys = readings.keys.len();
    // Stable counting sort of rows by key id.
    let mut counts = vec![0usize; n_keys + 1];
    for &k in &readings.key {
        counts[k as usize + 1] += 1;
    }
    // Output order: (device, tag), independent of the input's order.
    let mut order: Vec<u32> = (0..n_keys as u32).collect();
    order.sort_unstable_by(|&a, &b| readings.keys[a as usize].cmp(&readings.keys[b as usize]));
    let mut start = vec![0usize; n_keys];
    let mut acc = 0;
    for &k in &order {
        start[k as usize] = acc;
        acc += counts[k as usize + 1];
    }
    let total = acc;
    let mut ts = vec![0i64; total];
    let mut value = vec![0f64; total];
    let mut next = start.clone();
    for r in 0..readings.ts.len() {
        let k = readings.key[r] as usize;
        let i = next[k];
        ts[i] = readings.ts[r];
        value[i] = readings.value[r];
        next[k] += 1;
    }
    drop(next);

    let mut failures = Vec::new();
    let mut work = Vec::with_capacity(n_keys);
    for &k in &order {
        let (device, tag) = &readings.keys[k as usize];
        let range = start[k as usize]..start[k as usize] + counts[k as usize + 1];
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

    let mut score = vec![0f64; total];
    // Disjoint output slices, one per model, for the parallel loop.
    let mut tasks = Vec::with_capacity(work.len());
    {
        let mut rest: &mut [f64] = &mut score;
        let mut offset = 0;
        for (k, range, model) in &work {
            let skip = range.start - offset;
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
            let (mine, tail) = tail.split_at_mut(range.len());
            rest = tail;
            offset = range.end;
            tasks.push((*k, range.clone(), *model, mine));
        }
    }
    let done = AtomicU64::new(0);
    let errors: Vec<(u32, String)> = tasks
        .into_par_iter()
        .with_max_len(1)
        .filter_map(|(k, range, model, out)| {
            let mut dec = Vec::with_capacity(range.len());
            let r = model.decision_function(&value[range.clone()], 1, &mut dec);
            done.fetch_add(1, Ordering::Relaxed);
            progress(range.len() as u64);
            match r {
                Ok(()) => {
                    out.copy_from_slice(&dec);
                    None
                }
                Err(e) => Some((k, e.to_string())),
            }
        })
        .collect();
    let failed: std::collections::HashSet<u32> = errors.iter().map(|(k, _)| *k).collect();
    for (k, message) in errors {
        let (device, tag) = &readings.keys[k as usize];
        let rows = counts[k as usize + 1];
        failures.push(ModelFailure {
            device: device.clone(),
            tag: tag.clone(),
            rows,
            reason: FailureReason::Evaluation { message },
        });
    }
    let groups: Vec<(u32, Range<usize>)> = work
        .iter()
        .filter(|(k, _, _)| !failed.contains(k))
        .map(|(k, r, _)| (*k, r.clone()))
        .collect();
    let prediction: Vec<u8> = score.iter().map(|&d| u8::from(!is_inlier(d))).collect();
    let anomalies = groups
        .iter()
        .map(|(_, r)| prediction[r.clone()].iter().filter(|&&p| p == 1).count())
        .sum();
    Scored {
        ts,
        value,
        prediction,
        score,
        keys: readings.keys,
        groups,
        failures,
        anomalies,
    }
}
