//! Running a job: one window `[start, end)`, its models in tasks of about
//! `batch_size`, each task with retries, outputs keyed so that a rerun
//! overwrites instead of duplicating, the manifest last.
//!
//! # Outputs
//! For a job of mode `raw` and window length `W` (e.g. `1h`) starting at
//! hour `date=D/hour=H`, as [`JobOutput`] names them (the lake,
//! [`fleetscore_store::lake`], owns the layout):
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
//! manifest is written. Readers see a partition's parts only as its
//! manifests name them (the lake's reading rule), so the parts of a job
//! still running are not seen.
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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fleetscore_models::Pack;
use fleetscore_store::{Registry, Store};

use crate::db::{JobRecord, JobState, JobStore};
use crate::lease::Leases;
use crate::schedule::Clock;
use crate::stage::JobPlan;

mod error;
mod finalize;
mod map;
mod plan;
mod score;

pub use error::{Result, RunError};
pub use finalize::no_readings;
use map::MapOut;
pub use plan::drop_staging;

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
    /// Lease times, from `clock` (see [`crate::lease`]).
    leases: Leases,
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
    /// The Python runtime's workers (see [`Runner::with_python`]); `None`:
    /// Python models fail `python_disabled`, no Python process starts.
    python: Option<Arc<fleetscore_python::Pool>>,
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

/// The pairs a job scores: its `selection` of `device/tag` keys, or every
/// pair.
#[derive(Debug, Clone)]
pub(super) struct Selection(Option<BTreeSet<String>>);

impl Selection {
    pub(super) fn of(job: &JobRecord) -> Selection {
        Selection(job.selection.as_ref().map(|s| s.iter().cloned().collect()))
    }

    /// Whether the job scores `device`/`tag`.
    pub(super) fn contains(&self, device: &str, tag: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|s| s.contains(&format!("{device}/{tag}")))
    }

    /// How many pairs it names (`None`: every pair).
    pub(super) fn len(&self) -> Option<usize> {
        self.0.as_ref().map(BTreeSet::len)
    }
}

/// A job-store call, retried while retrying can help (see
/// [`crate::db::retrying`]); its error says what was being done.
async fn persist<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::db::Result<T>>,
{
    crate::db::retrying(what, f)
        .await
        .map_err(|e| RunError::job_store(what, e))
}

impl Runner {
    /// A runner.
    pub fn new(
        db: Arc<dyn JobStore>,
        store: Store,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
    ) -> Runner {
        let owner = owner_name();
        Runner {
            db,
            registry: Registry::new(store.clone()),
            store,
            leases: Leases::new(Arc::clone(&clock), owner.clone(), config.lease),
            clock,
            config,
            owner,
            staged: Arc::new(std::sync::Mutex::new(StagedCache::default())),
            pack: Arc::new(tokio::sync::Mutex::new(None)),
            held: Arc::new(std::sync::Mutex::new(Vec::new())),
            ran: Arc::new(std::sync::Mutex::new(BTreeSet::new())),
            finished: Arc::new(std::sync::Mutex::new(Vec::new())),
            wake: None,
            reports: None,
            python: None,
        }
    }

    /// Scores the models registered with `--runtime python` on `pool`
    /// (`[python] enabled = true`); without it they fail `python_disabled`.
    pub fn with_python(mut self, pool: Option<Arc<fleetscore_python::Pool>>) -> Runner {
        self.python = pool;
        self
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
        crate::trace::ended(job);
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
        self.leases.until()
    }

    /// Runs queued work (planning, tasks, finalizing) with
    /// `parallel_tasks` slots until nothing is left that this runner can
    /// take; returns the ids of the jobs it finished (finalized, or failed
    /// while planning), oldest first. Tasks leased by other processes are
    /// theirs: a job they still run is not waited for.
    pub async fn run_queued(&self) -> Result<Vec<i64>> {
        let mut done = self.slots(None).await?;
        done.sort_unstable();
        done.dedup();
        Ok(done)
    }

    /// Runs one job to its end (claiming it even with other work queued),
    /// waiting for tasks that other processes hold; returns its record.
    pub async fn run_job(&self, id: i64) -> Result<JobRecord> {
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
    ) -> Result<()> {
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
                        Err(e) if stopping => tracing::error!("worker: {}", e.chain()),
                        Err(e) => {
                            tracing::error!(
                                "worker: {}; retrying in {:?}",
                                e.chain(),
                                me.config.poll
                            );
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
    ) -> Result<Step> {
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
    async fn slots(&self, only: Option<i64>) -> Result<Vec<i64>> {
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
                            return Ok::<_, RunError>(());
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
                                        let wait = at
                                            .saturating_sub(self.clock.now())
                                            .clamp(0, 60_000_000_000);
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
    pub async fn step(&self, only: Option<i64>) -> Result<Step> {
        // Tasks first: while a worker has tasks to lease, a step costs two
        // round trips to the job store (lease, record), not three.
        if let Some(task) = self
            .db
            .lease_task(self.clock.now(), &self.owner, self.until(), only)
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
                    .claim_finalize(self.clock.now(), &self.owner, self.until(), Some(j))
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
        let idle = self.db.idle_work(self.clock.now(), only).await?;
        if idle.finalize {
            if let Some(job) = self
                .db
                .claim_finalize(self.clock.now(), &self.owner, self.until(), only)
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
                .claim_job(self.clock.now(), &self.owner, self.until(), only)
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
}
