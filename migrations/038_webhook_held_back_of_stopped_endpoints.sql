-- A disabled or deleted endpoint's held-back notes go with its deliveries.
--
-- Disabling an endpoint (errand after a 410 or ERRAND_WEBHOOK_DISABLE_AFTER,
-- or the app's UPDATE ... SET enabled = false) or deleting it cancels its
-- pending deliveries (errand.webhook_endpoint_stopped, 009/011). Their
-- notes in errand.webhook_held_back (035) stayed: only a slot the endpoint
-- gives back cleans an endpoint's notes, and a stopped endpoint gives none
-- back, so they stayed until PostgreSQL restarted. Now the same trigger
-- deletes the endpoint's notes. A delivery of it still running (waiting in
-- its replica for a slot) loses its note too: it asks for a slot again,
-- finds the endpoint disabled and fails, as before.
--
-- The notes' row level security shows a workspace's rows only to a
-- transaction scoped to it (none to an unscoped one, unlike River's table),
-- and the app may disable endpoints unscoped: the trigger scopes itself to
-- the endpoint's workspace for the delete and puts the caller's scope back
-- (an owner that bypasses row level security is not scoped by it: the
-- delete names the workspace too, as every query of such functions does).
--
-- A delivery that read the endpoint enabled just before the disable
-- committed can still note itself after this delete; its next load finds
-- the endpoint disabled and deletes its note then (jobs/webhook, queueLoad).
CREATE OR REPLACE FUNCTION errand.webhook_endpoint_stopped() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text := CASE WHEN TG_OP = 'DELETE' THEN format('webhook endpoint %s was deleted', OLD.id)
                          ELSE format('webhook endpoint %s was disabled: %s', NEW.id, coalesce(NEW.disabled_reason, 'disabled by the app')) END;
    v_scope text := coalesce(current_setting('app.current_workspace_id', true), '');
BEGIN
    UPDATE errand.river_job
    SET state = 'cancelled',
        finalized_at = now(),
        errors = coalesce(errors, '{}') || jsonb_build_object('at', now(), 'attempt', attempt, 'error', v_reason, 'trace', '')
    WHERE (metadata ->> 'workspace_id')::uuid = OLD.workspace_id
      AND errand.job_status(state) = 'pending'
      AND kind = 'webhook.deliver'
      AND args ->> 'endpoint_id' = OLD.id::text;
    PERFORM set_config('app.current_workspace_id', OLD.workspace_id::text, true);
    DELETE FROM errand.webhook_held_back h WHERE h.endpoint_id = OLD.id AND h.workspace_id = OLD.workspace_id;
    PERFORM set_config('app.current_workspace_id', v_scope, true);
    RETURN NULL;
END;
$$;
