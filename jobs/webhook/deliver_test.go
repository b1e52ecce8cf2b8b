package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/webhook"
)

// One event, dispatched with one INSERT, reaches the subscribed endpoint
// signed as the specification says (checked by its reference library), with
// the body recorded for the message; endpoints not subscribed, disabled or
// of another workspace get nothing, and the same event_id twice makes one
// message and one delivery.
func TestDeliverySignedAndVerified(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "other")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)

	ep, secret := newEndpoint(t, pool, ws, rc.URL+"/hooks/in?token=abc", "invoice.paid", "invoice.voided")
	newEndpoint(t, pool, ws, rc.URL+"/users", "user.created")
	off, _ := newEndpoint(t, pool, ws, rc.URL+"/off")
	exec(t, pool, `UPDATE errand.webhook_endpoints SET enabled = false WHERE id = $1`, off)
	newEndpoint(t, pool, other, rc.URL+"/other")

	args := `{"event_type": "invoice.paid", "payload": {"invoice": "in_1", "amount": 1000000, "note": "<b>&</b>"}, "event_id": "evt_1"}`
	msg, body := dispatch(t, pool, ws, args)
	jobs := deliveries(t, pool, msg)
	if len(jobs) != 1 {
		t.Fatalf("%d deliveries, want 1 (one subscribed, enabled endpoint)", len(jobs))
	}
	if j := errandtest.WaitJob(t, pool, jobs[0], 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
		t.Fatalf("delivery %+v", j)
	}

	reqs := rc.received()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Errorf("the reference verifier refuses the delivery: %v", err)
	}
	if r.header.Get("webhook-id") != msg || string(r.body) != body || r.path != "/hooks/in?token=abc" {
		t.Errorf("webhook-id %q (message %s), path %s, body %s (recorded %s)", r.header.Get("webhook-id"), msg, r.path, r.body, body)
	}
	if r.header.Get("Content-Type") != "application/json" || !strings.HasPrefix(r.header.Get("User-Agent"), "errand-webhooks/") {
		t.Errorf("headers %v", r.header)
	}
	var sent struct {
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Type != "invoice.paid" || time.Since(sent.Timestamp) > time.Minute || string(sent.Data) != `{"note":"<b>&</b>","amount":1000000,"invoice":"in_1"}` {
		t.Errorf("body %s", r.body)
	}

	as := attempts(t, pool, msg)
	if len(as) != 1 || as[0].Attempt != 1 || as[0].Status != 200 || as[0].Response != "ok" || as[0].Error != "" || as[0].EndpointID != ep {
		t.Errorf("attempts %+v", as)
	}
	if e := getEndpoint(t, pool, ep); e.LastSuccessAt == nil || e.FailingSince != nil {
		t.Errorf("endpoint %+v after a success", e)
	}

	// The same event again: the dispatch completes and makes nothing.
	again, _ := dispatch(t, pool, ws, args)
	if again != "" {
		t.Errorf("a second message %s for event evt_1", again)
	}
	var messages, total int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.webhook_messages WHERE event_id = 'evt_1'`).Scan(&messages); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM errand.jobs WHERE kind = 'webhook.deliver'`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if messages != 1 || total != 1 {
		t.Errorf("%d messages and %d deliveries after evt_1 twice, want 1 and 1", messages, total)
	}
}

