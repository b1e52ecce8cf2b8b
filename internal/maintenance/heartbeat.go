// Package maintenance holds errand's background services, one per file:
// the heartbeat that keeps a replica's lease and fences it when it cannot,
// and the rescuer that puts a dead replica's jobs back.
package maintenance

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// HeartbeatConfig configures a Heartbeat. Zero durations take the defaults
// errand derives from its default ERRAND_RESCUE_AFTER of 10 s.
type HeartbeatConfig struct {
	// ID is the replica's id (River's client id, the last of attempted_by).
	ID       string
	Hostname string
	PID      int
	// ConnConfig is used for the heartbeat's own connection: a pool that is
	// exhausted by jobs must not stop a live replica from proving it.
	ConnConfig *pgx.ConnConfig
	// Interval between renewals, also each renewal's timeout; default 1s.
	Interval time.Duration
	// FenceAfter: with no renewal sent-and-confirmed for this long, the
	// replica fences itself; default 4s.
	FenceAfter time.Duration
	// Lease is how old a heartbeat others treat as dead; default 6s. A
	// renewal that finds its lease already expired fences at once: its jobs
	// may have been rescued.
	Lease  time.Duration
	Logger *slog.Logger
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
	mu     sync.Mutex
	lastOK time.Time // send time of the last confirmed renewal (monotonic)
	fenced chan struct{}
	once   sync.Once
	// abandoned: stop without retiring (the client did not stop cleanly,
	// so its jobs must wait out the lease).
	abandoned atomic.Bool
}

// Abandon makes Run stop without retiring the replica.
func (h *Heartbeat) Abandon() { h.abandoned.Store(true) }

// NewHeartbeat returns a Heartbeat; Run starts it.
func NewHeartbeat(cfg HeartbeatConfig) *Heartbeat {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.FenceAfter <= 0 {
		cfg.FenceAfter = 4 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 6 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Heartbeat{cfg: cfg, lastOK: time.Now(), fenced: make(chan struct{})}
}

// Fenced is closed when the replica must stop: no renewal for FenceAfter, or
// a renewal that found its lease already expired.
func (h *Heartbeat) Fenced() <-chan struct{} { return h.fenced }

// Healthy reports whether the lease was renewed lately and the replica has
// not fenced itself.
func (h *Heartbeat) Healthy() bool {
	late := min(2*h.cfg.Interval+time.Second, h.cfg.FenceAfter)
	return !h.isFenced() && time.Since(h.last()) <= late
}

func (h *Heartbeat) last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastOK
}

// Register records the replica before it runs anything.
func (h *Heartbeat) Register(ctx context.Context, conn *pgx.Conn) error {
	sent := time.Now()
	if err := store.RegisterReplica(ctx, conn, h.cfg.ID, h.cfg.Hostname, h.cfg.PID); err != nil {
		return err
	}
	h.confirm(sent)
	return nil
}

// Beat renews once on conn.
func (h *Heartbeat) Beat(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Interval)
	defer cancel()
	sent := time.Now()
	if err := store.RenewReplica(ctx, conn, h.cfg.ID, h.cfg.Lease); err != nil {
		if errors.Is(err, store.ErrLeaseExpired) {
			h.fence("this replica's lease had already expired when it renewed; its jobs may have been rescued")
		}
		return err
	}
	h.confirm(sent)
	return nil
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
		h.cfg.Logger.Error("fencing: cancelling this replica's running jobs before others rescue them",
			slog.String("replica", h.cfg.ID), slog.String("why", why), slog.Duration("fence_after", h.cfg.FenceAfter))
		close(h.fenced)
	})
}

// Run renews the lease every Interval until ctx is done or the replica is
// fenced. On a clean stop it retires the replica (unless fenced) so nothing
// waits for its lease.
func (h *Heartbeat) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The fence deadline, on its own goroutine: renewals blocked in I/O
	// must not delay it.
	go func() {
		t := time.NewTicker(min(50*time.Millisecond, h.cfg.Interval))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.fenced:
				return
			case <-t.C:
				if time.Since(h.last()) > h.cfg.FenceAfter {
					h.fence("no renewal confirmed by the database for fence_after")
					return
				}
			}
		}
	}()

	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if !h.isFenced() && !h.abandoned.Load() {
				h.retire(conn)
			}
			return
		case <-h.fenced:
			return
		case <-tick.C:
		}
		if conn == nil || conn.IsClosed() {
			cctx, ccancel := context.WithTimeout(ctx, h.cfg.Interval)
			c, err := pgx.ConnectConfig(cctx, h.cfg.ConnConfig)
			ccancel()
			if err != nil {
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

// retire marks the replica dead at once, on conn or a fresh connection.
func (h *Heartbeat) retire(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
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
