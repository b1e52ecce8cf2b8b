-- Tenant isolation between databases, and for job rows.
--
-- 1. The instance id (email idempotency keys errand-<instance id>-<job id>)
--    is bound to where the database lives: the cluster's system identifier
--    and the database's oid. A copy made by pg_dump/restore (staging from
--    production) has another oid, or another cluster, and gets a new id the
--    first time it is read; restarts and renames keep it.
-- 2. The tenant role is per database (errand_tenant_<16 hex digits of the
--    instance id>), so a copy gets its own too, and it is granted to nobody
--    but errand's migrating role. The cluster-wide errand_tenant of earlier
--    versions loses every privilege it held in this database; it is never
--    dropped, since another database may still use it.
-- 3. River's job rows have row level security for the tenant role: a
--    scoped transaction sees its own workspace's jobs only. Not forced: the
--    owner, a superuser or a BYPASSRLS role (River, errand's own queries)
--    never carries the policy, which would keep River's fetch off its index
--    (enum equality is not leakproof). So errand scopes through the tenant
--    role in every deployment where one exists, plain owners included.
-- 4. The contract's trigger does its checks and writes unscoped, whatever
--    the caller's scope, which is restored after each row.

-- (1) Where this database lives. A provider that hides the system
-- identifier still has the oid, which tells copies in one cluster apart.
CREATE FUNCTION errand.instance_binding() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_system text;
BEGIN
    BEGIN
        SELECT c.system_identifier::text INTO v_system FROM pg_control_system() c;
    EXCEPTION WHEN insufficient_privilege THEN
        v_system := 'unknown';
    END;
    RETURN v_system || '/' || (SELECT d.oid::text FROM pg_database d WHERE d.datname = current_database());
END;
$$;

-- The instance id, renewed when the database has moved. Concurrent first
-- readers of a copy (replicas starting at once) wait on the binding row and
-- agree on one id. An id without a binding (made by migration 002 before
-- this one) is kept: its emails may still be retried.
CREATE FUNCTION errand.instance_id() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_binding text := errand.instance_binding();
    v_bound text;
    v_id text;
BEGIN
    SELECT b.value, i.value INTO v_bound, v_id
    FROM errand.settings b LEFT JOIN errand.settings i ON i.name = 'instance_id'
    WHERE b.name = 'instance_bound_to';
    IF v_bound = v_binding AND v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;

    INSERT INTO errand.settings (name, value) VALUES ('instance_bound_to', '') ON CONFLICT (name) DO NOTHING;
    SELECT s.value INTO v_bound FROM errand.settings s WHERE s.name = 'instance_bound_to' FOR UPDATE;
    SELECT s.value INTO v_id FROM errand.settings s WHERE s.name = 'instance_id';
    IF v_bound = v_binding AND v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    IF v_bound <> '' OR v_id IS NULL THEN
        v_id := gen_random_uuid()::text;
        INSERT INTO errand.settings (name, value) VALUES ('instance_id', v_id)
        ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
    END IF;
    UPDATE errand.settings SET value = v_binding, updated_at = now() WHERE name = 'instance_bound_to';
    RETURN v_id;
END;
$$;

-- (2) This database's tenant role, by name (it exists once
-- errand.setup_tenant_role has made it).
CREATE FUNCTION errand.tenant_role() RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'errand_tenant_' || left(lower(replace(errand.instance_id(), '-', '')), 16);
$$;

-- What the tenant role is granted, so a new role (a copy's, or one created
-- by an administrator later) gets all of it: errand's tenant tables and
-- whatever a team granted for its own kinds (errand.grant_tenant, or grants
-- to an earlier tenant role that were moved here).
CREATE TABLE errand.tenant_grants (
    kind text NOT NULL,       -- TABLE, SEQUENCE or SCHEMA
    object text NOT NULL,     -- quoted and qualified
    privileges text NOT NULL,
    PRIMARY KEY (kind, object, privileges),
    CONSTRAINT kind_known CHECK (kind IN ('TABLE', 'SEQUENCE', 'SCHEMA'))
);
INSERT INTO errand.tenant_grants (kind, object, privileges) VALUES
    ('SCHEMA', 'errand', 'USAGE'),
    ('TABLE', 'errand.workspace_members', 'DELETE, INSERT, SELECT, UPDATE'),
    ('TABLE', 'errand.workspaces', 'SELECT'),
    ('TABLE', 'errand.users', 'SELECT'),
    ('TABLE', 'errand.emails', 'DELETE, INSERT, SELECT, UPDATE'),
    ('TABLE', 'errand.river_job', 'SELECT');

