//! The scheduler loop: at each turn it creates the jobs every schedule has
//! due at the clock's time (after a [`Prepare`] step, which `serve` uses to
//! compact its ingest log into raw/ first), then runs what is queued, until
//! stopped.
//!
//! # Time
//! Everything the loop decides comes from its [`Clock`]: which windows are
//! due ([`schedule::tick`]), and how long it sleeps before the next turn:
//! until the next moment a schedule creates a job ([`schedule::next_run`]),
//! at most `every`. The cap is how soon the loop notices what the clock
//! cannot announce: jobs queued by other processes (a backfill, the API of
//! another server), a job whose preparation failed, a clock set forward by
//! hand. A job queued through this process's API wakes the loop at once
//! ([`Scheduler::with_wake`]).
//!
//! Tests drive it on a [`ManualClock`](crate::schedule::ManualClock): one
//! [`Scheduler::turn`] at a time, or the loop itself, whose sleeps
//! ([`Scheduler::until_next_turn`]) are computed from the clock.
//!
//! # Stopping
//! A stop ends the loop between turns at once; during a run, the work in
//! progress gets [`STOP_GRACE`] to finish, then is dropped (its leases
//! expire and another process, or the next start, takes it over: other
//! processes may share even a SQLite store, so leases are never ended
//! early).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::db::JobStore;
use crate::run::Runner;
use crate::schedule::{self, Clock, ScheduleSpec};

/// How long the work in progress may go on once the loop is told to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why [`Prepare::prepare`] failed, in its own words.
pub type PrepareError = Box<dyn std::error::Error + Send + Sync>;

/// What [`Prepare::prepare`] returns: a future (boxed, so that the trait
/// is object safe without a macro).
pub type Preparing<'a> = Pin<Box<dyn Future<Output = Result<(), PrepareError>> + Send + 'a>>;

/// What must happen before due jobs are created: `serve` compacts its
/// ingest log into raw/, so that the jobs see every reading acknowledged
/// until now, whichever process runs them (a schedule's delay then only
/// waits for late devices).
pub trait Prepare: Send + Sync {
    /// Prepares; an error holds the due jobs back (they would miss
    /// readings) until the next turn, which tries again.
    fn prepare(&self) -> Preparing<'_>;
}

/// What one turn did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    /// Jobs the schedules queued, by schedule.
    pub queued: Vec<i64>,
    /// Schedules with due windows whose jobs were held back, as preparing
    /// failed (the next turn tries again).
    pub held_back: Vec<String>,
    /// Jobs the runner finished (none without a runner).
    pub finished: Vec<i64>,
}

/// The scheduler loop (see the module docs).
pub struct Scheduler {
    db: Arc<dyn JobStore>,
    specs: Vec<ScheduleSpec>,
    clock: Arc<dyn Clock>,
    every: Duration,
    runner: Option<Runner>,
    prepare: Option<Arc<dyn Prepare>>,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Scheduler {
    /// A loop over `specs` on `clock`, turning at least every `every`
    /// (at least 1 ms); it creates jobs but runs none until given a runner.
    pub fn new(
        db: Arc<dyn JobStore>,
        specs: Vec<ScheduleSpec>,
        clock: Arc<dyn Clock>,
        every: Duration,
    ) -> Scheduler {
        Scheduler {
            db,
            specs,
            clock,
            every: every.max(Duration::from_millis(1)),
            runner: None,
            prepare: None,
            wake: None,
        }
    }

    /// Runs the queued jobs with `runner` after creating the due ones
    /// (without: `serve --no-workers`, whose jobs `fleetscore worker`
    /// processes run).
    pub fn with_runner(mut self, runner: Runner) -> Scheduler {
        self.runner = Some(runner);
        self
    }

    /// Runs `prepare` before creating due jobs (see [`Prepare`]).
    pub fn with_prepare(mut self, prepare: Arc<dyn Prepare>) -> Scheduler {
        self.prepare = Some(prepare);
        self
    }

    /// Turns at once when `wake` is notified (a job queued through this
    /// process's API), not at the next scheduled turn. A notification
    /// during a turn is kept, so the next turn comes right after.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Scheduler {
        self.wake = Some(wake);
        self
    }

