-- Fairness between workspaces: weighted fair sharing of a queue's workers,
-- per-workspace concurrency caps, and the plan table that sets them (and the
-- outbound rate limits the kinds read). Decisions: docs/fairness.md.
--
-- errand fetches River's jobs itself: River's open-source client lets a
-- driver plug in its own "pilot" (the hook River Pro's concurrency limits
-- use), and errand's (internal/fair) calls errand.fair_fetch instead of
-- River's FIFO statement. Jobs held back stay 'available' (status pending):
-- nothing is written to a job until it starts, and no attempt is used.

-- Plans: the app fills it (or replaces it with a view of the same columns),
-- keyed by errand.workspaces.plan. Not tenant data. A workspace whose plan
-- has no row gets weight 1, ERRAND_WORKSPACE_CONCURRENCY and no rate limits.
CREATE TABLE errand.plans (
    plan text PRIMARY KEY,
    -- Share of a busy queue's workers against other busy workspaces.
    weight integer NOT NULL DEFAULT 1,
    -- At most this many of a workspace's jobs run at once in each queue,
    -- across all replicas. NULL: ERRAND_WORKSPACE_CONCURRENCY.
    concurrency integer,
    -- Outbound rate limits per workspace. NULL: none.
    emails_per_minute integer,
    webhooks_per_second integer,
    CONSTRAINT plans_weight_range CHECK (weight BETWEEN 1 AND 1000),
    CONSTRAINT plans_concurrency_positive CHECK (concurrency > 0),
    CONSTRAINT plans_emails_per_minute_positive CHECK (emails_per_minute > 0),
    CONSTRAINT plans_webhooks_per_second_positive CHECK (webhooks_per_second > 0)
);
COMMENT ON TABLE errand.plans IS
    'Per-plan fairness weight, per-queue concurrency cap and outbound rate limits (docs/fairness.md)';

-- The workspace a job belongs to for fairness: errand's own jobs (NULL
-- workspace_id, the schedules' fan-out ticks) share the nil uuid.
CREATE FUNCTION errand.fair_workspace(metadata jsonb) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce((metadata ->> 'workspace_id')::uuid, '00000000-0000-0000-0000-000000000000'::uuid);

-- A queue's available jobs per workspace, in River's order within each: the
-- fetch walks the workspaces that have work (a skip scan) and takes each
-- one's next jobs. Partial: a job is in it only while available, so it is
-- written once per job (at INSERT or when it becomes available again).
CREATE INDEX river_job_fair_fetch_idx ON errand.river_job
    (queue, errand.fair_workspace(metadata), priority, scheduled_at, id)
    WHERE state = 'available';

-- Each busy workspace's virtual time per queue (weighted fair queuing): a
-- workspace served k jobs advances by k / weight. Unlogged and rebuilt from
-- nothing after a crash (it only orders who goes next).
CREATE UNLOGGED TABLE errand.fair_queues (
    queue text PRIMARY KEY,
    vtime float8 NOT NULL DEFAULT 0,
    -- Round robin over the candidates when more workspaces have work than
    -- one fetch looks at: the next fetch starts after this one.
    next_after uuid
);
CREATE UNLOGGED TABLE errand.fair_shares (
    queue text NOT NULL,
    workspace_id uuid NOT NULL,
    vtime float8 NOT NULL,
    PRIMARY KEY (queue, workspace_id)
);

-- An upper bound of each capped workspace's running jobs per queue, so a
-- fetch need not count them every time: a fetch that starts k of its jobs
-- adds k, and finishing jobs do not subtract (nothing tells the fetch), so
-- the bound only drifts up. When it is within p_max of the cap, the fetch
-- counts exactly and starts again from that. Written only under the
-- queue's fetch lock; a workspace served while uncapped loses its row (its
-- jobs were not counted). Unlogged: after a crash every bound is counted
-- afresh.
CREATE UNLOGGED TABLE errand.fair_running (
    queue text NOT NULL,
    workspace_id uuid NOT NULL,
    running integer NOT NULL,
    PRIMARY KEY (queue, workspace_id)
);

-- The workspaces with available jobs in p_queue, at most p_limit of them:
-- a skip scan of river_job_fair_fetch_idx (one probe per workspace), after
-- p_after first, then from the start (the nil uuid, errand's own jobs,
-- sorts first).
CREATE FUNCTION errand.fair_candidates(p_queue text, p_after uuid, p_limit integer) RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_after uuid := p_after;
    v_cands uuid[];
