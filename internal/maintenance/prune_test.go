package maintenance

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// oldRuns records n schedule runs created age ago (errand.schedule_runs is
// one of the tables the pruner keeps for ERRAND_RETAIN_LOGS).
func oldRuns(t *testing.T, f fixture, name string, n int, age time.Duration) {
	t.Helper()
	_, err := f.pool.Exec(context.Background(), `INSERT INTO errand.schedule_runs (name, period, job_id, created_at)
		SELECT $1, '2030-01-01'::timestamptz + make_interval(mins => g), g, now() - make_interval(secs => $3)
		FROM generate_series(1, $2) g`, name, n, age.Seconds())
	if err != nil {
		t.Fatal(err)
	}
}

func runsLeft(t *testing.T, f fixture, name string) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.schedule_runs WHERE name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A round calls again while a call deleted a full batch, up to Rounds
// calls; what is younger than Keep stays, and so does each entry's latest
// run whatever its age (migration 041).
func TestPrunerRoundDrainsFullBatchesUpToItsRounds(t *testing.T) {
	t.Parallel()
	f := setup(t)
	oldRuns(t, f, "old", 25, 48*time.Hour)
	oldRuns(t, f, "recent", 3, 10*time.Minute)
	p := NewPruner(f.pool, PrunerConfig{Keep: time.Hour, Batch: 10, Rounds: 2})
	got, err := p.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got["schedule_runs"] != 20 || runsLeft(t, f, "old") != 5 {
		t.Errorf("first round deleted %v, %d old runs left; want 20 deleted (2 calls of 10), 5 left", got, runsLeft(t, f, "old"))
	}
	got, err = p.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got["schedule_runs"] != 4 || runsLeft(t, f, "old") != 1 {
		t.Errorf("second round deleted %v, %d old runs left; want 4 more deleted and the entry's latest run kept", got, runsLeft(t, f, "old"))
	}
	if n := runsLeft(t, f, "recent"); n != 3 {
		t.Errorf("%d of 3 runs younger than the retention left", n)
	}
}

// Only the leader prunes: a replica that does not lead goes round its
// loop and deletes nothing, and prunes once it leads. Its rounds come as
// the test's clock passes Every.
func TestPrunerPrunesOnlyWhileLeading(t *testing.T) {
	t.Parallel()
	f := setup(t)
	oldRuns(t, f, "old", 5, 48*time.Hour)
	var asked, leading atomic.Int64
	clock := NewManualClock(time.Now())
	p := NewPruner(f.pool, PrunerConfig{Keep: time.Hour, Clock: clock, Leading: func(context.Context) bool {
		asked.Add(1)
		return leading.Load() == 1
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(waitBound)
	for asked.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the pruner did not ask whether it leads three times")
		}
		clock.Advance(PrunerEveryDefault)
		time.Sleep(5 * time.Millisecond)
	}
	if n := runsLeft(t, f, "old"); n != 5 {
		t.Fatalf("a replica that does not lead pruned: %d of 5 old runs left", n)
	}
	leading.Store(1)
	for runsLeft(t, f, "old") != 1 { // the entry's latest run stays
		if time.Now().After(deadline) {
			t.Fatal("the leader did not prune within the bound")
		}
		clock.Advance(PrunerEveryDefault)
		time.Sleep(5 * time.Millisecond)
	}
}
