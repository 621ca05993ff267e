//! `predictions/`: the outputs of scoring a window, and the manifests that
//! make them visible.
//!
//! For a window `[from, to)` of input mode `raw` and length `W` (`1h`),
//! starting in hour `date=D/hour=H`:
//!
//! ```text
//! predictions/date=D/hour=H/part-raw-W-<task>.parquet              a job's parts, 5 digits
//! predictions/date=D/hour=H/manifest-raw-W.json                    its manifest, written last
//! predictions/date=D/hour=H/part-raw-W-shard-I-of-N.parquet        a `score --write-store` shard
//! predictions/date=D/hour=H/manifest-raw-W-shard-I-of-N.json       its manifest, written last
//!     TS, Device, Tag, Val, Prediction, Score, Label
//! ```
//!
//! A window not starting on the hour adds its start to the stem,
//! `raw-15m-091500`, so the windows of one hour keep apart. Names derive
//! from the window and the task (or shard) number only, so scoring the
//! same window again overwrites the same objects. A job's finish
//! ([`JobOutput::finish`]) deletes the parts numbered beyond its tasks (of
//! an earlier, larger run), then writes the manifest; a shard's
//! ([`ShardOutput::finish`]) deletes the outputs of the window written with
//! another shard count, then writes its manifest. Neither touches the
//! other's names (a job's part numbers are bare, a shard's are not).
//!
//! # Reading: only what a manifest names
//! Parts are written before their manifest, and a manifest is the only
//! statement that a set of parts is a finished answer. A reader lists a
//! partition ([`PredictionsPartition::list`]) and reads the parts its
//! manifests name ([`PredictionsPartition::parts`]: the union over the
//! partition's manifests, of the parts present), never the listing's
//! Parquet files as such: a part of a job still running, of a shard whose
//! manifest is not written yet, or of a run that crashed, is not seen.

use std::collections::{BTreeMap, BTreeSet};

use fleetscore_core::format_ts;
use serde::{Deserialize, Serialize};

use super::{hour_of, hour_partition, hours, LakeError, HOUR_NS};
use crate::Store;

/// The folder of predictions.
const PREDICTIONS: &str = "predictions";

/// The `format` of every manifest.
pub const MANIFEST_FORMAT: &str = "fleetscore-predictions-manifest";

/// The manifest of one scoring of a window (a job's, or a shard's): the
/// parts that make its output, and its counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The job that wrote it (0: `score --write-store`).
    pub job: i64,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end, RFC 3339.
    pub window_end: String,
    /// Input mode.
    pub mode: String,
    /// The parts' keys, in task order.
    pub parts: Vec<String>,
    /// Pairs scored or failed.
    pub models: u64,
    /// Rows.
    pub rows: u64,
    /// Anomalies.
    pub anomalies: u64,
    /// Failed pairs.
    pub failed_models: u64,
    /// Rows and anomalies per device (what the dashboard's heat map reads).
    pub devices: BTreeMap<String, DeviceCount>,
}

/// Rows and anomalies of one device in one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceCount {
    /// Rows scored.
    pub rows: u64,
    /// Anomalies among them.
    pub anomalies: u64,
}

/// A window length as a short name: `1h`, `15m`, `30s`, `1d`.
pub fn window_name(ns: i64) -> String {
    const S: i64 = 1_000_000_000;
    if ns % (86_400 * S) == 0 {
        format!("{}d", ns / (86_400 * S))
    } else if ns % (3_600 * S) == 0 {
        format!("{}h", ns / (3_600 * S))
    } else if ns % (60 * S) == 0 {
        format!("{}m", ns / (60 * S))
    } else if ns % S == 0 {
        format!("{}s", ns / S)
    } else {
        format!("{ns}ns")
    }
}

/// The name stem of a window's outputs: `MODE-W`, or `MODE-W-HHMMSS` for a
/// window not starting on the hour.
pub fn window_stem(mode: &str, from: i64, to: i64) -> String {
    match from.rem_euclid(HOUR_NS) {
        0 => format!("{mode}-{}", window_name(to - from)),
        _ => format!(
            "{mode}-{}-{}",
            window_name(to - from),
            format_ts(from)[11..19].replace(':', "")
        ),
    }
}

/// The partition folder of the hour holding `ts`, without a trailing `/`.
fn partition_prefix(ts: i64) -> String {
    format!("{PREDICTIONS}/{}", hour_partition(ts))
}

/// Where a job writes the predictions of its window: one part per score
/// task, then the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    prefix: String,
    stem: String,
}

