package usagereport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/usagereport"
)

// daemonEnv: frequent polls; the leader's own ticks off, so only the
// test's ticks (--schedule) move time.
var daemonEnv = map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func member(t *testing.T, pool *pgxpool.Pool, ws, email, role string) {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.users (email) VALUES ($1) RETURNING id::text`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	exec(t, pool, `INSERT INTO errand.workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)`, ws, id, role)
}

func event(t *testing.T, pool *pgxpool.Pool, ws, metric string, qty int, at string) {
	t.Helper()
	exec(t, pool, `INSERT INTO errand.usage_events (workspace_id, metric, quantity, occurred_at) VALUES ($1, $2, $3, $4)`, ws, metric, qty, at)
}

// tick runs `errand schedules tick --at at --schedule usage_reports` and
// waits until every job has ended.
func tick(t *testing.T, url string, pool *pgxpool.Pool, at string) string {
	t.Helper()
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"schedules", "tick", "--future", "--at", at, "--schedule", "usage_reports"},
		errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out)
	if err != nil {
		t.Fatalf("tick: %v\n%s", err, out.String())
	}
	deadline := time.Now().Add(60 * time.Second)
	for count(t, pool, `SELECT count(*) FROM errand.jobs WHERE status IN ('pending', 'processing')`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("jobs pending after 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'usage_report.generate' AND status = 'failed'`); n > 0 {
		t.Fatalf("%d usage_report.generate jobs failed", n)
	}
	return out.String()
}

