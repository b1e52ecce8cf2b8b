package maintenance

import (
	"context"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/netfault"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

type fixture struct {
	url  string
	pool *pgxpool.Pool
	st   *store.Store
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
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return fixture{url, pool, st, ws}
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

func TestRescuerPutsBackOnlyDeadReplicasJobs(t *testing.T) {
	f := setup(t)
	f.replica(t, "dead", time.Minute)
	f.replica(t, "alive", 0)
	orphan := f.runningJob(t, "dead", 5)
	lastChance := f.runningJob(t, "dead", 1)
	healthy := f.runningJob(t, "alive", 5)
	cancelAsked := f.runningJob(t, "dead", 5)
	if _, err := f.pool.Exec(context.Background(), `UPDATE errand.river_job SET metadata = metadata || '{"cancel_attempted_at": "2026-01-01T00:00:00Z"}' WHERE id = $1`, cancelAsked); err != nil {
		t.Fatal(err)
	}

	listener, err := pgx.Connect(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(context.Background(), `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}

	r := NewRescuer(f.st, RescuerConfig{Lease: 10 * time.Second})
	rescued, err := r.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rescued) != 3 {
		t.Fatalf("rescued %+v, want the dead replica's three jobs", rescued)
	}
	if s, _, _ := f.state(t, cancelAsked); s != "cancelled" {
		t.Errorf("job someone asked to cancel: %s, want cancelled, not run again", s)
	}
	if s, attempt, e := f.state(t, orphan); s != "available" || attempt != 1 || e != "rescued: replica dead stopped heartbeating while running this job" {
		t.Errorf("orphan: %s attempt %d error %q; want available, attempt kept, the reason", s, attempt, e)
	}
	if s, _, _ := f.state(t, lastChance); s != "discarded" {
		t.Errorf("job out of attempts: %s, want discarded", s)
	}
	if s, _, _ := f.state(t, healthy); s != "running" {
		t.Errorf("live replica's job: %s, want left running", s)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != `{"queue" : "default"}` {
		t.Errorf("no wake-up for the refilled queue: %v %v", n, err)
	}
	// A second sweep finds nothing.
	if again, err := r.Sweep(context.Background()); err != nil || len(again) != 0 {
		t.Errorf("second sweep: %v %v", again, err)
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

func TestHeartbeatFencesWhenItCannotRenew(t *testing.T) {
	f := setup(t)
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := netfault.New(t, u.Host)
	cfg, err := pgx.ParseConfig(proxy.URL(t, f.url))
	if err != nil {
		t.Fatal(err)
	}
	hb := NewHeartbeat(HeartbeatConfig{ID: "r1", ConnConfig: cfg, Interval: 100 * time.Millisecond, FenceAfter: 600 * time.Millisecond, Lease: 900 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Register(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	go hb.Run(ctx)

	// Renewals land, stamped by the database.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var beats int
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM errand.replicas WHERE id = 'r1' AND heartbeat_at > now() - interval '1 second'`).Scan(&beats)
		if err != nil {
			t.Fatal(err)
		}
		if beats == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-hb.Fenced():
		t.Fatal("fenced while renewing")
	default:
	}
	if !hb.Healthy() {
		t.Error("not healthy while renewing")
	}

	// A partition: sockets stay open but nothing gets through, so renewals
	// hang instead of failing fast. The fence must not wait for them.
	proxy.Blackhole(true)
	cut := time.Now()
	select {
	case <-hb.Fenced():
	case <-time.After(5 * time.Second):
		t.Fatal("not fenced within 5s of a partition (fence_after 600ms)")
	}
	t.Logf("fenced %s after the partition", time.Since(cut))
	if hb.Healthy() {
		t.Error("healthy after fencing")
	}
}

// A renewal never revives an expired lease: the replica fences instead.
func TestHeartbeatFencesWhenItsLeaseHadExpired(t *testing.T) {
	f := setup(t)
	cfg, err := pgx.ParseConfig(f.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	hb := NewHeartbeat(HeartbeatConfig{ID: "late", ConnConfig: cfg, Lease: 6 * time.Second})
	if err := hb.Register(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `UPDATE errand.replicas SET heartbeat_at = now() - interval '1 minute' WHERE id = 'late'`); err != nil {
		t.Fatal(err)
	}
	if err := hb.Beat(ctx, conn); !errors.Is(err, store.ErrLeaseExpired) {
		t.Fatalf("renewing an expired lease: %v, want ErrLeaseExpired", err)
	}
	select {
	case <-hb.Fenced():
	default:
		t.Error("not fenced after finding its lease expired")
	}
	var age time.Duration
	if err := f.pool.QueryRow(ctx, `SELECT now() - heartbeat_at FROM errand.replicas WHERE id = 'late'`).Scan(&age); err != nil {
		t.Fatal(err)
	}
	if age < 50*time.Second {
		t.Errorf("the expired lease was renewed (age %s)", age)
	}
}
