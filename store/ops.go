package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The operations behind `errand jobs`, `errand workspaces` and `errand
// stats`: the SQL functions of migrations/016_operations.sql, and the
// read-only queries ops look at, each over an index (docs/operations.md).

// ErrNotFound is returned (wrapped) for a job or workspace that does not
// exist.
var ErrNotFound = errors.New("not found")

// OpError is a refusal by one of errand's SQL functions: its message is
// the function's own without "errand: " ("job 42 is completed, ..."), and it unwraps to
// the *pgconn.PgError (SQLSTATE in Code).
type OpError struct{ PG *pgconn.PgError }

func (e *OpError) Error() string { return strings.TrimPrefix(e.PG.Message, "errand: ") }
func (e *OpError) Unwrap() error {
	if e.PG.Code == "23503" { // foreign_key_violation: "does not exist"
		return errors.Join(e.PG, ErrNotFound)
	}
	return e.PG
}

// notFound is a job or workspace that does not exist: its message alone,
// and errors.Is(err, ErrNotFound).
type notFound struct{ msg string }

func (e *notFound) Error() string        { return e.msg }
func (e *notFound) Is(target error) bool { return target == ErrNotFound }

// opError turns an errand refusal into an OpError and wraps anything else
// with what was being done.
func opError(err error, format string, args ...any) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && len(pg.Message) > 8 && pg.Message[:8] == "errand: " {
		return &OpError{PG: pg}
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// PauseWorkspace pauses a workspace (errand.pause_workspace): its jobs wait
// until ResumeWorkspace, on every replica, from this commit on. It returns
// how many waiting jobs it held back now (0 when it was paused already).
func PauseWorkspace(ctx context.Context, db DB, workspaceID string) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT errand.pause_workspace($1::uuid)`, workspaceID).Scan(&n); err != nil {
		return 0, opError(err, "pause workspace %s", workspaceID)
	}
	return n, nil
}

// ResumeWorkspace resumes a paused workspace (errand.resume_workspace) and
// returns how many held jobs it released (0 when it was not paused).
func ResumeWorkspace(ctx context.Context, db DB, workspaceID string) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT errand.resume_workspace($1::uuid)`, workspaceID).Scan(&n); err != nil {
		return 0, opError(err, "resume workspace %s", workspaceID)
	}
	return n, nil
}

// RetryJob runs a failed job again (errand.retry_job). It returns "queued",
// or "paused" when the job's workspace is paused and the job waits for it.
func RetryJob(ctx context.Context, db DB, id int64) (string, error) {
	var s string
	if err := db.QueryRow(ctx, `SELECT errand.retry_job($1)`, id).Scan(&s); err != nil {
		return "", opError(err, "retry job %d", id)
	}
	return s, nil
}

// RetryFailed runs every failed job of a workspace again
// (errand.retry_jobs) and returns how many.
//
// paused reports that the workspace is paused: its retried jobs wait until
// it is resumed.
func RetryFailed(ctx context.Context, db DB, workspaceID string) (n int64, paused bool, err error) {
	if err := db.QueryRow(ctx, `SELECT errand.retry_jobs($1::uuid, 'failed'),
		EXISTS (SELECT 1 FROM errand.paused_workspaces p WHERE p.workspace_id = $1::uuid)`, workspaceID).Scan(&n, &paused); err != nil {
		return 0, false, opError(err, "retry failed jobs of workspace %s", workspaceID)
	}
	return n, paused, nil
}

// CancelJob cancels a job that has not finished (errand.cancel_job):
// "cancelled" for a waiting job, "cancelling" for a running one, which is
// asked to stop.
func CancelJob(ctx context.Context, db DB, id int64) (string, error) {
	var s string
	if err := db.QueryRow(ctx, `SELECT errand.cancel_job($1)`, id).Scan(&s); err != nil {
		return "", opError(err, "cancel job %d", id)
	}
	return s, nil
}

