package email_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/errandtest"
)

// Page loads stuck behind a lock on errand.emails (a migration, someone's
// open transaction), however many a browser sends, hold only the pages' own
// small pool: /readyz and the crash rescuer keep the connections they need.
func TestEmailsPageLoadsStuckOnALockStarveNeitherReadyzNorTheRescuer(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	ctx := context.Background()

	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) // on a failure, so the page loads end and the daemon stops
	if _, err := lock.Exec(ctx, `LOCK errand.emails IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// More loads than the pages' pool (3) and the daemon's own (4) hold
	// together: sharing either, they would take every connection.
	const loads = 8
	codes := make(chan string, loads)
	client := &http.Client{Timeout: time.Minute}
	for range loads {
		go func() {
			resp, err := client.Get("http://" + d.Addr + "/emails")
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			codes <- resp.Status
		}()
	}
	// Wait until the pages' pool is full of loads waiting for the lock.
	deadline := time.Now().Add(30 * time.Second)
	for waiting := 0; waiting < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d page loads waiting for the lock on errand.emails after 30s, want 3", waiting)
		}
		time.Sleep(20 * time.Millisecond)
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE relation = 'errand.emails'::regclass AND NOT granted`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}

	ready := &http.Client{Timeout: 10 * time.Second}
	resp, err := ready.Get("http://" + d.Addr + "/readyz")
	if err != nil {
		t.Fatalf("/readyz while page loads wait: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz while page loads wait: %s, want 200", resp.Status)
	}

	// A job whose replica died, running: the daemon's rescuer puts it back
	// and the daemon works it, all while the loads still wait.
	var id int64
	err = pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at) VALUES ($1, 'ping', '{}', now() + interval '1 day') RETURNING id`, ws).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('dead', '-infinity')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 1, attempted_at = now(), attempted_by = '{dead}' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed"); !strings.Contains(j.LastError, "rescued: replica dead stopped heartbeating") {
		t.Errorf("job %+v, want completed after the rescuer put it back", j)
	}

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range loads {
		if code := <-codes; code != "200 OK" {
			t.Errorf("a page load once the lock was released: %s, want 200 OK", code)
		}
	}
}

// The pages have no authentication: a query that fails is logged, and the
// caller learns only that it failed, not the database's error (its
// SQLSTATE, the tenant role, the table).
func TestEmailsPageDoesNotEchoDatabaseErrors(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	ctx := context.Background()
	var role string
	if err := pool.QueryRow(ctx, `SELECT errand.tenant_role()`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `REVOKE SELECT ON errand.emails FROM `+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/emails", "/emails/1", fmt.Sprintf("/emails/1?workspace=%s", ws)}
	for _, path := range paths {
		resp, err := http.Get("http://" + d.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != http.StatusInternalServerError || len(body) > 80 {
			t.Errorf("GET %s with the query failing: %s %q, want 500 and a short reason", path, resp.Status, body)
		}
		for _, detail := range []string{"SQLSTATE", "42501", "permission denied", role, "errand.emails", "table"} {
			if strings.Contains(body, detail) {
				t.Errorf("GET %s: the answer %q shows the database's error (%q)", path, body, detail)
			}
		}
	}
	if n := strings.Count(d.Logs.String(), "permission denied for table emails"); n != len(paths) {
		t.Errorf("the database's error logged %d times for %d failed page loads:\n%s", n, len(paths), d.Logs.String())
	}
}
