-- Replicas whose roles differ in whether they may call pg_control_system()
-- no longer renew the instance id in turn.
--
-- errand.instance_id() (005) renews the id whenever the binding it computes
-- (the cluster's system identifier and the database's oid) differs from
-- the stored one. A role that may not call pg_control_system() computes
-- 'unknown/<oid>', one that may computes '<identifier>/<oid>': two replicas
-- of one database with such roles each found the other's binding and
-- renewed the id (and the email idempotency keys made from it) on every
-- read, so a retried email could go out under a new key and be sent twice.
--
-- Now a caller that cannot see the identifier accepts a stored binding of
-- the same oid, whatever identifier it names: it cannot tell a move of the
-- database apart from another cluster's copy with the same oid anyway (the
-- warning errand run logs, store.InstanceBoundToOIDOnly). A caller that can
-- see it still renews an id bound to 'unknown/<oid>' once, and binds it to
-- what it sees; the other then accepts that.
-- Whether the stored binding p_bound still holds for a caller that
-- computes p_binding: the same, or the caller cannot see the identifier
-- ('unknown/<oid>') and the oid is the same.
CREATE FUNCTION errand.instance_binding_holds(p_bound text, p_binding text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(p_bound = p_binding
        OR (split_part(p_binding, '/', 1) = 'unknown' AND p_bound <> ''
            AND split_part(p_bound, '/', 2) = split_part(p_binding, '/', 2)), false)
$$;

CREATE OR REPLACE FUNCTION errand.instance_id() RETURNS text
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
    IF errand.instance_binding_holds(v_bound, v_binding) AND v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;

    INSERT INTO errand.settings (name, value) VALUES ('instance_bound_to', '') ON CONFLICT (name) DO NOTHING;
    SELECT s.value INTO v_bound FROM errand.settings s WHERE s.name = 'instance_bound_to' FOR UPDATE;
    SELECT s.value INTO v_id FROM errand.settings s WHERE s.name = 'instance_id';
    IF errand.instance_binding_holds(v_bound, v_binding) AND v_id IS NOT NULL THEN
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
