//! Where time comes from: one injectable clock for every part that reads
//! the wall time (the scheduler, job leases, the ingest log's batch times
//! and idempotency keys), so that tests move time by hand and run hours of
//! schedule in milliseconds.

use std::sync::atomic::{AtomicI64, Ordering};

/// Nanoseconds since the Unix epoch, UTC, from somewhere.
pub trait Clock: Send + Sync {
    /// Now, in nanoseconds since the Unix epoch (saturating: a clock before
    /// 1970 reads as 0, one after 2262 as `i64::MAX`).
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now(), 5);
        c.advance(10);
        assert_eq!(c.now(), 15);
        c.set(-3);
        assert_eq!(c.now(), -3);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800_000_000_000);
    }
}
