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
-- The generic plans cannot pick the wrong index for the fair queries: 020
-- made the fair index the only one their predicates can use, and
-- fair_start's lock the primary key only (internal/fair/fair_test.go reads
-- the plans of a flood the statistics have never seen). The setting is
-- attached to the three functions (it applies to what they call), so it
-- does not reach River's or the app's statements. A CREATE OR REPLACE of
-- these functions in a later migration must repeat it.
ALTER FUNCTION errand.fair_fetch(text, integer, text, integer, timestamptz, text[], integer, integer, uuid[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION errand.fair_start(bigint[], text, integer, timestamptz)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION errand.fair_candidates(text, uuid, integer)
    SET plan_cache_mode = force_generic_plan;
