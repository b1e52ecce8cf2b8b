package ping_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// A ping asked to fail once: its first attempt fails, the retry (after the
// backoff, 20 ms here) completes, and the first failure stays visible.
func Example() {
	ctx := context.Background()
	url, drop, err := errandtest.ExampleDatabase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	env := map[string]string{"DATABASE_URL": url, "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_EMAIL_CAPTURE": "true",
		"ERRAND_RETRY_BASE": "20ms", "ERRAND_LOG_LEVEL": "error"}
	getenv := func(k string) string { return env[k] }
	if err := errand.Main(ctx, []string{"migrate"}, getenv, io.Discard, os.Stderr); err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- errand.Main(runCtx, []string{"run"}, getenv, io.Discard, os.Stderr, errand.WithReady(func(string) { close(ready) }))
	}()
	<-ready

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(ctx)
	var ws string
	var id int64
	_ = conn.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Acme', 'acme') RETURNING id`).Scan(&ws)
	_ = conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{"sleep_ms": 5, "fail_times": 1}') RETURNING id`, ws).Scan(&id)

	var status, lastError string
	var attempt int
	for status != "completed" && status != "failed" {
		time.Sleep(10 * time.Millisecond)
		_ = conn.QueryRow(ctx, `SELECT status, attempt, coalesce(last_error, '') FROM errand.jobs WHERE id = $1`, id).Scan(&status, &attempt, &lastError)
	}
	fmt.Println(status, "on attempt", attempt)
	fmt.Println(lastError)
	stop()
	fmt.Println(<-done)
	// Output:
	// completed on attempt 2
	// attempt 1 of 1: ping failed as asked by fail_times
	// <nil>
}
