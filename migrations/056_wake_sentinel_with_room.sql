-- A wake-up is not handed to a job that a workspace's cap holds back.
--
-- errand.wake_decide (010) hands a committing transaction's wake-up to an
-- older available job of the same queue and kind: whatever takes that job
-- out of available wakes the queue. With fairness on, the fetch does not
-- take a job whose workspace is at its concurrency cap, so a sentinel of
-- such a workspace is taken only when one of its running jobs ends: no
-- wake-up was lost, but the committing transaction's jobs (another
-- workspace's) waited for the pilot's fallback wake-up or the poll, up to a
-- second. A review measured it: workspace A capped at 1, one 30 s job
-- running and two held back; workspace B's pings started 100 to 900 ms
-- after their commits instead of about 25 ms, the sentinel always A's.
--
-- Now a candidate whose workspace has a cap (its plan's concurrency, read
-- within errand.plans' checks as the fetch reads it, else the default the
-- replicas publish in errand.settings) is taken only while the workspace
-- runs fewer jobs of the queue than the cap (River's running jobs, counted
-- up to the cap through the workspace's status index). errand's own jobs
-- have no cap. (A candidate of the committing job's own workspace is
-- checked too: the decision speaks for every job the transaction committed
-- to the queue and kind, which may be of other workspaces, as a fan-out's
-- are.) With fairness off on the replicas (workspace_caps 'off')
-- nothing is held back and nothing is looked up. A workspace that reaches
-- its cap between this check and the fetch still holds its sentinel back
-- until a job of its ends (the pilot wakes the queue then): the delay is
-- as before, in that race only.
--
-- jit is off: with sequential scans off, a scan of a few rows of
-- errand.plans would be costed past jit_above_cost and compiled. The plan
-- is generic: with the caps' settings as parameters, PL/pgSQL's plan cache
-- kept choosing a custom plan (cheaper once the settings are folded in) and
-- planned the statement at every commit (pgbench, 8 clients, caps 'off':
-- 1,180 transactions/s forced custom, 2,300 left to choose, 2,600 to 2,750
-- generic, against 2,850 to 2,950 for 010's function in the same minutes).
CREATE OR REPLACE FUNCTION errand.wake_decide() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_query text := coalesce(current_query(), '');
    v_candidate bigint;
    v_setting text;
    v_caps boolean;
    v_default integer;
BEGIN
    -- Count on a sentinel only at the commit itself: a deferred trigger also
    -- fires at SET CONSTRAINTS ... IMMEDIATE, and the bucket lock must not be
    -- held through the rest of a transaction. The commit of an implicit
    -- transaction runs with the statement's text and timestamp (simple
    -- protocol) or with no statement at all (extended protocol's Sync); an
    -- explicit one with COMMIT or END. Anything else notifies, as before.
    IF v_query = '' OR statement_timestamp() = transaction_timestamp() OR v_query ~* '^\s*(commit|end)\M' THEN
        -- (056) The caps the fetch holds workspaces to, as errand.queue_startable reads them.
        SELECT s.value INTO v_setting FROM errand.settings s WHERE s.name = 'workspace_caps';
        v_caps := v_setting IS DISTINCT FROM 'off';
        IF v_setting ~ '^[0-9]{1,9}$' THEN
            v_default := nullif(v_setting::integer, 0);
        END IF;
        -- Candidates: of the oldest jobs of the queue, the ones the next
        -- fetch takes, those of this kind that no transaction has locked or
        -- updated, and (056) whose workspace's cap does not hold them back;
        -- concurrent committers each take a different one. A
        -- candidate's bucket is taken before its row is looked at again: if
        -- nothing has locked or updated it by then (xmax is the row's, not a
        -- snapshot's, so this holds at any isolation level), whatever takes
        -- it out of available takes the bucket after us and waits for our
        -- commit. One record per sentinel is enough: the fetch that takes it
        -- wakes the queue once, and the table stays small while a queue has
        -- no workers.
        -- (The row is looked at again by its ctid: an updated row's old
        -- version has a non-zero xmax, and a TID scan needs no index the
        -- planner could get wrong.)
        WITH sentinel AS (
            SELECT h.id
            FROM (SELECT j.id, j.ctid, j.kind, j.xmax, errand.fair_workspace(j.metadata) AS ws
                  FROM errand.river_job j
                  WHERE j.state = 'available' AND j.queue = NEW.queue AND j.scheduled_at <= now()
                  ORDER BY j.priority, j.scheduled_at, j.id
                  LIMIT 16) h
            WHERE CASE WHEN h.kind = NEW.kind AND h.id < NEW.id AND h.xmax = '0'::xid
                            AND (NOT v_caps OR (
                                SELECT c.cap IS NULL OR (
                                    SELECT count(*) FROM (
                                        SELECT 1 FROM errand.river_job r
                                        WHERE (r.metadata ->> 'workspace_id')::uuid = h.ws
                                          AND errand.job_status(r.state) = 'processing' AND r.queue = NEW.queue
                                        LIMIT c.cap) running) < c.cap
                                FROM (SELECT CASE WHEN h.ws = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                                                  ELSE coalesce((SELECT CASE WHEN p.concurrency >= 1 THEN least(floor(p.concurrency), 2147483647)::integer END
                                                                 FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
                                                                 WHERE w.id = h.ws), v_default) END AS cap) c))
                       THEN pg_try_advisory_xact_lock(1702322539, (h.id % 1024)::int)
                            AND (SELECT j.xmax FROM errand.river_job j
                                 WHERE j.ctid = h.ctid AND j.id = h.id AND j.state = 'available') = '0'::xid
                       ELSE false END
            LIMIT 1
        ), recorded AS (
            INSERT INTO errand.wakes (sentinel)
            SELECT sentinel.id FROM sentinel
            WHERE NOT EXISTS (SELECT 1 FROM errand.wakes w WHERE w.sentinel = sentinel.id)
        )
        SELECT sentinel.id INTO v_candidate FROM sentinel;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_notify('errand.river_insert', json_build_object('queue', NEW.queue)::text);
    RETURN NULL;
END;
$$;
