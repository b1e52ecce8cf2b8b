package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// Old logs go, in batches; what is recent or still in use stays.
func TestPruneLogsKeepsWhatIsRecentOrInUse(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var a, b string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'prune-a') RETURNING id`).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('B', 'prune-b') RETURNING id`).Scan(&b); err != nil {
		t.Fatal(err)
	}
	old, recent := "now() - interval '40 days'", "now() - interval '1 day'"
	// An unfinished job, whose email and webhook message must stay.
	var live int64
	if err := pool.QueryRow(ctx, `INSERT INTO errand.river_job (args, kind, metadata, queue, state)
		VALUES ('{}', 'email.send', jsonb_build_object('workspace_id', $1::uuid), 'email', 'retryable') RETURNING id`, a).Scan(&live); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []string{a, b} {
		exec(`INSERT INTO errand.emails (workspace_id, template, status, created_at) VALUES ($1, 'invite', 'sent', `+old+`), ($1, 'invite', 'sent', `+recent+`)`, ws)
		exec(`INSERT INTO errand.webhook_messages (id, workspace_id, event_type, body, created_at)
			VALUES (gen_random_uuid(), $1, 'old.event', '{}', `+old+`), (gen_random_uuid(), $1, 'new.event', '{}', `+recent+`)`, ws)
		exec(`INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, latency_ms, created_at)
			SELECT $1, gen_random_uuid(), gen_random_uuid(), 1, 1, 5, t FROM (VALUES (`+old+`), (`+old+`), (`+old+`), (`+recent+`)) AS v(t)`, ws)
	}
	exec(`INSERT INTO errand.emails (workspace_id, template, status, job_id, created_at) VALUES ($1, 'invite', 'queued', $2, `+old+`)`, a, live)
	var pendingMessage string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.webhook_messages (workspace_id, event_type, body, created_at)
		VALUES ($1, 'replayed.event', '{}', `+old+`) RETURNING id::text`, a).Scan(&pendingMessage); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO errand.river_job (args, kind, metadata, queue, state)
		VALUES (jsonb_build_object('message_id', $2::text, 'endpoint_id', gen_random_uuid()), 'webhook.deliver',
		        jsonb_build_object('workspace_id', $1::uuid), 'webhooks', 'available')`, a, pendingMessage)
	var invoice string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency)
		VALUES ($1, 'P-1', 'Ann', 'EUR') RETURNING id::text`, a).Scan(&invoice); err != nil {
		t.Fatal(err)
	}
	// Three old versions: the latest stays whatever its age.
	for v := 1; v <= 3; v++ {
		exec(`INSERT INTO errand.invoice_documents (invoice_id, workspace_id, version, pdf, sha256, size_bytes, pages, created_at)
			VALUES ($1, $2, $3, $4::bytea, sha256($4::bytea), length($4::bytea), 1, `+old+`)`, invoice, a, v, []byte{byte(v)})
	}
	exec(`INSERT INTO errand.schedule_runs (name, period, job_id, created_at) VALUES ('digests', now() - interval '40 days', 1, ` + old + `), ('digests', now(), 2, now())`)

	// A batch of 2: the three old attempts of each workspace take two calls.
	n, err := store.PruneLogs(ctx, pool, 30*24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n["webhook_attempts"] != 2 {
		t.Errorf("first call deleted %d attempts, want the batch of 2", n["webhook_attempts"])
	}
	for range 5 {
		if _, err := store.PruneLogs(ctx, pool, 30*24*time.Hour, 2); err != nil {
			t.Fatal(err)
		}
	}
	count := func(sql string, args ...any) int {
		t.Helper()
		var c int
		if err := pool.QueryRow(ctx, sql, args...).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	checks := []struct {
		what string
		sql  string
		args []any
		want int
	}{
		{"emails left (A's recent and the unfinished job's, B's recent)", `SELECT count(*) FROM errand.emails`, nil, 3},
		{"the unfinished job's email", `SELECT count(*) FROM errand.emails WHERE job_id = $1`, []any{live}, 1},
		{"webhook messages left (two recent, one with a pending delivery)", `SELECT count(*) FROM errand.webhook_messages`, nil, 3},
		{"the message with a pending delivery", `SELECT count(*) FROM errand.webhook_messages WHERE id = $1::uuid`, []any{pendingMessage}, 1},
		{"webhook attempts left (one recent each)", `SELECT count(*) FROM errand.webhook_attempts`, nil, 2},
		{"invoice versions left (the latest)", `SELECT count(*) FROM errand.invoice_documents WHERE version = 3`, nil, 1},
		{"invoice versions in all", `SELECT count(*) FROM errand.invoice_documents`, nil, 1},
		{"schedule runs left (today's)", `SELECT count(*) FROM errand.schedule_runs`, nil, 1},
	}
	for _, c := range checks {
		if got := count(c.sql, c.args...); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
}

func TestPruneLogsRefusesBadArguments(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		keep  time.Duration
		batch int
		want  string
	}{
		{"keeping nothing", 0, 10, "keep must be a positive interval"},
		{"a negative keep", -time.Hour, 10, "keep must be a positive interval"},
		{"a batch of zero", time.Hour, 0, "batch must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.PruneLogs(ctx, pool, tc.keep, tc.batch)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, tc.want) {
				t.Errorf("got %v, want 22023 saying %q", err, tc.want)
			}
		})
	}
}

// As a plain owner (managed PostgreSQL), row level security is forced on
// errand itself: the pruning scopes itself to each workspace and still finds
// the old rows, and leaves the caller unscoped.
func TestPruneLogsUnderAPlainOwner(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, testdb.PlainOwnerDatabase(t, true))
	ctx := context.Background()
	var ws string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('A', 'owner-a') RETURNING id`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	scoped := func(sql string) int {
		t.Helper()
		var n int
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, ws); err != nil {
				return err
			}
			return tx.QueryRow(ctx, sql, ws).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	scoped(`WITH i AS (INSERT INTO errand.emails (workspace_id, template, status, created_at)
		VALUES ($1, 'invite', 'sent', now() - interval '40 days'), ($1, 'invite', 'sent', now()) RETURNING 1)
		SELECT count(*) FROM i`)
	n, err := store.PruneLogs(ctx, pool, 30*24*time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n["emails"] != 1 {
		t.Errorf("deleted %d emails, want the old one", n["emails"])
	}
	if left := scoped(`SELECT count(*) FROM errand.emails WHERE workspace_id = $1`); left != 1 {
		t.Errorf("%d emails left, want the recent one", left)
	}
	var scope string
	if err := pool.QueryRow(ctx, `SELECT coalesce(current_setting('app.current_workspace_id', true), '')`).Scan(&scope); err != nil {
		t.Fatal(err)
	}
	if scope != "" {
		t.Errorf("the caller is left scoped to %q", scope)
	}
}

