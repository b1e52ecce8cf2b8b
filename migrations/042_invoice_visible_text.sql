-- Two corrections to the invoice tables' checks (012, 031).
--
-- 1. An invoice's number and customer name must show something. 012
--    refused NULL and what btrim leaves empty (spaces only), so a tab, a
--    line break or a zero-width space passed and printed as nothing. What
--    shows is what the PDF draws (jobs/invoice/render.go, clean): any
--    character but white space (Unicode White_Space), controls (Cc) and
--    format characters (Cf, such as U+200B), which it prints as a space or
--    drops. A character the font lacks prints as the visible placeholder
--    and counts. An UPDATE is checked only when it changes the value: a
--    row stored before this migration can still be marked paid.
-- 2. An item's check told an app's session without a workspace scope that
--    an invoice "does not exist" (031), also for one that exists. It now
--    says the session has no scope, before it looks anything up, so it
--    still learns nothing about another workspace's invoices.
--
-- The functions keep 012's and 031's SECURITY DEFINER and search_path.

-- Whether s has a character the invoice's PDF shows. The class is
-- Go's unicode.IsSpace, unicode.IsControl and unicode.Cf (Unicode 15.0)
-- from U+0001 on; TestVisibleTextIsWhatThePDFShows (jobs/invoice) checks
-- every code point against them.
CREATE FUNCTION errand.has_visible_text(s text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN s ~ '[^\u0001-\u0020\u007F-\u00A0\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u1680\u180E\u2000-\u200F\u2028-\u202F\u205F-\u2064\u2066-\u206F\u3000\uFEFF\uFFF9-\uFFFB\U000110BD\U000110CD\U00013430-\U0001343F\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A\U000E0001\U000E0020-\U000E007F]';

-- The code points of s's first 8 characters, for a message about text
-- that cannot be seen: "U+0009 U+200B".
CREATE FUNCTION errand.code_points(s text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT string_agg('U+' || lpad(h, greatest(length(h), 4), '0'), ' ' ORDER BY n)
        FROM unnest(regexp_split_to_array(left(s, 8), '')) WITH ORDINALITY AS t(c, n),
             upper(to_hex(ascii(c))) AS h)
    || CASE WHEN length(s) > 8 THEN ' …' ELSE '' END;

REVOKE ALL ON FUNCTION errand.has_visible_text(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.code_points(text) FROM PUBLIC;

-- 012's body, with the number's and the customer name's checks extended.
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

-- 031's body, with the unscoped session told so.
CREATE OR REPLACE FUNCTION errand.invoice_item_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid;
    v_scope text := coalesce(pg_catalog.current_setting('app.current_workspace_id', true), '');
BEGIN
    IF NEW.invoice_id IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item invoice_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: invoice item workspace_id is required (its invoice''s)' USING ERRCODE = 'not_null_violation';
    END IF;
    -- An unscoped session of any role but errand's own (the function's
    -- owner, a member of it, or a superuser) is told so before anything is
    -- looked up: row level security refuses its row anyway, and the answer
    -- is the same whether the invoice exists or not.
    IF v_scope = '' AND NOT pg_catalog.pg_has_role(errand.caller_role(), current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'errand: no workspace scope: role % may add or change invoice items only in a transaction scoped to their workspace (app.current_workspace_id is not set)',
            errand.caller_role()
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SET LOCAL app.current_workspace_id to the workspace''s id first';
    END IF;
    v_ws := (SELECT o.workspace_id FROM errand.invoice_owners o WHERE o.id = NEW.invoice_id);
    -- Another workspace's invoice is not named: to a transaction scoped to
    -- a workspace, an invoice of another one does not exist.
    IF v_ws IS NULL OR (v_scope <> '' AND v_ws IS DISTINCT FROM v_scope::uuid) THEN
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
