-- Fast crash recovery with fencing.
--
-- Each errand replica (one River client) has a row here and stamps
-- heartbeat_at with the database's clock, never its own. A replica whose
-- heartbeat is older than the lease is dead: any replica's rescuer puts its
-- running jobs back (store.RescueOrphans). A replica that cannot renew its
-- heartbeat cancels its jobs and rejoins under a new id before its lease runs
-- out, so a live replica's jobs are never run twice.
CREATE TABLE errand.replicas (
    id text PRIMARY KEY,
    hostname text NOT NULL DEFAULT '',
    pid int NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
-- No index besides the key: each replica rewrites its row every second, and
-- an index on heartbeat_at would stop those updates being HOT.

-- Completion guard. River finishes a job with `UPDATE ... WHERE state =
-- 'running'`, which cannot tell a rescued-and-rerun job from the original.
-- Every errand connection carries errand.replica_id; a replica that is not
-- the job's latest owner (the last of attempted_by) may not move it out of
-- running. The WHEN clause is a few built-in calls, so the hot path (the
-- owner finishing its own job) runs no PL/pgSQL. Sessions without
-- errand.replica_id (ops, the app) are not affected, nor are jobs of River
-- clients that are not errand replicas (River's own rescuer handles those).
CREATE FUNCTION errand.fence_stale_finish() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('errand.rescuing', true) = 'on'
       OR NOT EXISTS (SELECT 1 FROM errand.replicas r
                      WHERE r.id = OLD.attempted_by[array_length(OLD.attempted_by, 1)]) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER fence_stale_finish BEFORE UPDATE ON errand.river_job
    FOR EACH ROW
    WHEN (OLD.state = 'running'
          AND NEW.state <> 'running'
          AND coalesce(current_setting('errand.replica_id', true), '') <> ''
          AND OLD.attempted_by[array_length(OLD.attempted_by, 1)] IS DISTINCT FROM current_setting('errand.replica_id', true))
    EXECUTE FUNCTION errand.fence_stale_finish();
