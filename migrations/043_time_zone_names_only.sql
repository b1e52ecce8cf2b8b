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
-- found it). An abbreviation has no '/' and a POSIX string has a digit
-- (its offset), while a zone name with a '/' and no digit is a file
-- PostgreSQL either has or refuses ('UTC+3/UTC' and 'EST5/EDT' are POSIX
-- strings too); any other name (UTC, CET, EST5EDT, Japan, Etc/GMT+3, but
-- also PST and UTC+3) must be in pg_timezone_names, which reads the zone
-- files and costs about a millisecond (the first time in a connection far
-- more): paid only for such a name other than UTC, and only when a row is
-- inserted or its timezone changes.
--
-- Rows written before this migration keep working as they did: the tick
-- and the preferences' own check still use errand.time_zone_known
-- (unchanged), and the stricter check is an AFTER trigger, so it sees
-- what a statement really did: an update, or an INSERT ... ON CONFLICT DO
-- UPDATE (the README's upsert) that leaves the timezone as it was, is not
-- refused for it (a BEFORE trigger sees every upsert as an insert).
CREATE FUNCTION errand.time_zone_is_name(tz text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN tz = 'UTC' OR (strpos(tz, '/') > 0 AND tz !~ '[0-9]')
    OR EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz);

CREATE FUNCTION errand.notification_preferences_zone_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone) AND NOT errand.time_zone_is_name(NEW.timezone) THEN
        RAISE EXCEPTION 'errand: notification preference timezone must be an IANA time zone name such as Europe/Berlin, got %', coalesce(quote_literal(NEW.timezone), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an abbreviation (PST) is a fixed offset, and a POSIX string (UTC+3) counts its offset west of UTC';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER notification_preferences_zone_check AFTER INSERT OR UPDATE OF timezone ON errand.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION errand.notification_preferences_zone_check();