// A deleted workspace's logs are pruned too (they were kept forever: the
// pruning walked only errand.workspaces), its latest invoice version
// included, and the note of its deletion goes once nothing of it is left;
// a live workspace's latest version stays. Each schedule entry's latest run
// stays whatever its age (the leader backfills only an entry that has run
// before), older ones go.
// execAndCount are a test's two ways to run SQL on pool: a statement that
// must succeed, and a count.
func execAndCount(t *testing.T, pool *pgxpool.Pool) (exec func(string, ...any), count func(string, ...any) int) {
	ctx := context.Background()
	exec = func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	count = func(sql string, args ...any) int {
		t.Helper()
		var c int
		if err := pool.QueryRow(ctx, sql, args...).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	return exec, count
}

func TestPruneLogsReachesDeletedWorkspacesAndKeepsEachEntrysLastRun(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	exec, count := execAndCount(t, pool)
	old, recent := "now() - interval '40 days'", "now() - interval '1 day'"
	ids := map[string]string{}
	for _, slug := range []string{"gone", "live"} {
		var ws, invoice string
		if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ($1, $1) RETURNING id::text`, slug).Scan(&ws); err != nil {
			t.Fatal(err)
		}
		ids[slug] = ws
		exec(`INSERT INTO errand.emails (workspace_id, template, status, created_at) VALUES ($1, 'invite', 'sent', `+old+`), ($1, 'invite', 'sent', `+recent+`)`, ws)
		exec(`INSERT INTO errand.webhook_messages (id, workspace_id, event_type, body, created_at) VALUES (gen_random_uuid(), $1, 'old.event', '{}', `+old+`)`, ws)
		exec(`INSERT INTO errand.webhook_attempts (workspace_id, message_id, endpoint_id, job_id, attempt, latency_ms, created_at)
			VALUES ($1, gen_random_uuid(), gen_random_uuid(), 1, 1, 5, `+old+`)`, ws)
		if err := pool.QueryRow(ctx, `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency)
			VALUES ($1, 'P-1', 'Ann', 'EUR') RETURNING id::text`, ws).Scan(&invoice); err != nil {
			t.Fatal(err)
		}
		exec(`INSERT INTO errand.invoice_documents (invoice_id, workspace_id, version, pdf, sha256, size_bytes, pages, created_at)
			VALUES ($1, $2, 1, '\x01'::bytea, sha256('\x01'::bytea), 1, 1, `+old+`)`, invoice, ws)
	}
	exec(`INSERT INTO errand.schedule_runs (name, period, job_id, created_at) VALUES
		('usage_reports', now() - interval '40 days', 1, ` + old + `),
		('digests', now() - interval '41 days', 2, ` + old + `), ('digests', now() - interval '40 days', 3, ` + old + `)`)
	exec(`DELETE FROM errand.workspaces WHERE id = $1`, ids["gone"])
	if n := count(`SELECT count(*) FROM errand.deleted_workspaces WHERE id = $1`, ids["gone"]); n != 1 {
		t.Fatalf("the deleted workspace is noted %d times, want once", n)
	}

	prune := func() {
		t.Helper()
		if _, err := store.PruneLogs(ctx, pool, 30*24*time.Hour, 100); err != nil {
			t.Fatal(err)
		}
	}
	prune()
	// Counted as errand's superuser, which row level security does not hide
	// rows from.
	of := func(table, ws string) int {
		t.Helper()
		return count(`SELECT count(*) FROM errand.`+table+` WHERE workspace_id = $1`, ws)
	}
	for _, c := range []struct {
		table          string
		gone, liveLeft int
	}{{"emails", 1, 1}, {"webhook_messages", 0, 0}, {"webhook_attempts", 0, 0}, {"invoice_documents", 0, 1}} {
		if g, l := of(c.table, ids["gone"]), of(c.table, ids["live"]); g != c.gone || l != c.liveLeft {
			t.Errorf("%s left: deleted workspace %d (want %d), live workspace %d (want %d)", c.table, g, c.gone, l, c.liveLeft)
		}
	}
	if n := count(`SELECT count(*) FROM errand.deleted_workspaces WHERE id = $1`, ids["gone"]); n != 1 {
		t.Errorf("the deleted workspace's note went while its recent email is kept")
	}
	exec(`UPDATE errand.emails SET created_at = `+old+` WHERE workspace_id = $1`, ids["gone"])
	prune()
	if n := of("emails", ids["gone"]); n != 0 {
		t.Errorf("the deleted workspace's email, now old, is still there")
	}
	if n := count(`SELECT count(*) FROM errand.deleted_workspaces`); n != 0 {
		t.Errorf("%d deleted workspaces still noted with nothing of them left", n)
	}
	if runs := count(`SELECT count(*) FROM errand.schedule_runs WHERE job_id IN (1, 3)`) + 10*count(`SELECT count(*) FROM errand.schedule_runs WHERE job_id = 2`); runs != 2 {
		t.Errorf("schedule runs left: code %d, want each entry's latest (usage_reports' and digests' newer) and not digests' older", runs)
	}
}

// errand.workspaces may be a view over the app's own table (README,
// "Tenants"); a view has no triggers, so the app attaches errand's three
// delete triggers to its own table, as the README shows. Deleting a tenant
// there then fails its waiting jobs, and its logs go after the retention
// like a deleted table row's. Without the triggers nothing noted the
// deletion and its logs stayed for good.
func TestAViewDirectoryWithErrandsDeleteTriggersPrunesADeletedWorkspacesLogs(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))
	ctx := context.Background()
	exec, count := execAndCount(t, pool)
	// The README's recipe, word for word in its statements.
	exec(`CREATE SCHEMA app`)
	exec(`CREATE TABLE app.workspaces (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, slug text UNIQUE NOT NULL,
		plan text NOT NULL DEFAULT 'free', stripe_customer_id text, created_at timestamptz NOT NULL DEFAULT now())`)
	exec(`DROP TABLE errand.workspaces`)
	exec(`CREATE VIEW errand.workspaces AS SELECT id, name, slug, plan, stripe_customer_id, created_at FROM app.workspaces`)
	exec(`CREATE TRIGGER errand_workspace_deleted AFTER DELETE ON app.workspaces
		FOR EACH ROW EXECUTE FUNCTION errand.workspace_deleted()`)
	exec(`CREATE TRIGGER errand_webhook_workspace_deleted AFTER DELETE ON app.workspaces
		FOR EACH ROW EXECUTE FUNCTION errand.webhook_workspace_deleted()`)
	exec(`CREATE TRIGGER errand_note_deleted_workspace AFTER DELETE ON app.workspaces
		FOR EACH ROW EXECUTE FUNCTION errand.note_deleted_workspace()`)
	exec(`SELECT errand.grant_tenant('errand.workspaces', 'SELECT')`)

	var ws string
	if err := pool.QueryRow(ctx, `INSERT INTO app.workspaces (name, slug) VALUES ('Acme', 'acme') RETURNING id::text`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	// Job code (the tenant role, scoped) reads its workspace through the
	// view, as email.send does for the name.
	st, err := store.Open(ctx, pool.Config().ConnString(), store.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.InWorkspace(ctx, ws, func(tx pgx.Tx) error {
		var name string
		return tx.QueryRow(ctx, `SELECT name FROM errand.workspaces WHERE id = $1`, ws).Scan(&name)
	}); err != nil {
		t.Errorf("a scoped transaction reading the view after the README's grant: %v", err)
	}
	exec(`INSERT INTO errand.river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags)
		VALUES ('{}', 'ping', 25, jsonb_build_object('workspace_id', $1::uuid), 1, 'default', now() + interval '1 hour', 'scheduled', '{}')`, ws)
	exec(`INSERT INTO errand.emails (workspace_id, template, status, created_at) VALUES ($1, 'invite', 'sent', now() - interval '40 days')`, ws)
	exec(`DELETE FROM app.workspaces WHERE id = $1`, ws)
	if n := count(`SELECT count(*) FROM errand.jobs WHERE workspace_id = $1 AND status = 'failed'`, ws); n != 1 {
		t.Errorf("the deleted tenant's waiting job: %d failed, want 1", n)
	}
	if _, err := store.PruneLogs(ctx, pool, 30*24*time.Hour, 100); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM errand.emails WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("the deleted tenant's 40-day-old email: %d left after pruning at 30 days, want 0", n)
	}
}
