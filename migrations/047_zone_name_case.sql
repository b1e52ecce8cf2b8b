-- A digest time zone must be spelled exactly as the zone database spells it.
--
-- PostgreSQL finds zone names without regard to case, so 043's check let
-- 'asia/kolkata' and 'America/New_york' through (a '/' and no digit took its
-- fast path, and the BEFORE trigger's errand.time_zone_known accepts any
-- case): the schedule ran on the zone's time, but Go's zone database is
-- case-sensitive, so the digest email's times fell back to UTC, hours off
-- with no zone shown. Only an exact match in pg_timezone_names tells, and
-- that view reads every zone file on each call (about 27 ms here, which 043's
-- fast path avoided), so its names are kept in errand.zone_names, read once
-- now: a name there is checked by one index probe. A name that is not (a
-- zone added by a later tzdata, or not a zone at all) is looked up in
-- pg_timezone_names as before.
CREATE TABLE errand.zone_names (name text PRIMARY KEY);
INSERT INTO errand.zone_names (name) SELECT DISTINCT n.name FROM pg_timezone_names n;
COMMENT ON TABLE errand.zone_names IS
    'pg_timezone_names'' names as of the migration, for errand.time_zone_is_name (migration 047)';

CREATE OR REPLACE FUNCTION errand.time_zone_is_name(tz text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN tz = 'UTC' OR EXISTS (SELECT 1 FROM errand.zone_names z WHERE z.name = tz)
    OR EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz);
