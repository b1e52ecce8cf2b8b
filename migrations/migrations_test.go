package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// riverVersions are the migrations River v0.51.2 ships.
var riverVersions = []int{1, 2, 3, 4, 5, 6, 7, 8}

func errandVersions(t *testing.T) []int {
	t.Helper()
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for _, m := range all {
		vs = append(vs, m.Version)
	}
	if len(vs) == 0 || vs[0] != 1 {
		t.Fatalf("errand migrations start at %v, want version 1 (001_foundation.sql)", vs)
	}
	return vs
}

func labels(prefix string, versions []int) []string {
	var out []string
	for _, v := range versions {
		out = append(out, fmt.Sprintf("%s/%d", prefix, v))
	}
	return out
}

func TestAllReadsTheEmbeddedFilesInOrder(t *testing.T) {
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || all[0].Version != 1 || all[0].Name != "foundation" || all[0].SQL == "" {
		t.Fatalf("All()[0] = %+v, want version 1 named foundation with SQL", all[0])
	}
	for i := 1; i < len(all); i++ {
		if all[i].Version <= all[i-1].Version {
			t.Errorf("migration %d (%s) follows %d (%s): versions must increase", all[i].Version, all[i].Name, all[i-1].Version, all[i-1].Name)
		}
	}
}

func TestUpMigratesFromEachStartingPoint(t *testing.T) {
	t.Parallel()
	errandAll := errandVersions(t)
	cases := []struct {
		name string
		// prepare brings a fresh database to the starting point.
		prepare           func(t *testing.T, pool *pgxpool.Pool)
		wantRiverPending  []int
		wantErrandPending []int
	}{
		{
			name:              "empty database",
			prepare:           func(*testing.T, *pgxpool.Pool) {},
			wantRiverPending:  riverVersions,
			wantErrandPending: errandAll,
		},
		{
			name: "schema errand created by hand, nothing in it",
			prepare: func(t *testing.T, pool *pgxpool.Pool) {
				if _, err := pool.Exec(context.Background(), "CREATE SCHEMA errand"); err != nil {
					t.Fatal(err)
				}
			},
			wantRiverPending:  riverVersions,
			wantErrandPending: errandAll,
		},
		{
			name: "River migrated on its own, errand's SQL never applied",
			prepare: func(t *testing.T, pool *pgxpool.Pool) {
				ctx := context.Background()
				if _, err := pool.Exec(ctx, "CREATE SCHEMA errand"); err != nil {
					t.Fatal(err)
				}
				m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: migrations.Schema})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
					t.Fatal(err)
				}
			},
			wantRiverPending:  nil,
			wantErrandPending: errandAll,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := testdb.Pool(t, testdb.NewDatabase(t, false))
			tc.prepare(t, pool)

			before, err := migrations.CurrentStatus(ctx, pool)
			if err != nil {
				t.Fatalf("CurrentStatus before Up: %v", err)
			}
			if before.UpToDate() {
				t.Errorf("CurrentStatus before Up is up to date: %+v", before)
			}
			if !slices.Equal(before.RiverPending, tc.wantRiverPending) || !slices.Equal(before.ErrandPending, tc.wantErrandPending) {
				t.Errorf("pending before Up: river %v errand %v, want river %v errand %v",
					before.RiverPending, before.ErrandPending, tc.wantRiverPending, tc.wantErrandPending)
			}
			if err := migrations.Check(ctx, pool); !errors.Is(err, migrations.ErrNotMigrated) {
				t.Errorf("Check before Up = %v, want an error wrapping ErrNotMigrated", err)
			}

			applied, err := migrations.Up(ctx, pool, nil)
			if err != nil {
				t.Fatalf("Up: %v", err)
			}
			want := append(labels("river", tc.wantRiverPending), labels("errand", tc.wantErrandPending)...)
			if !slices.Equal(applied, want) {
				t.Errorf("Up applied %v, want %v", applied, want)
			}

			again, err := migrations.Up(ctx, pool, nil)
			if err != nil {
				t.Fatalf("second Up: %v", err)
			}
			if len(again) != 0 {
				t.Errorf("second Up applied %v, want nothing", again)
			}

			after, err := migrations.CurrentStatus(ctx, pool)
			if err != nil {
				t.Fatalf("CurrentStatus after Up: %v", err)
			}
			if !after.UpToDate() {
				t.Errorf("CurrentStatus after Up is not up to date: %+v", after)
			}
			if !slices.Equal(after.RiverApplied, riverVersions) || !slices.Equal(after.ErrandApplied, errandAll) {
				t.Errorf("applied after Up: river %v errand %v, want river %v errand %v",
					after.RiverApplied, after.ErrandApplied, riverVersions, errandAll)
			}
			if err := migrations.Check(ctx, pool); err != nil {
				t.Errorf("Check after Up = %v, want nil", err)
			}
		})
	}
}

