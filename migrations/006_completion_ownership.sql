-- River's stuck-job rescuer gets past the completion guard.
--
-- The guard (003) refuses to move a job out of running for any errand
-- replica that is not its latest owner, and River's own rescuer runs on the
-- leader, usually another replica: a job that ignored its context stayed
-- running for as long as its live owner did. The rescuer is told apart by
-- what its one query (JobRescueMany) does and a completion never does: it
-- adds exactly 1 to metadata's river:rescue_count, and only for a job
-- attempted before its horizon. The horizon is the leader's
-- RescueStuckJobsAfter, which every errand replica carries as the session
-- setting errand.stuck_after (seconds), next to errand.replica_id. A
-- replica without it (an older binary) is refused as before.
--
-- The rescued attempt's writes cannot commit afterwards:
-- job.CompleteInWorkspace commits only while its locked row is still that
-- attempt's (running, same attempt number, same replica), whatever this
-- guard does. Its River completion is refused here while the rerun runs on
-- another replica, and finds nothing to do once the rerun has finished.
-- The trigger's WHEN clause is unchanged, so an owner finishing its own job
-- still runs no PL/pgSQL.
CREATE OR REPLACE FUNCTION errand.fence_stale_finish() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('errand.rescuing', true) = 'on'
       OR NOT EXISTS (SELECT 1 FROM errand.replicas r
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