-- Later migrations (and teams, for their own tables) call this as before.
CREATE OR REPLACE FUNCTION errand.grant_tenant(tbl regclass, privileges text DEFAULT 'SELECT, INSERT, UPDATE, DELETE') RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text := (SELECT s.value FROM errand.settings s WHERE s.name = 'tenant_role');
    v_kind text := CASE (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END;
    -- 'select, insert' and 'INSERT, SELECT' are one entry (column lists are kept as given).
    v_privileges text := CASE WHEN grant_tenant.privileges ~ '[()]' THEN grant_tenant.privileges ELSE
        (SELECT string_agg(DISTINCT upper(btrim(p)), ', ') FROM unnest(string_to_array(grant_tenant.privileges, ',')) AS p) END;
BEGIN
    INSERT INTO errand.tenant_grants (kind, object, privileges)
    VALUES (v_kind, tbl::text, v_privileges)
    ON CONFLICT DO NOTHING;
    IF v_role IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = v_role) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA errand TO %I', v_role);
        EXECUTE format('GRANT %s ON %s %s TO %I', v_privileges, v_kind, tbl, v_role);
    END IF;
END;
$$;

-- Makes this database's tenant role what it should be; idempotent, and run
-- by this migration and by errand when it starts on a database whose role
-- is not set up (a restored copy, or a role an administrator created):
--   - creates it (NOLOGIN) when errand's role may create roles, and grants
--     it to errand's role only (a superuser needs no membership);
--   - grants it tenant_grants;
--   - moves privileges held here by any other tenant role (the shared
--     errand_tenant, or the role of the database this one was copied from)
--     to it, and revokes them from that role;
--   - limits it to the scoped workspace's rows of River's table;
--   - drops tenant roles left by databases that no longer exist (DROP ROLE
--     refuses while any database still grants one anything).
-- Returns the role, or NULL when none exists (a plain owner that may not
-- create roles: row level security is then forced on the tenant tables,
-- and River's rows are not isolated).
CREATE FUNCTION errand.setup_tenant_role() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text;
    v_super boolean;
    v_createrole boolean;
    v_exists boolean;
    v_db_oid oid := (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    v_lock_timeout text;
    r record;
BEGIN
    -- One at a time per database (advisory locks are per database).
    PERFORM pg_advisory_xact_lock(hashtext('errand.setup_tenant_role'));
    v_role := errand.tenant_role();
    SELECT rolsuper, rolsuper OR rolcreaterole INTO v_super, v_createrole FROM pg_roles WHERE rolname = current_user;

    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) AND v_createrole THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT NOBYPASSRLS', v_role);
            EXECUTE format('COMMENT ON ROLE %I IS %L', v_role,
                format('errand: tenant role of database %s (oid %s)', current_database(), v_db_oid));
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    v_exists := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);

    IF v_exists THEN
        IF NOT v_super AND v_createrole AND NOT pg_has_role(current_user, v_role, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', v_role, current_user);
        END IF;
        FOR r IN SELECT g.kind, g.object, g.privileges FROM errand.tenant_grants g ORDER BY 1, 2, 3 LOOP
            IF (r.kind = 'SCHEMA' AND EXISTS (SELECT 1 FROM pg_namespace n WHERE quote_ident(n.nspname) = r.object))
               OR (r.kind <> 'SCHEMA' AND to_regclass(r.object) IS NOT NULL) THEN
                BEGIN
                    EXECUTE format('GRANT %s ON %s %s TO %I', r.privileges, r.kind, r.object, v_role);
                EXCEPTION WHEN insufficient_privilege THEN
                    -- A team's table errand's role does not own: its owner grants it.
                    RAISE WARNING 'errand: cannot grant % on % % to %: %', r.privileges, lower(r.kind), r.object, v_role, SQLERRM;
                END;
            END IF;
        END LOOP;
    END IF;

    FOR r IN
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
               c.oid::regclass::text AS object, g.rolname AS grantee,
               string_agg(DISTINCT a.privilege_type, ', ') AS privileges
        FROM pg_class c
        CROSS JOIN LATERAL aclexplode(c.relacl) a
        JOIN pg_roles g ON g.oid = a.grantee
        WHERE (g.rolname = 'errand_tenant' OR g.rolname ~ '^errand_tenant_[0-9a-f]{16}$') AND g.rolname <> v_role
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT 'SCHEMA', quote_ident(n.nspname), g.rolname, string_agg(DISTINCT a.privilege_type, ', ')
        FROM pg_namespace n
        CROSS JOIN LATERAL aclexplode(n.nspacl) a
        JOIN pg_roles g ON g.oid = a.grantee
        WHERE (g.rolname = 'errand_tenant' OR g.rolname ~ '^errand_tenant_[0-9a-f]{16}$') AND g.rolname <> v_role
        GROUP BY 1, 2, 3
    LOOP
        INSERT INTO errand.tenant_grants (kind, object, privileges) VALUES (r.kind, r.object, r.privileges)
        ON CONFLICT DO NOTHING;
        BEGIN
            IF v_exists THEN
                EXECUTE format('GRANT %s ON %s %s TO %I', r.privileges, r.kind, r.object, v_role);
            END IF;
            EXECUTE format('REVOKE ALL ON %s %s FROM %I', r.kind, r.object, r.grantee);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'errand: cannot move % on % % from % to %: %', r.privileges, lower(r.kind), r.object, r.grantee, v_role, SQLERRM;
        END;
    END LOOP;

    -- River's rows: the workspace's only, and none without one. (Policy DDL
    -- locks River's table exclusively: only when something changes.)
    IF EXISTS (SELECT 1 FROM pg_policy p
               WHERE p.polrelid = 'errand.river_job'::regclass AND p.polname = 'tenant_jobs'
                 AND (NOT v_exists OR p.polroles <> ARRAY[(SELECT oid FROM pg_roles WHERE rolname = v_role)])) THEN
        DROP POLICY tenant_jobs ON errand.river_job;
    END IF;
    IF v_exists AND NOT EXISTS (
        SELECT 1 FROM pg_policy p WHERE p.polrelid = 'errand.river_job'::regclass AND p.polname = 'tenant_jobs') THEN
        EXECUTE format($p$CREATE POLICY tenant_jobs ON errand.river_job AS RESTRICTIVE TO %I
            USING ((metadata ->> 'workspace_id')::uuid = nullif(current_setting('app.current_workspace_id', true), '')::uuid)$p$,
            v_role);
    END IF;

    IF v_exists THEN
        INSERT INTO errand.settings (name, value) VALUES ('tenant_role', v_role)
        ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
        WHERE settings.value IS DISTINCT FROM EXCLUDED.value;
    ELSE
        DELETE FROM errand.settings WHERE name = 'tenant_role';
    END IF;

    IF v_createrole THEN
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', '1s', true);
        FOR r IN
            SELECT a.rolname
            FROM pg_roles a
            JOIN pg_shdescription d ON d.objoid = a.oid AND d.classoid = 'pg_authid'::regclass
            WHERE a.rolname ~ '^errand_tenant_[0-9a-f]{16}$' AND a.rolname <> v_role AND NOT a.rolcanlogin
              AND d.description ~ '^errand: tenant role of database .* \(oid [0-9]+\)$'
              AND (substring(d.description FROM '\(oid ([0-9]+)\)$')::oid = v_db_oid
                   OR NOT EXISTS (SELECT 1 FROM pg_database x
                                  WHERE x.oid = substring(d.description FROM '\(oid ([0-9]+)\)$')::oid))
            ORDER BY a.rolname
        LOOP
            BEGIN
                EXECUTE format('DROP ROLE %I', r.rolname);
            EXCEPTION WHEN OTHERS THEN
                NULL; -- still granted something somewhere, or being dropped by another database's errand
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;

    RETURN CASE WHEN v_exists THEN v_role END;
END;
$$;

-- (3) River's table. Roles subject to it other than the tenant role (none
-- of errand's) see every job unscoped and one workspace's when scoped.
ALTER TABLE errand.river_job ENABLE ROW LEVEL SECURITY;
CREATE POLICY scoped_jobs ON errand.river_job
    USING (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR (metadata ->> 'workspace_id')::uuid = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

-- (4) The contract's trigger runs as its owner, on whom row level security
-- of the directory tables is forced when it is a plain owner: under the
-- caller's scope (an app session scoped for its own row level security) it
-- could not see another workspace and said "does not exist". Two INSTEAD OF
-- triggers bracket it, by name order (jobs_0unscope, jobs_insert,
-- jobs_zrescope): the scope is empty while it runs for each row and the
-- caller's again before the next row is read, so an INSERT ... SELECT reads
-- its source under the caller's scope. An error undoes both with the
-- (sub)transaction. (A function-level SET of app.current_workspace_id would
-- do this inside errand.jobs_insert, but PostgreSQL lets only superusers
-- attach an undefined parameter to a function, and plain owners are the
-- case that needs it; CREATE OR REPLACE of the function would also drop it.)
-- errand.jobs_insert must return its row, as it always has: a NULL would
-- skip jobs_zrescope.
CREATE FUNCTION errand.jobs_unscope() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.set_config('errand.caller_workspace_id',
                coalesce(pg_catalog.current_setting('app.current_workspace_id', true), ''), true),
            pg_catalog.set_config('app.current_workspace_id', '', true);
    RETURN NEW;
END;
$$;

CREATE FUNCTION errand.jobs_rescope() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.set_config('app.current_workspace_id',
                pg_catalog.current_setting('errand.caller_workspace_id', true), true);
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_0unscope INSTEAD OF INSERT ON errand.jobs
    FOR EACH ROW EXECUTE FUNCTION errand.jobs_unscope();
CREATE TRIGGER jobs_zrescope INSTEAD OF INSERT ON errand.jobs
    FOR EACH ROW EXECUTE FUNCTION errand.jobs_rescope();

-- (2, continued) A plain owner that earlier versions made a member of the
-- shared role never used it (it is scoped by forced row level security, not
-- by a role), but the membership reaches every database that still grants
-- that role something.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_auth_members m
               WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = 'errand_tenant')
                 AND m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user))
       AND (SELECT NOT rolsuper AND NOT rolbypassrls AND rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('REVOKE errand_tenant FROM %I', current_user);
    END IF;
END;
$$;

SELECT errand.setup_tenant_role();
