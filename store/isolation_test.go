package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Tenant isolation between databases (instance id, tenant role) and for
// River's job rows.

// pgTool finds a PostgreSQL client program: in ERRAND_PG_BINDIR, in
// `pg_config --bindir`, or on PATH.
func pgTool(t *testing.T, name string) string {
	t.Helper()
	var dirs []string
	if d := os.Getenv("ERRAND_PG_BINDIR"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (ERRAND_PG_BINDIR, pg_config --bindir, PATH): install PostgreSQL's client programs", name)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

func databaseName(t *testing.T, databaseURL string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// dropWithTenantRole drops the database at databaseURL when the test ends,
// then the tenant role errand made for it (roles outlive databases).
// Register it after the database and before any pool on it.
func dropWithTenantRole(t *testing.T, databaseURL string) {
	t.Helper()
	admin := testdb.AdminURL(t)
	name := databaseName(t, databaseURL)
	t.Cleanup(func() {
		ctx := context.Background()
		var role string
		if conn, err := pgx.Connect(ctx, databaseURL); err == nil {
			_ = conn.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'tenant_role'`).Scan(&role)
			conn.Close(ctx)
		}
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: drop database %s: %v", name, err)
		}
		if strings.HasPrefix(role, "errand_tenant_") {
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
				t.Errorf("cleanup: drop role %s: %v", role, err)
			}
		}
	})
}

// newOwnedDatabase creates an empty database owned by role, as managed
// PostgreSQL hands one out, and returns URLs connecting as role and as the
// superuser.
func newOwnedDatabase(t *testing.T, role string) (ownerURL, superURL string) {
	t.Helper()
	adminURL := testdb.AdminURL(t)
	// errand_test_* with the pid: testdb drops it if this binary is killed.
	name := fmt.Sprintf("errand_test_owned%s_%d_1", randomHex(t), os.Getpid())
	adminExec(t, adminURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER "+pgx.Identifier{role}.Sanitize())
	superURL = testdb.WithDatabase(adminURL, name)
	dropWithTenantRole(t, superURL)
	return withUser(t, superURL, role), superURL
}

func migrate(t *testing.T, databaseURL string) {
	t.Helper()
	pool := testdb.Pool(t, databaseURL)
	if _, err := migrations.Up(context.Background(), pool, nil); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	pool.Close()
}

func instanceID(t *testing.T, db store.DB) string {
	t.Helper()
	id, err := store.InstanceID(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A staging database restored from production's dump must not send emails
// with production's idempotency keys (errand-<instance id>-<job id>, job ids
// restored with the data): Resend would answer with production's emails.
func TestInstanceIDIsNewInARestoredCopyAndStableOtherwise(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pgDump, pgRestore := pgTool(t, "pg_dump"), pgTool(t, "pg_restore")

	origURL := testdb.NewDatabase(t, true)
	dropWithTenantRole(t, origURL)
	orig := testdb.Pool(t, origURL)
	origID := instanceID(t, orig)
	if origID == "" {
		t.Fatal("the original database has an empty instance id")
	}
	// New sessions of the same database (what a restart of errand or of
	// PostgreSQL gives) keep it.
	reopened := testdb.Pool(t, origURL)
	if got := instanceID(t, reopened); got != origID {
		t.Fatalf("instance id changed from %s to %s between sessions of the same database", origID, got)
	}
	origRole := openStore(t, origURL).ScopeRole()

	copyURL := testdb.NewDatabase(t, false)
	dropWithTenantRole(t, copyURL)
	dump := filepath.Join(t.TempDir(), "production.dump")
	runTool(t, pgDump, "--format=custom", "--file="+dump, origURL)
	runTool(t, pgRestore, "--exit-on-error", "--dbname="+copyURL, dump)

	cp := testdb.Pool(t, copyURL)
	var restored string
	if err := cp.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'instance_id'`).Scan(&restored); err != nil {
		t.Fatal(err)
	}
	if restored != origID {
		t.Fatalf("the dump carried instance id %q, want the original's %s (the test restores the wrong thing)", restored, origID)
	}

	// The copy's first readers (replicas starting at once) agree on one new id.
	const readers = 6
	ids := make([]string, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range readers {
		pool, err := pgxpool.New(ctx, copyURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if err := pool.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			ids[i], errs[i] = store.InstanceID(ctx, pool)
		})
	}
	close(start)
	wg.Wait()
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: InstanceID in the copy: %v", i, errs[i])
		}
	}
	copyID := ids[0]
	if copyID == origID {
		t.Fatalf("the restored copy uses the original's instance id %s: its emails would carry production's idempotency keys", origID)
	}
	for i, id := range ids {
		if id != copyID {
			t.Errorf("reader %d got instance id %s, reader 0 %s: concurrent readers of the copy disagree", i, id, copyID)
		}
	}
	if got := instanceID(t, testdb.Pool(t, copyURL)); got != copyID {
		t.Errorf("the copy's instance id changed again, from %s to %s", copyID, got)
	}
	var stored string
	if err := cp.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'instance_id'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != copyID {
		t.Errorf("errand.settings instance_id in the copy = %s, InstanceID = %s", stored, copyID)
	}
	if got := instanceID(t, orig); got != origID {
		t.Errorf("the original's instance id changed from %s to %s when its copy was made", origID, got)
	}

	// The copy also gets its own tenant role the first time errand opens it,
	// and the original's role keeps nothing in the copy.
	copyRole := openStore(t, copyURL).ScopeRole()
	if copyRole == "" || copyRole == origRole {
		t.Fatalf("the copy's tenant role is %q, the original's %q: want one of its own", copyRole, origRole)
	}
	assertNoPrivileges(t, cp, origRole)
}

// assertNoPrivileges checks that role can use nothing of errand's in the
// database q is connected to.
func assertNoPrivileges(t *testing.T, q querier, role string) {
	t.Helper()
	rows, err := q.Query(context.Background(), `
		SELECT 'schema errand' WHERE has_schema_privilege($1, 'errand', 'USAGE, CREATE')
		UNION ALL
		SELECT c.oid::regclass::text FROM pg_class c
		WHERE c.relnamespace = 'errand'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
		  AND has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')`, role)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 0 {
		t.Errorf("role %s holds privileges on %v", role, got)
	}
}

// Two errand databases share a cluster (two apps, or production and staging
// on one server). Roles are cluster-wide, so each database has a tenant role
// of its own, and nobody but errand's own role is a member of it.
func TestTenantRoleBelongsToOneDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A login role someone made a member of A's tenant role.
	member := newRole(t, "errand_member", "NOSUPERUSER NOBYPASSRLS")
	aURL := testdb.NewDatabase(t, true)
	dropWithTenantRole(t, aURL)
	bURL := testdb.NewDatabase(t, true)
	dropWithTenantRole(t, bURL)
	adminA, adminB := testdb.Pool(t, aURL), testdb.Pool(t, bURL)
	stA, stB := openStore(t, aURL), openStore(t, bURL)

	roleA, roleB := stA.ScopeRole(), stB.ScopeRole()
	if roleA == "" || roleB == "" || roleA == roleB {
		t.Fatalf("tenant roles: A %q, B %q; want one per database", roleA, roleB)
	}
	for _, role := range []string{roleA, roleB} {
		var members []string
		rows, err := adminA.Query(ctx, `SELECT m.member::regrole::text FROM pg_auth_members m WHERE m.roleid = $1::regrole`, role)
		if err != nil {
			t.Fatal(err)
		}
		if members, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		// errand's role is a superuser here, which needs no membership.
		if len(members) != 0 {
			t.Errorf("role %s is granted to %v, want nobody (errand's own role is a superuser)", role, members)
		}
	}
	assertNoPrivileges(t, adminB, roleA)
	assertNoPrivileges(t, adminA, roleB)

	wa := newWorkspace(t, adminA, "a")
	wb := newWorkspace(t, adminB, "b")
	addMembers(t, adminA, wa, 1)
	addMembers(t, adminB, wb, 2)

	// A member of A's role connects to B (CONNECT is PUBLIC's by default)
	// and finds nothing it may read there, with or without a workspace.
	adminExec(t, testdb.AdminURL(t), "GRANT "+pgx.Identifier{roleA}.Sanitize()+" TO "+pgx.Identifier{member}.Sanitize())
	conn, err := pgx.Connect(ctx, withUser(t, bURL, member))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, query := range []string{
		"SELECT count(*) FROM errand.workspaces",
		"SELECT count(*) FROM errand.users",
		"SELECT count(*) FROM errand.workspace_members",
		"SELECT count(*) FROM errand.emails",
		"SELECT count(*) FROM errand.river_job",
	} {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('role', $1, true), set_config('app.current_workspace_id', $2, true)", roleA, wb); err != nil {
				return err
			}
			var n int
			return tx.QueryRow(ctx, query).Scan(&n)
		})
		assertPgCode(t, err, sqlInsufficientPrivilege, "as A's tenant role in B: "+query)
	}

	// Documented for shared clusters: without CONNECT for PUBLIC, it cannot
	// even connect.
	adminExec(t, testdb.AdminURL(t), "REVOKE CONNECT ON DATABASE "+pgx.Identifier{databaseName(t, bURL)}.Sanitize()+" FROM PUBLIC")
	if c, err := pgx.Connect(ctx, withUser(t, bURL, member)); err == nil {
		c.Close(ctx)
		t.Error("a member of A's tenant role connected to B after REVOKE CONNECT ... FROM PUBLIC")
	} else {
		assertPgCode(t, err, sqlInsufficientPrivilege, "connect to B after REVOKE CONNECT")
	}

	// errand keeps working in both.
	for _, c := range []struct {
		st   *store.Store
		ws   string
		role string
		n    int
	}{{stA, wa, roleA, 1}, {stB, wb, roleB, 2}} {
		err := c.st.InWorkspace(ctx, c.ws, func(tx pgx.Tx) error {
			if u := currentUser(t, tx); u != c.role {
				t.Errorf("scoped transaction runs as %s, want %s", u, c.role)
			}
			got, err := memberWorkspaces(ctx, tx)
			if err != nil {
				return err
			}
			assertOnly(t, got, c.ws, c.n)
			return nil
		})
		if err != nil {
			t.Fatalf("InWorkspace(%s): %v", c.ws, err)
		}
	}
}

