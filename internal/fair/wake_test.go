package fair_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/migrations"
)

type pingArgs struct{}

func (pingArgs) Kind() string { return "ping" }

// TestCompletionsWakeAHeldBackQueue runs capped jobs with River's poll and
// the pilot's fallback wake-up both an hour away: each job can start only
// because the pilot, seeing River's completer commit the previous one of a
// queue its fetch held back, wakes the queue at once.
func TestCompletionsWakeAHeldBackQueue(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[pingArgs]) error { return nil }))
	client, err := river.NewClient(fair.NewDriver(pool, fair.Config{DefaultCap: 1, WakeAfter: time.Hour}), &river.Config{
		Schema:            migrations.Schema,
		Queues:            map[string]river.QueueConfig{"default": {MaxWorkers: 10}},
		Workers:           workers,
		FetchPollInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	})
	enqueue(t, pool, ws, 10, `{}`)
	waitAllCompleted(t, pool, 30*time.Second, "capped at one at a time (each would wait an hour for a poll)")
}

// A job whose work ends in a queue that a cap held back wakes the queue at
// once: its slot is free before River's completer commits it, which may
// be 250 ms later. Here the fallback is an hour away, and the notification
// must come from the end of the work alone.
func TestEndedWorkWakesAHeldBackQueue(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 3, `{}`)
	d := fair.NewDriver(pool, fair.Config{DefaultCap: 1, WakeAfter: time.Hour})
	got := newProducer(t, d, "replica").fetch(t, 3)
	if len(got) != 1 {
		t.Fatalf("capped at 1: fetched %d, want 1", len(got))
	}
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Close(context.Background()) })
	if _, err := listener.Exec(ctx, `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}
	workEnds(t, d, got[0])
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(waitCtx)
	if err != nil {
		t.Fatalf("no wake-up within 30 s of the held-back queue's job ending: %v", err)
	}
	if n.Payload != `{"queue" : "default"}` {
		t.Errorf("woke %s, want the default queue", n.Payload)
	}
}
