package maintenance

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// finishedJob makes a job of f's workspace that ended in state (completed,
// discarded or cancelled) at now() + offset on the database's clock.
func (f fixture) finishedJob(t *testing.T, state, offset string) int64 {
	t.Helper()
	var id int64
	if err := f.pool.QueryRow(context.Background(), `SELECT errand.enqueue(workspace_id => $1, kind => 'ping')`, f.ws).Scan(&id); err != nil {
		t.Fatal(err)
	}
	_, err := f.pool.Exec(context.Background(), `UPDATE errand.river_job SET state = $2::errand.river_job_state, attempt = 1,
		attempted_at = now(), finalized_at = now() + $3::interval WHERE id = $1`, id, state, offset)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (f fixture) counts(t *testing.T) map[string]int64 {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT kind || ' ' || state, sum(count)::bigint FROM errand.job_counts WHERE workspace_id = $1 GROUP BY 1`, f.ws)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var k string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &n}, func() error { out[k] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// Finished jobs are counted once: the counts outlive River's cleaner, and
// a second round, a round that crashed before committing, or two rounds at
// once never count a job twice.
func TestJobCountsOutliveTheCleanerAndNeverCountTwice(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	c := NewJobCounter(f.pool, JobCounterConfig{})
	f.finishedJob(t, "completed", "-10 minutes")
	f.finishedJob(t, "completed", "-10 minutes")
	f.finishedJob(t, "discarded", "-10 minutes")
	// Finalized after the round's horizon (a minute ago): the next round's.
	f.finishedJob(t, "completed", "1 hour")
	if n, err := c.Round(ctx); err != nil || n != 3 {
		t.Fatalf("round: %d, %v; want 3", n, err)
	}
	want := map[string]int64{"ping completed": 2, "ping discarded": 1}
	if got := f.counts(t); len(got) != 2 || got["ping completed"] != 2 || got["ping discarded"] != 1 {
		t.Fatalf("counts %v, want %v", got, want)
	}

	// River's cleaner deletes them (its query: a finished state and
	// finalized_at before the horizon); the counts stay.
	if _, err := f.pool.Exec(ctx, `DELETE FROM errand.river_job WHERE state IN ('completed', 'discarded') AND finalized_at < now()`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n, err := c.Round(ctx); err != nil || n != 0 {
			t.Fatalf("round after the cleaner: %d, %v; want 0", n, err)
		}
	}
	if got := f.counts(t); len(got) != 2 || got["ping completed"] != 2 || got["ping discarded"] != 1 {
		t.Fatalf("counts after the cleaner %v, want %v", got, want)
	}

	// A round that dies before it commits counts nothing, and moves nothing.
	// (Explicit horizons from here on, past the job finalized in an hour.)
	const later = `SELECT errand.roll_up_job_counts(now() + interval '2 hours')`
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var n int64
	if err := tx.QueryRow(ctx, later).Scan(&n); err != nil || n != 1 {
		t.Fatalf("round in a transaction: %d, %v; want 1", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.counts(t); got["ping completed"] != 2 {
		t.Fatalf("a rolled back round counted: %v", got)
	}

	// Two rounds at once: the second waits for the first's watermark and
	// counts nothing of what the first counted.
	first, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	if err := first.QueryRow(ctx, later).Scan(&n); err != nil || n != 1 {
		t.Fatalf("first round: %d, %v; want 1", n, err)
	}
	other, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	second := make(chan int64, 1)
	go func() {
		var n int64
		if err := other.QueryRow(ctx, "/* second round */ "+later).Scan(&n); err != nil {
			t.Error(err)
		}
		second <- n
	}()
	// The second round must be waiting for the first's lock before the
	// first commits, or it would merely run after it. Asked outside the
	// first's transaction: PostgreSQL snapshots pg_stat_activity once per
	// transaction, so a transaction asking again sees its first answer.
	deadline := time.Now().Add(waitBound)
	for {
		var waiting bool
		if err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '/* second round */%' AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second round never waited for the first's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := next(t, testSignal[int64](second), "second round"); n != 0 {
		t.Errorf("the second round counted %d, want 0", n)
	}
	if got := f.counts(t); got["ping completed"] != 3 || got["ping discarded"] != 1 {
		t.Errorf("counts %v, want 3 completed and 1 discarded", got)
	}
}
