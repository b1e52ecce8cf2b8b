// Package maintenance holds errand's background services, one per file:
// the heartbeat that keeps a replica's lease and fences it when it cannot,
// and the rescuer that puts a dead replica's jobs back.
package maintenance

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// HeartbeatConfig configures a Heartbeat. Zero durations take defaults
// derived from the 10 s lease errand uses by default.
type HeartbeatConfig struct {
	// ID is the replica's id (River's client id, the last of attempted_by).
	ID       string
	Hostname string
	PID      int
	// ConnConfig is used for the heartbeat's own connection: a pool that is
	// exhausted by jobs must not stop a live replica from proving it.
	ConnConfig *pgx.ConnConfig
	// Interval between renewals; default 1s.
	Interval time.Duration
	// FenceAfter: with no successful renewal for this long (by this
	// process's monotonic clock), the replica fences itself; default 4s. It
	// must leave room before the lease others use to declare it dead.
	FenceAfter time.Duration
	Logger     *slog.Logger
}

// Heartbeat renews a replica's lease and reports when the replica must
// fence itself.
type Heartbeat struct {
	cfg    HeartbeatConfig
	lastOK atomic.Int64 // unix nanos of the last successful renewal
	fenced chan struct{}
	once   sync.Once
	now    func() time.Time
}

// NewHeartbeat returns a Heartbeat; Run starts it.
func NewHeartbeat(cfg HeartbeatConfig) *Heartbeat {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.FenceAfter <= 0 {
		cfg.FenceAfter = 4 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Heartbeat{cfg: cfg, fenced: make(chan struct{}), now: time.Now}
	h.lastOK.Store(h.now().UnixNano())
	return h
}

// Fenced is closed when the replica has gone FenceAfter without renewing.
func (h *Heartbeat) Fenced() <-chan struct{} { return h.fenced }

// Healthy reports whether the lease was renewed lately and the replica has
// not fenced itself.
func (h *Heartbeat) Healthy() bool {
	late := min(2*h.cfg.Interval+time.Second, h.cfg.FenceAfter)
	return !h.isFenced() && h.now().Sub(time.Unix(0, h.lastOK.Load())) <= late
}

// Beat renews once on conn (registering the replica the first time).
func (h *Heartbeat) Beat(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Interval)
	defer cancel()
	if err := store.Heartbeat(ctx, conn, h.cfg.ID, h.cfg.Hostname, h.cfg.PID); err != nil {
		return err
	}
	h.lastOK.Store(h.now().UnixNano())
	return nil
}

// Run renews the lease every Interval until ctx is done or the replica is
// fenced. On a clean stop it retires the replica so nothing waits for its
// lease.
func (h *Heartbeat) Run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	check := time.NewTicker(min(100*time.Millisecond, h.cfg.Interval))
	defer check.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if conn != nil && !h.isFenced() {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = store.Retire(rctx, conn, h.cfg.ID)
				cancel()
			}
			return
		case <-check.C:
			if h.now().Sub(time.Unix(0, h.lastOK.Load())) > h.cfg.FenceAfter {
				h.cfg.Logger.Error("fencing: the database has not renewed this replica's lease; cancelling its running jobs before others rescue them",
					slog.String("replica", h.cfg.ID), slog.Duration("fence_after", h.cfg.FenceAfter))
				h.once.Do(func() { close(h.fenced) })
				return
			}
			continue
		case <-tick.C:
		}
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, h.cfg.Interval)
			c, err := pgx.ConnectConfig(cctx, h.cfg.ConnConfig)
			cancel()
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
			if !failing {
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

func (h *Heartbeat) isFenced() bool {
	select {
	case <-h.fenced:
		return true
	default:
		return false
	}
}
