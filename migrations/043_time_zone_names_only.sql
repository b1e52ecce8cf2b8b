-- A digest's time zone must be a zone PostgreSQL has a file for, not
-- something it reads as a fixed offset.
--
-- errand.time_zone_known (013) accepted any name PostgreSQL's AT TIME ZONE
-- takes, and PostgreSQL takes more than IANA names: an abbreviation from
-- its abbreviation table ('PST', 'MSK': a fixed offset, no daylight saving)
-- and a POSIX TZ string ('UTC+3', 'GMT-5', 'Foo+3', whose sign is the
-- opposite of ISO 8601's: 'UTC+3' is three hours WEST of UTC). A user who
-- typed 'UTC+3' got the 08:00 digest at 11:00 UTC, and Go, which renders
-- the email's times, knows none of them (a review found it). Neither form
-- can contain a '/', and every zone name with one is a file PostgreSQL
-- either has or refuses; a name without one (UTC, CET, EST5EDT, Japan,
-- but also PST and UTC+3) must be in pg_timezone_names, which reads the
-- zone files and costs milliseconds, paid only for such names, when a row
-- is written.
CREATE OR REPLACE FUNCTION errand.time_zone_known(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tz IS NULL OR tz !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$' THEN
        RETURN false;
    END IF;
    IF strpos(tz, '/') = 0 AND NOT EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz) THEN
        RETURN false;
    END IF;
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END;
$$;
