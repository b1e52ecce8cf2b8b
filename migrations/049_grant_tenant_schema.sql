-- errand.grant_tenant also grants the tenant role USAGE on the table's own
-- schema, and records it, so that a restored copy's role gets it too.
--
-- A team's kind that keeps its state in its own schema (the README's
-- my_app.reports) was granted the table and not the schema: every attempt
-- of the kind failed with "permission denied for schema my_app" until the
-- job failed for good, and the fix by hand (GRANT USAGE ON SCHEMA) was not
-- recorded in errand.tenant_grants, so a restored copy lost it. Tables
-- granted before are given their schema here.
CREATE OR REPLACE FUNCTION errand.grant_tenant(tbl regclass, privileges text DEFAULT 'SELECT, INSERT, UPDATE, DELETE') RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text := (SELECT s.value FROM errand.settings s WHERE s.name = 'tenant_role');
    v_kind text := CASE (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END;
    v_nspname name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl);
    v_schema text := quote_ident(v_nspname);
    -- 'select, insert' and 'INSERT, SELECT' are one entry (column lists are kept as given).
    v_privileges text := CASE WHEN grant_tenant.privileges ~ '[()]' THEN grant_tenant.privileges ELSE
        (SELECT string_agg(DISTINCT upper(btrim(p)), ', ') FROM unnest(string_to_array(grant_tenant.privileges, ',')) AS p) END;
BEGIN
    INSERT INTO errand.tenant_grants (kind, object, privileges)
    VALUES (v_kind, tbl::text, v_privileges)
    ON CONFLICT DO NOTHING;
    IF v_schema <> 'errand' THEN
        INSERT INTO errand.tenant_grants (kind, object, privileges)
        VALUES ('SCHEMA', v_schema, 'USAGE')
        ON CONFLICT DO NOTHING;
    END IF;
    IF v_role IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = v_role) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA errand TO %I', v_role);
        IF v_schema <> 'errand' THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %s TO %I', v_schema, v_role);
            -- PostgreSQL only warns when errand's role may not grant it (a
            -- schema it neither owns nor holds with GRANT OPTION), and every
            -- job would then fail on the schema: say so now.
            IF NOT has_schema_privilege(v_role, v_nspname, 'USAGE') THEN
                RAISE EXCEPTION 'errand: the tenant role % may not use schema %, and errand''s role (%) cannot grant it', v_role, v_schema, current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = format('ask the schema''s owner: GRANT USAGE ON SCHEMA %s TO %I; then call errand.grant_tenant again', v_schema, v_role);
            END IF;
        END IF;
        EXECUTE format('GRANT %s ON %s %s TO %I', v_privileges, v_kind, tbl, v_role);
    END IF;
END;
$$;

DO $$
DECLARE
    v_role text := (SELECT s.value FROM errand.settings s WHERE s.name = 'tenant_role');
    g record;
    v_schema text;
BEGIN
    FOR g IN SELECT t.object FROM errand.tenant_grants t WHERE t.kind IN ('TABLE', 'SEQUENCE') ORDER BY 1 LOOP
        BEGIN
            SELECT quote_ident(n.nspname) INTO v_schema
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = to_regclass(g.object);
            IF v_schema IS NULL OR v_schema = 'errand' THEN
                CONTINUE;
            END IF;
            INSERT INTO errand.tenant_grants (kind, object, privileges)
            VALUES ('SCHEMA', v_schema, 'USAGE')
            ON CONFLICT DO NOTHING;
            IF v_role IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = v_role) THEN
                EXECUTE format('GRANT USAGE ON SCHEMA %s TO %I', v_schema, v_role);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            -- A schema errand's role may not use or grant (to_regclass
            -- refuses to look into it): its owner grants it.
            RAISE WARNING 'errand: cannot grant usage on the schema of % to %: %', g.object, v_role, SQLERRM;
        END;
    END LOOP;
END;
$$;
