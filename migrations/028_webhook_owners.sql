-- Webhook ids owned by kind, and the two functions scoped (docs/webhooks.md,
-- "Tables, functions and privileges").
--
-- errand.webhook_owners (009) kept endpoint ids and message ids in one
-- key, and a second row with the same id took the first one over (ON
-- CONFLICT ... DO UPDATE SET workspace_id). The two tables' keys do not
-- stop an endpoint from having a message's id, so workspace B could insert
-- an endpoint with workspace A's message id: A's replay of that message then
-- said "does not exist", an unscoped replay queued its delivery in B's
-- workspace, and deleting B's endpoint deleted A's owner row. Now a row is
-- keyed by (kind, id): endpoint and message ids cannot meet, and an id
-- already owned by another workspace is refused, never taken over.
--
-- errand.webhook_owner let a caller without a workspace act on every
-- workspace. An app's role granted the functions (README) could, from an
-- unscoped session, rotate any workspace's endpoint secret and read it,
-- although row level security hid the endpoint from it. Now only errand's
-- own role (the functions' owner, a member of it, or a superuser) may call
-- them unscoped; anyone else must scope the transaction to the workspace.
--
-- errand.webhook_replay also raises when its message is not in the
-- workspace (it queued deliveries of nothing before), and gives its
-- deliveries the attempts webhook.dispatch gives them (the retry schedule's
-- length + 1, published by the daemon as errand.settings
-- webhook_max_attempts), not the kind's fixed default.

ALTER TABLE errand.webhook_owners ADD COLUMN kind text, DROP CONSTRAINT webhook_owners_pkey;

-- Rebuilt from the tables, so an owner row taken over before this
-- migration is right again. The owner reads every workspace's rows: row
-- level security is lifted for this transaction only (ALTER TABLE holds
-- its lock until the migration commits, so no one else sees the tables
-- without it).
ALTER TABLE errand.webhook_endpoints NO FORCE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_messages NO FORCE ROW LEVEL SECURITY;
DELETE FROM errand.webhook_owners;
INSERT INTO errand.webhook_owners (kind, id, workspace_id)
SELECT 'endpoint', e.id, e.workspace_id FROM errand.webhook_endpoints e
UNION ALL
SELECT 'message', m.id, m.workspace_id FROM errand.webhook_messages m;
ALTER TABLE errand.webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_messages FORCE ROW LEVEL SECURITY;

ALTER TABLE errand.webhook_owners ALTER COLUMN kind SET NOT NULL,
    ADD CONSTRAINT webhook_owners_kind_check CHECK (kind IN ('endpoint', 'message')),
    ADD PRIMARY KEY (kind, id);

CREATE OR REPLACE FUNCTION errand.webhook_note_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text := CASE TG_TABLE_NAME WHEN 'webhook_endpoints' THEN 'endpoint' ELSE 'message' END;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM errand.webhook_owners o WHERE o.kind = v_kind;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM errand.webhook_owners o WHERE o.kind = v_kind AND o.id = OLD.id;
        RETURN NULL;
    END IF;
    -- The table's key makes the id new to its kind; a row left behind
    -- (nothing known leaves one) is the same workspace's or refused.
    INSERT INTO errand.webhook_owners AS o (kind, id, workspace_id) VALUES (v_kind, NEW.id, NEW.workspace_id)
    ON CONFLICT (kind, id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id
        WHERE o.workspace_id = EXCLUDED.workspace_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'errand: webhook % id % belongs to another workspace', v_kind, NEW.id
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_endpoint_owner_truncate AFTER TRUNCATE ON errand.webhook_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION errand.webhook_note_owner();
CREATE TRIGGER webhook_message_owner_truncate AFTER TRUNCATE ON errand.webhook_messages
    FOR EACH STATEMENT EXECUTE FUNCTION errand.webhook_note_owner();

-- An id is its row's for good, and a row stays in its workspace: the owner
-- rows follow inserts and deletes only. (An endpoint's move is also refused
-- by errand.webhook_endpoint_check; errand never updates a message.)
CREATE FUNCTION errand.webhook_keep_owner() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text := CASE TG_TABLE_NAME WHEN 'webhook_endpoints' THEN 'endpoint' ELSE 'message' END;
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'errand: a webhook %''s id cannot change (insert a new one instead)', v_kind
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.workspace_id IS DISTINCT FROM OLD.workspace_id THEN
        RAISE EXCEPTION 'errand: a webhook % cannot move to another workspace', v_kind
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER webhook_endpoint_keep_owner BEFORE UPDATE OF id ON errand.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_keep_owner();
CREATE TRIGGER webhook_message_keep_owner BEFORE UPDATE OF id, workspace_id ON errand.webhook_messages
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_keep_owner();

-- The role that called into errand's SECURITY DEFINER code: the one SET ROLE
-- chose, else the session's (current_user there is the function's owner).
-- Errand itself is a caller that is the owner, a member of it, or a
-- superuser: pg_has_role(errand.caller_role(), current_user, 'MEMBER').
CREATE FUNCTION errand.caller_role() RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(current_setting('role'), 'none'), session_user);