    /// How long the loop sleeps after a turn: until the next moment a
    /// schedule creates a job on the clock (see [`schedule::next_run`]),
    /// at most `every`.
    pub fn until_next_turn(&self) -> Duration {
        let now = self.clock.now();
        let cap = i64::try_from(self.every.as_nanos()).unwrap_or(i64::MAX);
        let next = self
            .specs
            .iter()
            .filter_map(|s| schedule::next_run(s, now))
            .map(|at| at.saturating_sub(now))
            .min()
            .unwrap_or(cap);
        Duration::from_nanos(next.clamp(0, cap) as u64)
    }

    /// Creates the jobs due at the clock's time. When any is due, preparing
    /// comes first; if it fails, no job is created (they would miss
    /// readings) and their schedules are returned as held back. Returns
    /// the jobs queued and the schedules held back.
    pub async fn create_due_jobs(&self) -> (Vec<i64>, Vec<String>) {
        let now = self.clock.now();
        let db = &*self.db;
        let mut due = Vec::new();
        for spec in &self.specs {
            match schedule::due(db, spec, now).await {
                Ok(true) => due.push(spec),
                Ok(false) => {}
                Err(e) => tracing::error!(schedule = %spec.name, "schedule tick failed: {e}"),
            }
        }
        if due.is_empty() {
            return (Vec::new(), Vec::new());
        }
        if let Some(prepare) = &self.prepare {
            if let Err(e) = prepare.prepare().await {
                let names: Vec<String> = due.iter().map(|s| s.name.clone()).collect();
                tracing::error!(
                    schedules = %names.join(", "),
                    "not creating the due jobs yet, as they would miss readings; trying again at the next tick: {e}"
                );
                return (Vec::new(), names);
            }
        }
        let mut queued = Vec::new();
        for spec in due {
            match schedule::tick(db, spec, now).await {
                Ok(out) => {
                    if !out.queued.is_empty() {
                        tracing::info!(schedule = %spec.name, jobs = ?out.queued, "jobs queued");
                    }
                    queued.extend(out.queued);
                }
                Err(e) => tracing::error!(schedule = %spec.name, "schedule tick failed: {e}"),
            }
        }
        (queued, Vec::new())
    }

