package webhook

// The kinds' queries, on their tables (migration 009_webhooks.sql). The
// tenant tables are read and written only in workspace-scoped transactions;
// enqueueing deliveries and publishing the allow list are errand's own.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// publishSettings makes the daemon's configuration the SQL contract's too:
// ERRAND_WEBHOOK_ALLOW_CIDRS, so an endpoint on an allowed address can be
// inserted (webhook_allow_cidrs), and the attempts a delivery has, the
// retry schedule's length + 1, so errand.webhook_replay's deliveries get as
// many as webhook.dispatch's (webhook_max_attempts). The replica that
// started last decides, as for the other published settings.
func publishSettings(ctx context.Context, db store.DB, allowed string, maxAttempts int) error {
	_, err := db.Exec(ctx, `
		INSERT INTO errand.settings (name, value) VALUES ('webhook_allow_cidrs', $1), ('webhook_max_attempts', $2)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
		WHERE settings.value IS DISTINCT FROM EXCLUDED.value`, allowed, strconv.Itoa(maxAttempts))
	if err != nil {
		return fmt.Errorf("publish ERRAND_WEBHOOK_ALLOW_CIDRS and ERRAND_WEBHOOK_RETRY_SCHEDULE: %w", err)
	}
	return nil
}

// recordMessage stores a dispatched message in the scoped transaction tx.
// created is false when the workspace already has a message with this
// event id (or this job made one): nothing more is to be done then.
func recordMessage(ctx context.Context, tx pgx.Tx, workspaceID string, jobID int64, eventType string, eventID *string, body []byte) (id string, created bool, err error) {
	err = tx.QueryRow(ctx, `
		INSERT INTO errand.webhook_messages (workspace_id, event_type, event_id, body, job_id)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT DO NOTHING
		RETURNING id::text`, workspaceID, eventType, eventID, string(body), jobID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("record webhook message: %w", err)
	}
	return id, true, nil
}

// subscribedEndpoints lists the scoped workspace's enabled endpoints that
// take eventType.
func subscribedEndpoints(ctx context.Context, tx pgx.Tx, eventType string) ([]string, error) {
	rows, err := tx.Query(ctx, `
		SELECT id::text FROM errand.webhook_endpoints
		WHERE enabled AND (cardinality(event_types) = 0 OR $1 = ANY (event_types))
		ORDER BY created_at, id`, eventType)
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	return ids, nil
}

