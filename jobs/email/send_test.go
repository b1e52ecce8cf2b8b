package email_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs/email"
)

// fakeResend is a real HTTP server speaking Resend's POST /emails: it records
// every request and answers as the test says (200 with an id by default).
type fakeResend struct {
	*httptest.Server
	mu       sync.Mutex
	requests []resendRequest
	// answer writes the response to the n-th request (0-based); nil means 200.
	answer func(w http.ResponseWriter, r *http.Request, n int, req resendRequest)
}

type resendRequest struct {
	at      time.Time
	method  string
	path    string
	header  http.Header
	body    []byte
	subject string
}

func newFakeResend(t *testing.T) *fakeResend {
	t.Helper()
	f := &fakeResend{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var parsed struct {
			Subject string `json:"subject"`
		}
		_ = json.Unmarshal(body, &parsed)
		req := resendRequest{at: time.Now(), method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body, subject: parsed.Subject}
		f.mu.Lock()
		n := len(f.requests)
		f.requests = append(f.requests, req)
		answer := f.answer
		f.mu.Unlock()
		if answer == nil {
			answerJSON(w, 200, fmt.Sprintf(`{"id":"em_%d"}`, n))
			return
		}
		answer(w, r, n, req)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeResend) setAnswer(a func(w http.ResponseWriter, r *http.Request, n int, req resendRequest)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = a
}

func (f *fakeResend) received() []resendRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeResend) withSubject(subject string) []resendRequest {
	var out []resendRequest
	for _, r := range f.received() {
		if r.subject == subject {
			out = append(out, r)
		}
	}
	return out
}

func answerJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func resendErrorBody(status int, name, message string) string {
	b, _ := json.Marshal(map[string]any{"statusCode": status, "name": name, "message": message})
	return string(b)
}