// Replicas starting at once all migrate the same database.
func TestConcurrentUpAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	const replicas = 6
	ctx := context.Background()
	dbURL := testdb.NewDatabase(t, false)

	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, replicas)
	applied := make([][]string, replicas)
	for i := range replicas {
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		// Connect before the start so the calls really overlap.
		if err := pool.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			applied[i], errs[i] = migrations.Up(ctx, pool, nil)
		})
	}
	close(start)
	wg.Wait()

	appliedBy := map[string]int{}
	for i := range replicas {
		if errs[i] != nil {
			t.Errorf("replica %d: Up = %v, want nil", i, errs[i])
		}
		for _, v := range applied[i] {
			appliedBy[v]++
		}
	}
	errandAll := errandVersions(t)
	for _, v := range append(labels("river", riverVersions), labels("errand", errandAll)...) {
		if appliedBy[v] != 1 {
			t.Errorf("%s applied by %d replicas, want exactly one", v, appliedBy[v])
		}
	}

	pool := testdb.Pool(t, dbURL)
	rows, err := pool.Query(ctx, "SELECT version, count(*)::int FROM errand.errand_migrations GROUP BY version ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	type versionCount struct{ Version, Count int }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[versionCount])
	if err != nil {
		t.Fatal(err)
	}
	var gotVersions []int
	for _, vc := range got {
		gotVersions = append(gotVersions, vc.Version)
		if vc.Count != 1 {
			t.Errorf("errand.errand_migrations has %d rows for version %d, want 1", vc.Count, vc.Version)
		}
	}
	if !slices.Equal(gotVersions, errandAll) {
		t.Errorf("errand.errand_migrations versions = %v, want %v", gotVersions, errandAll)
	}
	var riverRows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM errand.river_migration").Scan(&riverRows); err != nil {
		t.Fatal(err)
	}
	if riverRows != len(riverVersions) {
		t.Errorf("errand.river_migration has %d rows, want %d", riverRows, len(riverVersions))
	}
	if err := migrations.Check(ctx, pool); err != nil {
		t.Errorf("Check after concurrent Up = %v, want nil", err)
	}
}

func TestFoundationIsInPlaceAfterUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.URL(t))

	cases := []struct {
		name  string
		query string
	}{
		{"errand.jobs is a view", "SELECT relkind = 'v' FROM pg_class WHERE oid = 'errand.jobs'::regclass"},
		{"errand.jobs inserts through its trigger", `SELECT EXISTS (SELECT 1 FROM pg_trigger
			WHERE tgrelid = 'errand.jobs'::regclass AND tgname = 'jobs_insert')`},
		{"errand.enqueue takes the contract's parameters, traceparent last (053)",
			"SELECT to_regprocedure('errand.enqueue(uuid, text, jsonb, timestamptz, integer, integer, text, text)') IS NOT NULL"},
		{"errand.enqueue is one function (an overload would make calls ambiguous)",
			"SELECT count(*) = 1 FROM pg_proc WHERE pronamespace = 'errand'::regnamespace AND proname = 'enqueue'"},
		{"errand.enqueue returns the job id", `SELECT prorettype = 'bigint'::regtype FROM pg_proc
			WHERE oid = 'errand.enqueue(uuid, text, jsonb, timestamptz, integer, integer, text, text)'::regprocedure`},
		{"River's tables live in schema errand", "SELECT to_regclass('errand.river_job') IS NOT NULL AND to_regclass('public.river_job') IS NULL"},
		{"row level security is enabled on workspace_members", "SELECT relrowsecurity FROM pg_class WHERE oid = 'errand.workspace_members'::regclass"},
		{"row level security is forced on workspace_members (owners too)", "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'errand.workspace_members'::regclass"},
		{"workspace_members has the tenant policy", `SELECT EXISTS (SELECT 1 FROM pg_policies
			WHERE schemaname = 'errand' AND tablename = 'workspace_members' AND policyname = 'tenant_isolation'
			  AND qual IS NOT NULL AND with_check IS NOT NULL)`},
		{"the tenant role is the database's own", `SELECT errand.tenant_role() LIKE 'errand\_tenant\_%'
			AND errand.tenant_role() = (SELECT value FROM errand.settings WHERE name = 'tenant_role')`},
		{"the tenant role cannot bypass row level security", `SELECT NOT rolsuper AND NOT rolbypassrls AND NOT rolcanlogin
			FROM pg_roles WHERE rolname = errand.tenant_role()`},
		{"the tenant role may use workspace_members", `SELECT bool_and(has_table_privilege(errand.tenant_role(), 'errand.workspace_members', p))
			FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p`},
		{"the tenant role may read workspaces but not write them", `SELECT has_table_privilege(errand.tenant_role(), 'errand.workspaces', 'SELECT')
			AND NOT has_table_privilege(errand.tenant_role(), 'errand.workspaces', 'INSERT, UPDATE, DELETE')`},
		{"the tenant role may read River's jobs but not write them", `SELECT has_table_privilege(errand.tenant_role(), 'errand.river_job', 'SELECT')
			AND NOT has_table_privilege(errand.tenant_role(), 'errand.river_job', 'INSERT, UPDATE, DELETE')`},
		{"the shared errand_tenant of earlier versions holds nothing here", `SELECT NOT EXISTS (
			SELECT 1 FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee WHERE g.rolname = 'errand_tenant')`},
		{"River's jobs have row level security, not forced (River's own queries run as errand's role)",
			"SELECT relrowsecurity AND NOT relforcerowsecurity FROM pg_class WHERE oid = 'errand.river_job'::regclass"},
		{"the tenant role sees River's rows of the scoped workspace only", `SELECT EXISTS (SELECT 1 FROM pg_policies
			WHERE schemaname = 'errand' AND tablename = 'river_job' AND policyname = 'tenant_jobs'
			  AND permissive = 'RESTRICTIVE' AND roles = ARRAY[errand.tenant_role()::name])`},
		// Every tenant table, today's and a future migration's: whatever
		// the tenant role may use has row level security, and no policy
		// shows it a row without a scope (paused_workspaces, a directory of
		// paused ids, is the one exception).
		{"every table with a workspace_id the tenant role may use is fail-closed", `SELECT coalesce(bool_and(
			  c.relrowsecurity
			  AND EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'errand' AND p.tablename = c.relname)
			  AND NOT EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'errand' AND p.tablename = c.relname
			                    AND p.permissive = 'PERMISSIVE' AND p.qual ILIKE '%IS NULL%')), false)
			FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'errand'
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped
			WHERE c.relkind IN ('r', 'p') AND c.relname <> 'paused_workspaces'
			  AND has_table_privilege(errand.tenant_role(), c.oid, 'SELECT, INSERT, UPDATE, DELETE')`},
		{"the contract's trigger runs unscoped: unscope before it, rescope after (INSTEAD OF triggers fire in name order)", `SELECT
			array_agg(tgname::text ORDER BY tgname) FILTER (WHERE tgtype & 64 <> 0)
			  = ARRAY['jobs_0unscope', 'jobs_insert', 'jobs_zrescope']
			FROM pg_trigger WHERE tgrelid = 'errand.jobs'::regclass AND NOT tgisinternal`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ok bool
			if err := pool.QueryRow(ctx, tc.query).Scan(&ok); err != nil {
				t.Fatalf("%s: %v", tc.query, err)
			}
			if !ok {
				t.Errorf("not so: %s", tc.query)
			}
		})
	}
}

// The advisory lock has its own connection, so a one-connection pool (River
// migrates through it) does not deadlock.
func TestUpWithAOneConnectionPool(t *testing.T) {
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, testdb.WithParam(url, "pool_max_conns", "1"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("Up with pool_max_conns=1: %v", err)
	}
}
