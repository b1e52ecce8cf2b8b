-- Invoices (kind invoice.render, package jobs/invoice): the invoices and
-- their lines, which the app fills with plain SQL, and the PDFs errand
-- renders from them. Decisions: docs/invoices.md.
--
-- Money is integer minor units (cents for EUR, yen for JPY, fils for KWD):
-- unit_amount bigint. Totals are computed when an invoice is rendered,
-- never stored. What could never render is refused at INSERT: an unknown
-- currency, a negative quantity, an item in another workspace than its
-- invoice.

-- The currencies errand renders and how many decimals each has: their
-- ISO 4217 minor unit (list one). The codes are those
-- golang.org/x/text/currency knows (CLDR 32, 2017) plus the ISO codes
-- introduced since (MRU, SLE, UYW, VED, VES, XCG, ZWG); the exponents are
-- CLDR's except where ISO 4217's differ: 2 for AFN, ALL, AMD, COP, GYD,
-- IDR, IRR, KPW, LAK, LBP, MGA, MMK, MNT, MUR, PKR, RSD, SLL, SOS, SYP,
-- TZS, UZS, YER and 3 for IQD, where CLDR says 0. jobs/invoice.Exponent
-- is the same table (money.go, isoExponents); a test keeps the two equal.
CREATE TABLE errand.invoice_currencies (
    code char(3) PRIMARY KEY,
    exponent smallint NOT NULL CHECK (exponent BETWEEN 0 AND 4)
);
INSERT INTO errand.invoice_currencies (code, exponent) VALUES
    ('ADP', 0), ('AED', 2), ('AFA', 2), ('AFN', 2), ('ALK', 2), ('ALL', 2), ('AMD', 2), ('ANG', 2),
    ('AOA', 2), ('AOK', 2), ('AON', 2), ('AOR', 2), ('ARA', 2), ('ARL', 2), ('ARM', 2), ('ARP', 2),
    ('ARS', 2), ('ATS', 2), ('AUD', 2), ('AWG', 2), ('AZM', 2), ('AZN', 2), ('BAD', 2), ('BAM', 2),
    ('BAN', 2), ('BBD', 2), ('BDT', 2), ('BEC', 2), ('BEF', 2), ('BEL', 2), ('BGL', 2), ('BGM', 2),
    ('BGN', 2), ('BGO', 2), ('BHD', 3), ('BIF', 0), ('BMD', 2), ('BND', 2), ('BOB', 2), ('BOL', 2),
    ('BOP', 2), ('BOV', 2), ('BRB', 2), ('BRC', 2), ('BRE', 2), ('BRL', 2), ('BRN', 2), ('BRR', 2),
    ('BRZ', 2), ('BSD', 2), ('BTN', 2), ('BUK', 2), ('BWP', 2), ('BYB', 2), ('BYN', 2), ('BYR', 0),
    ('BZD', 2), ('CAD', 2), ('CDF', 2), ('CHE', 2), ('CHF', 2), ('CHW', 2), ('CLE', 2), ('CLF', 4),
    ('CLP', 0), ('CNH', 2), ('CNX', 2), ('CNY', 2), ('COP', 2), ('COU', 2), ('CRC', 2), ('CSD', 2),
    ('CSK', 2), ('CUC', 2), ('CUP', 2), ('CVE', 2), ('CYP', 2), ('CZK', 2), ('DDM', 2), ('DEM', 2),
    ('DJF', 0), ('DKK', 2), ('DOP', 2), ('DZD', 2), ('ECS', 2), ('ECV', 2), ('EEK', 2), ('EGP', 2),
    ('ERN', 2), ('ESA', 2), ('ESB', 2), ('ESP', 0), ('ETB', 2), ('EUR', 2), ('FIM', 2), ('FJD', 2),
    ('FKP', 2), ('FRF', 2), ('GBP', 2), ('GEK', 2), ('GEL', 2), ('GHC', 2), ('GHS', 2), ('GIP', 2),
    ('GMD', 2), ('GNF', 0), ('GNS', 2), ('GQE', 2), ('GRD', 2), ('GTQ', 2), ('GWE', 2), ('GWP', 2),
    ('GYD', 2), ('HKD', 2), ('HNL', 2), ('HRD', 2), ('HRK', 2), ('HTG', 2), ('HUF', 2), ('IDR', 2),
    ('IEP', 2), ('ILP', 2), ('ILR', 2), ('ILS', 2), ('INR', 2), ('IQD', 3), ('IRR', 2), ('ISJ', 2),
    ('ISK', 0), ('ITL', 0), ('JMD', 2), ('JOD', 3), ('JPY', 0), ('KES', 2), ('KGS', 2), ('KHR', 2),
    ('KMF', 0), ('KPW', 2), ('KRH', 2), ('KRO', 2), ('KRW', 0), ('KWD', 3), ('KYD', 2), ('KZT', 2),
    ('LAK', 2), ('LBP', 2), ('LKR', 2), ('LRD', 2), ('LSL', 2), ('LTL', 2), ('LTT', 2), ('LUC', 2),
    ('LUF', 0), ('LUL', 2), ('LVL', 2), ('LVR', 2), ('LYD', 3), ('MAD', 2), ('MAF', 2), ('MCF', 2),
    ('MDC', 2), ('MDL', 2), ('MGA', 2), ('MGF', 0), ('MKD', 2), ('MKN', 2), ('MLF', 2), ('MMK', 2),
    ('MNT', 2), ('MOP', 2), ('MRO', 0), ('MRU', 2), ('MTL', 2), ('MTP', 2), ('MUR', 2), ('MVP', 2),
    ('MVR', 2), ('MWK', 2), ('MXN', 2), ('MXP', 2), ('MXV', 2), ('MYR', 2), ('MZE', 2), ('MZM', 2),
    ('MZN', 2), ('NAD', 2), ('NGN', 2), ('NIC', 2), ('NIO', 2), ('NLG', 2), ('NOK', 2), ('NPR', 2),
    ('NZD', 2), ('OMR', 3), ('PAB', 2), ('PEI', 2), ('PEN', 2), ('PES', 2), ('PGK', 2), ('PHP', 2),
    ('PKR', 2), ('PLN', 2), ('PLZ', 2), ('PTE', 2), ('PYG', 0), ('QAR', 2), ('RHD', 2), ('ROL', 2),
    ('RON', 2), ('RSD', 2), ('RUB', 2), ('RUR', 2), ('RWF', 0), ('SAR', 2), ('SBD', 2), ('SCR', 2),
    ('SDD', 2), ('SDG', 2), ('SDP', 2), ('SEK', 2), ('SGD', 2), ('SHP', 2), ('SIT', 2), ('SKK', 2),
    ('SLE', 2), ('SLL', 2), ('SOS', 2), ('SRD', 2), ('SRG', 2), ('SSP', 2), ('STD', 0), ('STN', 2),
    ('SUR', 2), ('SVC', 2), ('SYP', 2), ('SZL', 2), ('THB', 2), ('TJR', 2), ('TJS', 2), ('TMM', 0),
    ('TMT', 2), ('TND', 3), ('TOP', 2), ('TPE', 2), ('TRL', 0), ('TRY', 2), ('TTD', 2), ('TWD', 2),
    ('TZS', 2), ('UAH', 2), ('UAK', 2), ('UGS', 2), ('UGX', 0), ('USD', 2), ('USN', 2), ('USS', 2),
    ('UYI', 0), ('UYP', 2), ('UYU', 2), ('UYW', 4), ('UZS', 2), ('VEB', 2), ('VED', 2), ('VEF', 2),
    ('VES', 2), ('VND', 0), ('VNN', 2), ('VUV', 0), ('WST', 2), ('XAF', 0), ('XAG', 2), ('XAU', 2),
    ('XBA', 2), ('XBB', 2), ('XBC', 2), ('XBD', 2), ('XCD', 2), ('XCG', 2), ('XDR', 2), ('XEU', 2),
    ('XFO', 2), ('XFU', 2), ('XOF', 0), ('XPD', 2), ('XPF', 0), ('XPT', 2), ('XRE', 2), ('XSU', 2),
    ('XTS', 2), ('XUA', 2), ('YDD', 2), ('YER', 2), ('YUD', 2), ('YUM', 2), ('YUN', 2), ('YUR', 2),
    ('ZAL', 2), ('ZAR', 2), ('ZMK', 0), ('ZMW', 2), ('ZRN', 2), ('ZRZ', 2), ('ZWD', 0), ('ZWG', 2),
    ('ZWL', 2), ('ZWR', 2);

