-- An invoice item's check no longer tells a transaction scoped to one
-- workspace that an invoice id belongs to another: to it, that invoice does
-- not exist (as docs/invoices.md says), nor to an unscoped session of
-- another role. Unscoped sessions of errand's own role (errand itself, an
-- admin) still get "is not its invoice's", which names the mistake.
--
-- The body is 012's, with that one condition changed.

CREATE OR REPLACE FUNCTION errand.invoice_item_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid;
BEGIN
    IF NEW.invoice_id IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item invoice_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item workspace_id is required (its invoice''s)' USING ERRCODE = 'not_null_violation';
    END IF;
    v_ws := (SELECT o.workspace_id FROM errand.invoice_owners o WHERE o.id = NEW.invoice_id);
    -- Another workspace's invoice is not named: to a transaction scoped to
    -- a workspace, an invoice of another one does not exist; nor to an
    -- unscoped session of any role but errand's own (the function's owner,
    -- a member of it, or a superuser), which row level security refuses
    -- anyway.
    IF v_ws IS NULL
       OR v_ws IS DISTINCT FROM coalesce(nullif(pg_catalog.current_setting('app.current_workspace_id', true), '')::uuid, v_ws)
       OR (coalesce(pg_catalog.current_setting('app.current_workspace_id', true), '') = ''
           AND NOT pg_catalog.pg_has_role(errand.caller_role(), current_user, 'MEMBER')) THEN
        RAISE EXCEPTION 'errand: invoice % does not exist', NEW.invoice_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF v_ws <> NEW.workspace_id THEN
        RAISE EXCEPTION 'errand: invoice item''s workspace_id % is not its invoice''s: invoice % is not in that workspace',
            NEW.workspace_id, NEW.invoice_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.unit_amount IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item unit_amount is required (in minor units: cents for EUR)' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.quantity IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item quantity is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.quantity < 0 THEN
        RAISE EXCEPTION 'errand: invoice item quantity must not be negative, got % (credit with a negative unit_amount)', NEW.quantity
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.quantity >= 1e9 OR scale(NEW.quantity) > 6 THEN
        RAISE EXCEPTION 'errand: invoice item quantity must be below 1000000000 with at most 6 decimals, got %', NEW.quantity
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.tax_rate IS NULL OR NEW.tax_rate < 0 OR NEW.tax_rate > 100 OR scale(NEW.tax_rate) > 4 THEN
        RAISE EXCEPTION 'errand: invoice item tax_rate is a percentage from 0 to 100 with at most 4 decimals (20 is 20 %%), got %',
            coalesce(NEW.tax_rate::text, 'NULL') USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.description IS NULL THEN
        NEW.description := '';
    END IF;
    RETURN NEW;
END;
$$;