// generated is how many usage_report.generate jobs of workspace ws for
// week completed: a report skipped as empty is still a job that ran.
func generated(t *testing.T, pool *pgxpool.Pool, ws, week string) int {
	t.Helper()
	return count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'usage_report.generate' AND status = 'completed'
		AND workspace_id = $1 AND args ->> 'week' = $2`, ws, week)
}

// countFrom2030 makes the leader's job counting (errand.job_counts, which
// follows the database's clock) leave the test's jobs to the test: they run
// now, are moved into 2030 and are counted by rollUp.
func countFrom2030(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	exec(t, pool, `UPDATE errand.job_counts_watermark SET counted_until = '2030-01-01T00:00:00Z'`)
}

// rollUp counts the jobs finalized up to upto, as the leader's roll-up does
// a minute behind the clock, and returns how many.
func rollUp(t *testing.T, pool *pgxpool.Pool, upto string) int {
	t.Helper()
	return count(t, pool, `SELECT errand.roll_up_job_counts($1)`, upto)
}

// ranAt moves every job and email made in real time (not yet moved into
// 2030) to at, as if they had run then.
func ranAt(t *testing.T, pool *pgxpool.Pool, at string) {
	t.Helper()
	exec(t, pool, `UPDATE errand.river_job SET created_at = $1, scheduled_at = $1, finalized_at = CASE WHEN finalized_at IS NOT NULL THEN $1::timestamptz END
		WHERE created_at < '2029-01-01'`, at)
	exec(t, pool, `UPDATE errand.emails SET created_at = $1 WHERE created_at < '2029-01-01'`, at)
}

func summary(t *testing.T, pool *pgxpool.Pool, ws, week string) map[string]any {
	t.Helper()
	var b []byte
	err := pool.QueryRow(context.Background(), `SELECT summary FROM errand.usage_reports WHERE workspace_id = $1 AND week = $2`, ws, week).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// The report's numbers against a hand-computed fixture: the week's edges
// (Monday 00:00 in, the next Monday 00:00 out), the previous week, another
// workspace's events left out, plan limits, and errand's own activity.
func TestReportNumbersMatchTheFixture(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	countFrom2030(t, pool)
	acme := errandtest.NewWorkspace(t, pool, "acme")
	globex := errandtest.NewWorkspace(t, pool, "globex")
	exec(t, pool, `UPDATE errand.workspaces SET plan = 'pro' WHERE id = $1`, acme)
	exec(t, pool, `INSERT INTO errand.plan_limits (plan, metric, weekly_limit) VALUES ('pro', 'api_calls', 1000), ('pro', 'seats', 10), ('free', 'api_calls', 100)`)
	member(t, pool, acme, "carl@example.com", "member")
	member(t, pool, acme, "bob@example.com", "admin")
	member(t, pool, acme, "ann@example.com", "owner")

	// Week 2030-W02: Monday 2030-01-07 to Sunday 2030-01-13.
	event(t, pool, acme, "api_calls", 100, "2030-01-07T00:00:00Z") // Monday, the first instant
	event(t, pool, acme, "api_calls", 50, "2030-01-08T12:00:00Z")
	event(t, pool, acme, "api_calls", 25, "2030-01-13T23:59:59Z")  // Sunday, the last second
	event(t, pool, acme, "api_calls", 999, "2030-01-14T00:00:00Z") // the next week
	event(t, pool, acme, "api_calls", 80, "2030-01-06T23:59:59Z")  // the previous week
	event(t, pool, acme, "api_calls", 20, "2029-12-31T00:00:00Z")  // the previous week's first instant
	event(t, pool, acme, "api_calls", 7, "2029-12-30T23:00:00Z")   // two weeks ago
	event(t, pool, acme, "storage_gb", 3, "2030-01-09T10:00:00Z")
	event(t, pool, acme, "exports", 4, "2030-01-02T10:00:00Z")
	event(t, pool, globex, "api_calls", 500, "2030-01-08T12:00:00Z")

	// errand's own activity in the week: jobs, emails, webhook attempts.
	for _, args := range []string{`{}`, `{}`} {
		errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, acme, "ping", args), 30*time.Second, "completed")
	}
	var failing int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, 'ping', '{"fail_times": 3}', 1) RETURNING id`, acme).Scan(&failing); err != nil {
		t.Fatal(err)
	}
	errandtest.WaitJob(t, pool, failing, 30*time.Second, "failed")
	errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, globex, "ping", `{}`), 30*time.Second, "completed")
	exec(t, pool, `UPDATE errand.river_job SET created_at = '2030-01-08T10:00:00Z', finalized_at = '2030-01-08T10:00:01Z' WHERE kind = 'ping'`)
	rollUp(t, pool, "2030-01-14T07:59:00Z")
	exec(t, pool, `INSERT INTO errand.emails (workspace_id, template, status, created_at) VALUES
		($1, 'invite', 'sent', '2030-01-08T10:00:00Z'), ($1, 'invite', 'captured', '2030-01-09T10:00:00Z'),
		($1, 'invite', 'failed', '2030-01-10T10:00:00Z'), ($1, 'invite', 'sent', '2030-01-14T10:00:00Z'),
		($2, 'invite', 'sent', '2030-01-08T10:00:00Z')`, acme, globex)
	exec(t, pool, `INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, status_code, latency_ms, created_at) VALUES
		($1, '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 1, 1, 500, 10, '2030-01-08T10:00:00Z'),
		($1, '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 1, 2, 200, 10, '2030-01-08T10:05:00Z'),
		($1, '10000000-0000-4000-8000-000000000002', '20000000-0000-4000-8000-000000000001', 2, 1, NULL, 10, '2030-01-09T10:00:00Z')`, acme)

	if out := tick(t, url, pool, "2030-01-14T08:00:00Z"); !strings.Contains(out, "usage_reports\t2030-01-14T08:00:00Z\tenqueued") {
		t.Fatalf("tick: %s", out)
	}
	want := decode(t, `{
		"week": "2030-W02", "from": "2030-01-07", "to": "2030-01-13", "plan": "pro", "empty": false,
		"metrics": [
			{"metric": "api_calls", "total": 175, "previous": 100, "change": 75, "change_pct": 75, "daily": [100, 50, 0, 0, 0, 0, 25], "limit": 1000, "limit_used_pct": 17.5},
			{"metric": "exports", "total": 0, "previous": 4, "change": -4, "change_pct": -100, "daily": [0, 0, 0, 0, 0, 0, 0], "limit": null, "limit_used_pct": null},
			{"metric": "seats", "total": 0, "previous": 0, "change": 0, "change_pct": null, "daily": [0, 0, 0, 0, 0, 0, 0], "limit": 10, "limit_used_pct": 0},
			{"metric": "storage_gb", "total": 3, "previous": 0, "change": 3, "change_pct": null, "daily": [0, 0, 3, 0, 0, 0, 0], "limit": null, "limit_used_pct": null}
		],
		"jobs": [{"kind": "ping", "status": "completed", "count": 2}, {"kind": "ping", "status": "failed", "count": 1}],
		"emails": {"sent": 2, "failed": 1},
		"webhooks": {"delivered": 1, "failed_attempts": 2},
		"invoices": {"rendered": 0, "failed": 0}
	}`)
	if got := summary(t, pool, acme, "2030-W02"); !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		t.Errorf("acme's report:\n%s", g)
	}
	g := summary(t, pool, globex, "2030-W02")
	if g == nil || g["plan"] != "free" || len(g["metrics"].([]any)) != 1 || g["metrics"].([]any)[0].(map[string]any)["total"] != 500.0 ||
		g["metrics"].([]any)[0].(map[string]any)["limit_used_pct"] != 500.0 {
		t.Errorf("globex's report %v", g)
	}

	// Emailed once to the owners and admins, owners first.
	var to, subject, text string
	err := pool.QueryRow(context.Background(), `SELECT array_to_string(recipients, ','), subject, text FROM errand.emails
		WHERE template = 'usage_report' AND workspace_id = $1`, acme).Scan(&to, &subject, &text)
	if err != nil {
		t.Fatal(err)
	}
	if to != "ann@example.com,bob@example.com" || subject != "ACME usage report, 2030-W02" ||
		!strings.Contains(text, "- api_calls: 175 (previous week 100, 75%), 1000 limit, 17.5% used") ||
		!strings.Contains(text, "\nInvoices: 0 rendered, 0 failed.") {
		t.Errorf("email to %s, %q:\n%s", to, subject, text)
	}
	// Again: the period ran; a second job for the week changes nothing.
	if out := tick(t, url, pool, "2030-01-14T09:00:00Z"); !strings.Contains(out, "already ran") {
		t.Errorf("tick again: %s", out)
	}
	errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, acme, usagereport.Name, `{"week": "2030-W02"}`), 30*time.Second, "completed")
	if n := count(t, pool, `SELECT count(*) FROM errand.emails WHERE template = 'usage_report'`); n != 1 {
		t.Errorf("%d report emails, want 1 (globex has no owner)", n)
	}
}

