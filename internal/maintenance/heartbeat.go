// Package maintenance holds errand's background services, one per file:
// the heartbeat that keeps a replica's lease and fences it when it cannot,
// and the rescuer that puts a dead replica's jobs back. Each reads and waits
// on time only through its config's Clock.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// Defaults for HeartbeatConfig: what errand derives from its default
// ERRAND_RESCUE_AFTER of 10 s.
const (
	HeartbeatIntervalDefault   = time.Second
	HeartbeatFenceAfterDefault = 4 * time.Second
	HeartbeatLeaseDefault      = 6 * time.Second
)

// HeartbeatConfig configures a Heartbeat. Zero values take the defaults
// above; set values must keep Interval < FenceAfter < Lease.
//
// One renewal is in flight at a time. It counts from when it was sent and
// may take max(FenceAfter-Interval, Interval) to commit: that is how long a
// renewal sent Interval after the last confirmed one has before the fence
// deadline. Two limits remain:
//   - Commit stalls (a synchronous standby, a checkpoint): a stall shorter
//     than FenceAfter - Interval does not fence; one longer than FenceAfter
//     always fences the replica, and every replica at once when the whole
//     database stalls.
//   - The database clock judges leases: a step forward larger than
//     Lease - (time since the last renewal) makes the rescuer treat live
//     replicas as dead and put back jobs they are still running. A step
//     back only delays rescues.
type HeartbeatConfig struct {
	// ID is the replica's id (River's client id, the last of attempted_by).
	ID       string
	Hostname string
	PID      int
	// ConnConfig is used for the heartbeat's own connection: a pool that is
	// exhausted by jobs must not stop a live replica from proving it.
	ConnConfig *pgx.ConnConfig
	// Interval between renewals.
	Interval time.Duration
	// FenceAfter: with no renewal sent-and-confirmed for this long, the
	// replica fences itself.
	FenceAfter time.Duration
	// Lease is how old a heartbeat others treat as dead. A renewal that
	// finds its lease already expired fences at once: its jobs may have
	// been rescued.
	Lease  time.Duration
	Logger *slog.Logger
	// Clock is the real one when nil.
	Clock Clock
	// Renewed, when set, is told each renewal's result (metrics).
	Renewed func(ok bool)
	// OnFence, when set, is called once when the replica fences (metrics).
	OnFence func()
}

// Heartbeat renews a replica's lease and reports when the replica must
// fence itself.
//
// Timing: a renewal counts from the moment it was sent (before the database
// stamped it), so the fence deadline is at most FenceAfter after the last
// stamp others can see; it runs on its own timer that no I/O can hold up.
// Lease - FenceAfter is the time left for cancelled jobs to stop.
type Heartbeat struct {
	cfg    HeartbeatConfig
	clock  Clock
	mu     sync.Mutex
	lastOK time.Time // send time of the last confirmed renewal
	// watching: Run is on, so the fence deadline is armed (fenceTimer).
	watching   bool
	fenceTimer Timer
	fenced     chan struct{}
	once       sync.Once
	// abandoned: stop without retiring (the client did not stop cleanly,
	// so its jobs must wait out the lease).
	abandoned atomic.Bool
	// renewals: each renewal as it is sent and as it ends; tests only.
	renewals testSignal[renewal]
}

// renewal is a test signal: one event when sent, one when done.
type renewal struct {
	sent time.Time
	done bool
	err  error
}

// Abandon makes Run stop without retiring the replica.
func (h *Heartbeat) Abandon() { h.abandoned.Store(true) }

// NewHeartbeat returns a Heartbeat; Run starts it.
func NewHeartbeat(cfg HeartbeatConfig) *Heartbeat {
	if cfg.Interval <= 0 {
		cfg.Interval = HeartbeatIntervalDefault
	}
	if cfg.FenceAfter <= 0 {
		cfg.FenceAfter = HeartbeatFenceAfterDefault
	}
	if cfg.Lease <= 0 {
		cfg.Lease = HeartbeatLeaseDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	clock := clockOrReal(cfg.Clock)
	return &Heartbeat{cfg: cfg, clock: clock, lastOK: clock.Now(), fenced: make(chan struct{})}
}

// renewalTimeout bounds one renewal (and connecting for it). The last
// confirmed renewal was sent about Interval before this one, so this one
// still counts if it commits within FenceAfter - Interval: a commit stall
// that ends in time confirms rather than failing every replica's renewal at
// once. Longer would not help, the fence has fired by then. At least
// Interval, the pace of renewals anyway.
func (h *Heartbeat) renewalTimeout() time.Duration {
	return max(h.cfg.FenceAfter-h.cfg.Interval, h.cfg.Interval)
}

// Fenced is closed when the replica must stop: no renewal for FenceAfter, or
// a renewal that found its lease already expired.
func (h *Heartbeat) Fenced() <-chan struct{} { return h.fenced }

// Healthy reports whether the lease was renewed lately and the replica has
// not fenced itself.
func (h *Heartbeat) Healthy() bool {
	late := min(2*h.cfg.Interval+time.Second, h.cfg.FenceAfter)
	return !h.isFenced() && h.clock.Now().Sub(h.last()) <= late
}

func (h *Heartbeat) last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastOK
}

