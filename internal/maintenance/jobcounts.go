package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/errand-dev/errand/store"
)

// JobCounterEveryDefault is JobCounterConfig.Every when zero: `errand
// stats` reads the counts a minute or two behind, and the roll-up's own
// horizon is a minute ago.
const JobCounterEveryDefault = time.Minute

// JobCounterConfig configures a JobCounter. Zero values take the default
// above.
type JobCounterConfig struct {
	// Every is the time between two roll-ups. It must stay well within
	// River's retention of finished jobs (ERRAND_RETAIN_COMPLETED and
	// _FAILED, at least 10 minutes, 24 h and 7 days by default): a job
	// deleted before a roll-up saw it is never counted.
	Every time.Duration
	// Leading reports whether this replica is River's leader: only the
	// leader rolls up (another replica's roll-up would be harmless, only
	// wasted).
	Leading func(ctx context.Context) bool
	Logger  *slog.Logger
	// Clock is the real one when nil.
	Clock Clock
}

// JobCounter keeps errand.job_counts, the durable count of finished jobs per
// workspace, day, kind and final state that the weekly usage report reads
// (migrations/029_usage_rollup.sql): River's cleaner deletes the jobs
// themselves long before the report runs. The same roll-up keeps
// errand.queue_counts, each queue's finished jobs per minute for two hours,
// which `errand stats` reads (migrations/032_queue_minute_counts.sql).
type JobCounter struct {
	db  store.DB
	cfg JobCounterConfig
}

// NewJobCounter fills in defaults.
func NewJobCounter(db store.DB, cfg JobCounterConfig) *JobCounter {
	if cfg.Every <= 0 {
		cfg.Every = JobCounterEveryDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &JobCounter{db: db, cfg: cfg}
}

// Run rolls up every Every until ctx is done.
func (c *JobCounter) Run(ctx context.Context) {
	onLeader(ctx, clockOrReal(c.cfg.Clock), c.cfg.Every, c.cfg.Leading, func(ctx context.Context) {
		if _, err := c.Round(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("counting finished jobs failed; trying again later", slog.String("error", err.Error()))
		}
	})
}

// Round counts the jobs finalized since the last round, up to a minute ago
// on the database's clock (the function's default: see the migration), and
// returns how many. It is one transaction: the counts and the watermark
// move together.
func (c *JobCounter) Round(ctx context.Context) (int64, error) {
	return store.RollUpJobCounts(ctx, c.db)
}