// loseResponse reads the request (already done by the fake) and drops the
// connection without answering: the send may or may not have happened.
func loseResponse(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// sendEnv is the daemon's environment for sending through the fake.
func sendEnv(f *fakeResend) map[string]string {
	return map[string]string{
		"RESEND_API_KEY":    "re_test_key",
		"RESEND_BASE_URL":   f.URL,
		"ERRAND_EMAIL_FROM": "Acme <notifications@acme.test>",
		"ERRAND_RESEND_RPS": "1000",
		// Retries due within River's scheduler interval wait for the next
		// poll; polling often keeps these tests short.
		"ERRAND_FETCH_POLL_INTERVAL": "50ms",
	}
}

type emailRow struct {
	Status, Subject, HTML, Text, Error, ProviderMessageID, Sender string
	Recipients                                                    []string
	SentAt                                                        *time.Time
}

// getEmail reads a job's errand.emails row (the test's superuser connection
// is not subject to row level security).
func getEmail(t *testing.T, pool *pgxpool.Pool, jobID int64) emailRow {
	t.Helper()
	var e emailRow
	err := pool.QueryRow(context.Background(), `
		SELECT status, coalesce(subject, ''), coalesce(html, ''), coalesce(text, ''), coalesce(error, ''),
			coalesce(provider_message_id, ''), coalesce(sender, ''), recipients, sent_at
		FROM errand.emails WHERE job_id = $1`, jobID).
		Scan(&e.Status, &e.Subject, &e.HTML, &e.Text, &e.Error, &e.ProviderMessageID, &e.Sender, &e.Recipients, &e.SentAt)
	if err != nil {
		t.Fatalf("email of job %d: %v", jobID, err)
	}
	return e
}

func instanceID(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(), `SELECT value FROM errand.settings WHERE name = 'instance_id'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func customEmail(subject string) string {
	return fmt.Sprintf(`{"to": "ann@example.com", "template": "custom", "subject": %q, "text": "Hello"}`, subject)
}

func TestEmailSendsTheExactRequestToResend(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, sendEnv(fake))
	// With a key set the captured-email page, which lists every tenant's
	// recipients, is not served.
	if resp, err := http.Get("http://" + d.Addr + "/emails"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("/emails with RESEND_API_KEY set: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	id := errandtest.Enqueue(t, pool, ws, "email.send", `{
		"to": ["Ann <ann@example.com>", "bob@example.com"],
		"template": "custom",
		"subject": "Your export is ready",
		"html": "<p>Hi & welcome</p>",
		"text": "Hi",
		"reply_to": "help@acme.test",
		"tags": {"zeta": "z", "alpha": "a"},
		"attachments": [{"filename": "a.txt", "content_base64": "aGk=", "content_type": "text/plain"}]}`)
	if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
		t.Fatalf("job %+v, want completed on attempt 1", j)
	}
	reqs := fake.received()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	// resend-go's encoding: HTML-escaped JSON, tags sorted by errand,
	// attachment content as an array of bytes, a trailing newline.
	want := `{"from":"Acme \u003cnotifications@acme.test\u003e","to":["Ann \u003cann@example.com\u003e","bob@example.com"],` +
		`"subject":"Your export is ready","reply_to":"help@acme.test","html":"\u003cp\u003eHi \u0026 welcome\u003c/p\u003e","text":"Hi",` +
		`"tags":[{"name":"alpha","value":"a"},{"name":"zeta","value":"z"}],` +
		`"attachments":[{"content":[104,105],"filename":"a.txt","content_type":"text/plain"}]}` + "\n"
	if string(r.body) != want {
		t.Errorf("body\n got %s\nwant %s", r.body, want)
	}
	wantHeaders := map[string]string{
		"Authorization":   "Bearer re_test_key",
		"Idempotency-Key": fmt.Sprintf("errand-%s-%d", instanceID(t, pool), id),
		"Content-Type":    "application/json",
		"Accept":          "application/json",
		"User-Agent":      "resend-go/2.28.0",
	}
	for name, v := range wantHeaders {
		if got := r.header.Get(name); got != v {
			t.Errorf("header %s = %q, want %q", name, got, v)
		}
	}
	if r.method != "POST" || r.path != "/emails" {
		t.Errorf("%s %s, want POST /emails", r.method, r.path)
	}
	e := getEmail(t, pool, id)
	if e.Status != "sent" || e.ProviderMessageID != "em_0" || e.SentAt == nil || e.Error != "" ||
		e.Subject != "Your export is ready" || !slices.Equal(e.Recipients, []string{"Ann <ann@example.com>", "bob@example.com"}) {
		t.Errorf("email row %+v", e)
	}

	// A template renders the workspace's name; the request carries it.
	invite := errandtest.Enqueue(t, pool, ws, "email.send", `{"to": "carl@example.com", "template": "invite", "data": {"invite_url": "https://app.test/invite/abc"}}`)
	errandtest.WaitJob(t, pool, invite, 30*time.Second, "completed")
	sent := fake.withSubject("You've been invited to ACME")
	if len(sent) != 1 {
		t.Fatalf("no request with the invite's subject: %d requests", len(fake.received()))
	}
	var body struct{ HTML, Text string }
	if err := json.Unmarshal(sent[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body.HTML, `<a href="https://app.test/invite/abc"`) || !strings.Contains(body.Text, "join ACME.") {
		t.Errorf("invite body:\n%s\n%s", body.HTML, body.Text)
	}
}

func TestEmailRetryAfterALostResponseSendsTheSameKeyAndBody(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request, n int, _ resendRequest) {
		if n == 0 {
			// Resend may have sent it. Meanwhile the workspace is renamed:
			// the retry must still send what the first attempt rendered.
			if _, err := pool.Exec(r.Context(), `UPDATE errand.workspaces SET name = 'Renamed' WHERE id = $1`, ws); err != nil {
				t.Error(err)
			}
			loseResponse(t, w)
			return
		}
		answerJSON(w, 200, `{"id":"em_after_retry"}`)
	})
	errandtest.StartDaemon(t, url, sendEnv(fake))

	id := errandtest.Enqueue(t, pool, ws, "email.send", `{"to": "ann@example.com", "template": "password_reset", "data": {"reset_url": "https://app.test/r/1"}, "tags": {"b": "2", "a": "1"}}`)
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	reqs := fake.received()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want the lost one and its retry", len(reqs))
	}
	if k0, k1 := reqs[0].header.Get("Idempotency-Key"), reqs[1].header.Get("Idempotency-Key"); k0 == "" || k0 != k1 {
		t.Errorf("idempotency keys %q and %q, want the same", k0, k1)
	}
	if string(reqs[0].body) != string(reqs[1].body) || reqs[1].subject != "Reset your ACME password" {
		t.Errorf("bodies differ, or the retry re-rendered:\n%s\n%s", reqs[0].body, reqs[1].body)
	}
	if e := getEmail(t, pool, id); e.Status != "sent" || e.ProviderMessageID != "em_after_retry" {
		t.Errorf("email row %+v", e)
	}
}

func TestEmailRetriesServerErrorsHonouringRetryAfter(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request, n int, _ resendRequest) {
		switch n {
		case 0:
			answerJSON(w, 500, resendErrorBody(500, "internal_server_error", "Something went wrong"))
		case 1:
			w.Header().Set("Retry-After", "0.3")
			answerJSON(w, 503, resendErrorBody(503, "service_unavailable", "Down for a moment"))
		default:
			answerJSON(w, 200, `{"id":"em_third"}`)
		}
	})
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, sendEnv(fake))

	id := errandtest.Enqueue(t, pool, ws, "email.send", customEmail("Retry me"))
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	if j.Status != "completed" || j.Attempt != 3 || !strings.Contains(j.LastError, "Resend answered 503 Service Unavailable service_unavailable: Down for a moment") {
		t.Fatalf("job %+v, want completed on attempt 3 with the 503 as last error", j)
	}
	reqs := fake.received()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	if gap := reqs[2].at.Sub(reqs[1].at); gap < 300*time.Millisecond {
		t.Errorf("retry %s after the 503, want at least its Retry-After of 300ms", gap)
	}
	for _, r := range reqs[1:] {
		if string(r.body) != string(reqs[0].body) || r.header.Get("Idempotency-Key") != reqs[0].header.Get("Idempotency-Key") {
			t.Error("a retry changed the body or the idempotency key")
		}
	}
	if e := getEmail(t, pool, id); e.Status != "sent" || e.Error != "" {
		t.Errorf("email row %+v, want sent with the error cleared", e)
	}
}

func TestEmailRateLimitedByResendWaitsWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request, n int, _ resendRequest) {
		if n < 2 {
			w.Header().Set("Retry-After", "0.1")
			answerJSON(w, 429, resendErrorBody(429, "rate_limit_exceeded", "Too many requests. You can only make 2 requests per second."))
			return
		}
		answerJSON(w, 200, `{"id":"em_ok"}`)
	})
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, sendEnv(fake))
	// One attempt: a 429 that used it would fail the job.
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
		VALUES ($1, 'email.send', $2, 1) RETURNING id`, ws, customEmail("Slow down")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	if j.Status != "completed" || j.Attempt != 1 {
		t.Fatalf("job %+v, want completed on its single attempt", j)
	}
	reqs := fake.received()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want two 429s and a success", len(reqs))
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 100*time.Millisecond {
		t.Errorf("sent again %s after a 429 with Retry-After 0.1, want at least 100ms", gap)
	}
	var snoozes int
	if err := pool.QueryRow(context.Background(), `SELECT (metadata->>'snoozes')::int FROM errand.river_job WHERE id = $1`, id).Scan(&snoozes); err != nil {
		t.Fatal(err)
	}
	if snoozes != 2 {
		t.Errorf("%d snoozes, want 2", snoozes)
	}
}

func TestEmailOutcomesOfResendErrors(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	var concurrent atomic.Int32
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request, n int, req resendRequest) {
		switch req.subject {
		case "a 422":
			answerJSON(w, 422, resendErrorBody(422, "validation_error", "Invalid `to` field. The email address needs to follow the `email@example.com` format."))
		case "a 400":
			answerJSON(w, 400, resendErrorBody(400, "invalid_attachment", "Attachment must have either a content or path."))
		case "the key reused with another body":
			answerJSON(w, 409, resendErrorBody(409, "invalid_idempotent_request", "Same idempotency key used with a different request payload."))
		case "a redirect":
			w.Header().Set("Location", "/emails")
			w.WriteHeader(http.StatusFound)
		case "always a 500":
			answerJSON(w, 500, resendErrorBody(500, "internal_server_error", "Something went wrong."))
		case "a concurrent request":
			if concurrent.Add(1) == 1 {
				answerJSON(w, 409, resendErrorBody(409, "concurrent_idempotent_requests", "Same idempotency key used while original request is still in progress."))
				return
			}
			answerJSON(w, 200, `{"id":"em_concurrent"}`)
		default:
			answerJSON(w, 200, fmt.Sprintf(`{"id":"em_%d"}`, n))
		}
	})
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, sendEnv(fake))

	cases := []struct {
		subject string
		status  string
		attempt int
		reason  string
	}{
		{"a 422", "failed", 1, "Resend answered 422 Unprocessable Entity validation_error: Invalid `to` field."},
		{"a 400", "failed", 1, "Resend answered 400 Bad Request invalid_attachment: Attachment must have either a content or path."},
		{"the key reused with another body", "failed", 1, "invalid_idempotent_request: Same idempotency key used with a different request payload."},
		{"a concurrent request", "completed", 2, "concurrent_idempotent_requests"},
	}
	ids := make([]int64, len(cases))
	for i, tc := range cases {
		ids[i] = errandtest.Enqueue(t, pool, ws, "email.send", customEmail(tc.subject))
	}
	// A 500 on the last attempt: the job is discarded and the email failed,
	// not left queued.
	var exhausted int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts) VALUES ($1, 'email.send', $2, 2) RETURNING id`,
		ws, customEmail("always a 500")).Scan(&exhausted); err != nil {
		t.Fatal(err)
	}
	// A redirect is never followed (Go would resend the POST as a GET and
	// read the list of emails as a send): the email waits for the operator.
	redirected := errandtest.Enqueue(t, pool, ws, "email.send", customEmail("a redirect"))
	t.Run("a 500 on every attempt", func(t *testing.T) {
		j := errandtest.WaitJob(t, pool, exhausted, 30*time.Second, "failed", "completed")
		if j.Attempt != 2 || !strings.Contains(j.LastError, "500") {
			t.Errorf("job %+v, want failed after its 2 attempts", j)
		}
		if e := getEmail(t, pool, exhausted); e.Status != "failed" || !strings.Contains(e.Error, "internal_server_error") {
			t.Errorf("email row %+v, want failed with Resend's reason", e)
		}
	})
	t.Run("a redirect", func(t *testing.T) {
		// The positive signal: River has recorded the snooze that gave the
		// attempt back.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var snoozes int
			if err := pool.QueryRow(context.Background(), `SELECT coalesce((metadata->>'snoozes')::int, 0) FROM errand.river_job WHERE id = $1`, redirected).Scan(&snoozes); err != nil {
				t.Fatal(err)
			}
			if snoozes > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the redirected email was not snoozed within 30s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		j := errandtest.GetJob(t, pool, redirected)
		if j.Status != "pending" || j.Attempt != 0 {
			t.Errorf("job %+v, want waiting (pending, no attempt used)", j)
		}
		if e := getEmail(t, pool, redirected); e.Status != "queued" || !strings.Contains(e.Error, "check RESEND_BASE_URL") {
			t.Errorf("email row %+v, want queued with the operator's reason", e)
		}
		for _, r := range fake.received() {
			if r.method != http.MethodPost {
				t.Errorf("a %s request followed the redirect", r.method)
			}
		}
	})
	for i, tc := range cases {
		t.Run(tc.subject, func(t *testing.T) {
			j := errandtest.WaitJob(t, pool, ids[i], 30*time.Second, "completed", "failed")
			if j.Status != tc.status || j.Attempt != tc.attempt || !strings.Contains(j.LastError, tc.reason) {
				t.Errorf("job %+v, want %s on attempt %d with %q", j, tc.status, tc.attempt, tc.reason)
			}
			e := getEmail(t, pool, ids[i])
			if tc.status == "failed" && (e.Status != "failed" || !strings.Contains(e.Error, tc.reason)) {
				t.Errorf("email row %+v, want failed with %q", e, tc.reason)
			}
			if tc.status == "completed" && e.Status != "sent" {
				t.Errorf("email row %+v, want sent", e)
			}
			if n := len(fake.withSubject(tc.subject)); n != tc.attempt {
				t.Errorf("%d requests, want %d", n, tc.attempt)
			}
		})
	}
}

func TestEmailWaitsWhileResendRefusesTheKeyAndSendsOnceItIsFixed(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	var fixed atomic.Bool
	var accepted atomic.Int32
	fake.setAnswer(func(w http.ResponseWriter, r *http.Request, n int, _ resendRequest) {
		if !fixed.Load() {
			// Resend sends no Retry-After with a 401; this one keeps the
			// test short instead of the default one-minute wait.
			w.Header().Set("Retry-After", "0.2")
			answerJSON(w, 401, resendErrorBody(401, "validation_error", "API key is invalid"))
			return
		}
		accepted.Add(1)
		answerJSON(w, 200, `{"id":"em_fixed"}`)
	})
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, sendEnv(fake))

	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
		VALUES ($1, 'email.send', $2, 2) RETURNING id`, ws, customEmail("Wait for the key")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + d.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(fake.received()) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests after 30s, want the email tried again and again", len(fake.received()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := readyz()
	if code != 503 || !strings.Contains(body, "email: Resend rejected the API key (401 Unauthorized): API key is invalid") {
		t.Errorf("/readyz %d %q, want 503 naming the rejected key", code, body)
	}
	if j := errandtest.GetJob(t, pool, id); (j.Status != "pending" && j.Status != "processing") || j.Attempt > 1 {
		t.Errorf("job %+v, want waiting without using its attempts", j)
	}
	if e := getEmail(t, pool, id); e.Status != "queued" || !strings.Contains(e.Error, "API key is invalid") {
		t.Errorf("email row %+v, want queued with the reason", e)
	}
	if n := strings.Count(d.Logs.String(), "emails are waiting: Resend rejected the API key"); n != 1 {
		t.Errorf("operator error logged %d times, want once a minute at most", n)
	}

	fixed.Store(true)
	j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
	if j.Status != "completed" || j.Attempt != 1 {
		t.Errorf("job %+v, want completed on attempt 1", j)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("sent %d times once the key was fixed, want once", n)
	}
	deadline = time.Now().Add(30 * time.Second)
	for code, body = readyz(); code != 200; code, body = readyz() {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q 30s after the email went out, want 200", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two replicas share ERRAND_RESEND_RPS: no second of arrivals at Resend holds
// more than the rate plus the one slot a window's edges can catch.
func TestEmailRateLimitIsSharedByReplicas(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	env := sendEnv(fake)
	env["ERRAND_RESEND_RPS"] = "5"
	// Few email workers each, so both replicas must send: a limiter that
	// was per process would let 10 a second through.
	env["ERRAND_QUEUES"] = "email=3"
	errandtest.StartDaemon(t, url, env)
	errandtest.StartDaemon(t, url, env)

	const emails = 15
	enqueued := time.Now()
	rows, err := pool.Query(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args)
		SELECT $1, 'email.send', jsonb_build_object('to', 'u' || g || '@example.com', 'template', 'custom', 'subject', 'n' || g, 'text', 'hi')
		FROM generate_series(1, $2) g RETURNING id`, ws, emails)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	}
	reqs := fake.received()
	if len(reqs) != emails {
		t.Fatalf("%d requests, want %d", len(reqs), emails)
	}
	var replicas int
	if err := pool.QueryRow(context.Background(), `SELECT count(DISTINCT attempted_by[array_length(attempted_by, 1)]) FROM errand.river_job WHERE id = ANY($1)`, ids).Scan(&replicas); err != nil {
		t.Fatal(err)
	}
	if replicas != 2 {
		t.Errorf("emails sent by %d replica(s), want both", replicas)
	}
	// Each send waits for its slot from the shared limiter, and the k-th
	// slot is k intervals after the first, which comes after the INSERT: so
	// the k-th request to arrive (in arrival order) arrives no earlier than
	// enqueued + k/RPS. Arrival times only get later on a busy machine, so
	// this bound cannot flake; limiters per process (10 a second from two
	// replicas) would break it by the fifth request.
	const interval = time.Second / 5
	arrivals := make([]time.Time, len(reqs))
	for i, r := range reqs {
		arrivals[i] = r.at
	}
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	for k, at := range arrivals {
		if earliest := enqueued.Add(time.Duration(k) * interval); at.Before(earliest.Add(-10 * time.Millisecond)) {
			t.Errorf("request %d arrived %s after the INSERT, before its slot %s after it: more than 5 a second", k, at.Sub(enqueued), earliest.Sub(enqueued))
		}
	}
}

func TestEmailCaptureModeSendsNothingAndShowsTheEmail(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	d := errandtest.StartDaemon(t, url, map[string]string{"RESEND_BASE_URL": fake.URL})

	id := errandtest.Enqueue(t, pool, ws, "email.send", `{"to": "ann@example.com", "template": "invite", "data": {"invite_url": "https://app.test/invite/<x>"}}`)
	second := errandtest.Enqueue(t, pool, ws, "email.send", customEmail("Second"))
	errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	errandtest.WaitJob(t, pool, second, 30*time.Second, "completed")
	e := getEmail(t, pool, id)
	if e.Status != "captured" || e.Subject != "You've been invited to ACME" || e.Sender != "errand <errand@localhost>" || e.SentAt == nil ||
		!strings.Contains(e.HTML, `href="https://app.test/invite/%3cx%3e"`) || !strings.Contains(e.Text, "https://app.test/invite/<x>") {
		t.Errorf("captured email %+v", e)
	}
	if n := len(fake.received()); n != 0 {
		t.Errorf("%d requests left the machine in capture mode", n)
	}
	if n := strings.Count(d.Logs.String(), "emails are captured in errand.emails"); n != 1 {
		t.Errorf("capture mode announced %d times, want once", n)
	}

	get := func(path string) string {
		resp, err := http.Get("http://" + d.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	list := get("/emails")
	if !strings.Contains(list, "You&#39;ve been invited to ACME") || !strings.Contains(list, "Second") || !strings.Contains(list, "ann@example.com") {
		t.Errorf("GET /emails does not list the captured emails:\n%s", list)
	}
	var emailID int64
	if err := pool.QueryRow(context.Background(), `SELECT id FROM errand.emails WHERE job_id = $1`, id).Scan(&emailID); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fmt.Sprintf("/emails/%d", emailID), fmt.Sprintf("/emails/%d?workspace=%s", emailID, ws)} {
		page := get(path)
		// The body sits escaped in a sandboxed iframe's srcdoc, never as markup of the page.
		if !strings.Contains(page, `<iframe sandbox="" srcdoc="&lt;!DOCTYPE html&gt;`) || strings.Contains(page, "<p>You've been invited") ||
			!strings.Contains(page, "https://app.test/invite/&lt;x&gt;") {
			t.Errorf("GET %s:\n%s", path, page)
		}
	}
	resp, err := http.Get("http://" + d.Addr + "/emails/999999")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /emails/999999: %d, want 404", resp.StatusCode)
	}
}

