package migrations_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/internal/testdb"
)

// bucketKey is 010's advisory lock key for a job's bucket.
const bucketKey = 1702322539

// wakeDB is a migrated database of the test's own with the kinds the tests
// use (errand migrate would publish ping; the others stand for a team's) and
// one workspace.
func wakeDB(t *testing.T) (url string, pool *pgxpool.Pool, ws string) {
	t.Helper()
	url = testdb.NewDatabase(t, true)
	pool = testdb.Pool(t, url)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO errand.kinds (kind, queue, required_args, arg_enums) VALUES
		('ping', 'default', '{}', '{}'),
		('test.note', 'default', '{note}', '{}'),
		('test.mail', 'mail', '{to}', '{"template": ["invite", "custom"]}')`)
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Acme', 'acme') RETURNING id::text`).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	return url, pool, ws
}

// listener collects errand's wake-ups. Nothing is asserted on a timeout:
// drain sends a marker of its own and returns what arrived before it, which
// PostgreSQL delivers in commit order.
type listener struct {
	t    *testing.T
	conn *pgx.Conn
	pool *pgxpool.Pool
}

func listen(t *testing.T, url string, pool *pgxpool.Pool) *listener {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}
	return &listener{t: t, conn: conn, pool: pool}
}

// drain returns the payloads of the wake-ups committed so far.
func (l *listener) drain() []string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	marker := fmt.Sprintf("marker-%d", rand.Int64())
	if _, err := l.pool.Exec(ctx, `SELECT pg_notify('errand.river_insert', $1)`, marker); err != nil {
		l.t.Fatal(err)
	}
	var got []string
	for {
		n, err := l.conn.WaitForNotification(ctx)
		if err != nil {
			l.t.Fatalf("waiting for the marker notification: %v (got %q)", err, got)
		}
		if n.Payload == marker {
			return got
		}
		got = append(got, n.Payload)
	}
}

func enqueueOne(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, ws, kind, args string) int64 {
	t.Helper()
	var id int64
	err := q.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, $2, $3) RETURNING id`, ws, kind, args).Scan(&id)
	if err != nil {
		t.Fatalf("enqueue %s: %v", kind, err)
	}
	return id
}

func wakesFor(t *testing.T, pool *pgxpool.Pool, sentinel int64) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.wakes WHERE sentinel = $1`, sentinel).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const wakeDefault = `{"queue" : "default"}`

// The first job of an idle queue wakes it at commit; a job behind one that
// no worker has taken yet does not, and the fetch that takes that job wakes
// the queue on its behalf.
func TestWakeUpIsHandedToTheFetchOfAnOlderJob(t *testing.T) {
	t.Parallel()
	wakeUpIsHandedOver(t, takeSQL)
}

// errand's fair fetch hands the wake-up over for the jobs it starts, once
// for all of them (025), as the row trigger does for each.
func TestFairFetchHandsTheWakeUpOver(t *testing.T) {
	t.Parallel()
	wakeUpIsHandedOver(t, fairStartSQL)
}

// takeSQL does to job $1 what River's fetch does: takes it out of available.
const takeSQL = `UPDATE errand.river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`

func wakeUpIsHandedOver(t *testing.T, fetchSQL string) {
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	take := func(id int64) {
		t.Helper()
		if _, err := pool.Exec(context.Background(), fetchSQL, id); err != nil {
			t.Fatal(err)
		}
	}

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Fatalf("first job of an idle queue: wake-ups %q, want one for default", got)
	}
	second := enqueueOne(t, pool, ws, "ping", `{}`)
	if got := l.drain(); len(got) != 0 {
		t.Fatalf("job behind an untaken one: wake-ups %q, want none", got)
	}
	if n := wakesFor(t, pool, first); n != 1 {
		t.Fatalf("%d wakes rows count on job %d, want 1", n, first)
	}

	// A fetch takes the first job: at its commit the queue is woken for the
	// second.
	take(first)
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Fatalf("fetch of the job another counted on: wake-ups %q, want one for default", got)
	}
	if n := wakesFor(t, pool, first); n != 0 {
		t.Errorf("%d wakes rows still count on the fetched job", n)
	}
	// The next fetch takes the second job; nobody counted on it.
	take(second)
	if got := l.drain(); len(got) != 0 {
		t.Errorf("fetch of a job nobody counted on: wake-ups %q, want none", got)
	}
}

// A job that a fetch has locked is no sentinel: the fetch's snapshot may be
// older than the new job's commit.
func TestJobBehindOneBeingFetchedWakesTheQueue(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	l.drain()
	lockedByAnotherFetch(t, pool, first)
	enqueueOne(t, pool, ws, "ping", `{}`)
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("job behind one being fetched: wake-ups %q, want one for default", got)
	}
}

