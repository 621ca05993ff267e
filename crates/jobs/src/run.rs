//! Running a job: one window `[start, end)`, its models in tasks of about
//! `batch_size`, each task with retries, outputs keyed so that a rerun
//! overwrites instead of duplicating, the manifest last.
//!
//! # Outputs
//! For a job of mode `raw` and window length `W` (e.g. `1h`) starting at
//! hour `date=D/hour=H`:
//!
//! ```text
//! predictions/date=D/hour=H/part-raw-W-<task>.parquet   TS, Device, Tag, Val, Prediction, Score
//! predictions/date=D/hour=H/manifest-raw-W.json         written last: job, window, parts, counts
//! logs/<job-id>/task-<task>.log                         what each task did, every attempt
//! logs/<job-id>/job.log                                 the job's summary
//! ```
//!
//! The names derive from the window and the task number only, so scoring
//! the same window again (a retry, a backfill) overwrites the same objects;
//! parts numbered beyond the new run's tasks are deleted before the
//! manifest is written. A reader should trust a partition's parts only as
//! listed in its manifest.
//!
//! # Planning, map tasks, score tasks, finalizing: any process, any host
//! A job goes through four leased steps (see [`crate::db`]), each of
//! which any runner, in `serve` or in a `fleetscore worker` on another
//! host, may take:
//!
//! 1. **Plan**: list the window's raw objects and read only their TS,
//!    Device and Tag columns (not the values) for the window's pairs; cut
//!    the units into score tasks and the raw row groups into map tasks of
//!    about 400k rows; stage the plan in the store
//!    (`staging/<job>/<plan>/plan.json`: each score task's pairs and their
//!    models' inputs, each map task's row groups). Each task record names
//!    its plan, and each plan has its own folder, so a planner that lost
//!    its lease, or a slow map task of an earlier plan, cannot overwrite
//!    what the recorded plan's tasks read.
//! 2. **Map tasks**: each reads its row groups, keeps the window's
//!    readings of raw-input pairs, cuts them by score task, and writes
//!    them as one object, `staging/<job>/<plan>/map-<m>.bin` (one section per
//!    score task; see `stage.rs`). Several workers read one window
//!    together this way.
//! 3. **Score tasks**, once every map task has succeeded: read the task's
//!    section of each map output (ranged reads; from memory for the maps
//!    this process ran), score, write its part, record its counts and
//!    failed models. A failed attempt is queued again after a backoff
//!    until `max_retries`; a task whose worker vanished is leased again
//!    when its lease expires. A map task that fails its last attempt
//!    fails the job, and its score tasks are cancelled.
//! 4. **Finalize**: once every task has ended, delete stale parts, write
//!    the manifest, record the outcome, delete the staged inputs.
//!
//! A task run twice (a slow worker whose lease expired) writes the same
//! part under the same key, so predictions are never duplicated, and only
//! the lease holder's record counts.
//!
//! # Units, input modes and failures
//! The job's units are the `(device, tag)` pairs that have a live model,
//! readings, or (for window-input models) windows in the window (narrowed
//! by the job's selection), sorted, and cut into tasks of `batch_size`.
//! A pair's model (its own, else the fallback `(*, tag)`) says what it
//! takes as rows, from its registry metadata: `raw`, each reading's value
//! (the reference job), or `window`, each window of its size starting in
//! the job's window, as a row of its named features read from
//! `windows/size=…/` (`std` of a one-reading window counts as 0). Window
//! rows are written with `TS` = the window's start and `Val` = its first
//! named feature. Each pair either scores, or fails with a
//! reason: `no_model` (readings but no model, not even a `(*, tag)`
//! fallback), `no_data` (a model but no readings in the window),
//! `feature_mismatch`, `evaluation`. The job fails when more pairs fail than
//! `max_failed_models` allows, or when a task still errs (say, the store
//! is down) after `max_retries` retries with exponential backoff.
//!
//! # A window without readings
//! A window that holds no readings (nor, for window-input models, windows)
//! for any of the job's pairs is no failure of its models: the job ends
//! `skipped`, its reason [`no_readings`], with no failed models and
//! nothing written to `predictions/` (an earlier run's outputs stay).
//! Planning sees it when no raw row group may hold a reading of the window
//! and no window-input pair has windows: it plans no task, and finalizing
//! skips the job. Otherwise (row groups whose time span touches the
//! window, but whose readings all lie outside it or belong to pairs the job
//! does not take) each score task that finds nothing of its own asks
//! whether the map tasks found anything at all; if not, it writes no part
//! and records no `no_data` failures, and finalizing skips the job when no
//! task wrote a part. `no_data` stays the reason of a model whose device
//! is silent while others report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use fleetscore_codecs::ParquetMetaData;
use fleetscore_codecs::{
    decode_parquet_footer, merge_ranges, predictions_parquet_bytes, read_batches_parquet_bytes,
    read_readings_parquet_bytes, read_readings_parquet_sparse, row_group_ranges, scan_ranges,
    scan_raw_parquet_sparse, window_row_groups, PredictionColumns, Readings, SparseObject,
    FOOTER_GUESS,
};
use fleetscore_core::format_ts;
use fleetscore_models::Pack;
use fleetscore_store::{hour_partition, Listed, ModelInput, Registry, Store, StoreError, HOUR_NS};
use fleetscore_stream::{windows_from_record_batch, Window};
use futures::stream::{self, StreamExt, TryStreamExt};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::db::{FailureRecord, JobRecord, JobState, JobStore, TaskRecord, TASK_MAP};
use crate::schedule::Clock;
use crate::stage::{JobPlan, MapPiece, PlanUnit, Section, SectionKey};
use crate::FailureReason;

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Steps (tasks) run at the same time by this runner.
    pub parallel_tasks: usize,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// How long a lease lasts without renewal (renewed every third of it):
    /// how soon another process takes over the work of one that vanished.
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            parallel_tasks: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            retry_backoff: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// What this process staged or read of its jobs, kept in memory so it
/// need not read it back: job records and plans by job, map outputs by
/// (job, map), map headers (section offsets) by (job, map).
#[derive(Default)]
struct StagedCache {
    jobs: HashMap<i64, JobRecord>,
    plans: HashMap<i64, Arc<JobPlan>>,
    maps: HashMap<(i64, u32), Arc<MapOut>>,
    headers: HashMap<(i64, u32), (String, Vec<u8>)>,
}

/// A map task's output in memory: one section per score task.
struct MapOut {
    plan_id: String,
    sections: Vec<Section>,
}

