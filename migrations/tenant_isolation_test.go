package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
)

// migrateBelow brings an empty database to where errand was before version
// below: River's migrations, then errand's own files older than it, recorded
// as Up records them.
func migrateBelow(t *testing.T, pool *pgxpool.Pool, below int) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+migrations.Schema); err != nil {
		t.Fatal(err)
	}
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
			version int PRIMARY KEY,
			name text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		for _, m := range all {
			if m.Version >= below {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO errand.errand_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A database migrated when the tenant role was the cluster-wide
// errand_tenant: upgrading moves every privilege that role held in this
// database (errand's tables and the team's own, granted for their kinds) to
// the database's own role, and leaves the shared role in place for other
// databases.
func TestUpMovesTheSharedTenantRolesPrivilegesToTheDatabasesOwnRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 5)
	for _, sql := range []string{
		"CREATE SCHEMA my_app",
		"CREATE TABLE my_app.reports (id int PRIMARY KEY, exported_at timestamptz)",
		"GRANT USAGE ON SCHEMA my_app TO errand_tenant",
		"GRANT SELECT, UPDATE ON my_app.reports TO errand_tenant",
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var before bool
	if err := pool.QueryRow(ctx, "SELECT has_table_privilege('errand_tenant', 'errand.workspace_members', 'SELECT')").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if !before {
		t.Fatal("before the upgrade errand_tenant cannot read errand.workspace_members: not the starting point this test needs")
	}

	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	var role string
	if err := pool.QueryRow(ctx, "SELECT value FROM errand.settings WHERE name = 'tenant_role'").Scan(&role); err != nil {
		t.Fatalf("the database's tenant role is not recorded: %v", err)
	}
	dropRoleAfter(t, pool, role)

	cases := []struct {
		name  string
		query string
	}{
		{"the shared role holds nothing in this database any more", `SELECT NOT EXISTS (
			SELECT 1 FROM pg_class c, aclexplode(c.relacl) a WHERE a.grantee = 'errand_tenant'::regrole
			UNION ALL
			SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = 'errand_tenant'::regrole)`},
		{"the shared role still exists (other databases may use it)", "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'errand_tenant')"},
		{"the database's role is its own", "SELECT $1 <> 'errand_tenant' AND $1 LIKE 'errand\\_tenant\\_%' AND $1 = errand.tenant_role()"},
		{"the database's role cannot log in or bypass row level security", `SELECT NOT rolsuper AND NOT rolbypassrls AND NOT rolcanlogin
			FROM pg_roles WHERE rolname = $1`},
		{"it may use workspace_members", `SELECT bool_and(has_table_privilege($1, 'errand.workspace_members', p))
			FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p`},
		{"it may use emails", `SELECT bool_and(has_table_privilege($1, 'errand.emails', p))
			FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p`},
		{"it may read the directory tables", `SELECT has_table_privilege($1, 'errand.workspaces', 'SELECT')
			AND has_table_privilege($1, 'errand.users', 'SELECT')
			AND NOT has_table_privilege($1, 'errand.workspaces', 'INSERT, UPDATE, DELETE')`},
		{"it may read River's jobs (row level security shows its workspace's) but not write them",
			`SELECT has_table_privilege($1, 'errand.river_job', 'SELECT')
			AND NOT has_table_privilege($1, 'errand.river_job', 'INSERT, UPDATE, DELETE')`},
		{"the team's table granted to the shared role is granted to it", `SELECT has_schema_privilege($1, 'my_app', 'USAGE')
			AND has_table_privilege($1, 'my_app.reports', 'SELECT, UPDATE')
			AND NOT has_table_privilege($1, 'my_app.reports', 'INSERT, DELETE')`},
	}
	for _, tc := range cases {
		var args []any
		if strings.Contains(tc.query, "$1") {
			args = append(args, role)
		}
		var ok bool
		if err := pool.QueryRow(ctx, tc.query, args...).Scan(&ok); err != nil {
			t.Errorf("%s: %s: %v", tc.name, tc.query, err)
			continue
		}
		if !ok {
			t.Errorf("not so: %s", tc.name)
		}
	}
}