// A workspace with no activity gets a short, correct report, or none with
// ERRAND_USAGE_REPORTS_SKIP_EMPTY.
func TestQuietWorkspace(t *testing.T) {
	for _, skip := range []bool{false, true} {
		url, pool := errandtest.MigratedDB(t)
		env := map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"}
		if skip {
			env["ERRAND_USAGE_REPORTS_SKIP_EMPTY"] = "true"
		}
		errandtest.StartDaemon(t, url, env)
		ws := errandtest.NewWorkspace(t, pool, "quiet")
		member(t, pool, ws, "ann@example.com", "owner")
		tick(t, url, pool, "2030-01-14T08:00:00Z")
		got := summary(t, pool, ws, "2030-W02")
		if n := generated(t, pool, ws, "2030-W02"); n != 1 {
			t.Fatalf("skip empty %v: %d report jobs completed for the quiet week, want 1", skip, n)
		}
		if skip {
			if got != nil || count(t, pool, `SELECT count(*) FROM errand.emails`) != 0 {
				t.Errorf("skip empty: report %v", got)
			}
			continue
		}
		want := decode(t, `{"week": "2030-W02", "from": "2030-01-07", "to": "2030-01-13", "plan": "free", "empty": true,
			"metrics": [], "jobs": [], "emails": {"sent": 0, "failed": 0}, "webhooks": {"delivered": 0, "failed_attempts": 0},
			"invoices": {"rendered": 0, "failed": 0}}`)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("quiet workspace's report %v", got)
		}
		var text string
		if err := pool.QueryRow(context.Background(), `SELECT text FROM errand.emails WHERE template = 'usage_report'`).Scan(&text); err != nil || !strings.Contains(text, "No usage recorded this week.") {
			t.Errorf("email %q %v", text, err)
		}
	}
}

