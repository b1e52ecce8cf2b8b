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

-- Logging a successful attempt no longer deletes its endpoint's expired
-- leases (a statement per batch that almost always found none): an expired
-- lease never counts against the cap, and a rescued job takes its own back.
-- What is left, a lease of a job that will not run again, is deleted here
-- when it could matter to a reader of the table: when the endpoint is
-- found full. (A failed attempt still deletes them, as before.) Otherwise
-- as in 009.
CREATE OR REPLACE FUNCTION errand.webhook_take_slots(job_ids bigint[], attempts int[], endpoint_ids uuid[], workspace_id uuid, slots int, lease interval)
RETURNS TABLE (job_id bigint, taken boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint uuid;
    v_free bigint;
BEGIN
    FOR v_endpoint IN
        SELECT DISTINCT ON (hashtext(e::text), e) e FROM unnest(endpoint_ids) AS e ORDER BY hashtext(e::text), e
    LOOP
        PERFORM pg_advisory_xact_lock(2003133032, hashtext(v_endpoint::text)); -- 2003133032: "webh"
        SELECT slots - count(*) INTO v_free FROM errand.webhook_inflight x
        WHERE x.endpoint_id = v_endpoint AND x.expires_at > clock_timestamp() AND x.job_id <> ALL (job_ids);
        IF v_free <= 0 THEN
            DELETE FROM errand.webhook_inflight x
            WHERE x.endpoint_id = v_endpoint AND x.expires_at <= clock_timestamp() AND x.job_id <> ALL (job_ids);
        END IF;
        RETURN QUERY
        WITH mine AS (
            SELECT r.j, r.a FROM unnest(job_ids, attempts, endpoint_ids) AS r(j, a, e)
            WHERE r.e = v_endpoint
        ), took AS (
            INSERT INTO errand.webhook_inflight AS f (job_id, attempt, workspace_id, endpoint_id, expires_at)
            SELECT m.j, m.a, webhook_take_slots.workspace_id, v_endpoint, clock_timestamp() + lease
            FROM (SELECT * FROM mine ORDER BY mine.j LIMIT greatest(v_free, 0)) AS m
            ON CONFLICT ON CONSTRAINT webhook_inflight_pkey DO UPDATE
                SET attempt = EXCLUDED.attempt, endpoint_id = EXCLUDED.endpoint_id, expires_at = EXCLUDED.expires_at
            RETURNING f.job_id
        )
        SELECT mine.j, mine.j IN (SELECT took.job_id FROM took) FROM mine;
    END LOOP;
END;
$$;