// Register records the replica before it runs anything.
func (h *Heartbeat) Register(ctx context.Context, db store.DB) error {
	sent := h.clock.Now()
	if err := store.RegisterReplica(ctx, db, h.cfg.ID, h.cfg.Hostname, h.cfg.PID); err != nil {
		return err
	}
	h.confirm(sent)
	return nil
}

// Beat renews once on db.
func (h *Heartbeat) Beat(ctx context.Context, db store.DB) error {
	// The timeout counts from the time the renewal says it was sent.
	timeout := h.renewalTimeout()
	sent := h.clock.Now()
	rctx, cancel := withDeadline(ctx, h.clock, sent.Add(timeout))
	defer cancel()
	h.renewals.signal(renewal{sent: sent})
	err := store.RenewReplica(rctx, db, h.cfg.ID, h.cfg.Lease)
	switch {
	case err == nil:
		h.confirm(sent)
	case errors.Is(err, store.ErrLeaseExpired):
		h.fence("this replica's lease had already expired when it renewed; its jobs may have been rescued")
	case ctx.Err() == nil && errors.Is(context.Cause(rctx), context.DeadlineExceeded):
		err = fmt.Errorf("renewal not confirmed within %s: %w", timeout, err)
	}
	h.renewals.signal(renewal{sent: sent, done: true, err: err})
	if h.cfg.Renewed != nil {
		h.cfg.Renewed(err == nil)
	}
	return err
}

func (h *Heartbeat) confirm(sent time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sent.After(h.lastOK) {
		h.lastOK = sent
	}
}

func (h *Heartbeat) fence(why string) {
	h.once.Do(func() {
		// (The daemon's logger names the replica already.)
		h.cfg.Logger.Error("fencing: cancelling this replica's running jobs before others rescue them",
			slog.String("why", why), slog.Duration("fence_after", h.cfg.FenceAfter))
		close(h.fenced)
		if h.cfg.OnFence != nil {
			h.cfg.OnFence()
		}
	})
}

// checkFence fences once FenceAfter has passed since the last confirmed
// renewal, or arms itself again for that deadline. It runs on its own timer,
// so a renewal blocked in I/O cannot delay it.
func (h *Heartbeat) checkFence() {
	h.mu.Lock()
	if !h.watching {
		h.mu.Unlock()
		return
	}
	if deadline := h.lastOK.Add(h.cfg.FenceAfter); h.clock.Now().Before(deadline) {
		h.fenceTimer = h.clock.AfterFuncAt(deadline, h.checkFence)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.fence("no renewal confirmed by the database for fence_after")
}

func (h *Heartbeat) watchFence(on bool) {
	h.mu.Lock()
	h.watching = on
	if !on && h.fenceTimer != nil {
		h.fenceTimer.Stop()
	}
	h.mu.Unlock()
	if on {
		h.checkFence()
	}
}

// Run renews the lease every Interval until ctx is done or the replica is
// fenced. On a clean stop it retires the replica (unless fenced) so nothing
// waits for its lease.
func (h *Heartbeat) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Fencing also ends a renewal still blocked in I/O: it could no longer
	// count.
	go func() {
		select {
		case <-h.fenced:
			cancel()
		case <-ctx.Done():
		}
	}()
	h.watchFence(true)
	defer h.watchFence(false)

	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	// Each attempt is due Interval after the last one began; after one that
	// took longer, the next goes at once.
	next := h.last().Add(h.cfg.Interval)
	failing := false
	for {
		if !sleepUntil(ctx, h.clock, next) {
			if !h.isFenced() && !h.abandoned.Load() {
				h.retire(conn)
			}
			return
		}
		next = h.clock.Now().Add(h.cfg.Interval)
		if conn == nil || conn.IsClosed() {
			c, err := h.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				// A renewal that could not reach the database failed too.
				if h.cfg.Renewed != nil {
					h.cfg.Renewed(false)
				}
				if !failing {
					h.cfg.Logger.Warn("heartbeat: cannot connect", slog.String("error", err.Error()))
					failing = true
				}
				continue
			}
			conn = c
		}
		if err := h.Beat(ctx, conn); err != nil {
			if !failing && ctx.Err() == nil {
				h.cfg.Logger.Warn("heartbeat failed", slog.String("error", err.Error()))
				failing = true
			}
			conn.Close(context.Background())
			conn = nil
			continue
		}
		if failing {
			h.cfg.Logger.Info("heartbeat renewed again")
			failing = false
		}
	}
}

func (h *Heartbeat) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := withTimeout(ctx, h.clock, h.renewalTimeout())
	defer cancel()
	return pgx.ConnectConfig(ctx, h.cfg.ConnConfig)
}

// retire marks the replica dead at once, on conn or a fresh connection.
func (h *Heartbeat) retire(conn *pgx.Conn) {
	ctx, cancel := withTimeout(context.Background(), h.clock, 2*time.Second)
	defer cancel()
	if conn == nil || conn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, h.cfg.ConnConfig)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		conn = c
	}
	_ = store.Retire(ctx, conn, h.cfg.ID)
}

func (h *Heartbeat) isFenced() bool {
	select {
	case <-h.fenced:
		return true
	default:
		return false
	}
}
