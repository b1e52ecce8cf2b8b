package maintenance

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestRescuerPutsBackOnlyDeadReplicasJobs(t *testing.T) {
	f := setup(t)
	f.replica(t, "dead", time.Minute)
	f.replica(t, "alive", 0)
	orphan := f.runningJob(t, "dead", 5)
	lastChance := f.runningJob(t, "dead", 1)
	healthy := f.runningJob(t, "alive", 5)
	cancelAsked := f.runningJob(t, "dead", 5)
	if _, err := f.pool.Exec(context.Background(), `UPDATE errand.river_job SET metadata = metadata || '{"cancel_attempted_at": "2026-01-01T00:00:00Z"}' WHERE id = $1`, cancelAsked); err != nil {
		t.Fatal(err)
	}

	listener, err := pgx.Connect(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(context.Background(), `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}

	r := NewRescuer(f.pool, RescuerConfig{Lease: 10 * time.Second})
	rescued, err := r.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rescued) != 3 {
		t.Fatalf("rescued %+v, want the dead replica's three jobs", rescued)
	}
	if s, _, _ := f.state(t, cancelAsked); s != "cancelled" {
		t.Errorf("job someone asked to cancel: %s, want cancelled, not run again", s)
	}
	if s, attempt, e := f.state(t, orphan); s != "available" || attempt != 1 || e != "rescued: replica dead stopped heartbeating while running this job" {
		t.Errorf("orphan: %s attempt %d error %q; want available, attempt kept, the reason", s, attempt, e)
	}
	if s, _, _ := f.state(t, lastChance); s != "discarded" {
		t.Errorf("job out of attempts: %s, want discarded", s)
	}
	if s, _, _ := f.state(t, healthy); s != "running" {
		t.Errorf("live replica's job: %s, want left running", s)
	}
	wctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != `{"queue" : "default"}` {
		t.Errorf("no wake-up for the refilled queue: %v %v", n, err)
	}
	// A second sweep finds nothing.
	if again, err := r.Sweep(context.Background()); err != nil || len(again) != 0 {
		t.Errorf("second sweep: %v %v", again, err)
	}
}

// Run sweeps when it starts, then on its clock: with an hour between sweeps,
// only the test's clock can bring the second one within the wait bound.
func TestRescuerSweepsOnItsClock(t *testing.T) {
	f := setup(t)
	f.replica(t, "dead", time.Minute)
	f.replica(t, "alive", 0)
	first := f.runningJob(t, "dead", 5)
	healthy := f.runningJob(t, "alive", 5)

	const interval = time.Hour
	clock := NewManualClock(time.Now())
	r := NewRescuer(f.pool, RescuerConfig{Lease: 10 * time.Second, Interval: interval, Clock: clock})
	r.swept = newTestSignal[error]()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.Run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()

	if err := next(t, r.swept, "sweep when Run starts"); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := f.state(t, first); s != "available" {
		t.Errorf("dead replica's job after the first sweep: %s, want available", s)
	}

	f.replica(t, "dead-later", time.Minute)
	second := f.runningJob(t, "dead-later", 5)
	clock.Advance(jitter(interval, 1)) // the latest the next sweep can be due
	if err := next(t, r.swept, "sweep an interval later"); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := f.state(t, second); s != "available" {
		t.Errorf("job of a replica found dead later: %s, want available", s)
	}
	if s, _, _ := f.state(t, healthy); s != "running" {
		t.Errorf("live replica's job: %s, want left running", s)
	}
}
