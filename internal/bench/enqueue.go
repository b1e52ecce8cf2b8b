package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

type enqueueFlags struct {
	clients  int
	duration time.Duration
	bulk     int
	rounds   int
	baseline bool
	via      string
}

func parseEnqueueFlags(args []string, out io.Writer) (enqueueFlags, error) {
	var f enqueueFlags
	fs := flag.NewFlagSet("errand bench enqueue", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&f.clients, "clients", 8, "concurrent clients, each enqueueing one row per transaction")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long each single-row round runs")
	fs.IntVar(&f.bulk, "bulk", 0, "instead: enqueue N rows in one statement per round")
	fs.IntVar(&f.rounds, "rounds", 3, "rounds per path, alternated with the baseline's")
	fs.StringVar(&f.via, "via", "insert", "bulk path: insert (INSERT INTO errand.jobs ... SELECT) or many (errand.enqueue_many with arrays built by the client)")
	fs.BoolVar(&f.baseline, "baseline", false, "alternate with River's own insert (single rows: a plain INSERT into river_job; bulk: River's InsertManyFast) and report the ratio")
	if err := parseBenchFlags(fs, args); err != nil {
		return f, err
	}
	switch {
	case f.clients < 1 || f.clients > 1000:
		return f, fmt.Errorf("%w: errand bench enqueue: --clients must be 1 to 1000, got %d", ErrUsage, f.clients)
	case f.duration <= 0:
		return f, fmt.Errorf("%w: errand bench enqueue: --duration must be positive, got %s", ErrUsage, f.duration)
	case f.bulk < 0:
		return f, fmt.Errorf("%w: errand bench enqueue: --bulk must not be negative, got %d", ErrUsage, f.bulk)
	case f.rounds < 1:
		return f, fmt.Errorf("%w: errand bench enqueue: --rounds must be positive, got %d", ErrUsage, f.rounds)
	case f.via != "insert" && f.via != "many":
		return f, fmt.Errorf("%w: errand bench enqueue: --via must be insert or many, got %q", ErrUsage, f.via)
	case f.via == "many" && f.bulk == 0:
		return f, fmt.Errorf("%w: errand bench enqueue: --via many needs --bulk N", ErrUsage)
	}
	return f, nil
}

// enqueue measures the app servers' side: rows per second into the SQL
// contract, single-row transactions from concurrent clients or one bulk
// statement, with no worker running (the insert path alone). With
// --baseline each round through the contract alternates with one of River's
// own insert in the same run, and the RESULT line gives the ratio of the
// medians.
func (b *bench) enqueue(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (string, error) {
	contract, river := b.enqueueSingle, b.riverSingle
	mode := fmt.Sprintf("enqueue clients=%d", f.clients)
	if f.bulk > 0 {
		contract, river = b.enqueueBulk, b.riverBulk
		mode = fmt.Sprintf("enqueue bulk=%d", f.bulk)
		if f.via == "many" {
			contract = b.enqueueMany
			mode += " via=many"
		}
	}
	var ours, theirs []float64
	for round := 1; round <= f.rounds; round++ {
		rate, err := contract(ctx, st, ws, f)
		if err != nil {
			return "", err
		}
		ours = append(ours, rate)
		b.printf("round %d: contract %.0f rows/s", round, rate)
		if f.baseline {
			rate, err := river(ctx, st, ws, f)
			if err != nil {
				return "", err
			}
			theirs = append(theirs, rate)
			b.printf("round %d: river   %.0f rows/s", round, rate)
		}
		// Each round starts from the same table.
		if _, err := b.clearJobs(ctx, st, ws); err != nil {
			return "", err
		}
	}
	result := fmt.Sprintf("RESULT mode=%s rows_per_sec=%.0f", mode, median(ours))
	if f.baseline {
		result += fmt.Sprintf(" river_rows_per_sec=%.0f ratio=%.3f", median(theirs), median(ours)/median(theirs))
	}
	return result, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func (b *bench) enqueueSingle(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (float64, error) {
	return b.clientsFor(ctx, st, ws, f, enqueueOne)
}

func (b *bench) riverSingle(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (float64, error) {
	return b.clientsFor(ctx, st, ws, f, enqueueOneRiver)
}

// clientsFor runs f.clients connections, each sending sql (one row, its own
// transaction) as fast as it can for f.duration, and returns rows/s.
func (b *bench) clientsFor(ctx context.Context, st *store.Store, ws string, f enqueueFlags, sql string) (float64, error) {
	conns := make([]*pgx.Conn, f.clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i := range conns {
		c, err := pgx.Connect(ctx, b.cfg.DatabaseURL)
		if err != nil {
			return 0, err
		}
		conns[i] = c
	}
	var rows atomic.Int64
	var firstErr error
	var once sync.Once
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(f.duration)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			// At least one row each: a client scheduled after the deadline
			// (a short run on a busy machine) still measures something.
			for first := true; runCtx.Err() == nil && (first || time.Now().Before(deadline)); first = false {
				if _, err := c.Exec(runCtx, sql, ws); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				rows.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("enqueue: %w", firstErr)
	}
	return float64(rows.Load()) / time.Since(start).Seconds(), nil
}

func (b *bench) enqueueBulk(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (float64, error) {
	t0 := time.Now()
	tag, err := st.Exec(ctx, enqueueBulk, ws, f.bulk)
	if err != nil {
		return 0, fmt.Errorf("bulk enqueue: %w", err)
	}
	return float64(tag.RowsAffected()) / time.Since(t0).Seconds(), nil
}

// enqueueMany is errand.enqueue_many with the arrays built by the client in
// the timing, as an app server would send them.
func (b *bench) enqueueMany(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (float64, error) {
	t0 := time.Now()
	wss, kinds, args := make([]string, f.bulk), make([]string, f.bulk), make([]string, f.bulk)
	for i := range f.bulk {
		wss[i], kinds[i], args[i] = ws, "ping", fmt.Sprintf(`{"n": %d}`, i+1)
	}
	var n int64
	if err := st.QueryRow(ctx, enqueueManySQL, wss, kinds, args).Scan(&n); err != nil {
		return 0, fmt.Errorf("enqueue_many: %w", err)
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// riverBulk is River's own bulk insert (InsertManyFast) of the same number of
// rows, args built in the timing as River's callers build them.
func (b *bench) riverBulk(ctx context.Context, st *store.Store, ws string, f enqueueFlags) (float64, error) {
	client, err := river.NewClient(riverpgxv5.New(st.Pool()), &river.Config{Schema: migrations.Schema, Logger: b.quiet})
	if err != nil {
		return 0, fmt.Errorf("river client: %w", err)
	}
	metadata := []byte(fmt.Sprintf(`{"workspace_id": %q}`, ws))
	t0 := time.Now()
	params := make([]river.InsertManyParams, f.bulk)
	for i := range params {
		params[i] = river.InsertManyParams{Args: benchNoopArgs{}, InsertOpts: &river.InsertOpts{Queue: benchBaselineQueue, Metadata: metadata}}
	}
	n, err := client.InsertManyFast(ctx, params)
	if err != nil {
		return 0, fmt.Errorf("river bulk insert: %w", err)
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
