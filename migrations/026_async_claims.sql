-- The fair fetch's claim commits without waiting for its WAL to reach the
-- disk, unless a job it starts is on its last attempt.
--
-- At idle, a job's INSERT-to-start time is two commits that each wait for a
-- WAL flush: the app's INSERT and the fetch that marks the job running
-- (instrumented, 2026-12-03: of a p50 of 2.5 ms, the INSERT's round trip
-- 1.2 ms, the fetch's 1.0 ms, most of both the flush). The app's commit
-- must be durable; the fetch's need not be, for every job but one on its
-- last attempt. synchronous_commit = off for the fetch's transaction makes
-- the claim visible at once, as always, and durable within
-- wal_writer_delay (or with the next synchronous commit, whose flush
-- covers all WAL before it: the job's completion's included). What only a
-- crash of PostgreSQL (or a failover) in that window can do is lose the
-- claim: the job is available again with the attempt number it had, and
-- runs again, while the worker that had it may still be running it. That is
-- what a retry is, and:
--
-- - the database effects of a job still apply once: a completion commits
--   them only while its row is running with the attempt and replica it
--   started with (006), and a row goes from running to completed once, so
--   of two runs of one attempt at most one completes (tested:
--   TestALostClaimAppliesEffectsOnce);
-- - a job on its last attempt (max_attempts 1 among them: "never run
--   twice") is never claimed this way: a fetch that starts one commits as
--   before, with the flush;
-- - the attempt that ran and was forgotten does not count towards
--   max_attempts: after such a crash a job may start once more than its
--   attempts say, never on its last attempt twice.
--
-- River's own fetch (ERRAND_FAIRNESS=off) is not changed. docs/enqueue.md,
-- "The fetch's commit".
--
-- 025's fair_start with one change, marked 026. Its plan settings (021) go
-- with a CREATE OR REPLACE, so they are repeated.

CREATE OR REPLACE FUNCTION errand.fair_start(p_ids bigint[], p_client text, p_max_attempted_by integer, p_now timestamptz)
RETURNS SETOF errand.river_job
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_timeout text;
    v_timed_out boolean := false;
    v_woken bigint[];
BEGIN
    PERFORM set_config('errand.handoff', 'fetch', true);
    RETURN QUERY
    WITH locked AS (
        SELECT l.id FROM errand.river_job l
        WHERE l.id = ANY(p_ids) AND l.state::text = 'available' -- by id only (see 020)
        FOR UPDATE SKIP LOCKED
    ), started AS (
        UPDATE errand.river_job j
        SET state = 'running',
            attempt = j.attempt + 1,
            attempted_at = p_now,
            attempted_by = array_append(
                CASE WHEN array_length(j.attempted_by, 1) >= p_max_attempted_by
                THEN j.attempted_by[array_length(j.attempted_by, 1) + 2 - p_max_attempted_by:]
                ELSE j.attempted_by
                END,
                p_client)
        FROM locked
        WHERE j.id = locked.id
        RETURNING j.*
    ), claim AS (
        -- (026) No job it starts is on its last attempt: the claim
        -- commits without waiting for the WAL flush. One on its last
        -- attempt, or none started: the setting is left as it was.
        SELECT CASE WHEN NOT bool_or(s.attempt >= s.max_attempts)
                    THEN set_config('synchronous_commit', 'off', true) END AS async
        FROM started s
    )
    SELECT started.* FROM started CROSS JOIN claim;
    PERFORM set_config('errand.handoff', '', true);

    -- The hand-off, for all of them at once, over every id asked for: the
    -- ones another fetch took or locked first included. That is safe: a
    -- wakes row is deleted only after its job's bucket is granted, so the
    -- enqueuer that wrote it has committed, and this transaction then wakes
    -- the queue itself, at its commit, after the enqueuer's; the fetch that
    -- takes such a job then finds no row, and its wake-up is this one.
    IF NOT (SELECT bool_and(pg_try_advisory_xact_lock_shared(1702322539, b.bucket))
            FROM (SELECT DISTINCT (i % 1024)::int AS bucket FROM unnest(p_ids) AS i) b) THEN
        v_timeout := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '500ms', true);
            PERFORM pg_advisory_xact_lock_shared(1702322539, b.bucket)
            FROM (SELECT DISTINCT (i % 1024)::int AS bucket FROM unnest(p_ids) AS i ORDER BY 1) b;
            PERFORM set_config('lock_timeout', v_timeout, true);
        EXCEPTION WHEN lock_not_available THEN
            -- (the block's own changes, lock_timeout's included, are undone)
            v_timed_out := true;
        END;
    END IF;
    -- A new statement: under READ COMMITTED it sees the enqueuers waited for.
    WITH gone AS (DELETE FROM errand.wakes w WHERE w.sentinel = ANY(p_ids) RETURNING w.sentinel)
    SELECT array_agg(gone.sentinel) INTO v_woken FROM gone;
    IF v_timed_out OR current_setting('transaction_isolation') <> 'read committed' THEN
        v_woken := p_ids;
    END IF;
    IF v_woken IS NOT NULL THEN
        PERFORM pg_notify('errand.river_insert', json_build_object('queue', q.queue)::text)
        FROM (SELECT DISTINCT j.queue FROM errand.river_job j WHERE j.id = ANY(v_woken)) q;
    END IF;
END;
$$;
ALTER FUNCTION errand.fair_start(bigint[], text, integer, timestamptz)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
