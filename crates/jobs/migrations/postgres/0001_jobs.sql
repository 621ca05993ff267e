-- The job store on PostgreSQL: schedules, jobs, tasks and per-model failures.
-- The same tables as the SQLite schema (0001 + 0002 there), in BIGINT.
-- Times are integer nanoseconds since the Unix epoch, UTC.

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY NOT NULL,
    -- The newest cron time (nominal window end) jobs were created for.
    last_fire    BIGINT,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    schedule      TEXT,
    kind          TEXT NOT NULL,      -- scheduled | backfill | manual | retry
    window_start  BIGINT NOT NULL,
    window_end    BIGINT NOT NULL,
    mode          TEXT NOT NULL,      -- raw
    selection     TEXT,               -- JSON list of "device/tag", NULL = all
    state         TEXT NOT NULL,      -- queued | running | succeeded | failed | cancelled | skipped
    batch_size    BIGINT NOT NULL,
    max_failed    TEXT NOT NULL,      -- "10" or "10%"
    max_retries   BIGINT NOT NULL,
    concurrency   TEXT NOT NULL,      -- forbid | allow
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    models        BIGINT NOT NULL DEFAULT 0,
    rows          BIGINT NOT NULL DEFAULT 0,
    anomalies     BIGINT NOT NULL DEFAULT 0,
    failed_models BIGINT NOT NULL DEFAULT 0,
    tasks         BIGINT NOT NULL DEFAULT 0,
    load_ms       BIGINT NOT NULL DEFAULT 0,
    score_ms      BIGINT NOT NULL DEFAULT 0,
    write_ms      BIGINT NOT NULL DEFAULT 0,
    error         TEXT,
    manifest      TEXT,
    planned_at    BIGINT,             -- set once its tasks exist
    lease_owner   TEXT,               -- the process planning or finalizing it
    lease_until   BIGINT
);

-- A schedule scores each of its windows once.
CREATE UNIQUE INDEX jobs_schedule_window
    ON jobs (schedule, window_start, window_end) WHERE schedule IS NOT NULL AND kind = 'scheduled';
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_window ON jobs (window_start);

CREATE TABLE tasks (
    job_id        BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx           BIGINT NOT NULL,
    state         TEXT NOT NULL,      -- queued | running | succeeded | failed | cancelled
    attempts      BIGINT NOT NULL DEFAULT 0,
    first_key     TEXT NOT NULL,
    last_key      TEXT NOT NULL,
    n_keys        BIGINT NOT NULL,
    queued_at     BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    models        BIGINT NOT NULL DEFAULT 0,
    rows          BIGINT NOT NULL DEFAULT 0,
    anomalies     BIGINT NOT NULL DEFAULT 0,
    failed_models BIGINT NOT NULL DEFAULT 0,
    load_ms       BIGINT NOT NULL DEFAULT 0,
    score_ms      BIGINT NOT NULL DEFAULT 0,
    write_ms      BIGINT NOT NULL DEFAULT 0,
    output        TEXT,
    error         TEXT,
    lease_owner   TEXT,               -- the worker running it
    lease_until   BIGINT,
    not_before    BIGINT,             -- a queued retry waits until then
    devices       TEXT,               -- JSON rows/anomalies per device, for the manifest
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX tasks_state ON tasks (state, job_id, idx);

CREATE TABLE model_failures (
    job_id   BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task_idx BIGINT NOT NULL,
    device   TEXT NOT NULL,
    tag      TEXT NOT NULL,
    reason   TEXT NOT NULL,           -- no_model | no_data | feature_mismatch | evaluation
    detail   TEXT NOT NULL,
    rows     BIGINT NOT NULL
);
CREATE INDEX model_failures_job ON model_failures (job_id);
