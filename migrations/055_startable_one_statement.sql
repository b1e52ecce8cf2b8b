-- errand.queue_startable in one statement: a step per workspace costs a
-- third of what a PL/pgSQL round did.
--
-- With caps on, 048 walked the workspaces with available jobs in a queue in
-- a PL/pgSQL loop, one statement per workspace, each an executor start with
-- four subqueries: 5,000 workspaces with two due jobs each and a cap of 5
-- took 103 to 108 ms here (a review measured 253 ms on a busy machine, and
-- 440 ms for the metrics' backlog query, which runs it for every queue on
-- every refresh). The same walk as one recursive statement, each step
-- counting the workspace it stands on and finding the next, took 36 to 45
-- ms on the same rows (2026-12-05, the same minutes; KEDA's
-- startable_jobs(600) 3.9 to 4.6 against 8.3 ms). What it counts is unchanged
-- (store/watch_test.go's TestStartableJobsLeaveOutWhatACapHoldsBack);
-- without caps the function still counts the due jobs at once.

CREATE OR REPLACE FUNCTION errand.queue_startable(p_queue text, p_limit bigint DEFAULT NULL,
                                       OUT jobs bigint, OUT oldest_run_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text;
    v_caps boolean := true;
    v_default integer;
    v_any_plan boolean;
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

    -- (055) One statement: a recursive walk of the workspaces with
    -- available jobs in the queue (a skip scan, as errand.fair_candidates
    -- walks them), each step counting the workspace it stands on and finding
    -- the next; it stops at p_limit. Per workspace: its cap (none for
    -- errand's own jobs), its room (the cap less its running jobs in the
    -- queue, read through the workspace's status index), its first jobs in
    -- River's order up to the room, as the fetch takes them.
    WITH RECURSIVE step(id, total, n, oldest) AS (
        SELECT (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
                WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                ORDER BY 1 LIMIT 1),
               0::bigint, 0::bigint, NULL::timestamptz
        UNION ALL
        SELECT (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
                WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                  AND errand.fair_workspace(j.metadata) > s.id
                ORDER BY 1 LIMIT 1),
               s.total + x.n, x.n, x.oldest
        FROM step s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN s.id = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                        ELSE coalesce((SELECT CASE WHEN p.concurrency >= 1 THEN least(floor(p.concurrency), 2147483647)::integer END
                                       FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
                                       WHERE w.id = s.id), v_default) END AS cap) c
        CROSS JOIN LATERAL (
            SELECT CASE WHEN c.cap IS NULL THEN p_limit - s.total
                        ELSE least(p_limit - s.total, greatest(c.cap - (
                            SELECT count(*) FROM errand.river_job r
                            WHERE (r.metadata ->> 'workspace_id')::uuid = s.id AND errand.job_status(r.state) = 'processing'
                              AND r.queue = p_queue), 0)) END AS room) rm
        CROSS JOIN LATERAL (
            SELECT count(*) AS n, min(d.scheduled_at) AS oldest
            FROM (SELECT j.scheduled_at FROM errand.river_job j
                  WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                    AND errand.fair_workspace(j.metadata) = s.id AND j.scheduled_at <= now()
                  ORDER BY j.priority, j.scheduled_at, j.id
                  LIMIT rm.room) d) x
        WHERE s.id IS NOT NULL AND (p_limit IS NULL OR s.total < p_limit)
    )
    SELECT coalesce(sum(step.n), 0), min(step.oldest) INTO jobs, oldest_run_at FROM step;
END;
$$;
ALTER FUNCTION errand.queue_startable(text, bigint)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off;