// ResolveWorkspace is the id of the workspace named by its id or its slug
// (a workspace the app has since deleted, by its id, while it is paused or
// has jobs kept).
func ResolveWorkspace(ctx context.Context, db DB, idOrSlug string) (string, error) {
	var id string
	var err error
	if uuidText.MatchString(idOrSlug) {
		// An id first: a workspace's, a paused one's (still paused after
		// its deletion), or one whose jobs are kept after its deletion (its
		// failed jobs stay ERRAND_RETAIN_FAILED); else a slug that looks
		// like an id.
		err = db.QueryRow(ctx, `
		SELECT w.id::text FROM errand.workspaces w WHERE w.id = $1::uuid
		UNION ALL
		SELECT p.workspace_id::text FROM errand.paused_workspaces p WHERE p.workspace_id = $1::uuid
		UNION ALL
		(SELECT ((j.metadata ->> 'workspace_id')::uuid)::text FROM errand.river_job j
		 WHERE (j.metadata ->> 'workspace_id')::uuid = $1::uuid LIMIT 1)
		UNION ALL
		SELECT w.id::text FROM errand.workspaces w WHERE w.slug = $2
		LIMIT 1`, idOrSlug, idOrSlug).Scan(&id)
	} else {
		err = db.QueryRow(ctx, `SELECT w.id::text FROM errand.workspaces w WHERE w.slug = $1`, idOrSlug).Scan(&id)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &notFound{fmt.Sprintf("workspace %q does not exist in errand.workspaces (give its id or its slug)", idOrSlug)}
	}
	if err != nil {
		return "", fmt.Errorf("find workspace %q: %w", idOrSlug, err)
	}
	return id, nil
}

var uuidText = regexp.MustCompile(`^(?i)[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$`)

// Attempt is one failed attempt of a job, as River recorded it.
type Attempt struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// JobDetail is one job with its args and every recorded error.
type JobDetail struct {
	Job
	Priority   int             `json:"priority"`
	RiverState string          `json:"river_state"`
	Paused     bool            `json:"paused"` // held by its paused workspace (pending now, not a cancelled job that once was)
	Args       json.RawMessage `json:"args"`
	Errors     []Attempt       `json:"errors"`
}

// GetJob is one job's detail, or an error wrapping ErrNotFound.
func GetJob(ctx context.Context, db DB, id int64) (JobDetail, error) {
	var d JobDetail
	var errs []byte
	err := db.QueryRow(ctx, `
	SELECT j.id, coalesce(j.workspace_id::text, ''), j.kind, j.queue, j.status, j.attempt, j.max_attempts, coalesce(j.last_error, ''),
		j.run_at, j.created_at, j.started_at, j.finished_at, j.priority, j.river_state, j.args,
		r.state = 'pending' AND r.metadata ? 'errand:paused',
		coalesce((SELECT jsonb_agg(e ORDER BY n) FROM unnest(r.errors) WITH ORDINALITY AS x(e, n)), '[]')
	FROM errand.jobs j JOIN errand.river_job r ON r.id = j.id
	WHERE j.id = $1`, id).Scan(&d.ID, &d.WorkspaceID, &d.Kind, &d.Queue, &d.Status, &d.Attempt, &d.MaxAttempts, &d.LastError,
		&d.RunAt, &d.CreatedAt, &d.StartedAt, &d.FinishedAt, &d.Priority, &d.RiverState, &d.Args, &d.Paused, &errs)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, &notFound{fmt.Sprintf("job %d does not exist", id)}
	}
	if err != nil {
		return d, fmt.Errorf("read job %d: %w", id, err)
	}
	if err := json.Unmarshal(errs, &d.Errors); err != nil {
		return d, fmt.Errorf("read job %d errors: %w", id, err)
	}
	return d, nil
}

// WorkspaceStatus is one workspace's jobs that are not completed.
type WorkspaceStatus struct {
	WorkspaceID string     `json:"workspace_id"`
	Slug        string     `json:"slug"`
	Name        string     `json:"name"`
	PausedAt    *time.Time `json:"paused_at"` // nil when not paused
	// Plan is errand.workspaces.plan; Weight and Concurrency its
	// errand.plans figures (weight 1 and nil without a row; nil
	// Concurrency: ERRAND_WORKSPACE_CONCURRENCY).
	Plan        string `json:"plan"`
	Weight      int    `json:"weight"`
	Concurrency *int   `json:"concurrency"`
	Pending     int64  `json:"pending"`
	Processing  int64  `json:"processing"`
	Failed      int64  `json:"failed"` // failed jobs still retained
}

