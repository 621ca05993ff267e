-- A job's window is read by map tasks (each a share of the raw row groups,
-- bucketed by score task) before its score tasks run; see run.rs.
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'score';
-- Tasks are only looked up by job (the primary key). Without an index on
-- state, a state change touches no index and is a HOT update in place
-- (room left on each page for it), so the table does not bloat with dead
-- index entries under a steady stream of leases.
DROP INDEX IF EXISTS tasks_state;
ALTER TABLE tasks SET (fillfactor = 80);
