package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The queries operations and fairness run over errand.jobs: listings by
// workspace, kind and status, and the backlog per queue and per workspace.
// Each is shaped for an index of migrations/011_status_indexes.sql (the
// reasons, and what each index costs, are in docs/scale.md), and
// store/watch_test.go asserts its plan. The README's "Watch" section shows
// them for apps and ops to copy.

// The four values of errand.jobs.status.
const (
	StatusPending    = "pending"    // River's available, scheduled, retryable, pending
	StatusProcessing = "processing" // running
	StatusCompleted  = "completed"
	StatusFailed     = "failed" // discarded or cancelled
)

// Job is one row of errand.jobs, as listings show it.
type Job struct {
	ID          int64
	WorkspaceID string // "" for errand's own jobs (a schedule's tick), which belong to no workspace
	Kind        string
	Queue       string
	Status      string
	Attempt     int
	MaxAttempts int
	LastError   string // the latest attempt's error, kept after a later success
	RunAt       time.Time
	CreatedAt   time.Time
	StartedAt   *time.Time // the latest attempt's start; nil before the first
	FinishedAt  *time.Time
}

// JobFilter selects jobs for Jobs. The zero value lists the newest jobs of
// every workspace.
type JobFilter struct {
	WorkspaceID string // "" for every workspace
	Kind        string // "" for every kind
	Status      string // one of the Status constants, "" for any
	BeforeID    int64  // only jobs with a smaller id (the next page); 0 for the newest
	Limit       int    // 0 means 50; at most 1000
}

// Jobs lists the jobs f selects, newest (highest id) first. id is the
// enqueue order, and the indexes carry it: a status, a workspace and a
// status, or a kind and a status each read only the rows they return.
func Jobs(ctx context.Context, db DB, f JobFilter) ([]Job, error) {
	sql, args, err := jobsQuery(f)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Job, error) {
		var j Job
		err := row.Scan(&j.ID, &j.WorkspaceID, &j.Kind, &j.Queue, &j.Status, &j.Attempt, &j.MaxAttempts,
			&j.LastError, &j.RunAt, &j.CreatedAt, &j.StartedAt, &j.FinishedAt)
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return list, nil
}

// jobsQuery builds the listing: each filter adds one condition, so every
// combination is one of the shapes the indexes serve. The status is written
// as a literal (one of four fixed words, never the caller's text): the
// indexes across workspaces leave completed jobs out, and the planner uses
// them only when it can see, in the statement itself, that the status is
// another one (also in a prepared statement's generic plan).
func jobsQuery(f JobFilter) (string, []any, error) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > 1000:
		return "", nil, fmt.Errorf("list jobs: limit must be 1 to 1000, got %d", f.Limit)
	}
	status, ok := statusLiteral(f.Status)
	if !ok {
		return "", nil, fmt.Errorf("list jobs: unknown status %q (want pending, processing, completed or failed)", f.Status)
	}
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if f.WorkspaceID != "" {
		add("workspace_id = $?::uuid", f.WorkspaceID)
	}
	if f.Kind != "" {
		add("kind = $?", f.Kind)
	}
	if status != "" {
		where = append(where, "status = "+status)
	}
	if f.BeforeID > 0 {
		add("id < $?", f.BeforeID)
	}
	var sql strings.Builder
	sql.WriteString(`SELECT id, coalesce(workspace_id::text, ''), kind, queue, status, attempt, max_attempts, coalesce(last_error, ''),
		run_at, created_at, started_at, finished_at
	FROM errand.jobs`)
	if len(where) > 0 {
		sql.WriteString("\n\tWHERE " + strings.Join(where, " AND "))
	}
	args = append(args, limit)
	sql.WriteString("\n\tORDER BY id DESC LIMIT $" + strconv.Itoa(len(args)))
	return sql.String(), args, nil
}

// statusLiteral is status as an SQL literal ("" for any status), and false
// for anything that is not one of the four.
func statusLiteral(status string) (string, bool) {
	switch status {
	case "":
		return "", true
	case StatusPending, StatusProcessing, StatusCompleted, StatusFailed:
		return "'" + status + "'", true
	}
	return "", false
}

// Backlog is the work waiting in a queue or a workspace.
type Backlog struct {
	Pending int64 // every pending job, those scheduled for later and held included
	// Due are pending jobs whose run_at has come, those a workspace's
	// concurrency cap holds back included (QueueBacklog.Startable leaves
	// them out).
	Due        int64
	Processing int64 // running jobs
	// Held are pending jobs no worker may take whatever the time: River's
	// pending state, where a paused workspace's jobs wait (errand workspaces
	// pause). They are in Pending, not in Due or OldestDue.
	Held int64
	// OldestDue is how long the longest-waiting due job has waited since its
	// run_at (0 when none is due): the backlog's latency, which a job
	// scheduled for tomorrow does not inflate.
	OldestDue time.Duration
}

