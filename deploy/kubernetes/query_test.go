package kubernetes_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
)

func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }

// The ScaledObject's query, as keda.yaml has it, on a migrated errand
// database that looks like production (many completed jobs, a backlog in
// several queues, jobs scheduled for later, running and failed ones): it
// returns the number KEDA reads, counts only due jobs a replica may start
// outside the email queue (not a capped workspace's flood), stops at its
// cap, reads indexes rather than the table, and runs as the role
// docs/kubernetes.md creates, connected by the parameters the
// TriggerAuthentication passes.
func TestKEDAQueryCountsTheJobsAReplicaMayStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, errs := decode(t, readManifests(t, nil))
	if len(errs) > 0 {
		t.Fatal(errorsText(errs))
	}
	query := m.so.Spec.Triggers[0].Metadata["query"]
	dbURL, pool := errandtest.MigratedDB(t)

	for _, sql := range []string{
		// 20,000 completed over the last 20 hours.
		`INSERT INTO errand.river_job (state, attempt, attempted_at, created_at, finalized_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'completed', 1, t, t, t, t, '{}', (ARRAY['ping', 'email.send', 'webhook.deliver', 'invoice.render'])[1 + g % 4], '{}', 'default'
		FROM generate_series(1, 20000) AS g, LATERAL (SELECT now() - interval '20 hours' + g * interval '3 seconds') AS a(t)`,
		// Due: 30 in default, 7 in documents (counted), 12 in email (not).
		`INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'available', now() - interval '1 minute', now() - g * interval '1 second', '{}',
		       CASE WHEN g <= 30 THEN 'ping' WHEN g <= 37 THEN 'invoice.render' ELSE 'email.send' END, '{}',
		       CASE WHEN g <= 30 THEN 'default' WHEN g <= 37 THEN 'documents' ELSE 'email' END
		FROM generate_series(1, 49) AS g`,
		// Due but parked in River's 'pending' state (a paused workspace's,
		// migrations/016_operations.sql): no replica may take them.
		`INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'pending', now() - interval '1 minute', now() - interval '1 minute', '{}', 'ping',
		       '{"errand:paused": "available"}', 'default'
		FROM generate_series(1, 25)`,
		// Not yet due: 10 scheduled, 5 to retry, in an hour.
		`INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT CASE WHEN g <= 10 THEN 'scheduled' ELSE 'retryable' END::errand.river_job_state,
		       now(), now() + interval '1 hour', '{}', 'ping', '{}', 'default'
		FROM generate_series(1, 15) AS g`,
		// Running and failed.
		`INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'running', 1, now(), '{nobody}', now(), now(), '{}', 'ping', '{}', 'default' FROM generate_series(1, 4)`,
		`INSERT INTO errand.river_job (state, attempt, attempted_at, created_at, finalized_at, scheduled_at, args, kind, metadata, queue, errors)
		SELECT 'discarded', 3, now(), now(), now(), now(), '{}', 'ping', '{}', 'default', ARRAY['{"error": "boom"}'::jsonb]
		FROM generate_series(1, 6)`,
		`ANALYZE errand.river_job`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	// KEDA's scaler reads one float64 through pgx's pool.
	count := func(db interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) float64 {
		t.Helper()
		var n float64
		if err := db.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatalf("KEDA's query fails: %v\n%s", err, query)
		}
		return n
	}
	if n := count(pool); n != 37 {
		t.Errorf("the query counts %v jobs; want the 37 due, not parked, outside the email queue", n)
	}

	// A workspace whose plan caps it at 1 and that runs one job: its flood
	// of 700 is not a backlog more replicas would start.
	var capped string
	if err := pool.QueryRow(ctx, `
		WITH p AS (INSERT INTO errand.plans (plan, concurrency) VALUES ('one-at-a-time', 1) RETURNING plan)
		INSERT INTO errand.workspaces (name, slug, plan) SELECT 'Capped', 'capped', plan FROM p RETURNING id::text`).Scan(&capped); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, attempt, attempted_at, attempted_by, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT CASE WHEN g = 0 THEN 'running' ELSE 'available' END::errand.river_job_state, CASE WHEN g = 0 THEN 1 ELSE 0 END,
		       CASE WHEN g = 0 THEN now() END, CASE WHEN g = 0 THEN '{r}'::text[] END, now(), now() - interval '1 minute', '{}', 'ping',
		       jsonb_build_object('workspace_id', $1::uuid), 'webhooks'
		FROM generate_series(0, 700) AS g`, capped); err != nil {
		t.Fatal(err)
	}
	if n := count(pool); n != 37 {
		t.Errorf("with a capped workspace's flood of 700 the query counts %v, want 37: none of the flood may start", n)
	}

	// It reads indexes, never the whole table (this transaction's own
	// statistics, which nothing else touches).
	stats, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count(stats)
	var seq, idx int64
	if err := stats.QueryRow(ctx, `SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'errand.river_job'::regclass`).Scan(&seq, &idx); err != nil {
		t.Fatal(err)
	}
	if seq != 0 || idx == 0 {
		t.Errorf("the query made %d sequential scans and %d index scans of river_job; want none and some", seq, idx)
	}
	if err := stats.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// A backlog past the cap counts as the cap: the cost stays bounded.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'available', now(), now() - interval '1 second', '{}', 'ping', '{}', 'webhooks' FROM generate_series(1, 2000)`); err != nil {
		t.Fatal(err)
	}
	want := 2037.0
	if c, ok := queryCap(query); ok {
		want, _ = strconv.ParseFloat(c, 64)
	}
	if n := count(pool); n != want {
		t.Errorf("with 2,037 startable jobs the query counts %v, want %v", n, want)
	}

	// The read-only role of docs/kubernetes.md may run it, and nothing
	// else is needed (a transaction rolled back: roles are cluster-wide).
	roleSQL := docsRoleSQL(t)
	role := fmt.Sprintf("errand_keda_test_%d", time.Now().UnixNano())
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // nothing of it is kept
	if _, err := tx.Exec(ctx, strings.ReplaceAll(roleSQL, "errand_keda", role)); err != nil {
		t.Fatalf("docs/kubernetes.md's role SQL: %v\n%s", err, roleSQL)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
		t.Fatal(err)
	}
	if n := count(tx); n != want {
		t.Errorf("as the read-only role the query counts %v, want %v", n, want)
	}
	for _, sql := range []string{"SELECT args FROM errand.jobs LIMIT 1", "SELECT count(*) FROM errand.river_job"} {
		sp, err := tx.Begin(ctx) // a savepoint: the refusal aborts only it
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sp.Exec(ctx, sql); err == nil {
			t.Errorf("KEDA's role may run %q; docs/kubernetes.md should grant it the query's columns only", sql)
		}
		if err := sp.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// The TriggerAuthentication's parameters are the ones KEDA joins into a
	// keyword/value connection string; with this database's values they
	// connect.
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(dbURL)
	values := map[string]string{
		"host":     "host=" + cfg.Host,
		"port":     "port=" + strconv.Itoa(int(cfg.Port)),
		"userName": "user=" + cfg.User,
		"dbName":   "dbname=" + cfg.Database,
		"sslmode":  "sslmode=" + cmpOr(u.Query().Get("sslmode"), "prefer"),
		"password": "password=" + cfg.Password,
	}
	var conn []string
	for _, r := range m.ta.Spec.SecretTargetRef {
		kv, ok := values[r.Parameter]
		if !ok {
			t.Fatalf("TriggerAuthentication parameter %q is not one of KEDA's postgresql parameters", r.Parameter)
		}
		if strings.HasSuffix(kv, "=") {
			continue // this database has no password
		}
		conn = append(conn, kv)
	}
	kedaPool, err := pgxpool.New(ctx, strings.Join(conn, " "))
	if err != nil {
		t.Fatal(err)
	}
	defer kedaPool.Close()
	if n := count(kedaPool); n != want {
		t.Errorf("through KEDA's connection the query counts %v, want %v", n, want)
	}
}

// docsRoleSQL is the SQL block of docs/kubernetes.md that creates KEDA's
// role.
func docsRoleSQL(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(raw), -1) {
		if strings.Contains(block[1], "CREATE ROLE errand_keda") {
			return block[1]
		}
	}
	t.Fatal("docs/kubernetes.md has no ```sql block with CREATE ROLE errand_keda")
	return ""
}
