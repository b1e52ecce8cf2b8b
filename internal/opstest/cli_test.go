package opstest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

// run is `errand args...` against url; it returns stdout and Main's error.
func run(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := errand.Main(context.Background(), args, errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out)
	return out.String(), err
}

func mustRun(t *testing.T, url string, args ...string) string {
	t.Helper()
	out, err := run(t, url, args...)
	if err != nil {
		t.Fatalf("errand %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// opsData is a workspace "acme" with one completed, one failed and one
// pending job (in that order), and a workspace "idle" with none; no
// daemon runs, so the pending one stays.
type opsData struct {
	url, acme, idle            string
	pool                       *pgxpool.Pool
	completed, failed, pending int64
}

func newOpsData(t *testing.T) opsData {
	t.Helper()
	url, pool := errandtest.MigratedDB(t)
	d := opsData{url: url, pool: pool}
	d.acme = errandtest.NewWorkspace(t, pool, "acme")
	d.idle = errandtest.NewWorkspace(t, pool, "idle")
	ctx := context.Background()
	d.completed = errandtest.Enqueue(t, pool, d.acme, "ping", `{}`)
	d.failed = errandtest.Enqueue(t, pool, d.acme, "ping", `{"fail_times": 3}`)
	d.pending = errandtest.Enqueue(t, pool, d.acme, "ping", `{"sleep_ms": 1}`)
	// Finish the first two as River would have.
	if _, err := pool.Exec(ctx, `
		UPDATE errand.river_job SET state = 'completed', attempt = 1, attempted_at = now(), finalized_at = now() WHERE id = $1`, d.completed); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		UPDATE errand.river_job SET state = 'discarded', attempt = 1, max_attempts = 1, attempted_at = now(), finalized_at = now(),
			errors = ARRAY[jsonb_build_object('at', now(), 'attempt', 1, 'error', 'attempt 1 of 3: ping failed as asked', 'trace', '')]
		WHERE id = $1`, d.failed); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d opsData) status(t *testing.T, id int64) string {
	t.Helper()
	return errandtest.GetJob(t, d.pool, id).Status
}

// Every mistake a user can make on the command line: a clear error, and
// nothing changes.
func TestOpsCommandMistakes(t *testing.T) {
	d := newOpsData(t)
	id := func(n int64) string { return strconv.FormatInt(n, 10) }
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool   // errand.ErrUsage
		want  string // in the error
	}{
		{"jobs without a command", []string{"jobs"}, true, "errand jobs list|show|retry|cancel"},
		{"unknown jobs command", []string{"jobs", "delete", "1"}, true, `unknown jobs command "delete"`},
		{"unknown flag", []string{"jobs", "list", "--state", "failed"}, true, "flag provided but not defined: -state (errand jobs list --help lists its flags)"},
		{"bad status", []string{"jobs", "list", "--status", "done"}, true, `--status "done": want pending, processing, completed or failed`},
		{"River's state for a status", []string{"jobs", "list", "--status", "discarded"}, true, `--status "discarded"`},
		{"limit of zero", []string{"jobs", "list", "--limit", "0"}, true, "--limit 0: want 1 to 1000"},
		{"limit over 1000", []string{"jobs", "list", "--limit", "5000"}, true, "--limit 5000: want 1 to 1000"},
		{"non-numeric limit", []string{"jobs", "list", "--limit", "ten"}, true, `invalid value "ten" for flag -limit`},
		{"stray argument to list", []string{"jobs", "list", "failed"}, true, `jobs list takes no arguments, got ["failed"]`},
		{"unknown workspace in list", []string{"jobs", "list", "--workspace", "acme-typo"}, false, `workspace "acme-typo" does not exist`},
		{"show without an id", []string{"jobs", "show"}, true, "jobs show takes ID, got none"},
		{"non-numeric id", []string{"jobs", "show", "abc"}, true, `a job id is a positive number, got "abc"`},
		{"negative id", []string{"jobs", "show", "-5"}, true, "flag provided but not defined: -5"},
		{"zero id", []string{"jobs", "show", "0"}, true, `a job id is a positive number, got "0"`},
		{"two ids", []string{"jobs", "show", "1", "2"}, true, `jobs show takes ID, got ["1" "2"]`},
		{"unknown job id", []string{"jobs", "show", "999999"}, false, "job 999999 does not exist"},
		{"retry without anything", []string{"jobs", "retry"}, true, "jobs retry takes ID, got none (or --workspace W --status failed)"},
		{"retry of an unknown job", []string{"jobs", "retry", "999999"}, false, "job 999999 does not exist"},
		{"retry of a completed job", []string{"jobs", "retry", id(d.completed)}, false, "job " + id(d.completed) + " is completed, and only a failed job can be retried"},
		{"retry of a pending job", []string{"jobs", "retry", id(d.pending)}, false, "is pending, and only a failed job can be retried"},
		{"retry of a workspace without --status", []string{"jobs", "retry", "--workspace", "acme"}, true, `needs --status failed (only failed jobs are retried), got ""`},
		{"retry of a workspace's pending jobs", []string{"jobs", "retry", "--workspace", "acme", "--status", "pending"}, true, `needs --status failed`},
		{"retry of an id and a workspace", []string{"jobs", "retry", id(d.failed), "--workspace", "acme", "--status", "failed"}, true, "not both"},
		{"--status without --workspace", []string{"jobs", "retry", id(d.failed), "--status", "failed"}, true, "--status goes with --workspace"},
		{"retry of an unknown workspace", []string{"jobs", "retry", "--workspace", "nope", "--status", "failed"}, false, `workspace "nope" does not exist`},
		{"cancel of an unknown job", []string{"jobs", "cancel", "999999"}, false, "job 999999 does not exist"},
		{"cancel of a completed job", []string{"jobs", "cancel", id(d.completed)}, false, "is already completed, there is nothing to cancel"},
		{"cancel of a failed job", []string{"jobs", "cancel", id(d.failed)}, false, "is already failed, there is nothing to cancel"},
		{"cancel without an id", []string{"jobs", "cancel"}, true, "jobs cancel takes ID, got none"},
		{"workspaces without a command", []string{"workspaces"}, true, "errand workspaces list|pause W|resume W"},
		{"unknown workspaces command", []string{"workspaces", "stop", "acme"}, true, `unknown workspaces command "stop"`},
		{"pause without a workspace", []string{"workspaces", "pause"}, true, "workspaces pause takes W, got none"},
		{"pause of an unknown slug", []string{"workspaces", "pause", "nope"}, false, `workspace "nope" does not exist`},
		{"pause of an unknown id", []string{"workspaces", "pause", "00000000-0000-0000-0000-000000000001"}, false, "does not exist"},
		{"resume of an unknown workspace", []string{"workspaces", "resume", "nope"}, false, `workspace "nope" does not exist`},
		{"workspaces list with a bad limit", []string{"workspaces", "list", "--limit", "-1"}, true, "--limit -1: want 1 to 10000"},
		{"stats with an argument", []string{"stats", "default"}, true, `stats takes no arguments, got ["default"]`},
		{"stats with an unknown flag", []string{"stats", "--queue", "default"}, true, "flag provided but not defined: -queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, d.url, tc.args...)
			if err == nil {
				t.Fatalf("errand %s: no error\n%s", strings.Join(tc.args, " "), out)
			}
			if errors.Is(err, errand.ErrUsage) != tc.usage {
				t.Errorf("errand %s: %v; usage error %v, want %v", strings.Join(tc.args, " "), err, !tc.usage, tc.usage)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("errand %s: %v; want it to say %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
	// Nothing changed.
	for id, want := range map[int64]string{d.completed: "completed", d.failed: "failed", d.pending: "pending"} {
		if got := d.status(t, id); got != want {
			t.Errorf("job %d is %s after the mistakes, want %s", id, got, want)
		}
	}
	if out := mustRun(t, d.url, "workspaces", "list", "--json"); strings.Contains(out, `"paused_at": "`) {
		t.Errorf("a workspace is paused after the mistakes:\n%s", out)
	}
}

// -h and --help print what was asked for and succeed, without a database:
// a command's lines of `errand help` and its flags, or a group's commands
// (they said "flag: help requested" and exited 2, or `errand jobs --help`
// called --help an unknown command).
func TestOpsCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"jobs", "--help"}, []string{"Usage: errand jobs COMMAND", "  jobs list [--workspace W]", "  jobs show ID", "  jobs retry --workspace W --status failed", "  jobs cancel ID", "errand jobs COMMAND --help lists a command's flags"}},
		{[]string{"jobs", "-h"}, []string{"Usage: errand jobs COMMAND", "  jobs cancel ID"}},
		{[]string{"jobs", "list", "--help"}, []string{"Usage: errand jobs list [flags]", "newest first", "-workspace string", "-kind string", "-status string", "-limit int", "(default 50)", "-before int", "-json"}},
		{[]string{"jobs", "show", "-h"}, []string{"Usage: errand jobs show [flags]", "  jobs show ID", "-json"}},
		{[]string{"jobs", "show", "42", "--help"}, []string{"Usage: errand jobs show [flags]"}},
		{[]string{"jobs", "retry", "--help"}, []string{"Usage: errand jobs retry [flags]", "  jobs retry ID", "  jobs retry --workspace W --status failed", "(W: a workspace's id or slug)", "-workspace string", "-status string"}},
		{[]string{"jobs", "cancel", "--help"}, []string{"Usage: errand jobs cancel [flags]", "  jobs cancel ID"}},
		{[]string{"workspaces", "--help"}, []string{"Usage: errand workspaces COMMAND", "  workspaces list", "  workspaces pause W", "  workspaces resume W"}},
		{[]string{"workspaces", "list", "--help"}, []string{"Usage: errand workspaces list [flags]", "-limit int", "(default 100)", "-json"}},
		{[]string{"workspaces", "pause", "--help"}, []string{"Usage: errand workspaces pause [flags]", "  workspaces pause W"}},
		{[]string{"stats", "--help"}, []string{"Usage: errand stats [flags]", "per queue: backlog", "-json"}},
		{[]string{"stats", "-h"}, []string{"Usage: errand stats [flags]"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if err := errand.Main(context.Background(), tc.args, errandtest.Env(nil), &out, &out); err != nil {
				t.Fatalf("errand %s: %v, want its usage and success\n%s", strings.Join(tc.args, " "), err, out.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("errand %s: no %q in\n%s", strings.Join(tc.args, " "), want, out.String())
				}
			}
		})
	}
}