BEGIN
    v_cands := '{}';
    IF v_after IS NOT NULL THEN
        WITH RECURSIVE ws(id) AS (
            (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
             WHERE j.state = 'available' AND j.queue = p_queue
               AND errand.fair_workspace(j.metadata) > v_after
             ORDER BY 1 LIMIT 1)
            UNION ALL
            SELECT (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
                    WHERE j.state = 'available' AND j.queue = p_queue
                      AND errand.fair_workspace(j.metadata) > ws.id
                    ORDER BY 1 LIMIT 1)
            FROM ws WHERE ws.id IS NOT NULL
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_cands
        FROM (SELECT id FROM ws WHERE id IS NOT NULL LIMIT p_limit) c;
    END IF;
    IF cardinality(v_cands) < p_limit THEN
        WITH RECURSIVE ws(id) AS (
            (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
             WHERE j.state = 'available' AND j.queue = p_queue
             ORDER BY 1 LIMIT 1)
            UNION ALL
            SELECT (SELECT errand.fair_workspace(j.metadata) FROM errand.river_job j
                    WHERE j.state = 'available' AND j.queue = p_queue
                      AND errand.fair_workspace(j.metadata) > ws.id
                    ORDER BY 1 LIMIT 1)
            FROM ws WHERE ws.id IS NOT NULL AND (v_after IS NULL OR ws.id < v_after)
        )
        SELECT v_cands || coalesce(array_agg(id), '{}') INTO v_cands
        FROM (SELECT id FROM ws
              WHERE id IS NOT NULL AND (v_after IS NULL OR id <= v_after)
              LIMIT p_limit - cardinality(v_cands)) c;
    END IF;
    RETURN v_cands;
END;
$$;

-- Starts the jobs p_ids as River's fetch does (attempt + 1, attempted_at,
-- attempted_by capped at p_max_attempted_by entries), those still available.
-- SKIP LOCKED, as River's fetch: a job another transaction is changing (a
-- pause, a cancel) is left to it, and never waited on.
CREATE FUNCTION errand.fair_start(p_ids bigint[], p_client text, p_max_attempted_by integer, p_now timestamptz)
RETURNS SETOF errand.river_job
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH locked AS (
        SELECT l.id FROM errand.river_job l
        WHERE l.id = ANY(p_ids) AND l.state = 'available'
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
$$;

-- Up to p_max available jobs of p_queue, shared fairly among workspaces and
-- within each one's concurrency cap, marked running for p_client exactly as
-- River's own fetch does (attempt + 1, attempted_at, attempted_by).
--
-- One fetch per queue at a time, across replicas (an advisory lock held to
-- commit): the running counts the caps are checked against cannot change
-- under it, since only a fetch makes a job running, so a cap is never
-- exceeded however many replicas fetch at once.
--
-- 1. Candidates: the workspaces with available jobs in the queue, at most
--    p_candidates of them, round robin when there are more; p_cands, the
--    list the caller kept from a recent fetch, saves the scan (a fetch
--    that list cannot fill scans again).
-- 2. One workspace without a cap: River's own statement, nothing to share.
-- 3. Each one's room (its cap less its running jobs in the queue, from
--    errand.fair_running's bound or counted) and a budget: its weighted
--    share of p_max, plus one. A second pass lifts the budgets to the room
--    when the shares did not fill p_max (work conserving: a workspace
--    alone gets every free worker).
-- 4. The next jobs in River's order (priority, scheduled_at, id) of the
--    p_max workspaces furthest behind, tagged with the workspace's virtual
--    time + k / weight; the p_max smallest tags win. The winners' virtual
--    times and running bounds advance.
--
-- It leaves two session settings for the caller, read on the same
-- connection: errand.fair_held ('true' when a cap held work back: River
-- will not fetch again by itself until a poll) and errand.fair_cands (the
-- candidates it used).
CREATE FUNCTION errand.fair_fetch(
    p_queue text,
    p_max integer,
    p_client text,
    p_max_attempted_by integer,
    p_now timestamptz,
    p_kinds text[],
    p_default_cap integer,
    p_candidates integer,
    p_cands uuid[] DEFAULT NULL
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
    v_held boolean;
    v_cap integer;
    v_scanned boolean;
    v_run_ws uuid[];
    v_run_n bigint[];
    v_uncapped uuid[];
BEGIN
    -- Whether a cap held back a workspace's jobs: River fetches again when
    -- a worker frees only after a full fetch, so errand's pilot reads this
    -- (on the same connection) and wakes the queue soon after.
    -- Both settings start empty: a connection's last fetch must not speak
    -- for this one.
    PERFORM set_config('errand.fair_held', 'false', false), set_config('errand.fair_cands', '', false);
    IF p_max <= 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(1702322541, hashtext(p_queue)); -- "fair"

    SELECT q.vtime, q.next_after INTO v_clock, v_after FROM errand.fair_queues q WHERE q.queue = p_queue;
    v_clock := coalesce(v_clock, 0);

    -- 1. Candidates: the caller's (the pilot keeps a fresh list for a few
    -- milliseconds when many workspaces have work), or a scan.
    v_scanned := p_cands IS NULL;
    v_cands := coalesce(p_cands, errand.fair_candidates(p_queue, v_after, p_candidates));
    IF cardinality(v_cands) = 0 AND v_scanned THEN
        RETURN;
    END IF;

    -- One workspace with work and no cap: nothing to share, so River's own
    -- statement (the queue's order is the workspace's), no bookkeeping. Its
    -- virtual time stays as it was: a workspace that arrives next starts
    -- level with it.
    IF cardinality(v_cands) = 1 AND v_scanned THEN
        SELECT CASE WHEN v_cands[1] = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                    ELSE coalesce((SELECT p.concurrency FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
                                   WHERE w.id = v_cands[1]), nullif(p_default_cap, 0)) END
        INTO v_cap;
        IF v_cap IS NULL THEN
            DELETE FROM errand.fair_running fr WHERE fr.queue = p_queue AND fr.workspace_id = v_cands[1];
            RETURN QUERY SELECT * FROM errand.fair_start(ARRAY(
                SELECT l.id FROM errand.river_job l
                WHERE l.state = 'available' AND l.queue = p_queue AND l.scheduled_at <= v_now
                  AND (p_kinds IS NULL OR l.kind = ANY(p_kinds))
                ORDER BY l.priority, l.scheduled_at, l.id
                LIMIT p_max), p_client, p_max_attempted_by, v_now);
            RETURN;
        END IF;
    END IF;

    -- 2 and 3, with share budgets, then (if short) with the whole room.
    LOOP
        WITH cand AS (
            SELECT c.ws, c.pos FROM unnest(v_cands) WITH ORDINALITY AS c(ws, pos)
        ), info AS (
            SELECT c.ws, c.pos,
                   coalesce(p.weight, 1) AS weight,
                   CASE WHEN c.ws = '00000000-0000-0000-0000-000000000000'::uuid THEN NULL
                        ELSE coalesce(p.concurrency, nullif(p_default_cap, 0)) END AS cap,
                   greatest(coalesce(s.vtime, v_clock), v_clock) AS start
            FROM cand c
            LEFT JOIN errand.workspaces w ON w.id = c.ws
            LEFT JOIN errand.plans p ON p.plan = w.plan
            LEFT JOIN errand.fair_shares s ON s.queue = p_queue AND s.workspace_id = c.ws
        ), bound AS (
            SELECT i.ws, i.cap, fr.running AS bound,
                   (fr.running IS NULL OR i.cap - fr.running < p_max) AS recount
            FROM info i
            LEFT JOIN errand.fair_running fr ON fr.queue = p_queue AND fr.workspace_id = i.ws
            WHERE i.cap IS NOT NULL
        ), exact AS (
            SELECT errand.fair_workspace(j.metadata) AS ws, count(*) AS n
            FROM errand.river_job j
            WHERE j.state = 'running' AND j.queue = p_queue
              AND EXISTS (SELECT 1 FROM bound WHERE bound.recount)
              AND errand.fair_workspace(j.metadata) IN (SELECT b.ws FROM bound b WHERE b.recount)
            GROUP BY 1
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
            SELECT b.ws, b.pos, j.id,
                   b.start + (row_number() OVER (PARTITION BY b.ws ORDER BY j.priority, j.scheduled_at, j.id) - 1)::float8 / b.weight AS tag
            FROM budget b CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.scheduled_at FROM errand.river_job j
                WHERE j.state = 'available' AND j.queue = p_queue
                  AND errand.fair_workspace(j.metadata) = b.ws
                  AND j.scheduled_at <= v_now
                  AND (p_kinds IS NULL OR j.kind = ANY(p_kinds))
                ORDER BY j.priority, j.scheduled_at, j.id
                LIMIT b.budget
            ) j
        ), chosen AS (
            SELECT * FROM picked ORDER BY tag, pos, id LIMIT p_max
        ), held AS (
            -- a capped workspace that got all its room (and may have more)
            SELECT coalesce(bool_or(r.cap IS NOT NULL AND r.room < p_max
                                    AND r.room <= (SELECT count(*) FROM chosen c WHERE c.ws = r.ws)), false) AS held
            FROM room r
        )
        SELECT array_agg(id), array_agg(ws), array_agg(tag), (SELECT held FROM held),
               (SELECT array_agg(r.ws) FROM running r), (SELECT array_agg(r.n) FROM running r),
               (SELECT array_agg(i.ws) FROM info i WHERE i.cap IS NULL)
        INTO v_ids, v_ws, v_tags, v_held, v_run_ws, v_run_n, v_uncapped FROM chosen;
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
    IF v_held THEN
        PERFORM set_config('errand.fair_held', 'true', false);
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
    SELECT p_queue, t.ws, max(t.tag) + 1.0 / coalesce(max(p.weight), 1)
    FROM unnest(v_ws, v_tags) AS t(ws, tag)
    LEFT JOIN errand.workspaces w ON w.id = t.ws
    LEFT JOIN errand.plans p ON p.plan = w.plan
    GROUP BY t.ws
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
COMMENT ON FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[]) IS
    'River''s fetch, shared fairly among workspaces within their caps (docs/fairness.md)';
