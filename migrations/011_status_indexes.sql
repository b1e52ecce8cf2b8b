-- Status filters through errand.jobs that use indexes, with millions of
-- finished jobs retained (docs/scale.md has the measurements).
--
-- errand.jobs.status is a CASE over River's state, which no index carried:
-- "a workspace's failed jobs" walked the primary key through every job. The
-- CASE is now also an immutable function, errand.job_status, and indexes
-- carry it. The planner inlines the function, in index definitions as in
-- queries, so the view's own CASE (unchanged) matches these indexes exactly;
-- store/watch_test.go asserts the plans, so a view whose CASE drifts from
-- the function fails there instead of bringing the scans back.
--
-- Each index is paid on a job's writes (River's enqueue, fetch and
-- completion each add an entry to every index: the state changes, so no
-- update is HOT):
--   * river_job_workspace_status_idx replaces river_job_workspace_idx
--     (workspace, state): the same cost per write, and it also serves a
--     workspace's jobs by status in id order, with the status a parameter.
--   * The two cross-workspace indexes leave completed jobs out: written on
--     two of a job's three writes, and as small as the backlog and the
--     failed jobs, however many completed ones are kept. A query reaches
--     them only with its status written as a literal other than completed
--     (the planner must prove the index's condition from the query), which
--     is how the README and store/watch.go write them.
--
-- CREATE INDEX blocks River's writes to the table while it builds (seconds
-- per million jobs). On a large table, build them first with CREATE INDEX
-- CONCURRENTLY under the same names (docs/scale.md): IF NOT EXISTS then
-- skips them here.

-- Must stay the view's CASE, branch for branch: the indexes match the
-- view's status only while the two are the same expression. OR REPLACE:
-- an operator may have created it, word for word, to build the indexes
-- concurrently beforehand.
CREATE OR REPLACE FUNCTION errand.job_status(state errand.river_job_state) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE state
    WHEN 'running' THEN 'processing'
    WHEN 'completed' THEN 'completed'
    WHEN 'discarded' THEN 'failed'
    WHEN 'cancelled' THEN 'failed'
    ELSE 'pending'
END;
COMMENT ON FUNCTION errand.job_status(errand.river_job_state) IS
    'errand.jobs.status of a River state; indexed, so it must stay the view''s CASE exactly';

-- A workspace's jobs: by status (any status, also as a parameter), newest
-- first; all of them (a range, then a sort); its backlog and caps.
CREATE INDEX IF NOT EXISTS river_job_workspace_status_idx
    ON errand.river_job (((metadata ->> 'workspace_id')::uuid), errand.job_status(state), id);
DROP INDEX IF EXISTS errand.river_job_workspace_idx;

-- Every workspace's pending, processing or failed jobs, newest or oldest
-- first; the backlog per queue and per workspace.
CREATE INDEX IF NOT EXISTS river_job_status_idx
    ON errand.river_job (errand.job_status(state), id)
    WHERE errand.job_status(state) <> 'completed';

-- A kind's pending, processing or failed jobs.
CREATE INDEX IF NOT EXISTS river_job_kind_status_idx
    ON errand.river_job (kind, errand.job_status(state), id)
    WHERE errand.job_status(state) <> 'completed';

-- Deleting a workspace fails its pending jobs: found through the workspace
-- index's status, not by reading every job the workspace ever finished.
CREATE OR REPLACE FUNCTION errand.workspace_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE errand.river_job
    SET state = 'cancelled',
        finalized_at = now(),
        errors = coalesce(errors, '{}') || jsonb_build_object(
            'at', now(), 'attempt', attempt,
            'error', format('workspace %s was deleted', OLD.id), 'trace', '')
    WHERE (metadata ->> 'workspace_id')::uuid = OLD.id
      AND errand.job_status(state) = 'pending';
    RETURN OLD;
END;
$$;

-- The same for a disabled or deleted webhook endpoint's pending deliveries
-- (009 listed River's states, which the workspace index no longer carries).
CREATE OR REPLACE FUNCTION errand.webhook_endpoint_stopped() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text := CASE WHEN TG_OP = 'DELETE' THEN format('webhook endpoint %s was deleted', OLD.id)
                          ELSE format('webhook endpoint %s was disabled: %s', NEW.id, coalesce(NEW.disabled_reason, 'disabled by the app')) END;
BEGIN
    UPDATE errand.river_job
    SET state = 'cancelled',
        finalized_at = now(),
        errors = coalesce(errors, '{}') || jsonb_build_object('at', now(), 'attempt', attempt, 'error', v_reason, 'trace', '')
    WHERE (metadata ->> 'workspace_id')::uuid = OLD.workspace_id
      AND errand.job_status(state) = 'pending'
      AND kind = 'webhook.deliver'
      AND args ->> 'endpoint_id' = OLD.id::text;
    RETURN NULL;
END;
$$;

-- Statistics for the new expressions, so the planner knows how rare each
-- status is before autovacuum next analyzes the table.
ANALYZE errand.river_job;
