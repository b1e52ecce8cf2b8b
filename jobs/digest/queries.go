package digest

// The kind's queries (tables in migration 013_schedules.sql). The tick runs
// unscoped on errand.digest_schedule, errand's own copy of the preferences'
// schedule; the job reads and writes tenant tables in its workspace's scope.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// anyDue reports whether any user's digest time has passed by at.
func anyDue(ctx context.Context, db store.DB, at time.Time) (bool, error) {
	var due bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.digest_schedule WHERE next_due_at <= $1)`, at).Scan(&due); err != nil {
		return false, fmt.Errorf("look for due digests: %w", err)
	}
	return due, nil
}

// tick enqueues a digest.send for every user whose digest time has passed by
// at, and moves each one's next time past at, in one statement over the
// index on next_due_at. A user is enqueued once for the latest time
// passed (however many passed while no replica ran), and not at all when
// that was more than backfill ago. Rows another tick holds are skipped:
// that tick handles them.
func tick(ctx context.Context, tx pgx.Tx, at time.Time, backfill time.Duration) (int, error) {
	// A time zone PostgreSQL stopped knowing (a tzdata update) would fail
	// the whole statement: those users follow UTC, and the row says why.
	if _, err := tx.Exec(ctx, `
		UPDATE errand.digest_schedule s
		SET zone_error = format('errand: time zone %s is not known to this PostgreSQL (its tzdata); digests follow UTC until the preference is changed', quote_literal(s.zone)),
		    zone = 'UTC'
		WHERE s.next_due_at <= $1
		  AND s.zone IN (SELECT d.zone FROM (SELECT DISTINCT zone FROM errand.digest_schedule WHERE next_due_at <= $1) d
		                 WHERE NOT errand.time_zone_known(d.zone))`, at); err != nil {
		return 0, fmt.Errorf("check digest time zones: %w", err)
	}
	// Schedules of workspaces that are gone (the directory has no foreign
	// keys) go: the contract would refuse their jobs, and with them the
	// whole statement.
	if _, err := tx.Exec(ctx, `
		DELETE FROM errand.digest_schedule s
		WHERE s.next_due_at <= $1 AND NOT EXISTS (SELECT 1 FROM errand.workspaces w WHERE w.id = s.workspace_id)`, at); err != nil {
		return 0, fmt.Errorf("drop digest schedules of deleted workspaces: %w", err)
	}
	// The jobs go through the SQL contract's set-based path
	// (errand.enqueue_many): the checks and the idempotency of a single
	// INSERT, at the cost of River's own inserts (see the benchmark).
	var n int
	err := tx.QueryRow(ctx, `
		WITH due AS MATERIALIZED (
			SELECT s.workspace_id, s.user_id FROM errand.digest_schedule s
			WHERE s.next_due_at <= $1
			FOR UPDATE SKIP LOCKED
		), moved AS (
			UPDATE errand.digest_schedule s
			SET last_due_at = errand.digest_latest_due(s.frequency, s.zone, s.hour, s.weekday, $1),
			    next_due_at = errand.digest_next_due(s.frequency, s.zone, s.hour, s.weekday, $1)
			FROM due d
			WHERE s.workspace_id = d.workspace_id AND s.user_id = d.user_id
			RETURNING s.workspace_id, s.user_id, s.last_due_at, errand.digest_period(s.frequency, s.zone, s.hour, s.last_due_at) AS period
		), send AS MATERIALIZED (
			SELECT m.workspace_id, m.user_id, m.period, row_number() OVER (ORDER BY m.workspace_id, m.user_id) AS n
			FROM moved m
			WHERE m.last_due_at > $1 - $2::interval
		)
		SELECT count(*) FROM errand.enqueue_many(
			workspace_id => ARRAY(SELECT workspace_id FROM send ORDER BY n),
			kind => array_fill($3::text, ARRAY[(SELECT count(*) FROM send)::int]),
			args => ARRAY(SELECT json_build_object('user_id', user_id, 'period', period) FROM send ORDER BY n),
			idempotency_key => ARRAY(SELECT 'digest/' || user_id || '/' || period FROM send ORDER BY n))`,
		at, backfill, Name).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("enqueue digests: %w", err)
	}
	return n, nil
}

// user is a digest's recipient, read in the workspace's scope.
type user struct {
	email string
	zone  string
}

func (u user) location() *time.Location {
	if loc, err := time.LoadLocation(u.zone); err == nil {
		return loc
	}
	return time.UTC
}

// loadUser reads a member of the scoped workspace (pgx.ErrNoRows when the
// user is not one) and their time zone.
func loadUser(ctx context.Context, tx pgx.Tx, userID string) (user, error) {
	var u user
	err := tx.QueryRow(ctx, `
		SELECT u.email, coalesce(p.timezone, 'UTC')
		FROM errand.users u
		JOIN errand.workspace_members m ON m.user_id = u.id
		LEFT JOIN errand.notification_preferences p ON p.user_id = u.id
		WHERE u.id = $1`, userID).Scan(&u.email, &u.zone)
	if err != nil {
		return u, fmt.Errorf("read digest recipient %s: %w", userID, err)
	}
	return u, nil
}

// takeUndigested marks the user's undigested notifications digested and
// returns them, oldest first.
func takeUndigested(ctx context.Context, tx pgx.Tx, userID string) ([]item, error) {
	rows, err := tx.Query(ctx, `
		UPDATE errand.notifications SET digested_at = now()
		WHERE user_id = $1 AND digested_at IS NULL AND created_at <= now()
		RETURNING kind, title, body, coalesce(url, ''), created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("take notifications: %w", err)
	}
	type row struct {
		item
		id int64
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.Kind, &x.Title, &x.Body, &x.URL, &x.CreatedAt, &x.id)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("take notifications: %w", err)
	}
	slices.SortFunc(all, func(a, b row) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return int(a.id - b.id)
	})
	out := make([]item, len(all))
	for i, x := range all {
		out[i] = x.item
	}
	return out, nil
}

// enqueueEmail enqueues the digest's email.send through the SQL contract,
// in tx (unscoped: errand's own role).
func enqueueEmail(ctx context.Context, tx pgx.Tx, workspaceID, to string, data map[string]any, key string) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key)
		VALUES ($1, 'email.send', jsonb_build_object('to', $2::text, 'template', $3::text, 'data', $4::jsonb), $5)`,
		workspaceID, to, Template, data, key)
	if err != nil {
		return fmt.Errorf("enqueue digest email: %w", err)
	}
	return nil
}
