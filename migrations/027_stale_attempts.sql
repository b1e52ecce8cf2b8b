-- The completion guard also refuses a stale attempt of the job's own
-- replica.
--
-- River finishes a job with `UPDATE ... WHERE id = $1 AND state =
-- 'running'`. The guard (003, 006) stops a replica that is not the job's
-- latest owner; it did not stop an older attempt on the same replica. That
-- happens when a replica is paused (a frozen VM never fences: its clock does
-- not move), its jobs are rescued on the database's clock, and on waking it
-- fetches one of them again before its heartbeat learns its lease ran out.
-- The old attempt's error or snooze then moved the new attempt's row, and
-- the job ran once more, beyond max_attempts if the new attempt was its last.
--
-- River says which attempt is finishing in every outcome except a
-- completion: an error, a discard or a cancel appends an error whose
-- "attempt" is the finishing attempt's number; a snooze or an interrupted
-- shutdown sets attempt to that number minus one. Either can be compared with
-- the row's own attempt, which the row's current run set when it started.
-- Two outcomes carry nothing to compare. A snooze or an interruption of a
-- job whose cancel was asked for (metadata cancel_attempted_at) becomes the
-- cancel in River's query, which keeps the row's attempt: the job ends
-- cancelled, as asked, even while a rerun runs. And a completion: a stale
-- attempt's completion still moves the row (the job did run), while its
-- writes through job.CompleteInWorkspace commit only while the locked row is
-- that attempt's (same attempt number, same replica), so they cannot apply
-- twice.
--
-- An owner finishing its own current attempt still runs no PL/pgSQL: the
-- WHEN clause asks errand.stale_attempt (plain SQL) only of outcomes other
-- than a completion, so an owner's completion (the hot path, which says no
-- attempt) costs one comparison more than before.
CREATE OR REPLACE FUNCTION errand.stale_attempt(old_row errand.river_job, new_row errand.river_job)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT new_row.attempt < old_row.attempt - 1
        OR (coalesce(cardinality(new_row.errors), 0) > coalesce(cardinality(old_row.errors), 0)
            AND CASE WHEN jsonb_typeof(new_row.errors[cardinality(new_row.errors)] -> 'attempt') = 'number'
                     THEN (new_row.errors[cardinality(new_row.errors)] ->> 'attempt')::numeric < old_row.attempt
                     ELSE false END)
$$;

CREATE OR REPLACE FUNCTION errand.fence_stale_finish() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('errand.rescuing', true) = 'on' THEN
        RETURN NEW;
    END IF;
    -- An attempt that is not the row's current one, from any replica.
    IF errand.stale_attempt(OLD, NEW) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM errand.replicas r
                   WHERE r.id = OLD.attempted_by[array_length(OLD.attempted_by, 1)]) THEN
        RETURN NEW;
    END IF;
    IF NEW.state IN ('retryable', 'discarded', 'cancelled')
       AND NEW.metadata -> 'river:rescue_count' = to_jsonb(coalesce(
               CASE WHEN jsonb_typeof(OLD.metadata -> 'river:rescue_count') = 'number'
                    THEN (OLD.metadata ->> 'river:rescue_count')::numeric END, 0) + 1)
       AND OLD.attempted_at < now() - make_interval(secs => nullif(current_setting('errand.stuck_after', true), '')::float8) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER fence_stale_finish ON errand.river_job;
CREATE TRIGGER fence_stale_finish BEFORE UPDATE ON errand.river_job
    FOR EACH ROW
    WHEN (OLD.state = 'running'
          AND NEW.state <> 'running'
          AND coalesce(current_setting('errand.replica_id', true), '') <> ''
          AND (OLD.attempted_by[array_length(OLD.attempted_by, 1)] IS DISTINCT FROM current_setting('errand.replica_id', true)
               OR (NEW.state <> 'completed' AND errand.stale_attempt(OLD, NEW))))
    EXECUTE FUNCTION errand.fence_stale_finish();
