package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/jobs"
)

func TestRunWorksPingAndServesHealth(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_LOG_LEVEL": "debug"})

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + d.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	id := errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": 10, "some_future_field": true}`)
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	if j.Status != "completed" || j.Attempt != 1 {
		t.Fatalf("ping: %+v, want completed on attempt 1 (unknown args fields are ignored)", j)
	}
	if logs := d.Logs.String(); !strings.Contains(logs, `"msg":"job done","job_id":`) || !strings.Contains(logs, `"workspace_id":"`+ws+`"`) {
		t.Errorf("no structured log line for the job with its workspace:\n%s", logs)
	}
	if err := d.Stop(t); err != nil {
		t.Errorf("clean shutdown returned %v", err)
	}
}

func TestRunRetriesWithBackoffThenCompletes(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	id := errandtest.Enqueue(t, pool, ws, "ping", `{"fail_times": 2}`)
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	if j.Status != "completed" || j.Attempt != 3 {
		t.Fatalf("got %+v, want completed on attempt 3", j)
	}
	if !strings.Contains(j.LastError, "attempt 2 of 2: ping failed") {
		t.Errorf("last_error %q does not keep the latest failure", j.LastError)
	}
}

func TestRunFailsHopelessJobsAtOnce(t *testing.T) {
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(errandtest.ScopedKind()))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(errandtest.ScopedKind()))

	// Rows written straight into River's table stand for a producer that
	// bypassed the contract, or an older binary's args.
	direct := func(kind, args, metadata string) int64 {
		var id int64
		err := pool.QueryRow(ctx, `INSERT INTO errand.river_job (kind, args, metadata, queue, max_attempts, state)
			VALUES ($1, $2, $3, 'default', 25, 'available') RETURNING id`, kind, args, metadata).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = pool.Exec(ctx, `SELECT pg_notify('errand.river_insert', '{"queue":"default"}')`)
		return id
	}
	cases := []struct {
		name string
		id   int64
		want string
	}{
		{"args of the wrong type", errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": "soon"}`), "decode args: json: cannot unmarshal string"},
		{"args out of range", errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": 999999}`), "sleep_ms must be between 0 and 30000, got 999999"},
		{"workspace that no longer exists", direct("test.scoped", `{"note": "x"}`, `{"workspace_id": "00000000-0000-0000-0000-0000000000aa"}`),
			"workspace 00000000-0000-0000-0000-0000000000aa: workspace not found"},
		{"required field missing", direct("test.scoped", `{"unrelated": 1}`, `{"workspace_id": "`+ws+`"}`),
			"args are missing required field(s): note"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := errandtest.WaitJob(t, pool, tc.id, 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.want) {
				t.Errorf("got %+v, want failed after 1 attempt with %q", j, tc.want)
			}
		})
	}
}

func TestCompleteInWorkspaceCommitsEffectsWithCompletion(t *testing.T) {
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(errandtest.ScopedKind()))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(errandtest.ScopedKind()))

	ok := errandtest.Enqueue(t, pool, ws, "test.scoped", `{"note": "x"}`)
	if j := errandtest.WaitJob(t, pool, ok, 30*time.Second, "completed", "failed"); j.Status != "completed" {
		t.Fatalf("got %+v", j)
	}
	var bad int64
	if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, 'test.scoped', '{"note": "x", "fail": true}', 2) RETURNING id`, ws).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if j := errandtest.WaitJob(t, pool, bad, 30*time.Second, "failed"); j.Attempt != 2 {
		t.Fatalf("got %+v", j)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.workspace_members`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// The superuser test connection bypasses RLS: it counts every row.
	if rows != 1 {
		t.Errorf("%d rows written, want 1: the failing job's writes must roll back with it", rows)
	}
}

func TestRunTimesOutAKindWithItsOwnTimeout(t *testing.T) {
	slow := jobs.Define("test.slow", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error {
		<-ctx.Done()
		return ctx.Err()
	}, jobs.WithTimeout(100*time.Millisecond), jobs.WithMaxAttempts(1))
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(slow))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(slow))
	id := errandtest.Enqueue(t, pool, ws, "test.slow", `{}`)
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "failed", "completed")
	if j.Status != "failed" || !strings.Contains(j.LastError, "deadline exceeded") {
		t.Fatalf("got %+v, want failed by its 100ms timeout", j)
	}
	var maxAttempts int
	if err := pool.QueryRow(context.Background(), "SELECT max_attempts FROM errand.kinds WHERE kind = 'test.slow'").Scan(&maxAttempts); err != nil {
		t.Fatal(err)
	}
	if maxAttempts != 1 {
		t.Errorf("published max_attempts %d, want 1", maxAttempts)
	}
}

