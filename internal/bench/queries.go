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
