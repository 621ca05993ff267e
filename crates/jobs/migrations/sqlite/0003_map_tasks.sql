-- A job's window is read by map tasks (each a share of the raw row groups,
-- bucketed by score task) before its score tasks run; see run.rs.
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'score';
-- Tasks are only looked up by job (the primary key): an index on state
-- only costs every state change a write.
DROP INDEX IF EXISTS tasks_state;