// River's cleaner deletes completed jobs after 24 h and failed ones after
// 7 days; the report runs on Monday 08:00. Jobs counted as they finished
// (errand.job_counts) are in the report although River's rows are gone,
// invoice renders among them, and counting again counts nothing twice.
func TestJobsDeletedByRiversCleanerAreStillReported(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	countFrom2030(t, pool)
	acme := errandtest.NewWorkspace(t, pool, "acme")

	for range 2 {
		errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, acme, "ping", `{}`), 30*time.Second, "completed")
	}
	var failing int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, 'ping', '{"fail_times": 3}', 1) RETURNING id`, acme).Scan(&failing); err != nil {
		t.Fatal(err)
	}
	errandtest.WaitJob(t, pool, failing, 30*time.Second, "failed")
	var invoice string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency) VALUES ($1, 'INV-1', 'Ann', 'EUR') RETURNING id::text`, acme).Scan(&invoice); err != nil {
		t.Fatal(err)
	}
	exec(t, pool, `INSERT INTO errand.invoice_items (invoice_id, workspace_id, description, unit_amount) VALUES ($1, $2, 'Seats', 1200)`, invoice, acme)
	errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, acme, "invoice.render", `{"invoice_id": "`+invoice+`"}`), 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, acme, "invoice.render", `{"invoice_id": "00000000-0000-4000-8000-00000000000f"}`), 30*time.Second, "failed")

	// In week 2030-W02: the completed jobs on Tuesday, the failed ones on
	// Monday 05:00, more than 7 days before the report.
	ranAt(t, pool, "2030-01-08T10:00:00Z")
	exec(t, pool, `UPDATE errand.river_job SET created_at = '2030-01-07T05:00:00Z', finalized_at = '2030-01-07T05:00:00Z' WHERE state IN ('discarded', 'cancelled')`)
	if n := rollUp(t, pool, "2030-01-14T07:59:00Z"); n != 5 {
		t.Errorf("rolled up %d jobs, want 5", n)
	}
	if n := rollUp(t, pool, "2030-01-14T07:59:00Z"); n != 0 {
		t.Errorf("rolled up %d jobs again, want 0", n)
	}
	if n := rollUp(t, pool, "2030-01-14T07:59:30Z"); n != 0 {
		t.Errorf("rolled up %d jobs in a later round, want 0", n)
	}
	// River's cleaner at the report's time, with the default retention.
	exec(t, pool, `DELETE FROM errand.river_job
		WHERE (state = 'completed' AND finalized_at < '2030-01-14T08:00:00Z'::timestamptz - interval '24 hours')
		   OR (state IN ('discarded', 'cancelled') AND finalized_at < '2030-01-14T08:00:00Z'::timestamptz - interval '168 hours')`)
	if n := count(t, pool, `SELECT count(*) FROM errand.river_job WHERE kind IN ('ping', 'invoice.render')`); n != 0 {
		t.Fatalf("%d jobs left by the cleaner", n)
	}

	tick(t, url, pool, "2030-01-14T08:00:00Z")
	got := summary(t, pool, acme, "2030-W02")
	want := decode(t, `{"jobs": [
			{"kind": "invoice.render", "status": "completed", "count": 1}, {"kind": "invoice.render", "status": "failed", "count": 1},
			{"kind": "ping", "status": "completed", "count": 2}, {"kind": "ping", "status": "failed", "count": 1}],
		"invoices": {"rendered": 1, "failed": 1}, "empty": false}`)
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