-- The workspace of a webhook endpoint or message (what: 'endpoint' or
-- 'message') for the functions below, which run as errand's owner
-- (current_user here). A scoped caller must be in that workspace. An
-- unscoped one must be errand itself: the role that called the function
-- (the one SET ROLE chose, else the session's) is the owner, a member of
-- it, or a superuser. An app's role or the tenant role without a scope is
-- refused before anything is looked up.
CREATE OR REPLACE FUNCTION errand.webhook_owner(id uuid, what text) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_role name := errand.caller_role();
    v_ws uuid;
BEGIN
    IF v_caller = '' AND NOT pg_has_role(v_role, current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'errand: role % may act on a webhook % only in a transaction scoped to its workspace', v_role, what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SET LOCAL app.current_workspace_id to the workspace''s id first';
    END IF;
    SELECT o.workspace_id INTO v_ws FROM errand.webhook_owners o WHERE o.kind = what AND o.id = webhook_owner.id;
    IF v_ws IS NULL OR (v_caller <> '' AND v_caller::uuid IS DISTINCT FROM v_ws) THEN
        IF v_caller <> '' THEN
            RAISE EXCEPTION 'errand: webhook % % does not exist in workspace %', what, coalesce(id::text, 'NULL'), v_caller
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'errand: webhook % % does not exist', what, coalesce(id::text, 'NULL')
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN v_ws;
END;
$$;
REVOKE ALL ON FUNCTION errand.webhook_owner(uuid, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION errand.webhook_rotate_secret(endpoint_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_ws uuid := errand.webhook_owner(endpoint_id, 'endpoint');
    v_secret text;
BEGIN
    PERFORM set_config('app.current_workspace_id', v_ws::text, true);
    UPDATE errand.webhook_endpoints e
    SET previous_secret = e.secret,
        previous_secret_expires_at = now() + interval '24 hours',
        secret = errand.webhook_new_secret()
    WHERE e.id = webhook_rotate_secret.endpoint_id AND e.workspace_id = v_ws
    RETURNING e.secret INTO v_secret;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'errand: webhook endpoint % does not exist in workspace %', endpoint_id, v_ws
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM set_config('app.current_workspace_id', v_caller, true);
    RETURN v_secret;
END;
$$;

CREATE OR REPLACE FUNCTION errand.webhook_replay(message_id uuid, endpoint_id uuid DEFAULT NULL) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_ws uuid := errand.webhook_owner(message_id, 'message');
    -- NULL (no daemon has published it yet): the kind's default.
    v_attempts int := (SELECT s.value::int FROM errand.settings s
                       WHERE s.name = 'webhook_max_attempts' AND s.value ~ '^[0-9]{1,3}$');
    v_type text;
    v_enabled boolean;
    v_types text[];
    v_endpoint uuid;
    v_job bigint;
BEGIN
    PERFORM set_config('app.current_workspace_id', v_ws::text, true);
    -- Row level security scopes a plain owner; a superuser owner it does
    -- not, hence the explicit workspace in every query.
    SELECT m.event_type INTO v_type FROM errand.webhook_messages m
    WHERE m.id = webhook_replay.message_id AND m.workspace_id = v_ws;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'errand: webhook message % does not exist in workspace %', webhook_replay.message_id, v_ws
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF webhook_replay.endpoint_id IS NOT NULL THEN
        SELECT e.enabled, e.event_types INTO v_enabled, v_types
        FROM errand.webhook_endpoints e WHERE e.id = webhook_replay.endpoint_id AND e.workspace_id = v_ws;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'errand: webhook endpoint % does not exist in the message''s workspace', webhook_replay.endpoint_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF NOT v_enabled THEN
            RAISE EXCEPTION 'errand: webhook endpoint % is disabled', webhook_replay.endpoint_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'UPDATE errand.webhook_endpoints SET enabled = true WHERE id = ... re-enables it';
        END IF;
        IF cardinality(v_types) > 0 AND NOT v_type = ANY (v_types) THEN
            RAISE EXCEPTION 'errand: webhook endpoint % is not subscribed to event type %', webhook_replay.endpoint_id, v_type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    FOR v_endpoint IN
        SELECT e.id FROM errand.webhook_endpoints e
        WHERE e.workspace_id = v_ws
          AND e.enabled
          AND (cardinality(e.event_types) = 0 OR v_type = ANY (e.event_types))
          AND (webhook_replay.endpoint_id IS NULL OR e.id = webhook_replay.endpoint_id)
        ORDER BY e.created_at, e.id
    LOOP
        INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
        VALUES (v_ws, 'webhook.deliver', jsonb_build_object('message_id', webhook_replay.message_id, 'endpoint_id', v_endpoint), v_attempts)
        RETURNING id INTO v_job;
        RETURN NEXT v_job;
    END LOOP;
    PERFORM set_config('app.current_workspace_id', v_caller, true);
END;
$$;
