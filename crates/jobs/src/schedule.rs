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

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::db::{Concurrency, JobKind, JobState, JobStore, NewJob, Threshold};

/// The clock schedules and leases read (one definition, in `fleetscore-core`).
pub use fleetscore_core::{Clock, ManualClock, SystemClock};

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

    /// The window `[t - window, t)` of nominal time `t`; refused (not
    /// overflowed) when it would start before the first time an `i64` of
    /// nanoseconds holds (a window of centuries before a time before 1970).
    pub fn window(&self, t: i64) -> Result<(i64, i64), ScheduleError> {
        match t.checked_sub(self.window_ns) {
            Some(start) => Ok((start, t)),
            None => Err(ScheduleError::Invalid {
                name: self.name.clone(),
                reason: format!(
                    "the window of {} ns before {} starts before the earliest time fleetscore \
                     represents; use a shorter window",
                    self.window_ns,
                    fleetscore_core::format_ts(t)
                ),
            }),
        }
    }

    fn job(&self, t: i64, state: JobState, error: Option<String>) -> Result<NewJob, ScheduleError> {
        let (window_start, window_end) = self.window(t)?;
        Ok(NewJob {
            schedule: Some(self.name.clone()),
            kind: JobKind::Scheduled,
            window_start,
            window_end,
            mode: self.mode.clone(),
            selection: None,
            batch_size: self.batch_size,
            max_failed: self.max_failed,
            max_retries: self.max_retries,
            concurrency: self.concurrency,
            state,
            error,
        })
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

/// Whether [`tick`] at `now` would create any job of `spec` (a window
/// already scheduled by another process counts too). A caller that must
/// prepare for new jobs asks this first: `serve` compacts its ingest log
/// then, so that the jobs see every reading acknowledged so far.
pub fn due<'a>(
    db: &'a dyn JobStore,
    spec: &'a ScheduleSpec,
    now: i64,
) -> impl std::future::Future<Output = Result<bool, ScheduleError>> + Send + 'a {
    due_inner(db, spec, now)
}

async fn due_inner(
    db: &dyn JobStore,
    spec: &ScheduleSpec,
    now: i64,
) -> Result<bool, ScheduleError> {
    let cron = spec.check()?;
    Ok(!due_windows(db, spec, &cron, now).await?.is_empty())
}

/// The nominal times of `spec` that [`tick`] would create jobs for at
/// `now`, oldest first.
async fn due_windows(
    db: &dyn JobStore,
    spec: &ScheduleSpec,
    cron: &Cron,
    now: i64,
) -> Result<Vec<i64>, ScheduleError> {
    Ok(match db.last_fire(&spec.name).await? {
        Some(last) => due_times(cron, last, now, spec.delay_ns),
        None => {
            // A new schedule: only its newest due window.
            let horizon = now.saturating_sub(spec.delay_ns);
            cron.find_previous_occurrence(&to_dt(horizon), true)
                .ok()
                .map(|t| from_dt(&t))
                .into_iter()
                .collect()
        }
    })
}

