-- Retention of errand's logs (docs/retention.md): emails, webhook messages
-- and attempts, superseded invoice versions and the cron table's record of
-- old periods are deleted once older than ERRAND_RETAIN_LOGS, in small
-- batches, by the leader. Jobs themselves are River's (its cleaner, with
-- ERRAND_RETAIN_COMPLETED and ERRAND_RETAIN_FAILED).
--
-- The tables are tenant tables whose row level security is forced, so the
-- owner sees a workspace's rows only while scoped to it: the pruning walks
-- the workspaces, scoped to each in turn, through each table's
-- (workspace_id, created_at) index.

CREATE INDEX IF NOT EXISTS webhook_attempts_workspace_created_idx ON errand.webhook_attempts (workspace_id, created_at);

-- Deletes at most batch rows of each table older than keep and returns how
-- many it deleted per table. What is still in use is kept whatever its age:
-- an email or webhook message whose job has not finished, a message with a
-- delivery still pending or running, and the latest version of every
-- invoice. Call it again while it returns batch for a table.
CREATE FUNCTION errand.prune_logs(keep interval, batch int DEFAULT 1000)
RETURNS TABLE (table_name text, deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_cutoff timestamptz := now() - keep;
    v_ws uuid;
    v_left_emails int := batch;
    v_left_messages int := batch;
    v_left_attempts int := batch;
    v_left_documents int := batch;
    v_n int;
    v_runs bigint;
BEGIN
    IF keep IS NULL OR keep <= interval '0' THEN
        RAISE EXCEPTION 'errand: prune_logs: keep must be a positive interval, got %', keep
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION 'errand: prune_logs: batch must be positive, got %', batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_ws IN SELECT w.id FROM errand.workspaces w ORDER BY w.id LOOP
        EXIT WHEN v_left_emails + v_left_messages + v_left_attempts + v_left_documents = 0;
        PERFORM set_config('app.current_workspace_id', v_ws::text, true);

        IF v_left_emails > 0 THEN
            DELETE FROM errand.emails e
            WHERE e.id IN (SELECT x.id FROM errand.emails x
                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff
                             AND NOT EXISTS (SELECT 1 FROM errand.river_job j
                                             WHERE j.id = x.job_id
                                               AND j.state NOT IN ('completed', 'discarded', 'cancelled'))
                           ORDER BY x.created_at
                           LIMIT v_left_emails);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_left_emails := v_left_emails - v_n;
        END IF;

        IF v_left_attempts > 0 THEN
            DELETE FROM errand.webhook_attempts a
            WHERE a.id IN (SELECT x.id FROM errand.webhook_attempts x
                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff
                           ORDER BY x.created_at
                           LIMIT v_left_attempts);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_left_attempts := v_left_attempts - v_n;
        END IF;

        IF v_left_messages > 0 AND EXISTS (SELECT 1 FROM errand.webhook_messages x
                                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff) THEN
            -- A message is kept while its dispatch job or any delivery of it
            -- is unfinished (a replay makes new deliveries, which need it).
            -- (The workspace's unfinished deliveries are read once, through
            -- the workspace/status index, not once per message.)
            WITH live AS MATERIALIZED (
                SELECT DISTINCT j.args ->> 'message_id' AS message_id
                FROM errand.river_job j
                WHERE (j.metadata ->> 'workspace_id')::uuid = v_ws
                  AND errand.job_status(j.state) IN ('pending', 'processing')
                  AND j.kind = 'webhook.deliver'
            )
            DELETE FROM errand.webhook_messages m
            WHERE m.id IN (SELECT x.id FROM errand.webhook_messages x
                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff
                             AND NOT EXISTS (SELECT 1 FROM errand.river_job j
                                             WHERE j.id = x.job_id
                                               AND j.state NOT IN ('completed', 'discarded', 'cancelled'))
                             AND x.id::text NOT IN (SELECT live.message_id FROM live WHERE live.message_id IS NOT NULL)
                           ORDER BY x.created_at
                           LIMIT v_left_messages);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_left_messages := v_left_messages - v_n;
        END IF;

        IF v_left_documents > 0 THEN
            DELETE FROM errand.invoice_documents d
            WHERE d.id IN (SELECT x.id FROM errand.invoice_documents x
                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff
                             AND EXISTS (SELECT 1 FROM errand.invoice_documents newer
                                         WHERE newer.invoice_id = x.invoice_id AND newer.version > x.version)
                           ORDER BY x.created_at
                           LIMIT v_left_documents);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_left_documents := v_left_documents - v_n;
        END IF;
    END LOOP;
    PERFORM set_config('app.current_workspace_id', v_scope, true);

    -- The cron table's record of periods that ran: errand's own, not a
    -- tenant's. A period older than keep is far beyond any backfill.
    DELETE FROM errand.schedule_runs r
    WHERE (r.name, r.period) IN (SELECT x.name, x.period FROM errand.schedule_runs x
                                 WHERE x.created_at < v_cutoff
                                 ORDER BY x.created_at
                                 LIMIT batch);
    GET DIAGNOSTICS v_runs = ROW_COUNT;

    RETURN QUERY VALUES
        ('emails', (batch - v_left_emails)::bigint),
        ('webhook_messages', (batch - v_left_messages)::bigint),
        ('webhook_attempts', (batch - v_left_attempts)::bigint),
        ('invoice_documents', (batch - v_left_documents)::bigint),
        ('schedule_runs', v_runs);
END;
$$;
REVOKE ALL ON FUNCTION errand.prune_logs(interval, int) FROM PUBLIC;
