-- The fair fetch plans its statements once per connection, not once per call.
--
-- PL/pgSQL keeps a plan per statement and, by default (plan_cache_mode
-- auto), plans it again with the call's values unless a generic plan
-- estimates no dearer than the custom ones. The fair fetch's statements
-- take their sizes from parameters (LIMIT p_max, id = ANY(p_ids)), which a
-- generic plan must guess, and the guess lost: pg_stat_statements counted
-- a plan per call for the read of River's order (whatever the fetch's
-- size) and, for fetches of one job, for fair_start's lock too. On
-- river_job, with eleven indexes, several on expressions or partial, that
-- planning was most of a small fetch: a one-job fetch took 1.17 ms against
-- River's statement's 0.45 ms, and 0.70 ms with generic plans (a 50-job
-- fetch, dominated by its updates, 3.4 ms either way).
--
-- A generic plan is kept for the connection's life (until river_job's
-- statistics or definition change), so it must be one that still serves a
-- flood when it was made on the empty table a daemon starts with. The
-- planner would take a sequential scan there, and kept, that scan read
-- every job of a flood on every fetch (under auto_explain, 7.7 ms a fetch
-- at 10,000 jobs, 12 ms at 20,000). So
-- the functions also plan with enable_seqscan off: then each statement
-- takes an index, and 020 left each of them one that fits (the fair index
-- for the fair queries, River's fetch index for River's order and the
-- running count, the primary key for fair_start's lock; the small side
-- tables by their keys). internal/fair/fair_test.go's
-- TestFetchPlansMadeOnAnEmptyQueueStillServeAFlood plans on a near-empty
-- table, floods it, and reads the plans.
--
-- The settings are attached to the three functions (they apply to what
-- those call), so they do not reach River's or the app's statements. A
-- CREATE OR REPLACE of these functions in a later migration must repeat
-- them.
ALTER FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[])
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
ALTER FUNCTION errand.fair_start(bigint[], text, integer, timestamptz)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
ALTER FUNCTION errand.fair_candidates(text, uuid, integer)
    SET plan_cache_mode = force_generic_plan SET enable_seqscan = off;
