package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// errRollback makes InWorkspace roll back instead of committing.
var errRollback = errors.New("roll back")

// sqlInsufficientPrivilege is what PostgreSQL reports both for a row-level
// security WITH CHECK violation and for a missing table privilege.
const sqlInsufficientPrivilege = "42501"

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func openStore(t *testing.T, databaseURL string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), databaseURL, store.Options{})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

func newWorkspace(t *testing.T, q queryRower, slug string) string {
	t.Helper()
	var id string
	err := q.QueryRow(context.Background(),
		"INSERT INTO errand.workspaces (name, slug) VALUES ($1, $2) RETURNING id::text", strings.ToUpper(slug), slug).Scan(&id)
	if err != nil {
		t.Fatalf("create workspace %s: %v", slug, err)
	}
	return id
}

// addMembers inserts n members of workspaceID through q (a superuser pool, or
// a transaction scoped to workspaceID).
func addMembers(t *testing.T, q queryRower, workspaceID string, n int) {
	t.Helper()
	for range n {
		var ok bool
		err := q.QueryRow(context.Background(),
			"INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid()) RETURNING true", workspaceID).Scan(&ok)
		if err != nil {
			t.Fatalf("add member to %s: %v", workspaceID, err)
		}
	}
}

// memberWorkspaces returns workspace_id of every row the query sees, without
// any WHERE clause: what a query that forgot to filter gets.
func memberWorkspaces(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, "SELECT workspace_id::text FROM errand.workspace_members")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func countMembers(t *testing.T, q queryRower, workspaceID string) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), "SELECT count(*) FROM errand.workspace_members WHERE workspace_id = $1", workspaceID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func currentUser(t *testing.T, q queryRower) string {
	t.Helper()
	var u string
	if err := q.QueryRow(context.Background(), "SELECT current_user::text").Scan(&u); err != nil {
		t.Fatal(err)
	}
	return u
}

func assertOnly(t *testing.T, got []string, want string, wantN int) {
	t.Helper()
	if len(got) != wantN {
		t.Errorf("saw %d rows %v, want %d rows of workspace %s", len(got), got, wantN, want)
	}
	for _, ws := range got {
		if ws != want {
			t.Errorf("saw a row of workspace %s while scoped to %s", ws, want)
		}
	}
}

func assertPgCode(t *testing.T, err error, code, what string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("%s: got error %v, want PostgreSQL error %s", what, err, code)
	}
	if pgErr.Code != code {
		t.Fatalf("%s: got SQLSTATE %s (%s), want %s", what, pgErr.Code, pgErr.Message, code)
	}
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withUser returns rawURL connecting as user (trust auth: no password).
func withUser(t *testing.T, rawURL, user string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

func adminExec(t *testing.T, databaseURL string, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newRole creates a cluster-wide LOGIN role with attrs, dropped when the test
// ends (after anything registered later, such as a database it owns).
func newRole(t *testing.T, prefix, attrs string) string {
	t.Helper()
	name := prefix + "_" + randomHex(t)
	admin := testdb.AdminURL(t)
	adminExec(t, admin, "CREATE ROLE "+pgx.Identifier{name}.Sanitize()+" LOGIN "+attrs)
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Errorf("cleanup: drop role %s: %v", name, err)
		}
	})
	return name
}

