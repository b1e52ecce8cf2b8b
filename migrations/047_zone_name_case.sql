-- A digest time zone must be spelled as the zone database spells it.
--
-- PostgreSQL finds zone names without regard to case, so 043's check let
-- 'asia/kolkata' through (a '/' and no digit took its fast path, and the
-- BEFORE trigger's errand.time_zone_known accepts any case): the schedule
-- ran on Kolkata time, but Go's zone database is case-sensitive, so the
-- digest email's times fell back to UTC, five and a half hours off with no
-- zone shown. The fast path now also asks that every part of the name start
-- with a capital letter, as every IANA name does (America/Port-au-Prince,
-- America/Argentina/Buenos_Aires); anything else is looked up exactly, by
-- its case, in pg_timezone_names.
CREATE OR REPLACE FUNCTION errand.time_zone_is_name(tz text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN tz = 'UTC' OR (tz ~ '^[A-Z][^/]*(/[A-Z][^/]*)+$' AND tz !~ '[0-9]')
    OR EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz);
