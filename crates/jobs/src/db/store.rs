//! [`JobStore`]: what the scheduler, the runner, the workers, the CLI and
//! the API need from a job store.
//!
//! Every time argument is nanoseconds since the epoch on the caller's
//! [`Clock`](crate::schedule::Clock): `now` is when the call happens,
//! `until` when the lease it takes ends. The store never reads a clock of
//! its own, so that every process sharing it compares lease times on the
//! clock they were written with, and a test moves that clock by hand.

use async_trait::async_trait;

use super::{FailureRecord, IdleWork, JobFilter, JobRecord, JobStats, NewJob, Result};
use super::{TaskKind, TaskRecord};

/// What the scheduler, the runner, the workers, the CLI and the API need
/// from a job store.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Where it is, for messages (a password in it replaced by `***`).
    fn url(&self) -> &str;
    /// Where it is, as given: to connect with (never to print).
    fn connection_url(&self) -> &str {
        self.url()
    }
    /// The newest fire time jobs were created for, per schedule.
    async fn last_fire(&self, schedule: &str) -> Result<Option<i64>>;
    /// Creates a schedule's jobs (a window already scheduled is left alone)
    /// and records `last_fire`, in one transaction. Returns each job's new
    /// id, `None` where the window already had its job.
    async fn schedule_jobs(
        &self,
        schedule: &str,
        jobs: &[NewJob],
        last_fire: i64,
        now: i64,
    ) -> Result<Vec<Option<i64>>>;
    /// Creates one job (backfill, manual).
    async fn create_job(&self, job: &NewJob, now: i64) -> Result<i64>;
    /// Takes the oldest runnable queued job (respecting `forbid`), or a
    /// running job whose planner's lease expired before `now` before it was
    /// planned, marks it running (started at `now`) and leases it to `owner`
    /// until `until` for planning. `only` limits the claim to one job (this
    /// and the other claims).
    async fn claim_job(
        &self,
        now: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>>;
    /// One job.
    async fn job(&self, id: i64) -> Result<JobRecord>;
    /// Jobs, newest first.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    /// Records a claimed job's plan: replaces its tasks (and failures) with
    /// `tasks`, stores its figures so far (`tasks`, `load_ms`, `models`:
    /// the pairs planned), marks it planned and ends `owner`'s lease.
    /// `false` (nothing written) if `owner` no longer holds the job.
    async fn plan_job(&self, job: &JobRecord, tasks: &[TaskRecord], owner: &str) -> Result<bool>;
    /// Leases the next runnable task of a planned running job (queued and
    /// past its `not_before` at `now`, or running with a lease that expired
    /// before `now`) to `owner` until `until`: marks it running (started
    /// at `now`) and counts the attempt.
    async fn lease_task(
        &self,
        now: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<TaskRecord>>;
    /// When the earliest queued retry of a running job may run (its
    /// `not_before`), if any: a runner going idle waits for it.
    async fn next_retry(&self) -> Result<Option<i64>>;
    /// Whether [`JobStore::claim_finalize`] and [`JobStore::claim_job`]
    /// could find a job at `now` (`only` limits it to one job), in one
    /// round trip: a runner without a task asks this instead of trying
    /// both claims, which mostly find nothing while other runners finish a
    /// job's tasks. Advisory: a claim still decides.
    async fn idle_work(&self, now: i64, only: Option<i64>) -> Result<IdleWork>;
    /// Extends a task's lease to `until`; `false` if `owner` lost it.
    async fn renew_task(&self, job: i64, idx: u32, owner: &str, until: i64) -> Result<bool>;
    /// Extends a job's planning or finalizing lease; `false` if lost.
    async fn renew_job(&self, job: i64, owner: &str, until: i64) -> Result<bool>;
    /// Records the end of a leased attempt (succeeded, failed, or queued
    /// again for a retry after `not_before`) with its failed models, and
    /// ends the lease, in one transaction. `false` (nothing written) if
    /// `owner` no longer holds the task.
    async fn finish_task(
        &self,
        task: &TaskRecord,
        failures: &[FailureRecord],
        owner: &str,
    ) -> Result<bool>;
    /// Hands a leased task back unfinished (a worker stopping): queued
    /// again, the attempt not counted.
    async fn release_task(&self, job: i64, idx: u32, owner: &str) -> Result<bool>;
    /// Takes a planned running job whose tasks have all ended (and which
    /// nobody holds, or whose holder's lease expired before `now`), for
    /// finalizing (the manifest, the outcome), leased to `owner`.
    async fn claim_finalize(
        &self,
        now: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>>;
    /// Records a job's outcome and ends `owner`'s lease; `false` (nothing
    /// written) if the job is no longer running under `owner`'s lease (a
    /// cancel, or another process took over).
    async fn finish_job(&self, job: &JobRecord, owner: &str) -> Result<bool>;
    /// The job's tasks.
    async fn tasks(&self, job: i64) -> Result<Vec<TaskRecord>>;
    /// The job's failed models.
    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>>;
    /// Stores a job's figures and state (unconditionally).
    async fn update_job(&self, job: &JobRecord) -> Result<()>;
    /// Cancels a queued or running job at `now`: its queued tasks are
    /// cancelled, running ones finish their attempt.
    async fn cancel(&self, id: i64, now: i64) -> Result<JobRecord>;
    /// Queues a failed, cancelled or skipped job again.
    async fn retry(&self, id: i64) -> Result<JobRecord>;
    /// The finished tasks that took longest, slowest first; only those of
    /// `kind` if given.
    async fn slowest_tasks(&self, limit: u32, kind: Option<TaskKind>) -> Result<Vec<TaskRecord>>;
    /// Totals for `/metrics`.
    async fn stats(&self) -> Result<JobStats>;
    /// Tasks waiting for a worker (queued, or with a lease expired before
    /// `now`) plus jobs waiting to be planned: what an autoscaler scales
    /// workers on.
    async fn pending(&self, now: i64) -> Result<u64>;
    /// Sets a schedule's last window end, also backwards: the next tick
    /// then catches up from there (windows already scheduled stay as they
    /// are, so none is scored twice).
    async fn rewind_schedule(&self, schedule: &str, last_fire: i64, now: i64) -> Result<()>;
}
