package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/cli"
	"github.com/errand-dev/errand/jobs/webhook"
)

// kinds are a test's errand options: none, the webhook kinds are built in
// (errand.Builtin). A team's kind would pass errand.WithKinds here.
func kinds() []errand.Option { return nil }

// resolving is an errand option for a test's daemon: the built-in
// webhook.deliver replaced by one whose dialer looks names up with r
// (webhook.LocalResolver: names the test points where it wants).
func resolving(r *net.Resolver) errand.Option {
	return func(o *cli.Options) {
		for i, k := range o.Kinds {
			if k.Name == webhook.DeliverName {
				o.Kinds[i] = webhook.DeliverKindResolving(r)
			}
		}
	}
}

// pointing is a lookup for webhook.LocalResolver: name at addrs, no
// other name.
func pointing(name string, addrs ...string) func(string) []netip.Addr {
	return func(n string) []netip.Addr {
		if n != name {
			return nil
		}
		out := make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			out[i] = netip.MustParseAddr(a)
		}
		return out
	}
}

// receiver is a customer's endpoint: a real HTTP server that records every
// request and answers as the test says (200 "ok" by default).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []request
	// answer writes the answer to the n-th request (0-based); nil: 200.
	answer func(w http.ResponseWriter, r *http.Request, n int, body []byte)
}

type request struct {
	at     time.Time
	path   string // with the query
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int, body []byte)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.requests)
		rc.requests = append(rc.requests, request{at: time.Now(), path: r.URL.RequestURI(), header: r.Header.Clone(), body: body})
		answer := rc.answer
		rc.mu.Unlock()
		if answer == nil {
			_, _ = io.WriteString(w, "ok")
			return
		}
		answer(w, r, n, body)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) received() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.requests)
}

// holdingReceiver is a receiver that holds the requests hold picks (by
// their 0-based number) until letGo, which runs at the latest when the test
// ends, so a failing test leaves no request hanging. It counts the requests
// in flight and the most at once.
type holdingReceiver struct {
	*receiver
	mu             sync.Mutex
	inFlight, most int
	release        chan struct{}
	once           sync.Once
}

func newHoldingReceiver(t *testing.T, hold func(n int) bool) *holdingReceiver {
	t.Helper()
	h := &holdingReceiver{release: make(chan struct{})}
	h.receiver = newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		h.mu.Lock()
		h.inFlight++
		h.most = max(h.most, h.inFlight)
		h.mu.Unlock()
		if hold(n) {
			<-h.release
		}
		h.mu.Lock()
		h.inFlight--
		h.mu.Unlock()
	})
	t.Cleanup(h.letGo)
	return h
}

// letGo answers the held requests and every later one at once.
func (h *holdingReceiver) letGo() { h.once.Do(func() { close(h.release) }) }

// counts are the requests in flight now and the most ever at once.
func (h *holdingReceiver) counts() (inFlight, most int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inFlight, h.most
}