impl JobOutput {
    /// The outputs of a job of input `mode` over `[from, to)`.
    pub fn new(mode: &str, from: i64, to: i64) -> JobOutput {
        JobOutput {
            prefix: partition_prefix(from),
            stem: window_stem(mode, from, to),
        }
    }

    /// The key of score task `task`'s part.
    pub fn part_key(&self, task: u32) -> String {
        format!("{}/part-{}-{task:05}.parquet", self.prefix, self.stem)
    }

    /// The key of the job's manifest.
    pub fn manifest_key(&self) -> String {
        format!("{}/manifest-{}.json", self.prefix, self.stem)
    }

    /// Ends the job's output: deletes the parts an earlier run of the
    /// window wrote beyond this run's `tasks` score tasks, then writes
    /// `manifest` (last, so that readers see the parts only once they are
    /// all there). Returns the manifest's key.
    pub async fn finish(
        &self,
        store: &Store,
        tasks: u64,
        manifest: &Manifest,
    ) -> Result<String, LakeError> {
        let stale = format!("{}/part-{}-", self.prefix, self.stem);
        for key in store.list(&format!("{}/", self.prefix)).await? {
            let n = key
                .strip_prefix(&stale)
                .and_then(|r| r.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<u64>().ok());
            if n.is_some_and(|n| n >= tasks) {
                store.delete(&key).await?;
            }
        }
        let key = self.manifest_key();
        put_manifest(store, &key, manifest).await?;
        Ok(key)
    }
}

/// Where shard `index` of `count` of `score --write-store` writes the
/// predictions of a window: one part, then its manifest (job 0), beside
/// (never over) the jobs' outputs of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOutput {
    prefix: String,
    stem: String,
    index: u64,
    count: u64,
}

impl ShardOutput {
    /// Shard `index` of `count` of the window `[from, to)` of input `mode`.
    pub fn new(mode: &str, from: i64, to: i64, index: u64, count: u64) -> ShardOutput {
        ShardOutput {
            prefix: partition_prefix(from),
            stem: window_stem(mode, from, to),
            index,
            count,
        }
    }

    /// The key of the shard's part.
    pub fn part_key(&self) -> String {
        format!(
            "{}/part-{}-shard-{}-of-{}.parquet",
            self.prefix, self.stem, self.index, self.count
        )
    }

    /// The key of the shard's manifest.
    pub fn manifest_key(&self) -> String {
        format!(
            "{}/manifest-{}-shard-{}-of-{}.json",
            self.prefix, self.stem, self.index, self.count
        )
    }

    /// Ends the shard's output (its part written): deletes the parts and
    /// manifests of the window written with another shard count, so that
    /// changing it leaves no duplicates, then writes `manifest` (last).
    /// Returns the manifest's key.
    pub async fn finish(&self, store: &Store, manifest: &Manifest) -> Result<String, LakeError> {
        let ours = [
            format!("{}/part-{}-shard-", self.prefix, self.stem),
            format!("{}/manifest-{}-shard-", self.prefix, self.stem),
        ];
        let own_count = format!("-of-{}.", self.count);
        for key in store.list(&format!("{}/", self.prefix)).await? {
            if ours.iter().any(|p| key.starts_with(p.as_str())) && !key.contains(&own_count) {
                store.delete(&key).await?;
            }
        }
        let key = self.manifest_key();
        put_manifest(store, &key, manifest).await?;
        Ok(key)
    }
}

async fn put_manifest(store: &Store, key: &str, manifest: &Manifest) -> Result<(), LakeError> {
    let data = serde_json::to_vec_pretty(manifest).map_err(|source| LakeError::Manifest {
        key: key.to_string(),
        source,
    })?;
    store.put(key, data).await?;
    Ok(())
}

/// The manifest at `key`; `None` if it is gone, or is not a manifest (it
/// does not parse, or its format is another: logged, and its parts stay
/// unseen).
pub async fn read_manifest(store: &Store, key: &str) -> Result<Option<Manifest>, LakeError> {
    let Some(data) = store.get(key).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Manifest>(&data) {
        Ok(m) if m.format == MANIFEST_FORMAT => Ok(Some(m)),
        Ok(m) => {
            tracing::warn!(
                key,
                format = m.format,
                "not a predictions manifest; its parts are not read"
            );
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "a predictions manifest does not parse; its parts are not read");
            Ok(None)
        }
    }
}

