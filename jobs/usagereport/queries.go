package usagereport

// The kind's queries (tables in migrations 013_schedules.sql and
// 029_usage_rollup.sql). The tick runs unscoped; the job reads and writes in
// its workspace's scope, and filters errand.job_counts by workspace
// explicitly as well.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

func anyWorkspace(ctx context.Context, db store.DB) (bool, error) {
	var ok bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.workspaces)`).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for workspaces: %w", err)
	}
	return ok, nil
}

// enqueueReports enqueues one usage_report.generate per workspace for week
// through the SQL contract, unique per workspace and week.
//
// A tick in the future (`errand schedules tick --future`) gives each job
// its time as as_of, so the report does not wait for the week to end on
// the database's clock; a tick of now gives none (an older replica, whose
// strict args know no as_of, works the job during a rolling deploy).
func enqueueReports(ctx context.Context, tx pgx.Tx, week string, at time.Time) (int, error) {
	var ids []string
	if err := store.ForEachWorkspace(ctx, tx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `
		INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key)
		SELECT w, $2, jsonb_build_object('week', $3::text)
		           || CASE WHEN $4::timestamptz > now() THEN jsonb_build_object('as_of', $4::timestamptz) ELSE '{}' END,
		       'usage_report/' || $3
		FROM unnest($1::uuid[]) AS w`, ids, Name, week, at)
	if err != nil {
		return 0, fmt.Errorf("enqueue usage reports: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// rollUp counts the jobs finalized since the leader's last roll-up (see
// internal/maintenance/jobcounts.go), so a report that runs before it (the
// first replica back after downtime on a Monday morning) still finds the
// week's last jobs counted. A concurrent roll-up is waited for.
func rollUp(ctx context.Context, db store.DB) error {
	if _, err := db.Exec(ctx, `SELECT errand.roll_up_job_counts()`); err != nil {
		return fmt.Errorf("roll up job counts: %w", err)
	}
	return nil
}

func reportExists(ctx context.Context, tx pgx.Tx, week string) (bool, error) {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.usage_reports WHERE week = $1)`, week).Scan(&ok); err != nil {
		return false, fmt.Errorf("read usage report: %w", err)
	}
	return ok, nil
}

