package webhook_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
)

// inTx runs fn in a transaction as role ("": the pool's own) scoped to ws
// ("": none), and commits when fn returns nil.
func inTx(pool *pgxpool.Pool, role, ws string, fn func(tx pgx.Tx) error) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, ws); err != nil {
			return err
		}
		if role != "" {
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, role); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// queryText runs sql in a transaction as role scoped to ws, returning its
// one text (or bigint, as text) value.
func queryText(pool *pgxpool.Pool, role, ws, sql string, args ...any) (string, error) {
	var out string
	err := inTx(pool, role, ws, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), sql, args...).Scan(&out)
	})
	return out, err
}

// appRole is a role granted what the README grants an app's servers, dropped
// when the test ends.
func appRole(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "webhook_app_" + hex.EncodeToString(b)
	exec(t, pool, `CREATE ROLE `+role+` NOLOGIN`)
	t.Cleanup(func() { pool.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role) }) //nolint:errcheck
	exec(t, pool, `GRANT USAGE ON SCHEMA errand TO `+role)
	exec(t, pool, `GRANT SELECT, INSERT, UPDATE, DELETE ON errand.webhook_endpoints TO `+role)
	exec(t, pool, `GRANT SELECT ON errand.webhook_messages, errand.webhook_attempts TO `+role)
	exec(t, pool, `GRANT EXECUTE ON FUNCTION errand.webhook_replay, errand.webhook_rotate_secret TO `+role)
	return role
}