// A failing endpoint is retried with the same webhook-id and body, each
// attempt signed afresh and logged, and a Retry-After is honoured (the
// schedule alone would retry after 10 ms).
func TestRetriesKeepTheWebhookIDAndHonourRetryAfter(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		switch n {
		case 0:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 1:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	_, secret := newEndpoint(t, pool, ws, rc.URL)

	msg, body := dispatch(t, pool, ws, `{"event_type": "user.created", "payload": {"id": "u_1"}}`)
	jobs := deliveries(t, pool, msg)
	if len(jobs) != 1 {
		t.Fatalf("%d deliveries", len(jobs))
	}
	if j := errandtest.WaitJob(t, pool, jobs[0], 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 3 {
		t.Fatalf("delivery %+v, want completed on attempt 3", j)
	}
	wh, _ := standardwebhooks.NewWebhook(secret)
	reqs := rc.received()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.header.Get("webhook-id") != msg || string(r.body) != body {
			t.Errorf("request %d: webhook-id %q body %s, want %s %s", i, r.header.Get("webhook-id"), r.body, msg, body)
		}
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("request %d does not verify: %v", i, err)
		}
	}
	as := attempts(t, pool, msg)
	if len(as) != 3 {
		t.Fatalf("attempts %+v", as)
	}
	want := []struct {
		status      int
		errPart     string
		response    string
		attemptsNum int
	}{{500, "answered 500 Internal Server Error", "boom\n", 1}, {503, "answered 503 Service Unavailable", "busy\n", 2}, {204, "", "", 3}}
	for i, w := range want {
		a := as[i]
		if a.Attempt != w.attemptsNum || a.Status != w.status || !strings.Contains(a.Error, w.errPart) || (w.errPart == "") != (a.Error == "") || a.Response != w.response {
			t.Errorf("attempt %d: %+v, want %+v", i+1, a, w)
		}
	}
	// Spacing by the database's own timestamps: Retry-After: 1 between the
	// second and the third attempt.
	if gap := as[2].CreatedAt.Sub(as[1].CreatedAt); gap < 950*time.Millisecond {
		t.Errorf("the retry after Retry-After: 1 came %s later", gap)
	}
}

// An endpoint that answers 503 with Retry-After: 999999 (eleven days) is
// retried after the cap of 1 h (outbound.MaxRetryAfter, as the README
// says), not eleven days later, and not after the schedule's own 5 minutes either. Measured from
// the database's own timestamps: the job's started_at (River's fetch) to
// its run_at (the retry's due time).
func TestARetryAfterOfElevenDaysIsCapped(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		w.Header().Set("Retry-After", "999999")
		http.Error(w, "come back in eleven days", http.StatusServiceUnavailable)
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	const schedule = 5 * time.Minute
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_RETRY_SCHEDULE": schedule.String()}), kinds()...)
	newEndpoint(t, pool, ws, rc.URL)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	id := deliveries(t, pool, msg)[0]
	waitFor(t, "the first attempt to fail and wait for its retry", func() bool {
		return errandtest.GetJob(t, pool, id).RiverState == "retryable"
	})
	var wait time.Duration
	var attempt int
	var lastError string
	if err := pool.QueryRow(context.Background(), `SELECT run_at - started_at, attempt, last_error FROM errand.jobs WHERE id = $1`, id).
		Scan(&wait, &attempt, &lastError); err != nil {
		t.Fatal(err)
	}
	if attempt != 1 || !strings.Contains(lastError, "answered 503 Service Unavailable") {
		t.Fatalf("attempt %d, last error %q; want attempt 1 answered 503", attempt, lastError)
	}
	// The margin is the attempt itself (one local request and its log).
	const capped = time.Hour
	if wait > capped+time.Minute {
		t.Errorf("the retry is due %s after the attempt started, want at most the cap of %s", wait, capped)
	}
	if wait <= schedule*11/10 {
		t.Errorf("the retry is due %s after the attempt started: the schedule's wait (%s ±10%%), not Retry-After's capped one", wait, schedule)
	}
	if n := len(rc.received()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}
}

