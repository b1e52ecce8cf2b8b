package webhook

import (
	"context"
	"testing"
	"time"
)

// waiters counts the deliveries waiting for endpoint.
func (s *slotWaits) waiters(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.by[endpoint])
}

// waitForWaiters waits (a generous bound) until n deliveries wait for endpoint.
func waitForWaiters(t *testing.T, s *slotWaits, endpoint string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.waiters(endpoint) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries waiting for %s, want %d", s.waiters(endpoint), endpoint, n)
		}
	}
}

// At most limit deliveries wait for one endpoint (another is told at once
// that its wait is over, while other endpoints still have room); a slot
// given back wakes exactly one of them, the longest waiting; the others
// keep waiting until their context ends.
func TestSlotWaitsWakeOneWaiterPerSlotGivenBack(t *testing.T) {
	var s slotWaits
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan waitResult, 2)
	first := make(chan waitResult, 1)
	go func() { first <- resultOf(s.wait(ctx, "e1", 2, time.Hour, 1, 1)) }()
	waitForWaiters(t, &s, "e1", 1)
	go func() { got <- resultOf(s.wait(ctx, "e1", 2, time.Hour, 2, 1)) }()
	waitForWaiters(t, &s, "e1", 2)
	if r, _ := s.wait(ctx, "e1", 2, time.Hour, 3, 1); r != waitOver {
		t.Fatalf("a third delivery waiting for an endpoint with 2 slots and 2 waiting: %v, want waitOver at once", r)
	}
	if r, _ := s.wait(ctx, "e2", 2, time.Millisecond, 4, 1); r != waitOver {
		t.Fatalf("a delivery to another endpoint ended its wait with %v without a slot given back", r)
	}
	s.freed("e1")
	if r := within(t, first); r != waitFreed {
		t.Fatalf("the longest waiting delivery got %v for a slot given back, want waitFreed", r)
	}
	if n := s.waiters("e1"); n != 1 {
		t.Fatalf("%d deliveries still waiting after one slot was given back, want 1", n)
	}
	cancel()
	if r := within(t, got); r != waitOver {
		t.Fatalf("a delivery whose context ended got %v, want waitOver", r)
	}
	if n := len(s.by); n != 0 {
		t.Errorf("%d endpoints still tracked with no one waiting", n)
	}
}

// A slot given back while no one waits is not kept for a later delivery
// (it may already be taken in the database), and a wait without a slot
// given back ends when its time is up.
func TestSlotWaitsKeepNoSlotForLaterAndTimeOut(t *testing.T) {
	var s slotWaits
	s.freed("e1")
	if r, _ := s.wait(context.Background(), "e1", 1, 5*time.Millisecond, 1, 1); r != waitOver {
		t.Fatalf("a delivery was woken (%v) by a slot given back before it waited", r)
	}
}

// A finished delivery claims the longest waiting one as the heir of its
// slot; the heir, taken off the queue, waits for the claim's outcome even
// when its own time or context ends first, so a slot handed over in the
// database is never left with a delivery that went away.
func TestClaimedWaiterWaitsForTheHandOverPastItsOwnDeadline(t *testing.T) {
	blocked := make(chan struct{})
	s := slotWaits{claimedWait: func() { close(blocked) }}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan handoff, 1)
	go func() {
		r, ep := s.wait(ctx, "e1", 1, time.Hour, 7, 2)
		got <- handoff{r: r, ep: ep}
	}()
	waitForWaiters(t, &s, "e1", 1)
	heir := s.claim("e1")
	if heir == nil || heir.jobID != 7 || heir.attempt != 2 {
		t.Fatalf("claimed %+v, want job 7's attempt 2", heir)
	}
	if s.claim("e1") != nil {
		t.Fatal("a second claim found a waiter: the first one's heir is still queued")
	}
	cancel()
	within(t, blocked) // its context ended, and it waits for the claim's outcome
	now := endpointNow{url: "https://new.example/hook", secret: "whsec_new", previousSecret: "whsec_old"}
	heir.got <- handoff{r: waitHanded, ep: now}
	if h := within(t, got); h.r != waitHanded || h.ep != now {
		t.Fatalf("the heir got %+v, want waitHanded with the endpoint as the hand-over read it, %+v", h, now)
	}
}

// resultOf is a wait's result without the endpoint that comes with a
// hand-over.
func resultOf(r waitResult, _ endpointNow) waitResult { return r }

// within receives from ch, failing the test (rather than hanging it) when
// nothing arrives within a generous bound.
func within[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("nothing arrived within 30s")
		panic("unreachable")
	}
}
