-- River's two GIN indexes, on river_job.args and river_job.metadata, are
-- dropped: nothing errand runs reads them, and every job pays them three
-- times (River's enqueue, fetch and completion each write a new row version
-- whose state changed, so no update is HOT and each GIN index takes an
-- entry per key and per value of the column, every time).
--
-- What read them: River's JobList with a Metadata filter (`metadata @>`),
-- which errand's CLI, dashboard and queries do not use. errand finds jobs by
-- workspace, status, kind and id (migration 011's indexes); a team that
-- lists jobs by args or metadata through River's API can create either
-- index again under the same name (CREATE INDEX CONCURRENTLY), and errand
-- then leaves it there and has River's reindexer keep it
-- (docs/scale.md, "River's GIN indexes").
--
-- DROP INDEX takes River's table's lock for the moment it needs, not for a
-- build: a migration beside running replicas waits behind their
-- transactions, then goes at once.
DROP INDEX IF EXISTS errand.river_job_args_index;
DROP INDEX IF EXISTS errand.river_job_metadata_index;
