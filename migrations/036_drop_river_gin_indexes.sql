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
-- DROP INDEX needs River's table to itself for a moment, not for a build:
-- beside running replicas it waits for the transactions then touching
-- river_job to end (River's and the app's, milliseconds each), and every
-- statement on the table queues behind it meanwhile. So it waits at most 5
-- seconds: behind a longer transaction (a report reading errand.jobs, say)
-- the migration stops with an error that says so, nothing applied, and
-- `errand migrate` can run again once that transaction has ended.
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    DROP INDEX IF EXISTS errand.river_job_args_index;
    DROP INDEX IF EXISTS errand.river_job_metadata_index;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'migration 036 waited 5 seconds to drop River''s GIN indexes and gave up: another transaction holds errand.river_job'
        USING ERRCODE = 'lock_not_available',
              HINT = 'Run errand migrate again once it has ended; pg_stat_activity shows it (a long query on errand.jobs or errand.river_job).';
END $$;
