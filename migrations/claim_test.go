package migrations_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
)

var errRollback = errors.New("rolled back by the test")

// A fair fetch's claim commits without waiting for the WAL flush (026)
// unless a job it starts is on its last attempt; a fetch that starts
// nothing leaves the transaction as it was.
func TestAFetchClaimsWithoutTheFlushUnlessAJobIsOnItsLastAttempt(t *testing.T) {
	t.Parallel()
	_, pool, ws := wakeDB(t)
	ctx := context.Background()
	enqueue := func(maxAttempts int) int64 {
		var id int64
		err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, 'ping', '{}', $2) RETURNING id`,
			ws, maxAttempts).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	retries := enqueue(25)
	last := enqueue(1)
	// A job whose attempts are all used but one: its next start is its last.
	second := enqueue(2)
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET attempt = 1 WHERE id = $1`, second); err != nil {
		t.Fatal(err)
	}
	running := enqueue(25)
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 1 WHERE id = $1`, running); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		ids  []int64
		want string
	}{
		{"a job with attempts left", []int64{retries}, "off"},
		{"a job with max_attempts 1", []int64{last}, "on"},
		{"a job starting its last attempt", []int64{second}, "on"},
		{"one on its last attempt among others", []int64{retries, last}, "on"},
		{"no job started (another fetch has it)", []int64{running}, "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			var started int
			// Rolled back: every case starts from the same rows.
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				// PostgreSQL's default (the tests' own cluster runs with it off).
				if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
					return err
				}
				if err := tx.QueryRow(ctx, `SELECT count(*) FROM errand.fair_start($1, 'test-client', 100, now())`, tc.ids).Scan(&started); err != nil {
					return err
				}
				if err := tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&got); err != nil {
					return err
				}
				return errRollback
			})
			if err != errRollback {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("synchronous_commit after the fetch started %d of %v: %q, want %q", started, tc.ids, got, tc.want)
			}
		})
	}
}
