package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// errand.enqueue takes a traceparent (053) and keeps it as the INSERT
// does: in River's metadata, where otelriver looks for it, and shown by
// errand.jobs. Calls without it, by name or by position, read as before.
func TestEnqueueFunctionKeepsATraceparentAsTheInsertDoes(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()

	var viaFunc, viaInsert, without, positional int64
	for _, q := range []struct {
		id  *int64
		sql string
		arg []any
	}{
		{&viaFunc, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', traceparent => $2)`, []any{ws, traceparent}},
		{&viaInsert, `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', $2) RETURNING id`, []any{ws, traceparent}},
		{&without, `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', idempotency_key => 'no-trace')`, []any{ws}},
		{&positional, `SELECT errand.enqueue($1, 'ping', '{}', NULL, 2, 3, 'by-position')`, []any{ws}},
	} {
		if err := pool.QueryRow(ctx, q.sql, q.arg...).Scan(q.id); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	kept := func(id int64) (shown, metadata *string) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT j.traceparent, r.metadata ->> 'traceparent'
			FROM errand.jobs j JOIN errand.river_job r ON r.id = j.id WHERE j.id = $1`, id).Scan(&shown, &metadata); err != nil {
			t.Fatal(err)
		}
		return shown, metadata
	}
	for what, id := range map[string]int64{"errand.enqueue": viaFunc, "the INSERT": viaInsert} {
		if shown, metadata := kept(id); shown == nil || *shown != traceparent || metadata == nil || *metadata != traceparent {
			t.Errorf("a traceparent through %s: errand.jobs shows %v, River's metadata holds %v; want %s in both", what, shown, metadata, traceparent)
		}
	}
	if shown, metadata := kept(without); shown != nil || metadata != nil {
		t.Errorf("errand.enqueue without a traceparent: errand.jobs shows one (%v), River's metadata holds one (%v); want neither", shown != nil, metadata != nil)
	}
	var priority, maxAttempts int
	var key string
	if err := pool.QueryRow(ctx, `SELECT priority, max_attempts, idempotency_key FROM errand.jobs WHERE id = $1`, positional).Scan(&priority, &maxAttempts, &key); err != nil {
		t.Fatal(err)
	}
	if priority != 2 || maxAttempts != 3 || key != "by-position" {
		t.Errorf("errand.enqueue with seven arguments by position: priority %d, max_attempts %d, key %q; want 2, 3, by-position", priority, maxAttempts, key)
	}
}

// A malformed traceparent given to errand.enqueue is refused as the INSERT
// refuses it: the same SQLSTATE and message, and no job.
func TestEnqueueFunctionRefusesAMalformedTraceparentAsTheInsertDoes(t *testing.T) {
	t.Parallel()
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	refusal := func(sql, value string) *pgconn.PgError {
		t.Helper()
		var id int64
		err := pool.QueryRow(ctx, sql, ws, value).Scan(&id)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("%s with traceparent %q: %v (job %d), want a refusal", sql, value, err, id)
		}
		return pgErr
	}
	for _, tc := range []struct{ name, value string }{
		{"a traceparent that is not W3C trace context", "trace-123"},
		{"an empty traceparent", ""},
		{"a traceparent in upper case", strings.ToUpper(traceparent)},
		{"a traceparent with an all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"a traceparent with an all-zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
		{"a traceparent of the invalid version ff", "ff" + traceparent[2:]},
		{"a traceparent with a field too many", traceparent + "-00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			viaFunc := refusal(`SELECT errand.enqueue(workspace_id => $1, kind => 'ping', traceparent => $2)`, tc.value)
			viaInsert := refusal(`INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', $2) RETURNING id`, tc.value)
			if viaFunc.Code != viaInsert.Code || viaFunc.Message != viaInsert.Message {
				t.Errorf("errand.enqueue refused it with %s %q, the INSERT with %s %q; want the same", viaFunc.Code, viaFunc.Message, viaInsert.Code, viaInsert.Message)
			}
			if viaFunc.Code != "22023" || !strings.Contains(viaFunc.Message, "traceparent must be a W3C trace context traceparent") {
				t.Errorf("errand.enqueue refused it with %s %q; want 22023 saying what a traceparent is", viaFunc.Code, viaFunc.Message)
			}
		})
	}
	if n := jobCount(t, pool); n != 0 {
		t.Errorf("%d jobs after the refusals, want none", n)
	}
}

