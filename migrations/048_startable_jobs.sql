-- The due jobs a worker may start now: those a workspace's concurrency cap
-- does not hold back.
--
-- KEDA's query and the metrics counted every due job, so one capped
-- workspace's flood (a plan with concurrency 1 and 700 jobs) read as a
-- backlog of 700 and scaled the Deployment to its maximum, though no
-- replica may start more than the cap allows, and the backlog alert fired
-- (a known limit until now, docs/kubernetes.md). errand.queue_startable
-- counts a queue's available, due jobs the way the fair fetch admits them:
-- each workspace's first jobs in River's order up to its room (its cap less
-- the jobs it runs in the queue), all of them for a workspace without a cap.
--
-- The caps are the fetch's: a plan's concurrency in errand.plans (read
-- within the table's checks, as 045 reads it), else the default the
-- replicas publish in errand.settings when they start (workspace_caps: the
-- value of ERRAND_WORKSPACE_CONCURRENCY, 0 for none, or 'off' from replicas
-- with ERRAND_FAIRNESS=off, which cap nothing; `errand migrate` does not). What a workspace runs is River's
-- running jobs of the queue, read through the workspace's status index.
--
-- Cost: one probe of river_job_fair_fetch_idx per workspace with available
-- jobs in the queue (a skip scan, as errand.fair_candidates walks them), plus
-- the index entries counted, at most p_limit in all; a capped workspace's
-- flood is not read past its room. A capped workspace's running jobs are
-- counted through river_job_workspace_status_idx (its processing jobs,
-- which its cap bounds).
--
-- jit is off: with sequential scans off, the scan of errand.plans (a few
-- rows, no index to use) is costed past jit_above_cost, and compiling it
-- took 18 ms of a call whose statements take half a millisecond.
--
-- Both functions run as errand's owner (a caller needs no rights on
-- river_job or the plans) and nobody else may call them until granted: KEDA's
-- role is granted errand.startable_jobs (docs/kubernetes.md).
CREATE FUNCTION errand.queue_startable(p_queue text, p_limit bigint DEFAULT NULL,
                                       OUT jobs bigint, OUT oldest_run_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text;
    v_caps boolean := true;
    v_default integer;
    v_any_plan boolean;
    v_ws uuid;
    v_n bigint;
    v_oldest timestamptz;
BEGIN
    jobs := 0;
    IF p_limit IS NOT NULL AND p_limit <= 0 THEN
        RETURN;
    END IF;
    SELECT s.value INTO v_setting FROM errand.settings s WHERE s.name = 'workspace_caps';
    IF v_setting = 'off' THEN
        v_caps := false;
    ELSIF v_setting ~ '^[0-9]{1,9}$' THEN
        v_default := nullif(v_setting::integer, 0);
    END IF;
    IF v_caps AND v_default IS NULL THEN
        SELECT EXISTS (SELECT 1 FROM errand.plans p WHERE p.concurrency >= 1) INTO v_any_plan;
        v_caps := v_any_plan;
    END IF;

    IF NOT v_caps THEN
        SELECT count(*), min(d.scheduled_at) INTO jobs, oldest_run_at
        FROM (SELECT j.scheduled_at FROM errand.river_job j
              WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue AND j.scheduled_at <= now()
              LIMIT p_limit) d;
        RETURN;
    END IF;

    v_ws := (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
             WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
             ORDER BY 1 LIMIT 1);
    WHILE v_ws IS NOT NULL AND (p_limit IS NULL OR jobs < p_limit) LOOP
        -- One statement per workspace: its cap (none for errand's own
        -- jobs), its room (the cap less its running jobs in the queue, read
        -- through the workspace's status index), its first jobs in River's
        -- order up to the room, as the fetch takes them, and the next
        -- workspace with available jobs.
        SELECT x.n, x.oldest,
               (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
                WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                  AND errand.fair_workspace(j.metadata) > v_ws
                ORDER BY 1 LIMIT 1)
        INTO v_n, v_oldest, v_ws
        FROM (SELECT CASE WHEN v_ws = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                          ELSE coalesce((SELECT CASE WHEN p.concurrency >= 1 THEN least(floor(p.concurrency), 2147483647)::integer END
                                         FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
                                         WHERE w.id = v_ws), v_default) END AS cap) c
        CROSS JOIN LATERAL (
            SELECT CASE WHEN c.cap IS NULL THEN p_limit - jobs
                        ELSE least(p_limit - jobs, greatest(c.cap - (
                            SELECT count(*) FROM errand.river_job r
                            WHERE (r.metadata ->> 'workspace_id')::uuid = v_ws AND errand.job_status(r.state) = 'processing'
                              AND r.queue = p_queue), 0)) END AS room) rm
        CROSS JOIN LATERAL (
            SELECT count(*) AS n, min(d.scheduled_at) AS oldest
            FROM (SELECT j.scheduled_at FROM errand.river_job j
                  WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                    AND errand.fair_workspace(j.metadata) = v_ws AND j.scheduled_at <= now()
                  ORDER BY j.priority, j.scheduled_at, j.id
                  LIMIT rm.room) d) x;
        jobs := jobs + v_n;
        IF v_oldest IS NOT NULL AND (oldest_run_at IS NULL OR v_oldest < oldest_run_at) THEN
            oldest_run_at := v_oldest;
        END IF;
    END LOOP;
END;
$$;
ALTER FUNCTION errand.queue_startable(text, bigint)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off;
COMMENT ON FUNCTION errand.queue_startable(text, bigint) IS
    'due jobs of a queue a worker may start now (within their workspace''s concurrency cap), at most p_limit, and the earliest run_at among them (migration 048)';

-- The same over every queue with available jobs but those in p_except, at
-- most p_limit in all: KEDA's query (deploy/kubernetes/keda.yaml).
CREATE FUNCTION errand.startable_jobs(p_limit bigint, p_except text[] DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_total bigint := 0;
    v_queue text;
BEGIN
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RAISE EXCEPTION 'errand: startable_jobs needs a positive limit, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_queue := (SELECT j.queue FROM errand.river_job j
                WHERE j.state IS NOT DISTINCT FROM 'available' ORDER BY 1 LIMIT 1);
    WHILE v_queue IS NOT NULL AND v_total < p_limit LOOP
        -- (A NULL in the list skips nothing: = ANY would be NULL.)
        IF NOT coalesce(v_queue = ANY (p_except), false) THEN
            v_total := v_total + (errand.queue_startable(v_queue, p_limit - v_total)).jobs;
        END IF;
        v_queue := (SELECT j.queue FROM errand.river_job j
                    WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue > v_queue ORDER BY 1 LIMIT 1);
    END LOOP;
    RETURN v_total;
END;
$$;
ALTER FUNCTION errand.startable_jobs(bigint, text[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off;
REVOKE ALL ON FUNCTION errand.startable_jobs(bigint, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.queue_startable(text, bigint) FROM PUBLIC;
COMMENT ON FUNCTION errand.startable_jobs(bigint, text[]) IS
    'due jobs a worker may start now in every queue but p_except, at most p_limit: KEDA''s query (migration 048)';