func TestShutdownLetsRunningJobsFinish(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, nil)
	id := errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": 500}`)
	errandtest.WaitJob(t, pool, id, 30*time.Second, "processing")
	if err := d.Stop(t); err != nil {
		t.Fatal(err)
	}
	if j := errandtest.GetJob(t, pool, id); j.Status != "completed" {
		t.Errorf("after graceful stop: %+v, want completed", j)
	}
}

func TestShutdownTimeoutPutsJobsBackWithoutUsingAnAttempt(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_SHUTDOWN_TIMEOUT": "200ms"})
	id := errandtest.Enqueue(t, pool, ws, "ping", `{"sleep_ms": 20000}`)
	errandtest.WaitJob(t, pool, id, 30*time.Second, "processing")
	start := time.Now()
	if err := d.Stop(t); err != nil {
		t.Fatalf("shutdown returned %v, want nil (exit 0)", err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("shutdown took %s with a 200ms timeout", el)
	}
	j := errandtest.GetJob(t, pool, id)
	if j.Status != "pending" || j.Attempt != 0 {
		t.Errorf("cancelled job: %+v, want pending with attempt 0", j)
	}
}

func TestRunRefusesAnUnmigratedDatabase(t *testing.T) {
	url := errandtest.NewDatabase(t)
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"run"}, errandtest.Env(map[string]string{"DATABASE_URL": url, "ERRAND_HTTP_ADDR": errandtest.FreeAddr(t)}), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "run `errand migrate` first") {
		t.Fatalf("got %v, want a message telling to migrate", err)
	}
}

func TestKindsArePublishedAtStartAndNeverRemoved(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	// Another binary's kind, which this one does not know.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue, required_args) VALUES ('other.binary', 'default', '{}')`); err != nil {
		t.Fatal(err)
	}
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(errandtest.ScopedKind()))
	var kinds []string
	rows, err := pool.Query(ctx, "SELECT kind || ':' || array_to_string(required_args, ',') FROM errand.kinds ORDER BY kind")
	if err != nil {
		t.Fatal(err)
	}
	kinds, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"other.binary:", "test.scoped:note"}
	for _, k := range errand.Builtin() {
		want = append(want, k.Name+":"+strings.Join(k.RequiredArgs, ","))
	}
	slices.Sort(want)
	if !slices.Equal(kinds, want) {
		t.Errorf("kinds %q, want %q", kinds, want)
	}
	// This replica does not fetch the other binary's jobs, so their attempts
	// are not burned. River fetches oldest first and marks what it fetches
	// running at once, so had the older job been fetchable it would have
	// been taken no later than the ping: no wait is needed to see it was not.
	other := errandtest.Enqueue(t, pool, ws, "other.binary", `{}`)
	ping := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
	errandtest.WaitJob(t, pool, ping, 30*time.Second, "completed")
	if j := errandtest.GetJob(t, pool, other); j.Status != "pending" || j.Attempt != 0 {
		t.Errorf("unknown kind's job: %+v, want untouched", j)
	}
}

// Behind a transaction-mode pooler notifications never arrive. The proxy
// here drops them the same way; the daemon must notice and poll.
func TestRunFallsBackToPollingWhenNotificationsDoNotArrive(t *testing.T) {
	dbURL, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	proxied := notificationDroppingProxy(t, dbURL)
	d := errandtest.StartDaemon(t, proxied, map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "100ms"})
	logs := d.Logs.String()
	if strings.Count(logs, "LISTEN/NOTIFY does not work") != 1 || !strings.Contains(logs, `"poll_only":true,"completion_guard":false`) {
		t.Fatalf("want one warning, poll_only=true and the completion guard off:\n%s", logs)
	}
	id := errandtest.Enqueue(t, pool, ws, "ping", `{}`)
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
}

func notificationDroppingProxy(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	upstream := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			go func() { _, _ = io.Copy(server, client); server.Close() }()
			go func() { dropNotifications(client, server); client.Close() }()
		}
	}()
	u.Host = ln.Addr().String()
	return u.String()
}

