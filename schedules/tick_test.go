package schedules_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/schedules"
	"github.com/errand-dev/errand/store"
)

// daemonEnv: frequent polls; the leader's own ticks off (the tests tick
// with --schedule).
var daemonEnv = map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off;nightly=off"}

func opts() []errand.Option { return []errand.Option{errand.WithKinds(nightlyKind())} }

// tick runs `errand schedules tick --at at [--schedule only]` and returns
// its lines.
func tick(t *testing.T, url, at, only string) []string {
	t.Helper()
	args := []string{"schedules", "tick", "--future", "--at", at}
	if only != "" {
		args = append(args, "--schedule", only)
	}
	var out bytes.Buffer
	if err := errand.Main(context.Background(), args, errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out, opts()...); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitIdle waits until no job is pending or processing (a positive signal:
// every job reached an end).
func waitIdle(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for count(t, pool, `SELECT count(*) FROM errand.jobs WHERE status IN ('pending', 'processing')`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("jobs still pending after 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A period is one fan-out job however often it is ticked, with no
// workspace, inserted by errand (the SQL contract refuses its kind); once
// it ran, ticking it again enqueues nothing, and its work is done once.
func TestTickEnqueuesOnePeriodOnce(t *testing.T) {
	url, pool := errandtest.MigratedDB(t, opts()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.NewWorkspace(t, pool, "globex")

	first := tick(t, url, "2030-01-10T03:30:00Z", "nightly")
	if len(first) != 1 || !strings.HasPrefix(first[0], "nightly\t2030-01-10T03:00:00Z\tenqueued\tjob ") {
		t.Fatalf("first tick: %q", first)
	}
	again := tick(t, url, "2030-01-10T04:59:00Z", "nightly")
	if want := strings.Replace(first[0], "enqueued", "already enqueued", 1); again[0] != want {
		t.Errorf("same period again: %q, want %q", again[0], want)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'schedules.tick' AND workspace_id IS NULL`); n != 1 {
		t.Errorf("%d fan-out jobs with a NULL workspace_id, want 1", n)
	}

	_, err := pool.Exec(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'schedules.tick', '{"schedule": "nightly"}')`, ws)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, `errand: unknown job kind "schedules.tick"`) {
		t.Errorf("the contract took a fan-out job: %v", err)
	}

	errandtest.StartDaemon(t, url, daemonEnv, opts()...)
	waitIdle(t, pool)
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'ping'`); n != 2 {
		t.Errorf("%d pings after one night, want one per workspace", n)
	}
	if got := tick(t, url, "2030-01-10T03:00:00Z", "nightly"); !strings.HasSuffix(got[0], "\talready ran") {
		t.Errorf("a period that ran: %q", got)
	}
	// River forgets a finished job after its retention; a new job for the
	// period finds it ran and does nothing.
	if _, err := pool.Exec(context.Background(), `DELETE FROM errand.river_job WHERE kind = 'schedules.tick'`); err != nil {
		t.Fatal(err)
	}
	if got := tick(t, url, "2030-01-10T03:00:00Z", "nightly"); !strings.HasSuffix(got[0], "\talready ran") {
		t.Errorf("a period that ran, its job pruned: %q", got)
	}
	tick(t, url, "2030-01-11T03:00:00Z", "nightly")
	waitIdle(t, pool)
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'ping'`); n != 4 {
		t.Errorf("%d pings after two nights, want 4", n)
	}
}

// The leader's decision: a period on time runs; one that already ran does
// not; after downtime only the latest period is caught up, only within
// ERRAND_SCHEDULE_BACKFILL and only when the entry ran before (a new
// deployment backfills nothing).
func TestLeaderCatchesUpOnlyTheLatestPeriod(t *testing.T) {
	url, pool := errandtest.MigratedDB(t, opts()...)
	errandtest.NewWorkspace(t, pool, "acme")
	tb, err := load(map[string]string{schedules.EnvBackfill: "12h"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	due := func(now string) (string, bool) {
		t.Helper()
		at, ok, err := tb.Due(ctx, pool, "nightly", at(now))
		if err != nil {
			t.Fatal(err)
		}
		return at.Format(time.RFC3339), ok
	}
	// River fires up to 100 ms early.
	if p, ok := due("2030-01-10T02:59:59.95Z"); !ok || p != "2030-01-10T03:00:00Z" {
		t.Errorf("on time: %s %v", p, ok)
	}
	if _, ok := due("2030-01-10T09:00:00Z"); ok {
		t.Error("a new deployment caught up a period it never saw")
	}
	tick(t, url, "2030-01-10T03:00:00Z", "nightly")
	errandtest.StartDaemon(t, url, daemonEnv, opts()...)
	waitIdle(t, pool)
	if _, ok := due("2030-01-10T03:00:00Z"); ok {
		t.Error("a period that ran is due again")
	}
	// Down from 2030-01-10 to 2030-01-13 10:00: only the 13th's run, once.
	if p, ok := due("2030-01-13T10:00:00Z"); !ok || p != "2030-01-13T03:00:00Z" {
		t.Errorf("back after downtime: %s %v, want the latest period", p, ok)
	}
	// Back at 16:00: the 13th's period began 13 h ago, beyond 12 h.
	if p, ok := due("2030-01-13T16:00:00Z"); ok {
		t.Errorf("caught up %s beyond ERRAND_SCHEDULE_BACKFILL", p)
	}
}

// A period whose check failed at its time (the database unreachable, or
// errand.schedule_runs locked past the 5 s the leader waits) is asked about
// again the next minute and enqueued then: River asks about a time once, so
// a weekly report was lost for the week.
func TestAPeriodWhoseCheckFailedIsAskedAgainTheNextMinute(t *testing.T) {
	_, pool := errandtest.MigratedDB(t, opts()...)
	errandtest.NewWorkspace(t, pool, "acme")
	tb, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The leader's check at 03:00 fails: its database is gone.
	gone, err := pgxpool.New(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	if _, _, err := tb.Due(ctx, gone, "nightly", at("2030-01-10T03:00:00Z")); err == nil {
		t.Fatal("a check on a closed pool did not fail")
	}
	// River then asks at 03:01, 03:02 ... as well as at the entry's times.
	asked := tb.Asked("nightly", at("2030-01-10T03:00:00Z"), 3)
	want := []time.Time{at("2030-01-10T03:01:00Z"), at("2030-01-10T03:02:00Z"), at("2030-01-10T03:03:00Z")}
	if !slices.Equal(asked, want) {
		t.Fatalf("asked at %v after a period's time, want %v", asked, want)
	}
	if got := tb.Asked("nightly", at("2030-01-10T02:59:10Z"), 1); !got[0].Equal(at("2030-01-10T03:00:00Z")) {
		t.Errorf("asked at %v before 03:00, want the entry's own time", got)
	}
	// At 03:01 (River fires up to 100 ms early) the 03:00 period is due, in
	// a deployment that never ran it before too.
	p, ok, err := tb.Due(ctx, pool, "nightly", at("2030-01-10T03:00:59.95Z"))
	if err != nil || !ok || !p.Equal(at("2030-01-10T03:00:00Z")) {
		t.Errorf("the minute after a failed check: %s %v %v, want the 03:00 period due", p, ok, err)
	}
}

// The elected leader enqueues each period as a River periodic job (here an
// entry every minute, caught at once by River's RunOnStart), one job per
// period with three replicas running, with no workspace.
func TestLeaderEnqueuesEachPeriodOnce(t *testing.T) {
	minutely := nightlyKind()
	minutely.Schedules[0].Name, minutely.Schedules[0].Spec = "minutely", "@every 1m"
	minutely.Name = "test.minutely"
	o := []errand.Option{errand.WithKinds(minutely)}
	url, pool := errandtest.MigratedDB(t, o...)
	errandtest.NewWorkspace(t, pool, "acme")
	env := map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"}
	for range 3 {
		errandtest.StartDaemon(t, url, env, o...)
	}
	deadline := time.Now().Add(60 * time.Second)
	for count(t, pool, `SELECT count(*) FROM errand.schedule_runs WHERE name = 'minutely'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no period ran within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'schedules.tick' AND workspace_id IS NULL AND args ->> 'schedule' = 'minutely'
		AND EXISTS (SELECT 1 FROM errand.river_job r WHERE r.id = jobs.id AND r.metadata ->> 'periodic' = 'true')`); n < 1 {
		t.Errorf("%d periodic fan-out jobs", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM (SELECT args ->> 'at' FROM errand.jobs WHERE kind = 'schedules.tick' GROUP BY 1 HAVING count(*) > 1) d`); n != 0 {
		t.Errorf("%d periods enqueued more than once", n)
	}
}

// A leader change in the middle of a schedule never runs a period twice:
// the new leader's RunOnStart finds the period ran (or is enqueued), River's
// unique insert drops a second job for it, and a job for a period that ran,
// however it got in, finds the period claimed and does nothing.
func TestLeaderChangeRunsEachPeriodOnce(t *testing.T) {
	// Each run enqueues one ping per workspace with no idempotency key, so
	// a period run twice would show as two pings for it.
	fast := jobs.Define("test.fast", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error { return nil },
		jobs.WithSchedule(jobs.Schedule{
			Name: "fast",
			Spec: "@every 1m",
			Tick: func(ctx context.Context, tx pgx.Tx, at time.Time) (int, error) {
				n := 0
				err := store.ForEachWorkspace(ctx, tx, func(ws string) error {
					tag, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', jsonb_build_object('period', $2::timestamptz))`, ws, at)
					n += int(tag.RowsAffected())
					return err
				})
				return n, err
			},
		}))
	o := []errand.Option{errand.WithKinds(fast)}
	url, pool := errandtest.MigratedDB(t, o...)
	errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	env := map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"}
	daemons := []*errandtest.Daemon{errandtest.StartDaemon(t, url, env, o...), errandtest.StartDaemon(t, url, env, o...)}
	runs := func() int {
		return count(t, pool, `SELECT count(*) FROM errand.schedule_runs WHERE name = 'fast'`)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 3 minutes: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	leader := ""
	waitFor("a period ran and a leader is known", func() bool {
		var err error
		if leader, err = store.Leader(ctx, pool); err != nil {
			t.Fatal(err)
		}
		return leader != "" && runs() > 0
	})
	stopped := false
	for _, d := range daemons {
		if strings.Contains(d.Logs.String(), `"replica":"`+leader+`"`) {
			if err := d.Stop(t); err != nil {
				t.Fatal(err)
			}
			stopped = true
		}
	}
	if !stopped {
		t.Fatalf("no daemon logged leader %s's replica id", leader)
	}
	before := runs()
	waitFor("another replica leads and runs another period", func() bool {
		now, err := store.Leader(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return now != "" && now != leader && runs() >= before+1
	})
	// A job for a period that already ran, past River's uniqueness (as a
	// rescued attempt or a second leader's insert would be).
	var first time.Time
	if err := pool.QueryRow(ctx, `SELECT min(period) FROM errand.schedule_runs WHERE name = 'fast'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	var extra int64
	err := pool.QueryRow(ctx, `INSERT INTO errand.river_job (args, kind, max_attempts, priority, queue, state, scheduled_at)
		VALUES (jsonb_build_object('schedule', 'fast', 'at', $1::timestamptz), 'schedules.tick', 10, 1, 'default', 'available', now())
		RETURNING id`, first).Scan(&extra)
	if err != nil {
		t.Fatal(err)
	}
	waitFor("the extra job for a period that ran finished", func() bool {
		return count(t, pool, `SELECT count(*) FROM errand.jobs WHERE id = $1 AND status = 'completed'`, extra) == 1
	})
	waitIdle(t, pool)

	if n := count(t, pool, `SELECT count(*) FROM (SELECT 1 FROM errand.jobs WHERE kind = 'ping' GROUP BY args ->> 'period' HAVING count(*) > 1) d`); n != 0 {
		t.Errorf("%d periods ran more than once (two pings for one period)", n)
	}
	if n, want := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE kind = 'ping'`), count(t, pool, `SELECT coalesce(sum(enqueued), 0)::int FROM errand.schedule_runs WHERE name = 'fast'`); n != want {
		t.Errorf("%d pings, want the %d the recorded runs enqueued", n, want)
	}
	if n := count(t, pool, `SELECT count(*) FROM (SELECT args ->> 'at' FROM errand.jobs WHERE kind = 'schedules.tick' AND id <> $1 GROUP BY 1 HAVING count(*) > 1) d`, extra); n != 0 {
		t.Errorf("%d periods enqueued more than once", n)
	}
}

// A tick at a time still to come (a typo in --at) is refused without
// --future, and records nothing: it would mark that period as run (and
// build an empty usage report, move digests past it), so the leader would
// skip the real one when it comes. A time a few seconds ahead of the
// database's clock is not refused.
func TestATickInTheFutureIsRefusedWithoutFuture(t *testing.T) {
	url, pool := errandtest.MigratedDB(t, opts()...)
	var out bytes.Buffer
	at := time.Now().Add(10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	err := errand.Main(context.Background(), []string{"schedules", "tick", "--at", at, "--schedule", "usage_reports"},
		errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out, opts()...)
	if err == nil || !strings.Contains(err.Error(), "after the database's clock") || !strings.Contains(err.Error(), "pass --future") {
		t.Fatalf("tick --at %s (10 days ahead): %v, want a refusal naming the database's clock and --future\n%s", at, err, out.String())
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.schedule_runs`) + count(t, pool, `SELECT count(*) FROM errand.jobs`); n != 0 {
		t.Errorf("a refused tick left %d schedule runs and jobs", n)
	}
	out.Reset()
	soon := time.Now().Add(5 * time.Second).UTC().Format(time.RFC3339)
	if err := errand.Main(context.Background(), []string{"schedules", "tick", "--at", soon, "--schedule", "usage_reports"},
		errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out, opts()...); err != nil {
		t.Errorf("tick --at %s (a few seconds ahead): %v\n%s", soon, err, out.String())
	}
}
