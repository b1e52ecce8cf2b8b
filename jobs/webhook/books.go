package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/errand-dev/errand/store"
)

// book is one delivery's bookkeeping: a delivery to prepare (read its
// message and endpoint, take a slot), or a successful attempt to log (and
// its slot to give back).
type book struct {
	store       *store.Store
	workspaceID string
	load        *wanted
	done        *attemptRow
}

// bookKey is the batching key: one transaction per workspace (and pool: a
// replica that rejoined after fencing has a new one).
type bookKey struct {
	store       *store.Store
	workspaceID string
}

const (
	// batchTimeout bounds one batch's transaction.
	batchTimeout = 10 * time.Second
	// bookConnsShare is the share of the pool's connections that the
	// batches of one replica may hold at once.
	bookConnsShare = 4
)

// bookkeeper batches the deliveries' bookkeeping, both ends of their
// requests together. Each workspace has a group (batch.go) that runs one
// batch at a time: deliveries arriving while it runs form the next, larger
// batch. The groups are independent, so a workspace whose transaction
// waits (for a lock an app holds on one of its endpoints' rows, say) holds
// up only its own deliveries. At most a quarter of the pool's connections
// are held by batches at once (River's fetch and completion, and failures'
// logs, share the pool); batches beyond that wait for one.
//
// Measured against one group per end for the whole replica with two
// batches at a time (BenchmarkDeliver): one batch at a time was 1.02 to
// 1.39 times as fast in 6 pairs of 7 (0.93 in one); see docs/webhooks.md.
type bookkeeper struct {
	// book runs a batch in one transaction, setting every call's out or
	// err.
	book func(ctx context.Context, k bookKey, batch []*call[book, delivery])

	mu     sync.Mutex
	groups map[bookKey]*bookGroup
	conns  chan struct{}
}

type bookGroup struct {
	g     *group[book, delivery]
	users int // callers inside g.do; the group goes when none is left
}

// do runs in's bookkeeping in a batch and returns its result.
func (b *bookkeeper) do(in book) (delivery, error) {
	k := bookKey{store: in.store, workspaceID: in.workspaceID}
	b.mu.Lock()
	if b.groups == nil {
		b.groups = map[bookKey]*bookGroup{}
		b.conns = make(chan struct{}, max(2, int(in.store.Pool().Config().MaxConns)/bookConnsShare))
	}
	e := b.groups[k]
	if e == nil {
		e = &bookGroup{g: &group[book, delivery]{max: 1, flush: func(batch []*call[book, delivery]) { b.flush(k, batch) }}}
		b.groups[k] = e
	}
	e.users++
	b.mu.Unlock()

	out, err := e.g.do(in)

	b.mu.Lock()
	if e.users--; e.users == 0 {
		delete(b.groups, k)
	}
	b.mu.Unlock()
	return out, err
}

// flush runs a batch with one of the connections allowed, turning a panic
// into every call's error: the group must always hand on its queue.
func (b *bookkeeper) flush(k bookKey, batch []*call[book, delivery]) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	select {
	case b.conns <- struct{}{}:
		defer func() { <-b.conns }()
	case <-ctx.Done():
		for _, c := range batch {
			c.err = fmt.Errorf("webhook bookkeeping: no connection within %s", batchTimeout)
		}
		return
	}
	defer func() {
		if r := recover(); r != nil {
			for _, c := range batch {
				c.err = fmt.Errorf("webhook bookkeeping: panic: %v", r)
			}
		}
	}()
	b.book(ctx, k, batch)
}