CREATE TABLE errand.invoices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    number text NOT NULL,
    status text NOT NULL DEFAULT 'open',
    customer_name text NOT NULL,
    customer_email text,
    -- Lines separated by line breaks, printed as they are.
    customer_address text,
    currency char(3) NOT NULL,
    -- Dates, not times: an invoice is issued on a day, wherever its reader is.
    issued_at date NOT NULL DEFAULT current_date,
    due_at date,
    notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_number_key UNIQUE (workspace_id, number),
    -- For the items' (invoice_id, workspace_id) reference.
    CONSTRAINT invoices_id_workspace_key UNIQUE (id, workspace_id),
    CONSTRAINT invoices_status_check CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible'))
);

-- position orders the lines: insertion order unless the app sets it.
CREATE TABLE errand.invoice_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    position bigint GENERATED BY DEFAULT AS IDENTITY,
    description text NOT NULL DEFAULT '',
    quantity numeric NOT NULL DEFAULT 1,
    unit_amount bigint NOT NULL,
    -- A percentage: 20 is 20 %.
    tax_rate numeric NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The trigger below says it first, in words; this keeps it true.
    CONSTRAINT invoice_items_invoice_fkey FOREIGN KEY (invoice_id, workspace_id)
        REFERENCES errand.invoices (id, workspace_id) ON DELETE CASCADE
);
CREATE INDEX invoice_items_invoice_idx ON errand.invoice_items (invoice_id, position);

