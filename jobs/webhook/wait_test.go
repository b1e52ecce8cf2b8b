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
	if w := s.by[endpoint]; w != nil {
		return w.waiting
	}
	return 0
}

// At most limit deliveries wait for one endpoint (another is told to snooze
// at once, while other endpoints still have room); a slot given back wakes
// exactly one of them; the others keep waiting until their context ends.
func TestSlotWaitsWakeOneWaiterPerSlotGivenBack(t *testing.T) {
	var s slotWaits
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan bool, 2)
	for range 2 {
		go func() { got <- s.wait(ctx, "e1", 2, time.Hour) }()
	}
	for deadline := time.Now().Add(10 * time.Second); s.waiters("e1") < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries waiting for an endpoint with 2 slots, want 2", s.waiters("e1"))
		}
	}
	if s.wait(ctx, "e1", 2, time.Hour) {
		t.Fatal("a third delivery waited for an endpoint with 2 slots and 2 waiting")
	}
	if s.wait(ctx, "e2", 2, time.Millisecond) {
		t.Fatal("a delivery to another endpoint was woken without a slot given back")
	}
	s.freed("e1")
	if !<-got {
		t.Fatal("the slot given back did not wake a waiting delivery")
	}
	if n := s.waiters("e1"); n != 1 {
		t.Fatalf("%d deliveries still waiting after one slot was given back, want 1", n)
	}
	cancel()
	if <-got {
		t.Fatal("a delivery whose context ended reported a slot")
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
	if s.wait(context.Background(), "e1", 1, 5*time.Millisecond) {
		t.Fatal("a delivery was woken by a slot given back before it waited")
	}
}
