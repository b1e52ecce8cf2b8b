-- The fair fetch hands wake-ups over once per fetch, not once per job; it
-- reads less of River's order to find out whether one workspace has all
-- the work; and the capped workspaces' bounds are written without a count
-- per workspace over every chosen job.
--
-- 010's hand-off (docs/enqueue.md, "The rule", step 3) is a row trigger:
-- for every job that leaves available, a PL/pgSQL call takes the job's
-- bucket lock shared and deletes its errand.wakes rows. On River's fetch of
-- hundreds of jobs that is hundreds of calls; with pg_stat_statements on a
-- fetch of 780 jobs, errand.fair_start's lock and update took 26 to 30%
-- less time with the trigger disabled. errand.fair_start (every fair fetch
-- starts its jobs through it) now does the same steps for all its jobs at
-- once, after its update, and the row trigger stands aside while it runs:
--
-- 1. the update, with errand.handoff set to 'fetch' for the statement (the
--    trigger's WHEN clause skips the row then: a setting lookup, no call);
-- 2. the bucket of every job it was asked to start (those another fetch
--    took first included, see below) taken shared: try first; if any is
--    held by an enqueuer that counted on one of these jobs and is
--    committing, wait for all of them, at most lock_timeout 500ms, as the
--    trigger does, and wake the queue anyway if that runs out;
-- 3. then, in a new statement (a fresh snapshot under READ COMMITTED, which
--    sees the enqueuers that were waited for), the jobs' errand.wakes rows
--    deleted, and the queue notified if there were any (or if this
--    transaction is not READ COMMITTED, as the trigger does).
--
-- The proof of docs/enqueue.md holds as it is: each job's bucket is asked
-- for after the update that took it out of available (step 2 after step
-- 1), and its wakes rows are read after the bucket is granted. River's own
-- fetch (ERRAND_FAIRNESS=off), cancels, deletes and every other update still
-- run the row trigger.
--
-- The header of fair_fetch is 024's; its body changes in two places,
-- marked 025: the head of River's order is read 64 jobs deep before the
-- whole fetch's worth (with many busy workspaces it was read, 780 jobs,
-- only to find more than one), and the bounds' upsert counts each
-- workspace's jobs once.

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
    )
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
    RETURNING j.*;
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

-- 010's trigger, standing aside for errand.fair_start's update.
DROP TRIGGER job_handoff ON errand.river_job;
CREATE TRIGGER job_handoff AFTER UPDATE ON errand.river_job
    FOR EACH ROW
    WHEN (OLD.state = 'available'
          AND (NEW.state <> 'available' OR NEW.queue <> OLD.queue OR NEW.kind <> OLD.kind OR NEW.scheduled_at > OLD.scheduled_at)
          AND current_setting('errand.handoff', true) IS DISTINCT FROM 'fetch')
    EXECUTE FUNCTION errand.job_handoff();

-- 024's fair_fetch but for the two changes marked 025 (the head of River's
-- order read 64 jobs deep; the bounds' upsert). Its plan settings (021) go
-- with a CREATE OR REPLACE, so they are repeated.
CREATE OR REPLACE FUNCTION errand.fair_fetch(
    p_queue text,
    p_max integer,
    p_client text,
    p_max_attempted_by integer,
    p_now timestamptz,
    p_kinds text[],
    p_default_cap integer,
    p_candidates integer,
    p_cands uuid[] DEFAULT NULL,
    p_ended_ids bigint[] DEFAULT NULL,
    p_ended_at timestamptz[] DEFAULT NULL
) RETURNS SETOF errand.river_job
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_clock float8;
    v_after uuid;
    v_cands uuid[];
    v_ids bigint[];
    v_ws uuid[];
    v_tags float8[];
    v_full boolean := false;
    v_held_ws uuid[];
    v_vt_ws uuid[];
    v_vt float8[];
    v_cap integer;
    v_scanned boolean;
    v_run_ws uuid[];
    v_run_n bigint[];
    v_uncapped uuid[];
    v_nws bigint;
    v_one uuid;
    v_running bigint;
    v_room integer;
    v_head integer := least(p_max, 64);