func TestJobsListAndShow(t *testing.T) {
	d := newOpsData(t)
	out := mustRun(t, d.url, "jobs", "list")
	for _, want := range []string{"ID", "STATUS", "LAST ERROR", "failed", "attempt 1 of 3: ping failed as asked", "completed", "pending"} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs list: no %q in\n%s", want, out)
		}
	}
	var list []struct {
		ID          int64  `json:"id"`
		WorkspaceID string `json:"workspace_id"`
		Status      string `json:"status"`
	}
	out = mustRun(t, d.url, "jobs", "list", "--workspace", "acme", "--status", "failed", "--kind", "ping", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(list) != 1 || list[0].ID != d.failed || list[0].WorkspaceID != d.acme || list[0].Status != "failed" {
		t.Errorf("jobs list --workspace acme --status failed: %+v, want job %d", list, d.failed)
	}
	out = mustRun(t, d.url, "jobs", "list", "--workspace", d.idle, "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("jobs list of an idle workspace: %s, want []", out)
	}
	out = mustRun(t, d.url, "jobs", "list", "--limit", "1", "--before", strconv.FormatInt(d.pending, 10), "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].ID != d.failed {
		t.Errorf("jobs list --limit 1 --before %d: %s (%v), want job %d", d.pending, out, err, d.failed)
	}

	out = mustRun(t, d.url, "jobs", "show", strconv.FormatInt(d.failed, 10))
	for _, want := range []string{"status:", "failed", `"fail_times": 3`, "attempt 1 at ", "attempt 1 of 3: ping failed as asked"} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs show: no %q in\n%s", want, out)
		}
	}
	var detail struct {
		ID     int64           `json:"id"`
		Args   json.RawMessage `json:"args"`
		Errors []struct {
			Attempt int    `json:"attempt"`
			Error   string `json:"error"`
		} `json:"errors"`
	}
	out = mustRun(t, d.url, "jobs", "show", strconv.FormatInt(d.failed, 10), "--json")
	if err := json.Unmarshal([]byte(out), &detail); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if detail.ID != d.failed || !strings.Contains(string(detail.Args), "fail_times") || len(detail.Errors) != 1 || detail.Errors[0].Attempt != 1 {
		t.Errorf("jobs show --json: %+v", detail)
	}
}

