//! Leases on the injected clock: when a lease taken now ends, when a
//! retry may run, and a renewer that keeps a lease alive while its holder
//! works.
//!
//! Every lease time a runner writes to the job store comes from one
//! [`Clock`] (see [`crate::db`]'s module docs): in production the system
//! clock, whose readings the processes sharing a store compare across
//! hosts; in tests a [`ManualClock`](crate::schedule::ManualClock), so
//! that a test expires a lease, or lets a renewal keep it, by moving the
//! clock rather than by waiting.
//!
//! Arithmetic on lease times saturates: a lease configured near the
//! longest span an `i64` of nanoseconds holds ends at the last instant
//! rather than wrapping into the past (which would hand the work to
//! everyone at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::db::{DbError, JobStore};
use crate::schedule::Clock;

/// What a lease is held on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A job, for planning or finalizing it.
    Job(i64),
    /// A task of a job, to run one attempt of it.
    Task {
        /// The job.
        job: i64,
        /// The task's index in its job.
        idx: u32,
    },
}

/// The leases of one holder: its name, their length, and the clock their
/// times are read from.
#[derive(Clone)]
pub struct Leases {
    clock: Arc<dyn Clock>,
    owner: String,
    length: Duration,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("owner", &self.owner)
            .field("length", &self.length)
            .field("now", &self.clock.now())
            .finish()
    }
}

/// `d` in nanoseconds, at most `i64::MAX`.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Leases {
    /// Leases of `length` held by `owner`, timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>, owner: impl Into<String>, length: Duration) -> Leases {
        Leases {
            clock,
            owner: owner.into(),
            length,
        }
    }

    /// The name the leases are held under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a lease lasts without renewal.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The clock's time now, ns.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// When a lease taken or renewed now ends.
    pub fn until(&self) -> i64 {
        self.after(self.length)
    }

    /// `wait` from now (a retry's `not_before`), saturating.
    pub fn after(&self, wait: Duration) -> i64 {
        self.clock.now().saturating_add(nanos(wait))
    }

    /// Extends the lease on `held` to [`Leases::until`]; `false` if this
    /// holder lost it (it expired and another took it, or the work ended).
    pub async fn renew(&self, db: &dyn JobStore, held: Held) -> Result<bool, DbError> {
        let until = self.until();
        match held {
            Held::Job(job) => db.renew_job(job, &self.owner, until).await,
            Held::Task { job, idx } => db.renew_task(job, idx, &self.owner, until).await,
        }
    }

    /// Renews the lease on `held` every third of its length (at least
    /// every 10 ms) until the returned [`Renewer`] is dropped.
    pub fn keep(&self, db: Arc<dyn JobStore>, held: Held) -> Renewer {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let every = (self.length / 3).max(Duration::from_millis(10));
        let leases = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match leases.renew(&*db, held).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(?held, "lease lost: another process took over");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The store is down: keep trying; the lease may still
                    // hold when it is back.
                    Err(e) => tracing::warn!(?held, "renewing a lease failed: {e}"),
                }
            }
        });
        Renewer { handle, lost }
    }
}

/// Renews a lease (see [`Leases::keep`]) until dropped; [`Renewer::lost`]
/// turns true once the store says the lease is gone.
#[derive(Debug)]
pub struct Renewer {
    handle: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Renewer {
    /// Whether the lease was lost: the holder's work is another's now,
    /// and what it records will be refused.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ManualClock;

    #[test]
    fn lease_times_come_from_the_clock_and_saturate() {
        let clock = Arc::new(ManualClock::new(1_000));
        let l = Leases::new(clock.clone(), "a", Duration::from_nanos(500));
        assert_eq!((l.now(), l.until()), (1_000, 1_500));
        clock.advance(100);
        assert_eq!(l.until(), 1_600);
        assert_eq!(l.after(Duration::from_nanos(7)), 1_107);
        // A lease of centuries ends at the last instant, not in the past.
        let long = Leases::new(clock.clone(), "a", Duration::from_secs(u64::MAX));
        assert_eq!(long.until(), i64::MAX);
        clock.set(i64::MAX - 10);
        assert_eq!(l.until(), i64::MAX);
    }
}
