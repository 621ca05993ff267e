//! Schedules: cron expressions that create one job per window, with a delay
//! for late data, catch-up after downtime and an injectable clock.
//!
//! A schedule's cron expression (five fields, UTC; `0 * * * *` is every
//! hour on the hour) gives *nominal times* `T`. For each `T` the schedule
//! scores the window `[T - window, T)`, and creates its job at `T + delay`,
//! so `cron = "0 * * * *", window = 1h, delay = 5m` scores 09:00–10:00 at
//! 10:05.
//!
//! [`tick`] is the whole scheduler: given the clock, it creates the jobs of
//! every nominal time that is due (`T + delay <= now`) and newer than the
//! last one it created (kept in the job store, so a restart neither repeats
//! nor forgets a window), oldest first. After downtime that may be many:
//! at most `catch_up` of the newest are queued, the older ones are recorded
//! as `skipped` jobs (visible, and scored with `fleetscore backfill` or
//! `jobs retry`), so no window is ever silently missed or scored twice. The
//! first tick of a new schedule creates only the newest due window.
//!
//! The clock is a [`Clock`]: the real one in the service, a
//! [`ManualClock`] in tests, which run a day of hourly schedule in
//! milliseconds.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::db::{Concurrency, JobKind, JobState, JobStore, NewJob, Threshold};

/// Nanoseconds since the epoch, UTC, from somewhere.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// At `ns`.
    pub fn new(ns: i64) -> ManualClock {
        ManualClock(AtomicI64::new(ns))
    }

    /// Moves to `ns`.
    pub fn set(&self, ns: i64) {
        self.0.store(ns, Ordering::SeqCst);
    }

    /// Moves forward by `ns`.
    pub fn advance(&self, ns: i64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One schedule, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name, e.g. `hourly`.
    pub name: String,
    /// Cron expression, five fields, UTC.
    pub cron: String,
    /// Window length, ns.
    pub window_ns: i64,
    /// Wait after the window's end before scoring it, ns.
    pub delay_ns: i64,
    /// Model input mode (`raw`).
    pub mode: String,
    /// Models per task.
    pub batch_size: u32,
    /// Failure threshold.
    pub max_failed: Threshold,
    /// Retries per task.
    pub max_retries: u32,
    /// Overlap policy.
    pub concurrency: Concurrency,
    /// At most this many missed windows are queued after downtime.
    pub catch_up: u32,
}

