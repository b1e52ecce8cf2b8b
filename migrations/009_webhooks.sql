-- Outgoing webhooks (kinds webhook.dispatch and webhook.deliver, package
-- jobs/webhook): customers' endpoints, the messages sent to them, every
-- attempt, the per-endpoint in-flight leases, and the checks that keep
-- customers' URLs out of the private network. Decisions: docs/webhooks.md.

-- Addresses errand never connects to, unless ERRAND_WEBHOOK_ALLOW_CIDRS
-- lists them. The same list is in jobs/webhook/guard.go, which checks the
-- address actually dialled; a test keeps the two equal. The most specific
-- range names the reason. IPv4-mapped IPv6 (::ffff:a.b.c.d) is checked as
-- the IPv4 address it is, and NAT64 (64:ff9b::/96) by the IPv4 address it
-- hides.
CREATE TABLE errand.webhook_refused_ranges (
    range cidr PRIMARY KEY,
    reason text NOT NULL
);
INSERT INTO errand.webhook_refused_ranges (range, reason) VALUES
    ('0.0.0.0/8', '"this network" (0.0.0.0/8)'),
    ('10.0.0.0/8', 'private (RFC 1918)'),
    ('100.64.0.0/10', 'carrier-grade NAT (100.64.0.0/10)'),
    ('127.0.0.0/8', 'loopback'),
    ('169.254.0.0/16', 'link-local (169.254.0.0/16, where cloud metadata services answer)'),
    ('172.16.0.0/12', 'private (RFC 1918)'),
    ('192.0.0.0/24', 'reserved for IETF protocol assignments'),
    ('192.0.2.0/24', 'documentation (TEST-NET-1)'),
    ('192.88.99.0/24', 'reserved (the former 6to4 relay anycast)'),
    ('192.168.0.0/16', 'private (RFC 1918)'),
    ('198.18.0.0/15', 'benchmarking (198.18.0.0/15)'),
    ('198.51.100.0/24', 'documentation (TEST-NET-2)'),
    ('203.0.113.0/24', 'documentation (TEST-NET-3)'),
    ('224.0.0.0/4', 'multicast'),
    ('240.0.0.0/4', 'reserved (240.0.0.0/4)'),
    ('255.255.255.255/32', 'broadcast'),
    ('::/128', 'the unspecified address'),
    ('::1/128', 'loopback'),
    ('::/96', 'IPv4-compatible IPv6 (deprecated; hides an IPv4 address)'),
    ('::ffff:0:0:0/96', 'IPv4-translated IPv6 (hides an IPv4 address)'),
    ('64:ff9b:1::/48', 'local-use NAT64 (64:ff9b:1::/48)'),
    ('100::/64', 'discard-only (100::/64)'),
    ('2001::/23', 'reserved for IETF protocol assignments'),
    ('2001::/32', 'Teredo (hides an IPv4 address)'),
    ('2001:2::/48', 'benchmarking (2001:2::/48)'),
    ('2001:db8::/32', 'documentation (2001:db8::/32)'),
    ('2002::/16', '6to4 (hides an IPv4 address)'),
    ('3fff::/20', 'documentation (3fff::/20)'),
    ('5f00::/16', 'reserved for SRv6 (5f00::/16)'),
    ('fc00::/7', 'unique local (fc00::/7)'),
    ('fe80::/10', 'link-local'),
    ('fec0::/10', 'site-local (deprecated)'),
    ('ff00::/8', 'multicast');

