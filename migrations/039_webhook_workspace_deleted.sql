-- A deleted workspace's webhook slots and held-back notes go with it.
--
-- Deleting a workspace cancels its jobs that have not started
-- (errand.workspace_deleted, 001); its endpoints stay (errand's tables do
-- not reference the workspace: they are the app's to delete). Their
-- leases in errand.webhook_inflight and notes in errand.webhook_held_back
-- (unlogged, 009 and 035) stayed: only the endpoint's own deliveries clean
-- them (a slot given back, a full endpoint's expired leases), and a deleted
-- workspace has none any more (a delivery still sending when its workspace
-- goes fails at its bookkeeping, whose scope finds no workspace), so they
-- stayed until PostgreSQL restarted. Now they go with the workspace.
--
-- Both tables' row level security shows a workspace's rows only to a
-- transaction scoped to it, and the app deletes workspaces unscoped: the
-- trigger scopes itself to the workspace for the deletes and puts the
-- caller's scope back (an owner that bypasses row level security is not
-- scoped by it: the deletes name the workspace too). As 038 does for a
-- stopped endpoint.
CREATE FUNCTION errand.webhook_workspace_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := coalesce(current_setting('app.current_workspace_id', true), '');
BEGIN
    PERFORM set_config('app.current_workspace_id', OLD.id::text, true);
    DELETE FROM errand.webhook_held_back h WHERE h.workspace_id = OLD.id;
    DELETE FROM errand.webhook_inflight f WHERE f.workspace_id = OLD.id;
    PERFORM set_config('app.current_workspace_id', v_scope, true);
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_workspace_deleted AFTER DELETE ON errand.workspaces
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_workspace_deleted();
