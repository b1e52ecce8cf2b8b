package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// readmeOwnTableSQL is the README's recipe for a kind's own table.
func readmeOwnTableSQL(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(raw), -1) {
		if strings.Contains(block[1], "CREATE SCHEMA my_app") && strings.Contains(block[1], "errand.grant_tenant") {
			return block[1]
		}
	}
	t.Fatal("README has no ```sql block creating my_app.reports and granting it with errand.grant_tenant")
	return ""
}

// A team's kind keeps its state in a table of its own schema, set up as the
// README says: job code's workspace-scoped transactions (the tenant role)
// read and write it, and see their workspace's rows only.
func TestAKindsOwnTableSetUpAsTheREADMESaysIsReachableInItsWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, true)
	pool := testdb.Pool(t, url)
	if _, err := pool.Exec(ctx, readmeOwnTableSQL(t)); err != nil {
		t.Fatalf("the README's SQL for a kind's own table: %v", err)
	}
	var a, b string
	if err := pool.QueryRow(ctx, `
		WITH ws AS (INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'own-a'), ('B', 'own-b') RETURNING id, slug)
		SELECT (SELECT id::text FROM ws WHERE slug = 'own-a'), (SELECT id::text FROM ws WHERE slug = 'own-b')`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO my_app.reports (workspace_id) VALUES ($1), ($2)`, a, b); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, url, store.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
		var seen int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM my_app.reports`).Scan(&seen); err != nil {
			return err
		}
		if seen != 1 {
			t.Errorf("workspace A's transaction sees %d rows of my_app.reports, want its own 1", seen)
		}
		tag, err := tx.Exec(ctx, `UPDATE my_app.reports SET exported_to = 'bucket'`)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			t.Errorf("workspace A's update changed %d rows, want its own 1", tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("a workspace-scoped transaction on my_app.reports: %v", err)
	}
	var untouched string
	if err := pool.QueryRow(ctx, `SELECT coalesce(exported_to, '') FROM my_app.reports WHERE workspace_id = $1`, b).Scan(&untouched); err != nil || untouched != "" {
		t.Errorf("B's row after A's update: %q, %v; want it untouched", untouched, err)
	}
	var recorded bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM errand.tenant_grants WHERE kind = 'SCHEMA' AND object = 'my_app' AND privileges = 'USAGE')`).Scan(&recorded); err != nil || !recorded {
		t.Errorf("the schema's grant is not recorded in errand.tenant_grants (%v): a restored copy's role would not get it", err)
	}
}

// A table granted before 049, without its schema: upgrading grants the
// schema too, and records it.
func TestUpGrantsTheSchemaOfTablesGrantedBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewDatabase(t, false)
	pool := testdb.Pool(t, url)
	migrateBelow(t, pool, 49)
	if _, err := pool.Exec(ctx, `SELECT errand.setup_tenant_role()`); err != nil {
		t.Fatal(err)
	}
	var role string
	if err := pool.QueryRow(ctx, `SELECT errand.tenant_role()`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	dropRoleAfter(t, pool, role)
	for _, sql := range []string{
		"CREATE SCHEMA my_app",
		"CREATE TABLE my_app.reports (id int PRIMARY KEY, workspace_id uuid)",
		"SELECT errand.grant_tenant('my_app.reports', 'SELECT')",
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var before bool
	if err := pool.QueryRow(ctx, `SELECT has_schema_privilege($1, 'my_app', 'USAGE')`, role).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before {
		t.Fatal("before 049 the tenant role already may use my_app: not the starting point this test needs")
	}
	if _, err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	var after, recorded bool
	if err := pool.QueryRow(ctx, `SELECT has_schema_privilege($1, 'my_app', 'USAGE'),
		EXISTS (SELECT 1 FROM errand.tenant_grants WHERE kind = 'SCHEMA' AND object = 'my_app')`, role).Scan(&after, &recorded); err != nil {
		t.Fatal(err)
	}
	if !after || !recorded {
		t.Errorf("after the upgrade: usage on my_app %v, recorded %v; want both", after, recorded)
	}
}

// dropRoleAfter drops the database's tenant role once the test is over,
// after the database (roles outlive databases, and a role still granted
// something cannot be dropped).
func dropRoleAfter(t *testing.T, pool *pgxpool.Pool, role string) {
	t.Helper()
	ctx := context.Background()
	var dbName string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, testdb.AdminURL(t))
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)")
		_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
	})
}

// A schema errand's role may not grant (another role owns it): PostgreSQL
// only warns, and every job of the kind would fail on the schema, so
// errand.grant_tenant refuses, saying what to ask the schema's owner.
func TestGrantTenantSaysWhenItCannotGrantTheSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ownerURL := testdb.PlainOwnerDatabase(t, true)
	role := testdb.CreateTenantRole(t, ownerURL)
	owner := testdb.Pool(t, ownerURL)
	// As errand does when it starts: the role is recorded, and granted.
	if _, err := owner.Exec(ctx, `SELECT errand.setup_tenant_role()`); err != nil {
		t.Fatal(err)
	}
	var ownerRole, dbName string
	if err := owner.QueryRow(ctx, `SELECT current_user, current_database()`).Scan(&ownerRole, &dbName); err != nil {
		t.Fatal(err)
	}
	admin := testdb.Pool(t, testdb.WithDatabase(testdb.AdminURL(t), dbName))
	// Roles are cluster-wide and outlive a crashed run: a name of its own.
	other := fmt.Sprintf("errand_team_owner_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		_, _ = admin.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{other}.Sanitize()+" CASCADE")
		_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{other}.Sanitize())
	})
	for _, sql := range []string{
		"CREATE ROLE " + pgx.Identifier{other}.Sanitize() + " NOLOGIN",
		"CREATE SCHEMA team AUTHORIZATION " + pgx.Identifier{other}.Sanitize(),
		"CREATE TABLE team.reports (id int PRIMARY KEY, workspace_id uuid)",
		"ALTER TABLE team.reports OWNER TO " + pgx.Identifier{other}.Sanitize(),
		"GRANT USAGE ON SCHEMA team TO " + pgx.Identifier{ownerRole}.Sanitize(),
		"GRANT SELECT ON team.reports TO " + pgx.Identifier{ownerRole}.Sanitize() + " WITH GRANT OPTION",
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	_, err := owner.Exec(ctx, `SELECT errand.grant_tenant('team.reports', 'SELECT')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "may not use schema team") ||
		!strings.Contains(pgErr.Hint, "GRANT USAGE ON SCHEMA team TO "+role) {
		t.Errorf("grant_tenant on a schema errand's role cannot grant: %v (hint %q); want 42501 naming the schema and the GRANT to ask for", err, hintOf(err))
	}
}

func hintOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Hint
	}
	return ""
}
