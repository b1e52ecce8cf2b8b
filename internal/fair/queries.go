package fair

// The fetch's statements, in one place. The functions and the table they
// use are errand's migrations' (named on each); River's own statements are
// its driver's.

// The fetch: one batch, one round trip.
const (
	// fetchJobs locks and starts up to $2 jobs of queue $1 for client $3,
	// chosen by errand.fair_fetch_counted (created in
	// migrations/033_fair_working_counts.sql, its current body in
	// 054_fair_next_window.sql): shared among the workspaces by what each
	// runs, within their caps. $4 to $6 are River's (the most attempted_by
	// kept, now, the kinds this client works), $7 the default cap, $8 how
	// many workspaces to consider, $9 the cached candidates (NULL: find
	// them), $10 and $11 this producer's counts at work. The columns are
	// river_job's, in the order scanJob reads them.
	fetchJobs = `
		SELECT id, args, attempt, attempted_at, attempted_by, created_at, errors, finalized_at, kind,
		       max_attempts, metadata, priority, queue, state::text, scheduled_at, tags, unique_key, unique_states
		FROM errand.fair_fetch_counted($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	// fetchLeft reads what that fetch left in the session: the workspaces a
	// cap held back (errand.fair_held_ws) and the candidates it used
	// (errand.fair_cands), both set by errand.fair_fetch_counted.
	fetchLeft = `SELECT coalesce(nullif(current_setting('errand.fair_held_ws', true), ''), '{}')::uuid[]::text[],
		coalesce(nullif(current_setting('errand.fair_cands', true), ''), '{}')::uuid[]::text[]`
)

// A producer's counts at work (errand.fair_working, one row per queue and
// River client: migrations/033_fair_working_counts.sql, and 034).
const (
	// setStatementTimeout bounds the rest of the transaction to $1 ms
	// (refreshTimeout).
	setStatementTimeout = `SELECT set_config('statement_timeout', $1, true)`
	// putWorking writes client $2's row for queue $1 from its counts (the
	// workspaces $3, the jobs each runs $4; none: the row goes), with no
	// jobs started (errand.fair_working_put, created in 033, its current
	// body in 034_fair_working_recount.sql).
	putWorking = `SELECT errand.fair_working_put($1, $2, $3, $4, NULL)`
	// deleteWorking removes client $2's row for queue $1.
	deleteWorking = `DELETE FROM errand.fair_working WHERE queue = $1 AND client = $2`
)

// River's insert notification (its channel, in errand's schema), as the
// contract's trigger sends it (migrations/010_fast_enqueue.sql): every
// replica's producer of the queue fetches.
const (
	// notifyQueue wakes queue $1.
	notifyQueue = `SELECT pg_notify('errand.river_insert', json_build_object('queue', $1::text)::text)`
	// notifyQueues wakes each of the queues $1.
	notifyQueues = `SELECT pg_notify('errand.river_insert', json_build_object('queue', q)::text) FROM unnest($1::text[]) AS q`
)
