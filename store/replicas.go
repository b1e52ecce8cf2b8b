package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RegisterReplica records a new replica, its heartbeat stamped with the
// database's clock.
func RegisterReplica(ctx context.Context, db DB, id, hostname string, pid int) error {
	_, err := db.Exec(ctx, `INSERT INTO errand.replicas (id, hostname, pid) VALUES ($1, $2, $3)`, id, hostname, pid)
	if err != nil {
		return fmt.Errorf("register replica: %w", err)
	}
	return nil
}

// ErrLeaseExpired is returned by RenewReplica when the lease had already run
// out: others may have rescued the replica's jobs, so it must not go on.
var ErrLeaseExpired = errors.New("replica lease expired")

// RenewReplica renews a live lease, stamped with the database's clock. It
// never revives an expired one.
func RenewReplica(ctx context.Context, db DB, id string, lease time.Duration) error {
	tag, err := db.Exec(ctx, `
		UPDATE errand.replicas SET heartbeat_at = now()
		WHERE id = $1 AND heartbeat_at >= now() - make_interval(secs => $2)`, id, lease.Seconds())
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("heartbeat %s: %w", id, ErrLeaseExpired)
	}
	return nil
}

// Retire marks a replica dead at once (a clean exit), so anything it still
// held is rescued without waiting for its lease, and drops the fair fetch's
// counts of what it ran.
func Retire(ctx context.Context, db DB, id string) error {
	_, err := db.Exec(ctx, `
		WITH counts AS (DELETE FROM errand.fair_working WHERE client = $1)
		UPDATE errand.replicas SET heartbeat_at = '-infinity' WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("retire replica: %w", err)
	}
	return nil
}

// Rescued is a job put back (or, out of attempts, failed) because its replica died.
type Rescued struct {
	JobID int64
	Queue string
	Owner string
	State string
}

// RescueOrphans puts back the running jobs of replicas whose heartbeat is
// older than lease: available again (their attempt counted), discarded when
// out of attempts, cancelled when someone asked to cancel them. It wakes the queues it refilled, and forgets replicas dead
// for a day.
func RescueOrphans(ctx context.Context, db DB, lease time.Duration) ([]Rescued, error) {
	var out []Rescued
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// The completion guard lets this transaction move other replicas' jobs.
		if _, err := tx.Exec(ctx, `SELECT set_config('errand.rescuing', 'on', true)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH dead AS (
				SELECT id FROM errand.replicas WHERE heartbeat_at < now() - make_interval(secs => $1)
			)
			UPDATE errand.river_job j SET
				state = CASE
					WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled'
					WHEN j.attempt < j.max_attempts THEN 'available'
					ELSE 'discarded' END::errand.river_job_state,
				scheduled_at = now(),
				finalized_at = CASE
					WHEN j.attempt < j.max_attempts AND NOT j.metadata ? 'cancel_attempted_at' THEN NULL
					ELSE now() END,
				errors = coalesce(j.errors, '{}') || jsonb_build_object(
					'at', now(), 'attempt', j.attempt, 'trace', '',
					'error', format('rescued: replica %s stopped heartbeating while running this job', j.attempted_by[array_length(j.attempted_by, 1)])),
				metadata = j.metadata || jsonb_build_object('errand:rescued', coalesce((j.metadata ->> 'errand:rescued')::int, 0) + 1)
			WHERE j.state = 'running'
			  AND j.attempted_by[array_length(j.attempted_by, 1)] IN (SELECT id FROM dead)
			RETURNING j.id, j.queue, j.attempted_by[array_length(j.attempted_by, 1)], j.state::text`,
			lease.Seconds())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Rescued, error) {
			var x Rescued
			err := r.Scan(&x.JobID, &x.Queue, &x.Owner, &x.State)
			return x, err
		})
		if err != nil {
			return err
		}
		woken := map[string]bool{}
		for _, x := range out {
			if x.State == "available" && !woken[x.Queue] {
				woken[x.Queue] = true
				if _, err := tx.Exec(ctx, `SELECT pg_notify('errand.river_insert', json_build_object('queue', $1::text)::text)`, x.Queue); err != nil {
					return err
				}
			}
		}
		// The fair fetch's counts of what the dead replicas ran go with
		// their jobs (migrations/033_fair_working_counts.sql), and so do
		// any of a client that is no live replica (a dead one's producer
		// that fetched once more after this rescue, then failed to shut
		// down cleanly; its replica row goes after a day).
		if _, err := tx.Exec(ctx, `
			DELETE FROM errand.fair_working w
			WHERE NOT EXISTS (SELECT 1 FROM errand.replicas r
			                  WHERE r.id = w.client AND r.heartbeat_at >= now() - make_interval(secs => $1))`,
			lease.Seconds()); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			DELETE FROM errand.replicas r
			WHERE r.heartbeat_at < now() - interval '1 day'
			  AND NOT EXISTS (SELECT 1 FROM errand.river_job j
			                  WHERE j.state = 'running' AND j.attempted_by[array_length(j.attempted_by, 1)] = r.id)`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rescue orphaned jobs: %w", err)
	}
	return out, nil
}
