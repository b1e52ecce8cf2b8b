package dev_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// `errand dev` with DATABASE_URL unset: its own PostgreSQL, migrated and
// seeded, a health URL and a psql line that work, and data that survives a
// restart.
func TestDevRunsOnAPrivatePostgreSQLAndKeepsData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL twice")
	}
	base, err := os.MkdirTemp("", "errand-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // PostgreSQL may run as another user
		t.Fatal(err)
	}
	env := map[string]string{"ERRAND_DEV_DIR": filepath.Join(base, "pg"), "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_LOG_FORMAT": "json"} // the port printed on each run

	health := regexp.MustCompile(`health: +(http://127\.0\.0\.1:\d+/healthz)`)
	dbLine := regexp.MustCompile(`database: +(postgres://\S+)`)
	wsLine := regexp.MustCompile(`workspace: demo \(([0-9a-f-]{36})\)`)

	runDev := func(work func(dbURL, ws string)) {
		ctx, cancel := context.WithCancel(context.Background())
		out := &errandtest.Buffer{}
		done := make(chan error, 1)
		go func() { done <- errand.Main(ctx, []string{"dev"}, errandtest.Env(env), out, out) }()
		deadline := time.Now().Add(90 * time.Second)
		for !health.MatchString(out.String()) {
			select {
			case err := <-done:
				t.Fatalf("dev exited: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("dev printed no health URL within 90s:\n%s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		resp, err := http.Get(health.FindStringSubmatch(out.String())[1])
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("health URL: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		work(dbLine.FindStringSubmatch(out.String())[1], wsLine.FindStringSubmatch(out.String())[1])
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("dev stopped with %v\n%s", err, out.String())
		}
	}

	var firstID int64
	runDev(func(dbURL, ws string) {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`, ws).Scan(&firstID); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var status string
			if err := conn.QueryRow(context.Background(), `SELECT status FROM errand.jobs WHERE id = $1`, firstID).Scan(&status); err != nil {
				t.Fatal(err)
			}
			if status == "completed" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ping status %s after 30s", status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	runDev(func(dbURL, ws string) {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var status string
		if err := conn.QueryRow(context.Background(), `SELECT status FROM errand.jobs WHERE id = $1`, firstID).Scan(&status); err != nil {
			t.Fatalf("job from the first run is gone after a restart: %v", err)
		}
		var workspaces int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM errand.workspaces WHERE slug = 'demo'`).Scan(&workspaces); err != nil || workspaces != 1 {
			t.Errorf("demo workspaces after restart: %d %v", workspaces, err)
		}
	})
}
