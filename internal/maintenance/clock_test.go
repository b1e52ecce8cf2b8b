package maintenance

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestManualClockFiresDueTimersInOrderAtTheirTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewManualClock(start)
	var fired []time.Duration
	record := func() { fired = append(fired, c.Now().Sub(start)) }
	c.AfterFunc(3*time.Second, record)
	c.AfterFunc(1*time.Second, func() {
		record()
		// Armed by a callback, still inside the advance: fires in it.
		c.AfterFunc(500*time.Millisecond, record)
	})
	stopped := c.AfterFunc(2*time.Second, record)
	if !stopped.Stop() {
		t.Error("Stop on a pending timer reported it had fired")
	}
	c.Advance(2 * time.Second)
	if want := []time.Duration{time.Second, 1500 * time.Millisecond}; !slices.Equal(fired, want) {
		t.Errorf("fired at %v, want %v", fired, want)
	}
	if got := c.Now().Sub(start); got != 2*time.Second {
		t.Errorf("now %s after advancing 2s", got)
	}
	c.Advance(time.Second)
	if want := []time.Duration{time.Second, 1500 * time.Millisecond, 3 * time.Second}; !slices.Equal(fired, want) {
		t.Errorf("fired at %v, want %v", fired, want)
	}
}

// Waits take a due time, so a clock moved before the wait is armed still
// ends it.
func TestSleepUntilAndWithTimeoutFollowTheClock(t *testing.T) {
	c := NewManualClock(time.Now())
	due := c.Now().Add(time.Second)
	c.Advance(time.Second)
	if !sleepUntil(context.Background(), c, due) {
		t.Error("sleepUntil a time already passed did not return true")
	}

	ctx, cancel := withTimeout(context.Background(), c, time.Second)
	defer cancel()
	c.Advance(time.Second)
	select {
	case <-ctx.Done():
	default:
		t.Fatal("not done once its timeout had passed on the clock")
	}
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Errorf("cause %v, want DeadlineExceeded", context.Cause(ctx))
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if sleepUntil(ctx, c, c.Now().Add(time.Hour)) {
		t.Error("sleepUntil returned true on a cancelled context")
	}
}

// AfterFuncAt is due at its time, however far the clock moved since the
// caller last read it; a time already passed fires at once.
func TestAfterFuncAtKeepsItsDeadlineWhenTheClockMovesFirst(t *testing.T) {
	c := NewManualClock(time.Now())
	start := c.Now()
	c.Advance(300 * time.Millisecond) // a test advancing before the wait is armed
	var firedAt time.Time
	c.AfterFuncAt(start.Add(time.Second), func() { firedAt = c.Now() })
	c.Advance(699 * time.Millisecond)
	if !firedAt.IsZero() {
		t.Fatalf("fired at %s, before its time", firedAt.Sub(start))
	}
	c.Advance(time.Millisecond)
	if !firedAt.Equal(start.Add(time.Second)) {
		t.Fatalf("fired at %v after start, want exactly 1s", firedAt.Sub(start))
	}

	past := make(chan struct{})
	c.AfterFuncAt(start, func() { close(past) })
	select {
	case <-past:
	case <-time.After(30 * time.Second):
		t.Fatal("a timer for a time already passed did not fire")
	}
}
