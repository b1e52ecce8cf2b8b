package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/errand-dev/errand/store"
)

// Defaults for PrunerConfig. A round of 20 calls of 1,000 rows per table
// keeps up with 120,000 log rows per table an hour, and each call is one
// short transaction.
const (
	PrunerEveryDefault  = 10 * time.Minute
	PrunerBatchDefault  = 1000
	PrunerRoundsDefault = 20
)

// PrunerConfig configures the pruning of errand's logs. Zero values take
// the defaults above.
type PrunerConfig struct {
	// Keep is ERRAND_RETAIN_LOGS.
	Keep time.Duration
	// Every is the time between two rounds; a round that deleted a full
	// batch of some table goes on at once, up to Rounds calls.
	Every time.Duration
	// Batch is the most rows of each table one call deletes (one short
	// transaction: no long locks, no bloat from a huge DELETE).
	Batch  int
	Rounds int
	// Leading reports whether this replica is River's leader: only the
	// leader prunes.
	Leading func(ctx context.Context) bool
	Logger  *slog.Logger
	// Clock is the real one when nil.
	Clock Clock
}

// Pruner deletes errand's old logs on the leader (River's own cleaner does
// the jobs).
type Pruner struct {
	db  store.DB
	cfg PrunerConfig
}

// NewPruner fills in defaults.
func NewPruner(db store.DB, cfg PrunerConfig) *Pruner {
	if cfg.Every <= 0 {
		cfg.Every = PrunerEveryDefault
	}
	if cfg.Batch <= 0 {
		cfg.Batch = PrunerBatchDefault
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = PrunerRoundsDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pruner{db: db, cfg: cfg}
}

// Run prunes every Every until ctx is done.
func (p *Pruner) Run(ctx context.Context) {
	onLeader(ctx, clockOrReal(p.cfg.Clock), p.cfg.Every, p.cfg.Leading, func(ctx context.Context) {
		if _, err := p.Round(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Warn("pruning old logs failed; trying again later", slog.String("error", err.Error()))
		}
	})
}

// onLeader calls round at once and then every interval on c (a round that
// took longer is followed by the next at once) until ctx is done, each time
// only if leading (nil: always) says this replica leads.
func onLeader(ctx context.Context, c Clock, every time.Duration, leading func(context.Context) bool, round func(context.Context)) {
	for {
		began := c.Now()
		if leading == nil || leading(ctx) {
			round(ctx)
		}
		if !sleepUntil(ctx, c, began.Add(every)) {
			return
		}
	}
}

// Round calls errand.prune_logs until no table has a full batch left, or
// Rounds times, and returns the rows deleted per table.
func (p *Pruner) Round(ctx context.Context) (map[string]int64, error) {
	total := map[string]int64{}
	for range p.cfg.Rounds {
		n, err := store.PruneLogs(ctx, p.db, p.cfg.Keep, p.cfg.Batch)
		if err != nil {
			return total, err
		}
		more := false
		for table, deleted := range n {
			total[table] += deleted
			if deleted >= int64(p.cfg.Batch) {
				more = true
			}
		}
		if !more {
			break
		}
	}
	var sum int64
	for _, n := range total {
		sum += n
	}
	if sum > 0 {
		attrs := []any{slog.Duration("older_than", p.cfg.Keep)}
		for table, n := range total {
			attrs = append(attrs, slog.Int64(table, n))
		}
		p.cfg.Logger.Info("pruned old logs", attrs...)
	}
	return total, nil
}