/// Runs jobs from a job store against an object store: in `serve` and the
/// CLI until nothing is left ([`Runner::run_queued`]), or as a worker
/// until stopped ([`Runner::work`]).
#[derive(Clone)]
pub struct Runner {
    db: Arc<dyn JobStore>,
    store: Store,
    registry: Registry,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
    owner: String,
    /// What this process staged or read (see [`StagedCache`]).
    staged: Arc<std::sync::Mutex<StagedCache>>,
    /// The last model pack loaded.
    pack: Arc<tokio::sync::Mutex<Option<Arc<Pack>>>>,
    /// Tasks leased right now, to hand back on a stop.
    held: Arc<std::sync::Mutex<Vec<(i64, u32)>>>,
    /// Jobs this runner ran tasks of since it last tried to finalize them.
    ran: Arc<std::sync::Mutex<BTreeSet<i64>>>,
    /// Jobs this runner finalized (for [`Runner::run_queued`]'s answer).
    finished: Arc<std::sync::Mutex<Vec<i64>>>,
    /// Announcements of new work (see [`crate::db::listen_for_work`]):
    /// an idle worker wakes at each instead of waiting for its poll.
    wake: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where the record of each job this runner ends goes (see
    /// [`Runner::with_reports`]).
    reports: Option<tokio::sync::mpsc::UnboundedSender<JobRecord>>,
}

/// The reason of a job skipped because its window held no readings for
/// any of its `models` pairs (see the module docs); starts with
/// `no readings in the window`.
pub fn no_readings(job: i64, models: u64) -> String {
    let whose = match models {
        0 => String::new(),
        1 => " for its model".to_string(),
        n => format!(" for any of its {n} models"),
    };
    format!(
        "no readings in the window{whose}: nothing to score; `fleetscore jobs retry {job}` \
         scores it if readings for it arrive later"
    )
}

/// The manifest of one job's output partition.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Manifest {
    /// `fleetscore-predictions-manifest`.
    pub format: String,
    /// The job that wrote it.
    pub job: i64,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end, RFC 3339.
    pub window_end: String,
    /// Input mode.
    pub mode: String,
    /// The parts, in task order.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
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

/// The output folder and name stem of a job: `predictions/date=…/hour=…`
/// and `raw-1h` (`raw-15m-091500` for a window starting at 09:15:00, not
/// on the hour, so the windows of one hour keep apart).
pub fn output_prefix(job: &JobRecord) -> (String, String) {
    (
        format!("predictions/{}", hour_partition(job.window_start)),
        window_stem(&job.mode, job.window_start, job.window_end),
    )
}

/// `MODE-W`, or `MODE-W-HHMMSS` for a window not starting on the hour.
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

/// The keys of the raw objects of the hours `[from, to)` touches, sorted.
async fn raw_keys(store: &Store, from: i64, to: i64) -> anyhow::Result<Vec<String>> {
    Ok(raw_objects_of(store, from, to)
        .await?
        .into_iter()
        .map(|l| l.key)
        .collect())
}

/// [`raw_keys`] with each object's length and version.
pub async fn raw_objects_of(store: &Store, from: i64, to: i64) -> anyhow::Result<Vec<Listed>> {
    let mut keys = Vec::new();
    // No reading lies before MIN_TS; rounding an earlier `from` down to
    // its hour would overflow.
    let mut hour = from.max(fleetscore_core::MIN_TS).div_euclid(HOUR_NS) * HOUR_NS;
    while hour < to {
        let prefix = format!("raw/{}/", hour_partition(hour));
        keys.extend(
            store
                .list_sizes(&prefix)
                .await?
                .into_iter()
                .filter(|l| l.key.ends_with(".parquet")),
        );
        // The last hour an i64 holds ends the range rather than wrapping.
        let Some(next) = hour.checked_add(HOUR_NS) else {
            break;
        };
        hour = next;
    }
    Ok(keys)
}

/// A raw object of a job's window, as planning sees it.
struct RawInWindow {
    listed: Listed,
    /// Its row groups that may hold readings of the window, with their
    /// row counts (see [`window_row_groups`]).
    groups: Vec<(usize, u64)>,
    /// Its pairs with readings in the window, if asked for (see
    /// [`scan_raw_parquet_sparse`]).
    keys: Vec<(String, String)>,
}

/// The window's raw objects with row groups that may hold its readings,
/// in key order; with `scan`, also the pairs they hold readings of. Only
/// the objects' footers are fetched, by range, and with `scan` the TS,
/// Device and Tag column chunks of those objects: never the values.
async fn raw_in_window(
    store: &Store,
    from: i64,
    to: i64,
    scan: bool,
) -> anyhow::Result<Vec<RawInWindow>> {
    let objects = raw_objects_of(store, from, to).await?;
    let found: Vec<Option<RawInWindow>> = stream::iter(objects)
        .map(|listed| {
            let store = store.clone();
            async move {
                let (key, size) = (listed.key.clone(), listed.size);
                let version = listed.version.as_deref();
                // Gone since it was listed: not part of the window. (Errors
                // name the object.)
                let Some(footer) = read_footer(&store, &key, size, version).await? else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let groups = window_row_groups(&footer.meta, &key, from, to)?;
                if groups.is_empty() || !scan {
                    return Ok(Some(RawInWindow {
                        listed,
                        groups,
                        keys: Vec::new(),
                    }));
                }
                let ranges = scan_ranges(&footer.meta, size, &key)?;
                let Some(object) =
                    fetch_ranges(&store, &key, size, version, &footer, &ranges).await?
                else {
                    return Ok(None);
                };
                let meta = footer.meta;
                let keys = tokio::task::spawn_blocking(move || {
                    scan_raw_parquet_sparse(object, meta, &key, from, to)
                })
                .await??
                .keys;
                Ok(Some(RawInWindow {
                    listed,
                    groups,
                    keys,
                }))
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .flatten()
        .filter(|r| !r.groups.is_empty())
        .collect())
}

/// Byte ranges of a raw object at most this far apart are fetched in one
/// request.
const COALESCE_GAP: u64 = 1 << 20;

/// A raw object's footer: its Parquet metadata, and the bytes read from its
/// end to find it (which may hold some column chunks too).
struct Footer {
    meta: Arc<ParquetMetaData>,
    tail: (u64, bytes::Bytes),
}

/// The footer of a raw object of `size` bytes, from a ranged read of its
/// end (two when its metadata is longer than [`FOOTER_GUESS`]); `None` if
/// the object is gone.
async fn read_footer(
    store: &Store,
    key: &str,
    size: u64,
    version: Option<&str>,
) -> anyhow::Result<Option<Footer>> {
    anyhow::ensure!(
        size >= 12,
        "{key}: {size} bytes are too short for a Parquet file"
    );
    let mut from = size.saturating_sub(FOOTER_GUESS);
    loop {
        let Some(tail) = store
            .get_ranges_if(key, std::slice::from_ref(&(from..size)), version)
            .await?
            .and_then(|mut parts| parts.pop())
        else {
            return Ok(None);
        };
        anyhow::ensure!(
            tail.len() as u64 == size - from,
            "{key}: it has {} bytes, not {size}",
            from + tail.len() as u64
        );
        match decode_parquet_footer(&tail, size, key) {
            Ok(meta) => {
                return Ok(Some(Footer {
                    meta,
                    tail: (from, tail),
                }))
            }
            // Longer metadata: read it whole, once.
            Err(Ok(need)) if size - need < from => from = size - need,
            Err(Ok(n)) => anyhow::bail!("{key}: its footer names {n} bytes of metadata, then more"),
            Err(Err(e)) => return Err(e.into()),
        }
    }
}

/// Byte `ranges` of an object of `size` bytes as a [`SparseObject`], with
/// its footer's tail: ranges the tail holds are not fetched again, the
/// others are (those close together in one request). `None` if the object
/// is gone.
async fn fetch_ranges(
    store: &Store,
    key: &str,
    size: u64,
    version: Option<&str>,
    footer: &Footer,
    ranges: &[std::ops::Range<u64>],
) -> anyhow::Result<Option<SparseObject>> {
    let (tail_start, tail) = &footer.tail;
    // Ranges close together are one request (the bytes between them are
    // read too), as object_store's own `get_ranges` does.
    let missing = merge_ranges(
        ranges
            .iter()
            .filter(|r| r.start < *tail_start)
            .cloned()
            .collect(),
        COALESCE_GAP,
    );
    let mut known = vec![(*tail_start, tail.clone())];
    if !missing.is_empty() {
        let Some(parts) = store.get_ranges_if(key, &missing, version).await? else {
            return Ok(None);
        };
        for (r, b) in missing.iter().zip(parts) {
            anyhow::ensure!(
                b.len() as u64 >= r.end - r.start,
                "{key}: bytes {}..{} are not all there",
                r.start,
                r.end
            );
            known.push((r.start, b));
        }
    }
    Ok(Some(SparseObject::new(size, known)))
}

/// Reads a map task's row groups of one raw object by ranged reads: the
/// object's footer, then those row groups' column chunks (the rest of the
/// object is not fetched).
async fn read_piece(store: &Store, piece: MapPiece) -> anyhow::Result<Readings> {
    let key = piece.key.as_str();
    let gone = || {
        anyhow::anyhow!(
            "the raw object {key} is gone from the store {} since the job was planned; retry \
             the job to plan it again",
            store.url()
        )
    };
    // What the object says does not fit what was planned (or it was
    // replaced since); a store that fails to answer says so itself (and
    // the task is retried).
    let changed = |why: anyhow::Error| {
        if let Some(e) = why.downcast_ref::<StoreError>() {
            if !matches!(e, StoreError::Changed { .. }) {
                return why;
            }
        }
        anyhow::anyhow!(
            "the raw object {key} in the store {} changed since the job was planned ({why:#}); \
             retry the job to plan it again",
            store.url()
        )
    };
    let version = piece.version.as_deref();
    let footer = read_footer(store, key, piece.size, version)
        .await
        .map_err(changed)?
        .ok_or_else(gone)?;
    let ranges = row_group_ranges(&footer.meta, piece.size, &piece.row_groups, key)
        .map_err(|e| changed(e.into()))?;
    let object = fetch_ranges(store, key, piece.size, version, &footer, &ranges)
        .await
        .map_err(changed)?
        .ok_or_else(gone)?;
    let name = piece.key.clone();
    let meta = footer.meta;
    Ok(tokio::task::spawn_blocking(move || {
        read_readings_parquet_sparse(object, meta, &name, &piece.row_groups)
    })
    .await??)
}

/// Deletes what a job staged (`staging/<job>/`: its plan and its map
/// outputs): for a cancelled job, which no runner finalizes. Returns the
/// number of objects deleted.
pub async fn drop_staging(store: &Store, job: i64) -> anyhow::Result<usize> {
    let keys = store.list(&staging_prefix(job)).await?;
    for k in &keys {
        store.delete(k).await?;
    }
    Ok(keys.len())
}

/// The readings of `[from, to)` from the store's raw/ partitions.
pub async fn load_raw(store: &Store, from: i64, to: i64) -> anyhow::Result<Readings> {
    let keys = raw_keys(store, from, to).await?;
    let files: Vec<Readings> = stream::iter(keys)
        .map(|key| {
            // Owned, so the future is Send for any caller.
            let store = store.clone();
            async move {
                match store.get(&key).await? {
                    None => Ok::<_, anyhow::Error>(None),
                    Some(data) => Ok(Some(
                        tokio::task::spawn_blocking(move || {
                            read_readings_parquet_bytes(data, &key)
                        })
                        .await??,
                    )),
                }
            }
        })
        .buffered(8)
        .try_collect::<Vec<Option<Readings>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut files = files;
    for f in &mut files {
        f.retain_time(Some(from), Some(to));
    }
    let refs: Vec<&Readings> = files.iter().collect();
    let out = crate::stage::concat(&refs);
    Ok(out)
}

/// A window-input pair of a task: its model's features and its windows.
#[derive(Debug, Clone)]
struct WindowUnit {
    device: String,
    tag: String,
    features: Vec<String>,
    windows: Vec<Window>,
}

/// The windows of `size` starting in `[from, to)`, by (device, tag), in
/// start order, from the store's `windows/size=SIZE/` partitions.
pub async fn load_windows(
    store: &Store,
    size: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<BTreeMap<(String, String), Vec<Window>>> {
    let mut out: BTreeMap<(String, String), Vec<Window>> = BTreeMap::new();
    // No reading lies before MIN_TS; rounding an earlier `from` down to
    // its hour would overflow.
    let mut hour = from.max(fleetscore_core::MIN_TS).div_euclid(HOUR_NS) * HOUR_NS;
    while hour < to {
        let prefix = format!("windows/size={size}/{}/", hour_partition(hour));
        for key in store.list(&prefix).await? {
            if !key.ends_with(".parquet") {
                continue;
            }
            let Some(data) = store.get(&key).await? else {
                continue;
            };
            let k = key.clone();
            let ws = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Window>> {
                let mut all = Vec::new();
                for b in read_batches_parquet_bytes(data, &k)? {
                    all.extend(
                        windows_from_record_batch(&b).map_err(|e| anyhow::anyhow!("{k}: {e}"))?,
                    );
                }
                Ok(all)
            })
            .await??;
            for w in ws {
                if w.start >= from && w.start < to {
                    out.entry((w.device.clone(), w.tag.clone()))
                        .or_default()
                        .push(w);
                }
            }
        }
        let Some(next) = hour.checked_add(HOUR_NS) else {
            break;
        };
        hour = next;
    }
    for ws in out.values_mut() {
        ws.sort_by_key(|w| w.start);
    }
    Ok(out)
}

/// One window feature by name.
fn feature(w: &Window, name: &str) -> f64 {
    match name {
        "count" => w.count as f64,
        "sum" => w.sum,
        "mean" => w.mean,
        "min" => w.min,
        "max" => w.max,
        // Sample std of one reading: 0, as a model needs a number.
        "std" => w.std.unwrap_or(0.0),
        "first" => w.first,
        _ => w.last,
    }
}

/// What one call to [`Runner::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Planned a job into tasks (or failed it while planning).
    Planned(i64),
    /// Ran one attempt of a task of this job.
    Task(i64),
    /// Finalized this job (manifest, outcome).
    Finalized(i64),
    /// Found nothing to do.
    Idle,
}

/// A score task's share of its job's plan.
struct TaskPlan {
    job: i64,
    idx: u32,
    /// The model pack generation the plan was made with.
    generation: u64,
    /// The job plan it belongs to (see [`JobPlan::plan_id`]).
    plan_id: String,
    /// The job's score tasks and map tasks: the task's readings are its
    /// section of each map task's output.
    tasks: u32,
    maps: u32,
    /// The task's pairs, in order, with their model's input.
    units: Vec<PlanUnit>,
    /// Whether planning found windows for any window-input pair of the job.
    has_windows: bool,
}

fn staging_prefix(job: i64) -> String {
    format!("staging/{job}/")
}

/// A plan's objects live under `staging/<job>/<plan>/`: each plan has its
/// own names, so nothing of another plan of the job (a planner that lost
/// its lease, a slow map task of an earlier run) overwrites them.
fn plan_key(job: i64, plan: &str) -> String {
    format!("staging/{job}/{plan}/plan.json")
}

fn map_key(job: i64, plan: &str, m: u32) -> String {
    format!("staging/{job}/{plan}/map-{m:05}.bin")
}

/// A new plan's id, usable as one segment of an object key: the planner
/// and the time (ns).
fn new_plan_id(owner: &str) -> String {
    let owner: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{owner}-{}", wall_ns())
}

/// Rows a map task reads at least (whole row groups, so often more).
const MAP_ROWS: u64 = 400_000;
/// Map tasks a job is cut into at most.
const MAX_MAPS: u64 = 64;

/// The wall clock, ns: leases are compared across hosts.
fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A name for this process's leases: host, pid and a counter.
fn owner_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Renews a lease every third of its length until dropped; `lost` turns
/// true if the store says the lease is gone.
struct Renewer {
    handle: tokio::task::JoinHandle<()>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Renewer {
    fn start(
        db: Arc<dyn JobStore>,
        lease: Duration,
        owner: String,
        task: Option<u32>,
        job: i64,
    ) -> Renewer {
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let every = (lease / 3).max(Duration::from_millis(10));
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let until = wall_ns() + lease.as_nanos() as i64;
                let kept = match task {
                    Some(idx) => db.renew_task(job, idx, &owner, until).await,
                    None => db.renew_job(job, &owner, until).await,
                };
                match kept {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job, task = ?task, "lease lost: another process took over");
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    // The store is down: keep trying; the lease may still
                    // hold when it is back.
                    Err(e) => tracing::warn!(job, task = ?task, "renewing a lease failed: {e}"),
                }
            }
        });
        Renewer { handle, lost }
    }

    fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Retries a job-store call a few times (a database restarting), then