// env is the daemon's environment: local receivers allowed, retries in
// milliseconds, frequent polls (a retry due sooner than River's scheduler
// runs waits for the next poll).
func env(extra map[string]string) map[string]string {
	m := map[string]string{
		"ERRAND_WEBHOOK_ALLOW_CIDRS":    "127.0.0.1/32",
		"ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms,10ms,10ms",
		"ERRAND_WEBHOOK_HELD_BACK_WAIT": "20ms",
		"ERRAND_FETCH_POLL_INTERVAL":    "50ms",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// newEndpoint inserts an endpoint as an app would and returns its id and
// generated secret.
func newEndpoint(t *testing.T, pool *pgxpool.Pool, ws, url string, eventTypes ...string) (id, secret string) {
	t.Helper()
	if eventTypes == nil {
		eventTypes = []string{}
	}
	err := pool.QueryRow(context.Background(), `
		INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, $2, $3)
		RETURNING id::text, secret`, ws, url, eventTypes).Scan(&id, &secret)
	if err != nil {
		t.Fatalf("insert endpoint %s: %v", url, err)
	}
	return id, secret
}

// dispatch enqueues a webhook.dispatch, waits for it to complete, and
// returns its message's id and body ("" when it made no message).
func dispatch(t *testing.T, pool *pgxpool.Pool, ws, args string) (messageID, body string) {
	t.Helper()
	id := errandtest.Enqueue(t, pool, ws, webhook.DispatchName, args)
	if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" {
		t.Fatalf("dispatch %+v", j)
	}
	err := pool.QueryRow(context.Background(), `SELECT id::text, body FROM errand.webhook_messages WHERE job_id = $1`, id).Scan(&messageID, &body)
	if err == pgx.ErrNoRows {
		return "", ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return messageID, body
}

// deliveries are the webhook.deliver jobs of a message, oldest first.
func deliveries(t *testing.T, pool *pgxpool.Pool, messageID string) []int64 {
	t.Helper()
	return int64s(t, pool, `
		SELECT id FROM errand.jobs WHERE kind = 'webhook.deliver' AND args ->> 'message_id' = $1 ORDER BY id`, messageID)
}

// laterJob enqueues a job of kind with args in ws to run after the interval
// after (no daemon runs it here) and returns its id.
func laterJob(t *testing.T, pool *pgxpool.Pool, ws, kind, args, after string) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		VALUES ($1, $2, $3, now() + $4::interval) RETURNING id`, ws, kind, args, after).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// deliverArgs is a webhook.deliver job's args for endpoint ep (of a message
// that need not exist).
func deliverArgs(ep string) string {
	return fmt.Sprintf(`{"message_id": %q, "endpoint_id": %q}`, "00000000-0000-0000-0000-000000000001", ep)
}

// heldNotes counts endpoint ep's rows in errand.webhook_held_back (pool
// must see them: a superuser's, or one that bypasses row level security).
func heldNotes(t *testing.T, pool *pgxpool.Pool, ep string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.webhook_held_back WHERE endpoint_id = $1`, ep).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// int64s is a query's one bigint column.
func int64s(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// attempt is a row of errand.webhook_attempts.
type attempt struct {
	Attempt    int
	Status     int
	Error      string
	Response   string
	LatencyMS  int
	CreatedAt  time.Time
	EndpointID string
	JobID      int64
}

func attempts(t *testing.T, pool *pgxpool.Pool, messageID string) []attempt {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT attempt, coalesce(status_code, 0), coalesce(error, ''), coalesce(response_body, ''), latency_ms, created_at, endpoint_id::text, job_id
		FROM errand.webhook_attempts WHERE message_id = $1 ORDER BY id`, messageID)
	if err != nil {
		t.Fatal(err)
	}
	as, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attempt])
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// endpointRow is an endpoint's state as the tests look at it.
type endpointRow struct {
	Enabled        bool
	DisabledReason string
	FailingSince   *time.Time
	LastSuccessAt  *time.Time
}

func getEndpoint(t *testing.T, pool *pgxpool.Pool, id string) endpointRow {
	t.Helper()
	var e endpointRow
	err := pool.QueryRow(context.Background(), `
		SELECT enabled, coalesce(disabled_reason, ''), failing_since, last_success_at FROM errand.webhook_endpoints WHERE id = $1`, id).
		Scan(&e.Enabled, &e.DisabledReason, &e.FailingSince, &e.LastSuccessAt)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitFor polls cond until it holds (a generous bound, not a measurement).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rotated is a daemon delivering to one endpoint of workspace ws whose
// secret was just rotated (errand.webhook_rotate_secret): both secrets sign.
type rotated struct {
	rc                   *receiver
	pool                 *pgxpool.Pool
	ws, ep               string
	oldSecret, newSecret string
}

func newRotated(t *testing.T) rotated {
	t.Helper()
	r := rotated{rc: newReceiver(t, nil)}
	var url string
	url, r.pool = errandtest.MigratedDB(t, kinds()...)
	r.ws = errandtest.NewWorkspace(t, r.pool, "acme")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	r.ep, r.oldSecret = newEndpoint(t, r.pool, r.ws, r.rc.URL)
	if err := r.pool.QueryRow(context.Background(), `SELECT errand.webhook_rotate_secret($1)`, r.ep).Scan(&r.newSecret); err != nil {
		t.Fatal(err)
	}
	return r
}