-- The rendered PDFs, one row per version: a render of an invoice whose PDF
-- would be byte-for-byte the latest version's adds none.
CREATE TABLE errand.invoice_documents (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    version int NOT NULL CHECK (version >= 1),
    pdf bytea NOT NULL,
    sha256 bytea NOT NULL,
    size_bytes int NOT NULL,
    pages int NOT NULL CHECK (pages >= 1),
    job_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoice_documents_version_key UNIQUE (invoice_id, version),
    CONSTRAINT invoice_documents_invoice_fkey FOREIGN KEY (invoice_id, workspace_id)
        REFERENCES errand.invoices (id, workspace_id) ON DELETE CASCADE,
    CONSTRAINT invoice_documents_sha256_check CHECK (sha256 = sha256(pdf)),
    CONSTRAINT invoice_documents_size_check CHECK (size_bytes = length(pdf))
);
CREATE INDEX invoice_documents_workspace_idx ON errand.invoice_documents (workspace_id, created_at);

-- Tenant isolation, as for every errand table with a workspace_id.
ALTER TABLE errand.invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.invoices
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.invoice_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.invoice_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.invoice_items
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.invoice_documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.invoice_documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.invoice_documents
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

SELECT errand.grant_tenant('errand.invoices');
SELECT errand.grant_tenant('errand.invoice_items');
SELECT errand.grant_tenant('errand.invoice_documents');
SELECT errand.grant_tenant('errand.invoice_currencies', 'SELECT');

-- Which workspace an invoice id belongs to, for the items' check: it runs
-- as errand's owner, on whom row level security is forced (a plain owner
-- on managed PostgreSQL), so it cannot see another workspace's invoice.
-- Not tenant data (ids only), and granted to nobody.
CREATE TABLE errand.invoice_owners (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL
);

CREATE FUNCTION errand.invoice_note_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM errand.invoice_owners WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO errand.invoice_owners (id, workspace_id) VALUES (NEW.id, NEW.workspace_id)
    ON CONFLICT (id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER invoice_owner AFTER INSERT OR DELETE ON errand.invoices
    FOR EACH ROW EXECUTE FUNCTION errand.invoice_note_owner();

-- An invoice as the app writes it.
CREATE FUNCTION errand.invoice_check() RETURNS trigger
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
    IF NEW.customer_name IS NULL OR btrim(NEW.customer_name) = '' THEN
        RAISE EXCEPTION 'errand: invoice customer_name is required' USING ERRCODE = 'not_null_violation';
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

CREATE TRIGGER invoice_check BEFORE INSERT OR UPDATE ON errand.invoices
    FOR EACH ROW EXECUTE FUNCTION errand.invoice_check();

-- An invoice line as the app writes it.
CREATE FUNCTION errand.invoice_item_check() RETURNS trigger
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
    -- Another workspace's invoice is not named: to this workspace it does
    -- not exist.
    IF v_ws IS NULL THEN
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

CREATE TRIGGER invoice_item_check BEFORE INSERT OR UPDATE ON errand.invoice_items
    FOR EACH ROW EXECUTE FUNCTION errand.invoice_item_check();
