-- The fair fetch shares a queue's workers by what each workspace is
-- running, not by the jobs it has started.
--
-- Before this migration the shared pass (step 4 of docs/fairness.md) ranked each
-- workspace's next jobs by its virtual time, which went up by 1 / weight
-- per job started, and gave each a budget of its weighted share of the
-- fetch's free workers. That shares job starts: a workspace whose jobs are
-- slow (or sleep in their worker over a rate limit) kept its workers and
-- took its share of every worker another workspace's quick jobs freed. With
-- 20 workers, one workspace's jobs never ending and another's instant, the
-- slow one held 10, 15, 17, 19, then all 20 workers after six fetches, and
-- the other none.
--
-- Now the k-th job a fetch gives a workspace ranks by
-- (running + k - 1) / weight, its virtual-time tag breaking ties (so
-- workspaces running equally still take turns, round robin, weighted):
-- water-filling, the free workers going first to the workspaces running
-- least for their weight. "running" is the workspace's jobs in River's
-- running state in this queue on every replica, less the attempts whose
-- work has ended on this one (024), counted once per fetch under the
-- queue's lock. So the share is of the queue's running jobs plus this
-- fetch's free workers: among the workspaces with work waiting, no job goes
-- to a workspace while another's (running / weight) is lower, and a
-- workspace holding more than its share gets nothing until the others
-- catch up. It is work-conserving as before: a workspace alone, or the
-- only one with work left, takes every free worker (the second pass, or
-- the single-workspace path, which is unchanged), and nothing is taken back
-- from a workspace that took idle workers.
--
-- errand.fair_running is not what the shares read: it is a bound for caps
-- that only drifts up (finished jobs do not lower it until a recount), so a
-- quick workspace's bound would climb and lose it its share. The count
-- above is exact, and the caps now use it too (their room is cap less that
-- count in every shared fetch; before, only near the cap). The bound is
-- still written for the capped workspaces, from the exact count, for the
-- single-workspace path, which still reads it.
--
-- The count is a function of its own, errand.fair_running_counts, for one
-- setting (bitmap scans off: see it). Only the shared pass changes; the
-- header, the single-workspace path and everything after the pass are
-- 025's. Its plan settings (021) go with a CREATE OR REPLACE, so they are
-- repeated.

-- A queue's running jobs per workspace, less the attempts whose work has
-- ended on this replica (024; the lateral subquery stays a probe of the
-- primary key, see 024's "exact"). Its own function for one setting:
-- every job leaves an entry in River's index under state 'running' when it
-- finishes, dead until vacuum, and a bitmap scan (the planner's choice for
-- the few live rows it expects) visits the heap for every one of them: 645
-- ms a fetch once a million had gathered. A plain index scan marks the
-- dead entries it meets (LP_DEAD) and later scans pass them without the
-- heap, so bitmap scans are off here, and only here.
CREATE FUNCTION errand.fair_running_counts(p_queue text, p_ended_ids bigint[], p_ended_at timestamptz[])
RETURNS TABLE (ws uuid, n bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.ws, sum(c.n)::bigint FROM (
        SELECT errand.fair_workspace(j.metadata) AS ws, count(*) AS n
        FROM errand.river_job j
        WHERE j.state = 'running' AND j.queue = p_queue
        GROUP BY 1
        UNION ALL
        SELECT errand.fair_workspace(j.metadata), -count(*)
        FROM unnest(p_ended_ids, p_ended_at) AS e(id, attempted_at)
        CROSS JOIN LATERAL (
            SELECT j.metadata FROM errand.river_job j
            WHERE j.id = e.id AND j.attempted_at = e.attempted_at
              AND j.state::text = 'running' AND j.queue = p_queue
            OFFSET 0) j
        GROUP BY 1) c
    GROUP BY c.ws HAVING sum(c.n) > 0;
END;
$$;
ALTER FUNCTION errand.fair_running_counts(text, bigint[], timestamptz[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off;

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
    v_cnt_ws uuid[];
    v_cnt_n bigint[];
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

    -- (030) What each workspace runs in the queue, on every replica (see
    -- errand.fair_running_counts), counted once per fetch under the queue's
    -- lock: exact for the caps as 024's count was (only a fetch makes a job
    -- running), and what the workers are shared by (see the header).
    SELECT array_agg(r.ws), array_agg(r.n) INTO v_cnt_ws, v_cnt_n
    FROM errand.fair_running_counts(p_queue, p_ended_ids, p_ended_at) r;

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
                   coalesce(rn.n, 0) AS running
            FROM cand c
            LEFT JOIN errand.workspaces w ON w.id = c.ws
            LEFT JOIN errand.plans p ON p.plan = w.plan
            LEFT JOIN errand.fair_shares s ON s.queue = p_queue AND s.workspace_id = c.ws
            LEFT JOIN unnest(v_cnt_ws, v_cnt_n) AS rn(ws, n) ON rn.ws = c.ws
        ), room AS (
            SELECT i.*, CASE WHEN i.cap IS NULL THEN p_max
                             ELSE least(p_max, greatest(i.cap - i.running, 0)::integer) END AS room
            FROM info i
        ), shares AS (
            -- (030) Water-filling: the k-th job a workspace gets here ranks
            -- by (running + k - 1) / weight, so free workers go first to the
            -- workspaces running least for their weight. None gets more than
            -- ceil((R + p_max) * weight / W) - running, R and W the running
            -- jobs and weights of the workspaces with room (the level that
            -- fills p_max can be no higher), plus one for ties: that is the
            -- first pass's budget; the second reads up to the whole room.
            SELECT r.*, CASE WHEN v_full THEN r.room
                             ELSE least(r.room, greatest(ceil((sum(r.running) OVER () + p_max)::numeric * r.weight
                                                              / sum(r.weight) OVER ())::bigint - r.running, 0)::integer + 1) END AS budget
            FROM room r WHERE r.room > 0
        ), budget AS (
            -- A workspace's first rank is running / weight (its first tag,
            -- the tie-break, is its start), so the p_max smallest ranks come
            -- from the p_max workspaces with the smallest first ranks at
            -- most: only those are read (30 of 100 busy workspaces for 30
            -- free workers). The second pass reads them all.
            SELECT * FROM (
                SELECT s.*, row_number() OVER (ORDER BY s.running::float8 / s.weight, s.start, s.pos) AS turn
                FROM shares s) b
            WHERE v_full OR b.turn <= p_max
        ), picked AS (
            SELECT b.ws, b.pos, b.weight, j.id,
                   (b.running + row_number() OVER (PARTITION BY b.ws ORDER BY j.priority, j.scheduled_at, j.id) - 1)::float8 / b.weight AS rank,
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
            SELECT * FROM picked ORDER BY rank, tag, pos, id LIMIT p_max
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
               (SELECT array_agg(i.ws) FROM info i WHERE i.cap IS NOT NULL),
               (SELECT array_agg(i.running) FROM info i WHERE i.cap IS NOT NULL),
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