// QueueBacklog is one queue's Backlog.
type QueueBacklog struct {
	Queue string
	Backlog
	// Startable are the due jobs a worker may start now: available ones
	// within their workspace's concurrency cap (errand.queue_startable);
	// a capped workspace's flood counts as its room, not as its size.
	// OldestStartable is how long the longest-waiting of them has waited.
	Startable       int64
	OldestStartable time.Duration
}

// WorkspaceBacklog is one workspace's Backlog.
type WorkspaceBacklog struct {
	WorkspaceID string
	Backlog
}

// The backlog's columns over the pending and processing rows, which one
// range of river_job_status_idx holds however many finished jobs are kept.
const backlogColumns = `count(*) FILTER (WHERE status = 'pending'),
		count(*) FILTER (WHERE status = 'pending' AND run_at <= now() AND river_state <> 'pending'),
		count(*) FILTER (WHERE status = 'processing'),
		coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'pending' AND run_at <= now() AND river_state <> 'pending')), 0)::float8,
		count(*) FILTER (WHERE river_state = 'pending')`

// PendingByQueue is every queue's backlog, by queue name; queues with
// nothing pending or running are left out. It is the queue depth for
// metrics and autoscaling.
func PendingByQueue(ctx context.Context, db DB) ([]QueueBacklog, error) {
	return pendingByQueue(ctx, db, true)
}

// pendingByQueue leaves Startable and OldestStartable zero without
// startable (errand stats, which does not show them).
func pendingByQueue(ctx context.Context, db DB, startable bool) ([]QueueBacklog, error) {
	startableColumns, startableJoin := "0::bigint, 0::float8", ""
	if startable {
		startableColumns = "s.jobs, coalesce(extract(epoch FROM now() - s.oldest_run_at), 0)::float8"
		startableJoin = "CROSS JOIN LATERAL errand.queue_startable(b.queue) s"
	}
	rows, err := db.Query(ctx, `
	SELECT b.*, `+startableColumns+`
	FROM (SELECT queue, `+backlogColumns+`
	      FROM errand.jobs
	      WHERE status IN ('pending', 'processing')
	      GROUP BY queue) b
	`+startableJoin+`
	ORDER BY b.queue`)
	if err != nil {
		return nil, fmt.Errorf("pending by queue: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (QueueBacklog, error) {
		var q QueueBacklog
		var oldest, oldestStartable float64
		err := row.Scan(&q.Queue, &q.Pending, &q.Due, &q.Processing, &oldest, &q.Held, &q.Startable, &oldestStartable)
		q.OldestDue, q.OldestStartable = seconds(oldest), seconds(oldestStartable)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("pending by queue: %w", err)
	}
	return list, nil
}

// PendingByWorkspace is the backlog of the limit workspaces with the most
// pending jobs (ties by id), for fairness and a bounded top-N in metrics.
// errand's own jobs (a schedule's tick), which belong to no workspace, are
// not in it.
func PendingByWorkspace(ctx context.Context, db DB, limit int) ([]WorkspaceBacklog, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending by workspace: limit must be positive, got %d", limit)
	}
	rows, err := db.Query(ctx, `
	SELECT workspace_id::text, `+backlogColumns+`
	FROM errand.jobs
	WHERE status IN ('pending', 'processing') AND workspace_id IS NOT NULL
	GROUP BY workspace_id
	ORDER BY 2 DESC, 1
	LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("pending by workspace: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (WorkspaceBacklog, error) {
		var w WorkspaceBacklog
		var oldest float64
		err := row.Scan(&w.WorkspaceID, &w.Pending, &w.Due, &w.Processing, &oldest, &w.Held)
		w.OldestDue = seconds(oldest)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("pending by workspace: %w", err)
	}
	return list, nil
}

// WorkspacePending is one workspace's backlog, however many jobs it has
// finished.
func WorkspacePending(ctx context.Context, db DB, workspaceID string) (Backlog, error) {
	var b Backlog
	var oldest float64
	err := db.QueryRow(ctx, `
	SELECT `+backlogColumns+`
	FROM errand.jobs
	WHERE workspace_id = $1::uuid AND status IN ('pending', 'processing')`, workspaceID).
		Scan(&b.Pending, &b.Due, &b.Processing, &oldest, &b.Held)
	if err != nil {
		return b, fmt.Errorf("pending of workspace %s: %w", workspaceID, err)
	}
	b.OldestDue = seconds(oldest)
	return b, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Leader is the id of River's elected leader whose term has not expired,
// or "" when there is none.
func Leader(ctx context.Context, db DB) (string, error) {
	var id string
	err := db.QueryRow(ctx, `SELECT leader_id FROM errand.river_leader WHERE expires_at > now() LIMIT 1`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("river leader: %w", err)
	}
	return id, nil
}
