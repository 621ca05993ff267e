//! What the job runner keeps beside the lake: a job's staged inputs
//! between its steps, and its logs.
//!
//! ```text
//! staging/<job>/<plan>/plan.json          a plan: its score and map tasks
//! staging/<job>/<plan>/map-<m>.bin        a map task's output (the readings of score tasks)
//! logs/<job>/job.log                      the job's outcome, one line
//! logs/<job>/task-<idx>.log               a task's attempts
//! ```
//!
//! A plan's objects live under their own `<plan>` id, so nothing of
//! another plan of the job (a planner that lost its lease, a slow map task
//! of an earlier run) overwrites them. Staged inputs go when the job ends;
//! logs stay.

/// Everything staged for `job`, all plans.
pub fn staging_prefix(job: i64) -> String {
    format!("staging/{job}/")
}

/// The plan `plan` of `job`.
pub fn plan_key(job: i64, plan: &str) -> String {
    format!("staging/{job}/{plan}/plan.json")
}

/// Map task `m`'s output in plan `plan` of `job`.
pub fn map_key(job: i64, plan: &str, m: u32) -> String {
    format!("staging/{job}/{plan}/map-{m:05}.bin")
}

/// Every log of `job`.
pub fn logs_prefix(job: i64) -> String {
    format!("logs/{job}/")
}

/// The job's own log.
pub fn job_log_key(job: i64) -> String {
    format!("logs/{job}/job.log")
}

/// Task `idx`'s log (all its attempts).
pub fn task_log_key(job: i64, idx: u32) -> String {
    format!("logs/{job}/task-{idx:05}.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_their_prefixes() {
        assert!(plan_key(7, "p1").starts_with(&staging_prefix(7)));
        assert!(map_key(7, "p1", 3).starts_with(&staging_prefix(7)));
        assert_eq!(map_key(7, "p1", 3), "staging/7/p1/map-00003.bin");
        assert!(job_log_key(7).starts_with(&logs_prefix(7)));
        assert_eq!(task_log_key(7, 2), "logs/7/task-00002.log");
        // Job 7's prefixes do not take in job 70's keys.
        assert!(!job_log_key(70).starts_with(&logs_prefix(7)));
        assert!(!plan_key(70, "p").starts_with(&staging_prefix(7)));
    }
}
