-- Leases: work is handed to processes for a time, so a process that
-- vanishes loses it to others (see db.rs). Times are ns since the epoch.
ALTER TABLE jobs ADD COLUMN planned_at INTEGER;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_until INTEGER;
ALTER TABLE tasks ADD COLUMN not_before INTEGER;
ALTER TABLE tasks ADD COLUMN devices TEXT;
-- Jobs planned by the runner before leases existed count as planned.
UPDATE jobs SET planned_at = started_at WHERE state <> 'queued' AND started_at IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, job_id, idx);