// lockedByAnotherFetch locks job id as a fetch in flight does, in a
// transaction the test may go on with; it is rolled back at the end.
func lockedByAnotherFetch(t *testing.T, pool *pgxpool.Pool, id int64) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM errand.river_job WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// A sentinel must be of the same kind (a worker that takes it can take the
// new job) and of the same queue.
func TestSentinelIsOfTheSameQueueAndKind(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)

	enqueueOne(t, pool, ws, "test.note", `{"note": "x"}`)
	enqueueOne(t, pool, ws, "test.mail", `{"to": "a@example.com"}`)
	l.drain()
	enqueueOne(t, pool, ws, "ping", `{}`)
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("first ping behind another kind: wake-ups %q, want one for default", got)
	}
	enqueueOne(t, pool, ws, "test.mail", `{"to": "b@example.com"}`)
	enqueueOne(t, pool, ws, "ping", `{}`)
	if got := l.drain(); len(got) != 0 {
		t.Errorf("jobs behind their own kind: wake-ups %q, want none", got)
	}
}

// A job its workspace's cap holds back is no sentinel: the fair fetch does
// not take it until one of the workspace's running jobs ends, and another
// workspace's job committed behind it waited up to a second for the
// pilot's fallback wake-up (056). While the workspace has room, its job is
// a sentinel as before.
func TestASentinelIsNoJobACapHoldsBack(t *testing.T) {
	t.Parallel()
	url, pool, capped := wakeDB(t)
	ctx := context.Background()
	var other string
	if err := pool.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Globex', 'globex') RETURNING id::text`).Scan(&other); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO errand.plans (plan, concurrency) VALUES ('one at a time', 1);
		UPDATE errand.workspaces SET plan = 'one at a time' WHERE slug = 'acme'`); err != nil {
		t.Fatal(err)
	}
	running := enqueueOne(t, pool, capped, "ping", `{}`)
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'running', attempt = 1, attempted_at = now(), attempted_by = '{r}' WHERE id = $1`, running); err != nil {
		t.Fatal(err)
	}
	held := enqueueOne(t, pool, capped, "ping", `{}`)
	l := listen(t, url, pool)
	l.drain()

	enqueueOne(t, pool, other, "ping", `{}`)
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("a job behind one its workspace's cap holds back: wake-ups %q, want one for default", got)
	}
	if n := wakesFor(t, pool, held); n != 0 {
		t.Errorf("the held-back job %d is a sentinel %d times, want none", held, n)
	}

	// The capped workspace's running job ends: its next job may start, and
	// is a sentinel again.
	if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET state = 'completed', finalized_at = now() WHERE id = $1`, running); err != nil {
		t.Fatal(err)
	}
	l.drain()
	enqueueOne(t, pool, other, "ping", `{}`)
	if got := l.drain(); len(got) != 0 {
		t.Errorf("a job behind one its workspace may start: wake-ups %q, want none", got)
	}
	if n := wakesFor(t, pool, held); n != 1 {
		t.Errorf("job %d, which may start, is a sentinel %d times, want once", held, n)
	}
}

// The fetch waits for an enqueuing transaction that counts on its job and is
// still committing, then wakes the queue for it. Here the enqueuer is held
// in its commit by a deferred constraint of its own that fires after
// errand's decision (an app's deferred foreign key could take as long).
func TestFetchWaitsForTheTransactionThatCountsOnTheJob(t *testing.T) {
	t.Parallel()
	fetchWaitsForTheEnqueuer(t, takeSQL)
}

// The same with errand's fair fetch, which hands over once for all its jobs
// after its update (025).
func TestFairFetchWaitsForTheTransactionThatCountsOnTheJob(t *testing.T) {
	t.Parallel()
	fetchWaitsForTheEnqueuer(t, fairStartSQL)
}

// fairStartSQL starts jobs $1... as errand's fair fetch does.
const fairStartSQL = `SELECT count(*) FROM errand.fair_start(ARRAY[$1]::bigint[], 'test-client', 100, now())`

func fetchWaitsForTheEnqueuer(t *testing.T, fetchSQL string) {
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()
	const gateKey = 4242
	_, err := pool.Exec(ctx, `CREATE TABLE gate (x int);
		CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER gate AFTER INSERT ON gate DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION gate()`)
	if err != nil {
		t.Fatal(err)
	}
	gate, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Rollback(ctx)
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, gateKey); err != nil {
		t.Fatal(err)
	}

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	l.drain()

	committed := make(chan error, 1)
	enqueuer := pidConn(t, pool)
	go func() {
		committed <- pgx.BeginFunc(ctx, enqueuer.conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping')`, ws); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO gate VALUES (1)`)
			return err
		})
	}()
	waitBlocked(t, pool, enqueuer.pid, committed)

	fetched := make(chan error, 1)
	fetcher := pidConn(t, pool)
	go func() {
		_, err := fetcher.conn.Exec(ctx, fetchSQL, first)
		fetched <- err
	}()
	waitBlocked(t, pool, fetcher.pid, fetched)

	if err := gate.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	// One wake-up, the fetch's: the enqueuer counted on the fetched job.
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) || wakesFor(t, pool, first) != 0 {
		t.Errorf("fetch after the enqueuer committed: wake-ups %q, want the fetch's one for default", got)
	}
}

// The row trigger stands aside for fair_start's own update only: a job taken
// out of available later in the same transaction still hands over.
func TestRowHandOffAfterAFairFetchInTheSameTransaction(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	second := enqueueOne(t, pool, ws, "ping", `{}`) // counts on first
	l.drain()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fairStartSQL, second); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE errand.river_job SET state = 'cancelled', finalized_at = now() WHERE id = $1`, first)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) || wakesFor(t, pool, first) != 0 {
		t.Errorf("cancel after a fair fetch: wake-ups %q and %d records on the cancelled job, want one for default and none",
			got, wakesFor(t, pool, first))
	}
}

