-- The job store: schedules, jobs, tasks and per-model failures.
-- Times are integer nanoseconds since the Unix epoch, UTC.

CREATE TABLE schedules (
    name         TEXT PRIMARY KEY NOT NULL,
    -- The newest cron time (nominal window end) jobs were created for.
    last_fire    INTEGER,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule      TEXT,
    kind          TEXT NOT NULL,      -- scheduled | backfill | manual | retry
    window_start  INTEGER NOT NULL,
    window_end    INTEGER NOT NULL,
    mode          TEXT NOT NULL,      -- raw
    selection     TEXT,               -- JSON list of "device/tag", NULL = all
    state         TEXT NOT NULL,      -- queued | running | succeeded | failed | cancelled | skipped
    batch_size    INTEGER NOT NULL,
    max_failed    TEXT NOT NULL,      -- "10" or "10%"
    max_retries   INTEGER NOT NULL,
    concurrency   TEXT NOT NULL,      -- forbid | allow
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    models        INTEGER NOT NULL DEFAULT 0,
    rows          INTEGER NOT NULL DEFAULT 0,
    anomalies     INTEGER NOT NULL DEFAULT 0,
    failed_models INTEGER NOT NULL DEFAULT 0,
    tasks         INTEGER NOT NULL DEFAULT 0,
    load_ms       INTEGER NOT NULL DEFAULT 0,
    score_ms      INTEGER NOT NULL DEFAULT 0,
    write_ms      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    manifest      TEXT
);

-- A schedule scores each of its windows once.
CREATE UNIQUE INDEX jobs_schedule_window
    ON jobs (schedule, window_start, window_end) WHERE schedule IS NOT NULL AND kind = 'scheduled';
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_window ON jobs (window_start);

CREATE TABLE tasks (
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    state         TEXT NOT NULL,      -- queued | running | succeeded | failed | cancelled
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_key     TEXT NOT NULL,
    last_key      TEXT NOT NULL,
    n_keys        INTEGER NOT NULL,
    queued_at     INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    models        INTEGER NOT NULL DEFAULT 0,
    rows          INTEGER NOT NULL DEFAULT 0,
    anomalies     INTEGER NOT NULL DEFAULT 0,
    failed_models INTEGER NOT NULL DEFAULT 0,
    load_ms       INTEGER NOT NULL DEFAULT 0,
    score_ms      INTEGER NOT NULL DEFAULT 0,
    write_ms      INTEGER NOT NULL DEFAULT 0,
    output        TEXT,
    error         TEXT,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE model_failures (
    job_id   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task_idx INTEGER NOT NULL,
    device   TEXT NOT NULL,
    tag      TEXT NOT NULL,
    reason   TEXT NOT NULL,           -- no_model | no_data | feature_mismatch | evaluation
    detail   TEXT NOT NULL,
    rows     INTEGER NOT NULL
);
CREATE INDEX model_failures_job ON model_failures (job_id);
