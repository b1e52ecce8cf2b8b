-- Operations: pausing a workspace, retrying and cancelling jobs, as SQL
-- functions for apps, psql users and `errand jobs` / `errand workspaces`.
-- Decisions: docs/operations.md.
--
-- Pausing parks a workspace's jobs in River's 'pending' state, which no part
-- of River's open-source engine reads or writes: its fetch takes only
-- 'available' jobs, its scheduler promotes only 'scheduled' and 'retryable'
-- ones, its rescuer touches only 'running' ones and its cleaner deletes only
-- finished ones. errand.jobs already shows 'pending' as status pending. A
-- parked job carries metadata 'errand:paused' (the state it left), which
-- resuming puts back.
--
-- A job is parked at the moment it would become available: at pause for the
-- workspace's available jobs, and afterwards by a trigger on River's table,
-- whatever makes it available (an INSERT through the contract or River's
-- client, the scheduler promoting a scheduled or retryable job, a retry
-- River's completer makes available at once, errand's rescuer, a retry by
-- hand). Scheduled and retryable jobs keep their state and run_at until
-- they come due, so River's own view of them stays right and pausing writes
-- only the jobs that could start now.

-- The paused workspaces. Not a foreign key to errand.workspaces (the app may
-- replace that table with a view).
CREATE TABLE errand.paused_workspaces (
    workspace_id uuid PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- The trigger runs as whoever writes River's table, a scoped transaction's
-- tenant role included: that role reads its own workspace's row only.
ALTER TABLE errand.paused_workspaces ENABLE ROW LEVEL SECURITY;
CREATE POLICY scoped_directory ON errand.paused_workspaces
    USING (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
SELECT errand.grant_tenant('errand.paused_workspaces', 'SELECT');

-- Pausing and resuming are serialised with the transactions that make a job
-- of the workspace available through an advisory lock on the workspace's
-- bucket (key 1702322540, 0..255): the trigger takes it shared, pause and
-- resume exclusively. Without it an enqueue that looked before a pause
-- committed would commit an available job after it, and one that parked a
-- job before a resume committed would leave it parked. Buckets, not one
-- lock per workspace, so a transaction that enqueues for thousands of
-- workspaces holds at most 256 locks; the cost is that a pause waits for
-- enqueuers of the other workspaces in its bucket too (milliseconds).
CREATE FUNCTION errand.pause_bucket(workspace_id uuid) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.hashtext(workspace_id::text) & 255;

-- Parks a job of a paused workspace that is becoming available (River's
-- scheduler promoting it, a retry River's completer makes available at once,
-- errand's rescuer, a retry by hand). Not SECURITY DEFINER and no SET
-- clause: it runs on River's paths, so every name is qualified. In READ
-- COMMITTED (River's level) the lookup after the lock sees a pause that
-- committed while this transaction waited for it.
CREATE FUNCTION errand.park_if_paused() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_ws uuid := (NEW.metadata OPERATOR(pg_catalog.->>) 'workspace_id')::uuid;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1702322540, errand.pause_bucket(v_ws));
    IF EXISTS (SELECT 1 FROM errand.paused_workspaces p WHERE p.workspace_id OPERATOR(pg_catalog.=) v_ws) THEN
        NEW.metadata := NEW.metadata OPERATOR(pg_catalog.||)
            pg_catalog.jsonb_build_object('errand:paused', NEW.state::text);
        NEW.state := 'pending';
    END IF;
    RETURN NEW;
END;
$$;

-- Named to fire after fence_stale_finish (BEFORE triggers run in name
-- order), which may drop a stale replica's update first. The WHEN clause
-- keeps River's fetch and completions (to running and to finished states)
-- free of any call.
CREATE TRIGGER zpark_paused_update BEFORE UPDATE OF state ON errand.river_job
    FOR EACH ROW
    WHEN (NEW.state = 'available' AND OLD.state <> 'available' AND NEW.metadata ? 'workspace_id')
    EXECUTE FUNCTION errand.park_if_paused();

-- The same for new jobs (the contract, errand.enqueue_many, River's client),
-- once per statement instead of once per row: a row trigger cost
-- enqueue_many half its speed, this costs it a few percent. It takes the
-- inserted jobs' buckets (in order, so two inserters never deadlock), then
-- parks the jobs of paused workspaces, which nobody else can have seen yet.
-- Nothing is paused, the usual case: one lookup per statement.
CREATE FUNCTION errand.park_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1702322540, b.bucket)
    FROM (SELECT DISTINCT errand.pause_bucket((n.metadata OPERATOR(pg_catalog.->>) 'workspace_id')::uuid) AS bucket
          FROM inserted n
          WHERE n.state OPERATOR(pg_catalog.=) 'available' AND n.metadata OPERATOR(pg_catalog.?) 'workspace_id'
          ORDER BY 1) b;
    IF EXISTS (SELECT 1 FROM errand.paused_workspaces) THEN
        UPDATE errand.river_job j
        SET state = 'pending',
            metadata = j.metadata OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('errand:paused', 'available')
        FROM inserted n
        WHERE j.id OPERATOR(pg_catalog.=) n.id
          AND n.state OPERATOR(pg_catalog.=) 'available'
          AND (n.metadata OPERATOR(pg_catalog.->>) 'workspace_id')::uuid IN (SELECT p.workspace_id FROM errand.paused_workspaces p)
          AND j.state OPERATOR(pg_catalog.=) 'available';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER zpark_paused_insert AFTER INSERT ON errand.river_job
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION errand.park_inserted();

-- The workspace an operation names, refused when it does not exist or the
-- caller's scope is another workspace. A paused workspace that the app has
-- since deleted may still be resumed.
CREATE FUNCTION errand.ops_workspace(id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'errand: workspace id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF (v_caller <> '' AND v_caller <> id::text)
       OR NOT (EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = ops_workspace.id)
               OR EXISTS (SELECT 1 FROM errand.paused_workspaces p WHERE p.workspace_id = ops_workspace.id)) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN id;
END;
$$;

-- Takes a workspace's bucket exclusively, waiting at most 5 seconds for
-- transactions that are enqueuing for it (an app transaction left open after
-- an INSERT would otherwise hold the pause, and every enqueue queued behind
-- it). Must run in READ COMMITTED, so that what follows sees their jobs.
CREATE FUNCTION errand.ops_lock_workspace(id uuid, what text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_timeout text := current_setting('lock_timeout');
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'errand: % must run in a READ COMMITTED transaction, not %', what, upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    BEGIN
        PERFORM pg_advisory_xact_lock(1702322540, errand.pause_bucket(id));
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'errand: % waited 5s for transactions enqueuing jobs of workspace % to finish; try again', what, id
            USING ERRCODE = 'lock_not_available',
                  HINT = 'a transaction that enqueued a job for this workspace (or one sharing its lock bucket) is still open';
    END;
    PERFORM set_config('lock_timeout', v_timeout, true);
END;
$$;

-- Wakes the queues of jobs that just became available, once each.
CREATE FUNCTION errand.ops_wake(queues text[]) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(pg_notify('errand.river_insert', json_build_object('queue', q)::text))
    FROM (SELECT DISTINCT q FROM unnest(queues) AS q WHERE q IS NOT NULL) AS d;
$$;

-- SELECT errand.pause_workspace(id): the workspace's jobs wait (status
-- pending, no attempt used) until errand.resume_workspace(id); running jobs
-- finish their attempt. Returns how many waiting jobs it held back now
-- (available ones; later ones are held as they come due). Pausing a paused
-- workspace changes nothing and returns 0.
CREATE FUNCTION errand.pause_workspace(id uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid := errand.ops_workspace(id);
    v_parked bigint;
BEGIN
    PERFORM errand.ops_lock_workspace(v_ws, 'pause_workspace');
    INSERT INTO errand.paused_workspaces (workspace_id) VALUES (v_ws) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Through the workspace's status index; a job a fetch has locked is
    -- waited for and, running by then, left to finish.
    UPDATE errand.river_job j
    SET state = 'pending',
        metadata = j.metadata || jsonb_build_object('errand:paused', j.state::text)
    WHERE (j.metadata ->> 'workspace_id')::uuid = v_ws
      AND errand.job_status(j.state) = 'pending'
      AND j.state = 'available';
    GET DIAGNOSTICS v_parked = ROW_COUNT;
    RETURN v_parked;
END;
$$;

-- SELECT errand.resume_workspace(id): the workspace's held jobs go back to
-- where they were (a job whose run_at is still ahead waits for it) and its
-- queues are woken. Returns how many jobs it released. Resuming a workspace
-- that is not paused changes nothing and returns 0.
CREATE FUNCTION errand.resume_workspace(id uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid := errand.ops_workspace(id);
    v_released bigint;
    v_queues text[];
BEGIN
    PERFORM errand.ops_lock_workspace(v_ws, 'resume_workspace');
    DELETE FROM errand.paused_workspaces p WHERE p.workspace_id = v_ws;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    WITH released AS (
        UPDATE errand.river_job j
        SET state = (j.metadata ->> 'errand:paused')::errand.river_job_state,
            metadata = j.metadata - 'errand:paused'
        WHERE (j.metadata ->> 'workspace_id')::uuid = v_ws
          AND errand.job_status(j.state) = 'pending'
          AND j.state = 'pending'
          AND j.metadata ? 'errand:paused'
        RETURNING j.queue, j.state
    )
    SELECT count(*), array_agg(DISTINCT r.queue) FILTER (WHERE r.state = 'available')
    INTO v_released, v_queues FROM released r;
    PERFORM errand.ops_wake(v_queues);
    RETURN v_released;
END;
$$;

-- The job an operation names, locked, refused when it does not exist or the
-- caller's scope is another workspace.
CREATE FUNCTION errand.ops_job(id bigint) RETURNS errand.river_job
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_job errand.river_job;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'errand: job id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT * INTO v_job FROM errand.river_job j WHERE j.id = ops_job.id FOR UPDATE;
    IF NOT FOUND OR (v_caller <> '' AND v_caller IS DISTINCT FROM v_job.metadata ->> 'workspace_id') THEN
        RAISE EXCEPTION 'errand: job % does not exist', id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN v_job;
END;
$$;

-- The retry of failed jobs, as River's JobRetry does it: available now, one
-- more attempt when it has used them all, a cancellation requested during an
-- earlier attempt forgotten. The previous attempts' errors are kept. A job
-- of a paused workspace is held (the trigger) until it resumes.
CREATE FUNCTION errand.ops_retry(ids bigint[]) RETURNS TABLE (id bigint, queue text, state text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE errand.river_job j
    SET state = 'available',
        max_attempts = greatest(j.max_attempts, j.attempt + 1),
        finalized_at = NULL,
        scheduled_at = now(),
        metadata = j.metadata - 'cancel_attempted_at'
    WHERE j.id = ANY (ids) AND j.state IN ('discarded', 'cancelled')
    RETURNING j.id, j.queue, j.state::text;
$$;

-- SELECT errand.retry_job(id): a failed job runs again. Returns 'queued',
-- or 'paused' when its workspace is paused and it waits for the resume.
CREATE FUNCTION errand.retry_job(id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job errand.river_job := errand.ops_job(id);
    v_ws uuid := (v_job.metadata ->> 'workspace_id')::uuid;
    v_state text;
BEGIN
    IF errand.job_status(v_job.state) <> 'failed' THEN
        RAISE EXCEPTION 'errand: job % is %, and only a failed job can be retried', id, errand.job_status(v_job.state)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_ws IS NOT NULL AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = v_ws) THEN
        RAISE EXCEPTION 'errand: job % belongs to workspace %, which no longer exists in errand.workspaces', id, v_ws
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT r.state INTO v_state FROM errand.ops_retry(ARRAY[retry_job.id]) r;
    IF v_state = 'available' THEN
        PERFORM errand.ops_wake(ARRAY[v_job.queue]);
        RETURN 'queued';
    END IF;
    RETURN 'paused';
END;
$$;

-- SELECT errand.retry_jobs(workspace_id): every failed job of the
-- workspace runs again; returns how many. status names the jobs to retry
-- and only 'failed' is accepted: the parameter says what is retried, so a
-- call reads the same as `errand jobs retry --workspace W --status failed`.
CREATE FUNCTION errand.retry_jobs(workspace_id uuid, status text DEFAULT 'failed') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid;
    v_count bigint;
    v_queues text[];
BEGIN
    IF status IS DISTINCT FROM 'failed' THEN
        RAISE EXCEPTION 'errand: retry_jobs retries failed jobs only, got status %', coalesce(quote_literal(status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_ws := errand.ops_workspace(retry_jobs.workspace_id);
    IF NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = v_ws) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', v_ws
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- The workspace's failed jobs through its status index, oldest first,
    -- locked in id order (as concurrent retries would lock them).
    WITH failed AS (
        SELECT j.id FROM errand.river_job j
        WHERE (j.metadata ->> 'workspace_id')::uuid = v_ws
          AND errand.job_status(j.state) = 'failed'
        ORDER BY j.id
        FOR UPDATE
    ), retried AS (
        SELECT r.queue, r.state FROM errand.ops_retry(ARRAY(SELECT f.id FROM failed f)) r
    )
    SELECT count(*), array_agg(DISTINCT r.queue) FILTER (WHERE r.state = 'available')
    INTO v_count, v_queues FROM retried r;
    PERFORM errand.ops_wake(v_queues);
    RETURN v_count;
END;
$$;

-- SELECT errand.cancel_job(id): a job that has not finished is cancelled
-- (status failed, the reason in its errors). A waiting job is cancelled at
-- once and returns 'cancelled'; a running one is asked to stop, as River's
-- JobCancel does (its worker's context is cancelled; it is cancelled when
-- its attempt returns) and returns 'cancelling'.
CREATE FUNCTION errand.cancel_job(id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job errand.river_job := errand.ops_job(id);
BEGIN
    IF errand.job_status(v_job.state) IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'errand: job % is already %, there is nothing to cancel', id, errand.job_status(v_job.state)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_job.state = 'running' THEN
        UPDATE errand.river_job j
        SET metadata = jsonb_set(j.metadata, '{cancel_attempted_at}', to_jsonb(now()), true)
        WHERE j.id = cancel_job.id;
        PERFORM pg_notify('errand.river_control',
            json_build_object('action', 'cancel', 'job_id', v_job.id, 'queue', v_job.queue)::text);
        RETURN 'cancelling';
    END IF;
    UPDATE errand.river_job j
    SET state = 'cancelled',
        finalized_at = now(),
        metadata = j.metadata - 'errand:paused',
        errors = coalesce(j.errors, '{}') || jsonb_build_object(
            'at', now(), 'attempt', j.attempt, 'error', 'cancelled by an operator (errand.cancel_job)', 'trace', '')
    WHERE j.id = cancel_job.id;
    RETURN 'cancelled';
END;
$$;

-- They act across workspaces (as errand's owner): for the roles an
-- operator grants them to (README: Operations).
REVOKE ALL ON FUNCTION errand.pause_workspace(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.resume_workspace(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.retry_job(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.retry_jobs(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.cancel_job(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.ops_retry(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.ops_job(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.ops_lock_workspace(uuid, text) FROM PUBLIC;