/// Why a schedule is refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("schedule {name:?}: cron {cron:?}: {reason}")]
    Cron {
        /// Schedule.
        name: String,
        /// Expression.
        cron: String,
        /// Why.
        reason: String,
    },
    /// Another setting is wrong.
    #[error("schedule {name:?}: {reason}")]
    Invalid {
        /// Schedule.
        name: String,
        /// Why.
        reason: String,
    },
    /// The job store failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl ScheduleSpec {
    /// Parses the cron expression and checks the numbers.
    pub fn check(&self) -> Result<Cron, ScheduleError> {
        let invalid = |reason: &str| ScheduleError::Invalid {
            name: self.name.clone(),
            reason: reason.into(),
        };
        if self.name.is_empty() {
            return Err(invalid("the name must not be empty"));
        }
        if self.window_ns <= 0 {
            return Err(invalid("the window must be longer than zero"));
        }
        if self.delay_ns < 0 {
            return Err(invalid("the delay must not be negative"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size must be at least 1"));
        }
        if self.catch_up == 0 {
            return Err(invalid("catch_up must be at least 1"));
        }
        if self.mode != "raw" {
            return Err(invalid("mode must be \"raw\""));
        }
        self.cron.parse::<Cron>().map_err(|e| ScheduleError::Cron {
            name: self.name.clone(),
            cron: self.cron.clone(),
            reason: e.to_string(),
        })
    }

    fn job(&self, t: i64, state: JobState, error: Option<String>) -> NewJob {
        NewJob {
            schedule: Some(self.name.clone()),
            kind: JobKind::Scheduled,
            window_start: t - self.window_ns,
            window_end: t,
            mode: self.mode.clone(),
            selection: None,
            batch_size: self.batch_size,
            max_failed: self.max_failed,
            max_retries: self.max_retries,
            concurrency: self.concurrency,
            state,
            error,
        }
    }
}

fn to_dt(ns: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(ns)
}

fn from_dt(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Nominal times after `after` (exclusive) that are due at `now`, oldest
/// first.
fn due_times(cron: &Cron, after: i64, now: i64, delay: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut from = to_dt(after);
    while let Ok(next) = cron.find_next_occurrence(&from, false) {
        let t = from_dt(&next);
        if t.saturating_add(delay) > now {
            break;
        }
        out.push(t);
        from = next;
    }
    out
}

/// When the schedule next creates a job (its next nominal time after
/// `now - delay`, plus the delay), ns; `None` for a bad cron expression.
pub fn next_run(spec: &ScheduleSpec, now: i64) -> Option<i64> {
    let cron = spec.check().ok()?;
    let t = cron
        .find_next_occurrence(&to_dt(now.saturating_sub(spec.delay_ns)), false)
        .ok()?;
    Some(from_dt(&t).saturating_add(spec.delay_ns))
}

/// What one tick did for one schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickOutcome {
    /// Jobs queued.
    pub queued: Vec<i64>,
    /// Windows skipped (past the catch-up limit), as skipped jobs.
    pub skipped: usize,
}

/// Creates the due jobs of `spec` at `now` (see the module docs).
///
/// (A plain function returning a `Send` future, so that a spawned loop can
/// await it.)
pub fn tick<'a>(
    db: &'a dyn JobStore,
    spec: &'a ScheduleSpec,
    now: i64,
) -> impl std::future::Future<Output = Result<TickOutcome, ScheduleError>> + Send + 'a {
    tick_inner(db, spec, now)
}

async fn tick_inner(
    db: &dyn JobStore,
    spec: &ScheduleSpec,
    now: i64,
) -> Result<TickOutcome, ScheduleError> {
    let cron = spec.check()?;
    let last = db.last_fire(&spec.name).await?;
    let cap = spec.catch_up as usize;
    let times = match last {
        Some(last) => due_times(&cron, last, now, spec.delay_ns),
        None => {
            // A new schedule: only its newest due window.
            let horizon = now.saturating_sub(spec.delay_ns);
            cron.find_previous_occurrence(&to_dt(horizon), true)
                .ok()
                .map(|t| from_dt(&t))
                .into_iter()
                .collect()
        }
    };
    let Some(&newest) = times.last() else {
        return Ok(TickOutcome::default());
    };
    let skip = times.len().saturating_sub(cap);
    let jobs: Vec<NewJob> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if i < skip {
                spec.job(
                    t,
                    JobState::Skipped,
                    Some(format!(
                        "missed while the scheduler was down, beyond catch_up = {}; \
                         score it with `fleetscore jobs retry` or `fleetscore backfill`",
                        spec.catch_up
                    )),
                )
            } else {
                spec.job(t, JobState::Queued, None)
            }
        })
        .collect();
    let ids = db.schedule_jobs(&spec.name, &jobs, newest, now).await?;
    let mut out = TickOutcome::default();
    for (i, id) in ids.into_iter().enumerate() {
        match id {
            Some(_) if i < skip => out.skipped += 1,
            Some(id) => out.queued.push(id),
            // Already scheduled (by an earlier tick, another process).
            None => {}
        }
    }
    if out.skipped > 0 {
        tracing::warn!(
            schedule = %spec.name,
            skipped = out.skipped,
            catch_up = spec.catch_up,
            "missed windows beyond the catch-up limit recorded as skipped jobs"
        );
    }
    Ok(out)
}
