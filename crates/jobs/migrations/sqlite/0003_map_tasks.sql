-- A job's window is read by map tasks (each a share of the raw row groups,
-- bucketed by score task) before its score tasks run; see run.rs.
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'score';
