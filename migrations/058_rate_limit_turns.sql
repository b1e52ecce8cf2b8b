-- A job over a rate limit comes back when its turn is near, not every second.
--
-- A job whose next slot was further out than it would sleep
-- (store.ReserveSlot's maxWait) took no slot and snoozed for about an
-- interval plus a second of jitter, then asked again. Every job of a
-- workspace over its plan's limit did the same, so a backlog of N jobs came
-- back about N times per interval to send one: an audit measured 1,867
-- fetch-and-snooze rounds in 10 s to send 10 of 300 webhook deliveries at
-- one a second, a churn that grows with the backlog and takes the queue's
-- fetches from every other workspace.
--
-- Now a job that gets no slot is given a turn: errand.rate_limits keeps,
-- beside the next free slot (next_at), the end of the line of those
-- waiting (waiting_until), one interval per waiting job after the slots
-- already taken. The job snoozes until about its turn (at most a minute:
-- store and jobs.WaitForSlot) and asks again then. Nothing is reserved for
-- it: the slots stay with whoever asks when they are near, so a cancelled
-- backlog, a plan upgraded to a faster rate, or a second limiter the job
-- also waits for (an email waits for its workspace's and then Resend's)
-- never leaves slots taken and unused. A line made long by jobs that were
-- then cancelled only sends those that find no slot further back, and by
-- the minute's bound no later than a minute.
ALTER TABLE errand.rate_limits ADD COLUMN waiting_until timestamptz;

-- errand.rate_limit_slot takes the next slot of the rate limit called
-- p_name, slots p_interval apart, by the database's clock, when it starts
-- within p_max_wait: reserved is true and wait is how long until it starts
-- (0 when it is free now). A later one is left alone, so that a caller who
-- would rather not wait that long (and snoozes) does not push everyone
-- else back: reserved is false and wait is how long until the caller's
-- turn in the line of those waiting.
CREATE FUNCTION errand.rate_limit_slot(p_name text, p_interval interval, p_max_wait interval,
                                       OUT wait interval, OUT reserved boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz;
BEGIN
    -- clock_timestamp(), not now(): a statement that waited for a
    -- concurrent reservation's row lock counts from when it got the row,
    -- or two slots could come closer than the interval.
    INSERT INTO errand.rate_limits AS rl (name, next_at) VALUES (p_name, clock_timestamp() + p_interval)
    ON CONFLICT (name) DO UPDATE SET next_at = greatest(rl.next_at, clock_timestamp()) + p_interval
    WHERE rl.next_at <= clock_timestamp() + p_max_wait
    RETURNING rl.next_at - p_interval INTO v_at;
    reserved := v_at IS NOT NULL;
    IF NOT reserved THEN
        -- (The row is locked by the INSERT above, and is there.)
        UPDATE errand.rate_limits rl SET waiting_until = greatest(rl.waiting_until, rl.next_at) + p_interval
        WHERE rl.name = p_name
        RETURNING rl.waiting_until - p_interval INTO v_at;
    END IF;
    wait := greatest(coalesce(v_at, clock_timestamp()) - clock_timestamp(), '0'::interval);
END;
$$;
