-- errand's foundation: the directory tables, the kind registry, the SQL
-- enqueue contract over River's river_job, and tenant isolation.
-- Everything lives in schema errand; River's own tables are migrated into the
-- same schema first (River's Schema option).

-- Directory tables. The app fills them (or replaces them with views of the
-- same columns over its own tables), so nothing in errand has a foreign key to
-- them: a view must be able to take a table's place.
CREATE TABLE errand.workspaces (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    slug text UNIQUE NOT NULL,
    plan text NOT NULL DEFAULT 'free',
    stripe_customer_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE errand.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE errand.workspace_members (
    user_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'member',
    PRIMARY KEY (workspace_id, user_id),
    CONSTRAINT role_known CHECK (role IN ('owner', 'admin', 'member', 'viewer'))
);
CREATE INDEX workspace_members_user_idx ON errand.workspace_members (user_id);

-- Kinds and their required args, published from the Go code (one source of
-- truth): built-in kinds at migrate, a custom binary's kinds when it starts.
-- Publishing only adds or updates rows.
CREATE TABLE errand.kinds (
    kind text PRIMARY KEY,
    queue text NOT NULL,
    required_args text[] NOT NULL DEFAULT '{}',
    max_attempts int NOT NULL DEFAULT 25,
    -- Args fields that must hold one of a fixed set of string values
    -- (email.send's template): {"field": ["value", ...]}.
    arg_enums jsonb NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT max_attempts_positive CHECK (max_attempts > 0),
    CONSTRAINT arg_enums_object CHECK (jsonb_typeof(arg_enums) = 'object')
);

-- Settings the SQL contract needs from errand's configuration
-- (e.g. max_args_bytes from ERRAND_MAX_ARGS_BYTES), published by migrate and run.
CREATE TABLE errand.settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO errand.settings (name, value) VALUES ('max_args_bytes', '1048576');

-- workspace_id lives in River's metadata (River's columns are River's); this
-- index makes per-workspace queries, caps and fairness cheap.
CREATE INDEX river_job_workspace_idx ON errand.river_job (((metadata ->> 'workspace_id')::uuid), state);

-- The contract's view. Not tenant-filtered: grant it only to trusted roles
-- (app servers, ops).
CREATE VIEW errand.jobs AS
SELECT
    j.id,
    (j.metadata ->> 'workspace_id')::uuid AS workspace_id,
    j.kind,
    j.args,
    j.queue,
    CASE j.state
        WHEN 'running' THEN 'processing'
        WHEN 'completed' THEN 'completed'
        WHEN 'discarded' THEN 'failed'
        WHEN 'cancelled' THEN 'failed'
        ELSE 'pending'
    END AS status,
    j.attempt::int AS attempt,
    j.max_attempts::int AS max_attempts,
    j.priority::int AS priority,
    j.errors[array_upper(j.errors, 1)] ->> 'error' AS last_error,
    j.scheduled_at AS run_at,
    j.created_at,
    j.attempted_at AS started_at,
    j.finalized_at AS finished_at,
    j.metadata ->> 'idempotency_key' AS idempotency_key,
    j.state::text AS river_state
FROM errand.river_job j;

ALTER VIEW errand.jobs ALTER COLUMN args SET DEFAULT '{}'::jsonb;

-- INSERT INTO errand.jobs: validate, then insert into River's table.
-- SECURITY DEFINER so app roles need only INSERT on the view; search_path is
-- pinned and every name is qualified.
CREATE FUNCTION errand.jobs_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k errand.kinds%ROWTYPE;
    v_known text;
    v_missing text;
    v_max_bytes bigint;
    v_size bigint;
    v_state errand.river_job_state;
    v_unique_key bytea;
    v_unique_states bit(8);
    v_metadata jsonb;
    v_notified text;
    v_inserted boolean := true;
    v_enum_field text;
    v_enum_values jsonb;
    v_enum_got text;
BEGIN
    IF NEW.kind IS NULL THEN
        RAISE EXCEPTION 'errand: kind is required' USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT * INTO k FROM errand.kinds WHERE kinds.kind = NEW.kind;
    IF NOT FOUND THEN
        SELECT string_agg(kinds.kind, ', ' ORDER BY kinds.kind) INTO v_known FROM errand.kinds;
        RAISE EXCEPTION 'errand: unknown job kind "%" (known kinds: %)', NEW.kind, coalesce(v_known, 'none')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'kinds are published by errand migrate and by each errand binary when it starts';
    END IF;

    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: workspace_id is required for kind "%"', NEW.kind
            USING ERRCODE = 'not_null_violation';
    END IF;
    PERFORM 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    IF NEW.args IS NULL OR jsonb_typeof(NEW.args) <> 'object' THEN
        RAISE EXCEPTION 'errand: args must be a JSON object, got %', coalesce(jsonb_typeof(NEW.args), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(r, ', ') INTO v_missing
    FROM unnest(k.required_args) AS r
    WHERE NOT NEW.args ? r OR NEW.args -> r = 'null'::jsonb;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'errand: args for kind "%" are missing required field(s): %', NEW.kind, v_missing
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Fields that must hold one of a fixed set of values (email.send's
    -- template): the first offending field, in name order, is reported.
    IF k.arg_enums <> '{}'::jsonb THEN
        SELECT e.key, e.value, NEW.args ->> e.key INTO v_enum_field, v_enum_values, v_enum_got
        FROM jsonb_each(k.arg_enums) AS e
        WHERE NEW.args ? e.key
          AND NEW.args -> e.key <> 'null'::jsonb
          AND NOT (jsonb_typeof(NEW.args -> e.key) = 'string' AND e.value ? (NEW.args ->> e.key))
        ORDER BY e.key
        LIMIT 1;
        IF v_enum_field IS NOT NULL THEN
            RAISE EXCEPTION 'errand: args field "%" of kind "%" must be one of: %, got "%"', v_enum_field, NEW.kind,
                (SELECT string_agg(a.v, ', ' ORDER BY a.n) FROM jsonb_array_elements_text(v_enum_values) WITH ORDINALITY AS a(v, n)), v_enum_got
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT s.value::bigint INTO v_max_bytes FROM errand.settings s WHERE s.name = 'max_args_bytes';
    v_size := octet_length(NEW.args::text);
    IF v_size > coalesce(v_max_bytes, 1048576) THEN
        RAISE EXCEPTION 'errand: args are % bytes, over the limit of % bytes (ERRAND_MAX_ARGS_BYTES)', v_size, coalesce(v_max_bytes, 1048576)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    NEW.priority := coalesce(NEW.priority, 1);
    IF NEW.priority < 1 OR NEW.priority > 4 THEN
        RAISE EXCEPTION 'errand: priority must be between 1 and 4, got %', NEW.priority
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.max_attempts := coalesce(NEW.max_attempts, k.max_attempts);
    IF NEW.max_attempts < 1 OR NEW.max_attempts > 1000 THEN
        RAISE EXCEPTION 'errand: max_attempts must be between 1 and 1000, got %', NEW.max_attempts
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND (NEW.idempotency_key = '' OR length(NEW.idempotency_key) > 255) THEN
        RAISE EXCEPTION 'errand: idempotency_key must be 1 to 255 characters, got %', length(NEW.idempotency_key)
            USING ERRCODE = 'check_violation';
    END IF;

    NEW.run_at := coalesce(NEW.run_at, now());
    v_state := CASE WHEN NEW.run_at > now() THEN 'scheduled' ELSE 'available' END;
    v_metadata := jsonb_build_object('workspace_id', NEW.workspace_id);

    IF NEW.idempotency_key IS NULL THEN
        INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
        VALUES (NEW.args, NEW.kind, NEW.max_attempts, v_metadata, NEW.priority, k.queue, NEW.run_at, v_state, '{}')
        RETURNING river_job.id, river_job.created_at INTO NEW.id, NEW.created_at;
    ELSE
        -- River's unique jobs: one row per key while any job with it exists (all
        -- eight state bits), the ON CONFLICT predicate repeating River's
        -- partial index exactly. The no-op update makes RETURNING give the
        -- existing id; concurrent duplicates wait on the first and get its id.
        v_metadata := v_metadata || jsonb_build_object('idempotency_key', NEW.idempotency_key);
        v_unique_key := sha256(convert_to('errand/idempotency/' || NEW.workspace_id::text || '/' || NEW.kind || '/' || NEW.idempotency_key, 'UTF8'));
        v_unique_states := B'11111111';
        INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags, unique_key, unique_states)
        VALUES (NEW.args, NEW.kind, NEW.max_attempts, v_metadata, NEW.priority, k.queue, NEW.run_at, v_state, '{}', v_unique_key, v_unique_states)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL
              AND unique_states IS NOT NULL
              AND errand.river_job_state_in_bitmask(unique_states, state)
        DO UPDATE SET unique_key = EXCLUDED.unique_key
        RETURNING river_job.id, river_job.created_at, river_job.xmax = 0 INTO NEW.id, NEW.created_at, v_inserted;
        IF NOT v_inserted THEN
            -- A duplicate: RETURNING shows the existing job, and nobody is woken.
            SELECT * INTO NEW FROM errand.jobs WHERE jobs.id = NEW.id;
            RETURN NEW;
        END IF;
    END IF;

    -- Wake an idle worker when the transaction commits. Once per transaction
    -- and queue, not per row: notifying transactions serialise at commit.
    IF v_state = 'available' THEN
        v_notified := coalesce(nullif(current_setting('errand.notified_queues', true), ''), ',');
        IF position(',' || k.queue || ',' IN v_notified) = 0 THEN
            PERFORM pg_notify('errand.river_insert', json_build_object('queue', k.queue)::text);
            PERFORM set_config('errand.notified_queues', v_notified || k.queue || ',', true);
        END IF;
    END IF;

    NEW.queue := k.queue;
    NEW.status := 'pending';
    NEW.attempt := 0;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_insert INSTEAD OF INSERT ON errand.jobs
    FOR EACH ROW EXECUTE FUNCTION errand.jobs_insert();

-- The same as a function, with named parameters.
CREATE FUNCTION errand.enqueue(
    workspace_id uuid,
    kind text,
    args jsonb DEFAULT '{}'::jsonb,
    run_at timestamptz DEFAULT NULL,
    priority int DEFAULT NULL,
    max_attempts int DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS bigint
LANGUAGE sql
AS $$
    INSERT INTO errand.jobs (workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id;
$$;

-- Deleting a workspace fails its jobs that have not started, with a reason,
-- instead of leaving them to run for a tenant that is gone. (Jobs of a
-- workspace that disappears some other way fail when they next touch tenant
-- data: see store.InWorkspace.)
CREATE FUNCTION errand.workspace_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE errand.river_job
    SET state = 'cancelled',
        finalized_at = now(),
        errors = coalesce(errors, '{}') || jsonb_build_object(
            'at', now(), 'attempt', attempt,
            'error', format('workspace %s was deleted', OLD.id), 'trace', '')
    WHERE (metadata ->> 'workspace_id')::uuid = OLD.id
      AND state IN ('available', 'scheduled', 'retryable', 'pending');
    RETURN OLD;
END;
$$;

CREATE TRIGGER workspace_deleted AFTER DELETE ON errand.workspaces
    FOR EACH ROW EXECUTE FUNCTION errand.workspace_deleted();

-- Tenant isolation. Every table with a workspace_id has forced, fail-closed
-- row level security: with no current workspace (or an empty one) it shows no
-- rows. FORCE makes it apply to the table's owner too, which is how a plain
-- owner role on managed PostgreSQL is scoped; a superuser or BYPASSRLS role
-- switches to errand_tenant inside store.InWorkspace.
ALTER TABLE errand.workspace_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.workspace_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.workspace_members
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

-- The directory tables are not tenant tables (the app writes them without a
-- scope, and errand reads them to fan out), but a tenant-scoped transaction
-- sees only its own workspace and that workspace's members' user rows.
ALTER TABLE errand.workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY scoped_directory ON errand.workspaces
    USING (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.users FORCE ROW LEVEL SECURITY;
CREATE POLICY scoped_directory ON errand.users
    USING (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR EXISTS (SELECT 1 FROM errand.workspace_members m
                      WHERE m.user_id = users.id
                        AND m.workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid));

-- The role tenant-scoped transactions run as when errand's own role bypasses
-- RLS. Roles are cluster-wide and databases migrate concurrently (advisory
-- locks are per database), so creation tolerates a concurrent twin. A role
-- that may not create roles (managed PostgreSQL) skips this: FORCE covers it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'errand_tenant')
       AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            CREATE ROLE errand_tenant NOLOGIN NOINHERIT NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- A non-superuser must be a member to SET ROLE to it.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'errand_tenant')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'errand_tenant', 'MEMBER')
       AND (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT errand_tenant TO %I', current_user);
    END IF;
END;
$$;

-- errand.grant_tenant grants the tenant role what a tenant table needs; later
-- migrations call it for each tenant table they add.
CREATE FUNCTION errand.grant_tenant(tbl regclass, privileges text DEFAULT 'SELECT, INSERT, UPDATE, DELETE') RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'errand_tenant') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA errand TO errand_tenant';
        EXECUTE format('GRANT %s ON %s TO errand_tenant', privileges, tbl);
    END IF;
END;
$$;

SELECT errand.grant_tenant('errand.workspace_members');
SELECT errand.grant_tenant('errand.workspaces', 'SELECT');
SELECT errand.grant_tenant('errand.users', 'SELECT');
