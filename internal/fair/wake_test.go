package fair_test

import (
	"context"
	"testing"
	"time"

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