func TestInWorkspaceQueryWithoutWhereSeesOnlyScopedWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.NewDatabase(t, true)
	admin := testdb.Pool(t, dbURL)
	a := newWorkspace(t, admin, "a")
	b := newWorkspace(t, admin, "b")
	// Superusers bypass row level security, FORCE or not.
	addMembers(t, admin, a, 2)
	addMembers(t, admin, b, 3)

	st := openStore(t, dbURL)
	tenant, err := store.TenantRole(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.ScopeRole(); got != tenant {
		t.Fatalf("ScopeRole() = %q for a superuser, want the database's tenant role %s", got, tenant)
	}

	t.Run("select without where", func(t *testing.T) {
		err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
			if u := currentUser(t, tx); u != tenant {
				t.Errorf("scoped transaction runs as %q, want %s", u, tenant)
			}
			got, err := memberWorkspaces(ctx, tx)
			if err != nil {
				return err
			}
			assertOnly(t, got, a, 2)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("update and delete without where touch only the scoped workspace", func(t *testing.T) {
		err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, "UPDATE errand.workspace_members SET role = 'viewer'")
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 2 {
				t.Errorf("UPDATE without WHERE changed %d rows, want workspace A's 2", tag.RowsAffected())
			}
			tag, err = tx.Exec(ctx, "DELETE FROM errand.workspace_members")
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 2 {
				t.Errorf("DELETE without WHERE removed %d rows, want workspace A's 2", tag.RowsAffected())
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("InWorkspace = %v, want the rollback sentinel back", err)
		}
		if n := countMembers(t, admin, a); n != 2 {
			t.Errorf("workspace A has %d members after rollback, want 2", n)
		}
		var bUntouched int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM errand.workspace_members WHERE workspace_id = $1 AND role = 'member'", b).Scan(&bUntouched); err != nil {
			t.Fatal(err)
		}
		if bUntouched != 3 {
			t.Errorf("workspace B has %d untouched members, want 3", bUntouched)
		}
	})

	// Writes that would put a row into another workspace are refused by the
	// policy's WITH CHECK.
	refused := []struct {
		name string
		sql  string
	}{
		{"insert a row for another workspace", "INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())"},
		{"move a scoped row to another workspace", "UPDATE errand.workspace_members SET workspace_id = $1"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
				called = true
				_, err := tx.Exec(ctx, tc.sql, b)
				return err
			})
			if !called {
				t.Fatal("fn was not called")
			}
			assertPgCode(t, err, sqlInsufficientPrivilege, tc.name)
			if !strings.Contains(err.Error(), "row-level security") {
				t.Errorf("error %q does not name row-level security", err)
			}
			if n := countMembers(t, admin, b); n != 3 {
				t.Errorf("workspace B has %d members, want 3", n)
			}
			if n := countMembers(t, admin, a); n != 2 {
				t.Errorf("workspace A has %d members, want 2", n)
			}
		})
	}
}

func TestTenantRoleFailsClosedWithoutWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	a := newWorkspace(t, admin, "failclosed-"+randomHex(t))
	addMembers(t, admin, a, 2)

	cases := []struct {
		name string
		// earlierTx scopes a committed transaction on the connection first.
		earlierTx bool
		setup     func(t *testing.T, conn *pgx.Conn, tx pgx.Tx)
	}{
		{"workspace id never set", false, func(*testing.T, *pgx.Conn, pgx.Tx) {}},
		{"workspace id set to empty string", false, func(t *testing.T, _ *pgx.Conn, tx pgx.Tx) {
			if _, err := tx.Exec(ctx, "SELECT set_config('app.current_workspace_id', '', true)"); err != nil {
				t.Fatal(err)
			}
		}},
		{"workspace id left over from an earlier transaction on the connection", true, func(t *testing.T, conn *pgx.Conn, _ pgx.Tx) {
			// SET LOCAL in a finished transaction leaves the placeholder
			// defined with value '' on this connection.
			var v string
			if err := conn.QueryRow(ctx, "SELECT current_setting('app.current_workspace_id')").Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != "" {
				t.Fatalf("app.current_workspace_id = %q after the earlier transaction, want ''", v)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if tc.earlierTx {
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "SELECT set_config('app.current_workspace_id', $1, true)", a)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "SELECT set_config('role', errand.tenant_role(), true)"); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, conn, tx)

			got, err := memberWorkspaces(ctx, tx)
			if err != nil {
				t.Fatalf("SELECT without a workspace: %v, want no error", err)
			}
			if len(got) != 0 {
				t.Errorf("SELECT without a workspace saw %d rows, want none", len(got))
			}
			// Naming the workspace explicitly does not help either.
			if n := countMembers(t, tx, a); n != 0 {
				t.Errorf("SELECT ... WHERE workspace_id = A without a workspace saw %d rows, want none", n)
			}
		})
	}

	// The rows are there: the zero counts above come from the policy.
	if n := countMembers(t, admin, a); n != 2 {
		t.Fatalf("superuser sees %d members of A, want 2", n)
	}
}

// badWorkspaceID is an id no transaction can be scoped to, named for how
// a caller got it wrong.
type badWorkspaceID struct{ name, workspaceID string }

// badWorkspaceIDs makes a workspace (existing) and one that is deleted, and
// returns the ways to get a workspace id wrong. Retrying cannot fix any of
// them, so each is ErrWorkspaceNotFound: a job fails at once instead of 25
// times.
func badWorkspaceIDs(t *testing.T, admin queryRower, prefix string) (existing string, cases []badWorkspaceID) {
	t.Helper()
	existing = newWorkspace(t, admin, prefix+"-"+randomHex(t))
	deleted := newWorkspace(t, admin, prefix+"-deleted-"+randomHex(t))
	var gone string
	if err := admin.QueryRow(context.Background(), "DELETE FROM errand.workspaces WHERE id = $1 RETURNING id::text", deleted).Scan(&gone); err != nil {
		t.Fatal(err)
	}
	return existing, []badWorkspaceID{
		{"workspace that does not exist", "6f1c2a3e-0000-4000-8000-000000000001"},
		{"workspace that was deleted", deleted},
		{"workspace id that is not a uuid", "acme"},
		{"workspace id with a typo (one character too many)", existing + "0"},
		{"empty workspace id", ""},
	}
}

