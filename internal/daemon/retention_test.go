package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// River's cleaner, on the leader, deletes finished jobs after
// ERRAND_RETAIN_COMPLETED and ERRAND_RETAIN_FAILED and not before; an
// idempotency key holds exactly while its job is kept (the README's
// promise), and a pruned job's key enqueues anew.
func TestFinishedJobsAreKeptForTheirRetentionAndTheirKeysWithThem(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	enqueue := func(key string) int64 {
		t.Helper()
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key, run_at)
			VALUES ($1, 'ping', '{}', $2, now() + interval '1 day') RETURNING id`, ws, key).Scan(&id); err != nil {
			t.Fatalf("enqueue %s: %v", key, err)
		}
		return id
	}
	// Finished before the daemon starts, at the database's own clock.
	jobs := []struct {
		key, state string
		age        time.Duration
		kept       bool
	}{
		{"completed-2h", "completed", 2 * time.Hour, false},
		{"completed-30m", "completed", 30 * time.Minute, true},
		{"discarded-4h", "discarded", 4 * time.Hour, false},
		{"discarded-2h", "discarded", 2 * time.Hour, true},
		{"cancelled-4h", "cancelled", 4 * time.Hour, false},
	}
	ids := map[string]int64{}
	for _, j := range jobs {
		id := enqueue(j.key)
		ids[j.key] = id
		if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = $2, attempt = 1, attempted_at = now() - $3::interval,
			finalized_at = now() - $3::interval WHERE id = $1`, id, j.state, j.age.String()); err != nil {
			t.Fatal(err)
		}
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_RETAIN_COMPLETED": "1h", "ERRAND_RETAIN_FAILED": "3h"})

	left := func() map[string]bool {
		rows, err := pool.Query(ctx, `SELECT id FROM errand.river_job WHERE id = ANY($1)`, []int64{
			ids["completed-2h"], ids["completed-30m"], ids["discarded-4h"], ids["discarded-2h"], ids["cancelled-4h"]})
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[int64]bool{}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			got[id] = true
		}
		out := map[string]bool{}
		for key, id := range ids {
			out[key] = got[id]
		}
		return out
	}
	// River's cleaner runs on the leader every 30 s.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		l := left()
		if !l["completed-2h"] && !l["discarded-4h"] && !l["cancelled-4h"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs past their retention still there after 3 minutes: %v", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	l := left()
	for _, j := range jobs {
		if l[j.key] != j.kept {
			t.Errorf("%s job (finished %s ago, retention 1h completed / 3h failed): kept %v, want %v", j.state, j.age, l[j.key], j.kept)
		}
	}
	// A kept job's key still answers with that job; a pruned one's enqueues anew.
	for _, j := range jobs {
		id := enqueue(j.key)
		if j.kept && id != ids[j.key] {
			t.Errorf("key %q of a kept job enqueued job %d, want the existing %d", j.key, id, ids[j.key])
		}
		if !j.kept && id == ids[j.key] {
			t.Errorf("key %q of a pruned job answered with the pruned id %d", j.key, id)
		}
	}
}

// Jobs that finished before an outage longer than their retention are
// counted for the usage reports (errand.job_counts) before River's cleaner,
// which starts with the engine, deletes them: the leader's roll-up used to
// come a minute after the cleaner's first pass.
func TestJobsFinishedBeforeALongOutageAreCountedBeforeTheCleanerDeletesThem(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	// Three pings finished two hours ago, at the database's clock, after the
	// last roll-up; the fleet was down since.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		SELECT $1, 'ping', '{}', now() + interval '1 day' FROM generate_series(1, 3)`, ws); err != nil {
		t.Fatal(err)
	}
	if tag, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', attempt = 1,
		attempted_at = now() - interval '2 hours', finalized_at = now() - interval '2 hours'
		WHERE metadata ->> 'workspace_id' = $1`, ws); err != nil || tag.RowsAffected() != 3 {
		t.Fatalf("finishing the jobs two hours ago: %v, %v", tag, err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.job_counts_watermark SET counted_until = now() - interval '3 hours'`); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_RETAIN_COMPLETED": "1h"})
	// River's cleaner runs on the leader every 30 s.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var left int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job WHERE metadata ->> 'workspace_id' = $1`, ws).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 3 jobs finished two hours ago still there after 3 minutes (retention 1h)", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var counted int
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(count), 0) FROM errand.job_counts
		WHERE workspace_id = $1 AND kind = 'ping' AND state = 'completed'`, ws).Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if counted != 3 {
		t.Errorf("after River's cleaner deleted them: %d of the 3 jobs counted in errand.job_counts, want 3", counted)
	}
}