// The fair fetch hands over for every job it was asked to start, also one
// another fetch has locked first: it waits for the enqueuer that counted on
// it and wakes the queue itself, and the fetch that does take the job finds
// nothing left to do.
func TestFairFetchHandsOverForAJobAnotherFetchLocked(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	enqueueOne(t, pool, ws, "ping", `{}`) // counts on first
	l.drain()
	other := lockedByAnotherFetch(t, pool, first)
	var started int
	if err := pool.QueryRow(ctx, fairStartSQL, first).Scan(&started); err != nil {
		t.Fatal(err)
	}
	if started != 0 {
		t.Fatalf("fair fetch started %d jobs, want none: another fetch holds the job", started)
	}
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) || wakesFor(t, pool, first) != 0 {
		t.Errorf("fair fetch that skipped the locked job: wake-ups %q and %d records, want one for default and none",
			got, wakesFor(t, pool, first))
	}
	if _, err := other.Exec(ctx, takeSQL, first); err != nil {
		t.Fatal(err)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); len(got) != 0 {
		t.Errorf("the fetch that took the job: wake-ups %q, want none (the fair fetch woke the queue)", got)
	}
}

type connPID struct {
	conn *pgx.Conn
	pid  int
}

func pidConn(t *testing.T, pool *pgxpool.Pool) connPID {
	t.Helper()
	c, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	var pid int
	if err := c.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return connPID{conn: c.Conn(), pid: pid}
}

// waitBlocked waits until backend pid waits for an advisory lock, at most
// 30s.
func waitBlocked(t *testing.T, pool *pgxpool.Pool, pid int, finished <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("backend %d did not wait for an advisory lock within 30s", pid)
		}
		var waiting bool
		err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)`, pid).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		select {
		case err := <-finished:
			t.Fatalf("backend %d finished (%v) instead of waiting for an advisory lock", pid, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// A decision fired before the commit (SET CONSTRAINTS ... IMMEDIATE) must not
// hold a bucket through the rest of the transaction: it notifies.
func TestEarlyDecisionNotifies(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()

	first := enqueueOne(t, pool, ws, "ping", `{}`)
	l.drain()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	enqueueOne(t, tx, ws, "ping", `{}`)
	if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var held bool
	if err := pool.QueryRow(ctx, `SELECT NOT pg_try_advisory_xact_lock_shared($1, ($2 % 1024)::int)`, bucketKey, first).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held {
		t.Error("an early decision holds the sentinel's bucket")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); !slices.Equal(got, []string{wakeDefault}) {
		t.Errorf("early decision: wake-ups %q, want one for default", got)
	}
}

// Rolled back, an enqueue leaves nothing behind: no job, no wake-up, no
// wakes row.
func TestRollbackLeavesNoWakeState(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enqueueOne(t, tx, ws, "ping", `{}`)
	if _, err := tx.Exec(ctx, `SELECT errand.enqueue_many(ARRAY[$1::uuid, $1::uuid], ARRAY['ping', 'test.note'], ARRAY['{}', '{"note": 1}']::json[])`, ws); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var wakes int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.wakes`).Scan(&wakes); err != nil {
		t.Fatal(err)
	}
	if got := l.drain(); len(got) != 0 || wakes != 0 {
		t.Errorf("after rollback: wake-ups %q and %d wakes rows, want none", got, wakes)
	}
}