func TestJobsRetryAndCancel(t *testing.T) {
	d := newOpsData(t)
	out := mustRun(t, d.url, "jobs", "retry", strconv.FormatInt(d.failed, 10))
	if !strings.Contains(out, "will run again") {
		t.Errorf("jobs retry: %s", out)
	}
	j := errandtest.GetJob(t, d.pool, d.failed)
	if j.Status != "pending" || j.RiverState != "available" || j.MaxAttempts != 2 || j.LastError == "" {
		t.Errorf("retried job: %+v; want pending (available), 2 attempts allowed, its last error kept", j)
	}
	// Cancelling it fails it again with the reason; retrying the workspace's
	// failed jobs runs it again.
	out = mustRun(t, d.url, "jobs", "cancel", strconv.FormatInt(d.failed, 10), "--json")
	if !strings.Contains(out, `"result": "cancelled"`) {
		t.Errorf("jobs cancel --json: %s", out)
	}
	if j := errandtest.GetJob(t, d.pool, d.failed); j.Status != "failed" || !strings.Contains(j.LastError, "cancelled by an operator") {
		t.Errorf("cancelled job: %+v", j)
	}
	out = mustRun(t, d.url, "jobs", "retry", "--workspace", "acme", "--status", "failed")
	if !strings.HasPrefix(out, "1 failed job(s) of workspace "+d.acme) {
		t.Errorf("jobs retry --workspace: %s", out)
	}
	if got := d.status(t, d.failed); got != "pending" {
		t.Errorf("job %d is %s after retrying the workspace, want pending", d.failed, got)
	}
	out = mustRun(t, d.url, "jobs", "retry", "--workspace", "acme", "--status", "failed", "--json")
	if !strings.Contains(out, `"retried": 0`) {
		t.Errorf("second retry of the workspace: %s", out)
	}
	// A paused workspace's retried jobs wait for its resume, and the
	// answer says so.
	mustRun(t, d.url, "jobs", "cancel", strconv.FormatInt(d.failed, 10))
	mustRun(t, d.url, "workspaces", "pause", "acme")
	out = mustRun(t, d.url, "jobs", "retry", "--workspace", "acme", "--status", "failed")
	if !strings.HasPrefix(out, "1 failed job(s) of workspace "+d.acme+" will run again when it is resumed (it is paused)") {
		t.Errorf("jobs retry --workspace of a paused workspace: %s", out)
	}
	if j := errandtest.GetJob(t, d.pool, d.failed); j.Status != "pending" || j.RiverState != "pending" {
		t.Errorf("job %d retried in a paused workspace: %+v; want pending, held (River's pending)", d.failed, j)
	}
}

