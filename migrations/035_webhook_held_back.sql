-- Held-back deliveries wake when their endpoint gives a slot back
-- (docs/webhooks.md, "Concurrency per endpoint").
--
-- Until now a delivery that found its endpoint full, and found no room to
-- wait in its replica, snoozed for ERRAND_WEBHOOK_HELD_BACK_WAIT doubling up
-- to 30 times it, and only its snooze's end brought it back. With more
-- webhook workers than twice an endpoint's slots, the last of a backlog
-- waited seconds after its endpoint had gone idle (the benchmark with 400
-- workers on 100 slots: about 900 deliveries/s where 200 workers did 3,500),
-- and a long backlog for a slow endpoint came back to be fetched and
-- snoozed again about every 30 s per delivery, whatever the endpoint could
-- take.
--
-- Now the statement that finds an endpoint full notes each delivery it
-- held back in errand.webhook_held_back, with the job's place in the queue;
-- the transaction that gives a slot back (a logged attempt, when no
-- delivery of its replica waits to be handed the slot) wakes the oldest
-- held-back delivery of that endpoint that has snoozed, one per slot: it
-- becomes available again at its old place in the queue (before the
-- deliveries fetched after it), and the queue is notified. The snooze is
-- still there, as the fallback for a wake-up that never comes (a replica
-- that died holding slots, a slot given back before the held-back
-- delivery's snooze committed, a previous release's replica that does not
-- wake anyone).

-- One row per delivery held back by its endpoint's cap, written by the
-- statement that found the endpoint full (as the tenant, scoped: the
-- kind's load in jobs/webhook) and deleted when the delivery takes a slot,
-- is handed one, or is woken. A row whose job is running is a delivery
-- still deciding (waiting in its replica, or about to snooze): the wake
-- leaves it alone. Unlogged, like the slots: after a crash the snoozes
-- bring the deliveries back.
CREATE UNLOGGED TABLE errand.webhook_held_back (
    endpoint_id uuid NOT NULL,
    job_id bigint NOT NULL,
    workspace_id uuid NOT NULL,
    -- The job's scheduled_at when it was first held back: its place in the
    -- queue, given back when it is woken (its snooze moved it).
    scheduled_at timestamptz NOT NULL,
    PRIMARY KEY (endpoint_id, job_id)
);

ALTER TABLE errand.webhook_held_back ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.webhook_held_back FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.webhook_held_back
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);
SELECT errand.grant_tenant('errand.webhook_held_back');

-- Wakes, for each element of endpoint_ids (one per slot given back), the
-- oldest held-back delivery of that endpoint in the caller's workspace
-- whose snooze has committed: state scheduled, or available with a
-- scheduled_at still ahead (River makes a snooze shorter than its
-- scheduler's interval available at once, for later). It is made available
-- now, at the place in the queue it had when it was first held back (never
-- before its own creation), and the queue is notified. Jobs another
-- transaction has locked are skipped, not waited for. A row whose job has
-- finished (cancelled with its disabled endpoint, say), is gone, or is not
-- a webhook.deliver of that workspace and endpoint is deleted when it comes
-- up. Returns how many it woke.
--
-- SECURITY DEFINER: the tenant role may not update River's table. The
-- rows are the tenant's to write, so nothing in them is trusted: the job
-- must be a webhook.deliver of the scoped workspace to that endpoint, and
-- the place it is given back is clamped between its creation and its
-- snooze. The most a caller can do is bring its own workspace's held-back
-- deliveries back early, where they find their endpoint full and are held
-- back again. So it stays executable by PUBLIC (the tenant role is per
-- database, and errand.tenant_grants grants tables, not functions): a role
-- that may not write errand.webhook_held_back can only bring existing
-- held-back deliveries back early.
--
-- Waking is an optimisation the snooze backs up, so it never fails its
-- caller (the transaction that logs finished attempts): a deadlock (with a
-- workspace being paused, whose trigger runs on the update) or a lock
-- timeout undoes the wake alone.
CREATE FUNCTION errand.webhook_wake_held(endpoint_ids uuid[]) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ws uuid := nullif(current_setting('app.current_workspace_id', true), '')::uuid;
    v_woke int;
    v_queues text[];
    v_queue text;
BEGIN
    IF v_ws IS NULL OR endpoint_ids IS NULL OR cardinality(endpoint_ids) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        -- Rows of finished, deleted or foreign jobs among each endpoint's
        -- oldest go first, so they never stand in front of the held-back
        -- ones.
        DELETE FROM errand.webhook_held_back h
        USING (SELECT DISTINCT e FROM unnest(endpoint_ids) AS e) w,
              LATERAL (SELECT x.job_id FROM errand.webhook_held_back x
                       WHERE x.endpoint_id = w.e AND x.workspace_id = v_ws
                       ORDER BY x.job_id LIMIT 4) o
        WHERE h.endpoint_id = w.e AND h.job_id = o.job_id
          AND NOT EXISTS (SELECT 1 FROM errand.river_job j
                          WHERE j.id = o.job_id
                            AND j.state NOT IN ('completed', 'cancelled', 'discarded')
                            AND j.kind = 'webhook.deliver'
                            AND j.metadata ->> 'workspace_id' = v_ws::text
                            AND lower(j.args ->> 'endpoint_id') = w.e::text);

        WITH want AS (
            SELECT e, count(*)::int AS n FROM unnest(endpoint_ids) AS e GROUP BY e
        ), pick AS MATERIALIZED (
            SELECT p.endpoint_id, p.job_id, p.scheduled_at
            FROM want w, LATERAL (
                SELECT h.endpoint_id, h.job_id, h.scheduled_at
                FROM errand.webhook_held_back h
                JOIN errand.river_job j ON j.id = h.job_id
                WHERE h.endpoint_id = w.e AND h.workspace_id = v_ws
                  AND j.kind = 'webhook.deliver'
                  AND j.metadata ->> 'workspace_id' = v_ws::text
                  AND lower(j.args ->> 'endpoint_id') = w.e::text
                  AND (j.state = 'scheduled' OR (j.state = 'available' AND j.scheduled_at > now()))
                ORDER BY h.job_id
                LIMIT w.n
                FOR UPDATE OF j SKIP LOCKED) p
        ), woke AS (
            UPDATE errand.river_job j
            SET state = 'available', scheduled_at = least(greatest(pick.scheduled_at, j.created_at), j.scheduled_at)
            FROM pick
            WHERE j.id = pick.job_id
              AND (j.state = 'scheduled' OR (j.state = 'available' AND j.scheduled_at > now()))
            RETURNING j.id, j.queue, pick.endpoint_id
        ), unheld AS (
            DELETE FROM errand.webhook_held_back h
            USING woke
            WHERE h.endpoint_id = woke.endpoint_id AND h.job_id = woke.id
        )
        SELECT count(*)::int, array_agg(DISTINCT woke.queue) INTO v_woke, v_queues FROM woke;
    EXCEPTION WHEN deadlock_detected OR lock_not_available THEN
        RETURN 0;
    END;
    FOREACH v_queue IN ARRAY coalesce(v_queues, '{}') LOOP
        PERFORM pg_notify('errand.river_insert', json_build_object('queue', v_queue)::text);
    END LOOP;
    RETURN v_woke;
END;
$$;
