-- Fixes to the contract and its tables, each found by a review.
--
-- (1) run_at 'infinity' and '-infinity' are refused, by the single-row
-- trigger and by errand.enqueue_many: River's fetch, rescuer and metrics and
-- errand's fair fetch, `errand jobs list` and `jobs show` read scheduled_at
-- into Go times, which have no infinity (a job at -infinity broke the fair
-- fetch after it had marked a batch running). One test of the value the
-- trigger already computes, no query.
--
-- (2) errand.enqueue_many refuses arrays that are not one-dimensional from
-- 1: it numbers rows from 1 and reads a bad one back by subscript, so
-- '[0:1]={ping,pingg}' blamed row 2 for a missing kind.
--
-- Both functions are their latest definitions (017's trigger, 010's
-- enqueue_many) with only these changes; CREATE OR REPLACE keeps their
-- owner and grants (enqueue_many's REVOKE from PUBLIC and what apps were
-- granted since).

-- The contract's trigger of 017, and run_at must be finite.
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
    IF NOT isfinite(NEW.run_at) THEN
        RAISE EXCEPTION 'errand: run_at must be a finite time, got %', NEW.run_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'leave run_at NULL (or out) to run the job now';
    END IF;
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

-- errand.enqueue_many of 010, with run_at's check in the set-based test
-- (the trigger words the error) and the arrays' shape checked first.
CREATE OR REPLACE FUNCTION errand.enqueue_many(
    workspace_id uuid[],
    kind text[],
    args json[] DEFAULT NULL,
    run_at timestamptz[] DEFAULT NULL,
    priority int[] DEFAULT NULL,
    max_attempts int[] DEFAULT NULL,
    idempotency_key text[] DEFAULT NULL
) RETURNS TABLE (id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n int;
    v_param text;
    v_len int;
    v_max_bytes bigint;
    v_bad bigint;
    v_code text;
    v_message text;
    v_hint text;
    v_ids bigint[];
    v_requested text;
    v_arm text;
    v_wake_key text;
    v_notified text;
    v_wake_queues text[];
    v_wake_kinds text[];
    v_wake_armed boolean[];
    v_scope text;
    v_id bigint;
    v_dims text;
BEGIN
    -- Rows are numbered, and bad ones read back by subscript, from 1: an
    -- array that starts elsewhere ('[0:1]={...}') or has more dimensions
    -- would be read as other rows than the ones checked.
    FOR v_param, v_dims IN
        SELECT c.p, c.d FROM (VALUES
            ('workspace_id', array_dims(enqueue_many.workspace_id)), ('kind', array_dims(enqueue_many.kind)),
            ('args', array_dims(enqueue_many.args)), ('run_at', array_dims(enqueue_many.run_at)),
            ('priority', array_dims(enqueue_many.priority)), ('max_attempts', array_dims(enqueue_many.max_attempts)),
            ('idempotency_key', array_dims(enqueue_many.idempotency_key))) AS c(p, d)
        WHERE c.d !~ '^\[1:[0-9]+\]$'
    LOOP
        RAISE EXCEPTION 'errand: enqueue_many: % must be a one-dimensional array starting at 1, got %', v_param, v_dims
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'build it with ARRAY[...] or ''{...}'', which start at 1';
    END LOOP;
    v_n := greatest(cardinality(enqueue_many.workspace_id), cardinality(enqueue_many.kind), cardinality(enqueue_many.args),
                    cardinality(enqueue_many.run_at), cardinality(enqueue_many.priority),
                    cardinality(enqueue_many.max_attempts), cardinality(enqueue_many.idempotency_key));
    IF coalesce(v_n, 0) = 0 THEN
        RETURN;
    END IF;
    FOR v_param, v_len IN
        SELECT c.p, c.l FROM (VALUES
            ('workspace_id', cardinality(enqueue_many.workspace_id)), ('kind', cardinality(enqueue_many.kind)),
            ('args', cardinality(enqueue_many.args)), ('run_at', cardinality(enqueue_many.run_at)),
            ('priority', cardinality(enqueue_many.priority)), ('max_attempts', cardinality(enqueue_many.max_attempts)),
            ('idempotency_key', cardinality(enqueue_many.idempotency_key))) AS c(p, l)
        WHERE c.l IS NOT NULL AND c.l <> v_n
    LOOP
        RAISE EXCEPTION 'errand: enqueue_many: % has % elements, another parameter has %', v_param, v_len, v_n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'give every parameter one element per job, or NULL for its default';
    END LOOP;

    -- Checked and written unscoped, as the contract's trigger does (see
    -- 005): an app session scoped for its own row level security may enqueue
    -- for any workspace. The caller's scope is back before the ids are
    -- returned; an error undoes it with the (sub)transaction.
    v_scope := coalesce(current_setting('app.current_workspace_id', true), '');
    PERFORM set_config('app.current_workspace_id', '', true);

    -- The first row the single-row trigger would refuse. The set-based test
    -- only finds the row; the trigger itself, on that one row, gives the
    -- error, so messages cannot drift apart.
    v_max_bytes := coalesce((SELECT s.value::bigint FROM errand.settings s WHERE s.name = 'max_args_bytes'), 1048576);
    SELECT u.n INTO v_bad
    FROM unnest(enqueue_many.workspace_id, enqueue_many.kind, enqueue_many.args, enqueue_many.run_at, enqueue_many.priority,
                enqueue_many.max_attempts, enqueue_many.idempotency_key)
         WITH ORDINALITY AS u(workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key, n)
    LEFT JOIN errand.kinds k ON k.kind = u.kind
    LEFT JOIN errand.workspaces w ON w.id = u.workspace_id
    CROSS JOIN LATERAL (SELECT CASE WHEN enqueue_many.args IS NULL THEN '{}'::jsonb ELSE u.args::jsonb END) AS a(args)
    WHERE coalesce(
            k.kind IS NULL
            OR w.id IS NULL
            OR a.args IS NULL OR jsonb_typeof(a.args) <> 'object'
            OR (cardinality(k.required_args) > 0 AND NOT (jsonb_strip_nulls(a.args) ?& k.required_args))
            OR CASE WHEN k.arg_enums = '{}'::jsonb THEN false
                    ELSE EXISTS (SELECT 1 FROM jsonb_each(k.arg_enums) AS e
                                 WHERE a.args ? e.key
                                   AND a.args -> e.key <> 'null'::jsonb
                                   AND NOT (jsonb_typeof(a.args -> e.key) = 'string' AND e.value ? (a.args ->> e.key))) END
            OR octet_length(a.args::text) > v_max_bytes
            OR NOT isfinite(coalesce(u.run_at, now()))
            OR coalesce(u.priority, 1) NOT BETWEEN 1 AND 4
            OR coalesce(u.max_attempts, k.max_attempts) NOT BETWEEN 1 AND 1000
            OR (u.idempotency_key IS NOT NULL AND (u.idempotency_key = '' OR length(u.idempotency_key) > 255)),
          true)
    ORDER BY u.n
    LIMIT 1;
    IF v_bad IS NOT NULL THEN
        BEGIN
            INSERT INTO errand.jobs (workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key)
            VALUES (enqueue_many.workspace_id[v_bad], enqueue_many.kind[v_bad],
                    CASE WHEN enqueue_many.args IS NULL THEN '{}'::jsonb ELSE enqueue_many.args[v_bad]::jsonb END,
                    enqueue_many.run_at[v_bad], enqueue_many.priority[v_bad], enqueue_many.max_attempts[v_bad],
                    enqueue_many.idempotency_key[v_bad]);
            RAISE EXCEPTION 'errand: enqueue_many: row % passed the single-row checks after failing the set-based ones', v_bad
                USING ERRCODE = 'internal_error';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_code = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
            IF v_code = 'XX000' THEN
                RAISE;
            END IF;
            IF coalesce(v_hint, '') = '' THEN
                RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = format('%s (row %s)', v_message, v_bad);
            END IF;
            RAISE EXCEPTION USING ERRCODE = v_code, MESSAGE = format('%s (row %s)', v_message, v_bad), HINT = v_hint;
        END;
    END IF;

    -- Ids in the order given. The first available job of each queue and
    -- kind new to this transaction, and the first with a key (which may turn
    -- out to be a duplicate), are armed for the wake-up decision at commit.
    SELECT array_agg(g.id ORDER BY g.n) INTO v_ids
    FROM (SELECT g.n, nextval('errand.river_job_id_seq'::regclass) AS id FROM generate_series(1, v_n) AS g(n)) g;
    v_requested := coalesce(current_setting('errand.wake_requested', true), '');
    SELECT coalesce(string_agg(v_ids[x.n]::text, ','), '') INTO v_arm
    FROM (SELECT min(u.n) FILTER (WHERE u.idempotency_key IS NULL) AS plain_n,
                 min(u.n) FILTER (WHERE u.idempotency_key IS NOT NULL) AS keyed_n
          FROM unnest(enqueue_many.kind, enqueue_many.run_at, enqueue_many.idempotency_key)
               WITH ORDINALITY AS u(kind, run_at, idempotency_key, n)
          JOIN errand.kinds k ON k.kind = u.kind
          WHERE coalesce(u.run_at, now()) <= now()
            AND position(E'\x1f' || k.queue || E'\x1e' || u.kind || E'\x1f' IN v_requested) = 0
          GROUP BY k.queue, u.kind) f
    CROSS JOIN LATERAL unnest(ARRAY[f.plain_n, f.keyed_n]) AS x(n)
    WHERE x.n IS NOT NULL;
    PERFORM set_config('errand.wake_arm', ',' || v_arm || ',', true);

    -- Rows with a key go in key order (concurrent calls lock keys in one
    -- order) and once per key, under River's unique index as in the trigger.
    WITH src AS MATERIALIZED (
        SELECT u.n, v_ids[u.n] AS id, u.kind, k.queue,
               CASE WHEN enqueue_many.args IS NULL THEN '{}'::jsonb ELSE u.args::jsonb END AS args,
               coalesce(u.run_at, now()) AS run_at, coalesce(u.priority, 1) AS priority,
               coalesce(u.max_attempts, k.max_attempts) AS max_attempts,
               CASE WHEN coalesce(u.run_at, now()) > now() THEN 'scheduled' ELSE 'available' END::errand.river_job_state AS state,
               jsonb_build_object('workspace_id', u.workspace_id)
                   || CASE WHEN u.idempotency_key IS NULL THEN '{}'::jsonb
                           ELSE jsonb_build_object('idempotency_key', u.idempotency_key) END AS metadata,
               CASE WHEN u.idempotency_key IS NOT NULL THEN
                   sha256(convert_to('errand/idempotency/' || u.workspace_id::text || '/' || u.kind || '/' || u.idempotency_key, 'UTF8'))
               END AS unique_key
        FROM unnest(enqueue_many.workspace_id, enqueue_many.kind, enqueue_many.args, enqueue_many.run_at,
                    enqueue_many.priority, enqueue_many.max_attempts, enqueue_many.idempotency_key)
             WITH ORDINALITY AS u(workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key, n)
        JOIN errand.kinds k ON k.kind = u.kind
    ),
    plain AS (
        INSERT INTO errand.river_job (id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
        SELECT src.id, src.args, src.kind, src.max_attempts, src.metadata, src.priority, src.queue, src.run_at, src.state, '{}'
        FROM src WHERE src.unique_key IS NULL
    ),
    keyed AS (
        INSERT INTO errand.river_job (id, args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags, unique_key, unique_states)
        SELECT DISTINCT ON (src.unique_key)
               src.id, src.args, src.kind, src.max_attempts, src.metadata, src.priority, src.queue, src.run_at, src.state, '{}',
               src.unique_key, B'11111111'
        FROM src WHERE src.unique_key IS NOT NULL
        ORDER BY src.unique_key, src.n
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL
              AND unique_states IS NOT NULL
              AND errand.river_job_state_in_bitmask(unique_states, state)
        DO NOTHING
        RETURNING river_job.id, river_job.unique_key
    ),
    -- A key whose job already existed has a NULL id here: the existing job
    -- is read below (DO NOTHING takes no lock on it, and this statement's
    -- snapshot may not see it).
    res AS MATERIALIZED (
        SELECT src.n, CASE WHEN src.unique_key IS NULL THEN src.id ELSE kd.id END AS id, src.queue, src.kind, src.state,
               src.unique_key IS NULL OR kd.id = src.id AS new_job
        FROM src LEFT JOIN keyed kd ON kd.unique_key = src.unique_key
    ),
    wake AS (
        SELECT res.queue, res.kind,
               bool_or(strpos(',' || v_arm || ',', ',' || res.id::text || ',') > 0) AS armed
        FROM res WHERE res.new_job AND res.state = 'available'
        GROUP BY res.queue, res.kind
    )
    SELECT (SELECT array_agg(res.id ORDER BY res.n) FROM res),
           (SELECT array_agg(wake.queue) FROM wake),
           (SELECT array_agg(wake.kind) FROM wake),
           (SELECT array_agg(wake.armed) FROM wake)
    INTO v_ids, v_wake_queues, v_wake_kinds, v_wake_armed;
    PERFORM set_config('errand.wake_arm', '', true);

    -- The existing jobs of keys that were taken, read by a statement whose
    -- snapshot sees a concurrent duplicate the insert waited for. A job
    -- deleted in between (retention) freed its key: that row goes through
    -- the single-row trigger, which makes the job or finds the newer one.
    IF array_position(v_ids, NULL) IS NOT NULL THEN
        SELECT array_agg(coalesce(x.id,
                   (SELECT j.id FROM errand.river_job j
                    WHERE j.unique_key = sha256(convert_to('errand/idempotency/' || x.workspace_id::text || '/' || x.kind || '/' || x.idempotency_key, 'UTF8'))
                      AND j.unique_states IS NOT NULL
                      AND errand.river_job_state_in_bitmask(j.unique_states, j.state)))
               ORDER BY x.n)
        INTO v_ids
        FROM unnest(v_ids, enqueue_many.workspace_id, enqueue_many.kind, enqueue_many.idempotency_key)
             WITH ORDINALITY AS x(id, workspace_id, kind, idempotency_key, n);
        FOR v_bad IN SELECT x.n FROM unnest(v_ids) WITH ORDINALITY AS x(id, n) WHERE x.id IS NULL ORDER BY x.n LOOP
            INSERT INTO errand.jobs (workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key)
            VALUES (enqueue_many.workspace_id[v_bad], enqueue_many.kind[v_bad],
                    CASE WHEN enqueue_many.args IS NULL THEN '{}'::jsonb ELSE enqueue_many.args[v_bad]::jsonb END,
                    enqueue_many.run_at[v_bad], enqueue_many.priority[v_bad], enqueue_many.max_attempts[v_bad],
                    enqueue_many.idempotency_key[v_bad])
            RETURNING jobs.id INTO v_id;
            v_ids[v_bad] := v_id;
        END LOOP;
        -- What the trigger requested for those rows counts for the rest.
        v_requested := v_requested || coalesce(current_setting('errand.wake_requested', true), '');
    END IF;

    -- A queue and kind whose new jobs all had keys, the armed one a
    -- duplicate, has no decision queued: it is woken at commit.
    v_notified := coalesce(nullif(current_setting('errand.notified_queues', true), ''), ',');
    FOR i IN 1 .. coalesce(cardinality(v_wake_queues), 0) LOOP
        v_wake_key := E'\x1f' || v_wake_queues[i] || E'\x1e' || v_wake_kinds[i] || E'\x1f';
        CONTINUE WHEN position(v_wake_key IN v_requested) > 0;
        IF v_wake_armed[i] THEN
            v_requested := v_requested || v_wake_key;
        ELSE
            PERFORM pg_notify('errand.river_insert', json_build_object('queue', v_wake_queues[i])::text);
        END IF;
        IF position(',' || v_wake_queues[i] || ',' IN v_notified) = 0 THEN
            v_notified := v_notified || v_wake_queues[i] || ',';
        END IF;
    END LOOP;
    PERFORM set_config('errand.wake_requested', v_requested, true),
            set_config('errand.notified_queues', v_notified, true),
            set_config('app.current_workspace_id', v_scope, true);
    RETURN QUERY SELECT unnest(v_ids);
END;
$$;

-- (3) An email row's job must be a job of the row's workspace. Job ids are
-- global and errand.emails.job_id is unique, so a tenant could insert a row
-- with the id another workspace's email job was about to get (or had), and
-- that job failed every attempt on a row it may not see (row level
-- security), or probe other workspaces' job ids through duplicate-key
-- errors. The check runs before the unique index is consulted and says the
-- same for a job of another workspace as for one that does not exist. (A
-- trigger, not a constraint on (job_id, workspace_id): the previous
-- release's replicas conflict ON (job_id) during a rolling deploy, and
-- replacing the unique index would rebuild it under an exclusive lock.)
-- river_job's row level security is not forced: the function, as its
-- owner, sees every job.
CREATE FUNCTION errand.email_job_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.job_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.job_id IS DISTINCT FROM OLD.job_id OR NEW.workspace_id IS DISTINCT FROM OLD.workspace_id)
       AND NOT EXISTS (SELECT 1 FROM errand.river_job j
                       WHERE j.id = NEW.job_id AND (j.metadata ->> 'workspace_id')::uuid = NEW.workspace_id)
       -- The job's own row already there: a stale attempt's late upsert
       -- after River's cleaner deleted the job updates it.
       AND NOT EXISTS (SELECT 1 FROM errand.emails e WHERE e.job_id = NEW.job_id AND e.workspace_id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: email job_id % is not a job of workspace %', NEW.job_id, NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER email_job_check BEFORE INSERT OR UPDATE OF job_id, workspace_id ON errand.emails
    FOR EACH ROW EXECUTE FUNCTION errand.email_job_check();

-- (4) Kind names may not contain '/': an idempotency key is hashed from
-- workspace || '/' || kind || '/' || key, so kind 'report' with key 'pdf/x'
-- was kind 'report/pdf' with key 'x'. The Go registry refuses such names
-- (jobs.Registry.Add); this refuses them for rows written any other way. A
-- database that already has one keeps it (the check is then NOT VALID, and
-- a warning names it): a binary defining it no longer starts, so it is
-- renamed there.
--
-- The ALTER needs errand.kinds to itself for a moment (every enqueue reads
-- it): it waits at most 5 seconds, as 036 does, and the migration stops
-- with nothing applied behind a longer transaction.
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
    v_slashed text;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    SELECT string_agg(k.kind, ', ' ORDER BY k.kind) INTO v_slashed FROM errand.kinds k WHERE strpos(k.kind, '/') > 0;
    IF v_slashed IS NULL THEN
        ALTER TABLE errand.kinds ADD CONSTRAINT kind_without_slash CHECK (strpos(kind, '/') = 0);
    ELSE
        ALTER TABLE errand.kinds ADD CONSTRAINT kind_without_slash CHECK (strpos(kind, '/') = 0) NOT VALID;
        RAISE WARNING 'errand: job kind(s) % contain ''/'', which kind names may no longer contain: rename them in the binary that defines them', v_slashed;
    END IF;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'migration 040 waited 5 seconds for errand.kinds and gave up: another transaction holds it'
        USING ERRCODE = 'lock_not_available',
              HINT = 'Run errand migrate again once it has ended; pg_stat_activity shows it.';
END $$;