func TestWorkspacesPauseListResume(t *testing.T) {
	d := newOpsData(t)
	if _, err := d.pool.Exec(context.Background(), `INSERT INTO errand.plans (plan, weight, concurrency) VALUES ('pro', 5, 20);
		UPDATE errand.workspaces SET plan = 'pro' WHERE slug = 'acme'`); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, d.url, "workspaces", "pause", "acme")
	if !strings.Contains(out, "workspace "+d.acme+" paused (1 waiting job(s) held") {
		t.Errorf("workspaces pause: %s", out)
	}
	if j := errandtest.GetJob(t, d.pool, d.pending); j.Status != "pending" || j.RiverState != "pending" {
		t.Errorf("pending job of the paused workspace: %+v", j)
	}
	out = mustRun(t, d.url, "workspaces", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "acme") || !strings.Contains(lines[1], "since ") || !strings.Contains(lines[2], "idle") {
		t.Errorf("workspaces list: paused acme first, then idle:\n%s", out)
	}
	words := func(line string) string { return " " + strings.Join(strings.Fields(line), " ") + " " }
	if len(lines) == 3 && (!strings.Contains(words(lines[1]), " pro 5 20 ") || !strings.Contains(words(lines[2]), " free 1 default ")) {
		t.Errorf("workspaces list: acme on plan pro (weight 5, cap 20), idle on free (weight 1, the default cap):\n%s", out)
	}
	var list []struct {
		Slug                        string
		PausedAt                    *time.Time `json:"paused_at"`
		Plan                        string
		Weight                      int
		Concurrency                 *int
		Pending, Processing, Failed int64
	}
	out = mustRun(t, d.url, "workspaces", "list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(list) != 2 || list[0].Slug != "acme" || list[0].PausedAt == nil || list[0].Pending != 1 || list[0].Failed != 1 || list[1].PausedAt != nil {
		t.Errorf("workspaces list --json: %+v", list)
	}
	if len(list) == 2 && (list[0].Plan != "pro" || list[0].Weight != 5 || list[0].Concurrency == nil || *list[0].Concurrency != 20 ||
		list[1].Plan != "free" || list[1].Weight != 1 || list[1].Concurrency != nil) {
		t.Errorf("workspaces list --json plans: %+v", list)
	}
	out = mustRun(t, d.url, "workspaces", "resume", d.acme, "--json")
	if !strings.Contains(out, `"released": 1`) {
		t.Errorf("workspaces resume --json: %s", out)
	}
	if j := errandtest.GetJob(t, d.pool, d.pending); j.RiverState != "available" {
		t.Errorf("job after resume: %+v, want available", j)
	}
	out = mustRun(t, d.url, "workspaces", "resume", "acme")
	if !strings.Contains(out, "(0 held job(s) released)") {
		t.Errorf("resume of a workspace that is not paused: %s", out)
	}
}