// A report's own job and email, and digest.send's job, are errand's
// bookkeeping, not the workspace's activity: a quiet week after a report
// is empty, and with ERRAND_USAGE_REPORTS_SKIP_EMPTY gets no report, week
// after week.
func TestQuietWeeksAfterAReportAreEmpty(t *testing.T) {
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip empty %v", skip), func(t *testing.T) {
			url, pool := errandtest.MigratedDB(t)
			env := map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off",
				"ERRAND_USAGE_REPORTS_SKIP_EMPTY": strconv.FormatBool(skip)}
			errandtest.StartDaemon(t, url, env)
			countFrom2030(t, pool)
			ws := errandtest.NewWorkspace(t, pool, "acme")
			member(t, pool, ws, "ann@example.com", "owner")
			var ann string
			if err := pool.QueryRow(context.Background(), `SELECT id::text FROM errand.users WHERE email = 'ann@example.com'`).Scan(&ann); err != nil {
				t.Fatal(err)
			}

			// 2030-W02 has usage: a report, emailed on Monday 08:00.
			event(t, pool, ws, "api_calls", 5, "2030-01-08T10:00:00Z")
			tick(t, url, pool, "2030-01-14T08:00:00Z")
			if summary(t, pool, ws, "2030-W02") == nil {
				t.Fatal("no report for the week with usage")
			}
			ranAt(t, pool, "2030-01-14T08:00:01Z")
			// A daily digest with nothing to send, on Tuesday.
			errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, ws, "digest.send", `{"user_id": "`+ann+`", "period": "2030-01-15"}`), 30*time.Second, "completed")
			ranAt(t, pool, "2030-01-15T08:00:00Z")

			// 2030-W03 and 2030-W04: nothing but errand's own.
			for i, week := range []string{"2030-W03", "2030-W04"} {
				monday := []string{"2030-01-21T08:00:00Z", "2030-01-28T08:00:00Z"}[i]
				rollUp(t, pool, monday)
				tick(t, url, pool, monday)
				ranAt(t, pool, strings.Replace(monday, "08:00:00", "08:00:01", 1))
				got := summary(t, pool, ws, week)
				if n := generated(t, pool, ws, week); n != 1 {
					t.Fatalf("%s: %d report jobs completed, want 1", week, n)
				}
				if skip {
					if got != nil {
						t.Errorf("%s: a report %v, want none", week, got)
					}
					continue
				}
				// (W03's metrics show W02's usage as the previous week's.)
				want := decode(t, `{"week": "`+week+`", "empty": true, "jobs": [],
					"emails": {"sent": 0, "failed": 0}, "webhooks": {"delivered": 0, "failed_attempts": 0}, "invoices": {"rendered": 0, "failed": 0}}`)
				for k, v := range want {
					if !reflect.DeepEqual(got[k], v) {
						t.Errorf("%s: %s %v, want %v", week, k, got[k], v)
					}
				}
			}
			want := 3
			if skip {
				want = 1
			}
			if n := count(t, pool, `SELECT count(*) FROM errand.emails WHERE template = 'usage_report'`); n != want {
				t.Errorf("%d report emails, want %d", n, want)
			}
		})
	}
}

func TestWeeks(t *testing.T) {
	for w, start := range map[string]string{"2030-W02": "2030-01-07", "2026-W01": "2025-12-29", "2026-W53": "2026-12-28", "2027-W52": "2027-12-27"} {
		got, err := usagereport.WeekStart(w)
		if err != nil || got.Format(time.DateOnly) != start {
			t.Errorf("%s starts %s (%v), want %s", w, got, err, start)
		}
	}
	for at, week := range map[string]string{"2030-01-14T08:00:00Z": "2030-W02", "2030-01-13T23:00:00Z": "2030-W01", "2027-01-04T08:00:00Z": "2026-W53"} {
		ts, _ := time.Parse(time.RFC3339, at)
		if got := usagereport.ReportedWeek(ts); got != week {
			t.Errorf("a report at %s covers %s, want %s", at, got, week)
		}
	}
}

