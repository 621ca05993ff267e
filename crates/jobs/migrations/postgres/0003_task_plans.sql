-- Each task names the plan it belongs to (its staged inputs live under
-- staging/<job>/<plan>/), so a planner that lost its lease, or a slow
-- map task of an earlier plan, can never overwrite what the current
-- plan's tasks read.
ALTER TABLE tasks ADD COLUMN plan_id TEXT;