// appRole creates a role of its own for the test (roles are cluster-wide)
// and drops it once the test's database is gone.
func appRole(t *testing.T, pool *pgxpool.Pool, prefix string) string {
	t.Helper()
	role := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	admin, err := pgx.Connect(context.Background(), testdb.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(context.Background(), "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	dropRoleAfter(t, pool, role)
	return role
}

// 053 replaces errand.enqueue by a function of a new signature: the grants
// operators made on the old one carry over (the README tells them to grant
// it to their app's role), and PUBLIC's EXECUTE is the old one's, revoked
// or not. As a plain owner, as on managed PostgreSQL.
func TestUpgradeTo053KeepsTheGrantsOnEnqueue(t *testing.T) {
	t.Parallel()
	const (
		before = "errand.enqueue(uuid, text, jsonb, timestamptz, integer, integer, text)"
		after  = "errand.enqueue(uuid, text, jsonb, timestamptz, integer, integer, text, text)"
	)
	publicMay := `SELECT EXISTS (SELECT 1 FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
		WHERE p.oid = $1::regprocedure AND a.grantee = 0 AND a.privilege_type = 'EXECUTE')`
	for _, revoked := range []bool{false, true} {
		name := "PUBLIC's default EXECUTE"
		if revoked {
			name = "PUBLIC's EXECUTE revoked by the operator"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ownerURL := testdb.PlainOwnerDatabase(t, false)
			owner := testdb.Pool(t, ownerURL)
			migrateBelow(t, owner, 53)
			app, lead, other := appRole(t, owner, "errand_app"), appRole(t, owner, "errand_lead"), appRole(t, owner, "errand_other")
			grants := []string{
				"GRANT EXECUTE ON FUNCTION errand.enqueue TO " + pgx.Identifier{app}.Sanitize(),
				"GRANT EXECUTE ON FUNCTION errand.enqueue TO " + pgx.Identifier{lead}.Sanitize() + " WITH GRANT OPTION",
			}
			if revoked {
				grants = append(grants, "REVOKE EXECUTE ON FUNCTION errand.enqueue FROM PUBLIC")
			}
			for _, sql := range grants {
				if _, err := owner.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			if _, err := migrations.Up(ctx, owner, nil); err != nil {
				t.Fatalf("Up: %v", err)
			}

			var oldGone, appMay, leadMayGrant, otherMay, publicHas bool
			if err := owner.QueryRow(ctx, `SELECT to_regprocedure($1) IS NULL AND to_regproc('errand.enqueue_before_053') IS NULL,
				has_function_privilege($3, $2::regprocedure, 'EXECUTE'),
				has_function_privilege($4, $2::regprocedure, 'EXECUTE WITH GRANT OPTION'),
				has_function_privilege($5, $2::regprocedure, 'EXECUTE')`, before, after, app, lead, other).Scan(&oldGone, &appMay, &leadMayGrant, &otherMay); err != nil {
				t.Fatal(err)
			}
			if err := owner.QueryRow(ctx, publicMay, after).Scan(&publicHas); err != nil {
				t.Fatal(err)
			}
			if !oldGone {
				t.Error("after the upgrade the old errand.enqueue is still there")
			}
			if !appMay || !leadMayGrant {
				t.Errorf("after the upgrade: the app's role may execute %v, the role granted it WITH GRANT OPTION may grant it %v; want both kept", appMay, leadMayGrant)
			}
			if publicHas == revoked || otherMay == revoked {
				t.Errorf("after the upgrade: PUBLIC may execute %v, a role granted nothing %v; want %v as before it", publicHas, otherMay, !revoked)
			}
		})
	}
}

// An app's function bound to errand.enqueue when it was created (a BEGIN
// ATOMIC body calls it) would keep calling the old function: the upgrade
// to 053 stops, naming it and saying what to do, with nothing applied;
// with the function dropped, it goes through.
func TestUpgradeTo053StopsForAnAppFunctionBoundToEnqueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, false))
	migrateBelow(t, pool, 53)
	if _, err := pool.Exec(ctx, `CREATE FUNCTION public.invite(ws uuid) RETURNS bigint LANGUAGE sql
		BEGIN ATOMIC SELECT errand.enqueue(workspace_id => ws, kind => 'ping'); END`); err != nil {
		t.Fatal(err)
	}
	_, err := migrations.Up(ctx, pool, nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "2BP01" || !strings.Contains(pgErr.Message, "errand 053: cannot give errand.enqueue its traceparent parameter") ||
		!strings.Contains(pgErr.Detail, "function invite(uuid)") || !strings.Contains(pgErr.Hint, "drop those objects, run errand migrate again") {
		t.Fatalf("upgrading to 053 with a function bound to errand.enqueue: %v (detail %q, hint %q); want 2BP01 naming it, with what to do", err, detailOf(err), hintOf(err))
	}
	var applied, kept bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.errand_migrations WHERE version >= 53),
		to_regprocedure('errand.enqueue(uuid, text, jsonb, timestamptz, integer, integer, text)') IS NOT NULL`).Scan(&applied, &kept); err != nil {
		t.Fatal(err)
	}
	if applied || !kept {
		t.Fatalf("after the refused upgrade: 053 recorded %v, errand.enqueue as it was %v; want nothing applied", applied, kept)
	}
	if _, err := pool.Exec(ctx, `DROP FUNCTION public.invite(uuid)`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("upgrading once the function is dropped: %v", err)
	}
}

func detailOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Detail
	}
	return ""
}
