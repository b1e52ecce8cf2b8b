-- A change to a user's digest preferences keeps a digest that is due and not
-- yet sent when the new settings make it due too.
--
-- 013's trigger started a changed schedule at its next time from now. A
-- change made after the digest's local time had passed but before the tick
-- that sends it (up to ERRAND_DIGEST_TICK, or the whole outage that
-- ERRAND_DIGEST_BACKFILL covers) skipped that period, even a change that
-- moved nothing: weekday on a daily digest, a zone's other name
-- (NZ-CHAT for Pacific/Chatham), or the hour moved to one already past
-- today. Now, when the schedule's next due time has passed (so that period
-- was not sent: a sent one moves it on) and the new settings have a due
-- time at or before now that is after the last digest sent and names
-- another period than it, the schedule's next due time becomes that one
-- and the next tick sends it (the hour moved earlier or later but already
-- past, the zone moved east or west, the weekday of a daily digest, a
-- zone's other name). Otherwise (a later hour today, digests turned on)
-- it starts at its next time from now, as before. The schedule's row is
-- read FOR UPDATE, so a tick moving it on at the same moment is waited for
-- and its sent period is not made due again. A schedule deleted and
-- inserted again (an app that saves preferences by DELETE and INSERT)
-- starts afresh: nothing is left to compare with.
CREATE OR REPLACE FUNCTION errand.notification_preferences_schedule() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_due timestamptz;
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
    -- (046) A due, unsent period that the new settings make due too: their
    -- latest due time, after the last digest sent and of another period.
    -- (FOR UPDATE: a tick moving the row on is waited for, and the row as
    -- it left it is what the conditions are checked against.)
    SELECT l.due INTO v_due
    FROM errand.digest_schedule s
    CROSS JOIN LATERAL (SELECT errand.digest_latest_due(NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday, now()) AS due) l
    WHERE s.workspace_id = NEW.workspace_id AND s.user_id = NEW.user_id
      AND s.next_due_at <= now() AND l.due IS NOT NULL
      AND (s.last_due_at IS NULL OR (l.due > s.last_due_at
           AND errand.digest_period(NEW.frequency, NEW.timezone, NEW.hour, l.due)
               IS DISTINCT FROM errand.digest_period(s.frequency, s.zone, s.hour, s.last_due_at)))
    FOR UPDATE OF s;
    INSERT INTO errand.digest_schedule AS s (workspace_id, user_id, frequency, zone, hour, weekday, next_due_at)
    VALUES (NEW.workspace_id, NEW.user_id, NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday,
            coalesce(v_due, errand.digest_next_due(NEW.frequency, NEW.timezone, NEW.hour, NEW.weekday, now())))
    ON CONFLICT (workspace_id, user_id) DO UPDATE
        SET frequency = EXCLUDED.frequency, zone = EXCLUDED.zone, hour = EXCLUDED.hour, weekday = EXCLUDED.weekday,
            next_due_at = EXCLUDED.next_due_at, zone_error = NULL;
    RETURN NULL;
END;
$$;
