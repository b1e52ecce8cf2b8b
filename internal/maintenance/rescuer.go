package maintenance

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/errand-dev/errand/store"
)

// RescuerConfig configures a Rescuer. Zero values take defaults.
type RescuerConfig struct {
	// Lease: a replica whose heartbeat (database clock) is older than this is
	// dead; default 6s.
	Lease time.Duration
	// Interval between sweeps; default 1s, jittered so replicas spread out.
	Interval time.Duration
	Logger   *slog.Logger
}

// Rescuer puts dead replicas' running jobs back. Every replica runs one, not
// only River's leader: a dead leader must not delay its own rescue.
type Rescuer struct {
	cfg   RescuerConfig
	store *store.Store
}

// NewRescuer returns a Rescuer over st; Run starts it.
func NewRescuer(st *store.Store, cfg RescuerConfig) *Rescuer {
	if cfg.Lease <= 0 {
		cfg.Lease = 6 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rescuer{cfg: cfg, store: st}
}

// Sweep rescues once.
func (r *Rescuer) Sweep(ctx context.Context) ([]store.Rescued, error) {
	rescued, err := store.RescueOrphans(ctx, r.store, r.cfg.Lease)
	if err != nil {
		return nil, err
	}
	for _, x := range rescued {
		r.cfg.Logger.Warn("rescued a job from a dead replica",
			slog.Int64("job_id", x.JobID), slog.String("queue", x.Queue), slog.String("dead_replica", x.Owner), slog.String("state", x.State))
	}
	return rescued, nil
}

// Run sweeps every Interval (±20%) until ctx is done.
func (r *Rescuer) Run(ctx context.Context) {
	for {
		d := time.Duration(float64(r.cfg.Interval) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		sctx, cancel := context.WithTimeout(ctx, r.cfg.Interval*5)
		if _, err := r.Sweep(sctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("rescuer sweep failed", slog.String("error", err.Error()))
		}
		cancel()
	}
}
