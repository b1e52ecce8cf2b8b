// Package testdb gives each test package its own migrated database: on the
// server DATABASE_URL points at when it is set, otherwise on a private
// PostgreSQL started for the test binary. Packages run in parallel without
// touching each other's data.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/internal/localpg"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Test-binary-wide state, set once by Main before any test runs.
var (
	adminURL string
	pkgURL   string
	counter  atomic.Int64
)

// Main is a test package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
func Main(m *testing.M) int {
	ctx := context.Background()
	var server *localpg.Server
	adminURL = os.Getenv("DATABASE_URL")
	if adminURL == "" {
		var err error
		server, err = localpg.Start(ctx, localpg.Options{Ephemeral: true, BinDir: os.Getenv("ERRAND_PG_BINDIR")})
		if err != nil {
			fmt.Fprintln(os.Stderr, "testdb: no DATABASE_URL and no local PostgreSQL could be started:", err)
			return 1
		}
		adminURL = server.URL("postgres")
	}
	code := func() int {
		dropStale(ctx)
		name := fmt.Sprintf("errand_test_%s_%d", sanitize(strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")), os.Getpid())
		u, err := createDatabase(ctx, name, true)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testdb:", err)
			return 1
		}
		pkgURL = u
		defer dropDatabase(ctx, name)
		return m.Run()
	}()
	if server != nil {
		_ = server.Stop()
	}
	return code
}

// URL is the package's migrated database.
func URL(t testing.TB) string {
	t.Helper()
	if pkgURL == "" {
		t.Fatal("testdb: call testdb.Main from TestMain")
	}
	return pkgURL
}

// PackageURL is URL for code without a testing.TB (examples); "" before
// Main has run.
func PackageURL() string { return pkgURL }

// Fresh creates a database (migrated or empty) for code without a
// testing.TB (examples); drop removes it.
func Fresh(migrate bool) (url string, drop func(), err error) {
	name := fmt.Sprintf("errand_test_ex_%d_%d", os.Getpid(), counter.Add(1))
	u, err := createDatabase(context.Background(), name, migrate)
	if err != nil {
		return "", nil, err
	}
	return u, func() { dropDatabase(context.Background(), name) }, nil
}

// AdminURL connects to the server's postgres database as a superuser.
func AdminURL(t testing.TB) string {
	t.Helper()
	if adminURL == "" {
		t.Fatal("testdb: call testdb.Main from TestMain")
	}
	return adminURL
}

// NewDatabase creates a database of the test's own, migrated or empty,
// dropped when the test ends.
func NewDatabase(t testing.TB, migrate bool) string {
	t.Helper()
	name := fmt.Sprintf("errand_test_%s_%d_%d", sanitize(t.Name()), os.Getpid(), counter.Add(1))
	if len(name) > 63 {
		name = fmt.Sprintf("errand_test_x_%d_%d", os.Getpid(), counter.Add(1))
	}
	u, err := createDatabase(context.Background(), name, migrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabase(context.Background(), name) })
	return u
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// WithDatabase returns url with its database replaced.
func WithDatabase(rawURL, db string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.Path = "/" + db
	return u.String()
}

// WithParam returns url with the query parameter key set to value, whether
// or not url already has a query (DATABASE_URL may come with or without
// ?sslmode=...).
func WithParam(rawURL, key, value string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	q := u.Query()
	q.Set(key, value)
	// Spaces as %20: pgx decodes the query's values as a path, not a form
	// ("+" stays "+"); a "+" in a value is already %2B.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

func createDatabase(ctx context.Context, name string, migrate bool) (string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	defer conn.Close(ctx)
	if err := store.CreateDatabase(ctx, conn, name); err != nil {
		return "", err
	}
	u := WithDatabase(adminURL, name)
	if migrate {
		pool, err := pgxpool.New(ctx, u)
		if err != nil {
			return "", err
		}
		defer pool.Close()
		if _, err := migrations.Up(ctx, pool, nil); err != nil {
			return "", err
		}
	}
	return u, nil
}

func dropDatabase(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_ = store.DropDatabase(ctx, conn, name)
}

var stalePID = regexp.MustCompile(`^errand_test_.*?_(\d+)(_\d+)?$`)

// dropStale drops databases left by test binaries that were killed.
func dropStale(ctx context.Context) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	names, err := store.DatabasesLike(ctx, conn, `errand\_test\_%`)
	if err != nil {
		conn.Close(ctx)
		return
	}
	conn.Close(ctx)
	for _, n := range names {
		m := stalePID.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH {
			dropDatabase(ctx, n)
		}
	}
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 24 {
		out = out[:24]
	}
	return out
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}

// PlainOwnerDatabase creates a database owned by a role of its own that is
// what managed PostgreSQL gives errand: a plain owner (LOGIN, no superuser,
// no BYPASSRLS, no CREATEROLE, no CREATEDB), so forced row level security
// scopes errand itself. It returns a URL that connects as that owner; with
// migrate the owner has run the migrations. Both are dropped when the test
// ends.
func PlainOwnerDatabase(t testing.TB, migrate bool) string {
	t.Helper()
	ctx := context.Background()
	n := counter.Add(1)
	// A random part too: a role outlives a crashed run (the sweep drops
	// stale databases, not roles) and a later process may get its pid.
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	role := fmt.Sprintf("errand_owner_%d_%d_%s", os.Getpid(), n, hex.EncodeToString(suffix))
	name := fmt.Sprintf("errand_test_owner_%d_%d", os.Getpid(), n)
	conn, err := pgx.Connect(ctx, AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{createLoginRole(role), createDatabaseOwnedBy(name, role)} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		dropDatabase(context.Background(), name)
		c, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), dropRoleIfExists(role)); err != nil {
			t.Errorf("cleanup: drop role %s: %v", role, err)
		}
	})
	u, err := url.Parse(WithDatabase(adminURL, name))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	ownerURL := u.String()
	if migrate {
		pool := Pool(t, ownerURL)
		if _, err := migrations.Up(ctx, pool, nil); err != nil {
			t.Fatalf("migrate as a plain owner: %v", err)
		}
		pool.Close()
	}
	return ownerURL
}

