//! Jobs over a range of time, one per window: what `fleetscore backfill`
//! and the API's `POST /v1/jobs` create, built and checked in one place.
//!
//! The range `[from, to)` is rounded out to whole windows (multiples of
//! the window length since the epoch), so that a window scored by hand is
//! the same window a schedule of that length scores, and writes to the same
//! outputs. Every value comes from a user (flags, a request body), so
//! every step is checked: the range and the windows around it must lie
//! within the times a reading may carry ([`MIN_TS`]..=[`MAX_TS`], 1678 to
//! 2261; a window may end on the instant after the last), there are at
//! most [`MAX_WINDOWS`] of them, and no sum or product of these values
//! can overflow on the way. A refusal is a [`RangeError`] naming the value
//! at fault and what to change.

use fleetscore_core::{MAX_TS, MIN_TS};

use crate::db::{Concurrency, DbError, JobKind, JobState, JobStore, NewJob, Threshold};

/// Jobs created by one request at most.
pub const MAX_WINDOWS: i64 = 10_000;

/// One job per window of `window` ns over `[from, to)`, with these
/// settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowJobs {
    /// Range start (inclusive), ns.
    pub from: i64,
    /// Range end (exclusive), ns.
    pub to: i64,
    /// Window length, ns.
    pub window: i64,
    /// [`JobKind::Backfill`] (the CLI) or [`JobKind::Manual`] (the API).
    pub kind: JobKind,
    /// Only these `device/tag` pairs; `None` = every pair.
    pub selection: Option<Vec<String>>,
    /// Models per task (at least 1; 0 is taken as 1).
    pub batch_size: u32,
    /// Failure threshold.
    pub max_failed: Threshold,
    /// Retries per task.
    pub max_retries: u32,
}

/// Why a range of windows is refused. The names are those of the API's
/// fields (`from`, `to`, `window`, `models`); the CLI's flags carry the
/// same names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The window is zero or negative.
    #[error("window must be longer than zero")]
    EmptyWindow,
    /// `from` or `to` is a time no reading may carry.
    #[error(
        "{field}: {value} ns is outside the times fleetscore represents (1678-01-01 to 2261-12-31)"
    )]
    OutOfRange {
        /// `from` or `to`.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// `from` is not before `to`.
    #[error("from must be before to")]
    Empty,
    /// Rounded out to whole windows, the range passes the first or last
    /// time fleetscore represents.
    #[error(
        "window: whole windows of {window} around from/to reach past the times fleetscore \
         represents (1678-01-01 to 2261-12-31); use a shorter window or a range farther from \
         those ends"
    )]
    PastTheEnds {
        /// The window, as a span (`1h`).
        window: String,
    },
    /// More windows than [`MAX_WINDOWS`].
    #[error(
        "{windows} windows of {window} in that range: at most {MAX_WINDOWS} at a time; narrow \
         from/to or use a longer window"
    )]
    TooMany {
        /// How many the range holds.
        windows: i128,
        /// The window, as a span.
        window: String,
    },
    /// A selected pair is not `device/tag`.
    #[error("models: {0:?} is not DEVICE/TAG")]
    Selection(String),
}

impl WindowJobs {
    /// The jobs to create, oldest window first; or why there are none.
    pub fn jobs(&self) -> Result<Vec<NewJob>, RangeError> {
        let w = self.window;
        if w <= 0 {
            return Err(RangeError::EmptyWindow);
        }
        for (field, value) in [("from", self.from), ("to", self.to)] {
            if !(MIN_TS..=MAX_TS).contains(&value) {
                return Err(RangeError::OutOfRange { field, value });
            }
        }
        if self.from >= self.to {
            return Err(RangeError::Empty);
        }
        if let Some(bad) = self.selection.iter().flatten().find(|m| {
            m.split_once('/')
                .is_none_or(|(d, t)| d.is_empty() || t.is_empty())
        }) {
            return Err(RangeError::Selection(bad.clone()));
        }
        let span = fleetscore_store::lake::window_name(w);
        // In i128: the windows around from/to may not fit an i64.
        let w = i128::from(w);
        let start = i128::from(self.from).div_euclid(w) * w;
        let end = -(-i128::from(self.to)).div_euclid(w) * w;
        if start < i128::from(MIN_TS) || end > i128::from(MAX_TS) + 1 {
            return Err(RangeError::PastTheEnds { window: span });
        }
        let windows = (end - start) / w;
        if windows > i128::from(MAX_WINDOWS) {
            return Err(RangeError::TooMany {
                windows,
                window: span,
            });
        }
        let job = |i: i128| {
            // Within [MIN_TS, MAX_TS + 1], checked above.
            let at = |k: i128| i64::try_from(start + k * w).expect("within the checked range");
            NewJob {
                schedule: None,
                kind: self.kind,
                window_start: at(i),
                window_end: at(i + 1),
                mode: "raw".into(),
                selection: self.selection.clone(),
                batch_size: self.batch_size.max(1),
                max_failed: self.max_failed,
                max_retries: self.max_retries,
                concurrency: Concurrency::Allow,
                state: JobState::Queued,
                error: None,
            }
        };
        Ok((0..windows).map(job).collect())
    }
}