// enqueueDeliveries enqueues one webhook.deliver per endpoint through the
// SQL contract, in tx (unscoped: errand's own role).
func enqueueDeliveries(ctx context.Context, tx pgx.Tx, workspaceID, messageID string, endpointIDs []string, maxAttempts int) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
		SELECT $1, $2, jsonb_build_object('message_id', $3::text, 'endpoint_id', e), $5
		FROM unnest($4::text[]) AS e`, workspaceID, DeliverName, messageID, endpointIDs, maxAttempts)
	if err != nil {
		return fmt.Errorf("enqueue webhook deliveries: %w", err)
	}
	return nil
}

// delivery is what one attempt needs to know.
type delivery struct {
	found          bool // the message and the endpoint exist (in this workspace)
	body           []byte
	url            string
	secret         string
	previousSecret string // "" when there is none, or it has expired
	enabled        bool
	disabledReason string
	snoozes        int  // times the job was held back before
	slot           bool // the delivery may go: it holds one of its endpoint's slots
}

// wanted is one delivery to prepare.
type wanted struct {
	jobID                 int64
	attempt               int
	messageID, endpointID string
	// again: the delivery asked before and found its endpoint full (it
	// waited in its replica, and was woken to ask again).
	again bool
}

// bookDeliveries is a batch's bookkeeping for workspaceID, in one scoped
// transaction and one round trip (store.InWorkspaceBatch): it logs the
// successful attempts done (their slots given back, their endpoints marked
// healthy), then reads the messages and endpoints of the deliveries want
// and takes delivery slots (at most limit per endpoint in flight,
// errand.webhook_take_slots) for those whose endpoint is enabled. The
// slots given back first are free for the deliveries taken after them. A
// lease lasts until its delivery logs its attempt, or until lease has
// passed (a replica that died). The result is in the order of want.
//
// Logging before taking keeps the locks in one order: the log's statement
// touches only its own jobs' leases and (at most once a minute) its
// endpoints' rows, which no slot taker waits for, before the take's
// advisory locks, which are taken in their keys' order.
//
// With attempts to log the transaction commits without waiting for its
// WAL to reach the disk (synchronous_commit off): should PostgreSQL crash
// in the few milliseconds before it does, the jobs are still running and
// are rescued, so their messages are delivered again (webhooks are
// at-least-once; the receiver dedupes by webhook-id), never lost; only
// those attempts' log rows are. (Taking slots writes only the unlogged
// errand.webhook_inflight.)
func bookDeliveries(ctx context.Context, st *store.Store, workspaceID string, done []attemptRow, want []wanted, limit int, lease time.Duration) (out []delivery, handed []*endpointNow, err error) {
	b := &pgx.Batch{}
	if len(done) > 0 {
		queueRecord(b, workspaceID, done, lease)
	}
	if len(want) > 0 {
		queueLoad(b, workspaceID, want, limit, lease)
	}
	err = st.InWorkspaceBatch(ctx, workspaceID, b, func(br pgx.BatchResults) error {
		if len(done) > 0 {
			var heirs []int64
			var urls, secrets, previous []string
			if err := br.QueryRow().Scan(nil, nil, &heirs, &urls, &secrets, &previous); err != nil {
				return fmt.Errorf("record webhook attempts: %w", err)
			}
			handed = make([]*endpointNow, len(done))
			for i, a := range done {
				if k := slices.Index(heirs, a.heirJobID); a.heirJobID != 0 && k >= 0 {
					handed[i] = &endpointNow{url: urls[k], secret: secrets[k], previousSecret: previous[k]}
				}
			}
		}
		if len(want) == 0 {
			return nil
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("read webhook deliveries: %w", err)
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (delivery, error) {
			var d delivery
			var body string
			err := row.Scan(&d.found, &body, &d.url, &d.secret, &d.previousSecret, &d.enabled, &d.disabledReason, &d.snoozes, &d.slot)
			d.body = []byte(body)
			return d, err
		})
		if err != nil {
			return fmt.Errorf("read webhook deliveries: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("webhook bookkeeping: %w", err)
	}
	if len(out) != len(want) {
		return nil, nil, fmt.Errorf("read webhook deliveries: %d rows for %d deliveries", len(out), len(want))
	}
	return out, handed, nil
}

// queueLoad queues the statement that reads the deliveries ws need and
// takes their slots. A delivery that finds its endpoint full is noted in
// errand.webhook_held_back, for the next slot given back to wake should it
// snooze (errand.webhook_wake_held); one that takes a slot loses its row.
func queueLoad(b *pgx.Batch, workspaceID string, ws []wanted, limit int, lease time.Duration) {
	// The ids go as text and are cast in SQL: pgx has no binary encoding of
	// a Go string as a uuid, and looking for one (and formatting the error
	// it falls back on) cost more than the rest of the encoding.
	jobIDs := make([]int64, len(ws))
	attempts := make([]int32, len(ws))
	messages := make([]string, len(ws))
	endpoints := make([]string, len(ws))
	again := make([]bool, len(ws))
	for i, w := range ws {
		jobIDs[i], attempts[i], messages[i], endpoints[i], again[i] = w.jobID, int32(w.attempt), w.messageID, w.endpointID, w.again
	}
	b.Queue(`
		WITH req AS MATERIALIZED (
			SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]::uuid[], $4::text[]::uuid[], $8::bool[]) WITH ORDINALITY AS r(job_id, attempt, message_id, endpoint_id, again, n)
		), info AS MATERIALIZED (
			SELECT r.n, r.job_id, r.attempt, r.endpoint_id, r.again, m.body, e.url, e.secret,
			       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret,
			       e.enabled, e.disabled_reason, (j.metadata ->> 'snoozes')::int AS snoozes, j.scheduled_at
			FROM req r
			LEFT JOIN errand.webhook_messages m ON m.id = r.message_id
			LEFT JOIN errand.webhook_endpoints e ON e.id = r.endpoint_id
			LEFT JOIN errand.river_job j ON j.id = r.job_id
		), ready AS MATERIALIZED (
			SELECT * FROM info WHERE enabled AND body IS NOT NULL ORDER BY n
		), slots AS MATERIALIZED (
			SELECT s.job_id, s.taken FROM errand.webhook_take_slots(
				ARRAY(SELECT job_id FROM ready), ARRAY(SELECT attempt FROM ready), ARRAY(SELECT endpoint_id FROM ready),
				$5::text::uuid, $6, $7) AS s
		), held AS (
			-- Noted for the next slot given back to wake, should it snooze
			-- (a job noted before keeps its first place in the queue).
			INSERT INTO errand.webhook_held_back (endpoint_id, job_id, workspace_id, scheduled_at)
			SELECT r.endpoint_id, r.job_id, $5::text::uuid, coalesce(r.scheduled_at, now())
			FROM ready r JOIN slots s ON s.job_id = r.job_id
			WHERE NOT s.taken
			ON CONFLICT ON CONSTRAINT webhook_held_back_pkey DO NOTHING
		), unheld AS (
			-- Only a job that found its endpoint full before (it asks again,
			-- or it has snoozed) can have a row. It goes when the job takes
			-- a slot, and when the endpoint is gone or disabled (the job
			-- fails now; a note written just after the disable's trigger
			-- deleted the endpoint's notes would otherwise stay).
			DELETE FROM errand.webhook_held_back h USING info i LEFT JOIN slots s ON s.job_id = i.job_id
			WHERE (i.again OR i.snoozes > 0) AND (s.taken OR NOT coalesce(i.enabled, false))
			  AND h.endpoint_id = i.endpoint_id AND h.job_id = i.job_id
		)
		SELECT i.body IS NOT NULL AND i.url IS NOT NULL, coalesce(i.body, ''), coalesce(i.url, ''), coalesce(i.secret, ''),
		       coalesce(i.previous_secret, ''), coalesce(i.enabled, false), coalesce(i.disabled_reason, ''),
		       coalesce(i.snoozes, 0), coalesce(s.taken, false)
		FROM info i LEFT JOIN slots s ON s.job_id = i.job_id
		ORDER BY i.n`, jobIDs, attempts, messages, endpoints, workspaceID, limit, lease, again)
}

// giveBackSlot deletes the job's lease (and, with expired, the endpoint's
// expired leases) in the scoped transaction tx, and wakes a delivery held
// back by the endpoint's cap when the lease was live; the job, which will
// not ask for a slot again in this attempt, loses its held-back row.
func giveBackSlot(ctx context.Context, tx pgx.Tx, endpointID string, jobID int64, attempt int, expired bool) error {
	_, err := tx.Exec(ctx, `
		WITH released AS (
			DELETE FROM errand.webhook_inflight
			WHERE (job_id = $2 AND attempt = $3) OR ($4 AND endpoint_id = $1::text::uuid AND expires_at <= clock_timestamp())
			RETURNING job_id, expires_at > clock_timestamp() AS live
		), unheld AS (
			DELETE FROM errand.webhook_held_back WHERE endpoint_id = $1::text::uuid AND job_id = $2
		)
		SELECT errand.webhook_wake_held(ARRAY(SELECT $1::text::uuid FROM released WHERE released.job_id = $2 AND released.live))`,
		endpointID, jobID, attempt, expired)
	if err != nil {
		return fmt.Errorf("give back webhook slot: %w", err)
	}
	return nil
}

// attemptRow is a row of errand.webhook_attempts.
type attemptRow struct {
	workspaceID, messageID, endpointID string
	jobID                              int64
	attempt                            int
	status                             int // 0: no answer
	latency                            time.Duration
	response                           string
	err                                string
	// heirJobID and heirAttempt are a delivery of this replica waiting for
	// the endpoint, to which a successful attempt hands its slot (0: none).
	heirJobID   int64
	heirAttempt int
}

// queueRecord queues the statement that logs successful attempts, hands
// each one's slot to its heir (a delivery of this replica waiting for the
// endpoint: slotWaits) or gives it back, and marks their endpoints healthy
// (at most once a minute while they stay healthy, so a busy endpoint's row
// is not rewritten by every delivery). Each slot given back without an heir
// wakes a delivery held back by the endpoint's cap
// (errand.webhook_wake_held, migration 035). The statement's third to sixth
// columns list the heirs that got their slot, with their endpoint's URL and
// secrets as this statement reads them (the heir sends to those, not to
// what it loaded before it waited): an attempt whose lease had gone hands
// nothing over. River completes the jobs after it. (Expired leases of
// other jobs are not looked for here: they never count against a cap, and
// webhook_take_slots clears an endpoint's when it finds the endpoint full.)
func queueRecord(b *pgx.Batch, workspaceID string, as []attemptRow, lease time.Duration) {
	n := len(as)
	messages, endpoints, responses := make([]string, n), make([]string, n), make([]string, n)
	jobIDs, heirs := make([]int64, n), make([]int64, n)
	attempts, statuses, heirAttempts, latencies := make([]int32, n), make([]int32, n), make([]int32, n), make([]int64, n)
	for i, a := range as {
		messages[i], endpoints[i], responses[i] = a.messageID, a.endpointID, a.response
		jobIDs[i], attempts[i], statuses[i], latencies[i] = a.jobID, int32(a.attempt), int32(a.status), a.latency.Milliseconds()
		heirs[i], heirAttempts[i] = a.heirJobID, int32(a.heirAttempt)
	}
	// One statement: its parts see the same snapshot, not each other's
	// changes; the lease handed over is a new row for the heir, the old
	// one deleted beside it, so the endpoint's count of leases never moves.
	b.Queue(`
		WITH logged AS (
			INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, status_code, latency_ms, response_body)
			SELECT $1::text::uuid, r.m, r.e, r.j, r.a, r.s, r.l, nullif(r.b, '')
			FROM unnest($2::text[]::uuid[], $3::text[]::uuid[], $4::bigint[], $5::int[], $6::int[], $7::bigint[], $8::text[]) AS r(m, e, j, a, s, l, b)
		), released AS (
			DELETE FROM errand.webhook_inflight f USING unnest($4::bigint[], $5::int[]) AS r(j, a)
			WHERE f.job_id = r.j AND f.attempt = r.a
			RETURNING f.job_id, f.endpoint_id, f.expires_at > clock_timestamp() AS live
		), heirs AS (
			SELECT h.j, h.hj, h.ha FROM unnest($4::bigint[], $9::bigint[], $10::int[]) AS h(j, hj, ha) WHERE h.hj <> 0
		), handed AS (
			-- Only a live lease is handed over (an expired one no longer
			-- counts: another replica may have taken its slot), only to an
			-- endpoint still enabled, and never over a newer attempt's lease.
			INSERT INTO errand.webhook_inflight AS f (job_id, attempt, workspace_id, endpoint_id, expires_at)
			SELECT h.hj, h.ha, $1::text::uuid, r.endpoint_id, clock_timestamp() + $11::interval
			FROM heirs h JOIN released r ON r.job_id = h.j
			JOIN errand.webhook_endpoints e ON e.id = r.endpoint_id
			WHERE r.live AND e.enabled
			ON CONFLICT ON CONSTRAINT webhook_inflight_pkey DO UPDATE
				SET attempt = EXCLUDED.attempt, endpoint_id = EXCLUDED.endpoint_id, expires_at = EXCLUDED.expires_at
				WHERE f.attempt <= EXCLUDED.attempt
			RETURNING f.job_id, f.endpoint_id
		), unheld AS (
			DELETE FROM errand.webhook_held_back x USING handed
			WHERE x.endpoint_id = handed.endpoint_id AND x.job_id = handed.job_id
		), heir_endpoints AS (
			-- The heir sends to the endpoint as it is now, not as its own
			-- load found it before it waited.
			SELECT handed.job_id, e.url, e.secret,
			       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret
			FROM handed JOIN errand.webhook_endpoints e ON e.id = handed.endpoint_id
		), healthy AS (
			UPDATE errand.webhook_endpoints SET failing_since = NULL, last_success_at = now()
			WHERE id = ANY ($3::text[]::uuid[])
			  AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < now() - interval '1 minute')
		)
		SELECT set_config('synchronous_commit', 'off', true),
		       errand.webhook_wake_held(ARRAY(SELECT r.endpoint_id FROM released r
		                                      WHERE r.live AND r.job_id NOT IN (SELECT h.j FROM heirs h)
		                                        AND EXISTS (SELECT 1 FROM errand.webhook_held_back x WHERE x.endpoint_id = r.endpoint_id))),
		       ARRAY(SELECT h.job_id FROM heir_endpoints h ORDER BY h.job_id),
		       ARRAY(SELECT h.url FROM heir_endpoints h ORDER BY h.job_id),
		       ARRAY(SELECT h.secret FROM heir_endpoints h ORDER BY h.job_id),
		       ARRAY(SELECT coalesce(h.previous_secret, '') FROM heir_endpoints h ORDER BY h.job_id)`,
		workspaceID, messages, endpoints, jobIDs, attempts, statuses, latencies, responses, heirs, heirAttempts, lease)
}

// recordFailure logs the attempt, gives its slot back (waking a delivery
// held back by the endpoint's cap) and counts the
// failure against the endpoint, in the scoped transaction tx: gone (a 410)
// disables it at once with goneReason, and so does a failure when it has
// had no success for disableAfter. disabled reports that this failure
// disabled it, and why.
func recordFailure(ctx context.Context, tx pgx.Tx, a attemptRow, gone bool, goneReason string, disableAfter time.Duration, disableAfterText string) (disabled bool, reason string, err error) {
	var status *int
	if a.status != 0 {
		status = &a.status
	}
	// The slot given back wakes a delivery held back by the endpoint's cap
	// (errand.webhook_wake_held), as a success's does.
	if err := giveBackSlot(ctx, tx, a.endpointID, a.jobID, a.attempt, true); err != nil {
		return false, "", err
	}
	err = tx.QueryRow(ctx, `
		WITH logged AS (
			INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, status_code, latency_ms, response_body, error)
			VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), $9)
		)
		UPDATE errand.webhook_endpoints e SET
			failing_since = coalesce(e.failing_since, now()),
			-- coalesce: failing_since is NULL at the first failure, and
			-- NOT (false OR NULL) would be NULL.
			enabled = NOT ($10 OR coalesce(e.failing_since <= now() - $11::interval, false)),
			disabled_reason = CASE
				WHEN $10 THEN $12
				WHEN e.failing_since <= now() - $11::interval THEN format(
					'no successful delivery since %s (ERRAND_WEBHOOK_DISABLE_AFTER=%s); the last attempt: %s',
					to_char(e.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), $13::text, $9::text)
			END
		WHERE e.id = $3 AND e.enabled
		  AND (e.failing_since IS NULL OR $10 OR e.failing_since <= now() - $11::interval)
		RETURNING NOT e.enabled, coalesce(e.disabled_reason, '')`,
		a.workspaceID, a.messageID, a.endpointID, a.jobID, a.attempt, status, a.latency.Milliseconds(), a.response, a.err,
		gone, disableAfter, goneReason, disableAfterText).Scan(&disabled, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("record webhook attempt: %w", err)
	}
	return disabled, reason, nil
}