// A redirect is never followed and counts as a failure; a delivery gives up
// after its schedule, and its last error says so.
func TestRedirectsAreNotFollowedAndRetriesEnd(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if r.URL.Path == "/elsewhere" {
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms"}), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL+"/hook")

	msg, _ := dispatch(t, pool, ws, `{"event_type": "user.created", "payload": {}}`)
	j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed")
	if j.Status != "failed" || j.Attempt != 2 || !strings.Contains(j.LastError, "redirects are not followed") || !strings.Contains(j.LastError, "attempt 2 of 2") {
		t.Fatalf("delivery %+v, want failed after 2 attempts (schedule 10ms)", j)
	}
	for _, r := range rc.received() {
		if r.path != "/hook" {
			t.Errorf("a redirect was followed to %s", r.path)
		}
	}
	if as := attempts(t, pool, msg); len(as) != 2 || as[0].Status != 302 || as[1].Status != 302 {
		t.Errorf("attempts %+v", as)
	}
	e := getEndpoint(t, pool, ep)
	if !e.Enabled || e.FailingSince == nil {
		t.Errorf("endpoint %+v: want enabled and failing", e)
	}
}

// 410 Gone disables the endpoint at once: this delivery fails without a
// retry, and the endpoint's other pending deliveries fail with the reason.
func TestGoneDisablesTheEndpoint(t *testing.T) {
	t.Parallel()
	// The first message is taken, the second answered 410.
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if strings.Contains(string(body), `"n":2`) {
			w.WriteHeader(http.StatusGone)
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)
	keep, _ := newEndpoint(t, pool, ws, newReceiver(t, nil).URL)

	first, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 1}}`)
	for _, id := range deliveries(t, pool, first) {
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	}
	// A delivery of the first message again, due in an hour.
	var later int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		VALUES ($1, 'webhook.deliver', jsonb_build_object('message_id', $2::text, 'endpoint_id', $3::text), now() + interval '1 hour')
		RETURNING id`, ws, first, ep).Scan(&later); err != nil {
		t.Fatal(err)
	}
	second, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 2}}`)
	for _, id := range deliveries(t, pool, second) {
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	}

	e := getEndpoint(t, pool, ep)
	if e.Enabled || !strings.Contains(e.DisabledReason, "410 Gone") {
		t.Fatalf("endpoint %+v after a 410", e)
	}
	if k := getEndpoint(t, pool, keep); !k.Enabled {
		t.Errorf("the other endpoint was disabled too: %+v", k)
	}
	var gone []errandtest.Job
	for _, id := range append(deliveries(t, pool, second), later) {
		j := errandtest.GetJob(t, pool, id)
		if j.Status == "failed" {
			gone = append(gone, j)
		}
	}
	if len(gone) != 2 {
		t.Fatalf("failed deliveries %+v, want the 410 one and the pending one", gone)
	}
	if gone[0].Attempt != 1 || !strings.Contains(gone[0].LastError, "410 Gone") {
		t.Errorf("the 410 delivery %+v, want failed on attempt 1", gone[0])
	}
	if gone[1].ID != later || gone[1].Attempt != 0 || !strings.Contains(gone[1].LastError, "was disabled: the endpoint answered 410 Gone") {
		t.Errorf("the pending delivery %+v, want failed with the reason, never attempted", gone[1])
	}
	// A new event skips the disabled endpoint.
	next, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {"n": 3}}`)
	if n := len(deliveries(t, pool, next)); n != 1 {
		t.Errorf("%d deliveries after the endpoint was disabled, want 1", n)
	}
}

