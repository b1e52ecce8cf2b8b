-- A W3C traceparent the app puts in its INSERT continues into the job's
-- trace (docs/tracing.md): kept in the job's metadata, where River's
-- OpenTelemetry middleware looks for it, and shown as a column of the view.
-- The view is the same but for its new last column; its CASE must stay
-- errand.job_status's (011) for the status indexes to apply.
CREATE OR REPLACE VIEW errand.jobs AS
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
    j.state::text AS river_state,
    j.metadata ->> 'traceparent' AS traceparent
FROM errand.river_job j;

-- The contract's trigger of 010, and a traceparent: checked (a clear error
-- for anything that is not version-00-style trace context) and kept.
CREATE OR REPLACE FUNCTION errand.jobs_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    v_known text;
    v_missing text;
    v_size bigint;
    v_state errand.river_job_state;
    v_unique_key bytea;
    v_metadata jsonb;
    v_inserted boolean := true;
    v_enum_field text;
    v_enum_values jsonb;
    v_enum_got text;
    v_requested text;
    v_wake_key text;
    v_notified text;
    v_first boolean := false;
    v_idle boolean := false;
    v_existing bigint;
BEGIN
    IF NEW.kind IS NULL THEN
        RAISE EXCEPTION 'errand: kind is required' USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT kinds.queue, kinds.required_args, kinds.max_attempts, kinds.arg_enums,
           coalesce((SELECT s.value::bigint FROM errand.settings s WHERE s.name = 'max_args_bytes'), 1048576) AS max_bytes,
           EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) AS workspace_exists
    INTO k
    FROM errand.kinds WHERE kinds.kind = NEW.kind;
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
    IF NOT k.workspace_exists THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    IF NEW.args IS NULL OR jsonb_typeof(NEW.args) <> 'object' THEN
        RAISE EXCEPTION 'errand: args must be a JSON object, got %', coalesce(jsonb_typeof(NEW.args), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(k.required_args) > 0 THEN
        SELECT string_agg(r, ', ') INTO v_missing
        FROM unnest(k.required_args) AS r
        WHERE NOT NEW.args ? r OR NEW.args -> r = 'null'::jsonb;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'errand: args for kind "%" are missing required field(s): %', NEW.kind, v_missing
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
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
    v_size := octet_length(NEW.args::text);
    IF v_size > k.max_bytes THEN
        RAISE EXCEPTION 'errand: args are % bytes, over the limit of % bytes (ERRAND_MAX_ARGS_BYTES)', v_size, k.max_bytes
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

    IF NEW.traceparent IS NOT NULL
       AND (NEW.traceparent !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            OR substr(NEW.traceparent, 1, 2) = 'ff'
            OR substr(NEW.traceparent, 4, 32) = repeat('0', 32)
            OR substr(NEW.traceparent, 37, 16) = repeat('0', 16)) THEN
        RAISE EXCEPTION 'errand: traceparent must be a W3C trace context traceparent such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, got "%"', left(NEW.traceparent, 100)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    NEW.run_at := coalesce(NEW.run_at, now());
    v_state := CASE WHEN NEW.run_at > now() THEN 'scheduled' ELSE 'available' END;
    v_metadata := jsonb_build_object('workspace_id', NEW.workspace_id);
    IF NEW.traceparent IS NOT NULL THEN
        v_metadata := v_metadata || jsonb_build_object('traceparent', NEW.traceparent);
    END IF;

    -- The wake-up, once per transaction, queue and kind: at once for an idle
    -- queue, else decided at commit, for which the first available job's
    -- insert is armed (see errand.wake_decide).
    NEW.id := nextval('errand.river_job_id_seq'::regclass);
    IF v_state = 'available' THEN
        v_requested := coalesce(current_setting('errand.wake_requested', true), '');
        v_wake_key := E'\x1f' || k.queue || E'\x1e' || NEW.kind || E'\x1f';
        IF position(v_wake_key IN v_requested) = 0 THEN
            v_first := true;
            v_idle := NOT errand.queue_has_work(k.queue, NEW.kind);
            IF NOT v_idle THEN
                PERFORM set_config('errand.wake_arm', ',' || NEW.id || ',', true);
            END IF;
        END IF;
    END IF;

    IF NEW.idempotency_key IS NULL THEN
        INSERT INTO errand.river_job (id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
        VALUES (NEW.id, NEW.args, NEW.kind, NEW.max_attempts, v_metadata, NEW.priority, k.queue, NEW.run_at, v_state, '{}')
        RETURNING river_job.created_at INTO NEW.created_at;
    ELSE
        -- River's unique jobs: one row per key while any job with it exists (all
        -- eight state bits), the ON CONFLICT predicate repeating River's
        -- partial index exactly. DO NOTHING takes no lock on an existing job
        -- (a lock held until the app's transaction ends would keep River's
        -- fetch and completer off that job); the existing id is read by the
        -- next statement, whose snapshot sees a concurrent duplicate that
        -- the insert waited for. Concurrent duplicates get one job and its
        -- id. The loop covers the existing job being deleted (retention) in
        -- between: the key is free again, and this insert makes the job.
        v_metadata := v_metadata || jsonb_build_object('idempotency_key', NEW.idempotency_key);
        v_unique_key := sha256(convert_to('errand/idempotency/' || NEW.workspace_id::text || '/' || NEW.kind || '/' || NEW.idempotency_key, 'UTF8'));
        FOR v_try IN 1 .. 10 LOOP
            INSERT INTO errand.river_job (id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags, unique_key, unique_states)
            VALUES (NEW.id, NEW.args, NEW.kind, NEW.max_attempts, v_metadata, NEW.priority, k.queue, NEW.run_at, v_state, '{}', v_unique_key, B'11111111')
            ON CONFLICT (unique_key)
                WHERE unique_key IS NOT NULL
                  AND unique_states IS NOT NULL
                  AND errand.river_job_state_in_bitmask(unique_states, state)
            DO NOTHING
            RETURNING river_job.created_at INTO NEW.created_at;
            v_inserted := FOUND;
            EXIT WHEN v_inserted;
            SELECT j.id INTO v_existing FROM errand.river_job j
            WHERE j.unique_key = v_unique_key
              AND j.unique_states IS NOT NULL
              AND errand.river_job_state_in_bitmask(j.unique_states, j.state);
            IF FOUND THEN
                -- A duplicate: the existing job, and nobody is woken.
                SELECT * INTO NEW FROM errand.jobs WHERE jobs.id = v_existing;
                RETURN NEW;
            END IF;
        END LOOP;
        IF NOT v_inserted THEN
            RAISE EXCEPTION 'errand: idempotency_key % kept conflicting with a job that vanished before it could be read; retry the transaction', NEW.idempotency_key
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    IF v_first THEN
        IF v_idle THEN
            PERFORM pg_notify('errand.river_insert', json_build_object('queue', k.queue)::text);
        END IF;
        -- errand.wake_arm keeps the id: no other insert has it.
        -- errand.notified_queues: the queues this transaction wakes, or
        -- decides about, at commit.
        v_notified := coalesce(nullif(current_setting('errand.notified_queues', true), ''), ',');
        PERFORM set_config('errand.wake_requested', v_requested || v_wake_key, true),
                CASE WHEN position(',' || k.queue || ',' IN v_notified) = 0
                     THEN set_config('errand.notified_queues', v_notified || k.queue || ',', true) END;
    END IF;

    NEW.queue := k.queue;
    NEW.status := 'pending';
    NEW.attempt := 0;
    RETURN NEW;
END;
$$;
