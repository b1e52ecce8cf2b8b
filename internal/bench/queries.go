package bench

// The bench's own statements, in one place.

const (
	// $1: the workspaces, dealt round robin.
	benchInsertPings = `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT ($1::uuid[])[1 + g % cardinality($1::uuid[])], 'ping', '{}'::jsonb FROM generate_series(0, $2::int - 1) AS g`
	benchInsertRiver = `INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
		SELECT '{}'::jsonb, '` + benchNoopKind + `', 25, jsonb_build_object('workspace_id', ($1::uuid[])[1 + g % cardinality($1::uuid[])]), 1, '` + benchBaselineQueue + `', now(), 'available', '{}'
		FROM generate_series(0, $2::int - 1) AS g`
	benchInsertOne = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`
	// The workspace and status expressions are the ones
	// river_job_workspace_status_idx and the errand.jobs view use. Whether
	// any job is unfinished is an index probe per status, stopping at the
	// first row.
	benchUnfinished = `SELECT EXISTS (SELECT 1 FROM errand.river_job
		WHERE (metadata ->> 'workspace_id')::uuid = ANY($1::uuid[])
		  AND errand.job_status(state) IN ('pending', 'processing'))`
	benchCountFinal = `SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state <> 'completed')
		FROM errand.river_job WHERE (metadata ->> 'workspace_id')::uuid = ANY($1::uuid[])`
	benchDeleteJobs      = `DELETE FROM errand.river_job WHERE (metadata ->> 'workspace_id')::uuid = $1::uuid`
	benchDeleteWorkspace = `DELETE FROM errand.workspaces WHERE id = $1::uuid`
	benchVacuum          = `VACUUM (ANALYZE) errand.river_job`
	benchAnalyze         = `ANALYZE errand.river_job`
)

// errand bench enqueue.
const (
	// One row through the contract, as an app server enqueues.
	enqueueOne = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}')`
	// The same row straight into River's table: no validation, no wake-up.
	enqueueOneRiver = `INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
		VALUES ('{}', '` + benchNoopKind + `', 25, jsonb_build_object('workspace_id', $1::uuid), 1, '` + benchBaselineQueue + `', now(), 'available', '{}')`
	// N rows in one statement through the contract.
	enqueueBulk = `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1::uuid, 'ping', jsonb_build_object('n', g) FROM generate_series(1, $2::int) AS g`
	// The same rows through the set-based function.
	enqueueManySQL = `SELECT count(*) FROM errand.enqueue_many($1::uuid[], $2::text[], $3::json[])`
)

// errand bench noisy: through the contract's view, errand.jobs
// (migrations/001_foundation.sql), as an app enqueues and reads.
const (
	// The small workspaces' pings, one statement for all of them.
	noisyInsertSmall = `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT w, 'ping', jsonb_build_object('sleep_ms', $3::int)
		FROM unnest($1::uuid[]) AS w, generate_series(1, $2::int)`
	// The flood: $2 pings of workspace $1.
	noisyInsertFlood = `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1, 'ping', jsonb_build_object('sleep_ms', $3::int) FROM generate_series(1, $2::int)`
	// Waits from INSERT to start, in ms, of the workspaces' finished jobs,
	// and whether all of them have finished.
	noisyWaits = `SELECT count(*) FILTER (WHERE status <> 'completed'),
		coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000)
		         FILTER (WHERE status = 'completed'), 0)
		FROM errand.jobs WHERE workspace_id = ANY ($1::uuid[])`
	// The flood's rate: jobs over the span from the first start to the last
	// finish, on the database's clock.
	noisyRate = `SELECT count(*) FILTER (WHERE status <> 'completed'), count(*),
		coalesce(extract(epoch FROM max(finished_at) - min(started_at)), 0)
		FROM errand.jobs WHERE workspace_id = $1`
	// The flood's jobs running when each of the small workspaces' jobs
	// started, on the database's clock: the median and the most.
	noisyFloodRunning = `SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.n), 0), coalesce(max(r.n), 0)
		FROM errand.jobs s CROSS JOIN LATERAL (
			SELECT count(*) AS n FROM errand.jobs f
			WHERE f.workspace_id = $1 AND f.started_at <= s.started_at
			  AND (f.finished_at IS NULL OR f.finished_at > s.started_at)) r
		WHERE s.workspace_id = ANY ($2::uuid[])`
)