/// One hour's folder of `predictions/` as listed: its manifests and the
/// Parquet objects present. Readers get parts only through
/// [`PredictionsPartition::parts`] (see the module docs).
#[derive(Debug, Clone)]
pub struct PredictionsPartition {
    hour: i64,
    /// Keys of the Parquet objects directly in the folder, sorted.
    present: BTreeSet<String>,
    /// Keys of the manifests, sorted.
    manifests: Vec<String>,
}

impl PredictionsPartition {
    /// Lists the partition of the hour holding `ts` (one listing).
    pub async fn list(store: &Store, ts: i64) -> Result<PredictionsPartition, LakeError> {
        let prefix = format!("{}/", partition_prefix(ts));
        let mut present = BTreeSet::new();
        let mut manifests = Vec::new();
        for key in store.list(&prefix).await? {
            let Some(name) = key.strip_prefix(&prefix).filter(|n| !n.contains('/')) else {
                continue;
            };
            if name.ends_with(".parquet") {
                present.insert(key);
            } else if name
                .strip_prefix("manifest-")
                .and_then(|n| n.strip_suffix(".json"))
                .is_some()
            {
                // The lake writes these names itself, in lower case.
                manifests.push(key);
            }
        }
        Ok(PredictionsPartition {
            hour: hour_of(ts),
            present,
            manifests,
        })
    }

    /// The start of the partition's hour.
    pub fn hour(&self) -> i64 {
        self.hour
    }

    /// Whether any part is there, named by a manifest or not (a partition
    /// without one has nothing to read; its manifests, if any, count no
    /// rows).
    pub fn has_parts(&self) -> bool {
        !self.present.is_empty()
    }

    /// The keys of the partition's manifests, in key order (read each with
    /// [`read_manifest`]).
    pub fn manifest_keys(&self) -> &[String] {
        &self.manifests
    }

    /// The partition's manifests, in key order (those that do not read as
    /// manifests left out; see [`read_manifest`]).
    pub async fn manifests(&self, store: &Store) -> Result<Vec<Manifest>, LakeError> {
        let mut out = Vec::with_capacity(self.manifests.len());
        for key in &self.manifests {
            out.extend(read_manifest(store, key).await?);
        }
        Ok(out)
    }

    /// The parts to read: those a manifest of the partition names and the
    /// listing found, each once, in key order. A part no manifest names is
    /// not among them, nor is a named part that is gone (a later, smaller
    /// run of the window deleted it before writing its manifest).
    pub async fn parts(&self, store: &Store) -> Result<Vec<String>, LakeError> {
        if self.present.is_empty() {
            return Ok(Vec::new());
        }
        let mut named = BTreeSet::new();
        for m in self.manifests(store).await? {
            named.extend(m.parts.into_iter().filter(|p| self.present.contains(p)));
        }
        Ok(named.into_iter().collect())
    }
}

