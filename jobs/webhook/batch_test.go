package webhook

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every caller gets its own result, however calls are batched; no more
// than max flushes run at once; callers that queue while they run are
// flushed together (the batches are fewer than the calls); and a lone
// caller is flushed at once.
func TestGroupBatchesConcurrentCalls(t *testing.T) {
	const callers, perCaller, most = 50, 40, 2
	var running, peak, flushes atomic.Int32
	release := make(chan struct{})
	g := &group[int, int]{max: most, flush: func(batch []*call[int, int]) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if flushes.Add(1) <= most {
			<-release // the first flushes wait, so the other callers queue
		}
		for _, c := range batch {
			c.out = c.in * 2
		}
		running.Add(-1)
	}}
	var wg sync.WaitGroup
	var wrong atomic.Int32
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perCaller {
				in := i*perCaller + j
				if out, err := g.do(in); err != nil || out != in*2 {
					wrong.Add(1)
				}
			}
		}()
	}
	// Positive signal: every other caller is queued behind the held flushes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g.mu.Lock()
		queued := len(g.queue)
		g.mu.Unlock()
		if queued == callers-most {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d callers queued after 30s, want %d", queued, callers-most)
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if wrong.Load() != 0 {
		t.Errorf("%d calls got another's result", wrong.Load())
	}
	if p := peak.Load(); p > most {
		t.Errorf("%d flushes ran at once, at most %d allowed", p, most)
	}
	if f := flushes.Load(); f >= callers*perCaller {
		t.Errorf("%d flushes for %d calls: nothing was batched", f, callers*perCaller)
	}
	if g.busy != 0 || len(g.queue) != 0 {
		t.Errorf("left busy %d, queue %d", g.busy, len(g.queue))
	}
	if out, _ := g.do(21); out != 42 {
		t.Errorf("a lone call: %d", out)
	}
}