/// gives up with its error.
async fn persist<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::db::Result<T>>,
{
    let mut wait = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < 8 => {
                tracing::warn!("{what}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
        }
    }
}

impl Runner {
    /// A runner.
    pub fn new(
        db: Arc<dyn JobStore>,
        store: Store,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
    ) -> Runner {
        Runner {
            db,
            registry: Registry::new(store.clone()),
            store,
            clock,
            config,
            owner: owner_name(),
            staged: Arc::new(std::sync::Mutex::new(StagedCache::default())),
            pack: Arc::new(tokio::sync::Mutex::new(None)),
            held: Arc::new(std::sync::Mutex::new(Vec::new())),
            ran: Arc::new(std::sync::Mutex::new(BTreeSet::new())),
            finished: Arc::new(std::sync::Mutex::new(Vec::new())),
            wake: None,
            reports: None,
        }
    }

    /// Sends the record of every job this runner ends (finalized, failed
    /// or skipped while planning) to `reports` as it is recorded: what
    /// `serve` prints a line for.
    pub fn with_reports(
        mut self,
        reports: tokio::sync::mpsc::UnboundedSender<JobRecord>,
    ) -> Runner {
        self.reports = Some(reports);
        self
    }

    /// Reports a job this runner ended (see [`Runner::with_reports`]).
    fn report(&self, job: &JobRecord) {
        if let Some(tx) = &self.reports {
            // Nobody listening any more (a server stopping): nothing to say.
            let _ = tx.send(job.clone());
        }
    }

    /// Wakes an idle [`Runner::work`] at each change of `wake` (the job
    /// store's announcements of new work) instead of only every
    /// `config.poll`.
    pub fn with_wake(mut self, wake: tokio::sync::watch::Receiver<u64>) -> Runner {
        self.wake = Some(wake);
        self
    }

    /// The job store.
    pub fn db(&self) -> &Arc<dyn JobStore> {
        &self.db
    }

