-- A digest's period is the local day (or ISO week) it was due on, not the
-- day its instant shows.
--
-- errand.digest_period (013) labelled a digest by the local date of its
-- due instant. When the local hour does not exist (a spring change),
-- PostgreSQL reads it as standard time, which shows up to an hour (on
-- Antarctica/Troll two) later: in America/Nuuk, whose clocks go from 23:00
-- on Saturday to 00:00 on Sunday, Saturday's 23:00 digest showed as Sunday
-- 00:00 and took Sunday's label, so Sunday's own digest was a duplicate
-- (its idempotency key) and was dropped: no digest that day (a review
-- found it). The label is now the date of the instant's local time less
-- the digest's hour, plus twelve hours: the nominal day whatever the zone
-- did to the hour (a shift of less than twelve hours either way, which
-- covers every zone, negative daylight saving such as Europe/Dublin's
-- included). The three-argument form stays for the previous release's
-- replicas during a rolling deploy.
CREATE FUNCTION errand.digest_period(frequency text, tz text, hour int, due timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE frequency
    WHEN 'weekly' THEN to_char(((due AT TIME ZONE tz) - make_interval(hours => hour) + interval '12 hours')::date, 'IYYY-"W"IW')
    ELSE to_char(((due AT TIME ZONE tz) - make_interval(hours => hour) + interval '12 hours')::date, 'YYYY-MM-DD') END;
