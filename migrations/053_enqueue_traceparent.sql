-- errand.enqueue takes a traceparent, as the INSERT into errand.jobs has
-- since 017: the README calls the function the same as the INSERT, and an
-- app that traces had to give it up for the INSERT.
--
-- A new parameter is a new signature, which CREATE OR REPLACE cannot give.
-- An overload beside the old function is no way out: every call that
-- leaves traceparent out (every call today) would match both ("function
-- errand.enqueue(...) is not unique"), and so would the README's `GRANT
-- EXECUTE ON FUNCTION errand.enqueue TO app`. So, in this migration's one
-- transaction, the old function is renamed out of the way, the new one is
-- created, the old one's privileges are granted on it (the app roles
-- operators granted it to, PUBLIC's default unless they revoked it), and
-- the old one is dropped. Callers see the old function until the commit
-- and the new one after it, with the same grants; calls by name and
-- positional calls of up to seven arguments read as before.

ALTER FUNCTION errand.enqueue(uuid, text, jsonb, timestamptz, int, int, text) RENAME TO enqueue_before_053;

-- The same as the INSERT, with named parameters (001's, and traceparent).
CREATE FUNCTION errand.enqueue(
    workspace_id uuid,
    kind text,
    args jsonb DEFAULT '{}'::jsonb,
    run_at timestamptz DEFAULT NULL,
    priority int DEFAULT NULL,
    max_attempts int DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    traceparent text DEFAULT NULL
) RETURNS bigint
LANGUAGE sql
AS $$
    INSERT INTO errand.jobs (workspace_id, kind, args, run_at, priority, max_attempts, idempotency_key, traceparent)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id;
$$;

DO $$
DECLARE
    r record;
    v_detail text;
BEGIN
    -- Exactly the old function's privileges: PUBLIC's EXECUTE, which a new
    -- function gets by default, only if the old one still had it.
    REVOKE ALL ON FUNCTION errand.enqueue(uuid, text, jsonb, timestamptz, int, int, text, text) FROM PUBLIC;
    FOR r IN
        SELECT a.grantee, bool_or(a.is_grantable) AS grantable
        FROM pg_proc p
        CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
        WHERE p.oid = 'errand.enqueue_before_053(uuid, text, jsonb, timestamptz, int, int, text)'::regprocedure
          AND a.privilege_type = 'EXECUTE'
          -- The new function's owner has every privilege on it already.
          AND a.grantee <> (SELECT n.proowner FROM pg_proc n
                            WHERE n.oid = 'errand.enqueue(uuid, text, jsonb, timestamptz, int, int, text, text)'::regprocedure)
        GROUP BY a.grantee
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION errand.enqueue(uuid, text, jsonb, timestamptz, int, int, text, text) TO %s%s',
            CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,
            CASE WHEN r.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;

    -- An object of the app's that was bound to the old function when it
    -- was created (a function with a BEGIN ATOMIC body, a view) would keep
    -- calling it: PostgreSQL refuses the drop, and the upgrade stops, with
    -- nothing of it applied, naming the objects.
    BEGIN
        DROP FUNCTION errand.enqueue_before_053(uuid, text, jsonb, timestamptz, int, int, text);
    EXCEPTION WHEN dependent_objects_still_exist THEN
        GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'errand 053: cannot give errand.enqueue its traceparent parameter: objects of yours are bound to the function as it is (errand.enqueue_before_053 below is errand.enqueue, renamed by this migration, which is rolled back)'
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = v_detail,
                  HINT = 'drop those objects, run errand migrate again, and create them again: they bind to the new errand.enqueue, which takes the same calls (traceparent is optional)';
    END;
END;
$$;