// queueStats is one row of `errand stats --json`.
type queueStats struct {
	Queue             string  `json:"queue"`
	Pending           int64   `json:"pending"`
	Due               int64   `json:"due"`
	Held              int64   `json:"held"`
	Processing        int64   `json:"processing"`
	CompletedLastHour int64   `json:"completed_last_hour"`
	FailedLastHour    int64   `json:"failed_last_hour"`
	PerSecond         float64 `json:"per_second"`
	OldestDueSeconds  float64 `json:"oldest_due_seconds"`
}

func statsJSON(t *testing.T, out string) map[string]queueStats {
	t.Helper()
	var list []queueStats
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	byQueue := map[string]queueStats{}
	for i, q := range list {
		if i > 0 && list[i-1].Queue >= q.Queue {
			t.Errorf("stats --json: %s after %s; want queues in name order", q.Queue, list[i-1].Queue)
		}
		byQueue[q.Queue] = q
	}
	return byQueue
}

func TestStats(t *testing.T) {
	d := newOpsData(t)
	out := mustRun(t, d.url, "stats")
	if !strings.Contains(out, "QUEUE") || !strings.Contains(out, "default") {
		t.Errorf("stats:\n%s", out)
	}
	// The due job has waited an hour.
	if tag, err := d.pool.Exec(context.Background(), `UPDATE errand.river_job SET scheduled_at = now() - interval '1 hour'
		WHERE queue = 'default' AND state = 'available'`); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("backdate the due job: %v, %d rows", err, tag.RowsAffected())
	}
	stats := statsJSON(t, mustRun(t, d.url, "stats", "--json"))
	if q := stats["default"]; q.Pending != 1 || q.Due != 1 || q.Held != 0 ||
		q.CompletedLastHour != 1 || q.FailedLastHour != 1 || q.PerSecond != 1.0/60 || q.OldestDueSeconds < 3600 || q.OldestDueSeconds > 3600+300 {
		t.Errorf("stats --json: %+v; want the oldest due job an hour old", stats)
	}
	// A paused workspace's job is pending and held, and no longer due.
	mustRun(t, d.url, "workspaces", "pause", "acme")
	stats = statsJSON(t, mustRun(t, d.url, "stats", "--json"))
	if q := stats["default"]; q.Pending != 1 || q.Held != 1 || q.Due != 0 {
		t.Errorf("stats --json while paused: %+v", stats)
	}
}

// Every configured queue is listed, at 0 when it has no jobs, as the
// metrics show them (a database without jobs printed the header alone, and
// --json []): errand's queues, a kind's own (jobs.WithQueueWorkers), one
// ERRAND_QUEUES gives no workers here, and a queue only the database knows.
func TestStatsListsEveryConfiguredQueueAtZero(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	export := jobs.Define("report.export", "report_exports",
		func(context.Context, *jobs.Job, struct{}) error { return nil }, jobs.WithQueueWorkers(4))
	stats := func() map[string]queueStats {
		t.Helper()
		var out bytes.Buffer
		env := errandtest.Env(map[string]string{"DATABASE_URL": url, "ERRAND_QUEUES": "documents=0"})
		if err := errand.Main(context.Background(), []string{"stats", "--json"}, env, &out, &out, errand.WithKinds(export)); err != nil {
			t.Fatalf("errand stats --json: %v\n%s", err, out.String())
		}
		return statsJSON(t, out.String())
	}

	got := stats()
	want := []string{"default", "documents", "email", "report_exports", "reports", "webhooks"}
	if len(got) != len(want) {
		t.Errorf("stats --json on a database without jobs: %+v; want exactly %v", got, want)
	}
	for _, name := range want {
		if q, ok := got[name]; !ok || q != (queueStats{Queue: name}) {
			t.Errorf("stats --json on a database without jobs: queue %s is %+v (listed %v); want it at 0", name, q, ok)
		}
	}

	ws := errandtest.NewWorkspace(t, pool, "acme")
	id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
	if _, err := pool.Exec(context.Background(), `UPDATE errand.river_job SET queue = 'retired' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	got = stats()
	if q := got["retired"]; q.Pending != 1 || len(got) != len(want)+1 {
		t.Errorf("stats --json with a job in a queue the configuration does not name: %+v; want it listed beside the %d configured ones", got, len(want))
	}
}
