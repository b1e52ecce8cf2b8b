-- A digest's time zone must be a zone PostgreSQL has a file for, not
-- something it reads as a fixed offset.
--
-- The preferences' check (013) accepted any name PostgreSQL's AT TIME ZONE
-- takes (errand.time_zone_known), and PostgreSQL takes more than IANA
-- names: an abbreviation from its abbreviation table ('PST', 'MSK': a fixed
-- offset, no daylight saving) and a POSIX TZ string ('UTC+3', 'GMT-5',
-- 'Foo+3', whose sign is the opposite of ISO 8601's: 'UTC+3' is three hours
-- WEST of UTC). A user who typed 'UTC+3' got the 08:00 digest at 11:00 UTC,
-- and Go, which renders the email's times, knows none of them (a review
-- found it). Neither form can contain a '/', and every zone name with one
-- is a file PostgreSQL either has or refuses; a name without one (UTC,
-- CET, EST5EDT, Japan, but also PST and UTC+3) must be in
-- pg_timezone_names, which reads the zone files and costs about a
-- millisecond (the first time in a connection far more): paid only for
-- such a name other than UTC, and only when a row is inserted or its
-- timezone changes.
--
-- Rows written before this migration keep working as they did: the tick
-- still uses errand.time_zone_known (unchanged), and an update that leaves
-- the timezone alone (a user turning digests off) is not refused for it.
CREATE FUNCTION errand.time_zone_is_name(tz text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN tz = 'UTC' OR strpos(tz, '/') > 0 OR EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz);

CREATE OR REPLACE FUNCTION errand.notification_preferences_check() RETURNS trigger
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
    IF NOT errand.time_zone_known(NEW.timezone)
       OR ((TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) AND NOT errand.time_zone_is_name(NEW.timezone)) THEN
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

