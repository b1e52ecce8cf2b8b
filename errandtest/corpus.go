package errandtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand"
)

// BadInput is one malformed input a user can send, for RunCorpus. In SQL,
// $1 is a live workspace and $2 a deleted one. Either the statement is
// refused (Code and part of Message) and nothing is enqueued, or it is
// accepted (RETURNING id is added) and its job fails on its first attempt
// with Failed in last_error.
type BadInput struct {
	Name    string
	SQL     string
	Code    string
	Message string
	Failed  string
}

// RunCorpus runs every input against one daemon started with opts (each a
// subtest named for what the user did wrong): each is refused or fails at
// once with its reason, nothing retries, no panic is logged, and the daemon
// is still ready afterwards. Each kind keeps its corpus in its own package;
// the SQL contract's is at the repository's root.
func RunCorpus(t *testing.T, corpus []BadInput, opts ...errand.Option) {
	t.Helper()
	url, pool := MigratedDB(t, opts...)
	ws := NewWorkspace(t, pool, "acme")
	gone := NewWorkspace(t, pool, "gone")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, url, nil, opts...)

	for _, tc := range corpus {
		t.Run(tc.Name, func(t *testing.T) {
			before := CountJobs(t, pool)
			sql := strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+gone+"'").Replace(tc.SQL)
			if tc.Code != "" {
				_, err := pool.Exec(ctx, sql)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) {
					t.Fatalf("want a PostgreSQL error, got %v", err)
				}
				if pgErr.Code != tc.Code || !strings.Contains(pgErr.Message, tc.Message) {
					t.Errorf("got %s %q, want %s containing %q", pgErr.Code, pgErr.Message, tc.Code, tc.Message)
				}
				if after := CountJobs(t, pool); after != before {
					t.Errorf("%d jobs enqueued by a refused statement", after-before)
				}
				return
			}
			var id int64
			if err := pool.QueryRow(ctx, sql+" RETURNING id").Scan(&id); err != nil {
				t.Fatalf("insert refused (%v), want it accepted and failed by the worker", err)
			}
			j := WaitJob(t, pool, id, 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.Failed) {
				t.Errorf("got %+v, want failed on attempt 1 with %q", j, tc.Failed)
			}
		})
	}

	// Still serving after the corpus. A heartbeat renewed late on a busy
	// machine makes /readyz say 503 for a moment; a daemon the corpus broke
	// never says 200 again.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + d.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("daemon not ready within 30s after the corpus: %d", resp.StatusCode)
			break
		}
	}
	var retried int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.jobs WHERE attempt > 1`).Scan(&retried); err != nil {
		t.Fatal(err)
	}
	if retried != 0 {
		t.Errorf("%d hopeless jobs were retried", retried)
	}
	if strings.Contains(d.Logs.String(), "panic") {
		t.Errorf("a panic was logged:\n%s", d.Logs.String())
	}
}