    /// One turn: creates the due jobs, then (with a runner) runs what is
    /// queued until nothing is left that the runner can take.
    pub async fn turn(&self) -> Turn {
        let (queued, held_back) = self.create_due_jobs().await;
        let finished = match &self.runner {
            Some(runner) => match runner.run_queued().await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("running jobs failed: {e:#}");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Turn {
            queued,
            held_back,
            finished,
        }
    }

    /// Turns until `stop` changes: at once, then after each turn when
    /// [`Scheduler::until_next_turn`] has passed or the wake is notified.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.create_due_jobs().await;
            if let Some(runner) = &self.runner {
                // A stop gives the current work a grace period, then drops
                // it (see the module docs).
                let run = runner.run_queued();
                tokio::pin!(run);
                let outcome = tokio::select! {
                    r = &mut run => Some(r),
                    _ = stop.changed() => None,
                };
                match outcome {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::error!("running jobs failed: {e:#}"),
                    None => {
                        match tokio::time::timeout(STOP_GRACE, run).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tracing::error!("running jobs failed: {e:#}"),
                            Err(_) => tracing::warn!(
                                "stopping with work in progress; it resumes at the next start"
                            ),
                        }
                        return;
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
            let woken = async {
                match &self.wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(self.until_next_turn()) => {}
                _ = woken => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::db::{Concurrency, JobFilter, JobKind, JobState, NewJob, SqlStore, Threshold};
    use crate::run::RunnerConfig;
    use crate::schedule::ManualClock;

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000_000;
    const SEC: i64 = 1_000_000_000;
    const MIN: i64 = 60 * SEC;
    const HOUR: i64 = 60 * MIN;

    /// Every hour on the hour, scored 5 minutes later.
    fn hourly(name: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            cron: "0 * * * *".into(),
            window_ns: HOUR,
            delay_ns: 5 * MIN,
            mode: "raw".into(),
            batch_size: 10,
            max_failed: Threshold::Count(0),
            max_retries: 0,
            concurrency: Concurrency::Forbid,
            catch_up: 1,
        }
    }

    async fn store(dir: &std::path::Path) -> Arc<dyn JobStore> {
        let url = format!("sqlite://{}", dir.join("jobs.db").display());
        Arc::new(SqlStore::open(&url).await.unwrap())
    }

    /// A runner over an empty object store: the jobs it runs find no
    /// readings and end skipped.
    fn runner(db: &Arc<dyn JobStore>, clock: Arc<dyn Clock>) -> Runner {
        let objects = fleetscore_store::Store::open("memory://").unwrap();
        let config = RunnerConfig {
            parallel_tasks: 1,
            poll: Duration::from_millis(10),
            ..RunnerConfig::default()
        };
        Runner::new(Arc::clone(db), objects, clock, config)
    }

    /// Counts its calls; fails while `fail` is set.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Prepare for Counting {
        fn prepare(&self) -> Preparing<'_> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    return Err("the store is unreachable".into());
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn the_loop_sleeps_until_the_next_due_moment_on_its_clock() {
        let clock = Arc::new(ManualClock::new(T0 + HOUR + 4 * MIN + 30 * SEC));
        let db: Arc<dyn JobStore> = Arc::new(SqlStore::open("sqlite://:memory:").await.unwrap());
        let every = Duration::from_secs(600);
        let s = Scheduler::new(db.clone(), vec![hourly("h")], clock.clone(), every);
        // 01:04:30: the 00:00-01:00 window is due at 01:05.
        assert_eq!(s.until_next_turn(), Duration::from_secs(30));
        // 01:05:00: the next is due at 02:05, past the cap.
        clock.set(T0 + HOUR + 5 * MIN);
        assert_eq!(s.until_next_turn(), every);
        clock.set(T0 + 2 * HOUR + 5 * MIN - SEC);
        assert_eq!(s.until_next_turn(), Duration::from_secs(1));
        // The soonest of several; a schedule whose cron does not parse
        // has no next time; none at all: the cap.
        let mut quarter = hourly("q");
        quarter.cron = "*/15 * * * *".into();
        quarter.delay_ns = 0;
        let mut broken = hourly("b");
        broken.cron = "nonsense".into();
        let s = Scheduler::new(
            db.clone(),
            vec![hourly("h"), quarter, broken],
            clock.clone(),
            every,
        );
        clock.set(T0 + HOUR + 14 * MIN);
        assert_eq!(s.until_next_turn(), Duration::from_secs(60));
        let s = Scheduler::new(db, Vec::new(), clock, every);
        assert_eq!(s.until_next_turn(), every);
    }

    /// One turn at a time on a clock moved by hand: at 01:05 the window
    /// 00:00-01:00 is prepared, queued and run; nothing more until 02:05,
    /// when a failed preparation holds the next job back until a turn
    /// where it succeeds.
    #[tokio::test]
    async fn each_turn_creates_what_is_due_on_the_clock_after_preparing() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path()).await;
        let clock = Arc::new(ManualClock::new(T0 + HOUR + 5 * MIN));
        let prepare = Arc::new(Counting::default());
        let s = Scheduler::new(
            db.clone(),
            vec![hourly("hourly")],
            clock.clone(),
            Duration::from_secs(60),
        )
        .with_runner(runner(&db, clock.clone()))
        .with_prepare(prepare.clone());
        let turn = s.turn().await;
        assert_eq!(turn.queued.len(), 1, "{turn:?}");
        assert_eq!(turn.finished, turn.queued);
        assert_eq!(prepare.calls.load(Ordering::SeqCst), 1);
        let job = db.job(turn.queued[0]).await.unwrap();
        assert_eq!((job.window_start, job.window_end), (T0, T0 + HOUR));
        assert_eq!(job.state, JobState::Skipped, "an empty store: {job:?}");
        assert_eq!(
            job.created_at,
            clock.now(),
            "the job's times are the clock's"
        );
        // Nothing more is due at the same time, nor before the delay has
        // passed: no preparing either.
        assert_eq!(s.turn().await, Turn::default());
        clock.set(T0 + 2 * HOUR + 4 * MIN);
        assert_eq!(s.turn().await, Turn::default());
        assert_eq!(prepare.calls.load(Ordering::SeqCst), 1);

        prepare.fail.store(true, Ordering::SeqCst);
        clock.set(T0 + 2 * HOUR + 5 * MIN);
        let turn = s.turn().await;
        assert_eq!(turn.held_back, ["hourly"]);
        assert!(turn.queued.is_empty());
        assert_eq!(db.jobs(&JobFilter::default()).await.unwrap().len(), 1);
        prepare.fail.store(false, Ordering::SeqCst);
        clock.advance(MIN);
        let turn = s.turn().await;
        assert_eq!(turn.queued.len(), 1, "{turn:?}");
        let job = db.job(turn.queued[0]).await.unwrap();
        assert_eq!(job.window_start, T0 + HOUR);
    }

    /// A clock that runs from a given time at the pace of real time.
    struct Running {
        from: i64,
        started: Instant,
    }

    impl Clock for Running {
        fn now(&self) -> i64 {
            self.from + self.started.elapsed().as_nanos() as i64
        }
    }

    /// The loop wakes when its clock says a window is due, not at its cap
    /// (an hour here): the sleep is computed from the clock. A wake runs a
    /// queued job at once; a stop ends the loop at once.
    #[tokio::test]
    async fn the_loop_turns_when_the_clock_says_and_when_woken() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path()).await;
        let clock = Arc::new(Running {
            from: T0 + HOUR + 5 * MIN - 300_000_000,
            started: Instant::now(),
        });
        let wake = Arc::new(tokio::sync::Notify::new());
        let s = Scheduler::new(
            db.clone(),
            vec![hourly("hourly")],
            clock.clone(),
            Duration::from_secs(3600),
        )
        .with_runner(runner(&db, clock.clone()))
        .with_wake(wake.clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let watch = async {
            // The first turn, at once, creates the newest window due then
            // (23:00-00:00, a new schedule's only one); the next, 300 ms
            // later, 00:00-01:00.
            let scheduled = loop {
                let jobs = db.jobs(&JobFilter::default()).await.unwrap();
                if let Some(j) = jobs.iter().find(|j| j.window_start == T0) {
                    break j.clone();
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{jobs:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(scheduled.window_end, T0 + HOUR);
            assert_eq!(db.jobs(&JobFilter::default()).await.unwrap().len(), 2);
            // A job queued by hand (the API) runs when the loop is woken.
            let id = db
                .create_job(
                    &NewJob {
                        schedule: None,
                        kind: JobKind::Manual,
                        window_start: T0 + HOUR,
                        window_end: T0 + 2 * HOUR,
                        mode: "raw".into(),
                        selection: None,
                        batch_size: 10,
                        max_failed: Threshold::Count(0),
                        max_retries: 0,
                        concurrency: Concurrency::Allow,
                        state: JobState::Queued,
                        error: None,
                    },
                    0,
                )
                .await
                .unwrap();
            wake.notify_one();
            let woken = Instant::now();
            while !db.job(id).await.unwrap().state.is_final() {
                assert!(woken.elapsed() < Duration::from_secs(20), "not woken");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.send(true).unwrap();
        };
        let ((), ()) = tokio::join!(s.run(stopped), watch);
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
