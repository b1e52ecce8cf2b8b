package webhook

import "sync"

// group runs calls in batches, the way PostgreSQL commits concurrent
// transactions together: a caller finding fewer than max flushes running
// flushes everything queued so far, itself included; a caller arriving
// while max run waits, and the first flush to end hands the queue to the
// first waiter, who flushes it. Batches are as large as the load makes
// them, with no timer: one caller alone is flushed at once.
//
// Each webhook delivery needs bookkeeping at both ends of its request (read
// the message and take a slot; log the attempt); workers each running
// their own transactions spend most of their time in round trips. Batched
// (books.go), one transaction serves many.
type group[In, Out any] struct {
	max   int
	flush func(batch []*call[In, Out]) // sets every call's out or err

	mu    sync.Mutex
	queue []*call[In, Out]
	busy  int
}

type call[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{}
	lead chan []*call[In, Out]
}

func (g *group[In, Out]) do(in In) (Out, error) {
	c := &call[In, Out]{in: in, done: make(chan struct{}), lead: make(chan []*call[In, Out], 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	var batch []*call[In, Out]
	if g.busy < max(g.max, 1) {
		g.busy++
		batch, g.queue = g.queue, nil
		g.mu.Unlock()
	} else {
		g.mu.Unlock()
		select {
		case <-c.done:
			return c.out, c.err
		case batch = <-c.lead:
		}
	}
	g.flush(batch)
	for _, b := range batch {
		close(b.done)
	}
	// Hand what queued meanwhile to its first caller, or stand down.
	g.mu.Lock()
	next := g.queue
	g.queue = nil
	if len(next) == 0 {
		g.busy--
	}
	g.mu.Unlock()
	if len(next) > 0 {
		next[0].lead <- next
	}
	return c.out, c.err
}