const insertEvent = `INSERT INTO errand.usage_events (workspace_id, metric, quantity, occurred_at) VALUES `

// What an app can get wrong, refused at INSERT with a clear error; $1 is a
// workspace, $2 another one.
func TestBadUsageEventsAreRefused(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")
	cases := []struct {
		name, sql, code, message string
		scoped                   bool
	}{
		{name: "events of another workspace", sql: insertEvent + `($2, 'api_calls', 1, now())`, scoped: true, code: "42501",
			message: "errand: usage event for workspace " + other + " written in a transaction scoped to workspace " + ws},
		{name: "a metric with spaces", sql: insertEvent + `($1, 'API calls', 1, now())`, code: "22023",
			message: "errand: usage event metric must be a name such as api_calls (lowercase letters, digits, _ and ., at most 100), got 'API calls'"},
		{name: "a negative quantity", sql: insertEvent + `($1, 'api_calls', -5, now())`, code: "23514", message: "errand: usage event quantity must be 0 or more, got -5"},
		{name: "no time", sql: insertEvent + `($1, 'api_calls', 1, NULL)`, code: "23502", message: "errand: usage event occurred_at is required"},
		{name: "no workspace", sql: insertEvent + `(NULL, 'api_calls', 1, now())`, code: "23502", message: "errand: usage event workspace_id is required"},
		{name: "a workspace that does not exist", sql: insertEvent + `('00000000-0000-4000-8000-000000000000', 'api_calls', 1, now())`, code: "23503", message: "does not exist in errand.workspaces"},
		{name: "an empty idempotency key", sql: `INSERT INTO errand.usage_events (workspace_id, metric, idempotency_key) VALUES ($1, 'api_calls', '')`, code: "23514", message: "idempotency_key must be 1 to 255 characters"},
		{name: "a usage report for a week that does not exist", sql: `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'usage_report.generate', '{}')`, code: "22023",
			message: `args for kind "usage_report.generate" are missing required field(s): week`},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if tc.scoped {
					if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, ws); err != nil {
						return err
					}
				}
				_, err := tx.Exec(ctx, strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+other+"'").Replace(tc.sql))
				return err
			})
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
				t.Errorf("got %v, want %s containing %q", err, tc.code, tc.message)
			}
		})
	}
	// The same idempotency key twice is one event.
	for range 2 {
		exec(t, pool, `INSERT INTO errand.usage_events (workspace_id, metric, idempotency_key) VALUES ($1, 'api_calls', 'req-1') ON CONFLICT DO NOTHING`, ws)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.usage_events`); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

func TestBadWeekFailsAtOnce(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	for week, want := range map[string]string{"2030-W54": `week "2030-W54" does not exist (2030 has 52 ISO weeks)`, "2030-02": "must be an ISO week such as 2026-W47"} {
		j := errandtest.WaitJob(t, pool, errandtest.Enqueue(t, pool, ws, usagereport.Name, `{"week": "`+week+`"}`), 30*time.Second, "failed", "completed")
		if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, want) {
			t.Errorf("week %s: %+v, want failed at once saying %q", week, j, want)
		}
	}
}

// On a server whose TimeZone has daylight saving time (Europe/Berlin, a
// common initdb default), the week before is still the 168 hours before
// Monday 00:00 UTC: '7 days' followed the session's zone, and the week after
// the autumn change took an hour of the week before it (an event at
// 2026-10-18T23:30Z, W42, counted as W44's previous week).
func TestThePreviousWeekIsTheSameOnAServerInAZoneWithDaylightSaving(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	exec(t, pool, `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'Europe/Berlin'); END $$`)
	pool.Reset() // new connections take the zone
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"})
	ws := errandtest.NewWorkspace(t, pool, "berlin")
	member(t, pool, ws, "ann@example.com", "owner")
	event(t, pool, ws, "api_calls", 100, "2026-10-18T23:30:00Z") // Sunday of W42
	event(t, pool, ws, "api_calls", 10, "2026-10-20T12:00:00Z")  // W43
	event(t, pool, ws, "api_calls", 20, "2026-10-27T12:00:00Z")  // W44
	tick(t, url, pool, "2026-11-02T08:00:00Z")
	got := summary(t, pool, ws, "2026-W44")
	metrics, _ := got["metrics"].([]any)
	if len(metrics) != 1 {
		t.Fatalf("2026-W44's report: metrics %v, want api_calls alone", got["metrics"])
	}
	m, _ := metrics[0].(map[string]any)
	if m["total"] != float64(20) || m["previous"] != float64(10) {
		t.Errorf("2026-W44 on a Europe/Berlin server: total %v, previous %v; want 20 and 10 (W43 alone)", m["total"], m["previous"])
	}
}

// A report that runs less than a minute after its week ended (an override
// such as usage_reports=0 0 * * MON) waits until the roll-up, a minute
// behind the database's clock, has passed the week's end: it would miss
// the jobs of the week's last minute, and a stored report is never redone.
// A week long over, or not over yet, does not wait.
func TestAReportRightAfterItsWeekWaitsForTheLastMinuteToBeCounted(t *testing.T) {
	end := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) // 2026-W48 ends
	for _, tc := range []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"five seconds after the week", end.Add(5 * time.Second), 56 * time.Second},
		{"at the week's end", end, 61 * time.Second},
		{"a minute after", end.Add(time.Minute), 0},
		{"Monday 08:00, the default", end.Add(8 * time.Hour), 0},
		{"an hour before the week's end", end.Add(-time.Hour), time.Hour + 61*time.Second},
		{"a month before the week's end", end.AddDate(0, -1, 0), end.Add(61 * time.Second).Sub(end.AddDate(0, -1, 0))},
	} {
		if got := usagereport.WaitForWeekEnd(end, tc.now, time.Time{}); got != tc.want {
			t.Errorf("%s: waits %s, want %s", tc.name, got, tc.want)
		}
	}
	// A tick in the future (tick --future --at) asks as of its own time.
	if got := usagereport.WaitForWeekEnd(end, end.AddDate(0, -1, 0), end.Add(8*time.Hour)); got != 0 {
		t.Errorf("as of Monday 08:00 a month early: waits %s, want 0", got)
	}
	if got := usagereport.WaitForWeekEnd(end, end.AddDate(0, -1, 0), end.Add(-time.Hour)); got == 0 {
		t.Error("as of an hour before the week's end: does not wait")
	}
}

// An app's INSERT for a week not over yet waits (snoozed, no report, no
// email) until the week has ended: built at once, it stored and emailed an
// empty report, and the real one was never built (a stored report is
// never redone).
func TestAReportForAWeekNotOverWaitsForItsEnd(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	member(t, pool, ws, "ann@example.com", "owner")
	y, w := time.Now().UTC().AddDate(0, 0, 7).ISOWeek()
	week := fmt.Sprintf("%d-W%02d", y, w)
	start, err := usagereport.WeekStart(week)
	if err != nil {
		t.Fatal(err)
	}
	id := errandtest.Enqueue(t, pool, ws, usagereport.Name, `{"week": "`+week+`"}`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var status string
		var runAt time.Time
		if err := pool.QueryRow(context.Background(), `SELECT status, run_at FROM errand.jobs WHERE id = $1`, id).Scan(&status, &runAt); err != nil {
			t.Fatal(err)
		}
		if status == "pending" && runAt.After(start.AddDate(0, 0, 7)) {
			break // snoozed past the week's end: a positive signal
		}
		if status == "completed" || status == "failed" {
			t.Fatalf("a report for %s, not over, ended %s", week, status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job for %s is %s at %s after 30s, want it snoozed past the week's end", week, status, runAt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.usage_reports`); n != 0 {
		t.Errorf("%d reports stored for a week not over", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.emails`); n != 0 {
		t.Errorf("%d emails for a week not over", n)
	}
}
