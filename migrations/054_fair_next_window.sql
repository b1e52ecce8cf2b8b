-- The fair fetch looks past a window of candidates that can start nothing.
--
-- When more than p_candidates workspaces (errand's pilot asks for 1,000)
-- have available jobs in a queue, a fetch reads a window of them, from
-- where the last one left off (errand.fair_queues.next_after). The window moved on only after
-- a fetch that started something: a window whose every workspace was at its
-- cap (or whose jobs were all of kinds this replica does not work) started
-- nothing, and every later fetch read the same window again, so workers sat
-- idle while workspaces beyond it, with room and work, waited until a job
-- in the window ended (minutes, with long jobs). A review reproduced it with
-- a window cut to 3 candidates: three workspaces at their cap of 2, two more
-- with 10 jobs each, and two fetches that started nothing.
--
-- Now a fetch that finds nothing startable in a full window reads the next
-- one at once, up to four more windows (5,000 workspaces) per fetch, and
-- never past the first workspace it looked at (the candidates wrap round,
-- so with 1,500 workspaces at their caps two windows cover them all), and
-- remembers where it stopped, so the next fetch goes on from there; the
-- workspaces held back in every window looked at are named to the pilot.
-- A fetch that started something behaves as before (the window moves on
-- after it). Nothing else changes: the body is 045's.

CREATE OR REPLACE FUNCTION errand.fair_fetch_counted(
    p_queue text,
    p_max integer,
    p_client text,
    p_max_attempted_by integer,
    p_now timestamptz,
    p_kinds text[],
    p_default_cap integer,
    p_candidates integer,
    p_cands uuid[] DEFAULT NULL,
    p_working_ws uuid[] DEFAULT NULL,
    p_working_n integer[] DEFAULT NULL
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
    v_nws bigint;
    v_one uuid;
    v_running bigint;
    v_room integer;
    v_head integer := least(p_max, 64);
    v_cnt_ws uuid[];
    v_cnt_n bigint[];
    v_counted boolean := false;
    v_windows integer := 0;
    v_held_before uuid[];
    v_start uuid;
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

    -- (033) What each workspace runs in the queue: the pilots' own counts
    -- (this caller's, and every other replica's as of its last fetch), read
    -- under the lock. A caller that passes none (tests, psql) counts River's
    -- running jobs instead, when it needs them.
    -- (The other replicas' rows, p_client's own counts taken from the
    -- arguments, fresher than its row. Written out here, not as a function
    -- of its own: a SQL function with settings is planned on every call,
    -- 0.6 ms a fetch.)
    IF p_working_ws IS NOT NULL THEN
        SELECT array_agg(c.ws), array_agg(c.n) INTO v_cnt_ws, v_cnt_n
        FROM (SELECT u.ws, sum(u.n)::bigint AS n
              FROM (SELECT x.ws, x.n
                    FROM errand.fair_working w CROSS JOIN LATERAL unnest(w.workspaces, w.counts) AS x(ws, n)
                    WHERE w.queue = p_queue AND w.client <> p_client AND NOT w.recount
                    UNION ALL
                    -- (034) a client that keeps no counts: its jobs, counted now
                    SELECT c.ws, c.n
                    FROM errand.fair_working w CROSS JOIN LATERAL errand.fair_client_counts(w.queue, w.client, NULL, NULL) AS c(ws, n)
                    WHERE w.queue = p_queue AND w.client <> p_client AND w.recount
                    UNION ALL
                    SELECT x.ws, x.n FROM unnest(p_working_ws, p_working_n) AS x(ws, n)) u
              GROUP BY u.ws
              HAVING sum(u.n) > 0) c;
        v_counted := true;
    END IF;

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
                   coalesce((SELECT CASE WHEN p.concurrency >= 1 THEN least(floor(p.concurrency), 2147483647)::integer END
                             FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
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
            PERFORM errand.fair_working_put(p_queue, p_client, p_working_ws, p_working_n, NULL);
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
                PERFORM errand.fair_working_put(p_queue, p_client, p_working_ws, p_working_n,
                                                array_fill(v_one, ARRAY[coalesce(cardinality(v_ids), 0)]));
                RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, coalesce(p_now, clock_timestamp()));
                RETURN;
            END IF;
            -- Capped and alone: River's order up to its room, its cap less
            -- what it runs (033: the counts above; 024's bound is gone).
            IF NOT v_counted THEN
                SELECT array_agg(c.ws), array_agg(c.n) INTO v_cnt_ws, v_cnt_n FROM errand.fair_running_counts(p_queue) c;
                v_counted := true;
            END IF;
            v_running := coalesce((SELECT r.n FROM unnest(v_cnt_ws, v_cnt_n) AS r(ws, n) WHERE r.ws = v_one), 0);
            v_room := least(greatest(v_cap - v_running, 0), p_max)::integer;
            IF v_room < p_max AND v_room <= cardinality(v_ids) THEN
                -- it got all its room and may have more: see the pilot
                PERFORM set_config('errand.fair_held', 'true', false),
                        set_config('errand.fair_held_ws', ARRAY[v_one]::text, false);
            END IF;
            v_ids := v_ids[1:v_room];
            PERFORM errand.fair_working_put(p_queue, p_client, p_working_ws, p_working_n,
                                            array_fill(v_one, ARRAY[coalesce(cardinality(v_ids), 0)]));
            IF coalesce(cardinality(v_ids), 0) > 0 THEN
                RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, coalesce(p_now, clock_timestamp()));
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
        PERFORM errand.fair_working_put(p_queue, p_client, p_working_ws, p_working_n, NULL);
        RETURN;
    END IF;

    -- What each workspace runs in the queue (above), what the workers are
    -- shared by and the caps are checked against (see the header).
    IF NOT v_counted THEN
        SELECT array_agg(r.ws), array_agg(r.n) INTO v_cnt_ws, v_cnt_n FROM errand.fair_running_counts(p_queue) r;
        v_counted := true;
    END IF;

    -- 3 and 4, with share budgets, then (if short) with the whole room.
    LOOP
        WITH cand AS (
            SELECT c.ws, c.pos FROM unnest(v_cands) WITH ORDINALITY AS c(ws, pos)
        ), info AS (
            SELECT c.ws, c.pos,
                   least(greatest(coalesce(p.weight, 1), 1), 1000) AS weight,
                   CASE WHEN c.ws = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                        ELSE coalesce(CASE WHEN p.concurrency >= 1 THEN least(floor(p.concurrency), 2147483647)::integer END,
                                      nullif(p_default_cap, 0)) END AS cap,
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
            FROM room r LEFT JOIN (SELECT c.ws, count(*) AS n FROM chosen c GROUP BY c.ws) k ON k.ws = r.ws
            WHERE r.cap IS NOT NULL AND r.room < p_max
              AND r.room <= coalesce(k.n, 0)
        ), vt AS (
            -- (024) the winners' next virtual times: each one's largest
            -- tag + 1 / weight (the weight already read, not joined again)
            SELECT c.ws, max(c.tag) + 1.0 / max(c.weight) AS vtime FROM chosen c GROUP BY c.ws
        )
        SELECT array_agg(id), array_agg(ws), array_agg(tag), (SELECT held.ws FROM held),
               (SELECT array_agg(vt.ws ORDER BY vt.ws) FROM vt), (SELECT array_agg(vt.vtime ORDER BY vt.ws) FROM vt)
        INTO v_ids, v_ws, v_tags, v_held_ws, v_vt_ws, v_vt FROM chosen;
        EXIT WHEN coalesce(cardinality(v_ids), 0) >= p_max;
        IF NOT v_full THEN
            v_full := true;
        ELSIF NOT v_scanned THEN
            -- The caller's list could not fill the fetch: look again.
            v_cands := errand.fair_candidates(p_queue, v_after, p_candidates);
            v_scanned := true;
            v_full := false;
        ELSIF v_ids IS NULL AND cardinality(v_cands) >= p_candidates AND v_windows < 4
              -- errand.fair_candidates wraps around to the first
              -- workspaces: a window that holds the first one looked at
              -- has come round, and every workspace has been looked at.
              AND (v_windows = 0 OR NOT v_start = ANY (v_cands)) THEN
            -- (054) Nothing startable among a full window of candidates
            -- (each at its cap, or with jobs of kinds this replica does not
            -- work), and workspaces beyond it: the next window, now. The
            -- window moved on only after a fetch that started something,
            -- so workers sat idle while workspaces past the first 1,000
            -- with room waited for a job in the window to end.
            v_held_before := v_held_before || v_held_ws;
            v_start := coalesce(v_start, v_cands[1]);
            v_after := v_cands[cardinality(v_cands)];
            v_cands := errand.fair_candidates(p_queue, v_after, p_candidates);
            v_windows := v_windows + 1;
            v_full := false;
        ELSE
            EXIT;
        END IF;
    END LOOP;
    -- The capped workspaces held back in every window looked at.
    IF v_held_before IS NOT NULL THEN
        v_held_ws := ARRAY(SELECT DISTINCT h FROM unnest(v_held_before || v_held_ws) AS h);
    END IF;
    PERFORM set_config('errand.fair_cands', v_cands::text, false);
    IF v_held_ws IS NOT NULL THEN
        PERFORM set_config('errand.fair_held', 'true', false),
                set_config('errand.fair_held_ws', v_held_ws::text, false);
    END IF;
    PERFORM errand.fair_working_put(p_queue, p_client, p_working_ws, p_working_n, v_ws);
    IF v_ids IS NULL THEN
        IF v_windows > 0 THEN
            -- (054) The next fetch goes on past the windows looked at.
            INSERT INTO errand.fair_queues AS q (queue, vtime, next_after)
            VALUES (p_queue, v_clock, CASE WHEN cardinality(v_cands) >= p_candidates THEN v_cands[cardinality(v_cands)] END)
            ON CONFLICT (queue) DO UPDATE SET next_after = excluded.next_after;
        END IF;
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

    RETURN QUERY SELECT * FROM errand.fair_start(v_ids, p_client, p_max_attempted_by, coalesce(p_now, clock_timestamp()));
END;
$$;
ALTER FUNCTION errand.fair_fetch_counted(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[], uuid[], integer[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
