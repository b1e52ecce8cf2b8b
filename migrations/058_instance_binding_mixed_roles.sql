-- Every role computes the same instance binding: the one errand's
-- migrating role can see.
--
-- errand.instance_id() (005) renews the instance id whenever the binding
-- it computes (the cluster's system identifier and the database's oid)
-- differs from the stored one. errand.instance_binding() ran as its caller:
-- a role that may not call pg_control_system() (some managed services
-- revoke it) computed 'unknown/<oid>', one that may '<identifier>/<oid>'.
-- Two replicas of one database with such roles each found the other's
-- binding and renewed the id, and with it the email idempotency keys, on
-- every read, so a retried email could go out under a new key and be sent
-- twice.
--
-- Now errand.instance_binding() runs as its owner, the role that migrated
-- errand (SECURITY DEFINER, search_path pinned as before): every caller
-- computes the binding that role sees. Where it may call pg_control_system()
-- a runtime role that may not still tells a restored copy in another cluster
-- by the identifier; where it may not, every role binds to the oid alone
-- (errand run warns, store.InstanceBoundToOIDOnly). Nothing else is
-- revealed: the function returns the identifier and the oid only.
CREATE OR REPLACE FUNCTION errand.instance_binding() RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
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