// dropNotifications copies backend messages, leaving out NotificationResponse ('A').
func dropNotifications(dst io.Writer, src io.Reader) {
	header := make([]byte, 5)
	for {
		if _, err := io.ReadFull(src, header); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(header[1:])) - 4
		body := make([]byte, n)
		if _, err := io.ReadFull(src, body); err != nil {
			return
		}
		if header[0] == 'A' {
			continue
		}
		if _, err := dst.Write(append(header, body...)); err != nil {
			return
		}
	}
}

func TestRetryAfterSetsTheNextAttemptTime(t *testing.T) {
	later := jobs.Define("test.later", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error {
		return jobs.RetryAfter(errors.New("provider said wait"), 2*time.Hour)
	})
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(later))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil, errand.WithKinds(later))
	id := errandtest.Enqueue(t, pool, ws, "test.later", `{}`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		var wait time.Duration
		err := pool.QueryRow(context.Background(), `SELECT state::text, coalesce(scheduled_at - now(), '0') FROM errand.river_job WHERE id = $1`, id).Scan(&state, &wait)
		if err != nil {
			t.Fatal(err)
		}
		if state == "retryable" {
			if wait < 110*time.Minute || wait > 2*time.Hour {
				t.Errorf("next attempt in %s, want about 2h", wait)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s after 30s", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Each replica publishes the caps its fetch applies (errand.queue_startable
// and KEDA's query read them); `errand migrate`, which runs with the
// database's settings alone, leaves them as the replicas put them.
func TestReplicasPublishTheirCapsAndMigrateLeavesThem(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	caps := func() string {
		t.Helper()
		var v string
		err := pool.QueryRow(context.Background(), `SELECT value FROM errand.settings WHERE name = 'workspace_caps'`).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return "(none)"
		}
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := caps(); got != "(none)" {
		t.Errorf("after errand migrate, workspace_caps = %q; want none published", got)
	}
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_WORKSPACE_CONCURRENCY": "3"})
	if got := caps(); got != "3" {
		t.Errorf("with a replica at ERRAND_WORKSPACE_CONCURRENCY=3, workspace_caps = %q; want 3", got)
	}
	if err := d.Stop(t); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := errand.Main(context.Background(), []string{"migrate"}, errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if got := caps(); got != "3" {
		t.Errorf("after errand migrate with no cap in its environment, workspace_caps = %q; want the replica's 3", got)
	}
	d = errandtest.StartDaemon(t, url, map[string]string{"ERRAND_FAIRNESS": "off"})
	if got := caps(); got != "off" {
		t.Errorf("with a replica at ERRAND_FAIRNESS=off, workspace_caps = %q; want off", got)
	}
	if err := d.Stop(t); err != nil {
		t.Fatal(err)
	}
}

// A managed database may deny errand's role pg_control_system(): the
// instance id in email idempotency keys is then bound to the database's oid
// alone, and a copy in another cluster could keep it. The replica says so
// at start, with the remedy; one that may read the cluster's id does not.
func TestRunWarnsWhenTheInstanceIDIsBoundToTheDatabaseOIDAlone(t *testing.T) {
	ctx := context.Background()
	const warning = "bound to the database's oid alone"
	ownerURL := testdb.PlainOwnerDatabase(t, false)
	u, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	// As some providers do; function privileges are the database's own.
	admin := testdb.Pool(t, testdb.WithDatabase(testdb.AdminURL(t), strings.TrimPrefix(u.Path, "/")))
	if _, err := admin.Exec(ctx, `REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC`); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := errand.Main(ctx, []string{"migrate"}, errandtest.Env(map[string]string{"DATABASE_URL": ownerURL}), &out, &out); err != nil {
		t.Fatalf("migrate as a plain owner: %v\n%s", err, out.String())
	}
	testdb.CreateTenantRole(t, ownerURL)
	d := errandtest.StartDaemon(t, ownerURL, nil)
	if logs := d.Logs.String(); strings.Count(logs, warning) != 1 || !strings.Contains(logs, "DELETE FROM errand.settings WHERE name IN ('instance_id', 'instance_bound_to')") {
		t.Errorf("a replica whose role may not call pg_control_system() did not warn once, with the remedy:\n%s", logs)
	}

	superURL, _ := errandtest.MigratedDB(t)
	if logs := errandtest.StartDaemon(t, superURL, nil).Logs.String(); strings.Contains(logs, warning) {
		t.Errorf("a replica that may read the cluster's identifier warned:\n%s", logs)
	}
}