// CreateTenantRole does what the README asks an administrator to do for a
// plain owner that may not create roles (PlainOwnerDatabase): create the
// migrated database's tenant role and grant it to errand's role, so that
// errand sets it up when it next opens the database. The role is dropped
// when the test ends.
func CreateTenantRole(t testing.TB, ownerURL string) string {
	t.Helper()
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	var role, errandRole string
	err = owner.QueryRow(ctx, tenantRoleAndUser).Scan(&role, &errandRole)
	owner.Close(ctx)
	if err != nil {
		t.Fatalf("tenant role name (migrate first): %v", err)
	}
	u, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	admin, err := pgx.Connect(ctx, AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, sql := range []string{createNologinRole(role), grantRole(role, errandRole)} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		// Its privileges live in the test's database: drop them there
		// first (the database may already be gone), then the role.
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, WithDatabase(adminURL, dbName)); err == nil {
			_, _ = c.Exec(ctx, dropOwnedBy(role))
			c.Close(ctx)
		}
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, dropRoleIfExists(role)); err != nil {
			t.Errorf("cleanup: drop role %s: %v", role, err)
		}
	})
	return role
}

// ExplainedConn is a connection whose statements, nested ones included,
// send their plans with actual row counts as notices: plans() returns
// those received since the last reset(). It skips the test where
// auto_explain cannot be loaded (not a superuser).
func ExplainedConn(t *testing.T, url string, settings ...string) (conn *pgx.Conn, plans func() []string, reset func()) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, n.Message)
	}
	conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, loadAutoExplain); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			t.Skipf("reading nested plans needs auto_explain, which only a superuser may load: %v", err)
		}
		t.Fatal(err)
	}
	for _, set := range append(autoExplainSettings(), settings...) {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	plans = func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	reset = func() {
		mu.Lock()
		defer mu.Unlock()
		got = nil
	}
	return conn, plans, reset
}
