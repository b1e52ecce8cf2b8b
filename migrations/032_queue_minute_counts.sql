-- What each queue finished per minute, for `errand stats` (store.Stats):
-- "finished in the last hour" used to read every job finished in that hour
-- from River's table (its (state, finalized_at) index finds them, but the
-- queue is only in the rows), 58 ms for the 83,000 of a day of 2,000,000
-- retained jobs, and more the busier the hour. The leader's roll-up
-- (errand.roll_up_job_counts, every minute, migration 029) now also adds
-- each minute's finished jobs per queue here, under the same watermark;
-- Stats sums the minutes up to the watermark and reads River's rows only
-- after it, a minute or two of them. Decisions: docs/scale.md ("errand
-- stats").
--
-- One row per queue, minute (date_bin over absolute time: no time zone
-- enters it) and River's final state. Every job counts, with or without a
-- workspace (the cron table's fan-out jobs too): these are the queues'
-- figures. Kept two hours; an operator table, not a tenant one (no
-- workspace, no grant to the tenant role).
-- A roll-up running now (029's function, on a replica not yet upgraded)
-- waits for this migration, and none moves the watermark under the
-- backfill below.
SELECT 1 FROM errand.job_counts_watermark FOR UPDATE;

CREATE TABLE errand.queue_counts (
    queue text NOT NULL,
    minute timestamptz NOT NULL,
    state text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (queue, minute, state)
);
CREATE INDEX queue_counts_minute_idx ON errand.queue_counts (minute);

-- A database already rolled up (029) has its watermark a minute or two
-- ago: Stats reads River's rows only after it, so the minutes before it
-- are counted here once, from the jobs River still keeps.
INSERT INTO errand.queue_counts (queue, minute, state, count)
SELECT j.queue, date_bin('1 minute', j.finalized_at, timestamptz 'epoch'), j.state::text, count(*)
FROM errand.river_job j, errand.job_counts_watermark w
WHERE j.state IN ('completed', 'discarded', 'cancelled')
  AND w.counted_until > '-infinity'
  AND j.finalized_at > least(w.counted_until, now()) - interval '2 hours' AND j.finalized_at <= w.counted_until
GROUP BY 1, 2, 3;

-- 029's function, with the per-minute counts added: the same range of
-- River's (state, finalized_at) index, the same transaction and watermark,
-- so a job is counted once here too. Only minutes of the last two hours
-- before upto are added (the first roll-up of a fresh database, or one
-- after a long stop, does not fill minutes Stats never reads), and minutes
-- older than two hours are deleted (before now, not before upto: a horizon
-- in the future, which tests pass, does not empty the table).
CREATE OR REPLACE FUNCTION errand.roll_up_job_counts(upto timestamptz DEFAULT now() - interval '1 minute') RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from timestamptz;
    v_n bigint;
BEGIN
    SELECT w.counted_until INTO v_from FROM errand.job_counts_watermark w FOR UPDATE;
    IF upto IS NULL OR upto <= v_from THEN
        RETURN 0;
    END IF;
    -- River's (state, finalized_at) index; jobs of no workspace (the cron
    -- table's fan-out jobs, a plain River client's) are left out.
    WITH finished AS (
        SELECT (j.metadata ->> 'workspace_id')::uuid AS workspace_id,
               (j.finalized_at AT TIME ZONE 'UTC')::date AS day,
               j.kind,
               j.state::text AS state,
               CASE
                   WHEN j.kind = 'usage_report.generate' THEN 'usage_reports'
                   WHEN j.kind = 'email.send' AND j.args ->> 'template' = 'usage_report' THEN 'usage_reports'
                   WHEN j.kind = 'digest.send' THEN 'digests'
                   ELSE ''
               END AS origin
        FROM errand.river_job j
        WHERE j.state IN ('completed', 'discarded', 'cancelled')
          AND j.finalized_at > v_from AND j.finalized_at <= upto
          AND j.metadata ->> 'workspace_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
    ), grouped AS MATERIALIZED (
        SELECT f.workspace_id, f.day, f.kind, f.state, f.origin, count(*) AS n
        FROM finished f
        GROUP BY 1, 2, 3, 4, 5
    ), added AS (
        INSERT INTO errand.job_counts AS c (workspace_id, day, kind, state, origin, count)
        SELECT g.workspace_id, g.day, g.kind, g.state, g.origin, g.n FROM grouped g
        ON CONFLICT (workspace_id, day, kind, state, origin) DO UPDATE SET count = c.count + EXCLUDED.count
    )
    SELECT coalesce(sum(g.n), 0) INTO v_n FROM grouped g;

    INSERT INTO errand.queue_counts AS c (queue, minute, state, count)
    SELECT j.queue, date_bin('1 minute', j.finalized_at, timestamptz 'epoch'), j.state::text, count(*)
    FROM errand.river_job j
    WHERE j.state IN ('completed', 'discarded', 'cancelled')
      AND j.finalized_at > greatest(v_from, upto - interval '2 hours') AND j.finalized_at <= upto
    GROUP BY 1, 2, 3
    ON CONFLICT (queue, minute, state) DO UPDATE SET count = c.count + EXCLUDED.count;
    DELETE FROM errand.queue_counts c WHERE c.minute < least(upto, now()) - interval '2 hours';

    UPDATE errand.job_counts_watermark SET counted_until = upto;
    RETURN v_n;
END;
$$;
REVOKE ALL ON FUNCTION errand.roll_up_job_counts(timestamptz) FROM PUBLIC;
