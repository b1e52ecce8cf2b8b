package webhook

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// slotWaits are the deliveries of this replica that found their endpoint
// full and wait here, for a while, for a slot this replica gives back,
// instead of snoozing at once.
//
// A snoozed delivery goes back to the database and waits until a slot
// given back wakes it (errand.webhook_wake_held) or its snooze ends, and is
// then fetched and loaded again; with more webhook workers than an
// endpoint's slots, a backlog for one busy endpoint would spend its time
// on that round. A delivery of this replica that finishes with a delivery
// waiting here for the same endpoint hands its slot over instead of giving
// it back: the transaction that logs the finished attempt moves the lease
// to the longest waiting delivery (queueRecord), which then sends at once,
// with the message and endpoint it loaded, no second load. A slot given
// back without an heir (a failed attempt's, or a success's when no one
// waited as it was logged) wakes the longest waiting delivery to ask for a
// slot again (against deliveries fetched meanwhile;
// free slots go to the oldest jobs first, errand.webhook_take_slots, so
// one that loses waits again while its time lasts).
//
// What it costs is bounded: at most as many deliveries wait for an
// endpoint as it has slots (the others snooze at once), each for at most
// ERRAND_WEBHOOK_HELD_BACK_WAIT, so a slow endpoint holds at most twice
// its cap of this replica's workers. A waiting delivery is running as far
// as River is concerned, and its attempt is the one it will use. Slots
// given back by other replicas wake no one here (they wake a snoozed
// delivery through the database): those waiters snooze when their wait
// ends.
type slotWaits struct {
	mu sync.Mutex
	by map[string][]*waiter // by endpoint, longest waiting first
	// waiting counts the waiting deliveries
	// (errand_webhook_waiting_deliveries); nil: not counted.
	waiting prometheus.Gauge
	// claimedWait, when set (tests), is called when a claimed waiter whose
	// own wait ended starts waiting for the claim's outcome.
	claimedWait func()
}

// waiter is one waiting delivery.
type waiter struct {
	jobID   int64
	attempt int
	// got receives what ended the wait, once, from whoever took the
	// waiter off the queue (claim).
	got chan handoff
}

// handoff is what ended a wait, and with waitHanded the endpoint's address
// and secrets as the hand-over's transaction read them: the waiter's own
// load is older, and the app may have changed the URL or rotated the
// secret while it waited.
type handoff struct {
	r  waitResult
	ep endpointNow
}

// endpointNow is where a delivery goes and what signs it.
type endpointNow struct{ url, secret, previousSecret string }

// waitResult is what ended a wait.
type waitResult int

const (
	waitOver   waitResult = iota // no room to wait, or the time or the context ran out
	waitFreed                    // a slot was given back: ask for one again
	waitHanded                   // a finished delivery handed its slot over: this one holds it
)

// wait waits, for at most d, for a slot of endpoint that a delivery of this
// replica gives back or hands over; a slot handed over comes with the
// endpoint as the hand-over read it. It returns waitOver at once when limit
// deliveries wait for it already. A waiter taken off the queue (claim) by
// the time its wait ends always learns what became of the claim: a
// handed-over slot is never left with a delivery that went away.
func (s *slotWaits) wait(ctx context.Context, endpoint string, limit int, d time.Duration, jobID int64, attempt int) (waitResult, endpointNow) {
	s.mu.Lock()
	if len(s.by[endpoint]) >= limit {
		s.mu.Unlock()
		return waitOver, endpointNow{}
	}
	w := &waiter{jobID: jobID, attempt: attempt, got: make(chan handoff, 1)}
	if s.by == nil {
		s.by = map[string][]*waiter{}
	}
	s.by[endpoint] = append(s.by[endpoint], w)
	s.mu.Unlock()
	if s.waiting != nil {
		s.waiting.Inc()
		defer s.waiting.Dec()
	}

	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case h := <-w.got:
		return h.r, h.ep
	case <-t.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	q := s.by[endpoint]
	for i, x := range q {
		if x == w {
			s.remove(endpoint, i)
			s.mu.Unlock()
			return waitOver, endpointNow{}
		}
	}
	s.mu.Unlock()
	// Claimed meanwhile: the claimer says what came of it as soon as its
	// transaction ends.
	if s.claimedWait != nil {
		s.claimedWait()
	}
	h := <-w.got
	return h.r, h.ep
}

// claim takes the longest waiting delivery for endpoint off the queue, or
// returns nil. The caller must send it a result.
func (s *slotWaits) claim(endpoint string) *waiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.by[endpoint]) == 0 {
		return nil
	}
	w := s.by[endpoint][0]
	s.remove(endpoint, 0)
	return w
}

// remove drops the i-th waiter of endpoint; s.mu is held.
func (s *slotWaits) remove(endpoint string, i int) {
	q := append(s.by[endpoint][:i:i], s.by[endpoint][i+1:]...)
	if len(q) == 0 {
		delete(s.by, endpoint)
		return
	}
	s.by[endpoint] = q
}

// freed says that this replica gave back a slot of endpoint: the delivery
// waiting longest for it, if any, asks again.
func (s *slotWaits) freed(endpoint string) {
	if w := s.claim(endpoint); w != nil {
		w.got <- handoff{r: waitFreed}
	}
}
