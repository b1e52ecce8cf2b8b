package webhook_test

import (
	"net/http"
	"os"
	osexec "os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/internal/testdb"
)

// A 400 and a 404 are failures like a 500: retried on the schedule, the
// endpoint left enabled (only 410 disables it at once).
func TestA400AndA404AreRetriedNotDisabled(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		switch n {
		case 0:
			http.Error(w, "bad", http.StatusBadRequest)
		case 1:
			http.Error(w, "nothing here", http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(nil), kinds()...)
	ep, _ := newEndpoint(t, pool, ws, rc.URL)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	if j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 3 {
		t.Fatalf("delivery %+v, want completed on attempt 3", j)
	}
	as := attempts(t, pool, msg)
	if len(as) != 3 || as[0].Status != 400 || !strings.Contains(as[0].Error, "answered 400 Bad Request") ||
		as[1].Status != 404 || !strings.Contains(as[1].Error, "answered 404 Not Found") || as[2].Status != 204 {
		t.Errorf("attempts %+v, want 400, 404, 204", as)
	}
	if e := getEndpoint(t, pool, ep); !e.Enabled || e.DisabledReason != "" || e.FailingSince != nil {
		t.Errorf("endpoint %+v, want enabled and healthy after the success", e)
	}
}

// A long answer is read only in part: the first 4 KB are kept in the
// attempts log, at most 64 KB more are read to reuse the connection, and
// the rest is never read. The receiver here never stops sending; the
// delivery completes anyway, long before ERRAND_WEBHOOK_TIMEOUT (90 s), and
// the receiver sees the connection closed under it.
func TestAnEndlessAnswerIsReadOnlyInPart(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sent []byte // the first 8 KB sent
	var total int
	hungUp := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int, body []byte) {
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("0123456789abcdef", 1024)) // 16 KB
		for i := 0; ; i++ {
			chunk[0] = byte('A' + i%26)
			k, err := w.Write(chunk)
			mu.Lock()
			if len(sent) < 8<<10 {
				sent = append(sent, chunk[:k]...)
			}
			total += k
			mu.Unlock()
			if err != nil {
				close(hungUp)
				return
			}
		}
	})
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{"ERRAND_WEBHOOK_TIMEOUT": "90s"}), kinds()...)
	newEndpoint(t, pool, ws, rc.URL)

	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	if j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
		t.Fatalf("delivery %+v, want completed on attempt 1", j)
	}
	select {
	case <-hungUp:
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver was still sending 30s after the delivery completed: the answer is read to its end")
	}
	as := attempts(t, pool, msg)
	mu.Lock()
	defer mu.Unlock()
	if len(as) != 1 || len(as[0].Response) != 4<<10 || as[0].Response != string(sent[:4<<10]) {
		t.Errorf("logged %d attempts, the first with %d bytes of the answer; want 1 with its first 4096 bytes", len(as), len(as[0].Response))
	}
	t.Logf("the receiver wrote %d bytes before the delivery closed the connection", total)
}

// No proxy from the environment: a proxy dials for errand, past the check
// of the address dialled. The test binary runs this test again in a process
// of its own with HTTP_PROXY and the rest set (net/http reads them once
// per process), against an endpoint on a documentation address: errand
// would reach it only through the proxy, which records any request.
func TestProxyVariablesAreIgnored(t *testing.T) {
	if os.Getenv("ERRAND_TEST_PROXY_CHILD") != "" {
		proxyVariablesChild(t)
		return
	}
	t.Parallel()
	proxy := newReceiver(t, nil)
	cmd := osexec.Command(os.Args[0], "-test.run=^TestProxyVariablesAreIgnored$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "ERRAND_TEST_PROXY_CHILD=1", "DATABASE_URL="+testdb.AdminURL(t), "NO_PROXY=", "no_proxy=")
	for _, name := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
		cmd.Env = append(cmd.Env, name+"="+proxy.URL)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestProxyVariablesAreIgnored") {
		t.Fatalf("the test with proxy variables set: %v\n%s", err, out)
	}
	if reqs := proxy.received(); len(reqs) != 0 {
		t.Errorf("the proxy named in HTTP_PROXY got %d requests, the first for %s", len(reqs), reqs[0].path)
	}
}

func proxyVariablesChild(t *testing.T) {
	const hook = "http://192.0.2.1/hook" // TEST-NET-1: nothing answers there
	req, _ := http.NewRequest(http.MethodPost, hook, nil)
	if p, err := http.ProxyFromEnvironment(req); err != nil || p == nil {
		t.Fatalf("the environment names no proxy for %s (%v, %v): the test would prove nothing", hook, p, err)
	}
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{
		"ERRAND_WEBHOOK_ALLOW_CIDRS":     "127.0.0.1/32,192.0.2.0/24",
		"ERRAND_WEBHOOK_CONNECT_TIMEOUT": "200ms",
		"ERRAND_WEBHOOK_RETRY_SCHEDULE":  "10ms",
	}), kinds()...)
	newEndpoint(t, pool, ws, hook)
	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	j := errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed", "failed")
	if j.Status != "failed" || j.Attempt != 2 {
		t.Errorf("delivery %+v, want failed after 2 attempts (nothing answers at %s)", j, hook)
	}
	for _, a := range attempts(t, pool, msg) {
		if a.Status != 0 || a.Error == "" {
			t.Errorf("attempt %+v, want no answer", a)
		}
	}
}
