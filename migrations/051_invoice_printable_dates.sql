-- An invoice's dates must be dates its PDF can print.
--
-- 012 and 042 accepted issued_at and due_at 'infinity' and '-infinity',
-- which no Go time holds: invoice.render failed reading the row and
-- retried it 25 times over a day. They also accepted years a PDF date
-- cannot carry: its year has four digits (D:YYYYMMDD…), so a date before
-- 0001-01-01 (PostgreSQL's dates go back to 4713 BC) or after 9999-12-31
-- would print a broken date. Both are refused now (22023), naming the
-- column. An UPDATE is checked only when it changes the date, as 042 does
-- for the number: a row stored before this migration can still be marked
-- paid (its render fails at once, jobs/invoice/queries.go, render.go).
--
-- 042's body, with the dates' checks added; the function keeps its
-- SECURITY DEFINER, search_path, owner and trigger.
CREATE OR REPLACE FUNCTION errand.invoice_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: invoice workspace_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workspace_id <> OLD.workspace_id THEN
        RAISE EXCEPTION 'errand: an invoice cannot move to another workspace' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'errand: an invoice''s id cannot change' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.number IS NULL OR btrim(NEW.number) = '' THEN
        RAISE EXCEPTION 'errand: invoice number is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.number IS DISTINCT FROM OLD.number) AND NOT errand.has_visible_text(NEW.number) THEN
        RAISE EXCEPTION 'errand: invoice number is required: it has no visible character, only %', errand.code_points(NEW.number)
            USING ERRCODE = 'not_null_violation',
                  HINT = 'white space, control and format characters (such as U+200B, a zero-width space) print as nothing';
    END IF;
    IF NEW.customer_name IS NULL OR btrim(NEW.customer_name) = '' THEN
        RAISE EXCEPTION 'errand: invoice customer_name is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.customer_name IS DISTINCT FROM OLD.customer_name) AND NOT errand.has_visible_text(NEW.customer_name) THEN
        RAISE EXCEPTION 'errand: invoice customer_name is required: it has no visible character, only %', errand.code_points(NEW.customer_name)
            USING ERRCODE = 'not_null_violation',
                  HINT = 'white space, control and format characters (such as U+200B, a zero-width space) print as nothing';
    END IF;
    IF NEW.currency IS NULL THEN
        RAISE EXCEPTION 'errand: invoice currency is required (an ISO 4217 code such as EUR)' USING ERRCODE = 'not_null_violation';
    END IF;
    NEW.currency := upper(NEW.currency);
    IF NOT EXISTS (SELECT 1 FROM errand.invoice_currencies c WHERE c.code = NEW.currency) THEN
        RAISE EXCEPTION 'errand: invoice currency % is not an ISO 4217 code errand knows (e.g. EUR, USD, JPY; the list: errand.invoice_currencies)',
            quote_literal(NEW.currency) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.status IS NULL OR NEW.status NOT IN ('draft', 'open', 'paid', 'void', 'uncollectible') THEN
        RAISE EXCEPTION 'errand: invoice status must be one of: draft, open, paid, void, uncollectible, got %',
            coalesce(quote_literal(NEW.status), 'NULL') USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.issued_at IS NULL THEN
        RAISE EXCEPTION 'errand: invoice issued_at is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.issued_at IS DISTINCT FROM OLD.issued_at) AND NOT isfinite(NEW.issued_at) THEN
        RAISE EXCEPTION 'errand: invoice issued_at must be a date, got %', NEW.issued_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the day the invoice is issued, from 0001-01-01 to 9999-12-31';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.issued_at IS DISTINCT FROM OLD.issued_at)
       AND (NEW.issued_at < DATE '0001-01-01' OR NEW.issued_at > DATE '9999-12-31') THEN
        RAISE EXCEPTION 'errand: invoice issued_at must be from 0001-01-01 to 9999-12-31 (a PDF''s dates have four-digit years), got %', NEW.issued_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.due_at IS DISTINCT FROM OLD.due_at) AND NOT isfinite(NEW.due_at) THEN
        RAISE EXCEPTION 'errand: invoice due_at must be a date, got %', NEW.due_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'leave due_at NULL for an invoice without a due date';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.due_at IS DISTINCT FROM OLD.due_at)
       AND (NEW.due_at < DATE '0001-01-01' OR NEW.due_at > DATE '9999-12-31') THEN
        RAISE EXCEPTION 'errand: invoice due_at must be from 0001-01-01 to 9999-12-31 (a PDF''s dates have four-digit years), got %', NEW.due_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.due_at < NEW.issued_at THEN
        RAISE EXCEPTION 'errand: invoice due_at % is before issued_at %', NEW.due_at, NEW.issued_at
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;
