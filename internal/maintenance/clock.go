package maintenance

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is all the time a service reads or waits on, so tests can drive it
// (River injects a time generator the same way). A nil Clock in a config is
// the real one.
type Clock interface {
	// Now is the current time. The real clock's carries Go's monotonic
	// reading, so durations between two readings ignore wall-clock steps.
	Now() time.Time
	// AfterFunc calls f once d has passed, unless the timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
	// AfterFuncAt calls f once the clock reads t, unless the timer is stopped
	// first. Waits for a deadline use it rather than AfterFunc(t.Sub(Now())),
	// which a test's clock moved between the two calls would push back.
	AfterFuncAt(t time.Time, f func()) Timer
}

// Timer is a pending AfterFunc; *time.Timer is one.
type Timer interface {
	// Stop reports whether it stopped the timer before f was called.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
func (realClock) AfterFuncAt(t time.Time, f func()) Timer {
	return time.AfterFunc(time.Until(t), f)
}

func clockOrReal(c Clock) Clock {
	if c == nil {
		return realClock{}
	}
	return c
}

// sleepUntil waits on c until t; false if ctx ends first. It takes a time,
// not a duration, so a clock moved before the wait starts still counts.
func sleepUntil(ctx context.Context, c Clock, t time.Time) bool {
	if !t.After(c.Now()) {
		return ctx.Err() == nil
	}
	due := make(chan struct{})
	timer := c.AfterFuncAt(t, func() { close(due) })
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-due:
		return true
	}
}

// withTimeout is context.WithTimeout on c. The context's cause, not its
// Err, says the time ran out.
func withTimeout(ctx context.Context, c Clock, d time.Duration) (context.Context, context.CancelFunc) {
	return withDeadline(ctx, c, c.Now().Add(d))
}

// withDeadline is context.WithDeadline on c, with the cause as withTimeout's.
func withDeadline(ctx context.Context, c Clock, t time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	timer := c.AfterFuncAt(t, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		timer.Stop()
		cancel(context.Canceled)
	}
}

// ManualClock is a Clock for tests: time stands still until Advance moves
// it. Advance calls every timer that falls due, in order of due time, on
// the caller's goroutine before it returns, so a test can check the effect
// of a deadline right after passing it. Callbacks must not block.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	clock *ManualClock
	due   time.Time
	f     func()
}

// NewManualClock returns a ManualClock that reads now until advanced.
func NewManualClock(now time.Time) *ManualClock { return &ManualClock{now: now} }

// Now is the clock's current time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms a timer for d from now. Like time.AfterFunc, a timer that
// is already due (d <= 0) calls f on a goroutine of its own.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.arm(c.now.Add(d), f)
}

// AfterFuncAt arms a timer for t, reading the clock under the same lock that
// Advance holds, so a concurrent Advance cannot move the deadline.
func (c *ManualClock) AfterFuncAt(t time.Time, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.arm(t, f)
}

func (c *ManualClock) arm(due time.Time, f func()) Timer {
	t := &manualTimer{clock: c, f: f}
	if !due.After(c.now) {
		go f()
		return t
	}
	t.due = due
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock d forward, stopping at each timer due on the way
// (including ones that earlier callbacks arm) to call it at its own time.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		next := -1
		for i, t := range c.timers {
			// Equal due times fire in the order they were armed.
			if !t.due.After(end) && (next < 0 || t.due.Before(c.timers[next].due)) {
				next = i
			}
		}
		if next < 0 {
			c.now = end
			c.mu.Unlock()
			return
		}
		t := c.timers[next]
		c.timers = slices.Delete(c.timers, next, next+1)
		c.now = t.due
		c.mu.Unlock()
		t.f()
	}
}

func (t *manualTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	return true
}
