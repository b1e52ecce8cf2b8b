package fair_test

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/migrations"
)

// BenchmarkIdleFetch is one idle fetch as a notification triggers it: a job
// enqueued, fetched and finished, through River's own statement and through
// errand's pilot in turn on every iteration (so both see the same table).
// fair/river is what fairness adds to INSERT-to-start at idle.
//
//	go test -run '^$' -bench IdleFetch -benchtime 2000x ./internal/fair/
func BenchmarkIdleFetch(b *testing.B) {
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(b)
	ws := errandtest.NewWorkspace(b, pool, "bench")
	params := &riverdriver.JobGetAvailableParams{
		ClientID: "bench", MaxAttemptedBy: 100, MaxToLock: 50, Queue: "default", Schema: migrations.Schema,
		Kind: []string{"ping"},
	}
	river := riverpgxv5.New(pool).GetExecutor()
	p := newProducer(b, fair.NewDriver(pool, fair.Config{}), "bench")
	fetchers := []func() (*riverdriver.JobGetAvailableResult, error){
		func() (*riverdriver.JobGetAvailableResult, error) { return river.JobGetAvailable(ctx, params) },
		func() (*riverdriver.JobGetAvailableResult, error) {
			return p.d.PluginPilot().JobGetAvailable(ctx, nil, p.state, params)
		},
	}
	var spent [2]time.Duration
	for b.Loop() {
		for i, fetch := range fetchers {
			if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}')`, ws); err != nil {
				b.Fatal(err)
			}
			t := time.Now()
			res, err := fetch()
			spent[i] += time.Since(t)
			if err != nil || len(res.Jobs) != 1 {
				b.Fatalf("fetched %v (%v), want 1 job", res, err)
			}
			if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = $1`, res.Jobs[0].ID); err != nil {
				b.Fatal(err)
			}
			p.state.JobFinish(res.Jobs[0])
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(spent[0].Microseconds())/n, "river-µs/fetch")
	b.ReportMetric(float64(spent[1].Microseconds())/n, "fair-µs/fetch")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "fair/river")
}