// An endpoint failing without a success for ERRAND_WEBHOOK_DISABLE_AFTER is
// disabled by its next failure, which says why; a success before that
// clears the failure count.
func TestAnEndpointFailingTooLongIsDisabled(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		if fail.Load() {
			http.Error(w, "down", http.StatusBadGateway)
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms"}), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)

	// Failing for a while, not long enough: the first failure starts the
	// count, a success clears it.
	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "failed")
	e := getEndpoint(t, pool, ep)
	if !e.Enabled || e.FailingSince == nil {
		t.Fatalf("endpoint %+v after failures", e)
	}
	fail.Store(false)
	msg, _ = dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")
	if e := getEndpoint(t, pool, ep); !e.Enabled || e.FailingSince != nil {
		t.Fatalf("endpoint %+v after a success", e)
	}

	// Failing since six days (the default limit is five): the next failure
	// disables it, and a pending delivery fails with the reason.
	fail.Store(true)
	exec(t, pool, `UPDATE errand.webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1`, ep)
	var later int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		VALUES ($1, 'webhook.deliver', jsonb_build_object('message_id', $2::text, 'endpoint_id', $3::text), now() + interval '1 hour')
		RETURNING id`, ws, msg, ep).Scan(&later); err != nil {
		t.Fatal(err)
	}
	msg, _ = dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed")
	if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, "the endpoint is now disabled: no successful delivery since") {
		t.Errorf("delivery %+v, want failed at once, disabling the endpoint", j)
	}
	e = getEndpoint(t, pool, ep)
	if e.Enabled || !strings.Contains(e.DisabledReason, "ERRAND_WEBHOOK_DISABLE_AFTER=5d") || !strings.Contains(e.DisabledReason, "502 Bad Gateway") {
		t.Errorf("endpoint %+v", e)
	}
	if p := errandtest.GetJob(t, pool, later); p.Status != "failed" || !strings.Contains(p.LastError, "no successful delivery since") {
		t.Errorf("pending delivery %+v, want failed with the endpoint's reason", p)
	}
}

// An address errand must not reach fails the attempt with the reason
// logged, is retried on the schedule like any failure, and nothing reaches
// the receiver: a name that resolves to loopback (the test's own DNS says
// so, on any machine), refused at dial time, and a literal in another
// notation, refused by the URL check. The endpoints were inserted while
// loopback was allowed; the daemon runs without the allow list.
func TestARefusedAddressFailsTheAttempt(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	_, port, _ := net.SplitHostPort(rc.Listener.Addr().String())
	resolver := webhook.LocalResolver(t, pointing("loopback.test", "127.0.0.1"))
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	exec(t, pool, `INSERT INTO errand.settings (name, value) VALUES ('webhook_allow_cidrs', '127.0.0.0/8')`)
	byName, _ := newEndpoint(t, pool, ws, fmt.Sprintf("http://loopback.test:%s/hook", port))
	byLiteral, _ := newEndpoint(t, pool, ws, fmt.Sprintf("http://0x7f.1:%s/hook", port))
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_ALLOW_CIDRS": "", "ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms"}),
		append(kinds(), resolving(resolver))...)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	for _, id := range deliveries(t, pool, msg) {
		j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
		if j.Status != "failed" || j.Attempt != 2 || !strings.Contains(j.LastError, "refused") || !strings.Contains(j.LastError, "loopback") {
			t.Errorf("delivery %+v, want failed after 2 refused attempts", j)
		}
	}
	as := attempts(t, pool, msg)
	if len(as) != 4 {
		t.Fatalf("attempts %+v, want 2 per endpoint", as)
	}
	want := map[string]string{
		byName:    "refused: address 127.0.0.1 is loopback: errand does not connect there",
		byLiteral: "refused: host 0x7f.1 (the IPv4 address 127.0.0.1 written another way) is loopback",
	}
	for _, a := range as {
		if a.Status != 0 || !strings.HasPrefix(a.Error, want[a.EndpointID]) {
			t.Errorf("attempt %+v, want the error to start %q", a, want[a.EndpointID])
		}
	}
	if n := len(rc.received()); n != 0 {
		t.Errorf("the receiver got %d requests", n)
	}
	// Without the allow list the contract refuses such an endpoint at once.
	_, err := pool.Exec(context.Background(), `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2)`, ws, rc.URL)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("insert of %s: %v, want refused", rc.URL, err)
	}
}

// DNS rebinding: a name that pointed at an address errand may reach (the
// receiver on 127.0.0.1, allowed here as a public address would be) and
// then points at loopback outside the allow list is refused on the next
// attempt, at dial time, with the reason logged: each dial checks the
// address it connects to, whatever the name said before.
func TestANameThatRebindsToLoopbackIsRefusedAtDialTime(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		// Closed after the answer, so the retry dials (and looks the name
		// up) again rather than reuse this connection.
		w.Header().Set("Connection", "close")
		http.Error(w, "try again", http.StatusInternalServerError)
	})
	_, port, _ := net.SplitHostPort(rc.Listener.Addr().String())
	resolver := webhook.LocalResolver(t, func(name string) []netip.Addr {
		switch {
		case name != "rebind.test":
			return nil
		case len(rc.received()) == 0:
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		default:
			// Rebound once the receiver has had its request.
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32", "ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms"}),
		append(kinds(), resolving(resolver))...)
	newEndpoint(t, pool, ws, fmt.Sprintf("http://rebind.test:%s/hook", port))

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed")
	if j.Status != "failed" || j.Attempt != 2 {
		t.Errorf("delivery %+v, want failed after 2 attempts", j)
	}
	as := attempts(t, pool, msg)
	if len(as) != 2 || as[0].Status != 500 ||
		as[1].Status != 0 || !strings.HasPrefix(as[1].Error, "refused: address 127.0.0.2 is loopback: errand does not connect there") {
		t.Errorf("attempts %+v, want a 500 from the receiver, then the rebound address refused", as)
	}
	if n := len(rc.received()); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}
}
