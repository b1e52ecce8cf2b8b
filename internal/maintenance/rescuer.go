package maintenance

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/errand-dev/errand/store"
)

// Defaults for RescuerConfig: what errand derives from its default
// ERRAND_RESCUE_AFTER of 10 s.
const (
	RescuerIntervalDefault = time.Second
	RescuerLeaseDefault    = 6 * time.Second
)

// RescuerConfig configures a Rescuer. Zero values take the defaults above.
type RescuerConfig struct {
	// Lease: a replica whose heartbeat is older than this on the database's
	// clock is dead. A forward step of that clock larger than Lease minus a
	// live replica's time since its last renewal makes it look dead too (see
	// HeartbeatConfig).
	Lease time.Duration
	// Interval between sweeps, jittered ±20% so replicas spread out.
	Interval time.Duration
	Logger   *slog.Logger
	// Clock is the real one when nil.
	Clock Clock
}

// Rescuer puts dead replicas' running jobs back. Every replica runs one, not
// only River's leader: a dead leader must not delay its own rescue.
type Rescuer struct {
	cfg   RescuerConfig
	clock Clock
	db    store.DB
	// swept: each sweep Run made; tests only.
	swept testSignal[error]
}

// NewRescuer returns a Rescuer over db; Run starts it.
func NewRescuer(db store.DB, cfg RescuerConfig) *Rescuer {
	if cfg.Lease <= 0 {
		cfg.Lease = RescuerLeaseDefault
	}
	if cfg.Interval <= 0 {
		cfg.Interval = RescuerIntervalDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rescuer{cfg: cfg, clock: clockOrReal(cfg.Clock), db: db}
}

// Sweep rescues once.
func (r *Rescuer) Sweep(ctx context.Context) ([]store.Rescued, error) {
	rescued, err := store.RescueOrphans(ctx, r.db, r.cfg.Lease)
	if err != nil {
		return nil, err
	}
	for _, x := range rescued {
		r.cfg.Logger.Warn("rescued a job from a dead replica",
			slog.Int64("job_id", x.JobID), slog.String("queue", x.Queue), slog.String("dead_replica", x.Owner), slog.String("state", x.State))
	}
	return rescued, nil
}

// Run sweeps at once (a replica starting after others died need not wait),
// then every Interval (±20%) until ctx is done.
func (r *Rescuer) Run(ctx context.Context) {
	for {
		began := r.clock.Now()
		sctx, cancel := withDeadline(ctx, r.clock, began.Add(r.cfg.Interval*5))
		_, err := r.Sweep(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("rescuer sweep failed", slog.String("error", err.Error()))
		}
		r.swept.signal(err)
		if !sleepUntil(ctx, r.clock, began.Add(jitter(r.cfg.Interval, rand.Float64()))) {
			return
		}
	}
}

// jitter spreads d over ±20% as f goes over [0, 1).
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*f))
}