BEGIN
    -- Whether a cap held back a workspace's jobs: River fetches again when
    -- a worker frees only after a full fetch, so errand's pilot reads this
    -- (on the same connection) and wakes the queue soon after.
    -- Both settings start empty: a connection's last fetch must not speak
    -- for this one.
    IF p_max <= 0 THEN
        PERFORM set_config('errand.fair_held', 'false', false), set_config('errand.fair_held_ws', '', false),
                set_config('errand.fair_cands', '', false);
        RETURN;
    END IF;
    -- (One statement: at idle a fetch is a handful of them, each a round
    -- through the executor.)
    PERFORM set_config('errand.fair_held', 'false', false), set_config('errand.fair_held_ws', '', false),
            set_config('errand.fair_cands', '', false),
            pg_advisory_xact_lock(1702322541, hashtext(p_queue)); -- "fair"

    -- One workspace with work and no cap: nothing to share, so River's own
    -- statement (the queue's order is the workspace's), no bookkeeping. Its
    -- virtual time stays as it was: a workspace that arrives next starts
    -- level with it. The head of River's order is read first (025: its
    -- first 64 jobs, not the whole fetch's worth, which with many busy
    -- workspaces was read only to find more than one): when all it finds is
    -- one workspace's and it is not all of the backlog's, two probes of the
    -- fair index tell whether any other workspace has work, and if none
    -- has, that workspace's jobs are read up to the whole fetch. Skipped
    -- when the caller kept a list of many busy workspaces.
    IF p_cands IS NULL THEN
        -- With the cap of the first workspace found (used when it is alone).
        SELECT a.ids, a.nws, a.one,
               CASE WHEN a.one <> '00000000-0000-0000-0000-000000000000'::uuid THEN
                   coalesce((SELECT p.concurrency FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
                             WHERE w.id = a.one), nullif(p_default_cap, 0)) END
        INTO v_ids, v_nws, v_one, v_cap
        FROM (SELECT array_agg(f.id ORDER BY f.priority, f.scheduled_at, f.id) AS ids, count(DISTINCT f.ws) AS nws,
                     min(f.ws::text)::uuid AS one
              FROM (SELECT l.id, l.priority, l.scheduled_at, errand.fair_workspace(l.metadata) AS ws
                    FROM errand.river_job l
                    WHERE l.state = 'available' AND l.queue = p_queue AND l.scheduled_at <= v_now
                      AND (p_kinds IS NULL OR l.kind = ANY(p_kinds))
                    ORDER BY l.priority, l.scheduled_at, l.id
                    LIMIT v_head) f) a;
        IF v_nws = 0 THEN
            RETURN;
        END IF;
        IF v_nws = 1
           AND (cardinality(v_ids) < v_head OR (
                    -- ordered as the fair index is, so each is one probe
                    (SELECT errand.fair_workspace(o.metadata) FROM errand.river_job o
                     WHERE o.state IS NOT DISTINCT FROM 'available' AND o.queue = p_queue AND errand.fair_workspace(o.metadata) > v_one
                     ORDER BY 1 LIMIT 1) IS NULL
                    AND (SELECT errand.fair_workspace(o.metadata) FROM errand.river_job o
                         WHERE o.state IS NOT DISTINCT FROM 'available' AND o.queue = p_queue AND errand.fair_workspace(o.metadata) < v_one
                         ORDER BY 1 DESC LIMIT 1) IS NULL)) THEN
            IF cardinality(v_ids) = v_head AND v_head < p_max THEN
                -- (025) The head was all one workspace's, and so is the
                -- backlog: its jobs in River's order, up to the whole fetch.
                SELECT array_agg(f.id ORDER BY f.priority, f.scheduled_at, f.id) INTO v_ids
                FROM (SELECT l.id, l.priority, l.scheduled_at FROM errand.river_job l
                      WHERE l.state IS NOT DISTINCT FROM 'available' AND l.queue = p_queue
                        AND errand.fair_workspace(l.metadata) = v_one
                        AND l.scheduled_at <= v_now
                        AND (p_kinds IS NULL OR l.kind = ANY(p_kinds))
                      ORDER BY l.priority, l.scheduled_at, l.id
                      LIMIT p_max) f;
            END IF;
            IF v_cap IS NULL THEN
                -- Its jobs are not counted, so its bound goes.
                RETURN QUERY
                WITH gone AS (DELETE FROM errand.fair_running fr WHERE fr.queue = p_queue AND fr.workspace_id = v_one)
                SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, v_now);
                RETURN;
            END IF;
            -- Capped, alone, and its running bound leaves room for all of
            -- them: the bound grows by as many, nothing else to decide.
            UPDATE errand.fair_running fr SET running = fr.running + cardinality(v_ids)
            WHERE fr.queue = p_queue AND fr.workspace_id = v_one AND v_cap - fr.running >= cardinality(v_ids);
            IF FOUND THEN
                RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, v_now);
                RETURN;
            END IF;
            -- (024) Near its cap: counted exactly here, as the shared pass
            -- below would (ended attempts skipped), without that pass's
            -- candidate scan, budgets and virtual times, which decide
            -- nothing for one workspace. It takes River's order up to its
            -- room.
            v_running := (SELECT count(*) FROM errand.river_job j
                          WHERE j.state = 'running' AND j.queue = p_queue AND errand.fair_workspace(j.metadata) = v_one)
                       - (SELECT count(*)
                          FROM unnest(p_ended_ids, p_ended_at) AS e(id, attempted_at)
                          CROSS JOIN LATERAL (
                              SELECT 1 FROM errand.river_job j
                              WHERE j.id = e.id AND j.attempted_at = e.attempted_at
                                AND j.state::text = 'running' AND j.queue = p_queue
                                AND errand.fair_workspace(j.metadata) = v_one
                              OFFSET 0) j);
            v_room := least(greatest(v_cap - v_running, 0), p_max)::integer;
            IF v_room < p_max AND v_room <= cardinality(v_ids) THEN
                -- it got all its room and may have more: see the pilot
                PERFORM set_config('errand.fair_held', 'true', false),
                        set_config('errand.fair_held_ws', ARRAY[v_one]::text, false);
            END IF;
            v_ids := v_ids[1:v_room];
            INSERT INTO errand.fair_running AS fr (queue, workspace_id, running)
            VALUES (p_queue, v_one, v_running + coalesce(cardinality(v_ids), 0))
            ON CONFLICT (queue, workspace_id) DO UPDATE SET running = excluded.running;
            IF coalesce(cardinality(v_ids), 0) > 0 THEN
                RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, v_now);
            END IF;
            RETURN;
        END IF;
        v_ids := NULL;
    END IF;

    SELECT q.vtime, q.next_after INTO v_clock, v_after FROM errand.fair_queues q WHERE q.queue = p_queue;
    v_clock := coalesce(v_clock, 0);

    -- 2. Candidates: the caller's (the pilot keeps a fresh list for a few
    -- milliseconds when many workspaces have work), or a scan.
    v_scanned := p_cands IS NULL;
    v_cands := coalesce(p_cands, errand.fair_candidates(p_queue, v_after, p_candidates));
    IF cardinality(v_cands) = 0 AND v_scanned THEN
        RETURN;
    END IF;

    -- 3 and 4, with share budgets, then (if short) with the whole room.
    LOOP
        WITH cand AS (
            SELECT c.ws, c.pos FROM unnest(v_cands) WITH ORDINALITY AS c(ws, pos)
        ), info AS (
            SELECT c.ws, c.pos,
                   coalesce(p.weight, 1) AS weight,
                   CASE WHEN c.ws = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                        ELSE coalesce(p.concurrency, nullif(p_default_cap, 0)) END AS cap,
                   greatest(coalesce(s.vtime, v_clock), v_clock) AS start,
                   sum(coalesce(p.weight, 1)) OVER () AS total_weight
            FROM cand c
            LEFT JOIN errand.workspaces w ON w.id = c.ws
            LEFT JOIN errand.plans p ON p.plan = w.plan
            LEFT JOIN errand.fair_shares s ON s.queue = p_queue AND s.workspace_id = c.ws
        ), bound AS (
            -- Counted when the bound could hold back what this pass may
            -- give the workspace: its share in the first pass (so of 100
            -- capped workspaces only those near their caps are counted),
            -- all of p_max in the second.
            SELECT i.ws, i.cap, fr.running AS bound,
                   (fr.running IS NULL OR i.cap - fr.running < CASE
                       WHEN v_full THEN p_max
                       ELSE least(p_max, ceil(p_max::numeric * i.weight / i.total_weight)::integer + 1) END) AS recount
            FROM info i
            LEFT JOIN errand.fair_running fr ON fr.queue = p_queue AND fr.workspace_id = i.ws
            WHERE i.cap IS NOT NULL
        ), exact AS (
            -- The running jobs, less those of them whose attempt has ended
            -- (024): one primary key probe per ended attempt. (As an anti
            -- join, or a lateral join the planner may flatten, it was
            -- planned on river_job's statistics as a loop over the whole
            -- list for every running job: 1.4 to 1.9 million comparisons
            -- for 1,900 running and 1,000 ended. OFFSET 0 keeps the lateral
            -- subquery a probe, and the state tested as text, which no
            -- index carries, makes it a probe of the primary key rather
            -- than a walk of River's fetch index for each.)
            SELECT c.ws, sum(c.n) AS n FROM (
                SELECT errand.fair_workspace(j.metadata) AS ws, count(*) AS n
                FROM errand.river_job j
                WHERE j.state = 'running' AND j.queue = p_queue
                  AND EXISTS (SELECT 1 FROM bound WHERE bound.recount)
                  AND errand.fair_workspace(j.metadata) IN (SELECT b.ws FROM bound b WHERE b.recount)
                GROUP BY 1
                UNION ALL
                SELECT errand.fair_workspace(j.metadata), -count(*)
                FROM unnest(p_ended_ids, p_ended_at) AS e(id, attempted_at)
                CROSS JOIN LATERAL (
                    SELECT j.metadata FROM errand.river_job j
                    WHERE j.id = e.id AND j.attempted_at = e.attempted_at
                      AND j.state::text = 'running' AND j.queue = p_queue
                    OFFSET 0) j
                WHERE EXISTS (SELECT 1 FROM bound WHERE bound.recount)
                  AND errand.fair_workspace(j.metadata) IN (SELECT b.ws FROM bound b WHERE b.recount)
                GROUP BY 1) c
            GROUP BY c.ws
        ), running AS (
            SELECT b.ws, CASE WHEN b.recount THEN coalesce(e.n, 0) ELSE b.bound END AS n
            FROM bound b LEFT JOIN exact e ON e.ws = b.ws
        ), room AS (
            SELECT i.*, CASE WHEN i.cap IS NULL THEN p_max
                             ELSE least(p_max, greatest(i.cap - coalesce(r.n, 0), 0)::integer) END AS room
            FROM info i LEFT JOIN running r ON r.ws = i.ws
        ), shares AS (
            SELECT r.*, CASE WHEN v_full THEN r.room
                             ELSE least(r.room, ceil(p_max::numeric * r.weight / sum(r.weight) OVER ())::integer + 1) END AS budget
            FROM room r WHERE r.room > 0
        ), budget AS (
            -- A workspace's first tag is its start, so the p_max smallest
            -- tags come from the p_max workspaces furthest behind at most:
            -- only those are read (30 of 100 busy workspaces for 30 free
            -- workers). The second pass reads them all.
            SELECT * FROM (
                SELECT s.*, row_number() OVER (ORDER BY s.start, s.pos) AS turn
                FROM shares s) b
            WHERE v_full OR b.turn <= p_max
        ), picked AS (
            SELECT b.ws, b.pos, b.weight, j.id,
                   b.start + (row_number() OVER (PARTITION BY b.ws ORDER BY j.priority, j.scheduled_at, j.id) - 1)::float8 / b.weight AS tag
            FROM budget b CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.scheduled_at FROM errand.river_job j
                WHERE j.state IS NOT DISTINCT FROM 'available' AND j.queue = p_queue
                  AND errand.fair_workspace(j.metadata) = b.ws
                  AND j.scheduled_at <= v_now
                  AND (p_kinds IS NULL OR j.kind = ANY(p_kinds))
                ORDER BY j.priority, j.scheduled_at, j.id
                LIMIT b.budget
            ) j
        ), chosen AS (
            SELECT * FROM picked ORDER BY tag, pos, id LIMIT p_max
        ), held AS (
            -- capped workspaces that got all their room (and may have more)
            SELECT array_agg(r.ws) AS ws
            FROM room r
            WHERE r.cap IS NOT NULL AND r.room < p_max
              AND r.room <= (SELECT count(*) FROM chosen c WHERE c.ws = r.ws)
        ), vt AS (
            -- (024) the winners' next virtual times: each one's largest
            -- tag + 1 / weight (the weight already read, not joined again)
            SELECT c.ws, max(c.tag) + 1.0 / max(c.weight) AS vtime FROM chosen c GROUP BY c.ws
        )
        SELECT array_agg(id), array_agg(ws), array_agg(tag), (SELECT held.ws FROM held),
               (SELECT array_agg(r.ws) FROM running r), (SELECT array_agg(r.n) FROM running r),
               (SELECT array_agg(i.ws) FROM info i WHERE i.cap IS NULL),
               (SELECT array_agg(vt.ws ORDER BY vt.ws) FROM vt), (SELECT array_agg(vt.vtime ORDER BY vt.ws) FROM vt)
        INTO v_ids, v_ws, v_tags, v_held_ws, v_run_ws, v_run_n, v_uncapped, v_vt_ws, v_vt FROM chosen;
        EXIT WHEN coalesce(cardinality(v_ids), 0) >= p_max;
        IF NOT v_full THEN
            v_full := true;
        ELSIF NOT v_scanned THEN
            -- The caller's list could not fill the fetch: look again.
            v_cands := errand.fair_candidates(p_queue, v_after, p_candidates);
            v_scanned := true;
            v_full := false;
        ELSE
            EXIT;
        END IF;
    END LOOP;
    PERFORM set_config('errand.fair_cands', v_cands::text, false);
    IF v_held_ws IS NOT NULL THEN
        PERFORM set_config('errand.fair_held', 'true', false),
                set_config('errand.fair_held_ws', v_held_ws::text, false);
    END IF;
    -- The capped workspaces' bounds, this fetch's jobs included; the
    -- uncapped ones served now are not counted, so their bounds go. (025:
    -- this fetch's jobs are counted per workspace once, not once for every
    -- capped workspace over all of them: 100 workspaces and 780 jobs were
    -- 2.3 ms of the fetch, now 0.7.)
    IF v_run_ws IS NOT NULL THEN
        INSERT INTO errand.fair_running AS fr (queue, workspace_id, running)
        SELECT p_queue, r.ws, r.n + coalesce(c.n, 0)
        FROM unnest(v_run_ws, v_run_n) AS r(ws, n)
        LEFT JOIN (SELECT c.ws, count(*) AS n FROM unnest(v_ws) AS c(ws) GROUP BY c.ws) c ON c.ws = r.ws
        ON CONFLICT (queue, workspace_id) DO UPDATE SET running = excluded.running;
    END IF;
    IF v_uncapped IS NOT NULL AND v_ids IS NOT NULL THEN
        DELETE FROM errand.fair_running fr
        WHERE fr.queue = p_queue AND fr.workspace_id = ANY(v_uncapped) AND fr.workspace_id = ANY(v_ws);
    END IF;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    -- The winners' virtual times: each one's largest tag + 1 / weight; the
    -- queue's clock: the largest tag served.
    INSERT INTO errand.fair_shares AS s (queue, workspace_id, vtime)
    SELECT p_queue, t.ws, t.vtime FROM unnest(v_vt_ws, v_vt) AS t(ws, vtime)
    ON CONFLICT (queue, workspace_id) DO UPDATE SET vtime = excluded.vtime;
    SELECT max(t) INTO v_clock FROM unnest(v_tags) t;
    INSERT INTO errand.fair_queues AS q (queue, vtime, next_after)
    VALUES (p_queue, v_clock, CASE WHEN cardinality(v_cands) >= p_candidates THEN v_cands[cardinality(v_cands)] END)
    ON CONFLICT (queue) DO UPDATE SET vtime = greatest(q.vtime, excluded.vtime), next_after = excluded.next_after;
    -- Workspaces at or behind the clock need no row: they start at it.
    DELETE FROM errand.fair_shares s WHERE s.queue = p_queue AND s.vtime <= v_clock;

    RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, v_now);
END;
$$;
ALTER FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[], bigint[], timestamptz[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
