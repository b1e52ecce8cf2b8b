-- A cap counts the jobs that are working, not the ones River has yet to
-- mark finished.
--
-- River's completer commits finished jobs in batches: at once from 100 of
-- them, else every 250 ms. Until then a finished job is still `running` in
-- river_job, and 020's count held its workspace's cap: a workspace capped
-- at 2 whose jobs take 20 ms started about two jobs per completer batch, not
-- 100 a second, and one capped at every worker had part of its slots held
-- by finished jobs (0.77 of the uncapped burn-down).
--
-- The pilot (internal/fair) now remembers, per replica, every attempt whose
-- work has ended there (its worker middleware returned) until the
-- completer's statement for it has committed, and passes them: the job ids
-- and the attempted_at of each attempt. The running count skips exactly
-- those attempts. attempted_at is set by the fetch that starts an attempt,
-- so a job that is fetched again (a retry, a snooze, a rescue) is a new
-- attempt and counts again even if the pilot has not yet forgotten the old
-- one; the attempt number would not do, since a snooze gives it back.
-- Skipping only attempts whose work ended keeps the cap exact for the work
-- itself: an attempt is skipped only once its worker has returned.
--
-- The fetch also names the workspaces a cap held back, in the session
-- setting errand.fair_held_ws (beside errand.fair_held, which keeps its
-- meaning for replicas of the previous version): when a job of one of them
-- ends, the pilot wakes the queue at once; other workspaces' jobs ending do
-- not free a slot a held-back job could use.
--
-- The winners' new virtual times come out of the shared pass's statement,
-- which has their weights, instead of a second statement joining the
-- workspaces and plans again for every job chosen (2.9 ms of a fetch of
-- about 800 jobs over 100 workspaces).
--
-- Numbered 024: 023 was an experiment (023_fair_one_statement.sql, taken
-- out; docs/fairness.md) that a database migrated during its twenty
-- minutes may record as applied. This one drops and recreates fair_fetch
-- whatever 023 left.
--
-- The two parameters are new and last, with defaults: a replica of the
-- previous version calls it as before, during a rolling upgrade.

DROP FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[]);

CREATE FUNCTION errand.fair_fetch(
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
    -- level with it. River's order is read first, as River reads it: when
    -- all it finds is one workspace's and it is not all of the backlog's,
    -- two probes of the fair index tell whether any other workspace has
    -- work. Skipped when the caller kept a list of many busy workspaces.
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
                    LIMIT p_max) f) a;
        IF v_nws = 0 THEN
            RETURN;
        END IF;
        IF v_nws = 1
           AND (cardinality(v_ids) < p_max OR (
                    -- ordered as the fair index is, so each is one probe
                    (SELECT errand.fair_workspace(o.metadata) FROM errand.river_job o
                     WHERE o.state IS NOT DISTINCT FROM 'available' AND o.queue = p_queue AND errand.fair_workspace(o.metadata) > v_one
                     ORDER BY 1 LIMIT 1) IS NULL
                    AND (SELECT errand.fair_workspace(o.metadata) FROM errand.river_job o
                         WHERE o.state IS NOT DISTINCT FROM 'available' AND o.queue = p_queue AND errand.fair_workspace(o.metadata) < v_one
                         ORDER BY 1 DESC LIMIT 1) IS NULL)) THEN
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
    -- uncapped ones served now are not counted, so their bounds go.
    IF v_run_ws IS NOT NULL THEN
        INSERT INTO errand.fair_running AS fr (queue, workspace_id, running)
        SELECT p_queue, r.ws, r.n + (SELECT count(*) FROM unnest(v_ws) AS c(ws) WHERE c.ws = r.ws)
        FROM unnest(v_run_ws, v_run_n) AS r(ws, n)
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

-- 021's settings, repeated for the new function.
ALTER FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[], bigint[], timestamptz[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
COMMENT ON FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[], bigint[], timestamptz[]) IS
    'River''s fetch, shared fairly among workspaces within their caps (docs/fairness.md)';