func tenantRole(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var role string
	if err := pool.QueryRow(context.Background(), `SELECT value FROM errand.settings WHERE name = 'tenant_role'`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	return role
}

// newMessage inserts a message as errand records one and returns its id.
func newMessage(t *testing.T, pool *pgxpool.Pool, ws string) string {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.webhook_messages (workspace_id, event_type, body)
		VALUES ($1, 'a.b', '{"type":"a.b","timestamp":"2026-01-01T00:00:00.000000Z","data":{}}') RETURNING id::text`, ws).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// An endpoint and a message may share an id (each table keys only its
// own), but neither disturbs the other's workspace: B's endpoint with the
// id of A's message, and B's message with the id of A's endpoint, leave
// A's replay and rotation working, in A's workspace, scoped or not, and
// deleting B's rows takes nothing of A's.
func TestAnotherWorkspaceReusingAnIDTakesNothingOver(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	url, pool := errandtest.MigratedDB(t, kinds()...)
	a := errandtest.NewWorkspace(t, pool, "a")
	b := errandtest.NewWorkspace(t, pool, "b")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	epA, _ := newEndpoint(t, pool, a, rc.URL+"/a")
	msgA := newMessage(t, pool, a)

	exec(t, pool, `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ($1, $2, $3)`, msgA, b, rc.URL+"/b")
	exec(t, pool, `INSERT INTO errand.webhook_messages (id, workspace_id, event_type, body) VALUES ($1, $2, 'a.b', '{}')`, epA, b)

	replayed := func(role, ws string) {
		t.Helper()
		id, err := queryText(pool, role, ws, `SELECT errand.webhook_replay($1)::text`, msgA)
		if err != nil {
			t.Fatalf("replay of A's message scoped to %q: %v", ws, err)
		}
		var in string
		if err := pool.QueryRow(context.Background(), `SELECT workspace_id::text FROM errand.jobs WHERE id = $1::bigint`, id).Scan(&in); err != nil || in != a {
			t.Errorf("the replay's delivery is in workspace %s (%v), want A's %s", in, err, a)
		}
	}
	rotated := func(ws, endpoint string) {
		t.Helper()
		if s, err := queryText(pool, "", ws, `SELECT errand.webhook_rotate_secret($1)`, endpoint); err != nil || s == "" {
			t.Errorf("rotate endpoint %s scoped to %q: %q, %v", endpoint, ws, s, err)
		}
	}
	replayed("", a)
	replayed("", "")
	rotated(a, epA)
	rotated("", epA)
	rotated(b, msgA) // B's endpoint is B's
	if _, err := queryText(pool, "", b, `SELECT errand.webhook_replay($1)::text`, msgA); err == nil {
		t.Error("a session scoped to B replayed A's message")
	} else {
		wantPgError(t, err, "23503", "webhook message "+msgA+" does not exist in workspace "+b)
	}

	exec(t, pool, `DELETE FROM errand.webhook_endpoints WHERE id = $1`, msgA)
	exec(t, pool, `DELETE FROM errand.webhook_messages WHERE id = $1`, epA)
	replayed("", a)
	rotated(a, epA)
	// Every replay reached A's endpoint.
	waitFor(t, "the three replays", func() bool { return len(rc.received()) == 3 })
	for _, r := range rc.received() {
		if r.path != "/a" || r.header.Get("webhook-id") != msgA {
			t.Errorf("a replay went to %s with webhook-id %s", r.path, r.header.Get("webhook-id"))
		}
	}
}

// An id errand's owner rows give to one workspace is refused to another,
// never moved: such a row outlives its endpoint only if something deletes
// endpoints past the triggers, which nothing known does.
func TestAnIDOwnedByAnotherWorkspaceIsRefused(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	a := errandtest.NewWorkspace(t, pool, "a")
	b := errandtest.NewWorkspace(t, pool, "b")
	const id = "00000000-0000-0000-0000-0000000000e1"
	exec(t, pool, `INSERT INTO errand.webhook_owners (kind, id, workspace_id) VALUES ('endpoint', $1, $2)`, id, a)
	_, err := pool.Exec(context.Background(), `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ($1, $2, 'https://example.com/')`, id, b)
	wantPgError(t, err, "23505", "webhook endpoint id "+id+" belongs to another workspace")
	var ws string
	if err := pool.QueryRow(context.Background(), `SELECT workspace_id::text FROM errand.webhook_owners WHERE id = $1`, id).Scan(&ws); err != nil || ws != a {
		t.Errorf("the owner row says %s (%v), want A's %s", ws, err, a)
	}
	// TRUNCATE leaves nothing behind to refuse.
	exec(t, pool, `TRUNCATE errand.webhook_endpoints`)
	exec(t, pool, `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ($1, $2, 'https://example.com/')`, id, b)
}

// The functions act on one workspace, and a session of any role but
// errand's own must say which: an app's role granted them as the README
// says (or the tenant role, were it granted them) cannot, unscoped, rotate
// or replay anything, though the functions run as errand's owner; scoped,
// only its own workspace's.
func TestFunctionsRefuseAnUnscopedAppSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	a := errandtest.NewWorkspace(t, pool, "a")
	b := errandtest.NewWorkspace(t, pool, "b")
	epB, secretB := newEndpoint(t, pool, b, "https://hooks.example.com/b")
	msgB := newMessage(t, pool, b)
	tenant := tenantRole(t, pool)
	exec(t, pool, `GRANT EXECUTE ON FUNCTION errand.webhook_replay, errand.webhook_rotate_secret TO `+tenant)

	for _, role := range []string{appRole(t, pool), tenant} {
		t.Run(role, func(t *testing.T) {
			before := errandtest.CountJobs(t, pool)
			// Unscoped: refused before anything is looked up.
			_, err := queryText(pool, role, "", `SELECT errand.webhook_rotate_secret($1)`, epB)
			wantPgError(t, err, "42501", "may act on a webhook endpoint only in a transaction scoped to its workspace")
			_, err = queryText(pool, role, "", `SELECT errand.webhook_replay($1)::text`, msgB)
			wantPgError(t, err, "42501", "may act on a webhook message only in a transaction scoped to its workspace")
			// Scoped to another workspace: B's ids do not exist there.
			_, err = queryText(pool, role, a, `SELECT errand.webhook_rotate_secret($1)`, epB)
			wantPgError(t, err, "23503", fmt.Sprintf("webhook endpoint %s does not exist in workspace %s", epB, a))
			_, err = queryText(pool, role, a, `SELECT errand.webhook_replay($1)::text`, msgB)
			wantPgError(t, err, "23503", fmt.Sprintf("webhook message %s does not exist in workspace %s", msgB, a))

			var secret string
			if err := pool.QueryRow(ctx, `SELECT secret FROM errand.webhook_endpoints WHERE id = $1`, epB).Scan(&secret); err != nil {
				t.Fatal(err)
			}
			if n := errandtest.CountJobs(t, pool) - before; secret != secretB || n != 0 {
				t.Fatalf("after the refusals B's secret changed (%v) and %d jobs were enqueued", secret != secretB, n)
			}
			// Scoped to B: its own endpoint and message.
			if s, err := queryText(pool, role, b, `SELECT errand.webhook_rotate_secret($1)`, epB); err != nil || s == secretB {
				t.Errorf("rotate scoped to B: %v (secret changed: %v)", err, s != secretB)
			} else {
				secretB = s
			}
			if _, err := queryText(pool, role, b, `SELECT errand.webhook_replay($1)::text`, msgB); err != nil {
				t.Errorf("replay scoped to B: %v", err)
			}
		})
	}
}

// Row level security on the four tenant tables, under the tenant role
// errand's own scoped transactions use: a transaction scoped to A sees none
// of B's rows, changes none, and cannot write a row into B.
func TestWebhookTablesAreTenantScoped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool := errandtest.MigratedDB(t, kinds()...)
	a := errandtest.NewWorkspace(t, pool, "a")
	b := errandtest.NewWorkspace(t, pool, "b")
	role := tenantRole(t, pool)
	for i, ws := range []string{a, b} {
		ep, _ := newEndpoint(t, pool, ws, "https://hooks.example.com/"+ws)
		msg := newMessage(t, pool, ws)
		exec(t, pool, `INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, status_code, latency_ms)
			VALUES ($1, $2, $3, $4, 1, 500, 3)`, ws, msg, ep, i+1)
		exec(t, pool, `INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at)
			VALUES ($1, 1, $2, $3, now() + interval '1 hour')`, i+1, ws, ep)
	}
	tables := []string{"errand.webhook_endpoints", "errand.webhook_messages", "errand.webhook_attempts", "errand.webhook_inflight"}
	err := inTx(pool, role, a, func(tx pgx.Tx) error {
		for _, table := range tables {
			var mine, theirs int
			if err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE workspace_id = $1), count(*) FILTER (WHERE workspace_id <> $1) FROM `+table, a).Scan(&mine, &theirs); err != nil {
				return err
			}
			if mine != 1 || theirs != 0 {
				t.Errorf("%s: A's scoped transaction sees %d of its rows and %d of B's, want 1 and 0", table, mine, theirs)
			}
			for _, change := range []string{`UPDATE ` + table + ` SET workspace_id = workspace_id WHERE workspace_id = $1`, `DELETE FROM ` + table + ` WHERE workspace_id = $1`} {
				tag, err := tx.Exec(ctx, change, b)
				if err != nil {
					return fmt.Errorf("%s: %w", change, err)
				}
				if tag.RowsAffected() != 0 {
					t.Errorf("%s: A's scoped transaction changed %d of B's rows", change, tag.RowsAffected())
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	inserts := map[string]string{
		"errand.webhook_endpoints": `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://hooks.example.com/x')`,
		"errand.webhook_messages":  `INSERT INTO errand.webhook_messages (workspace_id, event_type, body) VALUES ($1, 'a.b', '{}')`,
		"errand.webhook_attempts": `INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, latency_ms)
			VALUES ($1, gen_random_uuid(), gen_random_uuid(), 9, 1, 1)`,
		"errand.webhook_inflight": `INSERT INTO errand.webhook_inflight (job_id, attempt, workspace_id, endpoint_id, expires_at)
			VALUES (9, 1, $1, gen_random_uuid(), now())`,
	}
	for _, table := range tables {
		err := inTx(pool, role, a, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, inserts[table], b)
			return err
		})
		wantPgError(t, err, "42501", "new row violates row-level security policy")
	}
	var total int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM errand.webhook_endpoints) + (SELECT count(*) FROM errand.webhook_messages)
		+ (SELECT count(*) FROM errand.webhook_attempts) + (SELECT count(*) FROM errand.webhook_inflight)`).Scan(&total); err != nil || total != 8 {
		t.Errorf("%d rows in the four tables (%v), want the 8 made above", total, err)
	}
}
