-- Scoping a pipeline: statements sent together, in one round trip.
--
-- store.InWorkspaceBatch sends a workspace's statements as one pipeline,
-- which PostgreSQL runs as one implicit transaction. Its first statement
-- scopes that transaction as store.Scope does (the workspace setting that
-- row level security reads, and the tenant role), but the statements after
-- it are already on their way: when the workspace does not exist they must
-- not run at all, so this raises, which aborts the pipeline. (Scope's own
-- statement reports "no such workspace" as a value and lets Go roll back.)
-- The settings are local to the transaction, so they end with it.
--
-- The webhook kind's two batched transactions (load deliveries, log their
-- successful attempts) used four round trips each (BEGIN, scope, the work,
-- COMMIT); they now use one.
--
-- Not SECURITY DEFINER: it changes only its caller's own transaction, and
-- switching to the tenant role needs the caller's membership in it, so it
-- keeps the default EXECUTE for PUBLIC (what it can tell a caller, whether
-- a workspace id exists, errand's roles can read anyway).
CREATE FUNCTION errand.scope_to(p_workspace text, p_role text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_workspace IS NULL OR NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = p_workspace::uuid) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist', coalesce(p_workspace, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM set_config('app.current_workspace_id', p_workspace, true);
    IF coalesce(p_role, '') <> '' THEN
        PERFORM set_config('role', p_role, true);
    END IF;
END;
$$;
COMMENT ON FUNCTION errand.scope_to(text, text) IS
    'scopes the current transaction to a workspace (and the tenant role), raising no_data_found when it does not exist; store.InWorkspaceBatch';

-- errand.webhook_take_slots, set-based: 009 ran three statements per
-- endpoint of the batch (its lock, its count, its insert), a batch of
-- deliveries to three endpoints ten; now the locks are one statement and
-- the counts and inserts another, whatever the number of endpoints. The
-- rules are 009's: the endpoints' advisory locks are taken in the order of
-- their keys (so two takers never deadlock), the count runs in a statement
-- that starts after every lock is held (so its snapshot includes every
-- earlier holder's commit), and each endpoint's free slots go to its
-- oldest jobs of the batch.
--
-- Logging a successful attempt no longer deletes its endpoint's expired
-- leases (a statement per batch that almost always found none): an expired
-- lease never counts against the cap, and a rescued job takes its own back.
-- What is left, a lease of a job that will not run again, is deleted here
-- when the endpoint is found full. (A failed attempt still deletes them,
-- as before.)
CREATE OR REPLACE FUNCTION errand.webhook_take_slots(job_ids bigint[], attempts int[], endpoint_ids uuid[], workspace_id uuid, slots int, lease interval)
RETURNS TABLE (job_id bigint, taken boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(2003133032, k.key) -- 2003133032: "webh"
    FROM (SELECT DISTINCT hashtext(e::text) AS key FROM unnest(endpoint_ids) AS e ORDER BY 1) AS k;
    RETURN QUERY
    WITH mine AS (
        SELECT r.j, r.a, r.e, row_number() OVER (PARTITION BY r.e ORDER BY r.j) AS k
        FROM unnest(job_ids, attempts, endpoint_ids) AS r(j, a, e)
    ), held AS (
        SELECT x.endpoint_id AS e, count(*) AS n FROM errand.webhook_inflight x
        WHERE x.endpoint_id = ANY (endpoint_ids) AND x.expires_at > clock_timestamp() AND x.job_id <> ALL (job_ids)
        GROUP BY x.endpoint_id
    ), expired AS (
        DELETE FROM errand.webhook_inflight x
        WHERE x.endpoint_id IN (SELECT held.e FROM held WHERE held.n >= slots)
          AND x.expires_at <= clock_timestamp() AND x.job_id <> ALL (job_ids)
    ), took AS (
        INSERT INTO errand.webhook_inflight AS f (job_id, attempt, workspace_id, endpoint_id, expires_at)
        SELECT m.j, m.a, webhook_take_slots.workspace_id, m.e, clock_timestamp() + lease
        FROM mine m LEFT JOIN held h ON h.e = m.e
        WHERE m.k <= slots - coalesce(h.n, 0)
        ON CONFLICT ON CONSTRAINT webhook_inflight_pkey DO UPDATE
            SET attempt = EXCLUDED.attempt, endpoint_id = EXCLUDED.endpoint_id, expires_at = EXCLUDED.expires_at
        RETURNING f.job_id
    )
    SELECT m.j, m.j IN (SELECT took.job_id FROM took) FROM mine m;
END;
$$;
