package webhook_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errand-dev/errand/errandtest"
)

func replay(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) ([]int64, error) {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func wantPgError(t *testing.T, err error, code, part string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code || !strings.Contains(pgErr.Message, part) {
		t.Errorf("error %v, want %s containing %q", err, code, part)
	}
}

// errand.webhook_replay delivers a message again with its webhook-id and
// body, to a re-enabled endpoint too, and refuses what it cannot do.
func TestReplay(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "other")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL+"/a")
	elsewhere, _ := newEndpoint(t, pool, other, rc.URL+"/other")
	unsubscribed, _ := newEndpoint(t, pool, ws, rc.URL+"/b", "user.deleted")

	msg, body := dispatch(t, pool, ws, `{"event_type": "user.created", "payload": {"id": "u_1"}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")

	ids, err := replay(t, pool, `SELECT errand.webhook_replay($1)`, msg)
	if err != nil || len(ids) != 1 {
		t.Fatalf("replay: %v %v", ids, err)
	}
	errandtest.WaitJob(t, pool, ids[0], 30*time.Second, "completed")

	// Disabled: refused by name; the whole-message replay finds no endpoint.
	exec(t, pool, `UPDATE errand.webhook_endpoints SET enabled = false, disabled_reason = 'customer asked' WHERE id = $1`, ep)
	_, err = replay(t, pool, `SELECT errand.webhook_replay($1, $2)`, msg, ep)
	wantPgError(t, err, "55000", "is disabled")
	if ids, err := replay(t, pool, `SELECT errand.webhook_replay($1)`, msg); err != nil || len(ids) != 0 {
		t.Errorf("replay to no enabled endpoint: %v %v", ids, err)
	}
	// Re-enabled: a fresh start, and the replay goes out.
	exec(t, pool, `UPDATE errand.webhook_endpoints SET enabled = true WHERE id = $1`, ep)
	if e := getEndpoint(t, pool, ep); !e.Enabled || e.DisabledReason != "" || e.FailingSince != nil {
		t.Errorf("re-enabled endpoint %+v", e)
	}
	ids, err = replay(t, pool, `SELECT errand.webhook_replay($1, $2)`, msg, ep)
	if err != nil || len(ids) != 1 {
		t.Fatalf("replay to the re-enabled endpoint: %v %v", ids, err)
	}
	errandtest.WaitJob(t, pool, ids[0], 30*time.Second, "completed")

	reqs := rc.received()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want the delivery and two replays", len(reqs))
	}
	for i, r := range reqs {
		if r.path != "/a" || r.header.Get("webhook-id") != msg || string(r.body) != body {
			t.Errorf("request %d: %s webhook-id %q body %s", i, r.path, r.header.Get("webhook-id"), r.body)
		}
	}
	if as := attempts(t, pool, msg); len(as) != 3 {
		t.Errorf("attempts %+v, want one per delivery", as)
	}

	_, err = replay(t, pool, `SELECT errand.webhook_replay(gen_random_uuid())`)
	wantPgError(t, err, "23503", "webhook message")
	_, err = replay(t, pool, `SELECT errand.webhook_replay($1, $2)`, msg, elsewhere)
	wantPgError(t, err, "23503", "does not exist in the message's workspace")
	_, err = replay(t, pool, `SELECT errand.webhook_replay($1, $2)`, msg, unsubscribed)
	wantPgError(t, err, "22023", "not subscribed to event type user.created")
	// A session scoped to another workspace cannot reach this one's message.
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), `SELECT set_config('app.current_workspace_id', $1, true)`, other); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(context.Background(), `SELECT errand.webhook_replay($1)`, msg)
	wantPgError(t, err, "23503", "does not exist")
}

// After errand.webhook_rotate_secret, deliveries carry two signatures (the
// new secret's and the old one's), each enough on its own for the reference
// verifier; once the old secret expires, one.
func TestRotationSignsWithBothSecrets(t *testing.T) {
	t.Parallel()
	rot := newRotated(t)
	rc, pool, ws, ep, oldSecret, newSecret := rot.rc, rot.pool, rot.ws, rot.ep, rot.oldSecret, rot.newSecret
	if newSecret == oldSecret || !strings.HasPrefix(newSecret, "whsec_") {
		t.Fatalf("rotated secret %q (old %q)", newSecret, oldSecret)
	}
	oldWH, _ := standardwebhooks.NewWebhook(oldSecret)
	newWH, _ := standardwebhooks.NewWebhook(newSecret)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")
	r := rc.received()[0]
	if n := len(strings.Fields(r.header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d signatures during the rotation, want 2: %s", n, r.header.Get("webhook-signature"))
	}
	if oldWH.Verify(r.body, r.header) != nil || newWH.Verify(r.body, r.header) != nil {
		t.Errorf("during the rotation, old secret: %v, new secret: %v", oldWH.Verify(r.body, r.header), newWH.Verify(r.body, r.header))
	}

	// 24 hours later (the test moves the expiry instead of waiting).
	exec(t, pool, `UPDATE errand.webhook_endpoints SET previous_secret_expires_at = now() - interval '1 second' WHERE id = $1`, ep)
	msg, _ = dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")
	r = rc.received()[1]
	if n := len(strings.Fields(r.header.Get("webhook-signature"))); n != 1 {
		t.Errorf("%d signatures after the old secret expired, want 1", n)
	}
	if newWH.Verify(r.body, r.header) != nil || oldWH.Verify(r.body, r.header) == nil {
		t.Errorf("after expiry, new secret: %v, old secret: %v (want it refused)", newWH.Verify(r.body, r.header), oldWH.Verify(r.body, r.header))
	}

	var expires time.Time
	if err := pool.QueryRow(context.Background(), `SELECT errand.webhook_rotate_secret($1)`, ep).Scan(&newSecret); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(context.Background(), `SELECT previous_secret_expires_at FROM errand.webhook_endpoints WHERE id = $1`, ep).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("the old secret expires in %s, want 24h", d)
	}
	_, err := pool.Exec(context.Background(), `SELECT errand.webhook_rotate_secret(gen_random_uuid())`)
	wantPgError(t, err, "23503", "webhook endpoint")
}

// A replay's deliveries get as many attempts as a dispatch's: the retry
// schedule's length + 1 (here 10, more than the kind's default of 8),
// which the daemon publishes for errand.webhook_replay.
func TestReplayHasAsManyAttemptsAsADispatch(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms,10ms"}), kinds()...)
	newEndpoint(t, pool, ws, rc.URL)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	first := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")
	ids, err := replay(t, pool, `SELECT errand.webhook_replay($1)`, msg)
	if err != nil || len(ids) != 1 {
		t.Fatalf("replay: %v %v", ids, err)
	}
	again := errandtest.WaitJob(t, pool, ids[0], 30*time.Second, "completed")
	if first.MaxAttempts != 10 || again.MaxAttempts != 10 {
		t.Errorf("max_attempts: dispatched delivery %d, replayed %d; want 10 each", first.MaxAttempts, again.MaxAttempts)
	}
}