// errand bench scale.
//
// The retained jobs, written straight into River's table in one statement
// (the contract's trigger would take minutes for millions). Job g finished
// g/n of 23 hours after the first, inside River's 24 h retention so its
// cleaner leaves them alone during the run. Even jobs belong to the first
// workspace, odd ones are spread over the others; one in ten is an
// email.send. One in a thousand failed (discarded after its last attempt),
// none of them in the first workspace: its failed jobs are the search that
// used to read all of its million completed ones.
const (
	// $2 workspaces, slugs $1-1 to $1-$2.
	scaleCreateWorkspaces = `INSERT INTO errand.workspaces (name, slug)
		SELECT 'errand bench scale', $1::text || '-' || g FROM generate_series(1, $2::int) AS g
		RETURNING id`
	// The retained jobs: $2 of them over the workspaces $1.
	scaleLoadFinished = `INSERT INTO errand.river_job (state, attempt, max_attempts, attempted_at, attempted_by, created_at,
			finalized_at, scheduled_at, priority, args, kind, metadata, queue, tags, errors)
		SELECT CASE WHEN failed THEN 'discarded' ELSE 'completed' END::errand.river_job_state,
		       CASE WHEN failed THEN 25 ELSE 1 END, 25, t, '{bench-scale}', t, t + interval '5 ms', t, 1, '{}'::jsonb,
		       kind, jsonb_build_object('workspace_id', ws), CASE WHEN kind = 'email.send' THEN 'email' ELSE 'default' END, '{}',
		       CASE WHEN failed THEN ARRAY[jsonb_build_object('at', t, 'attempt', 25, 'error', 'bench: failed for good', 'trace', '')] END
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, $2::int) AS g,
		     LATERAL (SELECT g % 1000 = 500 AS failed,
		                     now() - interval '23 hours' + g * (interval '23 hours' / $2::int) AS t) AS a,
		     LATERAL (SELECT CASE WHEN failed THEN w.ids[2 + (g / 1000) % (cardinality(w.ids) - 1)]
		                          WHEN g % 2 = 0 THEN w.ids[1]
		                          ELSE w.ids[2 + (g / 2) % (cardinality(w.ids) - 1)] END AS ws,
		                     CASE WHEN failed AND g / 1000 % 4 = 0 OR NOT failed AND g % 10 = 3 THEN 'email.send' ELSE 'ping' END AS kind) AS b`
	// A backlog enqueued over the last ten minutes in a queue no replica
	// serves, so it stays pending while the daemon runs.
	scaleLoadPending = `INSERT INTO errand.river_job (state, max_attempts, created_at, scheduled_at, priority, args, kind, metadata, queue, tags)
		SELECT 'available', 25, t, t, 1, '{}'::jsonb, 'ping',
		       jsonb_build_object('workspace_id', w.ids[2 + (g * 13) % (cardinality(w.ids) - 1)]), '` + scaleIdleQueue + `', '{}'
		FROM (SELECT $1::uuid[] AS ids) AS w, generate_series(1, $2::int) AS g,
		     LATERAL (SELECT now() - interval '10 minutes' + g * (interval '10 minutes' / $2::int)) AS at(t)`
	// The cleanup: the workspaces' jobs, their counts (the roll-up's,
	// migrations/029_usage_rollup.sql) and the workspaces.
	scaleDeleteJobs       = `DELETE FROM errand.river_job WHERE (metadata ->> 'workspace_id')::uuid = ANY ($1::uuid[])`
	scaleDeleteWorkspaces = `DELETE FROM errand.workspaces WHERE id = ANY ($1::uuid[])`
	scaleDeleteCounts     = `DELETE FROM errand.job_counts WHERE workspace_id = ANY ($1::uuid[])`
	// A leader's minute roll-up of the finished jobs (errand.roll_up_job_counts:
	// migrations/029_usage_rollup.sql, its current body in
	// 032_queue_minute_counts.sql).
	scaleRollUp = `SELECT errand.roll_up_job_counts()`
	// Pending jobs whose run_at has come (the Watch section's due count).
	scaleDueCount = `SELECT count(*) FROM errand.jobs WHERE status = 'pending' AND run_at <= now()`
	// What KEDA's PostgreSQL scaler asks (deploy/kubernetes/keda.yaml): the
	// due jobs a worker may start, up to its cap (errand.startable_jobs:
	// migrations/048_startable_jobs.sql).
	scaleKEDA = `SELECT errand.startable_jobs(600, ARRAY['email'])`
	// Every job in River's table, whatever its workspace.
	scaleCountJobs = `SELECT count(*) FROM errand.river_job`
)