// Concurrent enqueuers into a queue with work waiting do not each notify:
// that is what let their commits run in parallel.
func TestConcurrentEnqueuersRarelyNotify(t *testing.T) {
	t.Parallel()
	url, pool, ws := wakeDB(t)
	l := listen(t, url, pool)
	ctx := context.Background()
	const clients, each = 8, 50

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for range each {
				if _, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind) VALUES ($1, 'ping')`, ws); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := l.drain()
	// At most the transactions that committed while the queue was still
	// empty notify.
	if len(got) == 0 || len(got) > clients {
		t.Errorf("%d transactions: %d wake-ups, want 1 to %d", clients*each, len(got), clients)
	}
}

// pingArgs is the ping kind as this test's River client sees it.
type pingArgs struct {
	SleepUS int `json:"sleep_us"`
}

func (pingArgs) Kind() string { return "ping" }

type pingWorker struct {
	river.WorkerDefaults[pingArgs]
	done chan<- int64
}

func (w *pingWorker) Work(ctx context.Context, job *river.Job[pingArgs]) error {
	time.Sleep(time.Duration(job.Args.SleepUS) * time.Microsecond)
	w.done <- job.ID
	return nil
}

// wakeRounds is how many rounds TestNoWakeUpIsLost races: 50 by default,
// ERRAND_WAKE_ROUNDS for more (the issue asks for 1000).
func wakeRounds(t *testing.T) int {
	t.Helper()
	s := os.Getenv("ERRAND_WAKE_ROUNDS")
	if s == "" {
		return 50
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("ERRAND_WAKE_ROUNDS=%q: want a positive number", s)
	}
	return n
}

// The race the design must win: enqueuing transactions commit while workers
// finish their last jobs and go idle. River polls only once an hour here, so
// a lost wake-up leaves a job unstarted and fails the round.
func TestNoWakeUpIsLost(t *testing.T) {
	t.Parallel()
	noWakeUpIsLost(t, func(pool *pgxpool.Pool) riverdriver.Driver[pgx.Tx] { return riverpgxv5.New(pool) })
}

// The same race with errand's fair fetch, whose errand.fair_start hands the
// wake-ups over once per fetch instead of per job (migration 025).
func TestNoWakeUpIsLostWithTheFairFetch(t *testing.T) {
	t.Parallel()
	noWakeUpIsLost(t, func(pool *pgxpool.Pool) riverdriver.Driver[pgx.Tx] { return fair.NewDriver(pool, fair.Config{}) })
}

func noWakeUpIsLost(t *testing.T, driver func(*pgxpool.Pool) riverdriver.Driver[pgx.Tx]) {
	rounds := wakeRounds(t)
	url, pool, ws := wakeDB(t)
	ctx := context.Background()

	done := make(chan int64, 1024)
	workers := river.NewWorkers()
	river.AddWorker(workers, &pingWorker{done: done})
	riverConfig, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	riverConfig.ConnConfig.RuntimeParams["application_name"] = "errand-river"
	riverPool, err := pgxpool.NewWithConfig(ctx, riverConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(riverPool.Close)
	client, err := river.NewClient(driver(riverPool), &river.Config{
		Schema:            "errand",
		Queues:            map[string]river.QueueConfig{"default": {MaxWorkers: 50}},
		Workers:           workers,
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: time.Hour,
		Logger:            slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	})

	// The ways an app enqueues, each with its own timing.
	enqueuers := []func(r *rand.Rand) ([]int64, error){
		func(r *rand.Rand) ([]int64, error) { // one INSERT, its own transaction
			var id int64
			err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', jsonb_build_object('sleep_us', $2::int)) RETURNING id`,
				ws, r.IntN(1500)).Scan(&id)
			return []int64{id}, err
		},
		func(r *rand.Rand) ([]int64, error) { // a transaction that does more work before it commits
			var ids []int64
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				for range 1 + r.IntN(2) {
					var id int64
					if err := tx.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', jsonb_build_object('sleep_us', $2::int)) RETURNING id`,
						ws, r.IntN(1500)).Scan(&id); err != nil {
						return err
					}
					ids = append(ids, id)
				}
				_, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, float64(r.IntN(2000))/1e6)
				return err
			})
			return ids, err
		},
		func(r *rand.Rand) ([]int64, error) { // many at once
			n := 1 + r.IntN(4)
			wss := make([]string, n)
			kinds := make([]string, n)
			args := make([]string, n)
			for i := range n {
				wss[i], kinds[i], args[i] = ws, "ping", fmt.Sprintf(`{"sleep_us": %d}`, r.IntN(1500))
			}
			rows, err := pool.Query(ctx, `SELECT * FROM errand.enqueue_many($1::uuid[], $2::text[], $3::json[])`, wss, kinds, args)
			if err != nil {
				return nil, err
			}
			return pgx.CollectRows(rows, pgx.RowTo[int64])
		},
	}

	// Count the wake-ups by who sent them: an enqueuing transaction (the
	// test's pool) or a fetch that took a job others counted on (River's).
	var wakeups struct {
		sync.Mutex
		by map[uint32]int
	}
	wakeups.by = map[uint32]int{}
	counterCtx, stopCounter := context.WithCancel(ctx)
	counted := make(chan struct{})
	counter, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close(ctx)
	if _, err := counter.Exec(ctx, `LISTEN "errand.river_insert"`); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(counted)
		for {
			n, err := counter.WaitForNotification(counterCtx)
			if err != nil {
				return
			}
			wakeups.Lock()
			wakeups.by[n.PID]++
			wakeups.Unlock()
		}
	}()
	var transactions atomic.Int64

	// Warm up: the client is listening once a job has gone through.
	warm := enqueueOne(t, pool, ws, "ping", `{}`)
	select {
	case id := <-done:
		if id != warm {
			t.Fatalf("warm-up: job %d done, want %d", id, warm)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("warm-up job not started within 30s")
	}

	tr := &tracker{pending: map[int64]bool{}, finished: map[int64]bool{}, done: done}
	var lastRound []int64
	for round := range rounds {
		r := rand.New(rand.NewPCG(uint64(round), 9))
		// This round's enqueuers start while the previous round's jobs
		// finish, so workers go idle in the middle of their commits.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		var ids []int64
		var idsMu sync.Mutex
		burst := r.IntN(2) == 0 // all at once, or spread over 1.5ms
		for i := range 1 + r.IntN(6) {
			delay := time.Duration(r.IntN(1500)) * time.Microsecond
			if burst {
				delay = 0
			}
			enqueue := enqueuers[r.IntN(len(enqueuers))]
			seed := rand.New(rand.NewPCG(uint64(round), uint64(i)))
			wg.Go(func() {
				time.Sleep(delay)
				got, err := enqueue(seed)
				transactions.Add(1)
				if err != nil {
					errs <- err
					return
				}
				tr.add(got)
				idsMu.Lock()
				ids = append(ids, got...)
				idsMu.Unlock()
			})
		}
		// Wait for the previous round's jobs while this round enqueues.
		tr.wait(t, lastRound, round-1)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: enqueue: %v", round, err)
		}
		lastRound = ids
	}
	tr.wait(t, lastRound, rounds-1)
	stopCounter()
	<-counted
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = 'errand-river'`)
	if err != nil {
		t.Fatal(err)
	}
	riverPIDs, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	var byEnqueuers, byFetches int
	for pid, n := range wakeups.by {
		if slices.Contains(riverPIDs, pid) {
			byFetches += n
		} else {
			byEnqueuers += n
		}
	}
	t.Logf("%d rounds, %d enqueuing transactions: %d woke their queue, the others counted on an older job; %d fetches woke the queue for them; every job started without a poll",
		rounds, transactions.Load(), byEnqueuers, byFetches)
}

// tracker knows which enqueued jobs have not run yet.
type tracker struct {
	mu       sync.Mutex
	pending  map[int64]bool
	finished map[int64]bool // run before their enqueuer reported them
	done     <-chan int64
}

func (tr *tracker) add(ids []int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, id := range ids {
		if tr.finished[id] {
			delete(tr.finished, id)
		} else {
			tr.pending[id] = true
		}
	}
}

// wait receives finished jobs until none of ids is pending. A job that has
// not started within 60s lost its wake-up: River would find it only at its
// next poll, an hour away (a loaded machine can delay a woken fetch by
// seconds, never by a minute).
func (tr *tracker) wait(t *testing.T, ids []int64, round int) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		tr.mu.Lock()
		var left []int64
		for _, id := range ids {
			if tr.pending[id] {
				left = append(left, id)
			}
		}
		tr.mu.Unlock()
		if len(left) == 0 {
			return
		}
		select {
		case id := <-tr.done:
			tr.mu.Lock()
			if tr.pending[id] {
				delete(tr.pending, id)
			} else {
				tr.finished[id] = true
			}
			tr.mu.Unlock()
		case <-deadline:
			t.Fatalf("round %d: jobs %v not started within 60 s: a wake-up was lost", round, left)
		}
	}
}