async fn tick_inner(
    db: &dyn JobStore,
    spec: &ScheduleSpec,
    now: i64,
) -> Result<TickOutcome, ScheduleError> {
    let cron = spec.check()?;
    let cap = spec.catch_up as usize;
    let times = due_windows(db, spec, &cron, now).await?;
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
        .collect::<Result<_, _>>()?;
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

/// The newest nominal time `T` of `spec` that is due at `now`
/// (`T + delay <= now`): the window `[T - window, T)` that a run started at
/// `now` should score. What a Kubernetes CronJob's pod (`fleetscore score
/// --schedule NAME`) uses, so that the pod computes its window itself.
pub fn latest_due(spec: &ScheduleSpec, now: i64) -> Result<Option<i64>, ScheduleError> {
    let cron = spec.check()?;
    Ok(cron
        .find_previous_occurrence(&to_dt(now.saturating_sub(spec.delay_ns)), true)
        .ok()
        .map(|t| from_dt(&t)))
}

/// The first `count` nominal times of `spec` after `after` (exclusive).
pub fn nominal_times(
    spec: &ScheduleSpec,
    after: i64,
    count: usize,
) -> Result<Vec<i64>, ScheduleError> {
    let cron = spec.check()?;
    let mut out = Vec::with_capacity(count);
    let mut from = to_dt(after);
    while out.len() < count {
        let Ok(next) = cron.find_next_occurrence(&from, false) else {
            break;
        };
        out.push(from_dt(&next));
        from = next;
    }
    Ok(out)
}

/// A five-field cron expression whose times are those of `cron` moved
/// later by `delay_ns`, or `None` when there is none this function can
/// write: the delay must be whole minutes, the moved times of a day must
/// still be every listed minute of every listed hour, and a move past
/// midnight needs `*` day, month and weekday fields. `0 * * * *` moved by
/// 5 minutes is `5 * * * *`; `0 0 * * *` by 90 minutes is `30 1 * * *`.
///
/// The result is checked against the original over a thousand times, so a
/// `Some` is never wrong.
pub fn shifted_cron(cron: &str, delay_ns: i64) -> Option<String> {
    const MIN_NS: i64 = 60_000_000_000;
    if delay_ns < 0 || delay_ns % MIN_NS != 0 {
        return None;
    }
    let original: Cron = cron.parse().ok()?;
    let d = delay_ns / MIN_NS;
    if d == 0 {
        return Some(cron.to_string());
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if fields.len() != 5 {
        return None;
    }
    // The minutes of a day on which the minute and hour fields fire.
    let day: Cron = format!("{} {} * * *", fields[0], fields[1]).parse().ok()?;
    let start = to_dt(0);
    let mut minutes = BTreeSet::new();
    let mut from = start;
    while let Ok(next) = day.find_next_occurrence(&from, true) {
        let m = (from_dt(&next) - from_dt(&start)) / MIN_NS;
        if m >= 1440 {
            break;
        }
        minutes.insert(m);
        from = next + chrono::Duration::minutes(1);
    }
    let days_free = fields[2..] == ["*", "*", "*"];
    if !days_free && minutes.iter().any(|m| m + d >= 1440) {
        return None;
    }
    let moved: BTreeSet<i64> = minutes.iter().map(|m| (m + d) % 1440).collect();
    let hours: BTreeSet<i64> = moved.iter().map(|m| m / 60).collect();
    let mins: BTreeSet<i64> = moved.iter().map(|m| m % 60).collect();
    if hours.len() * mins.len() != moved.len() {
        return None;
    }
    let text = format!(
        "{} {} {} {} {}",
        cron_field(&mins, 60),
        cron_field(&hours, 24),
        fields[2],
        fields[3],
        fields[4]
    );
    let shifted: Cron = text.parse().ok()?;
    // Check: the next thousand times of both, from an arbitrary instant.
    let t0 = to_dt(1_700_000_000_000_000_000);
    let (mut a, mut b) = (t0, t0 + chrono::Duration::minutes(d));
    for _ in 0..1000 {
        let na = original.find_next_occurrence(&a, false).ok()?;
        let nb = shifted.find_next_occurrence(&b, false).ok()?;
        if na + chrono::Duration::minutes(d) != nb {
            return None;
        }
        (a, b) = (na, nb);
    }
    Some(text)
}

/// One cron field for a set of values in `0..max`: `*`, `*/K`, `A-B/K`,
/// or a list.
fn cron_field(values: &BTreeSet<i64>, max: i64) -> String {
    let v: Vec<i64> = values.iter().copied().collect();
    if v.len() as i64 == max {
        return "*".into();
    }
    if v.len() >= 2 {
        let step = v[1] - v[0];
        let even = v.windows(2).all(|w| w[1] - w[0] == step);
        // A full progression to the end of the range, from its first value.
        if even && v[0] < step && v[v.len() - 1] + step >= max {
            return if v[0] == 0 {
                format!("*/{step}")
            } else {
                format!("{}-{}/{step}", v[0], max - 1)
            };
        }
    }
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn spec(cron: &str, window_min: i64, delay_min: i64) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            cron: cron.into(),
            window_ns: window_min * MIN,
            delay_ns: delay_min * MIN,
            mode: "raw".into(),
            batch_size: 10,
            max_failed: Threshold::Count(0),
            max_retries: 0,
            concurrency: Concurrency::Forbid,
            catch_up: 1,
        }
    }

    fn ts(s: &str) -> i64 {
        fleetscore_core::parse_ts(s).unwrap()
    }

    #[test]
    fn latest_due_is_the_newest_window_past_its_delay() {
        let s = spec("0 * * * *", 60, 5);
        // 10:04: 10:00 is not due until 10:05, so 09:00 (window 08-09).
        assert_eq!(
            latest_due(&s, ts("2024-05-01T10:04:59Z")).unwrap(),
            Some(ts("2024-05-01T09:00:00Z"))
        );
        assert_eq!(
            latest_due(&s, ts("2024-05-01T10:05:00Z")).unwrap(),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert_eq!(
            latest_due(&s, ts("2024-05-01T10:59:00Z")).unwrap(),
            Some(ts("2024-05-01T10:00:00Z"))
        );
        assert!(latest_due(&spec("nonsense", 60, 5), 0).is_err());
    }

    /// A window of nearly 300 years before a time before 1970 would start
    /// before the first i64: refused, not wrapped to the far future.
    #[test]
    fn a_window_reaching_before_the_first_instant_is_refused() {
        let mut s = spec("0 * * * *", 60, 0);
        assert_eq!(
            s.window(ts("2024-05-01T10:00:00Z")).unwrap().1,
            ts("2024-05-01T10:00:00Z")
        );
        s.window_ns = i64::MAX;
        assert_eq!(s.window(0).unwrap(), (-i64::MAX, 0));
        let e = s.window(ts("1969-12-31T23:00:00Z")).unwrap_err();
        assert!(e.to_string().contains("use a shorter window"), "{e}");
    }

    #[test]
    fn nominal_times_are_consecutive() {
        let s = spec("*/15 * * * *", 15, 0);
        let t = nominal_times(&s, ts("2024-05-01T10:00:00Z"), 3).unwrap();
        assert_eq!(
            t,
            vec![
                ts("2024-05-01T10:15:00Z"),
                ts("2024-05-01T10:30:00Z"),
                ts("2024-05-01T10:45:00Z")
            ]
        );
    }

    #[test]
    fn cron_moves_by_whole_minutes_or_not_at_all() {
        let m = |c: &str, d: i64| shifted_cron(c, d * MIN);
        assert_eq!(m("0 * * * *", 5).as_deref(), Some("5 * * * *"));
        assert_eq!(m("0 * * * *", 0).as_deref(), Some("0 * * * *"));
        assert_eq!(m("0 0 * * *", 90).as_deref(), Some("30 1 * * *"));
        assert_eq!(m("*/15 * * * *", 5).as_deref(), Some("5-59/15 * * * *"));
        assert_eq!(m("0 */6 * * *", 30).as_deref(), Some("30 */6 * * *"));
        assert_eq!(m("0 */6 * * *", 60).as_deref(), Some("0 1-23/6 * * *"));
        // Past midnight with free day fields: fine; with a weekday: no.
        assert_eq!(m("30 23 * * *", 45).as_deref(), Some("15 0 * * *"));
        assert_eq!(m("30 23 * * 1", 45), None);
        // Within the day, a weekday stays put.
        assert_eq!(m("0 9 * * 1-5", 10).as_deref(), Some("10 9 * * 1-5"));
        // Not a product of minutes and hours any more.
        assert_eq!(m("50 8,12 * * *", 20).as_deref(), Some("10 9,13 * * *"));
        assert_eq!(m("0,50 * * * *", 20).as_deref(), Some("10,20 * * * *"));
        // 08:40 and 09:10 are not every listed minute of every listed hour.
        assert_eq!(m("0,30 8 * * *", 40), None);
        // Not whole minutes.
        assert_eq!(shifted_cron("0 * * * *", 30_000_000_000), None);
    }
}