    /// The name this runner's leases go by.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn until(&self) -> i64 {
        wall_ns() + self.config.lease.as_nanos() as i64
    }

    /// Runs queued work (planning, tasks, finalizing) with
    /// `parallel_tasks` slots until nothing is left that this runner can
    /// take; returns the ids of the jobs it finished (finalized, or failed
    /// while planning), oldest first. Tasks leased by other processes are
    /// theirs: a job they still run is not waited for.
    pub async fn run_queued(&self) -> anyhow::Result<Vec<i64>> {
        let mut done = self.slots(None).await?;
        done.sort_unstable();
        done.dedup();
        Ok(done)
    }

    /// Runs one job to its end (claiming it even with other work queued),
    /// waiting for tasks that other processes hold; returns its record.
    pub async fn run_job(&self, id: i64) -> anyhow::Result<JobRecord> {
        self.slots(Some(id)).await?;
        Ok(self.db.job(id).await?)
    }

    /// Works until `stop` turns true, polling every `config.poll` when
    /// idle: `fleetscore worker`. Job-store errors are logged and retried
    /// (a database restart is survived). On stop, a task in progress gets
    /// `grace` to finish, else it is handed back for another worker.
    pub async fn work(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let slots = self.config.parallel_tasks.max(1);
        let mut all = Vec::new();
        for slot in 0..slots {
            let me = self.clone();
            let mut stop = stop.clone();
            let mut wake = me.wake.clone();
            all.push(async move {
                // Staggered, so slots do not poll in step (a stop cuts it short).
                tokio::select! {
                    _ = tokio::time::sleep(me.config.poll * slot as u32 / slots as u32) => {}
                    _ = stop.changed() => {}
                }
                while !*stop.borrow() {
                    // Announcements from now on wake the next idle wait.
                    if let Some(w) = wake.as_mut() {
                        w.borrow_and_update();
                    }
                    let step = me.step_until_stopped(None, &mut stop, grace).await;
                    if let Ok(mut f) = me.finished.lock() {
                        f.clear();
                    }
                    // A stop that came during the step was seen there (its
                    // change consumed): end now, not after a poll.
                    let stopping = *stop.borrow();
                    match step {
                        Ok(Step::Idle) if stopping => {}
                        Ok(Step::Idle) => {
                            let woken = async {
                                let changed = match wake.as_mut() {
                                    Some(w) => w.changed().await.is_ok(),
                                    None => false,
                                };
                                if !changed {
                                    // No announcements (or none any more).
                                    std::future::pending::<()>().await;
                                }
                            };
                            tokio::select! {
                                _ = tokio::time::sleep(me.config.poll) => {}
                                _ = woken => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Ok(_) => {}
                        Err(e) if stopping => tracing::error!("worker: {e:#}"),
                        Err(e) => {
                            tracing::error!("worker: {e:#}; retrying in {:?}", me.config.poll);
                            tokio::select! {
                                _ = tokio::time::sleep(me.config.poll) => {}
                                _ = stop.changed() => {}
                            }
                        }
                    }
                }
            });
        }
        futures::future::join_all(all).await;
        let _ = stop.borrow_and_update();
        Ok(())
    }

    /// One step, but a task in progress when `stop` turns true gets
    /// `grace` to finish before it is handed back.
    async fn step_until_stopped(
        &self,
        only: Option<i64>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) -> anyhow::Result<Step> {
        let mut step = Box::pin(self.step(only));
        tokio::select! {
            r = &mut step => return r,
            _ = stop.changed() => {}
        }
        tracing::info!(?grace, "stopping: letting the current work finish");
        match tokio::time::timeout(grace, &mut step).await {
            Ok(r) => r,
            Err(_) => {
                // Dropping the step stops it; its lease goes back.
                drop(step);
                let held = self.held.lock().map(|h| h.clone()).unwrap_or_default();
                for (job, idx) in held {
                    match self.db.release_task(job, idx, &self.owner).await {
                        Ok(true) => tracing::warn!(job, task = idx, "task handed back unfinished"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            job,
                            task = idx,
                            "handing back a task failed: {e}; its lease expires instead"
                        ),
                    }
                }
                Ok(Step::Idle)
            }
        }
    }

    /// Runs `parallel_tasks` slots of steps until idle (or, with `only`,
    /// until that job has ended). Returns the jobs finished.
    async fn slots(&self, only: Option<i64>) -> anyhow::Result<Vec<i64>> {
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::new(std::sync::Mutex::new(Vec::new()));
        let poll = self.config.poll.min(Duration::from_millis(50));
        let slot = |_: usize| {
            let busy = Arc::clone(&busy);
            let done = Arc::clone(&done);
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                loop {
                    if let Some(id) = only {
                        if self.db.job(id).await?.state.is_final() {
                            return Ok::<_, anyhow::Error>(());
                        }
                    }
                    busy.fetch_add(1, SeqCst);
                    let step = self.step(only).await;
                    let others = busy.fetch_sub(1, SeqCst) - 1;
                    let step = step?;
                    // Jobs finalized in this step (also ahead of a task).
                    let finished: Vec<i64> = self
                        .finished
                        .lock()
                        .map(|mut f| std::mem::take(&mut *f))
                        .unwrap_or_default();
                    if let Ok(mut d) = done.lock() {
                        d.extend(finished);
                    }
                    match step {
                        Step::Planned(id) => {
                            if self.db.job(id).await?.state.is_final() {
                                if let Ok(mut d) = done.lock() {
                                    d.push(id);
                                }
                            }
                        }
                        Step::Finalized(_) | Step::Task(_) => {}
                        Step::Idle => {
                            if only.is_none() && others == 0 {
                                // A retry waiting out its backoff is work
                                // still to do: wait for it.
                                match self.db.next_retry().await? {
                                    Some(at) => {
                                        let wait = (at - wall_ns()).clamp(0, 60_000_000_000);
                                        tokio::time::sleep(
                                            Duration::from_nanos(wait as u64).max(poll),
                                        )
                                        .await;
                                    }
                                    None => return Ok(()),
                                }
                            } else {
                                tokio::time::sleep(poll).await;
                            }
                        }
                    }
                }
            }
        };
        let slots = self.config.parallel_tasks.max(1);
        futures::future::try_join_all((0..slots).map(slot)).await?;
        let out = done.lock().map(|d| d.clone()).unwrap_or_default();
        Ok(out)
    }

    /// Does one unit of work if there is one: runs one attempt of a task
    /// (then finalizes the jobs this runner moved on from, if their tasks
    /// have all ended), else finalizes a job whose tasks have all ended,
    /// else plans a queued job. `only` limits it to one job.
    pub async fn step(&self, only: Option<i64>) -> anyhow::Result<Step> {
        // Tasks first: while a worker has tasks to lease, a step costs two
        // round trips to the job store (lease, record), not three.
        if let Some(task) = self
            .db
            .lease_task(self.clock.now(), wall_ns(), &self.owner, self.until(), only)
            .await?
        {
            let id = task.job_id;
            // The jobs this runner moved on from may have ended: finalize
            // them after this task rather than when it runs out of tasks.
            let left: Vec<i64> = match self.ran.lock() {
                Ok(mut ran) => {
                    let left = ran.iter().copied().filter(|j| *j != id).collect();
                    ran.retain(|j| *j == id);
                    left
                }
                Err(_) => Vec::new(),
            };
            self.evict_ended(Some(id)).await;
            if let Ok(mut h) = self.held.lock() {
                h.push((task.job_id, task.idx));
            }
            let key = (task.job_id, task.idx);
            let r = self.run_task(task).await;
            if let Ok(mut h) = self.held.lock() {
                h.retain(|k| *k != key);
            }
            if let Ok(mut ran) = self.ran.lock() {
                ran.insert(id);
            }
            r?;
            // After the task (which holds a lease that only its run renews).
            for j in left {
                if let Some(job) = self
                    .db
                    .claim_finalize(wall_ns(), &self.owner, self.until(), Some(j))
                    .await?
                {
                    self.finalize(job).await?;
                }
            }
            return Ok(Step::Task(id));
        }
        // No task: ask once whether a claim could find anything, rather
        // than trying both (while other runners finish a job's tasks,
        // neither does).
        let idle = self.db.idle_work(wall_ns(), only).await?;
        if idle.finalize {
            if let Some(job) = self
                .db
                .claim_finalize(wall_ns(), &self.owner, self.until(), only)
                .await?
            {
                let id = job.id;
                self.finalize(job).await?;
                return Ok(Step::Finalized(id));
            }
        }
        if idle.plan {
            if let Some(job) = self
                .db
                .claim_job(self.clock.now(), wall_ns(), &self.owner, self.until(), only)
                .await?
            {
                let id = job.id;
                self.plan(job).await?;
                return Ok(Step::Planned(id));
            }
        }
        self.evict_ended(None).await;
        Ok(Step::Idle)
    }

    /// Plans a claimed job; a failure fails the job (an `Err` means the job
    /// store itself failed).
    async fn plan(&self, job: JobRecord) -> anyhow::Result<()> {
        let id = job.id;
        let renew = Renewer::start(
            Arc::clone(&self.db),
            self.config.lease,
            self.owner.clone(),
            None,
            id,
        );
        match self.plan_inner(job.clone(), &renew).await {
            Ok(None) => {
                tracing::warn!(
                    job = id,
                    "planning lost its lease; another process plans it"
                );
                self.drop_staged(id);
                Ok(())
            }
            Ok(Some((job, tasks))) => {
                // Renewing stops before the plan ends the lease.
                drop(renew);
                let owner = self.owner.clone();
                let planned = persist("recording the plan", || {
                    self.db.plan_job(&job, &tasks, &owner)
                })
                .await?;
                if !planned {
                    tracing::warn!(
                        job = id,
                        "planning lost its lease; another process plans it"
                    );
                    self.drop_staged(id);
                }
                Ok(())
            }
            Err(e) => {
                drop(renew);
                tracing::error!(job = id, "job failed: {e:#}");
                self.drop_staged(id);
                let mut j = job;
                j.state = JobState::Failed;
                j.error = Some(format!("{e:#}"));
                j.finished_at = Some(self.clock.now());
                let owner = self.owner.clone();
                let recorded =
                    persist("recording a failed job", || self.db.finish_job(&j, &owner)).await?;
                if recorded {
                    self.write_job_log(&j).await;
                    self.report(&j);
                }
                Ok(())
            }
        }
    }

    /// Forgets what this process keeps of jobs (other than `current`) that
    /// have ended: another process may have finalized them.
    async fn evict_ended(&self, current: Option<i64>) {
        let jobs: BTreeSet<i64> = match self.staged.lock() {
            Ok(c) => c
                .plans
                .keys()
                .copied()
                .chain(c.jobs.keys().copied())
                .chain(c.maps.keys().map(|k| k.0))
                .chain(c.headers.keys().map(|k| k.0))
                .filter(|j| Some(*j) != current)
                .collect(),
            Err(_) => return,
        };
        for j in jobs {
            match self.db.job(j).await {
                Ok(job) if job.state == JobState::Running => {}
                // Ended, gone, or the store does not answer: read it
                // again if it is still needed.
                _ => self.drop_staged(j),
            }
        }
    }

    fn drop_staged(&self, job: i64) {
        if let Ok(mut s) = self.staged.lock() {
            s.plans.remove(&job);
            s.jobs.remove(&job);
            s.maps.retain(|(j, _), _| *j != job);
            s.headers.retain(|(j, _), _| *j != job);
        }
    }

    /// Cuts the job into score tasks and map tasks and stages their plans
    /// in the store; returns the job's figures and its tasks, for the
    /// caller to record.
    ///
    /// Planning reads the model index and the footers of the window's raw
    /// objects (their row groups, and the time span of each from its
    /// statistics). Its pairs are those with a live model (and, for
    /// window-input models, those with windows); the readings are read by
    /// the map tasks, which any worker runs, each over some of the raw row
    /// groups, and which also find the pairs that have readings but no
    /// model of their own (see [`JobPlan::route`]). Only when there are
    /// fallback models (`*/tag`), which score pairs the index does not
    /// name, does planning read the window's pairs too (the TS, Device and
    /// Tag columns, never the values), to cut them into tasks.
    async fn plan_inner(
        &self,
        mut job: JobRecord,
        renew: &Renewer,
    ) -> anyhow::Result<Option<(JobRecord, Vec<TaskRecord>)>> {
        anyhow::ensure!(
            job.mode == "raw",
            "input mode {:?} is not supported by this runner (use raw)",
            job.mode
        );
        let t = Instant::now();
        let index = self.registry.index_shared().await?;
        let generation = index.generation;
        // Each live model's input, by (device, tag), borrowed from the
        // index (planning copies no pair it does not keep).
        let inputs: FxHashMap<(&str, &str), ModelInput> = index
            .models
            .iter()
            .filter_map(|(k, e)| Some((k.split_once('/')?, ModelInput::of(e.live_version()?))))
            .collect();
        let input_of = |d: &str, t: &str| -> ModelInput {
            inputs
                .get(&(d, t))
                .or_else(|| inputs.get(&("*", t)))
                .cloned()
                .unwrap_or_default()
        };
        let (from, to) = (job.window_start, job.window_end);
        // A fallback model (`*/tag`) scores pairs the index does not name:
        // then planning reads the window's pairs (the TS, Device and Tag
        // columns), to cut them into tasks. Otherwise it reads no readings:
        // the map tasks find the pairs without a model.
        let fallbacks = inputs.keys().any(|(d, _)| *d == "*");
        let raw = raw_in_window(&self.store, from, to, fallbacks).await?;
        let read_ms = t.elapsed().as_millis() as u64;
        // Pairs with windows, of every size a window-input model needs.
        let mut sizes: BTreeSet<String> = BTreeSet::new();
        for i in inputs.values() {
            if let ModelInput::Window { size, .. } = i {
                sizes.insert(size.clone());
            }
        }
        let mut windowed: BTreeSet<(String, String)> = BTreeSet::new();
        for size in &sizes {
            let w = load_windows(&self.store, size, from, to).await?;
            for (d, t) in w.into_keys() {
                if matches!(input_of(&d, &t), ModelInput::Window { size: s, .. } if &s == size) {
                    windowed.insert((d, t));
                }
            }
        }

        // Units: pairs with a live model, readings or windows, selected, sorted.
        let selection: Option<BTreeSet<&str>> = job
            .selection
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());
        let selected = |d: &str, t: &str| {
            selection
                .as_ref()
                .is_none_or(|s| s.contains(format!("{d}/{t}").as_str()))
        };
        let mut units: Vec<(&str, &str)> = inputs
            .keys()
            .copied()
            .filter(|&(d, t)| d != "*" && selected(d, t))
            .collect();
        for (d, t) in raw.iter().flat_map(|r| &r.keys).chain(&windowed) {
            if selected(d, t) {
                units.push((d, t));
            }
        }
        units.sort_unstable();
        units.dedup();
        // Map tasks read the raw readings if any pair of the job may take
        // them: a raw-input model's, or one the map tasks find with
        // readings but no model of its own (any pair, or a selected one
        // the units do not hold).
        let any_raw = units.iter().any(|(d, t)| input_of(d, t) == ModelInput::Raw)
            || selection.as_ref().is_none_or(|s| s.len() > units.len());
        let any_raw = any_raw && !raw.is_empty();
        let has_windows = windowed.iter().any(|(d, t)| selected(d, t));
        let batch = job.batch_size.max(1) as usize;
        // No row group may hold a reading of the window that a pair of the
        // job takes, and no pair has windows: nothing to score, no task
        // (finalizing skips the job).
        // A window-input pair whose windows are not written yet, while
        // raw/ holds row groups of the window: not an empty window (its
        // score task records `no_data`; see `attempt_staged`).
        let unwindowed =
            !raw.is_empty() && units.iter().any(|(d, t)| input_of(d, t) != ModelInput::Raw);
        let mut chunks: Vec<&[(&str, &str)]> = if any_raw || has_windows || unwindowed {
            units.chunks(batch).collect()
        } else {
            Vec::new()
        };
        if chunks.is_empty() && any_raw {
            // A task for the pairs the map tasks find.
            chunks.push(&[]);
        }
        let n_tasks = chunks.len() as u32;
        let now = self.clock.now();
        let mut tasks: Vec<TaskRecord> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| TaskRecord {
                job_id: job.id,
                idx: i as u32,
                state: "queued".into(),
                first_key: c
                    .first()
                    .map(|(d, t)| format!("{d}/{t}"))
                    .unwrap_or_default(),
                last_key: c
                    .last()
                    .map(|(d, t)| format!("{d}/{t}"))
                    .unwrap_or_default(),
                n_keys: c.len() as u64,
                queued_at: now,
                ..TaskRecord::default()
            })
            .collect();

        // Map tasks: the raw row groups that may hold readings of the
        // window, in order, in shares of about MAP_ROWS (no more than
        // MAX_MAPS).
        let total: u64 = raw.iter().flat_map(|r| &r.groups).map(|&(_, n)| n).sum();
        let share = MAP_ROWS.max(total.div_ceil(MAX_MAPS));
        let mut maps: Vec<Vec<MapPiece>> = Vec::new();
        let mut rows = share;
        for RawInWindow { listed, groups, .. } in raw.iter().filter(|_| any_raw) {
            let key = &listed.key;
            for &(g, n) in groups {
                if rows >= share {
                    maps.push(Vec::new());
                    rows = 0;
                }
                let pieces = maps.last_mut().expect("pushed above");
                match pieces.last_mut() {
                    Some(p) if &p.key == key => p.row_groups.push(g),
                    _ => pieces.push(MapPiece {
                        key: key.clone(),
                        row_groups: vec![g],
                        size: listed.size,
                        version: listed.version.clone(),
                    }),
                }
                rows += n;
            }
        }
        let plan_id = new_plan_id(&self.owner);
        let plan = JobPlan {
            format: "fleetscore-job-plan".into(),
            job: job.id,
            plan_id: plan_id.clone(),
            window: (from, to),
            generation,
            tasks: n_tasks,
            task_units: chunks
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|(d, t)| PlanUnit {
                            device: d.to_string(),
                            tag: t.to_string(),
                            window: match input_of(d, t) {
                                ModelInput::Raw => None,
                                ModelInput::Window { size, features } => Some((size, features)),
                            },
                        })
                        .collect()
                })
                .collect(),
            maps,
            window_tags: inputs
                .iter()
                .filter(|(_, i)| matches!(i, ModelInput::Window { .. }))
                .filter(|((d, _), _)| *d == "*")
                .map(|((_, t), _)| t.to_string())
                .collect(),
            has_windows,
        };
        for m in 0..plan.maps.len() {
            let (first_key, last_key, n_keys) = plan.map_summary(m).expect("a map has pieces");
            tasks.push(TaskRecord {
                job_id: job.id,
                idx: n_tasks + m as u32,
                kind: TASK_MAP.into(),
                state: "queued".into(),
                first_key,
                last_key,
                n_keys,
                queued_at: now,
                ..TaskRecord::default()
            });
        }
        for t in &mut tasks {
            t.plan_id = Some(plan_id.clone());
        }
        let cut_ms = t.elapsed().as_millis() as u64 - read_ms;
        // Stage the plan, so any worker can run any task; not if the job
        // went to another planner meanwhile. (Were the lease lost during
        // the write, the plan's name is its own: no task record names it,
        // so no task reads it. It is deleted with the job's staging, or,
        // should the write land after that, left behind.)
        if renew.lost() {
            return Ok(None);
        }
        self.store
            .put(&plan_key(job.id, &plan_id), serde_json::to_vec(&plan)?)
            .await?;
        if let Ok(mut cache) = self.staged.lock() {
            cache.plans.insert(job.id, Arc::new(plan));
        }
        job.load_ms = t.elapsed().as_millis() as u64;
        job.tasks = u64::from(n_tasks);
        // The pairs planned; finalizing counts those scored or failed.
        job.models = units.len() as u64;
        tracing::info!(
            job = job.id,
            tasks = n_tasks,
            maps = tasks.len() - n_tasks as usize,
            models = units.len(),
            read_ms,
            cut_ms,
            stage_ms = job.load_ms - read_ms - cut_ms,
            "job planned"
        );
        if renew.lost() {
            return Ok(None);
        }
        Ok(Some((job, tasks)))
    }

    /// The job plan a task follows: from memory if this process planned or
    /// read it, else from the store; checked against the task.
    async fn job_plan(&self, record: &TaskRecord) -> anyhow::Result<Arc<JobPlan>> {
        let job = record.job_id;
        let fits = |plan: &JobPlan| {
            if record.is_map() {
                let m = record.idx.checked_sub(plan.tasks);
                m.and_then(|m| plan.map_summary(m as usize))
                    == Some((
                        record.first_key.clone(),
                        record.last_key.clone(),
                        record.n_keys,
                    ))
            } else {
                plan.fits_task(
                    record.idx,
                    record.n_keys,
                    &record.first_key,
                    &record.last_key,
                )
            }
        };
        let Some(plan_id) = record.plan_id.as_deref() else {
            anyhow::bail!(
                "task {} of job {job} names no plan (it was planned by an older fleetscore); \
                 retry the job to plan it again",
                record.idx
            );
        };
        let cached = self
            .staged
            .lock()
            .ok()
            .and_then(|c| c.plans.get(&job).cloned());
        if let Some(p) = cached {
            if p.plan_id == plan_id && fits(&p) {
                return Ok(p);
            }
        }
        let key = plan_key(job, plan_id);
        let bytes = self.store.get(&key).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "the job's plan {key} is missing from the store {}",
                self.store.url()
            )
        })?;
        let plan: JobPlan = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the job plan {key}"))?;
        anyhow::ensure!(
            plan.plan_id == plan_id && fits(&plan),
            "the job plan {key} has no {} task {} over {}..{}",
            record.kind,
            record.idx,
            record.first_key,
            record.last_key
        );
        let plan = Arc::new(plan);
        if let Ok(mut c) = self.staged.lock() {
            c.plans.insert(job, Arc::clone(&plan));
        }
        Ok(plan)
    }

    /// One attempt of a map task: read its row groups, keep the window's
    /// readings of raw-input pairs, cut them by score task, and write them
    /// as one object (`staging/<job>/<plan>/map-<m>.bin`).
    async fn attempt_map(&self, job: &JobRecord, record: &mut TaskRecord) -> anyhow::Result<()> {
        let t = Instant::now();
        let plan = self.job_plan(record).await?;
        let m = record.idx - plan.tasks;
        let pieces = plan.maps[m as usize].clone();
        let (from, to) = (job.window_start, job.window_end);
        // Read the pieces (a few at once), in order.
        let read: Vec<Readings> = stream::iter(pieces)
            .map(|piece| read_piece(&self.store, piece))
            .buffered(4)
            .try_collect()
            .await?;
        record.load_ms = t.elapsed().as_millis() as u64;
        let p = Arc::clone(&plan);
        let selection = job.selection.clone();
        let (sections, rows) = tokio::task::spawn_blocking(move || {
            let selection: Option<BTreeSet<&str>> = selection
                .as_ref()
                .map(|s| s.iter().map(String::as_str).collect());
            let mut sections: Vec<Section> = vec![Section::default(); p.task_units.len()];
            // Each pair met so far: its task and its id there, if wanted.
            let mut at: FxHashMap<(&str, &str), Option<(u32, u32)>> = FxHashMap::default();
            let mut rows = 0u64;
            for r in &read {
                // Per key of the piece: its task and its id there.
                let dest: Vec<Option<(u32, u32)>> = r
                    .keys()
                    .map(|(d, tg)| {
                        *at.entry((d, tg)).or_insert_with(|| {
                            let chosen = || {
                                selection
                                    .as_ref()
                                    .is_none_or(|s| s.contains(format!("{d}/{tg}").as_str()))
                            };
                            let (task, unit) = p.route(d, tg, chosen)?;
                            let keys = &mut sections[task as usize].keys;
                            keys.push(match unit {
                                Some(i) => SectionKey::Unit(i),
                                None => SectionKey::Other(d.to_owned(), tg.to_owned()),
                            });
                            Some((task, keys.len() as u32 - 1))
                        })
                    })
                    .collect();
                let (r_ts, r_value, r_key) = (r.ts(), r.values(), r.key_ids());
                for i in 0..r.len() {
                    let ts = r_ts[i];
                    if ts < from || ts >= to {
                        continue;
                    }
                    if let Some((task, id)) = dest[r_key[i] as usize] {
                        let s = &mut sections[task as usize];
                        s.ts.push(ts);
                        s.value.push(r_value[i]);
                        s.key.push(id);
                        rows += 1;
                    }
                }
            }
            for s in &mut sections {
                s.drop_unused_keys();
            }
            (sections, rows)
        })
        .await?;
        let t_write = Instant::now();
        let out = MapOut {
            plan_id: plan.plan_id.clone(),
            sections,
        };
        let out = tokio::task::spawn_blocking(move || {
            let bytes = crate::stage::encode_map(&out.plan_id, &out.sections);
            (out, bytes)
        })
        .await?;
        let key = map_key(job.id, &plan.plan_id, m);
        self.store.put(&key, out.1).await?;
        record.write_ms = t_write.elapsed().as_millis() as u64;
        record.rows = rows;
        record.output = Some(key);
        if let Ok(mut c) = self.staged.lock() {
            c.maps.insert((job.id, m), Arc::new(out.0));
        }
        Ok(())
    }

    /// The record of a job this runner leased a task of (so running: the
    /// lease is only given for running jobs), read once per plan: what a
    /// task needs of it (window, mode, retries) does not change.
    async fn job_for(&self, id: i64) -> anyhow::Result<JobRecord> {
        let cached = self
            .staged
            .lock()
            .ok()
            .and_then(|c| c.jobs.get(&id).cloned());
        if let Some(j) = cached {
            return Ok(j);
        }
        let job = self.db.job(id).await?;
        if job.state == JobState::Running {
            if let Ok(mut c) = self.staged.lock() {
                c.jobs.insert(id, job.clone());
            }
        }
        Ok(job)
    }

    /// A score task's share of its job's plan.
    async fn staged(&self, record: &TaskRecord) -> anyhow::Result<TaskPlan> {
        let plan = self.job_plan(record).await?;
        Ok(TaskPlan {
            job: plan.job,
            idx: record.idx,
            generation: plan.generation,
            plan_id: plan.plan_id.clone(),
            tasks: plan.tasks,
            maps: plan.maps.len() as u32,
            units: plan.task_units[record.idx as usize].clone(),
            has_windows: plan.has_windows,
        })
    }

    /// A score task's readings: its section of every map task's output,
    /// in order (from memory for the map tasks this process ran).
    async fn gather(&self, plan: &TaskPlan) -> anyhow::Result<Readings> {
        /// A section kept in memory by its map task, or read.
        enum Got {
            Kept(Arc<MapOut>),
            Read(Section),
        }
        let job = plan.job;
        let sections: Vec<Got> = stream::iter(0..plan.maps)
            .map(|m| async move {
                let kept = self
                    .staged
                    .lock()
                    .ok()
                    .and_then(|c| c.maps.get(&(job, m)).cloned());
                match kept.filter(|o| o.plan_id == plan.plan_id) {
                    Some(out) => Ok::<_, anyhow::Error>(Got::Kept(out)),
                    None => Ok(Got::Read(self.read_section(plan, m).await?)),
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let empty = Section::default();
        let refs: Vec<&Section> = sections
            .iter()
            .map(|s| match s {
                Got::Kept(out) => out.sections.get(plan.idx as usize).unwrap_or(&empty),
                Got::Read(r) => r,
            })
            .collect();
        crate::stage::gather_sections(&plan.units, &refs).map_err(|e| {
            anyhow::anyhow!(
                "the map outputs of job {} do not fit task {}'s plan: {e}",
                plan.job,
                plan.idx
            )
        })
    }

    /// Reads a score task's section of map output `m` from the store.
    async fn read_section(&self, plan: &TaskPlan, m: u32) -> anyhow::Result<Section> {
        let (job, key) = (plan.job, map_key(plan.job, &plan.plan_id, m));
        let corrupt = |e: String| anyhow::anyhow!("the map output {key} does not read: {e}");
        let missing = || {
            anyhow::anyhow!(
                "the map output {key} is missing from the store {}",
                self.store.url()
            )
        };
        let cached = self.staged.lock().ok().and_then(|c| {
            c.headers
                .get(&(job, m))
                .filter(|(id, _)| *id == plan.plan_id)
                .map(|(_, h)| h.clone())
        });
        let header = match cached {
            Some(h) => h,
            None => {
                let n = crate::stage::header_len(&plan.plan_id, plan.tasks) as u64;
                let h = self
                    .store
                    .get_range(&key, 0..n)
                    .await?
                    .ok_or_else(missing)?
                    .to_vec();
                // Checked before it is kept.
                crate::stage::section_range(&h, &plan.plan_id, plan.tasks, 0).map_err(corrupt)?;
                if let Ok(mut c) = self.staged.lock() {
                    c.headers
                        .insert((job, m), (plan.plan_id.clone(), h.clone()));
                }
                h
            }
        };
        let range = crate::stage::section_range(&header, &plan.plan_id, plan.tasks, plan.idx)
            .map_err(corrupt)?;
        if range.is_empty() {
            return Ok(Section::default());
        }
        let want = range.end - range.start;
        let bytes = self
            .store
            .get_range(&key, range)
            .await?
            .ok_or_else(missing)?;
        anyhow::ensure!(
            bytes.len() as u64 == want,
            "the map output {key} ends {} bytes short of section {}",
            want - bytes.len() as u64,
            plan.idx
        );
        tokio::task::spawn_blocking(move || crate::stage::decode_section(&bytes))
            .await?
            .map_err(corrupt)
    }

    /// The model pack of `generation` (cached across tasks).
    async fn pack_for(&self, generation: u64) -> anyhow::Result<Arc<Pack>> {
        let mut cached = self.pack.lock().await;
        if let Some(p) = cached.as_ref() {
            if p.generation == generation {
                return Ok(Arc::clone(p));
            }
        }
        let p = Arc::new(self.registry.pack().await?);
        if p.generation != generation {
            tracing::warn!(
                planned = generation,
                live = p.generation,
                "the models changed since the job was planned; scoring with the live ones"
            );
        }
        *cached = Some(Arc::clone(&p));
        Ok(p)
    }

    /// Runs one leased attempt of a task and records it.
    async fn run_task(&self, mut record: TaskRecord) -> anyhow::Result<()> {
        let renew = Renewer::start(
            Arc::clone(&self.db),
            self.config.lease,
            self.owner.clone(),
            Some(record.idx),
            record.job_id,
        );
        let job = self.job_for(record.job_id).await?;
        let log_key = format!("logs/{}/task-{:05}.log", job.id, record.idx);
        let mut log = if record.attempts > 1 {
            match self.store.get(&log_key).await {
                Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            log,
            "attempt {} at {} by {}: {} {} {}..{}",
            record.attempts,
            format_ts(self.clock.now()),
            self.owner,
            record.n_keys,
            if record.is_map() {
                "raw row groups (map task) of"
            } else {
                "models"
            },
            record.first_key,
            record.last_key,
        );
        let mut failures = Vec::new();
        if job.state != JobState::Running {
            record.state = "cancelled".into();
            let _ = writeln!(log, "cancelled: the job is {}", job.state);
        } else {
            let outcome = if record.is_map() {
                self.attempt_map(&job, &mut record).await.map(|()| None)
            } else {
                self.attempt_staged(&job, &mut record).await.map(Some)
            };
            match outcome {
                Ok(None) => {
                    record.state = "succeeded".into();
                    record.error = None;
                    record.not_before = None;
                    let _ = writeln!(
                        log,
                        "succeeded: {} readings for {} score tasks; read {} ms, write {} ms -> {}",
                        record.rows,
                        job.tasks,
                        record.load_ms,
                        record.write_ms,
                        record.output.as_deref().unwrap_or("")
                    );
                }
                Ok(Some((f, devices))) => {
                    failures = f;
                    record.state = "succeeded".into();
                    record.error = None;
                    record.not_before = None;
                    record.devices = Some(serde_json::to_string(&devices)?);
                    if record.output.is_none() {
                        let _ = writeln!(
                            log,
                            "succeeded: no readings in the job's window for any pair of the job \
                             ({} models here): nothing to score, nothing written",
                            record.models
                        );
                    } else {
                        let _ = writeln!(
                            log,
                            "succeeded: {} models, {} rows, {} anomalies, {} failed models; load {} ms, score {} ms, write {} ms -> {}",
                            record.models, record.rows, record.anomalies, record.failed_models,
                            record.load_ms, record.score_ms, record.write_ms,
                            record.output.as_deref().unwrap_or("")
                        );
                    }
                    for f in &failures {
                        let _ = writeln!(
                            log,
                            "model ({}, {}) failed: {}: {} ({} readings)",
                            f.device, f.tag, f.reason, f.detail, f.rows
                        );
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = writeln!(log, "failed: {msg}");
                    record.error = Some(msg);
                    if record.attempts > job.max_retries {
                        record.state = "failed".into();
                    } else {
                        let wait =
                            self.config.retry_backoff * 2u32.pow((record.attempts - 1).min(10));
                        let _ = writeln!(log, "retrying in {wait:?}");
                        record.state = "queued".into();
                        record.not_before = Some(wall_ns() + wait.as_nanos() as i64);
                    }
                }
            }
        }
        record.finished_at = Some(self.clock.now());
        if renew.lost() {
            let _ = writeln!(log, "lease lost before the end: another worker runs it");
        }
        if let Err(e) = self.store.put(&log_key, log).await {
            tracing::warn!(
                job = job.id,
                task = record.idx,
                "writing the task log failed: {e}"
            );
        }
        drop(renew);
        let owner = self.owner.clone();
        let kept = persist("recording a task", || {
            self.db.finish_task(&record, &failures, &owner)
        })
        .await?;
        if !kept {
            tracing::warn!(
                job = job.id,
                task = record.idx,
                "the task's lease expired while it ran; the worker that took over records it"
            );
        }
        Ok(())
    }

    /// One attempt from the staged input: load, score, write the part.
    async fn attempt_staged(
        &self,
        job: &JobRecord,
        record: &mut TaskRecord,
    ) -> anyhow::Result<(Vec<FailureRecord>, BTreeMap<String, DeviceCount>)> {
        let t = Instant::now();
        let plan = self.staged(record).await?;
        let readings = self.gather(&plan).await?;
        let pack = self.pack_for(plan.generation).await?;
        // Window-input pairs read their windows.
        let mut wunits = Vec::new();
        let mut by_size: BTreeMap<&str, Vec<&PlanUnit>> = BTreeMap::new();
        for u in &plan.units {
            if let Some((size, _)) = &u.window {
                by_size.entry(size.as_str()).or_default().push(u);
            }
        }
        for (size, us) in by_size {
            let mut w = load_windows(&self.store, size, job.window_start, job.window_end).await?;
            for u in us {
                wunits.push(WindowUnit {
                    device: u.device.clone(),
                    tag: u.tag.clone(),
                    features: u.window.clone().map(|(_, f)| f).unwrap_or_default(),
                    windows: w
                        .remove(&(u.device.clone(), u.tag.clone()))
                        .unwrap_or_default(),
                });
            }
        }
        let mine_empty = readings.is_empty() && wunits.iter().all(|u| u.windows.is_empty());
        // Map tasks count only the readings they route, and they route
        // none to a window-input pair: with such pairs in the plan, no
        // routed reading does not mean no reading (their windows may not
        // be written yet), so those pairs fail `no_data` as usual. (A
        // window without a raw row group and without windows plans no
        // task at all, and is skipped at finalizing.)
        let raw_input_only = plan.units.iter().all(|u| u.window.is_none());
        if mine_empty && raw_input_only && !plan.has_windows && self.window_rows(&plan).await? == 0
        {
            // The whole window is empty: no part, no `no_data` failures
            // (finalizing skips the job; see the module docs).
            record.load_ms = t.elapsed().as_millis() as u64;
            record.models = plan.units.len() as u64;
            (record.rows, record.anomalies, record.failed_models) = (0, 0, 0);
            (record.score_ms, record.write_ms) = (0, 0);
            record.output = None;
            return Ok((Vec::new(), BTreeMap::new()));
        }
        record.load_ms = t.elapsed().as_millis() as u64;
        let mut units: Vec<(String, String)> = plan
            .units
            .iter()
            .map(|u| (u.device.clone(), u.tag.clone()))
            .collect();
        // With the pairs the map tasks found (readings, no model of their
        // own), in order.
        let named: BTreeSet<&(String, String)> = units.iter().collect();
        let mut extra: Vec<(String, String)> = readings
            .owned_keys()
            .into_iter()
            .filter(|k| !named.contains(k))
            .collect();
        if !extra.is_empty() {
            units.append(&mut extra);
            units.sort();
        }
        let (prefix, stem) = output_prefix(job);
        let key = format!("{prefix}/part-{stem}-{:05}.parquet", record.idx);
        let readings = Arc::new(readings);
        self.attempt(record, &readings, &units, &Arc::new(wunits), &pack, &key)
            .await
    }

    /// The readings the map tasks of a score task's plan found in the
    /// window for the job's pairs (they have all succeeded when a score
    /// task runs).
    async fn window_rows(&self, plan: &TaskPlan) -> anyhow::Result<u64> {
        if plan.maps == 0 {
            return Ok(0);
        }
        Ok(self
            .db
            .tasks(plan.job)
            .await?
            .iter()
            .filter(|t| t.is_map() && t.plan_id.as_deref() == Some(plan.plan_id.as_str()))
            .map(|t| t.rows)
            .sum())
    }

    /// Writes the manifest and records the outcome of a job whose tasks
    /// have all ended.
    async fn finalize(&self, mut job: JobRecord) -> anyhow::Result<()> {
        let id = job.id;
        let (maps, tasks): (Vec<TaskRecord>, Vec<TaskRecord>) = self
            .db
            .tasks(id)
            .await?
            .into_iter()
            .partition(|t| t.is_map());
        // As planned (see `plan_inner`): what a job without tasks reports.
        let planned_models = job.models;
        job.models = 0;
        job.rows = 0;
        job.anomalies = 0;
        job.failed_models = 0;
        job.score_ms = 0;
        job.write_ms = 0;
        job.tasks = tasks.len() as u64;
        let mut task_error = maps.iter().find(|m| m.state != "succeeded").map(|m| {
            format!(
                "reading the window failed: map task {} ({} raw row groups of {}..{}) {}: {}",
                m.idx,
                m.n_keys,
                m.first_key,
                m.last_key,
                m.state,
                m.error.as_deref().unwrap_or("")
            )
        });
        // Reading the window (the map tasks) counts as loading.
        job.load_ms += maps.iter().map(|m| m.load_ms + m.write_ms).sum::<u64>();
        let mut devices: BTreeMap<String, DeviceCount> = BTreeMap::new();
        for r in &tasks {
            job.models += r.models;
            job.rows += r.rows;
            job.anomalies += r.anomalies;
            job.failed_models += r.failed_models;
            job.score_ms += r.score_ms;
            job.write_ms += r.write_ms;
            if r.state != "succeeded" && task_error.is_none() {
                task_error = Some(format!(
                    "task {} {}: {}",
                    r.idx,
                    r.state,
                    r.error.as_deref().unwrap_or("")
                ));
            }
            if let Some(d) = &r.devices {
                match serde_json::from_str::<BTreeMap<String, DeviceCount>>(d) {
                    Ok(d) => {
                        for (k, c) in d {
                            let e = devices.entry(k).or_default();
                            e.rows += c.rows;
                            e.anomalies += c.anomalies;
                        }
                    }
                    // Recorded as the job's failure, not retried for ever.
                    Err(e) => {
                        if task_error.is_none() {
                            task_error = Some(format!(
                                "task {}: its recorded device counts do not read back: {e}",
                                r.idx
                            ));
                        }
                    }
                }
            }
        }
        // Planning found nothing to read (no task), or every score task
        // found the window empty (see `attempt_staged`): no part, no model
        // failed.
        let empty = task_error.is_none() && tasks.iter().all(|t| t.output.is_none());
        if tasks.is_empty() {
            job.models = planned_models;
        }
        let outcome = match task_error {
            Some(e) => Err(anyhow::anyhow!(e)),
            None if empty => Ok(None),
            None => self.write_manifest(&job, &tasks, devices).await.map(Some),
        };
        match outcome {
            Ok(None) => {
                job.manifest = None;
                job.state = JobState::Skipped;
                job.error = Some(no_readings(id, job.models));
            }
            Ok(Some(key)) => {
                job.manifest = Some(key);
                if job.max_failed.exceeded(job.failed_models, job.models) {
                    job.state = JobState::Failed;
                    job.error = Some(format!(
                        "{} of {} models failed, more than max_failed_models = {}",
                        job.failed_models, job.models, job.max_failed
                    ));
                } else {
                    job.state = JobState::Succeeded;
                    job.error = None;
                }
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(format!("{e:#}"));
            }
        }
        job.finished_at = Some(self.clock.now());
        let owner = self.owner.clone();
        let recorded = persist("recording a job", || self.db.finish_job(&job, &owner)).await?;
        if !recorded {
            tracing::warn!(
                job = id,
                "the job was cancelled or taken over while finalizing"
            );
            return Ok(());
        }
        self.write_job_log(&job).await;
        self.report(&job);
        if let Ok(mut f) = self.finished.lock() {
            f.push(id);
        }
        // The staged inputs are no longer needed.
        self.drop_staged(id);
        match self.store.list(&staging_prefix(id)).await {
            Ok(keys) => {
                for k in keys {
                    if let Err(e) = self.store.delete(&k).await {
                        tracing::warn!(job = id, "deleting {k}: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!(job = id, "listing the staged inputs: {e}"),
        }
        tracing::info!(
            job = id,
            state = %job.state,
            models = job.models,
            rows = job.rows,
            anomalies = job.anomalies,
            failed = job.failed_models,
            "job finished"
        );
        Ok(())
    }

    /// Deletes parts of an earlier, larger run of the window, then writes
    /// the manifest (last); returns its key.
    async fn write_manifest(
        &self,
        job: &JobRecord,
        tasks: &[TaskRecord],
        devices: BTreeMap<String, DeviceCount>,
    ) -> anyhow::Result<String> {
        let (prefix, stem) = output_prefix(job);
        let stale_prefix = format!("{prefix}/part-{stem}-");
        for key in self.store.list(&format!("{prefix}/")).await? {
            if let Some(n) = key
                .strip_prefix(&stale_prefix)
                .and_then(|r| r.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if n >= job.tasks {
                    self.store.delete(&key).await?;
                }
            }
        }
        let manifest = Manifest {
            format: "fleetscore-predictions-manifest".into(),
            job: job.id,
            window_start: format_ts(job.window_start),
            window_end: format_ts(job.window_end),
            mode: job.mode.clone(),
            parts: tasks.iter().filter_map(|t| t.output.clone()).collect(),
            models: job.models,
            rows: job.rows,
            anomalies: job.anomalies,
            failed_models: job.failed_models,
            devices,
        };
        let key = format!("{prefix}/manifest-{stem}.json");
        self.store
            .put(&key, serde_json::to_vec_pretty(&manifest)?)
            .await?;
        Ok(key)
    }

    async fn write_job_log(&self, job: &JobRecord) {
        let id = job.id;
        let log = format!(
            "job {id} {}: window [{}, {}) mode {} — {} models, {} rows, {} anomalies, {} failed models, {} tasks; load {} ms, score {} ms, write {} ms{}\n",
            job.state,
            format_ts(job.window_start),
            format_ts(job.window_end),
            job.mode,
            job.models,
            job.rows,
            job.anomalies,
            job.failed_models,
            job.tasks,
            job.load_ms,
            job.score_ms,
            job.write_ms,
            job.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = self.store.put(&format!("logs/{id}/job.log"), log).await {
            tracing::warn!(job = id, "writing the job log failed: {e}");
        }
    }

    /// One attempt: score, write the part. Model failures are results, not
    /// errors; an `Err` is worth a retry.
    async fn attempt(
        &self,
        record: &mut TaskRecord,
        readings: &Arc<Readings>,
        units: &[(String, String)],
        wunits: &Arc<Vec<WindowUnit>>,
        pack: &Arc<Pack>,
        key: &str,
    ) -> anyhow::Result<(Vec<FailureRecord>, BTreeMap<String, DeviceCount>)> {
        let t = Instant::now();
        let (r, p, k) = (Arc::clone(readings), Arc::clone(pack), key.to_string());
        let wu = Arc::clone(wunits);
        let units = units.to_vec();
        let idx = record.idx;
        let (bytes, failures, rows, anomalies, models, devices) =
            tokio::task::spawn_blocking(move || {
                let mut scored = crate::score((*r).clone(), &p, &|_| {});
                let mut failures: Vec<FailureRecord> = scored
                    .failures
                    .iter()
                    .map(|f| FailureRecord {
                        task_idx: idx,
                        device: f.device.clone(),
                        tag: f.tag.clone(),
                        reason: f.reason.code().to_string(),
                        detail: f.reason.to_string(),
                        rows: f.rows as u64,
                    })
                    .collect();
                // Pairs with data: readings, or windows for window input.
                let mut seen = vec![false; r.key_count()];
                for &k in r.key_ids() {
                    seen[k as usize] = true;
                }
                let mut with_data: BTreeSet<(&str, &str)> = r
                    .keys()
                    .zip(&seen)
                    .filter(|(_, &s)| s)
                    .map(|(pair, _)| pair)
                    .collect();
                // Window-input pairs: each window is a row of its features.
                let mut anomalies = scored.anomalies;
                for u in wu.iter() {
                    if u.windows.is_empty() {
                        continue;
                    }
                    with_data.insert((u.device.as_str(), u.tag.as_str()));
                    let Some(entry) = p.get(&u.device, &u.tag) else {
                        continue;
                    };
                    let width = u.features.len();
                    let rows: Vec<f64> = u
                        .windows
                        .iter()
                        .flat_map(|w| u.features.iter().map(move |f| feature(w, f)))
                        .collect();
                    let n = u.windows.len();
                    let (mut score, mut label) = (vec![0.0; n], vec![0u32; n]);
                    let found = match entry
                        .model
                        .evaluate_into(&rows, width, &mut score, &mut label)
                        .map_err(|e| e.to_string())
                        .and_then(|a| crate::check_labels(&entry.model, &label).map(|()| a))
                    {
                        Ok(found) => found,
                        Err(message) => {
                            let reason = FailureReason::Evaluation { message };
                            failures.push(FailureRecord {
                                task_idx: idx,
                                device: u.device.clone(),
                                tag: u.tag.clone(),
                                reason: reason.code().to_string(),
                                detail: reason.to_string(),
                                rows: n as u64,
                            });
                            continue;
                        }
                    };
                    anomalies += found;
                    let k = scored.keys.len() as u32;
                    scored.keys.push((u.device.clone(), u.tag.clone()));
                    scored.kinds.push(entry.model.kind());
                    scored.classes.push(entry.model.classes().to_vec());
                    let from = scored.ts.len();
                    for w in &u.windows {
                        scored.ts.push(w.start);
                        scored.value.push(feature(w, &u.features[0]));
                    }
                    scored.label.extend_from_slice(&label);
                    scored.score.extend_from_slice(&score);
                    scored.groups.push((k, from..scored.ts.len()));
                }
                for (d, t) in &units {
                    if !with_data.contains(&(d.as_str(), t.as_str())) {
                        failures.push(FailureRecord {
                            task_idx: idx,
                            device: d.clone(),
                            tag: t.clone(),
                            reason: FailureReason::NoData.code().to_string(),
                            detail: FailureReason::NoData.to_string(),
                            rows: 0,
                        });
                    }
                }
                failures.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
                let outputs = scored.outputs();
                let cols = PredictionColumns {
                    ts: &scored.ts,
                    value: &scored.value,
                    label: &scored.label,
                    score: &scored.score,
                    keys: &scored.keys,
                    outputs: &outputs,
                    groups: &scored.groups,
                };
                let rows: usize = scored.groups.iter().map(|(_, g)| g.len()).sum();
                let mut devices: BTreeMap<String, DeviceCount> = BTreeMap::new();
                for (k, g) in &scored.groups {
                    let c = devices
                        .entry(scored.keys[*k as usize].0.clone())
                        .or_default();
                    c.rows += g.len() as u64;
                    if scored.kinds[*k as usize] == fleetscore_models::Kind::Outlier {
                        c.anomalies +=
                            scored.label[g.clone()].iter().filter(|&&p| p == 1).count() as u64;
                    }
                }
                let bytes = predictions_parquet_bytes(&cols, &k)?;
                Ok::<_, anyhow::Error>((bytes, failures, rows, anomalies, units.len(), devices))
            })
            .await??;
        record.score_ms = t.elapsed().as_millis() as u64;
        let t = Instant::now();
        self.store.put(key, bytes).await?;
        record.write_ms = t.elapsed().as_millis() as u64;
        record.rows = rows as u64;
        record.anomalies = anomalies as u64;
        record.models = models as u64;
        record.failed_models = failures.len() as u64;
        record.output = Some(key.to_string());
        Ok((failures, devices))
    }
}
