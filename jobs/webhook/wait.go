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
// A snoozed delivery goes back to the database and waits a second or more
// (ERRAND_WEBHOOK_HELD_BACK_WAIT) before any worker looks at it again, so
// with more webhook workers than an endpoint's slots a backlog for one busy
// endpoint spent its time snoozing while its slots came free every few
// milliseconds. Each slot that one of this replica's deliveries to the
// same endpoint gives back wakes one delivery waiting here (the longest
// waiting), which asks for a slot again at once; it competes with the
// deliveries fetched meanwhile, and the endpoint's free slots go to the
// oldest jobs first (errand.webhook_take_slots), so a woken delivery that
// loses waits again while its time lasts.
//
// What it costs is bounded: at most as many deliveries wait for an
// endpoint as it has slots (the others snooze at once, as before), each for
// at most ERRAND_WEBHOOK_HELD_BACK_WAIT, so a slow endpoint holds at most
// twice its cap of this replica's workers. A waiting delivery is running as
// far as River is concerned, and its attempt is the one it will use. Slots
// given back by other replicas wake no one here: those waiters snooze when
// their wait ends.
type slotWaits struct {
	mu sync.Mutex
	by map[string]*slotWait
	// waiting counts the waiting deliveries
	// (errand_webhook_waiting_deliveries); nil: not counted.
	waiting prometheus.Gauge
}

type slotWait struct {
	waiting int
	// freed holds one token per slot given back while someone waits, up
	// to the endpoint's cap.
	freed chan struct{}
}

// wait waits for a slot of endpoint to be given back in this replica, for
// at most d. It reports false at once when limit deliveries wait for it
// already, and false when d passed or ctx ended without a slot.
func (s *slotWaits) wait(ctx context.Context, endpoint string, limit int, d time.Duration) bool {
	s.mu.Lock()
	w := s.by[endpoint]
	if w == nil {
		if s.by == nil {
			s.by = map[string]*slotWait{}
		}
		w = &slotWait{freed: make(chan struct{}, max(limit, 1))}
		s.by[endpoint] = w
	}
	if w.waiting >= limit {
		s.mu.Unlock()
		return false
	}
	w.waiting++
	s.mu.Unlock()
	if s.waiting != nil {
		s.waiting.Inc()
		defer s.waiting.Dec()
	}

	t := time.NewTimer(d)
	defer t.Stop()
	got := false
	select {
	case <-w.freed:
		got = true
	case <-t.C:
	case <-ctx.Done():
	}

	s.mu.Lock()
	w.waiting--
	if w.waiting == 0 {
		delete(s.by, endpoint)
	}
	s.mu.Unlock()
	return got
}

// freed says that this replica gave back a slot of endpoint: one delivery
// waiting for it, if any, asks again.
func (s *slotWaits) freed(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.by[endpoint]; w != nil {
		select {
		case w.freed <- struct{}{}:
		default: // as many tokens as slots are waiting already
		}
	}
}