// enqueue puts n ping jobs for workspace into errand.jobs through db, each
// carrying a secret of that workspace's (like a reset link).
func enqueue(t *testing.T, db store.DB, workspace string, n int) {
	t.Helper()
	ctx := context.Background()
	for range n {
		var id int64
		err := db.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
			VALUES ($1::uuid, 'ping', jsonb_build_object('secret', 'https://app.example.com/reset/' || $1::text), now() + interval '1 hour')
			RETURNING id`, workspace).Scan(&id)
		if err != nil {
			t.Fatalf("enqueue for %s: %v", workspace, err)
		}
	}
}

// jobWorkspaces is what a query that forgot `WHERE workspace_id = ...` gets
// from River's table.
func jobWorkspaces(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT metadata ->> 'workspace_id' FROM errand.river_job WHERE args ? 'secret'`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Job rows are tenant data (args carry reset links). A scoped transaction
// sees only its workspace's jobs however errand connects, while River's own
// queries (unscoped, as errand's role) see every job and carry no row level
// security condition at all.
func TestScopedTransactionSeesOnlyItsWorkspacesJobs(t *testing.T) {
	t.Parallel()
	modes := []struct {
		name string
		// setup returns errand's URL and a superuser URL of a migrated database.
		setup func(t *testing.T) (errandURL, superURL string)
	}{
		{"superuser (errand dev, CI)", func(t *testing.T) (string, string) {
			u := testdb.NewDatabase(t, true)
			dropWithTenantRole(t, u)
			return u, u
		}},
		{"plain owner that may create roles (managed PostgreSQL)", func(t *testing.T) (string, string) {
			role := newRole(t, "errand_owner", "NOSUPERUSER CREATEROLE NOCREATEDB NOBYPASSRLS")
			owner, super := newOwnedDatabase(t, role)
			migrate(t, owner)
			return owner, super
		}},
		{"plain owner that may not create roles, with the role an administrator created", func(t *testing.T) (string, string) {
			role := newRole(t, "errand_owner", "NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
			owner, super := newOwnedDatabase(t, role)
			migrate(t, owner)
			testdb.CreateTenantRole(t, owner)
			return owner, super
		}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			errandURL, superURL := mode.setup(t)
			admin := testdb.Pool(t, superURL)
			if _, err := admin.Exec(ctx, "INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default') ON CONFLICT DO NOTHING"); err != nil {
				t.Fatal(err)
			}
			st := openStore(t, errandURL)
			a := newWorkspace(t, admin, "a")
			b := newWorkspace(t, admin, "b")
			enqueue(t, st, a, 2)
			enqueue(t, st, b, 3)

			err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
				got, err := jobWorkspaces(ctx, tx)
				if err != nil {
					return fmt.Errorf("scoped SELECT from errand.river_job: %w", err)
				}
				assertOnly(t, got, a, 2)
				// The contract's view is for trusted roles: refused here, or
				// showing nothing of B's.
				sp, err := tx.Begin(ctx)
				if err != nil {
					return err
				}
				defer sp.Rollback(ctx)
				rows, err := sp.Query(ctx, "SELECT workspace_id::text FROM errand.jobs")
				if err == nil {
					var ws []string
					ws, err = pgx.CollectRows(rows, pgx.RowTo[string])
					if err == nil && slices.Contains(ws, b) {
						t.Errorf("scoped to A, errand.jobs shows B's jobs: %v", ws)
					}
				}
				var pgErr *pgconn.PgError
				if err != nil && (!errors.As(err, &pgErr) || pgErr.Code != sqlInsufficientPrivilege) {
					return fmt.Errorf("scoped SELECT from errand.jobs: %w", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			// Unscoped, as errand's own role: every job, and no policy in
			// River's plans (an RLS condition would keep River's fetch off
			// its index: enum equality is not leakproof).
			got, err := jobWorkspaces(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 5 {
				t.Errorf("unscoped errand sees %d jobs, want all 5", len(got))
			}
			var plan string
			err = st.QueryRow(ctx, `EXPLAIN (COSTS OFF) SELECT * FROM errand.river_job
				WHERE state = 'available' AND queue = 'default' AND scheduled_at <= now()
				ORDER BY priority, scheduled_at, id LIMIT 10 FOR UPDATE SKIP LOCKED`).Scan(&plan)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(plan, "current_setting") {
				t.Errorf("River's fetch as errand's role carries the row level security condition: %s", plan)
			}
		})
	}
}

// The contract's trigger checks the workspace and writes River's row as
// errand's role whatever the caller's scope: an app session scoped to B (for
// its own row level security) may enqueue for A, and a workspace that does
// not exist is still refused.
func TestEnqueueDoesNotDependOnTheCallersScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Roles first: their cleanup runs after the database is dropped.
	owner := newRole(t, "errand_owner", "NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
	app := newRole(t, "errand_app", "NOSUPERUSER NOBYPASSRLS")
	ownerURL, superURL := newOwnedDatabase(t, owner)
	migrate(t, ownerURL)
	admin := testdb.Pool(t, superURL)
	if _, err := admin.Exec(ctx, "INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default') ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	// The README's grants for an app server's role, given by errand's owner.
	ownerPool := testdb.Pool(t, ownerURL)
	appIdent := pgx.Identifier{app}.Sanitize()
	for _, sql := range []string{
		"GRANT USAGE ON SCHEMA errand TO " + appIdent,
		"GRANT SELECT, INSERT ON errand.jobs TO " + appIdent,
		"GRANT EXECUTE ON FUNCTION errand.enqueue TO " + appIdent,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON errand.workspaces, errand.users, errand.workspace_members TO " + appIdent,
	} {
		if _, err := ownerPool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	a := newWorkspace(t, admin, "a")
	b := newWorkspace(t, admin, "b")

	appPool := testdb.Pool(t, withUser(t, superURL, app))
	callers := []struct {
		name string
		// scoped runs fn in a transaction scoped to workspace.
		scoped func(workspace string, fn func(tx pgx.Tx) error) error
	}{
		// errand's role itself, held to forced row level security, with the
		// setting an app would set (errand's own scoped transactions switch
		// to the tenant role, which may not use errand.jobs at all).
		{"errand's role with a workspace set", func(ws string, fn func(tx pgx.Tx) error) error {
			return pgx.BeginFunc(ctx, ownerPool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "SELECT set_config('app.current_workspace_id', $1, true)", ws); err != nil {
					return err
				}
				return fn(tx)
			})
		}},
		{"an app session scoped for its own row level security", func(ws string, fn func(tx pgx.Tx) error) error {
			return pgx.BeginFunc(ctx, appPool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "SELECT set_config('app.current_workspace_id', $1, true)", ws); err != nil {
					return err
				}
				return fn(tx)
			})
		}},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			var id int64
			err := c.scoped(b, func(tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, "INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping') RETURNING id", a).Scan(&id); err != nil {
					return err
				}
				var scope string
				if err := tx.QueryRow(ctx, "SELECT current_setting('app.current_workspace_id')").Scan(&scope); err != nil {
					return err
				}
				if scope != b {
					t.Errorf("after the INSERT the caller's scope is %q, want B's %s", scope, b)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("scoped to B, enqueue for A: %v", err)
			}
			var ws string
			if err := admin.QueryRow(ctx, "SELECT workspace_id::text FROM errand.jobs WHERE id = $1", id).Scan(&ws); err != nil {
				t.Fatal(err)
			}
			if ws != a {
				t.Errorf("job %d belongs to %s, want A %s", id, ws, a)
			}

			err = c.scoped(b, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO errand.jobs (workspace_id, kind) VALUES ('6f1c2a3e-0000-4000-8000-000000000001', 'ping')")
				return err
			})
			assertPgCode(t, err, "23503", "enqueue for a workspace that does not exist")
		})
	}
}

// A plain owner that may create roles (managed PostgreSQL's usual grant)
// makes the database's tenant role and is its only member; the membership
// of the shared errand_tenant that earlier versions gave it is taken back.
func TestTenantRoleIsGrantedOnlyToErrandsRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner := newRole(t, "errand_owner", "NOSUPERUSER CREATEROLE NOCREATEDB NOBYPASSRLS")
	ownerURL, superURL := newOwnedDatabase(t, owner)
	migrate(t, ownerURL)
	admin := testdb.Pool(t, superURL)
	st := openStore(t, ownerURL)
	role := st.ScopeRole()
	if want, err := store.TenantRole(ctx, admin); err != nil || role != want {
		t.Fatalf("ScopeRole() = %q for a plain owner that may create roles, want the database's tenant role %q (%v)", role, want, err)
	}
	rows, err := admin.Query(ctx, `SELECT m.member::regrole::text FROM pg_auth_members m WHERE m.roleid = $1::regrole`, role)
	if err != nil {
		t.Fatal(err)
	}
	members, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members, []string{owner}) {
		t.Errorf("%s is granted to %v, want only errand's role %s", role, members, owner)
	}
	var shared bool
	err = admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_auth_members m
		WHERE m.roleid = 'errand_tenant'::regrole AND m.member = $1::regrole)`, owner).Scan(&shared)
	if err != nil {
		t.Fatal(err)
	}
	if shared {
		t.Errorf("%s is still a member of the cluster-wide errand_tenant", owner)
	}
}

// Roles outlive databases: each migration drops the tenant roles of
// databases that are gone, never a live database's or the shared one.
func TestTenantRolesOfDroppedDatabasesAreDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := testdb.Pool(t, testdb.AdminURL(t))
	roleExists := func(role string) bool {
		t.Helper()
		var ok bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	liveURL := testdb.NewDatabase(t, true)
	dropWithTenantRole(t, liveURL)
	live, err := store.TenantRole(ctx, testdb.Pool(t, liveURL))
	if err != nil {
		t.Fatal(err)
	}
	goneURL := testdb.NewDatabase(t, true)
	gone, err := store.TenantRole(ctx, testdb.Pool(t, goneURL))
	if err != nil {
		t.Fatal(err)
	}
	if !roleExists(gone) {
		t.Fatalf("migration made no role %s", gone)
	}
	adminExec(t, testdb.AdminURL(t), "DROP DATABASE "+pgx.Identifier{databaseName(t, goneURL)}.Sanitize()+" WITH (FORCE)")

	next := testdb.NewDatabase(t, true)
	dropWithTenantRole(t, next)
	// Another test's migration on the same server may have dropped the role
	// first, uncommitted (this one then skips it after its lock timeout):
	// the role must be gone once that commits.
	for deadline := time.Now().Add(30 * time.Second); roleExists(gone); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the tenant role %s of a dropped database survived the next migration by 30s", gone)
			break
		}
	}
	if !roleExists(live) {
		t.Errorf("the tenant role %s of a live database was dropped", live)
	}
	if !roleExists("errand_tenant") {
		t.Error("the shared errand_tenant was dropped; another database may still use it")
	}
}

// Without a tenant role (a plain owner that may not create roles) every
// start looks for one to set up; that must never wait for a lock on River's
// table, which River's own transactions hold all the time.
func TestOpenWithoutATenantRoleTakesNoLockOnRiversTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	owner := newRole(t, "errand_owner", "NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
	ownerURL, _ := newOwnedDatabase(t, owner)
	migrate(t, ownerURL)

	holder, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM errand.river_job").Scan(&n); err != nil {
		t.Fatal(err)
	}

	// A lock wait fails at once instead of hanging the test. Without a
	// tenant role scoped transactions could not be isolated: Open refuses,
	// naming what an administrator runs, and not because of a lock.
	st, err := store.Open(ctx, testdb.WithParam(ownerURL, "options", "-c lock_timeout=1s"), store.Options{})
	if err == nil {
		st.Close()
		t.Fatalf("store.Open as a plain owner that may not create roles, without a tenant role: opened with ScopeRole %q, want refused", st.ScopeRole())
	}
	role, rerr := store.TenantRole(ctx, tx)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, store.ErrNoTenantRole) || !strings.Contains(err.Error(), "CREATE ROLE "+role+" NOLOGIN NOINHERIT; GRANT "+role+" TO") {
		t.Errorf("store.Open without a tenant role: %v, want ErrNoTenantRole naming the statements for %s", err, role)
	}
}

// Replicas of one database whose roles differ in whether they may call
// pg_control_system() agree on one instance id: the binding is computed as
// the role that migrated errand (migration 058), so a role that may not
// call it still sees the cluster's identifier. Before, such a role bound to
// 'unknown/<oid>', and the two renewed the id, and the email idempotency
// keys with it, in turn on every read.
func TestInstanceIDHoldsAcrossRolesThatSeeTheClusterDifferently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	role := fmt.Sprintf("errand_test_blind_%d", time.Now().UnixNano())
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s NOLOGIN; GRANT USAGE ON SCHEMA errand TO %[1]s;
		GRANT SELECT, INSERT, UPDATE ON errand.settings TO %[1]s;
		REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC`, role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), fmt.Sprintf(`REVOKE ALL ON errand.settings FROM %[1]s; REVOKE ALL ON SCHEMA errand FROM %[1]s; DROP ROLE %[1]s`, role))
	})
	// blind reads the id and the binding as the role that may not call
	// pg_control_system() itself.
	blind := func() (id, binding string) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role); err != nil {
			t.Fatal(err)
		}
		var may bool
		if err := tx.QueryRow(ctx, `SELECT has_function_privilege('pg_control_system()', 'EXECUTE'),
			errand.instance_id(), errand.instance_binding()`).Scan(&may, &id, &binding); err != nil {
			t.Fatal(err)
		}
		if may {
			t.Fatal("the blind role may call pg_control_system(); the test needs one that may not")
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return id, binding
	}
	var seeingBinding string
	if err := pool.QueryRow(ctx, `SELECT errand.instance_binding()`).Scan(&seeingBinding); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(seeingBinding, "unknown/") {
		t.Fatalf("the migrating role's binding is %q, want the cluster's identifier", seeingBinding)
	}
	// Whichever reads first, and in turn, one id.
	for _, blindFirst := range []bool{true, false} {
		if _, err := pool.Exec(ctx, `DELETE FROM errand.settings WHERE name IN ('instance_id', 'instance_bound_to')`); err != nil {
			t.Fatal(err)
		}
		var first string
		if blindFirst {
			first, _ = blind()
		} else {
			first = instanceID(t, pool)
		}
		for round := range 3 {
			id, binding := blind()
			if binding != seeingBinding {
				t.Fatalf("the blind role's binding is %q, want the migrating role's %q", binding, seeingBinding)
			}
			if seeing := instanceID(t, pool); id != first || seeing != first {
				t.Fatalf("blind first %v, round %d: the blind role read %s, the seeing one %s; want %s throughout", blindFirst, round+1, id, seeing, first)
			}
		}
	}
}
