-- Schedules (package schedules), notification digests (kind digest.send,
-- package jobs/digest) and weekly usage reports (kind usage_report.generate,
-- package jobs/usagereport). Decisions: docs/schedules.md.

-- One row per schedule entry and period that ran: the fan-out job of a
-- period inserts it in the transaction that completes it, so a period runs
-- once however often it is enqueued (several replicas, a leader change, a
-- restart, `errand schedules tick` run twice), for as long as the row is
-- kept. Not tenant data, granted to nobody.
CREATE TABLE errand.schedule_runs (
    name text NOT NULL,
    period timestamptz NOT NULL,
    job_id bigint NOT NULL,
    enqueued int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, period)
);

-- The local time zone check every table below uses: an IANA name
-- PostgreSQL knows (its own tzdata). The exception block runs only here,
-- when a row is written, never in the tick's set-based statement.
CREATE FUNCTION errand.time_zone_known(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tz IS NULL OR tz !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$' THEN
        RETURN false;
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END;
$$;

-- The instant local wall time day + hour:00 happens in zone tz. PostgreSQL
-- reads a local time that does not exist (clocks going forward) or happens
-- twice (clocks going back) as standard time: the hour skipped by a spring
-- change is sent at the end of the gap (02:00 in Berlin at 03:00 CEST, on
-- Lord Howe at 02:30), and the hour repeated by an autumn change at its
-- second, standard-time occurrence. Either way once per day.
CREATE FUNCTION errand.local_instant(day date, hour int, tz text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (day + make_time(hour, 0, 0)) AT TIME ZONE tz;

-- The first digest time strictly after `after` for a daily (every day at
-- hour) or weekly (on ISO weekday 1 = Monday .. 7 = Sunday at hour) digest
-- in zone tz; NULL when frequency is off.
CREATE FUNCTION errand.digest_next_due(frequency text, tz text, hour int, weekday int, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day date := (after AT TIME ZONE tz)::date - 1;
    v_at timestamptz;
BEGIN
    IF frequency NOT IN ('daily', 'weekly') THEN
        RETURN NULL;
    END IF;
    FOR i IN 0 .. 9 LOOP
        IF frequency = 'daily' OR extract(isodow FROM v_day + i) = weekday THEN
            v_at := errand.local_instant(v_day + i, hour, tz);
            IF v_at > after THEN
                RETURN v_at;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- The latest digest time at or before `at` (the period a late tick sends).
CREATE FUNCTION errand.digest_latest_due(frequency text, tz text, hour int, weekday int, at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day date := (at AT TIME ZONE tz)::date + 1;
    v_at timestamptz;
BEGIN
    IF frequency NOT IN ('daily', 'weekly') THEN
        RETURN NULL;
    END IF;
    FOR i IN 0 .. 9 LOOP
        IF frequency = 'daily' OR extract(isodow FROM v_day - i) = weekday THEN
            v_at := errand.local_instant(v_day - i, hour, tz);
            IF v_at <= at THEN
                RETURN v_at;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- A digest's period as digest.send's args carry it: the local date
-- ("2026-11-27") of a daily digest, the ISO week ("2026-W48") of a weekly one.
CREATE FUNCTION errand.digest_period(frequency text, tz text, due timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE frequency
    WHEN 'weekly' THEN to_char((due AT TIME ZONE tz)::date, 'IYYY-"W"IW')
    ELSE to_char((due AT TIME ZONE tz)::date, 'YYYY-MM-DD') END;

-- Notifications an app writes for its users; digest.send gathers a user's
-- undigested ones (digested_at IS NULL: the cursor) and marks them in the
-- transaction that completes it.
CREATE TABLE errand.notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    kind text NOT NULL DEFAULT '',
    title text NOT NULL,
    body text NOT NULL DEFAULT '',
    url text,
    created_at timestamptz NOT NULL DEFAULT now(),
    digested_at timestamptz
);
CREATE INDEX notifications_undigested_idx ON errand.notifications (workspace_id, user_id, created_at) WHERE digested_at IS NULL;

-- Each user's digest settings, per workspace. A user without a row gets no
-- digest.
CREATE TABLE errand.notification_preferences (
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    frequency text NOT NULL DEFAULT 'daily',
    timezone text NOT NULL DEFAULT 'UTC',
    hour int NOT NULL DEFAULT 8,
    -- ISO weekday of a weekly digest: 1 = Monday .. 7 = Sunday.
    weekday int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);

-- errand's own copy of the preferences' schedule with the next due time,
-- kept by the trigger below, so one indexed statement finds every due user
-- of every workspace (the tenant table is fail-closed without a scope).
-- zone is the time zone in effect: the preference's, or UTC when
-- PostgreSQL no longer knows it (zone_error says so). Not granted to the
-- tenant role or to apps; a scoped transaction sees its workspace's rows.
CREATE TABLE errand.digest_schedule (
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    frequency text NOT NULL,
    zone text NOT NULL,
    hour int NOT NULL,
    weekday int NOT NULL,
    next_due_at timestamptz NOT NULL,
    last_due_at timestamptz,
    zone_error text,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX digest_schedule_due_idx ON errand.digest_schedule (next_due_at);

CREATE FUNCTION errand.notification_preferences_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := nullif(current_setting('app.current_workspace_id', true), '');
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: notification preference workspace_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.user_id IS NULL THEN
        RAISE EXCEPTION 'errand: notification preference user_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF v_scope IS NOT NULL AND NEW.workspace_id <> v_scope::uuid THEN
        RAISE EXCEPTION 'errand: notification preference for workspace % written in a transaction scoped to workspace %', NEW.workspace_id, v_scope
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.workspace_id <> OLD.workspace_id OR NEW.user_id <> OLD.user_id) THEN
        RAISE EXCEPTION 'errand: a notification preference cannot move to another workspace or user' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.frequency IS NULL OR NEW.frequency NOT IN ('off', 'daily', 'weekly') THEN
        RAISE EXCEPTION 'errand: notification preference frequency must be one of: off, daily, weekly, got %', coalesce(quote_literal(NEW.frequency), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT errand.time_zone_known(NEW.timezone) THEN
        RAISE EXCEPTION 'errand: notification preference timezone must be an IANA time zone name such as Europe/Berlin, got %', coalesce(quote_literal(NEW.timezone), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.hour IS NULL OR NEW.hour NOT BETWEEN 0 AND 23 THEN
        RAISE EXCEPTION 'errand: notification preference hour must be between 0 and 23 (local time), got %', coalesce(NEW.hour::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.weekday IS NULL OR NEW.weekday NOT BETWEEN 1 AND 7 THEN
        RAISE EXCEPTION 'errand: notification preference weekday must be between 1 (Monday) and 7 (Sunday), got %', coalesce(NEW.weekday::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER notification_preferences_check BEFORE INSERT OR UPDATE ON errand.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION errand.notification_preferences_check();

-- digest_schedule follows the rows actually written (AFTER: an INSERT ...
-- ON CONFLICT that ends up updating, or doing nothing, changes it only as
-- much as the row changed). A new or changed schedule starts at its next
-- time from now; an unchanged one (the app upserting the same values)
-- keeps its next due time, so no digest is skipped.
CREATE FUNCTION errand.notification_preferences_schedule() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.frequency = 'off' THEN
        DELETE FROM errand.digest_schedule s
        WHERE s.workspace_id = coalesce(NEW.workspace_id, OLD.workspace_id) AND s.user_id = coalesce(NEW.user_id, OLD.user_id);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday) IS NOT DISTINCT FROM (OLD.frequency, OLD.timezone, OLD.hour, OLD.weekday)
       AND EXISTS (SELECT 1 FROM errand.digest_schedule s WHERE s.workspace_id = NEW.workspace_id AND s.user_id = NEW.user_id) THEN
        RETURN NULL;
    END IF;
    INSERT INTO errand.digest_schedule AS s (workspace_id, user_id, frequency, zone, hour, weekday, next_due_at)
    VALUES (NEW.workspace_id, NEW.user_id, NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday,
            errand.digest_next_due(NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday, now()))
    ON CONFLICT (workspace_id, user_id) DO UPDATE
        SET frequency = EXCLUDED.frequency, zone = EXCLUDED.zone, hour = EXCLUDED.hour, weekday = EXCLUDED.weekday,
            next_due_at = EXCLUDED.next_due_at, zone_error = NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER notification_preferences_schedule AFTER INSERT OR UPDATE OR DELETE ON errand.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION errand.notification_preferences_schedule();

CREATE FUNCTION errand.notifications_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := nullif(current_setting('app.current_workspace_id', true), '');
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: notification workspace_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.user_id IS NULL THEN
        RAISE EXCEPTION 'errand: notification user_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF v_scope IS NOT NULL AND NEW.workspace_id <> v_scope::uuid THEN
        RAISE EXCEPTION 'errand: notification for workspace % written in a transaction scoped to workspace %', NEW.workspace_id, v_scope
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workspace_id <> OLD.workspace_id THEN
        RAISE EXCEPTION 'errand: a notification cannot move to another workspace' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.title IS NULL OR btrim(NEW.title) = '' THEN
        RAISE EXCEPTION 'errand: notification title is required' USING ERRCODE = 'not_null_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER notifications_check BEFORE INSERT OR UPDATE OF workspace_id, user_id, title ON errand.notifications
    FOR EACH ROW EXECUTE FUNCTION errand.notifications_check();

-- Usage an app's servers record, one row per event; idempotency_key makes a
-- retried insert harmless (ON CONFLICT DO NOTHING).
CREATE TABLE errand.usage_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    metric text NOT NULL,
    quantity bigint NOT NULL DEFAULT 1,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_idempotency_key UNIQUE (workspace_id, idempotency_key)
);
CREATE INDEX usage_events_workspace_occurred_idx ON errand.usage_events (workspace_id, occurred_at);

CREATE FUNCTION errand.usage_events_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_scope text := nullif(current_setting('app.current_workspace_id', true), '');
BEGIN
    IF NEW.workspace_id IS NULL THEN
        RAISE EXCEPTION 'errand: usage event workspace_id is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF v_scope IS NOT NULL AND NEW.workspace_id <> v_scope::uuid THEN
        RAISE EXCEPTION 'errand: usage event for workspace % written in a transaction scoped to workspace %', NEW.workspace_id, v_scope
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.workspace_id <> OLD.workspace_id THEN
        RAISE EXCEPTION 'errand: a usage event cannot move to another workspace' USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = NEW.workspace_id) THEN
        RAISE EXCEPTION 'errand: workspace % does not exist in errand.workspaces', NEW.workspace_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.metric IS NULL OR NEW.metric !~ '^[a-z][a-z0-9_.]{0,99}$' THEN
        RAISE EXCEPTION 'errand: usage event metric must be a name such as api_calls (lowercase letters, digits, _ and ., at most 100), got %', coalesce(quote_literal(NEW.metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.quantity IS NULL OR NEW.quantity < 0 THEN
        RAISE EXCEPTION 'errand: usage event quantity must be 0 or more, got %', coalesce(NEW.quantity::text, 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.occurred_at IS NULL THEN
        RAISE EXCEPTION 'errand: usage event occurred_at is required' USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND (NEW.idempotency_key = '' OR length(NEW.idempotency_key) > 255) THEN
        RAISE EXCEPTION 'errand: usage event idempotency_key must be 1 to 255 characters, got %', length(NEW.idempotency_key)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER usage_events_check BEFORE INSERT OR UPDATE ON errand.usage_events
    FOR EACH ROW EXECUTE FUNCTION errand.usage_events_check();

-- Plan limits per metric and week, by errand.workspaces.plan; the app fills
-- it (or replaces it with a view of the same columns). Not tenant data.
CREATE TABLE errand.plan_limits (
    plan text NOT NULL,
    metric text NOT NULL,
    weekly_limit bigint NOT NULL,
    PRIMARY KEY (plan, metric)
);

-- One weekly report per workspace: usage_report.generate writes it in the
-- transaction that completes it.
CREATE TABLE errand.usage_reports (
    workspace_id uuid NOT NULL,
    week text NOT NULL,
    summary jsonb NOT NULL,
    job_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, week)
);

-- Tenant isolation, as for every errand table with a workspace_id.
ALTER TABLE errand.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.notifications
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.notification_preferences ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.notification_preferences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.notification_preferences
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.usage_events
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
ALTER TABLE errand.usage_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.usage_reports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.usage_reports
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
-- errand's schedule copy: everything unscoped (the tick), the scoped
-- workspace's rows in a scoped transaction (the preferences trigger).
ALTER TABLE errand.digest_schedule ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.digest_schedule FORCE ROW LEVEL SECURITY;
CREATE POLICY scoped_schedule ON errand.digest_schedule
    USING (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (nullif(current_setting('app.current_workspace_id', true), '') IS NULL
           OR workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

SELECT errand.grant_tenant('errand.notifications');
SELECT errand.grant_tenant('errand.notification_preferences');
SELECT errand.grant_tenant('errand.usage_events');
SELECT errand.grant_tenant('errand.usage_reports');
SELECT errand.grant_tenant('errand.plan_limits', 'SELECT');