-- Why errand would not connect to address a ("loopback", "the NAT64 form
-- of 127.0.0.1, which is loopback"), or NULL when it would. Allowed are
-- the ranges of ERRAND_WEBHOOK_ALLOW_CIDRS as the daemon published them
-- (errand.settings webhook_allow_cidrs).
CREATE FUNCTION errand.webhook_address_problem(a inet) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_allowed cidr[] := coalesce((SELECT string_to_array(nullif(s.value, ''), ',')::cidr[]
                                  FROM errand.settings s WHERE s.name = 'webhook_allow_cidrs'), '{}');
    v_reason text;
    v_v4 inet;
    v_form text;
BEGIN
    a := host(a)::inet;
    IF a <<= ANY (v_allowed) THEN
        RETURN NULL;
    END IF;
    IF family(a) = 6 AND a <<= '::ffff:0:0/96'::cidr THEN
        v_v4 := '0.0.0.0'::inet + (a - '::ffff:0.0.0.0'::inet);
        v_form := 'IPv4-mapped';
    ELSIF family(a) = 6 AND a <<= '64:ff9b::/96'::cidr THEN
        v_v4 := '0.0.0.0'::inet + (a - '64:ff9b::'::inet);
        v_form := 'NAT64';
    END IF;
    IF v_v4 IS NOT NULL THEN
        IF v_v4 <<= ANY (v_allowed) THEN
            RETURN NULL;
        END IF;
        SELECT r.reason INTO v_reason FROM errand.webhook_refused_ranges r
        WHERE v_v4 <<= r.range ORDER BY masklen(r.range) DESC LIMIT 1;
        RETURN CASE WHEN v_reason IS NOT NULL THEN format('the %s form of %s, which is %s', v_form, host(v_v4), v_reason) END;
    END IF;
    SELECT r.reason INTO v_reason FROM errand.webhook_refused_ranges r
    WHERE a <<= r.range ORDER BY masklen(r.range) DESC LIMIT 1;
    RETURN v_reason;
END;
$$;

-- A host written as an IPv4 address in any notation the C library's
-- inet_aton accepts (and so getaddrinfo, curl, browsers): 1 to 4 parts,
-- each decimal, octal (leading 0) or hex (0x); the last part fills the
-- remaining bytes (127.1 is 127.0.0.1, 2130706433 is 127.0.0.1). Returns
-- NULL when the host is not written as a number (its last label is not
-- numeric); raises when it is but is not a valid address.
CREATE FUNCTION errand.webhook_ipv4_literal(host text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[] := string_to_array(lower(host), '.');
    v_n int := cardinality(v_parts);
    v_part text;
    v_value numeric;
    v_total numeric := 0;
    i int;
    j int;
BEGIN
    IF v_n = 0 OR v_parts[v_n] !~ '^(0x[0-9a-f]*|[0-9]+)$' THEN
        RETURN NULL;
    END IF;
    IF v_n > 4 THEN
        RAISE EXCEPTION 'has % parts', v_n USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. v_n LOOP
        v_part := v_parts[i];
        v_value := 0;
        IF v_part ~ '^0x[0-9a-f]*$' THEN
            IF length(v_part) > 18 THEN
                RAISE EXCEPTION 'part % is too large', v_part USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOR j IN 3 .. length(v_part) LOOP
                v_value := v_value * 16 + (strpos('0123456789abcdef', substr(v_part, j, 1)) - 1);
            END LOOP;
        ELSIF v_part ~ '^0[0-7]*$' THEN
            IF length(v_part) > 24 THEN
                RAISE EXCEPTION 'part % is too large', v_part USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOR j IN 2 .. length(v_part) LOOP
                v_value := v_value * 8 + substr(v_part, j, 1)::int;
            END LOOP;
        ELSIF v_part ~ '^[1-9][0-9]{0,19}$' THEN
            v_value := v_part::numeric;
        ELSE
            RAISE EXCEPTION 'part "%" is not a number', v_part USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF i < v_n THEN
            IF v_value > 255 THEN
                RAISE EXCEPTION 'part % is over 255', v_part USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_total := v_total + v_value * (256::numeric ^ (4 - i));
        ELSE
            IF v_value >= 256::numeric ^ (5 - v_n) THEN
                RAISE EXCEPTION 'part % is too large', v_part USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_total := v_total + v_value;
        END IF;
    END LOOP;
    RETURN '0.0.0.0'::inet + v_total::bigint;
END;
$$;

-- What is wrong with an endpoint URL, or NULL. Hostnames are resolved only
-- when a delivery dials (and the address dialled is checked then, every
-- time); what can be told from the text alone is refused here.
CREATE FUNCTION errand.webhook_url_problem(url text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rest text;
    v_authority text;
    v_host text;
    v_port text;
    v_addr inet;
    v_problem text;
BEGIN
    IF length(url) > 2048 THEN
        RETURN format('is %s characters, at most 2048', length(url));
    END IF;
    IF url ~ '[[:space:][:cntrl:]\\]' THEN
        RETURN 'must not contain spaces, control characters or backslashes';
    END IF;
    IF url !~* '^https?://' THEN
        RETURN format('must start with http:// or https://, got %s', quote_literal(left(url, 100)));
    END IF;
    v_rest := substr(url, strpos(url, '://') + 3);
    v_authority := substring(v_rest FROM '^[^/?#]*');
    IF strpos(v_authority, '@') > 0 THEN
        RETURN 'must not carry a user or password (user:password@host)';
    END IF;
    IF v_authority LIKE '[%' THEN
        v_host := substring(v_authority FROM '^\[([^\]]*)\]');
        v_port := substring(v_authority FROM '^\[[^\]]*\](.*)$');
        IF v_host IS NULL THEN
            RETURN format('has an unterminated IPv6 address %s', quote_literal(v_authority));
        END IF;
        IF strpos(v_host, '%') > 0 THEN
            RETURN format('host [%s] carries an IPv6 zone, which only names a local link', v_host);
        END IF;
        BEGIN
            v_addr := v_host::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('host [%s] is not a valid IPv6 address', v_host);
        END;
        IF family(v_addr) <> 6 OR masklen(v_addr) <> 128 THEN
            RETURN format('host [%s] is not a valid IPv6 address', v_host);
        END IF;
    ELSE
        v_host := lower(split_part(v_authority, ':', 1));
        v_port := CASE WHEN strpos(v_authority, ':') > 0 THEN substr(v_authority, strpos(v_authority, ':')) END;
        IF v_host = '' THEN
            RETURN 'has no host';
        END IF;
        IF v_host !~ '^[a-z0-9_.-]+$' THEN
            RETURN format('host %s may hold only letters, digits, dots, dashes and underscores (write an international name in its xn-- form)', quote_literal(v_host));
        END IF;
        -- A trailing dot is DNS's root, the same host.
        v_host := regexp_replace(v_host, '\.$', '');
        IF v_host = 'localhost' OR v_host LIKE '%.localhost' THEN
            v_addr := '127.0.0.1';
        ELSE
            BEGIN
                v_addr := errand.webhook_ipv4_literal(v_host);
            EXCEPTION WHEN invalid_parameter_value THEN
                RETURN format('host %s is written as a number but is not a valid IPv4 address (%s)', v_host, SQLERRM);
            END;
        END IF;
    END IF;
    IF v_port IS NOT NULL AND v_port <> '' THEN
        IF v_port !~ '^:[0-9]{1,5}$' OR substr(v_port, 2)::int NOT BETWEEN 1 AND 65535 THEN
            RETURN format('has an invalid port %s', quote_literal(substr(v_port, 2)));
        END IF;
    END IF;
    IF v_addr IS NOT NULL THEN
        v_problem := errand.webhook_address_problem(v_addr);
        IF v_problem IS NOT NULL THEN
            RETURN format('host %s is %s: errand does not connect there (ERRAND_WEBHOOK_ALLOW_CIDRS lists exceptions)',
                CASE WHEN v_authority LIKE '[%' THEN '[' || v_host || ']'
                     WHEN family(v_addr) = 4 AND v_host ~ '^[0-9a-fx.]+$' AND v_host <> host(v_addr)
                     THEN format('%s (the IPv4 address %s written another way)', v_host, host(v_addr))
                     ELSE v_host END,
                v_problem);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- A new signing secret: "whsec_" and the base64 of 32 random bytes. The
-- bytes are a SHA-256 of three random uuids (366 bits from PostgreSQL's
-- strong random source), since gen_random_bytes needs pgcrypto.
CREATE FUNCTION errand.webhook_new_secret() RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'whsec_' || encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'base64');
$$;

-- Customers' endpoints. The app inserts and updates them with plain SQL;
-- errand keeps the failure bookkeeping (failing_since, last_success_at to
-- the minute) and disables an endpoint that answers 410 or fails for
-- ERRAND_WEBHOOK_DISABLE_AFTER without a success.
CREATE TABLE errand.webhook_endpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    url text NOT NULL,
    secret text NOT NULL DEFAULT errand.webhook_new_secret(),
    -- Empty means every event type.
    event_types text[] NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    disabled_at timestamptz,
    failing_since timestamptz,
    last_success_at timestamptz,
    -- The secret before the last rotation, signed with too until it expires.
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_workspace_idx ON errand.webhook_endpoints (workspace_id);

-- One row per message: body is exactly what is signed and sent, on every
-- attempt and every replay. event_id is the app's id for the event: the
-- same one twice in a workspace makes no second message.
CREATE TABLE errand.webhook_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL,
    event_type text NOT NULL,
    event_id text,
    body text NOT NULL,
    job_id bigint UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_messages_event_id_key UNIQUE (workspace_id, event_id)
);
CREATE INDEX webhook_messages_workspace_created_idx ON errand.webhook_messages (workspace_id, created_at);

-- Every delivery attempt. status_code is NULL when no answer came (error
-- says why); response_body is the first 4 KB of the answer.
CREATE TABLE errand.webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    message_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    status_code int,
    latency_ms int NOT NULL,
    response_body text,
    error text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_message_idx ON errand.webhook_attempts (message_id);
CREATE INDEX webhook_attempts_endpoint_created_idx ON errand.webhook_attempts (endpoint_id, created_at);

-- Deliveries in flight, one row each, for the per-endpoint cap across
-- replicas (ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY): a delivery takes a row
-- (errand.webhook_take_slots) when it finds fewer live rows than the cap,
-- and deletes it when it has recorded its attempt. A replica that dies
-- leaves its rows to expire (expires_at, by the database's clock), and a
-- rescued job takes its own row back. Unlogged: after a crash nothing is in
-- flight, and taking a slot writes no WAL.
CREATE UNLOGGED TABLE errand.webhook_inflight (
    job_id bigint PRIMARY KEY,
    attempt int NOT NULL,
    workspace_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX webhook_inflight_endpoint_idx ON errand.webhook_inflight (endpoint_id);

-- Takes delivery slots for a batch of jobs of one workspace (the caller's
-- scope): for each endpoint, as many of its jobs as it has free slots (the
-- cap less the live leases of other jobs, by the database's clock), oldest
-- job first; a job that holds a lease already (a rescued job) takes it
-- back. An advisory lock per endpoint serialises the callers until their
-- transactions end, taken in one order (by the lock's key) so two batches
-- never deadlock; the count runs after the lock is granted, in a statement
-- of its own, so it sees every earlier holder's commit. (The endpoint's row
-- lock would do too, but a row lock writes WAL: every delivery would wait
-- for a disk flush.) Runs as the caller.
CREATE FUNCTION errand.webhook_take_slots(job_ids bigint[], attempts int[], endpoint_ids uuid[], workspace_id uuid, slots int, lease interval)
RETURNS TABLE (job_id bigint, taken boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_endpoint uuid;
    v_free bigint;
BEGIN
    FOR v_endpoint IN
        SELECT DISTINCT ON (hashtext(e::text), e) e FROM unnest(endpoint_ids) AS e ORDER BY hashtext(e::text), e
    LOOP
        PERFORM pg_advisory_xact_lock(2003133032, hashtext(v_endpoint::text)); -- 2003133032: "webh"
        SELECT slots - count(*) INTO v_free FROM errand.webhook_inflight x
        WHERE x.endpoint_id = v_endpoint AND x.expires_at > clock_timestamp() AND x.job_id <> ALL (job_ids);
        RETURN QUERY
        WITH mine AS (
            SELECT r.j, r.a FROM unnest(job_ids, attempts, endpoint_ids) AS r(j, a, e)
            WHERE r.e = v_endpoint
        ), took AS (
            INSERT INTO errand.webhook_inflight AS f (job_id, attempt, workspace_id, endpoint_id, expires_at)
            SELECT m.j, m.a, webhook_take_slots.workspace_id, v_endpoint, clock_timestamp() + lease
            FROM (SELECT * FROM mine ORDER BY mine.j LIMIT greatest(v_free, 0)) AS m
            ON CONFLICT ON CONSTRAINT webhook_inflight_pkey DO UPDATE
                SET attempt = EXCLUDED.attempt, endpoint_id = EXCLUDED.endpoint_id, expires_at = EXCLUDED.expires_at
            RETURNING f.job_id
        )
        SELECT mine.j, mine.j IN (SELECT took.job_id FROM took) FROM mine;
    END LOOP;
END;
$$;

-- Tenant isolation, as for every errand table with a workspace_id.
ALTER TABLE errand.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.webhook_endpoints
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.webhook_messages
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.webhook_attempts
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.webhook_inflight ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_inflight FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.webhook_inflight
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

SELECT errand.grant_tenant('errand.webhook_endpoints');
SELECT errand.grant_tenant('errand.webhook_messages');
SELECT errand.grant_tenant('errand.webhook_attempts');
SELECT errand.grant_tenant('errand.webhook_inflight');

-- Which workspace an endpoint or message id belongs to, for the SQL
-- functions below: they run as errand's owner, on whom row level security
-- is forced (a plain owner on managed PostgreSQL), so they must know the
-- workspace before they can see the row. Not tenant data (ids only), and
-- granted to nobody.
CREATE TABLE errand.webhook_owners (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL
);

CREATE FUNCTION errand.webhook_note_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM errand.webhook_owners WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO errand.webhook_owners (id, workspace_id) VALUES (NEW.id, NEW.workspace_id)
    ON CONFLICT (id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_endpoint_owner AFTER INSERT OR DELETE ON errand.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_note_owner();
CREATE TRIGGER webhook_message_owner AFTER INSERT OR DELETE ON errand.webhook_messages
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_note_owner();

-- An endpoint as the app writes it: checked, with a secret, and its
-- bookkeeping following enabled. Fires only for the columns the app sets,
-- so errand's own bookkeeping updates run no PL/pgSQL.
CREATE FUNCTION errand.webhook_endpoint_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
    v_bad text;
    v_key bytea;
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: webhook endpoint workspace_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workspace_id <> OLD.workspace_id THEN
        RAISE EXCEPTION 'errand: a webhook endpoint cannot move to another workspace' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    IF NEW.url IS NULL THEN
        RAISE EXCEPTION 'errand: webhook endpoint url is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url THEN
        v_problem := errand.webhook_url_problem(NEW.url);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION 'errand: webhook endpoint url %', v_problem USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    NEW.secret := coalesce(NEW.secret, errand.webhook_new_secret());
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        IF NEW.secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' OR length(NEW.secret) % 4 <> 2 THEN
            RAISE EXCEPTION 'errand: webhook endpoint secret must be "whsec_" followed by the base64 of 24 to 64 random bytes (leave it NULL to have one made)'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_key := decode(substr(NEW.secret, 7), 'base64');
        IF length(v_key) NOT BETWEEN 24 AND 64 THEN
            RAISE EXCEPTION 'errand: webhook endpoint secret is % bytes, want 24 to 64 (leave it NULL to have one made)', length(v_key)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    NEW.event_types := coalesce(NEW.event_types, '{}');
    SELECT t INTO v_bad FROM unnest(NEW.event_types) AS t
    WHERE t IS NULL OR t !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' OR length(t) > 255 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'errand: webhook endpoint event_types must be names such as invoice.paid (letters, digits, _ and - between dots), got %',
            coalesce(quote_literal(v_bad), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;

    NEW.enabled := coalesce(NEW.enabled, true);
    IF TG_OP = 'UPDATE' AND NEW.enabled AND NOT OLD.enabled THEN
        -- Re-enabled: a fresh start for the failure count.
        NEW.disabled_reason := NULL;
        NEW.disabled_at := NULL;
        NEW.failing_since := NULL;
    ELSIF NOT NEW.enabled AND (TG_OP = 'INSERT' OR OLD.enabled) THEN
        NEW.disabled_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER webhook_endpoint_check BEFORE INSERT OR UPDATE OF workspace_id, url, secret, event_types, enabled
    ON errand.webhook_endpoints FOR EACH ROW EXECUTE FUNCTION errand.webhook_endpoint_check();

-- An endpoint that is disabled (by the app, a 410, or
-- ERRAND_WEBHOOK_DISABLE_AFTER) or deleted takes its pending deliveries with
-- it: they fail with the reason. One that is running finishes its attempt.
CREATE FUNCTION errand.webhook_endpoint_stopped() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text := CASE WHEN TG_OP = 'DELETE' THEN format('webhook endpoint %s was deleted', OLD.id)
                          ELSE format('webhook endpoint %s was disabled: %s', NEW.id, coalesce(NEW.disabled_reason, 'disabled by the app')) END;
BEGIN
    UPDATE errand.river_job
    SET state = 'cancelled',
        finalized_at = now(),
        errors = coalesce(errors, '{}') || jsonb_build_object('at', now(), 'attempt', attempt, 'error', v_reason, 'trace', '')
    WHERE (metadata ->> 'workspace_id')::uuid = OLD.workspace_id
      AND state IN ('available', 'scheduled', 'retryable', 'pending')
      AND kind = 'webhook.deliver'
      AND args ->> 'endpoint_id' = OLD.id::text;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhook_endpoint_disabled AFTER UPDATE OF enabled ON errand.webhook_endpoints
    FOR EACH ROW WHEN (OLD.enabled AND NOT NEW.enabled)
    EXECUTE FUNCTION errand.webhook_endpoint_stopped();
CREATE TRIGGER webhook_endpoint_deleted AFTER DELETE ON errand.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION errand.webhook_endpoint_stopped();

-- The workspace of a webhook endpoint or message for the functions below:
-- the caller's scope, when it has one, must be that workspace.
CREATE FUNCTION errand.webhook_owner(id uuid, what text) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid := (SELECT o.workspace_id FROM errand.webhook_owners o WHERE o.id = webhook_owner.id);
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
BEGIN
    IF v_ws IS NULL OR (v_caller <> '' AND v_caller <> v_ws::text) THEN
        RAISE EXCEPTION 'errand: webhook % % does not exist', what, coalesce(id::text, 'NULL')
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN v_ws;
END;
$$;

-- SELECT errand.webhook_rotate_secret(endpoint_id) returns the endpoint's
-- new secret. For 24 hours deliveries are signed with the old one too (two
-- signatures in webhook-signature), so the receiver can switch without
-- dropping a message; a second rotation within them drops the oldest.
CREATE FUNCTION errand.webhook_rotate_secret(endpoint_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_ws uuid := errand.webhook_owner(endpoint_id, 'endpoint');
    v_secret text;
BEGIN
    PERFORM set_config('app.current_workspace_id', v_ws::text, true);
    UPDATE errand.webhook_endpoints e
    SET previous_secret = e.secret,
        previous_secret_expires_at = now() + interval '24 hours',
        secret = errand.webhook_new_secret()
    WHERE e.id = webhook_rotate_secret.endpoint_id AND e.workspace_id = v_ws
    RETURNING e.secret INTO v_secret;
    PERFORM set_config('app.current_workspace_id', v_caller, true);
    RETURN v_secret;
END;
$$;

-- SELECT errand.webhook_replay(message_id [, endpoint_id]) delivers a
-- message again, with its original webhook-id and body: to that endpoint,
-- or to every enabled endpoint subscribed to its event type now. Returns
-- the webhook.deliver jobs' ids. A disabled endpoint must be re-enabled
-- first (UPDATE errand.webhook_endpoints SET enabled = true ...).
CREATE FUNCTION errand.webhook_replay(message_id uuid, endpoint_id uuid DEFAULT NULL) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := coalesce(current_setting('app.current_workspace_id', true), '');
    v_ws uuid := errand.webhook_owner(message_id, 'message');
    v_type text;
    v_enabled boolean;
    v_types text[];
    v_endpoint uuid;
    v_job bigint;
BEGIN
    PERFORM set_config('app.current_workspace_id', v_ws::text, true);
    -- Row level security scopes a plain owner; a superuser owner it does
    -- not, hence the explicit workspace in every query.
    SELECT m.event_type INTO v_type FROM errand.webhook_messages m
    WHERE m.id = webhook_replay.message_id AND m.workspace_id = v_ws;
    IF webhook_replay.endpoint_id IS NOT NULL THEN
        SELECT e.enabled, e.event_types INTO v_enabled, v_types
        FROM errand.webhook_endpoints e WHERE e.id = webhook_replay.endpoint_id AND e.workspace_id = v_ws;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'errand: webhook endpoint % does not exist in the message''s workspace', webhook_replay.endpoint_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF NOT v_enabled THEN
            RAISE EXCEPTION 'errand: webhook endpoint % is disabled', webhook_replay.endpoint_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'UPDATE errand.webhook_endpoints SET enabled = true WHERE id = ... re-enables it';
        END IF;
        IF cardinality(v_types) > 0 AND NOT v_type = ANY (v_types) THEN
            RAISE EXCEPTION 'errand: webhook endpoint % is not subscribed to event type %', webhook_replay.endpoint_id, v_type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    FOR v_endpoint IN
        SELECT e.id FROM errand.webhook_endpoints e
        WHERE e.workspace_id = v_ws
          AND e.enabled
          AND (cardinality(e.event_types) = 0 OR v_type = ANY (e.event_types))
          AND (webhook_replay.endpoint_id IS NULL OR e.id = webhook_replay.endpoint_id)
        ORDER BY e.created_at, e.id
    LOOP
        INSERT INTO errand.jobs (workspace_id, kind, args)
        VALUES (v_ws, 'webhook.deliver', jsonb_build_object('message_id', webhook_replay.message_id, 'endpoint_id', v_endpoint))
        RETURNING id INTO v_job;
        RETURN NEXT v_job;
    END LOOP;
    PERFORM set_config('app.current_workspace_id', v_caller, true);
END;
$$;

-- They act across workspaces (as errand's owner): for the roles an
-- operator grants them to (README: grants for an app server's role).
REVOKE ALL ON FUNCTION errand.webhook_rotate_secret(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION errand.webhook_replay(uuid, uuid) FROM PUBLIC;