/// The parts to read (see [`PredictionsPartition::parts`]) of the
/// partitions of the hours `[from, to)` touches, in time order. A window's
/// outputs sit in the partition of its start: a window longer than an hour
/// has rows later than its partition's hour.
pub async fn predictions_parts(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<String>, LakeError> {
    let mut out = Vec::new();
    for hour in hours(from, to) {
        out.extend(
            PredictionsPartition::list(store, hour)
                .await?
                .parts(store)
                .await?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_core::parse_ts;

    fn manifest(job: i64, parts: &[String]) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            job,
            window_start: String::new(),
            window_end: String::new(),
            mode: "raw".into(),
            parts: parts.to_vec(),
            models: 1,
            rows: 1,
            anomalies: 0,
            failed_models: 0,
            devices: BTreeMap::new(),
        }
    }

    async fn put(store: &Store, key: &str) {
        store.put(key, b"PAR1".to_vec()).await.unwrap();
    }

    #[test]
    fn names_derive_from_the_window_and_the_task() {
        let h = parse_ts("2024-03-05 09:00:00").unwrap();
        let m = 60_000_000_000i64;
        let job = JobOutput::new("raw", h, h + 60 * m);
        assert_eq!(
            job.part_key(7),
            "predictions/date=2024-03-05/hour=09/part-raw-1h-00007.parquet"
        );
        assert_eq!(
            job.manifest_key(),
            "predictions/date=2024-03-05/hour=09/manifest-raw-1h.json"
        );
        let quarter = JobOutput::new("raw", h + 15 * m, h + 30 * m);
        assert_eq!(
            quarter.manifest_key(),
            "predictions/date=2024-03-05/hour=09/manifest-raw-15m-091500.json"
        );
        let shard = ShardOutput::new("raw", h, h + 60 * m, 1, 4);
        assert_eq!(
            shard.part_key(),
            "predictions/date=2024-03-05/hour=09/part-raw-1h-shard-1-of-4.parquet"
        );
        assert_eq!(
            shard.manifest_key(),
            "predictions/date=2024-03-05/hour=09/manifest-raw-1h-shard-1-of-4.json"
        );
        assert_eq!(window_name(24 * HOUR_NS), "1d");
        assert_eq!(window_name(90 * 1_000_000_000), "90s");
        assert_eq!(window_name(1), "1ns");
    }

    /// Only the parts a manifest names are read: not a running job's, not
    /// a shard's without its manifest, not one a manifest names that is
    /// gone; several manifests give the union.
    #[tokio::test]
    async fn readers_see_only_what_a_manifest_names() {
        let store = Store::open("memory://").unwrap();
        let h = parse_ts("2024-03-05 09:00:00").unwrap();
        let m = 60_000_000_000i64;
        let job = JobOutput::new("raw", h, h + 60 * m);
        let named = [job.part_key(0), job.part_key(1)];
        for k in &named {
            put(&store, k).await;
        }
        // Nothing is seen before the manifest.
        let p = PredictionsPartition::list(&store, h + 5).await.unwrap();
        assert_eq!(p.hour(), h);
        assert!(p.has_parts());
        assert!(p.parts(&store).await.unwrap().is_empty());
        job.finish(&store, 2, &manifest(1, &named)).await.unwrap();
        // A part of a run still going, a shard without its manifest, and a
        // part in another partition named by nobody.
        put(&store, &job.part_key(2)).await;
        let shard = ShardOutput::new("raw", h, h + 60 * m, 0, 2);
        put(&store, &shard.part_key()).await;
        put(
            &store,
            &JobOutput::new("raw", h + 60 * m, h + 120 * m).part_key(0),
        )
        .await;
        let seen = predictions_parts(&store, h, h + 120 * m).await.unwrap();
        assert_eq!(seen, named);
        // A second window of the hour, with a named part that is gone and a
        // manifest that does not parse: the union of what is there.
        let quarter = JobOutput::new("raw", h + 15 * m, h + 30 * m);
        put(&store, &quarter.part_key(0)).await;
        let q = [quarter.part_key(0), quarter.part_key(1)];
        quarter.finish(&store, 2, &manifest(2, &q)).await.unwrap();
        store
            .put(
                "predictions/date=2024-03-05/hour=09/manifest-junk.json",
                b"{".to_vec(),
            )
            .await
            .unwrap();
        let p = PredictionsPartition::list(&store, h).await.unwrap();
        assert_eq!(p.manifest_keys().len(), 3);
        assert_eq!(p.manifests(&store).await.unwrap().len(), 2);
        let mut want = vec![named[0].clone(), named[1].clone(), q[0].clone()];
        want.sort();
        assert_eq!(p.parts(&store).await.unwrap(), want);
    }

    /// A smaller run of a job's window deletes the parts numbered beyond
    /// it, never a shard's; a shard deletes the outputs of other shard
    /// counts, never a job's.
    #[tokio::test]
    async fn finishing_deletes_only_its_own_stale_outputs() {
        let store = Store::open("memory://").unwrap();
        let h = parse_ts("2024-03-05 09:00:00").unwrap();
        let to = h + HOUR_NS;
        let job = JobOutput::new("raw", h, to);
        let two = ShardOutput::new("raw", h, to, 1, 2);
        let quarter = JobOutput::new("raw", h, h + HOUR_NS / 4);
        for k in [
            job.part_key(0),
            job.part_key(1),
            job.part_key(2),
            two.part_key(),
            two.manifest_key(),
            quarter.part_key(3),
        ] {
            put(&store, &k).await;
        }
        job.finish(&store, 1, &manifest(1, &[job.part_key(0)]))
            .await
            .unwrap();
        let listed = store.list("predictions/").await.unwrap();
        assert!(!listed.contains(&job.part_key(1)) && !listed.contains(&job.part_key(2)));
        for k in [job.part_key(0), two.part_key(), quarter.part_key(3)] {
            assert!(listed.contains(&k), "{k}: {listed:?}");
        }
        let one = ShardOutput::new("raw", h, to, 0, 1);
        put(&store, &one.part_key()).await;
        let key = one
            .finish(&store, &manifest(0, &[one.part_key()]))
            .await
            .unwrap();
        let mut want = vec![
            job.part_key(0),
            job.manifest_key(),
            one.part_key(),
            key,
            quarter.part_key(3),
        ];
        want.sort();
        assert_eq!(store.list("predictions/").await.unwrap(), want);
    }
}
