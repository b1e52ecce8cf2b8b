package webhook_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// Receivers that never answer, each its own way, fail the attempt with a
// reason naming what ran out, are retried on the schedule, and leave the
// endpoint enabled (failing): a connection never accepted and a TLS
// handshake never answered (ERRAND_WEBHOOK_CONNECT_TIMEOUT), a request never
// answered (ERRAND_WEBHOOK_TIMEOUT), and a port nothing listens on.
func TestReceiversThatNeverAnswerFailTheAttempt(t *testing.T) {
	t.Parallel()
	never := newHoldingReceiver(t, func(int) bool { return true })
	cases := []struct {
		name, url, reason string
	}{
		{"a receiver that never accepts the connection", "http://" + fullListener(t) + "/hook", "could not connect within 2s (ERRAND_WEBHOOK_CONNECT_TIMEOUT)"},
		{"a receiver that never answers the TLS handshake", "https://" + silentListener(t) + "/hook", "could not connect within 2s (ERRAND_WEBHOOK_CONNECT_TIMEOUT)"},
		{"a receiver that never answers the request", never.URL + "/hook", "no answer within 5s (ERRAND_WEBHOOK_TIMEOUT)"},
		{"nothing listening", "http://" + closedPort(t) + "/hook", "connect: connection refused"},
	}
	url, pool := errandtest.MigratedDB(t, kinds()...)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, env(map[string]string{
		// Long enough that a stalled machine does not turn a refused
		// connection into a timeout, or one timeout into the other.
		"ERRAND_WEBHOOK_CONNECT_TIMEOUT": "2s",
		"ERRAND_WEBHOOK_TIMEOUT":         "5s",
		"ERRAND_WEBHOOK_RETRY_SCHEDULE":  "10ms",
	}), kinds()...)
	endpoints := map[string]int{}
	for i, c := range cases {
		ep, _ := newEndpoint(t, pool, ws, c.url)
		endpoints[ep] = i
	}
	msg, _ := dispatch(t, pool, ws, `{"event_type": "a.b", "payload": {}}`)
	for _, id := range deliveries(t, pool, msg) {
		j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed")
		if j.Status != "failed" || j.Attempt != 2 || !strings.Contains(j.LastError, "attempt 2 of 2") {
			t.Errorf("delivery %+v, want failed after 2 attempts", j)
		}
	}
	as := attempts(t, pool, msg)
	if len(as) != 2*len(cases) {
		t.Fatalf("%d attempts, want 2 per endpoint: %+v", len(as), as)
	}
	for _, a := range as {
		c := cases[endpoints[a.EndpointID]]
		if a.Status != 0 || !strings.Contains(a.Error, c.reason) {
			t.Errorf("%s: attempt %d logged status %d, error %q; want no status and %q", c.name, a.Attempt, a.Status, a.Error, c.reason)
		}
	}
	for ep, i := range endpoints {
		if e := getEndpoint(t, pool, ep); !e.Enabled || e.FailingSince == nil {
			t.Errorf("%s: endpoint %+v, want enabled and failing", cases[i].name, e)
		}
	}
}

// fullListener is a TCP socket on 127.0.0.1 listening with a backlog of
// zero whose one queued connection is never accepted: Linux drops the SYN
// of every further connection, which then waits until the dialer's timeout.
// The first connection must get in (a generous timeout); the first one that
// does not, after a second's wait, shows the queue is full.
func fullListener(t *testing.T) string {
	t.Helper()
	addr := rawSocket(t, true)
	for i := 0; ; i++ {
		timeout := time.Second
		if i == 0 {
			timeout = 10 * time.Second
		}
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			if i == 0 {
				t.Fatalf("the first connection to %s: %v", addr, err)
			}
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
		if i == 10 {
			t.Fatalf("%s accepted 10 connections with a backlog of 0", addr)
		}
	}
	return addr
}

// silentListener accepts connections and never says a word.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// closedPort is a port of 127.0.0.1 held by a socket that is bound but not
// listening, so a connection is refused and no one else can listen there.
func closedPort(t *testing.T) string { return rawSocket(t, false) }

func rawSocket(t *testing.T, listen bool) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if listen {
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
