package digest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/digest"
)

// BenchmarkDigestTick measures one digests tick over 100,000 users with
// daily preferences in five time zones and 100 workspaces, in two cases:
// all_due, every user due at once (the worst case: everyone chose the same
// hour), and hour_due, one user in 24 due (users spread over the hours,
// as a tick at the top of an hour finds them). The tick is the set-based
// statement over the index on next_due_at that moves the due schedules and
// enqueues a digest.send each through the SQL contract. Each iteration runs
// in a transaction that is rolled back, so every one sees the same rows.
// In the same run it measures two baselines on the same rows: a plain
// SELECT of the due rows (the floor: reading them at all), and the
// per-user loop the tick replaces (read, then move and enqueue one user at
// a time), on at most loopUsers of them. Setup is not timed:
//
//	go test -run '^$' -bench BenchmarkDigestTick -benchtime 2x ./jobs/digest/
func BenchmarkDigestTick(b *testing.B) {
	const users, workspaces, loopUsers = 100_000, 100, 5_000
	_, pool := errandtest.MigratedDB(b)
	seed(b, pool, users, workspaces)
	at := time.Date(2030, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		every int // one user in every is due
	}{{"all_due", 1}, {"hour_due", 24}} {
		exec(b, pool, `
			UPDATE errand.digest_schedule s SET next_due_at = CASE WHEN u.n % $2 = 0 THEN $1::timestamptz - interval '1 hour' ELSE $1::timestamptz + interval '1 hour' END
			FROM (SELECT workspace_id, user_id, row_number() OVER (ORDER BY user_id) AS n FROM errand.digest_schedule) u
			WHERE s.workspace_id = u.workspace_id AND s.user_id = u.user_id`, at, c.every)
		exec(b, pool, `VACUUM ANALYZE errand.digest_schedule`)
		due := count(b, pool, `SELECT count(*) FROM errand.digest_schedule WHERE next_due_at <= $1`, at)
		b.Run(c.name, func(b *testing.B) { benchTick(b, pool, at, due, min(due, loopUsers)) })
	}
}

func benchTick(b *testing.B, pool *pgxpool.Pool, at time.Time, due, loopUsers int) {
	ctx := context.Background()
	var tickTime, selectTime, loopTime time.Duration
	for b.Loop() {
		tickTime += timed(b, pool, func(tx pgx.Tx) int {
			n, err := digest.Tick(ctx, tx, at, 24*time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}, due)
		selectTime += timed(b, pool, func(tx pgx.Tx) int {
			rows, _ := tx.Query(ctx, `SELECT workspace_id::text, user_id::text, frequency, zone, hour, weekday FROM errand.digest_schedule WHERE next_due_at <= $1`, at)
			var ws, user, freq, zone string
			var hour, weekday int
			n := 0
			_, err := pgx.ForEachRow(rows, []any{&ws, &user, &freq, &zone, &hour, &weekday}, func() error { n++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			return n
		}, due)
		loopTime += timed(b, pool, func(tx pgx.Tx) int { return perUser(b, tx, at, loopUsers) }, loopUsers)
	}
	n := float64(b.N)
	tickS, selectS := tickTime.Seconds()/n, selectTime.Seconds()/n
	loopRate := float64(loopUsers) / (loopTime.Seconds() / n)
	b.ReportMetric(float64(due), "due_users")
	b.ReportMetric(tickS, "s/tick")
	b.ReportMetric(float64(due)/tickS, "users/s")
	b.ReportMetric(selectS, "s/select")
	b.ReportMetric(tickS/selectS, "tick/select")
	b.ReportMetric(loopRate, "loop_users/s")
	b.ReportMetric(float64(due)/tickS/loopRate, "tick/loop_speedup")
	b.ReportMetric(0, "ns/op")
}

// timed runs fn in a transaction, rolls it back and checks it handled want
// rows.
func timed(b *testing.B, pool *pgxpool.Pool, fn func(tx pgx.Tx) int, want int) time.Duration {
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	start := time.Now()
	if got := fn(tx); got != want {
		b.Fatalf("handled %d rows, want %d", got, want)
	}
	return time.Since(start)
}

// perUser is the loop the set-based tick replaces.
func perUser(b *testing.B, tx pgx.Tx, at time.Time, limit int) int {
	ctx := context.Background()
	rows, _ := tx.Query(ctx, `SELECT workspace_id::text, user_id::text FROM errand.digest_schedule WHERE next_due_at <= $1 ORDER BY next_due_at LIMIT $2`, at, limit)
	type key struct{ WS, User string }
	due, err := pgx.CollectRows(rows, pgx.RowToStructByPos[key])
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range due {
		var period string
		err := tx.QueryRow(ctx, `
			UPDATE errand.digest_schedule s
			SET last_due_at = errand.digest_latest_due(frequency, zone, hour, weekday, $3),
			    next_due_at = errand.digest_next_due(frequency, zone, hour, weekday, $3)
			WHERE workspace_id = $1 AND user_id = $2
			RETURNING errand.digest_period(frequency, zone, hour, last_due_at)`, d.WS, d.User, at).Scan(&period)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key)
			VALUES ($1, 'digest.send', jsonb_build_object('user_id', $2::text, 'period', $3::text), 'digest/' || $2 || '/' || $3)`, d.WS, d.User, period); err != nil {
			b.Fatal(err)
		}
	}
	return len(due)
}

// seed adds workspaces, users, memberships and daily preferences in five
// time zones, set-based.
func seed(b *testing.B, pool *pgxpool.Pool, users, workspaces int) {
	b.Helper()
	exec(b, pool, `INSERT INTO errand.workspaces (name, slug) SELECT 'WS ' || i, 'ws-' || i FROM generate_series(1, $1) AS i`, workspaces)
	exec(b, pool, `INSERT INTO errand.users (email) SELECT 'u' || i || '@example.com' FROM generate_series(1, $1) AS i`, users)
	exec(b, pool, `
		INSERT INTO errand.workspace_members (workspace_id, user_id)
		SELECT w.id, u.id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM errand.users) u
		JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM errand.workspaces) w ON w.n = 1 + u.n % $1`, workspaces)
	exec(b, pool, `
		INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour)
		SELECT m.workspace_id, m.user_id, 'daily',
		       (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe', 'UTC'])[1 + (row_number() OVER ()) % 5], 8
		FROM errand.workspace_members m`)
	if n := count(b, pool, `SELECT count(*) FROM errand.digest_schedule`); n != users {
		b.Fatal(fmt.Sprintf("%d schedules, want %d", n, users))
	}
}
