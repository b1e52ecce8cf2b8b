package bench_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// BenchmarkInsertToStart measures, at idle, the time from sending a single-row
// SQL INSERT of a ping (autocommit, on its own connection) to the job starting
// in a worker: the INSERT round trip, the commit, the notification, River's
// fetch and dispatch. Samples are serial with a 5 ms gap so each one meets an
// idle worker, as an app server's sporadic inserts do.
//
//	go test -run '^$' -bench InsertToStart -benchtime 2000x ./internal/bench/
func BenchmarkInsertToStart(b *testing.B) {
	url := errandtest.NewDatabase(b)
	if err := errand.Main(context.Background(), []string{"migrate"}, errandtest.Env(map[string]string{"DATABASE_URL": url}), discard{}, discard{}); err != nil {
		b.Fatal(err)
	}
	started := make(chan int64, 16)
	hook := errand.WithJobStartHook(func(job *rivertype.JobRow) { started <- job.ID })
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	env := map[string]string{"DATABASE_URL": url, "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_LOG_LEVEL": "warn", "ERRAND_EMAIL_CAPTURE": "true"}
	go func() {
		done <- errand.Main(ctx, []string{"run"}, errandtest.Env(env), discard{}, discard{}, hook, errand.WithReady(func(string) { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	defer func() { cancel(); <-done }()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var ws string
	if err := conn.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Bench', 'bench-'||gen_random_uuid()) RETURNING id::text`).Scan(&ws); err != nil {
		b.Fatal(err)
	}
	const insert = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		time.Sleep(5 * time.Millisecond)
		b.StartTimer()
		t0 := time.Now()
		var id int64
		if err := conn.QueryRow(ctx, insert, ws).Scan(&id); err != nil {
			b.Fatal(err)
		}
		for got := range started {
			if got == id {
				break
			}
		}
		samples = append(samples, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.95), "p95_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max_ms")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
