package webhook_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// A database whose owner rows were taken over before migration 028 (B's
// endpoint with the id of A's message) has them right after it, under a
// plain owner on whom row level security is forced: the migration rebuilds
// them from both tables, every workspace's rows.
func TestMigration028GivesTakenOverIDsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ownerURL := testdb.PlainOwnerDatabase(t, false)
	pool := errandtest.Pool(t, ownerURL)
	migrateThrough(t, pool, 27)

	a := errandtest.NewWorkspace(t, pool, "a")
	b := errandtest.NewWorkspace(t, pool, "b")
	var epA, msgA string
	if err := inTx(pool, "", a, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://hooks.example.com/a') RETURNING id::text`, a).Scan(&epA); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO errand.webhook_messages (workspace_id, event_type, body) VALUES ($1, 'a.b', '{}') RETURNING id::text`, a).Scan(&msgA)
	}); err != nil {
		t.Fatal(err)
	}
	if err := inTx(pool, "", b, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ($1, $2, 'https://hooks.example.com/b')`, msgA, b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := pool.QueryRow(ctx, `SELECT workspace_id::text FROM errand.webhook_owners WHERE id = $1`, msgA).Scan(&owner); err != nil || owner != b {
		t.Fatalf("before 028 the owner row of A's message says %s (%v), want B's %s (taken over)", owner, err, b)
	}

	var out bytes.Buffer
	if err := errand.Main(ctx, []string{"migrate"}, errandtest.Env(map[string]string{"DATABASE_URL": ownerURL}), &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	rows, err := pool.Query(ctx, `SELECT kind || ' ' || id || ' ' || workspace_id FROM errand.webhook_owners ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"endpoint " + epA + " " + a: true, "endpoint " + msgA + " " + b: true, "message " + msgA + " " + a: true}
	if len(got) != len(want) || !want[got[0]] || !want[got[1]] || !want[got[2]] {
		t.Errorf("owner rows after 028: %q, want %v", got, want)
	}
	// The plain owner, unscoped, replays A's message in A.
	var job int64
	if err := pool.QueryRow(ctx, `SELECT errand.webhook_replay($1)`, msgA).Scan(&job); err != nil {
		t.Fatalf("replay after 028: %v", err)
	}
	var in string
	if err := pool.QueryRow(ctx, `SELECT metadata ->> 'workspace_id' FROM errand.river_job WHERE id = $1`, job).Scan(&in); err != nil || in != a {
		t.Errorf("the replay's delivery is in %s (%v), want A's %s", in, err, a)
	}
}

// migrateThrough applies River's migrations and errand's up to version
// last, as migrations.Up would (one transaction, each recorded).
func migrateThrough(t *testing.T, pool *pgxpool.Pool, last int) {
	t.Helper()
	ctx := context.Background()
	exec(t, pool, `CREATE SCHEMA IF NOT EXISTS errand`)
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: migrations.Schema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		t.Fatal(err)
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TABLE errand.errand_migrations (
			version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		for _, m := range all {
			if m.Version > last {
				break
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO errand.errand_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("migrate through %d: %v", last, err)
	}
}
