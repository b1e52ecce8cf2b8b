-- Retention reaches the logs of deleted workspaces, and the cron table
-- keeps each entry's latest run.
--
-- errand.prune_logs (015) walked errand.workspaces, scoped to each in turn
-- (the log tables' row level security is forced: an unscoped owner sees
-- none of their rows). A deleted workspace's emails, webhook messages and
-- attempts and invoice versions were never reached: kept forever, past
-- ERRAND_RETAIN_LOGS, for a tenant that had left. Now a trigger notes each
-- deleted workspace in errand.deleted_workspaces (errand's own, granted to
-- nobody), prune_logs walks those too, deletes their old rows (a deleted
-- workspace's latest invoice versions included: no one can fetch them any
-- more) and forgets the note once none of its rows is left. A workspace
-- created again with the same id is live again and loses its note.
--
-- And it deleted errand.schedule_runs rows by age alone: with a short
-- ERRAND_RETAIN_LOGS (it may be an hour) the record of an entry's last run
-- went, and the leader, which backfills a missed period only for an entry
-- that has run before in this database, no longer caught one up (a weekly
-- usage report missed during an outage with 72 h of retention). The
-- latest run of each entry is now kept whatever its age.

CREATE TABLE errand.deleted_workspaces (
    id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON errand.deleted_workspaces FROM PUBLIC;

CREATE FUNCTION errand.note_deleted_workspace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO errand.deleted_workspaces (id) VALUES (OLD.id)
    ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at;
    RETURN NULL;
END;
$$;

CREATE TRIGGER note_deleted_workspace AFTER DELETE ON errand.workspaces
    FOR EACH ROW EXECUTE FUNCTION errand.note_deleted_workspace();

-- Workspaces deleted before this migration: their ids are only in the log
-- tables, whose forced row level security hides them from an unscoped
-- plain owner, so for one it is lifted for this transaction (as 028 does);
-- a superuser or BYPASSRLS role reads them as they are. Lifting it locks
-- the four tables (ACCESS EXCLUSIVE) until the migration commits, behind
-- any transaction reading them: it waits at most 5 seconds for each, as 036 does,
-- and the migration stops with nothing applied; the scan that follows
-- reads each table once (seconds for millions of rows), while email and
-- webhook bookkeeping waits.
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
    v_lift boolean := NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user);
BEGIN
    IF v_lift THEN
        PERFORM set_config('lock_timeout', '5s', true);
        ALTER TABLE errand.emails NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.webhook_messages NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.webhook_attempts NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.invoice_documents NO FORCE ROW LEVEL SECURITY;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
    INSERT INTO errand.deleted_workspaces (id)
    SELECT t.ws FROM (
        SELECT workspace_id FROM errand.emails
        UNION SELECT workspace_id FROM errand.webhook_messages
        UNION SELECT workspace_id FROM errand.webhook_attempts
        UNION SELECT workspace_id FROM errand.invoice_documents
    ) AS t(ws)
    WHERE t.ws IS NOT NULL AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = t.ws)
    ON CONFLICT (id) DO NOTHING;
    IF v_lift THEN
        ALTER TABLE errand.emails FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.webhook_messages FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.webhook_attempts FORCE ROW LEVEL SECURITY;
        ALTER TABLE errand.invoice_documents FORCE ROW LEVEL SECURITY;
    END IF;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'migration 041 waited 5 seconds for errand''s log tables (emails, webhook_messages, webhook_attempts, invoice_documents) and gave up: another transaction holds one'
        USING ERRCODE = 'lock_not_available',
              HINT = 'Run errand migrate again once it has ended; pg_stat_activity shows it.';
END $$;

CREATE OR REPLACE FUNCTION errand.prune_logs(keep interval, batch int DEFAULT 1000)
RETURNS TABLE (table_name text, deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_cutoff timestamptz := now() - keep;
    v_ws uuid;
    v_gone boolean;
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
    -- A workspace created again with a deleted one's id is live again.
    DELETE FROM errand.deleted_workspaces d USING errand.workspaces w WHERE w.id = d.id;
    FOR v_ws, v_gone IN
        SELECT x.id, x.gone FROM (
            SELECT w.id, false AS gone FROM errand.workspaces w
            UNION ALL
            SELECT d.id, true FROM errand.deleted_workspaces d
        ) x ORDER BY x.id
    LOOP
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
            -- A live workspace's latest version of an invoice stays; a
            -- deleted workspace's goes too.
            DELETE FROM errand.invoice_documents d
            WHERE d.id IN (SELECT x.id FROM errand.invoice_documents x
                           WHERE x.workspace_id = v_ws AND x.created_at < v_cutoff
                             AND (v_gone OR EXISTS (SELECT 1 FROM errand.invoice_documents newer
                                                    WHERE newer.invoice_id = x.invoice_id AND newer.version > x.version))
                           ORDER BY x.created_at
                           LIMIT v_left_documents);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_left_documents := v_left_documents - v_n;
        END IF;

        -- A deleted workspace with no rows left is forgotten.
        IF v_gone AND NOT EXISTS (SELECT 1 FROM errand.emails x WHERE x.workspace_id = v_ws)
                  AND NOT EXISTS (SELECT 1 FROM errand.webhook_messages x WHERE x.workspace_id = v_ws)
                  AND NOT EXISTS (SELECT 1 FROM errand.webhook_attempts x WHERE x.workspace_id = v_ws)
                  AND NOT EXISTS (SELECT 1 FROM errand.invoice_documents x WHERE x.workspace_id = v_ws) THEN
            DELETE FROM errand.deleted_workspaces d WHERE d.id = v_ws;
        END IF;
    END LOOP;
    PERFORM set_config('app.current_workspace_id', v_scope, true);

    -- The cron table's record of periods that ran: errand's own, not a
    -- tenant's. Each entry's latest run stays whatever its age: the leader
    -- backfills a missed period only for an entry that has run before.
    DELETE FROM errand.schedule_runs r
    WHERE (r.name, r.period) IN (SELECT x.name, x.period FROM errand.schedule_runs x
                                 WHERE x.created_at < v_cutoff
                                   AND EXISTS (SELECT 1 FROM errand.schedule_runs newer
                                               WHERE newer.name = x.name AND newer.period > x.period)
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
