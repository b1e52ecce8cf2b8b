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

// While a workspace sits at its cap and the fetches its fallback wake-up
// causes start nothing, the wake-up backs off, doubling up to WakeAfterMax
// (each one makes every replica fetch: at a fixed 20 ms one long-held
// workspace made each replica fetch about 50 times a second). A fetch that
// starts a job sets it back to WakeAfter, and one that holds nothing back
// forgets it.
func TestTheFallbackWakeUpBacksOffWhileHeldBackFetchesStartNothing(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	enqueue(t, pool, ws, 5, `{}`)
	d := fair.NewDriver(pool, fair.Config{DefaultCap: 1, WakeAfter: 20 * time.Millisecond, WakeAfterMax: 160 * time.Millisecond})
	p := newProducer(t, d, "replica")
	first := p.fetch(t, 5)
	if len(first) != 1 {
		t.Fatalf("capped at 1: fetched %d, want 1", len(first))
	}
	if got := d.WakeAfterOf("default"); got != 20*time.Millisecond {
		t.Errorf("after a held-back fetch that started a job: wake-up in %s, want 20ms", got)
	}
	for _, want := range []time.Duration{40, 80, 160, 160} {
		if n := len(p.fetch(t, 5)); n != 0 {
			t.Fatalf("fetched %d with the workspace at its cap, want 0", n)
		}
		if got := d.WakeAfterOf("default"); got != want*time.Millisecond {
			t.Errorf("after a held-back fetch that started nothing: wake-up in %s, want %s", got, want*time.Millisecond)
		}
	}
	workEnds(t, d, first[0])
	second := p.fetch(t, 5)
	if len(second) != 1 {
		t.Fatalf("after the running job's work ended: fetched %d, want 1", len(second))
	}
	if got := d.WakeAfterOf("default"); got != 20*time.Millisecond {
		t.Errorf("after a held-back fetch that started a job again: wake-up in %s, want 20ms", got)
	}
	// Nothing left to hold back: the delay is forgotten.
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE state = 'available'`); err != nil {
		t.Fatal(err)
	}
	workEnds(t, d, second[0])
	if n := len(p.fetch(t, 5)); n != 0 {
		t.Fatalf("fetched %d from an empty queue", n)
	}
	if got := d.WakeAfterOf("default"); got != 0 {
		t.Errorf("after a fetch that held nothing back: wake-up delay %s kept, want none", got)
	}
}
