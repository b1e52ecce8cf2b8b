-- A durable count of finished jobs per workspace, day, kind and final
-- state, for the weekly usage report (jobs/usagereport). River's cleaner
-- deletes completed jobs after ERRAND_RETAIN_COMPLETED (24 h) and failed
-- ones after ERRAND_RETAIN_FAILED (7 days), and the report runs on Monday
-- 08:00 for the week that ended hours before: counting River's rows then
-- found almost nothing. Decisions: docs/schedules.md ("Job counts").
--
-- No trigger on River's table: every job's completion would pay for it.
-- Instead the leader (internal/maintenance/jobcounts.go) calls
-- errand.roll_up_job_counts every minute: it adds the jobs finalized since a
-- watermark and moves the watermark in the same transaction, so a crash or a
-- second caller never counts a job twice.

-- One row per workspace, UTC day of finalized_at, kind, River's final state
-- (completed, discarded or cancelled) and origin: '' for the workspace's
-- own work, or the schedule whose bookkeeping the job is ('usage_reports':
-- usage_report.generate and the email.send of its template usage_report;
-- 'digests': digest.send, which runs whenever a user's time passes, with
-- or without anything to send). Never pruned: a few rows per workspace and
-- day.
CREATE TABLE errand.job_counts (
    workspace_id uuid NOT NULL,
    day date NOT NULL,
    kind text NOT NULL,
    state text NOT NULL,
    origin text NOT NULL DEFAULT '',
    count bigint NOT NULL,
    PRIMARY KEY (workspace_id, day, kind, state, origin)
);

-- Jobs finalized at or before counted_until are counted; one row. It
-- starts at -infinity: the first roll-up counts every finished job River
-- still keeps.
CREATE TABLE errand.job_counts_watermark (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    counted_until timestamptz NOT NULL
);
INSERT INTO errand.job_counts_watermark (counted_until) VALUES ('-infinity');

-- Counts the jobs finalized in (watermark, upto] and moves the watermark to
-- upto; returns how many it counted. The default upto lags a minute behind
-- the database's clock: River stamps finalized_at with the replica's clock
-- when the job ends and commits it a moment later, so a job finalized just
-- before upto may not be visible yet; one whose stamp is more than a minute
-- behind its commit (a replica's clock that far behind the database's) is
-- missed. The watermark row is locked first: a concurrent caller waits,
-- then starts from the new watermark. An upto at or before the watermark
-- does nothing (tests pass times in 2030; the leader's next call then
-- waits for the clock to get there).
CREATE FUNCTION errand.roll_up_job_counts(upto timestamptz DEFAULT now() - interval '1 minute') RETURNS bigint
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
    UPDATE errand.job_counts_watermark SET counted_until = upto;
    RETURN v_n;
END;
$$;
REVOKE ALL ON FUNCTION errand.roll_up_job_counts(timestamptz) FROM PUBLIC;

-- Like River's job rows: row level security for every role but errand's
-- own (the owner, not forced: the roll-up writes every workspace's counts
-- unscoped), fail-closed: a scoped transaction (the tenant role) sees its
-- workspace's counts, and none without a scope. The tenant role may read,
-- never write: the counts are errand's.
ALTER TABLE errand.job_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY scoped_counts ON errand.job_counts
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

SELECT errand.grant_tenant('errand.job_counts', 'SELECT');
