package kubernetes_test

import (
	"context"
	"encoding/json"
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
// returns the number KEDA reads, counts only due jobs a replica may take
// outside the email queue, stops at its cap, reads the status index rather than the table,
// and runs as the read-only role docs/kubernetes.md creates, connected by
// the parameters the TriggerAuthentication passes.
func TestKEDAQueryCountsDueJobsFromTheStatusIndex(t *testing.T) {
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

	// The status is a literal, so the partial status index serves the
	// count however many completed jobs are kept.
	var out []byte
	if err := pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+query).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain: %v in %s", err, out)
	}
	usesIndex := false
	plans[0].Plan.walk(func(n planNode) {
		if n.Type == "Seq Scan" && n.Relation == "river_job" {
			t.Errorf("the query reads all of river_job:\n%s", out)
		}
		// Either partial index leaves completed jobs out; the planner
		// picks by cost.
		if strings.Contains(n.Type, "Index") && (n.Index == "river_job_status_idx" || n.Index == "river_job_kind_status_idx") &&
			strings.Contains(n.IndexCond, "'pending'") {
			usesIndex = true
		}
	})
	if !usesIndex {
		t.Errorf("the query does not read a partial status index (river_job_status_idx) by status:\n%s", out)
	}

	// A backlog past the cap counts as the cap: the cost stays bounded.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.river_job (state, created_at, scheduled_at, args, kind, metadata, queue)
		SELECT 'available', now(), now() - interval '1 second', '{}', 'ping', '{}', 'webhooks' FROM generate_series(1, 2000)`); err != nil {
		t.Fatal(err)
	}
	want := 2037.0
	if c := regexp.MustCompile(`(?i)\bLIMIT\s+(\d+)`).FindStringSubmatch(query); c != nil {
		want, _ = strconv.ParseFloat(c[1], 64)
	}
	if n := count(pool); n != want {
		t.Errorf("with 2,037 due jobs the query counts %v, want %v", n, want)
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

// planNode is what the check reads of a node of EXPLAIN's JSON.
type planNode struct {
	Type      string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Index     string     `json:"Index Name"`
	IndexCond string     `json:"Index Cond"`
	Plans     []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}
