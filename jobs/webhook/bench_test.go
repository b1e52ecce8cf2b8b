package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// BenchmarkDeliver measures deliveries per second to a local receiver: b.N
// webhook.deliver jobs (one message, spread over 10 endpoints of one
// workspace, each capped at ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY=10)
// committed at once and worked by one daemon with the default 200 webhook
// workers, each signed, POSTed, answered 204, logged in
// errand.webhook_attempts and completed. Setup is not timed. Run it with a
// fixed count, since every call sets up a database and a daemon:
//
//	go test -run '^$' -bench BenchmarkDeliver -benchtime 20000x ./jobs/webhook/
func BenchmarkDeliver(b *testing.B) {
	const endpoints = 10
	var answered atomic.Int64
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rc.Close()
	url, pool := errandtest.MigratedDB(b, kinds()...)
	ws := errandtest.NewWorkspace(b, pool, "bench")
	env := map[string]string{
		"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
		"ERRAND_LOG_LEVEL":           "warn",
	}
	// Settings to try (ERRAND_QUEUES=webhooks=100, ERRAND_FAIRNESS=off)
	// come from the benchmark's own environment.
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ERRAND_") {
			env[k] = v
		}
	}
	errandtest.StartDaemon(b, url, env, kinds()...)
	ctx := context.Background()
	var eps []string
	for i := range endpoints {
		var id string
		if err := pool.QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2) RETURNING id::text`,
			ws, fmt.Sprintf("%s/hook/%d", rc.URL, i)).Scan(&id); err != nil {
			b.Fatal(err)
		}
		eps = append(eps, id)
	}
	var msg string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.webhook_messages (workspace_id, event_type, body) VALUES ($1, 'bench.event', $2) RETURNING id::text`,
		ws, `{"type":"bench.event","timestamp":"2026-11-26T10:00:00.000000Z","data":{"invoice":"in_1","amount":1000}}`).Scan(&msg); err != nil {
		b.Fatal(err)
	}

	// Every delivery is in one transaction: none starts before the timer.
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1, 'webhook.deliver', jsonb_build_object('message_id', $2::text, 'endpoint_id', ($3::text[])[1 + i % $4])
		FROM generate_series(0, $5 - 1) AS i`, ws, msg, eps, endpoints, b.N); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	// Wait for the receiver to have answered every delivery, then for
	// River to have completed them all: polling the database only at the
	// end keeps the measuring from taking CPU from the daemon measured.
	deadline := time.Now().Add(10 * time.Minute)
	for answered.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d deliveries answered after 10 minutes", answered.Load(), b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job
			WHERE state IN ('available', 'running', 'retryable', 'scheduled', 'pending') AND kind = 'webhook.deliver'`).Scan(&left); err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d deliveries not finished after 10 minutes", left, b.N)
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	// Where the time went, by the database's timestamps: the request, one
	// attempt from its start to River's completion, the wait in the queue;
	// and how often a delivery was held back by its endpoint's cap.
	var diag string
	if err := pool.QueryRow(ctx, `SELECT format('request %s ms, attempt %s ms, queued %s ms, snoozes %s (averages)',
		(SELECT round(avg(latency_ms), 2) FROM errand.webhook_attempts),
		round(avg(extract(epoch FROM finalized_at - attempted_at)) * 1000, 2),
		round(avg(extract(epoch FROM attempted_at - created_at)) * 1000, 2),
		round(avg(coalesce((metadata ->> 'snoozes')::int, 0)), 2))
		FROM errand.river_job WHERE kind = 'webhook.deliver'`).Scan(&diag); err != nil {
		b.Fatal(err)
	}
	b.Log(diag)
	// A tail shows here: the deliveries held back longest (snoozed, not
	// woken) finish after the rest.
	var tail string
	if err := pool.QueryRow(ctx, `SELECT format('half finished after %s s, 95%% after %s s, all after %s s',
		round(extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY finalized_at) - min(created_at))::numeric, 2),
		round(extract(epoch FROM percentile_disc(0.95) WITHIN GROUP (ORDER BY finalized_at) - min(created_at))::numeric, 2),
		round(extract(epoch FROM max(finalized_at) - min(created_at))::numeric, 2))
		FROM errand.river_job WHERE kind = 'webhook.deliver'`).Scan(&tail); err != nil {
		b.Fatal(err)
	}
	b.Log(tail)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
	if n := answered.Load(); n < int64(b.N) {
		b.Errorf("%d requests answered for %d completed deliveries", n, b.N)
	}
	var logged int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.webhook_attempts WHERE message_id = $1 AND status_code = 204`, msg).Scan(&logged); err != nil {
		b.Fatal(err)
	}
	if logged != b.N {
		b.Errorf("%d attempts logged for %d deliveries", logged, b.N)
	}
}
