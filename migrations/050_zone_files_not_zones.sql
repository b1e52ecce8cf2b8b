-- A digest time zone must be a zone, not one of the tz database's files.
--
-- A PostgreSQL built --with-system-tzdata (Debian's, Ubuntu's) lists in
-- pg_timezone_names every file under /usr/share/zoneinfo: 'localtime' (a link
-- to the server's own zone), 'posixrules', 'Factory' and the 'posix/' and
-- 'right/' copies of the whole database. 047 copied them into
-- errand.zone_names, so a preference could name 'localtime': the tick then
-- kept the database server's time and the email's times came out in each
-- replica's own zone (Go loads the same files). These names are refused now,
-- as CRON_TZ refuses them for schedules; the copies' zones are written
-- without the prefix (Europe/Berlin, not posix/Europe/Berlin). Rows written
-- before keep working as they did (the stricter check runs on an insert or a
-- changed timezone only, migration 043).
CREATE FUNCTION errand.time_zone_file_not_zone(tz text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN tz IN ('localtime', 'posixrules', 'Factory') OR tz LIKE 'posix/%' OR tz LIKE 'right/%';

DELETE FROM errand.zone_names WHERE errand.time_zone_file_not_zone(name);

CREATE OR REPLACE FUNCTION errand.time_zone_is_name(tz text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN tz = 'UTC' OR (NOT errand.time_zone_file_not_zone(tz) AND (
    EXISTS (SELECT 1 FROM errand.zone_names z WHERE z.name = tz)
    OR EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz)));
