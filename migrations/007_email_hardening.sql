-- email.send: an email row is finished whenever its job is, however the job
-- ended. The kind records a failure itself when it gives up; a job that ends
-- without its code running to the end (discarded by the crash rescuer after
-- its last attempt, cancelled by an operator) would otherwise leave its email
-- "queued" for ever. A sent or captured email is never touched.
CREATE FUNCTION errand.finish_email_of_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := current_setting('app.current_workspace_id', true);
BEGIN
    -- The email row is tenant data and its row level security is forced
    -- (it applies to the owner this runs as, unless that is a superuser):
    -- scope to the job's workspace for the update, then restore the caller's.
    PERFORM set_config('app.current_workspace_id', NEW.metadata ->> 'workspace_id', true);
    UPDATE errand.emails
    SET status = 'failed',
        error = coalesce(NEW.errors[array_upper(NEW.errors, 1)] ->> 'error',
                         format('the job was %s', NEW.state))
    WHERE job_id = NEW.id AND status = 'queued';
    PERFORM set_config('app.current_workspace_id', coalesce(v_scope, ''), true);
    RETURN NULL;
END;
$$;

-- The WHEN clause keeps every other update of River's table (each job's
-- fetch and completion) free of any PL/pgSQL call.
CREATE TRIGGER finish_email_of_job AFTER UPDATE OF state ON errand.river_job
    FOR EACH ROW
    WHEN (NEW.kind = 'email.send'
          AND NEW.state IN ('discarded', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION errand.finish_email_of_job();