/// Creates `jobs` (from [`WindowJobs::jobs`]) at `now`; returns their ids
/// in order. Stops at the first the store refuses (those before it stay
/// queued).
pub async fn create_jobs(
    db: &dyn JobStore,
    jobs: &[NewJob],
    now: i64,
) -> Result<Vec<i64>, DbError> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        ids.push(db.create_job(job, now).await?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;
    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000_000;

    fn range(from: i64, to: i64, window: i64) -> WindowJobs {
        WindowJobs {
            from,
            to,
            window,
            kind: JobKind::Backfill,
            selection: None,
            batch_size: 0,
            max_failed: Threshold::Count(1),
            max_retries: 2,
        }
    }

    #[test]
    fn a_range_is_rounded_out_to_whole_windows() {
        let jobs = range(T0 + HOUR / 2, T0 + 2 * HOUR + 1, HOUR)
            .jobs()
            .unwrap();
        let windows: Vec<(i64, i64)> = jobs
            .iter()
            .map(|j| (j.window_start, j.window_end))
            .collect();
        assert_eq!(
            windows,
            [
                (T0, T0 + HOUR),
                (T0 + HOUR, T0 + 2 * HOUR),
                (T0 + 2 * HOUR, T0 + 3 * HOUR)
            ]
        );
        let j = &jobs[0];
        assert_eq!(
            (j.kind, j.state, j.batch_size),
            (JobKind::Backfill, JobState::Queued, 1)
        );
        assert_eq!((j.concurrency, j.max_retries), (Concurrency::Allow, 2));
        // Before 1970 too (rounded down, not toward zero).
        let jobs = range(-HOUR - 1, -HOUR + 1, HOUR).jobs().unwrap();
        assert_eq!(jobs[0].window_start, -2 * HOUR);
        assert_eq!(jobs.last().unwrap().window_end, 0);
    }

    /// Windows and ranges near the ends of an i64 of nanoseconds are
    /// refused saying why; none overflows.
    #[test]
    fn windows_near_the_ends_of_time_are_refused_not_overflowed() {
        let past = |r: WindowJobs| matches!(r.jobs(), Err(RangeError::PastTheEnds { .. }));
        // One window of ~292 years from 1970 would end after 2262.
        assert!(past(range(T0, T0 + HOUR, i64::MAX)));
        assert!(past(range(T0, T0 + HOUR, 106_751 * 24 * HOUR)));
        // Rounded up past the last i64 / down past the first.
        assert!(past(range(MAX_TS - HOUR, MAX_TS, 100_000 * 24 * HOUR)));
        assert!(past(range(MIN_TS, MIN_TS + HOUR, 200 * 24 * HOUR)));
        // The whole representable range in hours: too many, counted in i128.
        let e = range(MIN_TS, MAX_TS, HOUR).jobs().unwrap_err();
        assert!(
            matches!(e, RangeError::TooMany { windows, .. } if windows > 5_000_000),
            "{e}"
        );
        assert!(e
            .to_string()
            .contains("windows of 1h in that range: at most 10000"));
        // The last hour there is, and the first.
        let last = range(MAX_TS - HOUR + 1, MAX_TS, HOUR).jobs().unwrap();
        assert_eq!(last.last().unwrap().window_end, MAX_TS + 1);
        let first = range(MIN_TS, MIN_TS + 1, HOUR).jobs().unwrap();
        assert_eq!(first[0].window_start, MIN_TS);
        // Times no reading may carry, and the other refusals.
        assert_eq!(
            range(i64::MIN, T0, HOUR).jobs(),
            Err(RangeError::OutOfRange {
                field: "from",
                value: i64::MIN
            })
        );
        assert!(matches!(
            range(T0, i64::MAX, HOUR).jobs(),
            Err(RangeError::OutOfRange { field: "to", .. })
        ));
        assert_eq!(range(T0, T0, HOUR).jobs(), Err(RangeError::Empty));
        assert_eq!(range(T0, T0 + 1, 0).jobs(), Err(RangeError::EmptyWindow));
        assert_eq!(
            range(T0, T0 + 1, i64::MIN).jobs(),
            Err(RangeError::EmptyWindow)
        );
    }

    #[test]
    fn a_selection_names_device_and_tag() {
        let mut r = range(T0, T0 + HOUR, HOUR);
        r.selection = Some(vec!["d1/t".into(), "d2".into()]);
        assert_eq!(r.jobs(), Err(RangeError::Selection("d2".into())));
        r.selection = Some(vec!["d1/t".into(), "/t".into()]);
        assert_eq!(r.jobs(), Err(RangeError::Selection("/t".into())));
        r.selection = Some(vec!["d1/t".into()]);
        assert_eq!(r.jobs().unwrap()[0].selection, r.selection);
    }
}