// Workspaces lists up to limit workspaces, paused ones first, then the ones
// with the most pending jobs (then by slug). Pending jobs are counted for
// every workspace in one pass over the jobs that are not completed
// (river_job_status_idx); the processing and failed counts only for the
// listed ones, through the workspace index, so failed jobs kept for days
// in thousands of other workspaces are never read. Of the workspaces with
// nothing pending only the first limit by slug are read.
func Workspaces(ctx context.Context, db DB, limit int) ([]WorkspaceStatus, error) {
	if limit <= 0 || limit > 10000 {
		return nil, fmt.Errorf("list workspaces: limit must be 1 to 10000, got %d", limit)
	}
	rows, err := db.Query(ctx, `
	WITH pending AS (
		SELECT workspace_id, count(*) AS pending
		FROM errand.jobs
		WHERE status = 'pending'
		GROUP BY workspace_id
	)
	-- The candidates for the first $1: every paused workspace, every one
	-- with pending jobs, and the first $1 of all by slug (a superset of the
	-- first $1 by slug of those with nothing pending), so that thousands of
	-- idle workspaces are never all read and sorted. A deleted workspace
	-- is listed only while paused.
	, listed AS (
		SELECT p.workspace_id AS id FROM errand.paused_workspaces p
		UNION
		SELECT c.workspace_id FROM pending c
		UNION
		(SELECT w.id FROM errand.workspaces w ORDER BY w.slug LIMIT $1)
	), top AS (
		SELECT l.id, w.slug, w.name, w.plan, p.paused_at, coalesce(c.pending, 0) AS pending
		FROM listed l
		LEFT JOIN errand.workspaces w ON w.id = l.id
		LEFT JOIN errand.paused_workspaces p ON p.workspace_id = l.id
		LEFT JOIN pending c ON c.workspace_id = l.id
		WHERE w.id IS NOT NULL OR p.workspace_id IS NOT NULL
		ORDER BY p.paused_at IS NULL, coalesce(c.pending, 0) DESC, w.slug, l.id
		LIMIT $1
	)
	SELECT t.id::text, coalesce(t.slug, ''), coalesce(t.name, '(deleted)'), t.paused_at,
		coalesce(t.plan, ''), coalesce(pl.weight, 1), pl.concurrency, t.pending,
		(SELECT count(*) FROM errand.jobs j WHERE j.workspace_id = t.id AND j.status = 'processing'),
		(SELECT count(*) FROM errand.jobs j WHERE j.workspace_id = t.id AND j.status = 'failed')
	FROM top t
	LEFT JOIN errand.plans pl ON pl.plan = t.plan
	ORDER BY t.paused_at IS NULL, t.pending DESC, t.slug, t.id`, limit)
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (WorkspaceStatus, error) {
		var w WorkspaceStatus
		err := row.Scan(&w.WorkspaceID, &w.Slug, &w.Name, &w.PausedAt, &w.Plan, &w.Weight, &w.Concurrency, &w.Pending, &w.Processing, &w.Failed)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return list, nil
}

// QueueStats is one queue's figures for `errand stats`.
type QueueStats struct {
	Queue      string        `json:"queue"`
	Pending    int64         `json:"pending"`
	Due        int64         `json:"due"`
	Processing int64         `json:"processing"`
	OldestDue  time.Duration `json:"oldest_due_ns"`
	// Held is how many of the pending jobs are held by paused workspaces;
	// Due and OldestDue leave them out (no worker may take them).
	Held int64 `json:"held"`
	// Finished in the last hour: since the start of the minute an hour
	// ago (60 to 61 minutes).
	CompletedLastHour int64 `json:"completed_last_hour"`
	FailedLastHour    int64 `json:"failed_last_hour"`
	// Completed in the last minute, per second.
	PerSecond float64 `json:"per_second"`
}

// Stats is every queue's backlog (PendingByQueue) with what it finished in
// the last hour and minute. The hour is read mostly from errand.queue_counts,
// the per-minute counts the leader's roll-up keeps (migration 032), and from
// River's rows only after the roll-up's watermark (a minute or two of them)
// and for the last minute: its cost follows a couple of minutes' throughput,
// not the hour's, nor the retention.
func Stats(ctx context.Context, db DB) ([]QueueStats, error) {
	backlog, err := pendingByQueue(ctx, db, false)
	if err != nil {
		return nil, err
	}
	byQueue := map[string]*QueueStats{}
	var out []*QueueStats
	get := func(q string) *QueueStats {
		if s, ok := byQueue[q]; ok {
			return s
		}
		s := &QueueStats{Queue: q}
		byQueue[q] = s
		out = append(out, s)
		return s
	}
	for _, b := range backlog {
		s := get(b.Queue)
		s.Pending, s.Due, s.Processing, s.OldestDue, s.Held = b.Pending, b.Due, b.Processing, b.OldestDue, b.Held
	}
	// Without JIT: behind a bound known only at run time PostgreSQL
	// expects a third of the hour's rows, and at a few hundred jobs/s that
	// estimate crosses jit_above_cost, compiling the query on every call
	// (15 to 90 ms) to read a minute or two of rows.
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only; a failed rollback leaves nothing
	if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	rows, err := tx.Query(ctx, finishedByQueueSQL)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	var q string
	var completed, failed, lastMinute int64
	_, err = pgx.ForEachRow(rows, []any{&q, &completed, &failed, &lastMinute}, func() error {
		s := get(q)
		s.CompletedLastHour, s.FailedLastHour, s.PerSecond = completed, failed, float64(lastMinute)/60
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	list := make([]QueueStats, 0, len(out))
	for _, s := range out {
		list = append(list, *s)
	}
	slices.SortFunc(list, func(a, b QueueStats) int { return strings.Compare(a.Queue, b.Queue) })
	return list, nil
}

// finishedByQueueSQL counts what each queue finished in the last hour and
// minute. The hour is every whole minute since the one an hour ago began (60
// to 61 minutes): errand.queue_counts up to the roll-up's watermark, River's
// rows after it (a range of River's (state, finalized_at) index). Without a
// roll-up in the hour (no daemon ran) every finished job of the hour is read
// from River's rows, as before 032. The last minute is always River's rows.
const finishedByQueueSQL = `
	WITH m AS (
		SELECT date_bin('1 minute', now() - interval '1 hour', timestamptz 'epoch') AS since,
			(SELECT m.counted_until FROM errand.job_counts_watermark m) AS counted_until
	), w AS (
		-- A watermark ahead of the database's clock (a horizon given by
		-- hand) has minutes missing before it: River's rows, for the hour.
		SELECT m.since, m.counted_until <= now() AS rolled,
			-- (A job finalized at since exactly is counted: minutes start at since.)
			CASE WHEN m.counted_until <= now() THEN greatest(m.counted_until, m.since - interval '1 microsecond')
			     ELSE m.since - interval '1 microsecond' END AS mark
		FROM m
	), rolled AS (
		SELECT c.queue,
			sum(c.count) FILTER (WHERE c.state = 'completed') AS completed,
			sum(c.count) FILTER (WHERE c.state <> 'completed') AS failed
		FROM errand.queue_counts c, w
		WHERE c.minute >= w.since AND w.rolled
		GROUP BY c.queue
	), live AS (
		SELECT j.queue,
			count(*) FILTER (WHERE j.state = 'completed' AND j.finalized_at > w.mark) AS completed,
			count(*) FILTER (WHERE j.state <> 'completed' AND j.finalized_at > w.mark) AS failed,
			count(*) FILTER (WHERE j.state = 'completed' AND j.finalized_at > now() - interval '1 minute') AS last_minute
		FROM errand.river_job j, w
		WHERE j.state IN ('completed', 'discarded', 'cancelled')
		  AND j.finalized_at > least(w.mark, now() - interval '1 minute')
		  -- Implied by the line above (mark is at least since); it is
		  -- here for the planner, which cannot estimate a bound known only
		  -- at run time and would otherwise expect a third of the table.
		  AND j.finalized_at >= now() - interval '61 minutes'
		GROUP BY j.queue
	)
	SELECT coalesce(r.queue, l.queue),
		(coalesce(r.completed, 0) + coalesce(l.completed, 0))::bigint,
		(coalesce(r.failed, 0) + coalesce(l.failed, 0))::bigint,
		coalesce(l.last_minute, 0)
	FROM rolled r FULL JOIN live l ON l.queue = r.queue`