func TestEmailBadInputIsRefusedAtInsertOrFailsAtOnce(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	many := make([]string, 51)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("u%d@example.com", i))
	}

	// The allowed templates as the template directories list them.
	templates := strings.Join(email.TemplateDirectories(t), ", ")
	refused := []struct {
		name, args, code, message string
	}{
		{"an unknown template", `{"to": "a@example.com", "template": "no_such_template"}`, "22023",
			`errand: args field "template" of kind "email.send" must be one of: ` + templates + `, got "no_such_template"`},
		{"a template that is not a string", `{"to": "a@example.com", "template": 3}`, "22023", `must be one of: ` + templates + `, got "3"`},
		{"no template", `{"to": "a@example.com"}`, "22023", `errand: args for kind "email.send" are missing required field(s): template`},
		{"no recipient", `{"template": "invite", "data": {"invite_url": "x"}}`, "22023", "missing required field(s): to"},
	}
	for _, tc := range refused {
		t.Run("refused at insert: "+tc.name, func(t *testing.T) {
			_, err := pool.Exec(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'email.send', $2)`, ws, tc.args)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
				t.Errorf("got %v, want %s %q", err, tc.code, tc.message)
			}
		})
	}

	failed := []struct {
		name, args, reason string
		row                bool // an errand.emails row records the failure
	}{
		{"a bad address", `{"to": "ann.example.com", "template": "custom", "subject": "s", "text": "t"}`, `to: "ann.example.com" is not an email address`, true},
		{"51 recipients", `{"to": [` + strings.Join(many, ",") + `], "template": "custom", "subject": "s", "text": "t"}`, "to: 51 recipients, at most 50", true},
		{"a newline in the subject", `{"to": "a@example.com", "template": "custom", "subject": "Hi\r\nBcc: all@example.com", "text": "t"}`, "subject has a line break", true},
		{"a newline in a recipient's name", `{"to": "Ann\nBcc: x@example.com <a@example.com>", "template": "custom", "subject": "s", "text": "t"}`, "has a line break", true},
		{"a line break hidden in an encoded name", `{"to": "=?utf-8?q?Ann=0D=0AEve?= <a@example.com>", "template": "custom", "subject": "s", "text": "t"}`, "has a control character in its name", true},
		{"a Unicode line separator in the subject", `{"to": "a@example.com", "template": "custom", "subject": "Hi\u2028Bcc: x", "text": "t"}`, "subject has a control character", true},
		{"custom without a subject", `{"to": "a@example.com", "template": "custom", "text": "t"}`, `subject is required with template "custom"`, true},
		{"custom without html or text", `{"to": "a@example.com", "template": "custom", "subject": "s"}`, "html or text (or both) is required", true},
		{"invite without data.invite_url", `{"to": "a@example.com", "template": "invite", "data": {"inviteurl": "x"}}`, `template "invite" needs data.invite_url`, true},
		{"an attachment that is not base64", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t",
			"attachments": [{"filename": "r.pdf", "content_base64": "%%%"}]}`, "attachments[0] (r.pdf): content_base64 is not valid base64", true},
		{"an attachment named with a path", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t",
			"attachments": [{"filename": "../../r.pdf", "content_base64": "aGk="}]}`, "must be a plain file name", true},
		{"a tag with a space", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "tags": {"user id": "1"}}`, `tags: name "user id"`, true},
		{"a bad reply_to", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "reply_to": "nobody"}`, `reply_to: "nobody" is not an email address`, true},
		{"to that is a number", `{"to": 5, "template": "custom", "subject": "s", "text": "t"}`, `"to" must be an address or an array of addresses`, false},
		// Fields email.send does not have would be dropped without a word
		// (jobs.WithStrictArgs): the copy, the sender or the reply address
		// the app asked for would silently not be used.
		{"a cc field", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "cc": "boss@example.com"}`, `decode args: json: unknown field "cc"`, false},
		{"a bcc field", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "bcc": ["audit@example.com"]}`, `decode args: json: unknown field "bcc"`, false},
		{"a from field", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "from": "ceo@acme.com"}`, `decode args: json: unknown field "from"`, false},
		{"replyTo for reply_to", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "replyTo": "support@acme.com"}`, `decode args: json: unknown field "replyTo"`, false},
		{"a misspelt attachment field", `{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t",
			"attachments": [{"filename": "r.csv", "content_base64": "aGk=", "contentType": "text/csv"}]}`, `decode args: json: unknown field "contentType"`, false},
	}
	ids := make([]int64, len(failed))
	for i, tc := range failed {
		ids[i] = errandtest.Enqueue(t, pool, ws, "email.send", tc.args)
	}
	for i, tc := range failed {
		t.Run("failed at once: "+tc.name, func(t *testing.T) {
			j := errandtest.WaitJob(t, pool, ids[i], 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.reason) {
				t.Errorf("job %+v, want failed on attempt 1 with %q", j, tc.reason)
			}
			if !tc.row {
				return
			}
			if e := getEmail(t, pool, ids[i]); e.Status != "failed" || !strings.Contains(e.Error, tc.reason) {
				t.Errorf("email row %+v, want failed with %q", e, tc.reason)
			}
		})
	}
}

// The README's example INSERTs (docs/email.md), as written there.
func TestEmailDocumentedExamplesWork(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, nil)
	examples := map[string]string{
		"invite": `{
  "to": "ann@example.com",
  "template": "invite",
  "data": {"invite_url": "https://app.example.com/invite/7f3a", "inviter_name": "Bob"}
}`,
		"password_reset": `{
  "to": "Ann Lee <ann@example.com>",
  "template": "password_reset",
  "data": {"reset_url": "https://app.example.com/reset/9c1e", "expires_in": "1 hour"}
}`,
		"custom": `{
  "to": ["ann@example.com", "bob@example.com"],
  "template": "custom",
  "subject": "Your export is ready",
  "html": "<p>Your export is attached.</p>",
  "text": "Your export is attached.",
  "reply_to": "support@acme.com",
  "attachments": [{"filename": "export.csv", "content_base64": "aWQsbmFtZQoxLEFubgo=", "content_type": "text/csv"}],
  "tags": {"category": "export", "plan": "pro"}
}`,
	}
	wantSubject := map[string]string{
		"invite": "You've been invited to ACME", "password_reset": "Reset your ACME password", "custom": "Your export is ready",
	}
	for name, args := range examples {
		t.Run(name, func(t *testing.T) {
			id := errandtest.Enqueue(t, pool, ws, "email.send", args)
			if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" {
				t.Fatalf("job %+v", j)
			}
			if e := getEmail(t, pool, id); e.Status != "captured" || e.Subject != wantSubject[name] {
				t.Errorf("email %+v", e)
			}
		})
	}
}
