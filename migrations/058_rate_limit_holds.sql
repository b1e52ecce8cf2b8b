-- A job over a rate limit keeps the slot it was given.
--
-- Until now a job whose next slot was further out than it would sleep
-- (store.ReserveSlot's maxWait) took no slot and snoozed for about an
-- interval plus a second of jitter, then asked again. Every job of a
-- workspace over its plan's limit did the same, so a backlog of N jobs came
-- back about N times per interval to send one: an audit measured 1,867
-- fetch-and-snooze rounds in 10 s to send 10 of 300 webhook deliveries at
-- one a second, a churn that grows with the backlog and takes the queue's
-- fetches from every other workspace.
--
-- Now such a job takes the next slot all the same and keeps it in
-- errand.rate_limit_holds, keyed by the limit and the job's id: it snoozes
-- until just before that slot and, when it comes back (a retry of the same
-- attempt, or the same job after a crash and a rescue), gets the same slot
-- back, not a new one. About one snooze per job whatever the backlog, and
-- jobs are served in the order they first asked. A hold is removed when its
-- slot is taken; a job back more than an interval (at least 2 s) after its
-- slot gets a new one, so late jobs never start together over the limit; a
-- job cancelled or deleted while it holds one leaves one interval of the
-- limit unused, and its row is removed a day after the slot.
CREATE TABLE errand.rate_limit_holds (
    name text NOT NULL,
    job_id bigint NOT NULL,
    slot timestamptz NOT NULL,
    PRIMARY KEY (name, job_id)
);
CREATE INDEX rate_limit_holds_slot_idx ON errand.rate_limit_holds (slot);

-- errand.rate_limit_slot gives holder (a job's id) its slot of the rate
-- limit called p_name, slots p_interval apart, by the database's clock:
-- wait is how long until it starts (at most 0 when it is free now). A slot
-- starting within p_max_wait is the caller's to take (held false: it
-- sleeps until then and goes); a later one is kept for the holder (held
-- true: it snoozes and asks again, and gets the same slot).
CREATE FUNCTION errand.rate_limit_slot(p_name text, p_interval interval, p_max_wait interval, p_holder bigint,
                                       OUT wait interval, OUT held boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_slot timestamptz;
    v_kept boolean := true;
BEGIN
    SELECT h.slot INTO v_slot FROM errand.rate_limit_holds h WHERE h.name = p_name AND h.job_id = p_holder;
    -- A job back long after its slot (its workspace was paused, the
    -- workers were busy) gets a new one: taken late, the old slots of many
    -- such jobs would all start at once, a burst over the limit.
    IF FOUND AND v_slot < clock_timestamp() - greatest(p_interval, interval '2 seconds') THEN
        DELETE FROM errand.rate_limit_holds h WHERE h.name = p_name AND h.job_id = p_holder;
        v_slot := NULL;
    END IF;
    IF v_slot IS NULL THEN
        v_kept := false;
        -- clock_timestamp(), not now(): a statement that waited for a
        -- concurrent reservation's row lock counts from when it got the
        -- row, or two slots could come closer than the interval.
        INSERT INTO errand.rate_limits AS rl (name, next_at) VALUES (p_name, clock_timestamp() + p_interval)
        ON CONFLICT (name) DO UPDATE SET next_at = greatest(rl.next_at, clock_timestamp()) + p_interval
        RETURNING rl.next_at - p_interval INTO v_slot;
    END IF;
    wait := greatest(v_slot - clock_timestamp(), '0'::interval);
    held := wait > p_max_wait;
    IF held AND NOT v_kept THEN
        INSERT INTO errand.rate_limit_holds (name, job_id, slot) VALUES (p_name, p_holder, v_slot)
        ON CONFLICT (name, job_id) DO NOTHING;
        DELETE FROM errand.rate_limit_holds h WHERE h.slot < clock_timestamp() - interval '1 day';
    ELSIF NOT held AND v_kept THEN
        DELETE FROM errand.rate_limit_holds h WHERE h.name = p_name AND h.job_id = p_holder;
    END IF;
END;
$$;
