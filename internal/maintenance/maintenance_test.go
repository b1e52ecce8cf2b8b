package maintenance

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// waitBound is how long a test waits for something it expects to happen.
// Generous: the machine may be busy, and nothing waits this long when the
// code is right.
const waitBound = 30 * time.Second

type fixture struct {
	url  string
	pool *pgxpool.Pool
	ws   string
}

func setup(t *testing.T) fixture {
	t.Helper()
	url := testdb.NewDatabase(t, true)
	pool := testdb.Pool(t, url)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default')`); err != nil {
		t.Fatal(err)
	}
	var ws string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'a') RETURNING id::text`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	return fixture{url, pool, ws}
}

// runningJob makes a job that owner is running (attempt 1 of maxAttempts).
func (f fixture) runningJob(t *testing.T, owner string, maxAttempts int) int64 {
	t.Helper()
	var id int64
	err := f.pool.QueryRow(context.Background(), `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', max_attempts => $2)`, f.ws, maxAttempts).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.pool.Exec(context.Background(), `UPDATE errand.river_job SET state = 'running', attempt = 1, attempted_at = now(),
		attempted_by = ARRAY['someone-earlier', $2] WHERE id = $1`, id, owner)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// replica records a replica whose last heartbeat is age old.
func (f fixture) replica(t *testing.T, id string, age time.Duration) {
	t.Helper()
	_, err := f.pool.Exec(context.Background(), `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ($1, now() - make_interval(secs => $2))`, id, age.Seconds())
	if err != nil {
		t.Fatal(err)
	}
}

func (f fixture) state(t *testing.T, id int64) (state string, attempt int, lastError string) {
	t.Helper()
	err := f.pool.QueryRow(context.Background(), `SELECT river_state, attempt, coalesce(last_error, '') FROM errand.jobs WHERE id = $1`, id).Scan(&state, &attempt, &lastError)
	if err != nil {
		t.Fatal(err)
	}
	return
}

// next waits for the next event on s.
func next[T any](t *testing.T, s testSignal[T], what string) T {
	t.Helper()
	select {
	case v := <-s:
		return v
	case <-time.After(waitBound):
		t.Fatalf("no %s within %s", what, waitBound)
		var zero T
		return zero
	}
}

// eventually waits for cond to hold.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The completion guard: a replica that is not the job's latest owner cannot
// finish it; the owner, ops sessions and the rescuer can.
func TestCompletionGuardStopsAStaleReplica(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	finish := func(replica string, rescuing bool, id int64) int64 {
		cfg, err := pgx.ParseConfig(f.url)
		if err != nil {
			t.Fatal(err)
		}
		if replica != "" {
			cfg.RuntimeParams["errand.replica_id"] = replica
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rescuing {
			if _, err := tx.Exec(ctx, `SELECT set_config('errand.rescuing', 'on', true)`); err != nil {
				t.Fatal(err)
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = $1 AND state = 'running'`, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return tag.RowsAffected()
	}
	f.replica(t, "new-owner", 0)
	cases := []struct {
		name     string
		owner    string
		replica  string
		rescuing bool
		want     int64
	}{
		{"a replica whose job was rescued and rerun elsewhere", "new-owner", "old-owner", false, 0},
		{"River's rescuer on the leader, for a live replica's job", "new-owner", "leader", false, 0},
		{"the job's current owner", "new-owner", "new-owner", false, 1},
		{"an ops session without a replica id", "new-owner", "", false, 1},
		{"errand's rescuer on another replica", "new-owner", "rescuer", true, 1},
		{"River's rescuer, for a plain River client's job", "plain-river-client", "leader", false, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := f.runningJob(t, tc.owner, 5)
			if got := finish(tc.replica, tc.rescuing, id); got != tc.want {
				t.Errorf("rows finished %d, want %d", got, tc.want)
			}
		})
	}
}