func TestInWorkspaceRefusesBadWorkspaceID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	st := openStore(t, dbURL)
	existing, cases := badWorkspaceIDs(t, admin, "bad-id")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			err := st.InWorkspace(ctx, tc.workspaceID, func(pgx.Tx) error {
				called = true
				return nil
			})
			if err == nil {
				t.Fatal("InWorkspace succeeded, want an error")
			}
			if called {
				t.Error("fn ran for a workspace that cannot be scoped to")
			}
			if !errors.Is(err, store.ErrWorkspaceNotFound) {
				t.Errorf("errors.Is(%v, ErrWorkspaceNotFound) = false, want true", err)
			}
		})
	}

	// The failures left nothing behind: the pool still scopes a good id.
	err := st.InWorkspace(ctx, existing, func(tx pgx.Tx) error {
		w, err := store.CurrentWorkspace(ctx, tx)
		if err != nil {
			return err
		}
		if w.ID != existing {
			t.Errorf("WorkspaceInTx = %s, want %s", w.ID, existing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InWorkspace(existing) after failures: %v", err)
	}
}

func TestUnscopeReturnsToErrandsOwnRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.URL(t)
	admin := testdb.Pool(t, dbURL)
	st := openStore(t, dbURL)
	a := newWorkspace(t, admin, "unscope-"+randomHex(t))
	if _, err := admin.Exec(ctx, "INSERT INTO errand.kinds (kind, queue) VALUES ('ping', 'default') ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	var jobID int64
	if err := admin.QueryRow(ctx, "SELECT errand.enqueue(workspace_id => $1, kind => 'ping')", a).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	var sessionUser string
	if err := admin.QueryRow(ctx, "SELECT session_user::text").Scan(&sessionUser); err != nil {
		t.Fatal(err)
	}

	err := pgx.BeginFunc(ctx, st.Pool(), func(tx pgx.Tx) error {
		if err := st.Scope(ctx, tx, a); err != nil {
			return err
		}
		if u := currentUser(t, tx); u != st.ScopeRole() || u == sessionUser {
			t.Errorf("after Scope current_user = %q, want the tenant role %q", u, st.ScopeRole())
		}
		// Scoped, River's table is out of reach (in a savepoint, so the
		// transaction survives the refusal).
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		_, err = sp.Exec(ctx, "UPDATE errand.river_job SET priority = 2 WHERE id = $1", jobID)
		assertPgCode(t, err, sqlInsufficientPrivilege, "scoped UPDATE of river_job")
		if err := sp.Rollback(ctx); err != nil {
			return err
		}

		if err := st.Unscope(ctx, tx); err != nil {
			return err
		}
		var cur, sess, ws string
		if err := tx.QueryRow(ctx, "SELECT current_user::text, session_user::text, current_setting('app.current_workspace_id', true)").Scan(&cur, &sess, &ws); err != nil {
			return err
		}
		if cur != sess || cur != sessionUser {
			t.Errorf("after Unscope current_user = %q, session_user = %q, want both %q", cur, sess, sessionUser)
		}
		if ws != "" {
			t.Errorf("after Unscope app.current_workspace_id = %q, want ''", ws)
		}
		tag, err := tx.Exec(ctx, "UPDATE errand.river_job SET priority = 2 WHERE id = $1", jobID)
		if err != nil {
			return fmt.Errorf("unscoped UPDATE of river_job: %w", err)
		}
		if tag.RowsAffected() != 1 {
			t.Errorf("unscoped UPDATE of river_job changed %d rows, want 1", tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var priority int
	if err := admin.QueryRow(ctx, "SELECT priority FROM errand.river_job WHERE id = $1", jobID).Scan(&priority); err != nil {
		t.Fatal(err)
	}
	if priority != 2 {
		t.Errorf("job priority = %d after the committed update, want 2", priority)
	}
}

// A plain owner role: no superuser, no CREATEROLE, no BYPASSRLS. FORCE row
// level security scopes its own sessions directly.
func TestPlainOwnerRoleIsScopedByForcedRLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminURL := testdb.AdminURL(t)
	role := newRole(t, "errand_owner", "NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
	// errand_test_* with the pid: testdb drops it if this binary is killed.
	dbName := fmt.Sprintf("errand_test_owner%s_%d_1", randomHex(t), os.Getpid())
	adminExec(t, adminURL, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()+" OWNER "+pgx.Identifier{role}.Sanitize())
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: drop database %s: %v", dbName, err)
		}
	})
	ownerURL := withUser(t, testdb.WithDatabase(adminURL, dbName), role)
	superURL := testdb.WithDatabase(adminURL, dbName)

	pool, err := pgxpool.New(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	var super, createRole, bypass bool
	if err := pool.QueryRow(ctx, "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = current_user").Scan(&super, &createRole, &bypass); err != nil {
		t.Fatal(err)
	}
	if super || createRole || bypass {
		t.Fatalf("role %s: superuser %v createrole %v bypassrls %v, want a plain role", role, super, createRole, bypass)
	}
	applied, err := migrations.Up(ctx, pool, nil)
	pool.Close()
	if err != nil {
		t.Fatalf("migrations.Up as a plain owner: %v", err)
	}
	if !slices.Contains(applied, "errand/1") {
		t.Fatalf("migrations.Up applied %v, want errand/1 among them", applied)
	}

	superPool := testdb.Pool(t, superURL)
	var tableOwner string
	if err := superPool.QueryRow(ctx, "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'errand' AND tablename = 'workspace_members'").Scan(&tableOwner); err != nil {
		t.Fatal(err)
	}
	if tableOwner != role {
		t.Fatalf("errand.workspace_members is owned by %s, want %s (the migrating role)", tableOwner, role)
	}

	// errand refuses to scope without a tenant role (job rows would not be
	// isolated: TestOpenWithoutATenantRoleTakesNoLockOnRiversTable); the
	// owner's own sessions are still held to errand's tables' forced row
	// level security, which is what this test checks.
	st, err := store.Open(ctx, ownerURL, store.Options{SkipScopeCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	wa, err := store.EnsureWorkspace(ctx, st, "A", "a")
	if err != nil {
		t.Fatal(err)
	}
	wb, err := store.EnsureWorkspace(ctx, st, "B", "b")
	if err != nil {
		t.Fatal(err)
	}
	a, b := wa.ID, wb.ID

	// Outside a scope the owner can write nothing...
	_, err = st.Pool().Exec(ctx, "INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())", a)
	assertPgCode(t, err, sqlInsufficientPrivilege, "owner INSERT outside any scope")

	for _, w := range []struct {
		id string
		n  int
	}{{a, 2}, {b, 3}} {
		err := st.InWorkspace(ctx, w.id, func(tx pgx.Tx) error {
			addMembers(t, tx, w.id, w.n)
			return nil
		})
		if err != nil {
			t.Fatalf("add members inside InWorkspace(%s): %v", w.id, err)
		}
	}

	// ...and sees nothing, though the rows exist.
	var bare int
	if err := st.Pool().QueryRow(ctx, "SELECT count(*) FROM errand.workspace_members").Scan(&bare); err != nil {
		t.Fatal(err)
	}
	if bare != 0 {
		t.Errorf("owner outside any scope sees %d members, want 0 (FORCE ROW LEVEL SECURITY)", bare)
	}
	var total int
	if err := superPool.QueryRow(ctx, "SELECT count(*) FROM errand.workspace_members").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != 5 {
		t.Fatalf("superuser sees %d members, want 5", total)
	}

	err = st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
		if u := currentUser(t, tx); u != role {
			t.Errorf("scoped transaction runs as %q, want the owner %q (no role switch)", u, role)
		}
		got, err := memberWorkspaces(ctx, tx)
		if err != nil {
			return err
		}
		assertOnly(t, got, a, 2)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	err = st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, gen_random_uuid())", b)
		return err
	})
	assertPgCode(t, err, sqlInsufficientPrivilege, "owner scoped to A inserting a row for B")
	if n := countMembers(t, superPool, b); n != 3 {
		t.Errorf("workspace B has %d members, want 3", n)
	}

	// Unscope drops the workspace again: back to seeing nothing.
	err = pgx.BeginFunc(ctx, st.Pool(), func(tx pgx.Tx) error {
		if err := st.Scope(ctx, tx, b); err != nil {
			return err
		}
		if n := countMembers(t, tx, b); n != 3 {
			t.Errorf("scoped to B the owner sees %d of B's members, want 3", n)
		}
		if err := st.Unscope(ctx, tx); err != nil {
			return err
		}
		if n := countMembers(t, tx, b); n != 0 {
			t.Errorf("after Unscope the owner sees %d of B's members, want 0", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenAsBypassRLSRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Roles first: their cleanup then runs after the database is dropped.
	outsider := newRole(t, "errand_bypass", "NOSUPERUSER BYPASSRLS")
	member := newRole(t, "errand_bypass", "NOSUPERUSER BYPASSRLS")
	dbURL := testdb.NewDatabase(t, true)
	admin := testdb.Pool(t, dbURL)
	tenant, err := store.TenantRole(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	// A BYPASSRLS role errand could really run as: it may use errand's tables
	// and switch to the database's tenant role.
	for _, sql := range []string{
		"GRANT USAGE ON SCHEMA errand TO " + pgx.Identifier{member}.Sanitize(),
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA errand TO " + pgx.Identifier{member}.Sanitize(),
		"GRANT " + pgx.Identifier{tenant}.Sanitize() + " TO " + pgx.Identifier{member}.Sanitize(),
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	a := newWorkspace(t, admin, "a")
	b := newWorkspace(t, admin, "b")
	addMembers(t, admin, a, 1)
	addMembers(t, admin, b, 2)

	t.Run("not a member of the tenant role", func(t *testing.T) {
		st, err := store.Open(ctx, withUser(t, dbURL, outsider), store.Options{})
		if err == nil {
			st.Close()
			t.Fatal("store.Open succeeded for a BYPASSRLS role that cannot switch to the tenant role; tenant queries would see every workspace")
		}
		// It may not even read errand's schema to learn the role's name.
		if !strings.Contains(err.Error(), "tenant role") {
			t.Errorf("error %q does not mention the tenant role", err)
		}
	})

	t.Run("member of the tenant role", func(t *testing.T) {
		st := openStore(t, withUser(t, dbURL, member))
		if got := st.ScopeRole(); got != tenant {
			t.Fatalf("ScopeRole() = %q, want %s", got, tenant)
		}
		err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
			got, err := memberWorkspaces(ctx, tx)
			if err != nil {
				return err
			}
			assertOnly(t, got, a, 1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestPublishKindsAddsAndUpdatesButNeverRemoves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t, testdb.NewDatabase(t, true))

	kindsByName := func(t *testing.T) map[string]store.KindInfo {
		t.Helper()
		kinds, err := store.Kinds(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]store.KindInfo{}
		for _, k := range kinds {
			m[k.Kind] = k
		}
		return m
	}
	updatedAt := func(t *testing.T, kind string) (ts string) {
		t.Helper()
		if err := st.Pool().QueryRow(ctx, "SELECT updated_at::text FROM errand.kinds WHERE kind = $1", kind).Scan(&ts); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	equal := func(a, b store.KindInfo) bool {
		return a.Kind == b.Kind && a.Queue == b.Queue && slices.Equal(a.RequiredArgs, b.RequiredArgs) &&
			a.MaxAttempts == b.MaxAttempts && a.Description == b.Description
	}

	a := store.KindInfo{Kind: "test.a", Queue: "default", RequiredArgs: []string{"to"}, MaxAttempts: 5, Description: "first"}
	b := store.KindInfo{Kind: "test.b", Queue: "default", MaxAttempts: 25}
	if err := store.PublishKinds(ctx, st, []store.KindInfo{a, b}, store.Exact); err != nil {
		t.Fatal(err)
	}
	got := kindsByName(t)
	if len(got) != 2 {
		t.Fatalf("Kinds() = %v, want test.a and test.b", got)
	}
	bWant := b
	bWant.RequiredArgs = []string{} // nil is published as an empty array
	for _, want := range []store.KindInfo{a, bWant} {
		if !equal(got[want.Kind], want) {
			t.Errorf("Kinds()[%s] = %+v, want %+v", want.Kind, got[want.Kind], want)
		}
	}
	aUpdatedAt := updatedAt(t, a.Kind)

	b2 := store.KindInfo{Kind: "test.b", Queue: "emails", RequiredArgs: []string{"to", "subject"}, MaxAttempts: 3, Description: "second"}
	if err := store.PublishKinds(ctx, st, []store.KindInfo{b2}, store.Exact); err != nil {
		t.Fatal(err)
	}
	got = kindsByName(t)
	if _, ok := got[a.Kind]; !ok {
		t.Fatalf("publishing without test.a removed it: %v", got)
	}
	if !equal(got[a.Kind], a) {
		t.Errorf("test.a changed to %+v, want %+v", got[a.Kind], a)
	}
	if !equal(got[b2.Kind], b2) {
		t.Errorf("test.b = %+v, want updated to %+v", got[b2.Kind], b2)
	}
	if len(got) != 2 {
		t.Errorf("Kinds() has %d kinds, want 2", len(got))
	}
	if ts := updatedAt(t, a.Kind); ts != aUpdatedAt {
		t.Errorf("test.a updated_at moved from %s to %s though it was not published again", aUpdatedAt, ts)
	}

	// Publishing b2 again unchanged leaves its row alone.
	b2UpdatedAt := updatedAt(t, b2.Kind)
	if err := store.PublishKinds(ctx, st, []store.KindInfo{b2}, store.Exact); err != nil {
		t.Fatal(err)
	}
	if ts := updatedAt(t, b2.Kind); ts != b2UpdatedAt {
		t.Errorf("republishing an unchanged kind moved updated_at from %s to %s", b2UpdatedAt, ts)
	}
}

func TestEnsureWorkspaceAndForEachWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t, testdb.NewDatabase(t, true))

	first, err := store.EnsureWorkspace(ctx, st, "Acme", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || first.Name != "Acme" || first.Slug != "acme" || first.Plan != "free" || first.CreatedAt.IsZero() {
		t.Fatalf("EnsureWorkspace created %+v", first)
	}
	again, err := store.EnsureWorkspace(ctx, st, "Acme renamed", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("EnsureWorkspace for an existing slug = %+v, want the existing %+v", again, first)
	}
	other, err := store.EnsureWorkspace(ctx, st, "Beta", "beta")
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == first.ID {
		t.Errorf("two slugs share workspace id %s", first.ID)
	}
	third, err := store.EnsureWorkspace(ctx, st, "Gamma", "gamma")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := st.Pool().QueryRow(ctx, "SELECT count(*) FROM errand.workspaces").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("errand.workspaces has %d rows, want 3", n)
	}

	visits := map[string]int{}
	if err := store.ForEachWorkspace(ctx, st, func(id string) error {
		visits[id]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first.ID, other.ID, third.ID} {
		if visits[id] != 1 {
			t.Errorf("workspace %s visited %d times, want once", id, visits[id])
		}
	}
	if len(visits) != 3 {
		t.Errorf("visited %d distinct workspaces, want 3: %v", len(visits), visits)
	}

	stop := errors.New("stop")
	calls := 0
	err = store.ForEachWorkspace(ctx, st, func(string) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn failing on the first workspace: ForEachWorkspace = %v after %d calls, want the error after 1", err, calls)
	}
}

// Racing callers for one slug all get the one workspace (a DO NOTHING +
// SELECT version lost the race to its own snapshot).
func TestEnsureWorkspaceConcurrentCallersGetOneWorkspace(t *testing.T) {
	st, err := store.Open(context.Background(), testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for round := range 10 {
		slug := fmt.Sprintf("race-%d", round)
		ids := make([]string, 8)
		errs := make([]error, 8)
		start := make(chan struct{})
		done := make(chan struct{})
		for i := range ids {
			go func() {
				defer func() { done <- struct{}{} }()
				<-start
				w, err := store.EnsureWorkspace(context.Background(), st, "Race", slug)
				ids[i], errs[i] = w.ID, err
			}()
		}
		close(start)
		for range ids {
			<-done
		}
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("round %d caller %d: id %q err %v, caller 0 got %q", round, i, ids[i], errs[i], ids[0])
			}
		}
	}
}

// Inside a scope the directory shows one tenant too: its own workspace row
// and its own members' user rows, even to a query without WHERE.
func TestInWorkspaceScopesTheDirectoryTables(t *testing.T) {
	ctx := context.Background()
	dbURL := testdb.NewDatabase(t, true)
	admin := testdb.Pool(t, dbURL)
	st := openStore(t, dbURL)
	a := newWorkspace(t, admin, "dir-a")
	b := newWorkspace(t, admin, "dir-b")
	for _, m := range []struct{ ws, email string }{{a, "ann@a.test"}, {b, "bob@b.test"}, {b, "bea@b.test"}} {
		if _, err := admin.Exec(ctx, `WITH u AS (INSERT INTO errand.users (email) VALUES ($2) RETURNING id)
			INSERT INTO errand.workspace_members (workspace_id, user_id) SELECT $1, id FROM u`, m.ws, m.email); err != nil {
			t.Fatal(err)
		}
	}
	err := st.InWorkspace(ctx, a, func(tx pgx.Tx) error {
		var workspaces []string
		rows, err := tx.Query(ctx, `SELECT id::text FROM errand.workspaces`)
		if err != nil {
			return err
		}
		if workspaces, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(workspaces) != 1 || workspaces[0] != a {
			t.Errorf("scoped to A, workspaces visible: %v", workspaces)
		}
		rows, err = tx.Query(ctx, `SELECT email FROM errand.users ORDER BY email`)
		if err != nil {
			return err
		}
		emails, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if strings.Join(emails, ",") != "ann@a.test" {
			t.Errorf("scoped to A, users visible: %v", emails)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Unscoped (the app writing its directory, a scheduler fanning out) sees all.
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM errand.users`).Scan(&n); err != nil || n != 3 {
		t.Errorf("unscoped users: %d %v", n, err)
	}
}

// The shared limiter hands out slots one interval apart, by the database's
// clock, and leaves a schedule alone that is further out than a caller waits.
// The interval is long (10 s) so the assertions hold on a machine however
// busy: ten reservations would have to take 5 s for one to be misjudged.
func TestReserveSlotSpacesRequestsAcrossCallers(t *testing.T) {
	st := openStore(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	const interval = 10 * time.Second
	const slack = 5 * time.Second
	waits := make([]time.Duration, 10)
	var wg sync.WaitGroup
	for i := range waits {
		wg.Go(func() {
			wait, reserved, err := store.ReserveSlot(ctx, st, "test", interval, time.Hour)
			if err != nil || !reserved {
				t.Errorf("reserve: %v reserved %v", err, reserved)
			}
			waits[i] = wait
		})
	}
	wg.Wait()
	slices.Sort(waits)
	for i, w := range waits {
		// Slot i starts i intervals after the first; the calls themselves
		// take a little of the database's time.
		want := time.Duration(i) * interval
		if w > want || w < want-slack {
			t.Errorf("slot %d starts in %s, want %s (at most %s less)", i, w, want, slack)
		}
	}
	// The next free slot is ~100 s out: a caller that waits at most 50 s gets
	// none, and the schedule stays where it was.
	wait, reserved, err := store.ReserveSlot(ctx, st, "test", interval, 50*time.Second)
	if err != nil || reserved || wait < 100*time.Second-slack {
		t.Errorf("a slot ~100s out with a 50s limit: wait %s reserved %v err %v, want not reserved", wait, reserved, err)
	}
	if wait2, reserved, _ := store.ReserveSlot(ctx, st, "test", interval, time.Hour); !reserved || wait2 < wait-slack || wait2 > wait {
		t.Errorf("after a refusal the schedule moved: next slot in %s (reserved %v), want about %s", wait2, reserved, wait)
	}
}

// An older binary restarting during a rolling deploy publishes with Widen:
// it may add what it knows, never take away what a newer one published.
func TestPublishWidenNeverNarrowsTheContract(t *testing.T) {
	st := openStore(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	newer := store.KindInfo{Kind: "test.mail", Queue: "email", RequiredArgs: []string{"to"}, MaxAttempts: 5, Description: "newer",
		ArgEnums: map[string][]string{"template": {"invite", "welcome"}, "mode": {"fast"}}}
	if err := store.PublishKinds(ctx, st, []store.KindInfo{newer}, store.Exact); err != nil {
		t.Fatal(err)
	}
	older := store.KindInfo{Kind: "test.mail", Queue: "default", RequiredArgs: []string{"to", "subject"}, MaxAttempts: 25, Description: "older",
		ArgEnums: map[string][]string{"template": {"invite", "legacy"}}}
	brandNew := store.KindInfo{Kind: "test.other", Queue: "default", RequiredArgs: []string{"x"}, MaxAttempts: 3}
	if err := store.PublishKinds(ctx, st, []store.KindInfo{older, brandNew}, store.Widen); err != nil {
		t.Fatal(err)
	}
	kinds, err := store.Kinds(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.KindInfo{}
	for _, k := range kinds {
		got[k.Kind] = k
	}
	m := got["test.mail"]
	if !slices.Equal(m.RequiredArgs, []string{"to"}) {
		t.Errorf("required %v: the older binary's extra required field narrowed the contract", m.RequiredArgs)
	}
	if !slices.Equal(m.ArgEnums["template"], []string{"invite", "welcome", "legacy"}) {
		t.Errorf("template values %v, want both binaries' values", m.ArgEnums["template"])
	}
	if _, limited := m.ArgEnums["mode"]; limited {
		t.Errorf("mode still limited to %v though the older binary allows any value", m.ArgEnums["mode"])
	}
	if m.Queue != "email" || m.MaxAttempts != 5 || m.Description != "newer" {
		t.Errorf("queue %s attempts %d description %q changed by a widening publish", m.Queue, m.MaxAttempts, m.Description)
	}
	if o := got["test.other"]; !slices.Equal(o.RequiredArgs, []string{"x"}) || o.Queue != "default" {
		t.Errorf("a kind only the older binary knows: %+v, want added as it is", o)
	}
	// Publishing the same again changes nothing, order included.
	if err := store.PublishKinds(ctx, st, []store.KindInfo{newer}, store.Widen); err != nil {
		t.Fatal(err)
	}
	again, _ := store.Kinds(ctx, st)
	for _, k := range again {
		if k.Kind == "test.mail" && !slices.Equal(k.ArgEnums["template"], []string{"invite", "welcome", "legacy"}) {
			t.Errorf("republishing reordered the values: %v", k.ArgEnums["template"])
		}
	}
	// `errand migrate` of the newer binary puts its contract back exactly.
	if err := store.PublishKinds(ctx, st, []store.KindInfo{newer}, store.Exact); err != nil {
		t.Fatal(err)
	}
	kinds, _ = store.Kinds(ctx, st)
	for _, k := range kinds {
		if k.Kind == "test.mail" && (!slices.Equal(k.ArgEnums["template"], []string{"invite", "welcome"}) || k.Queue != "email") {
			t.Errorf("after an exact publish: %+v", k)
		}
	}
}

// The args limit follows the kinds: a replica's start (Widen) only raises
// it, `errand migrate` (Exact) sets it. A value set by hand that is not a
// number, which the contract cannot read either, is replaced.
func TestPublishWidenNeverLowersTheArgsLimit(t *testing.T) {
	st := openStore(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	for _, step := range []struct {
		what string
		n    int
		mode store.Publish
		want string
	}{
		{"a replica with 2 MiB starts", 2097152, store.Widen, "2097152"},
		{"a replica with 1 MiB starts", 1048576, store.Widen, "2097152"},
		{"errand migrate with 1 MiB", 1048576, store.Exact, "1048576"},
		{"a replica with 64 bytes starts", 64, store.Widen, "1048576"},
		{"errand migrate with 64 bytes", 64, store.Exact, "64"},
	} {
		if err := store.PublishMaxArgsBytes(ctx, st, step.n, step.mode); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		var got string
		if err := st.Pool().QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'max_args_bytes'`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != step.want {
			t.Errorf("after %s: max_args_bytes %s, want %s", step.what, got, step.want)
		}
	}
	if _, err := st.Pool().Exec(ctx, `UPDATE errand.settings SET value = '1 MiB' WHERE name = 'max_args_bytes'`); err != nil {
		t.Fatal(err)
	}
	if err := store.PublishMaxArgsBytes(ctx, st, 4096, store.Widen); err != nil {
		t.Fatalf("a replica starting over a hand-set '1 MiB': %v", err)
	}
	var got string
	if err := st.Pool().QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'max_args_bytes'`).Scan(&got); err != nil || got != "4096" {
		t.Errorf("a hand-set '1 MiB' after a replica with 4096 started: %q %v, want 4096", got, err)
	}
}

// Migration 036 drops River's GIN indexes on args and metadata; the daemon
// tells River's reindexer only of the indexes ExistingIndexes finds, so one
// a team creates again is kept up again and a dropped one is not warned of.
func TestExistingIndexesSeesRiversGINIndexesDroppedAndCreatedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t, testdb.NewDatabase(t, true))
	defaults := river.ReindexerIndexNamesDefault()
	got, err := store.ExistingIndexes(ctx, st.Pool(), migrations.Schema, defaults)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(defaults), func(n string) bool {
		return n == "river_job_args_index" || n == "river_job_metadata_index"
	})
	if !slices.Equal(got, want) {
		t.Fatalf("after migrating, River's indexes = %v, want %v (River's defaults without its two GIN indexes)", got, want)
	}
	if _, err := st.Pool().Exec(ctx, `CREATE INDEX river_job_args_index ON errand.river_job USING gin (args)`); err != nil {
		t.Fatal(err)
	}
	got, err = store.ExistingIndexes(ctx, st.Pool(), migrations.Schema, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "river_job_args_index") || slices.Contains(got, "river_job_metadata_index") || len(got) != len(want)+1 {
		t.Fatalf("with river_job_args_index created again, River's indexes = %v", got)
	}
	// An index of that name in another schema is not River's.
	if got, err := store.ExistingIndexes(ctx, st.Pool(), "public", defaults); err != nil || len(got) != 0 {
		t.Fatalf("indexes of River's names in schema public = %v, %v; want none", got, err)
	}
}