// summarize reads the scoped workspace's week starting at from.
func summarize(ctx context.Context, tx pgx.Tx, workspaceID, week string, from time.Time) (Summary, error) {
	to := from.AddDate(0, 0, 7)
	s := Summary{Week: week, From: from.Format(time.DateOnly), To: to.AddDate(0, 0, -1).Format(time.DateOnly), Metrics: []Metric{}, Jobs: []Jobs{}}
	ws, err := store.CurrentWorkspace(ctx, tx)
	if err != nil {
		return s, err
	}
	s.Plan = ws.Plan

	metrics := map[string]*Metric{}
	metric := func(name string) *Metric {
		if metrics[name] == nil {
			metrics[name] = &Metric{Metric: name, Daily: make([]int64, 7)}
		}
		return metrics[name]
	}
	// The week before is 168 hours, not '7 days': day arithmetic follows
	// the session's TimeZone, and on a server whose zone has daylight saving
	// time the week before a change would gain or lose an hour.
	rows, err := tx.Query(ctx, `
		SELECT metric, floor(extract(epoch FROM occurred_at - $1) / 86400)::int AS day, sum(quantity)::bigint
		FROM errand.usage_events
		WHERE occurred_at >= $1 - interval '168 hours' AND occurred_at < $2
		GROUP BY 1, 2`, from, to)
	if err != nil {
		return s, fmt.Errorf("read usage: %w", err)
	}
	var name string
	var day int
	var qty int64
	_, err = pgx.ForEachRow(rows, []any{&name, &day, &qty}, func() error {
		m := metric(name)
		if day < 0 {
			m.Previous += qty
		} else {
			m.Total += qty
			m.Daily[day] += qty
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("read usage: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT metric, weekly_limit FROM errand.plan_limits WHERE plan = $1`, ws.Plan)
	if err != nil {
		return s, fmt.Errorf("read plan limits: %w", err)
	}
	var limit int64
	_, err = pgx.ForEachRow(rows, []any{&name, &limit}, func() error {
		l := limit
		metric(name).Limit = &l
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("read plan limits: %w", err)
	}
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range metrics {
			if !yield(k) {
				return
			}
		}
	}) {
		m := metrics[n]
		m.Change = m.Total - m.Previous
		m.ChangePct = pct(m.Change, m.Previous)
		if m.Limit != nil {
			m.LimitUsedPct = pct(m.Total, *m.Limit)
		}
		s.Metrics = append(s.Metrics, *m)
	}

	// Jobs from errand.job_counts, which outlives River's cleaner (River's
	// own rows of the week are mostly deleted by Monday 08:00). The report's
	// own jobs and digest.send's (origin <> '') are errand's bookkeeping,
	// not the workspace's activity.
	rows, err = tx.Query(ctx, `
		SELECT kind,
		       CASE state WHEN 'completed' THEN 'completed' ELSE 'failed' END AS status,
		       sum(count)::bigint
		FROM errand.job_counts
		WHERE workspace_id = $1 AND day >= $2::date AND day < $3::date AND origin = ''
		GROUP BY 1, 2 ORDER BY 1, 2`, workspaceID, from.Format(time.DateOnly), to.Format(time.DateOnly))
	if err != nil {
		return s, fmt.Errorf("read jobs: %w", err)
	}
	if s.Jobs, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Jobs]); err != nil {
		return s, fmt.Errorf("read jobs: %w", err)
	}
	for _, j := range s.Jobs {
		if j.Kind != invoiceKind {
			continue
		}
		if j.Status == "completed" {
			s.Invoices.Rendered += j.Count
		} else {
			s.Invoices.Failed += j.Count
		}
	}
	// The report's own emails (template usage_report) are left out, as its
	// jobs are.
	err = tx.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE status IN ('sent', 'captured')), count(*) FILTER (WHERE status = 'failed')
		FROM errand.emails WHERE created_at >= $1 AND created_at < $2 AND template <> $3`, from, to, Template).Scan(&s.Emails.Sent, &s.Emails.Failed)
	if err != nil {
		return s, fmt.Errorf("read emails: %w", err)
	}
	err = tx.QueryRow(ctx, `
		SELECT count(DISTINCT (message_id, endpoint_id)) FILTER (WHERE status_code BETWEEN 200 AND 299),
		       count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299)
		FROM errand.webhook_attempts WHERE created_at >= $1 AND created_at < $2`, from, to).Scan(&s.Webhooks.Delivered, &s.Webhooks.FailedAttempts)
	if err != nil {
		return s, fmt.Errorf("read webhook deliveries: %w", err)
	}
	var used bool
	for _, m := range s.Metrics {
		used = used || m.Total > 0
	}
	s.Empty = !used && len(s.Jobs) == 0 && s.Emails == (Emails{}) && s.Webhooks == (Webhooks{})
	return s, nil
}

func storeReport(ctx context.Context, tx pgx.Tx, week string, s Summary, jobID int64) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO errand.usage_reports (workspace_id, week, summary, job_id)
		VALUES (current_setting('app.current_workspace_id')::uuid, $1, $2, $3)`, week, b, jobID)
	if err != nil {
		return fmt.Errorf("store usage report: %w", err)
	}
	return nil
}

// recipients are the scoped workspace's owners and admins, at most 50
// (email.send's limit), owners first.
func recipients(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, `
		SELECT u.email FROM errand.workspace_members m JOIN errand.users u ON u.id = m.user_id
		WHERE m.role IN ('owner', 'admin')
		ORDER BY m.role = 'owner' DESC, u.email LIMIT 50`)
	if err != nil {
		return nil, fmt.Errorf("read report recipients: %w", err)
	}
	to, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read report recipients: %w", err)
	}
	return to, nil
}

func enqueueEmail(ctx context.Context, tx pgx.Tx, workspaceID string, to []string, data map[string]any, key string) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key)
		VALUES ($1, 'email.send', jsonb_build_object('to', to_jsonb($2::text[]), 'template', $3::text, 'data', $4::jsonb), $5)`,
		workspaceID, to, Template, data, key)
	if err != nil {
		return fmt.Errorf("enqueue usage report email: %w", err)
	}
	return nil
}
