package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// errand bench scale: the SQL contract with millions of finished jobs
// retained (a day of them at River's default retention). It burns down J
// new jobs on the table as it is, loads N retained jobs across W
// workspaces (one holding half), times every README and ops query, and
// burns down J new jobs again beside them.

type scaleFlags struct {
	retained   int
	workspaces int
	jobs       int
	workers    int
	samples    int
	rounds     int
}

func parseScaleFlags(args []string, out io.Writer) (scaleFlags, error) {
	var f scaleFlags
	fs := flag.NewFlagSet("errand bench scale", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&f.retained, "retained", 2_000_000, "finished jobs to load (1 in 1,000 failed, the rest completed), and 1 pending for every 2,000")
	fs.IntVar(&f.workspaces, "workspaces", 10_000, "workspaces they belong to; the first holds half of them")
	fs.IntVar(&f.jobs, "jobs", 100_000, "ping jobs of each burn-down")
	fs.IntVar(&f.workers, "workers", 2000, "workers of the default queue")
	fs.IntVar(&f.samples, "samples", 20, "runs of each query on one connection (prepared, as drivers do)")
	fs.IntVar(&f.rounds, "rounds", 1, "burn-downs before loading and again after (the medians are compared)")
	if err := parseBenchFlags(fs, args); err != nil {
		return f, err
	}
	switch {
	case f.retained < 2:
		return f, fmt.Errorf("%w: errand bench scale: --retained must be at least 2, got %d", ErrUsage, f.retained)
	case f.workspaces < 2 || f.workspaces > f.retained:
		return f, fmt.Errorf("%w: errand bench scale: --workspaces must be 2 to --retained, got %d", ErrUsage, f.workspaces)
	case f.jobs <= 0:
		return f, fmt.Errorf("%w: errand bench scale: --jobs must be positive, got %d", ErrUsage, f.jobs)
	case f.workers < 1 || f.workers > 10000:
		return f, fmt.Errorf("%w: errand bench scale: --workers must be 1 to 10000, got %d", ErrUsage, f.workers)
	case f.samples < 1:
		return f, fmt.Errorf("%w: errand bench scale: --samples must be positive, got %d", ErrUsage, f.samples)
	case f.rounds < 1:
		return f, fmt.Errorf("%w: errand bench scale: --rounds must be positive, got %d", ErrUsage, f.rounds)
	}
	return f, nil
}

const scaleIdleQueue = "bench_scale_idle"

// runScale is the mode's entry in modes().
func runScale(ctx context.Context, b *bench, args []string) error {
	f, err := parseScaleFlags(args, b.stdout)
	if err != nil {
		return helpIsNoError(err)
	}
	return b.inWorkspace(ctx, func(st *store.Store, ws string) (string, error) { return b.scale(ctx, st, ws, f) })
}

func (b *bench) scale(ctx context.Context, st *store.Store, ws string, f scaleFlags) (result string, err error) {
	var before int64
	if err := st.QueryRow(ctx, scaleCountJobs).Scan(&before); err != nil {
		return "", fmt.Errorf("count jobs: %w", err)
	}
	empty, err := b.scaleBurnDowns(ctx, st, ws, f, fmt.Sprintf("with %d other jobs in the table", before))
	if err != nil {
		return "", err
	}

	retained, err := b.scaleCreateWorkspaces(ctx, st, ws, f.workspaces)
	defer func() {
		if cerr := b.scaleCleanup(ctx, st, retained); err == nil {
			err = cerr
		}
	}()
	if err != nil {
		return "", err
	}
	loadRate, err := b.scaleLoad(ctx, st, retained, f.retained)
	if err != nil {
		return "", err
	}

	// One connection, like an app's: each statement is prepared on it once.
	conn, err := pgx.Connect(ctx, b.cfg.DatabaseURL)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var slowest string
	var slowestP50, slowestMax float64
	for _, q := range scaleQueries(retained[0], retained[1]) {
		p50, maxMS, err := scaleTime(ctx, conn, q, f.samples)
		if err != nil {
			return "", fmt.Errorf("query %s: %w", q.name, err)
		}
		b.printf("query %-20s p50 %7.3f ms, max %7.3f ms (%d runs): %s", q.name, p50, maxMS, f.samples, q.what)
		if slowest == "" || p50 > slowestP50 {
			slowest, slowestP50 = q.name, p50
		}
		slowestMax = max(slowestMax, maxMS)
	}

	beside, err := b.scaleBurnDowns(ctx, st, ws, f, fmt.Sprintf("beside %d retained jobs", f.retained))
	if err != nil {
		return "", err
	}
	b.printf("burn-down beside the retained jobs: %.3f of the one before them", beside/empty)
	return fmt.Sprintf("RESULT mode=scale retained=%d workspaces=%d jobs=%d load_rows_per_s=%.0f jobs_per_s_empty=%.0f jobs_per_s_retained=%.0f ratio=%.3f slowest_query=%s slowest_p50_ms=%.3f max_query_ms=%.3f",
		f.retained, f.workspaces, f.jobs, loadRate, empty, beside, beside/empty, slowest, slowestP50, slowestMax), nil
}

// scaleBurnDowns runs f.rounds burn-downs and returns the median rate.
func (b *bench) scaleBurnDowns(ctx context.Context, st *store.Store, ws string, f scaleFlags, what string) (float64, error) {
	rates := make([]float64, 0, f.rounds)
	for range f.rounds {
		rate, err := b.scaleBurnDown(ctx, st, ws, f, what)
		if err != nil {
			return 0, err
		}
		rates = append(rates, rate)
		// The next burn-down (or the load) starts from a tidy table.
		if _, err := st.Exec(ctx, benchVacuum); err != nil {
			b.printf("vacuum skipped: %v", err)
		}
	}
	slices.Sort(rates)
	return rates[len(rates)/2], nil
}

// scaleBurnDown is throughput's burn-down of f.jobs pings in ws, whose jobs
// it then deletes, so the next one starts alike.
func (b *bench) scaleBurnDown(ctx context.Context, st *store.Store, ws string, f scaleFlags, what string) (float64, error) {
	if _, err := st.Exec(ctx, benchInsertPings, []string{ws}, f.jobs); err != nil {
		return 0, fmt.Errorf("insert %d jobs: %w", f.jobs, err)
	}
	if _, err := st.Exec(ctx, benchAnalyze); err != nil {
		return 0, fmt.Errorf("analyze: %w", err)
	}
	var started atomic.Int64
	elapsed, err := b.burnDownErrand(ctx, st, []string{ws}, throughputFlags{jobs: f.jobs, workers: f.workers, workspaces: 1}, &started)
	if err != nil {
		return 0, err
	}
	rate := float64(f.jobs) / elapsed.Seconds()
	b.printf("burn-down %s: %d jobs in %s, %.0f jobs/s", what, f.jobs, elapsed.Round(time.Millisecond), rate)
	if _, err := st.Exec(ctx, benchDeleteJobs, ws); err != nil {
		return 0, fmt.Errorf("delete the burnt-down jobs: %w", err)
	}
	return rate, nil
}

// scaleCreateWorkspaces creates n workspaces named after the run's own, so
// they are recognisably the bench's (slug bench-...).
func (b *bench) scaleCreateWorkspaces(ctx context.Context, st *store.Store, ws string, n int) ([]string, error) {
	rows, err := st.Query(ctx, scaleCreateWorkspaces, "bench-"+ws, n)
	if err != nil {
		return nil, fmt.Errorf("create %d workspaces: %w", n, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return ids, fmt.Errorf("create %d workspaces: %w", n, err)
	}
	return ids, nil
}

func (b *bench) scaleLoad(ctx context.Context, st *store.Store, workspaces []string, n int) (float64, error) {
	failed, pending := (n+500)/1000, n/2000
	t := time.Now()
	if _, err := st.Exec(ctx, scaleLoadFinished, workspaces, n); err != nil {
		return 0, fmt.Errorf("load %d finished jobs: %w", n, err)
	}
	if pending > 0 {
		if _, err := st.Exec(ctx, scaleLoadPending, workspaces, pending); err != nil {
			return 0, fmt.Errorf("load %d pending jobs: %w", pending, err)
		}
	}
	loaded := time.Since(t)
	rate := float64(n+pending) / loaded.Seconds()
	b.printf("loaded %d completed, %d failed and %d pending jobs across %d workspaces (half of them in %s) in %s, %.0f rows/s",
		n-failed, failed, pending, len(workspaces), workspaces[0], loaded.Round(time.Millisecond), rate)
	t = time.Now()
	if _, err := st.Exec(ctx, benchAnalyze); err != nil {
		return 0, fmt.Errorf("analyze: %w", err)
	}
	b.printf("analyzed in %s", time.Since(t).Round(time.Millisecond))
	// What a running leader does every minute (errand stats reads its
	// per-minute counts): the first roll-up of a fresh database counts
	// every retained job once, later ones a minute of them.
	t = time.Now()
	if _, err := st.Exec(ctx, scaleRollUp); err != nil {
		return 0, fmt.Errorf("roll up the finished jobs' counts: %w", err)
	}
	b.printf("rolled up the finished jobs' counts in %s", time.Since(t).Round(time.Millisecond))
	return rate, nil
}

// scaleCleanup deletes the retained jobs and their workspaces, also after a
// failed or interrupted run; the run's own workspace is inWorkspace's.
func (b *bench) scaleCleanup(ctx context.Context, st *store.Store, workspaces []string) error {
	if len(workspaces) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	tag, err := st.Exec(ctx, scaleDeleteJobs, workspaces)
	if err != nil {
		return fmt.Errorf("bench cleanup: delete the retained jobs: %w", err)
	}
	// The roll-up's per-workspace counts go with the workspaces; its
	// per-queue minutes (errand.queue_counts) stay until they are two
	// hours old, so `errand stats` counts the retained jobs in the hour
	// they were loaded.
	if _, err := st.Exec(ctx, scaleDeleteCounts, workspaces); err != nil {
		return fmt.Errorf("bench cleanup: delete the retained jobs' counts: %w", err)
	}
	if _, err := st.Exec(ctx, scaleDeleteWorkspaces, workspaces); err != nil {
		return fmt.Errorf("bench cleanup: delete %d workspaces: %w", len(workspaces), err)
	}
	b.printf("cleaned up: deleted %d retained jobs and %d workspaces", tag.RowsAffected(), len(workspaces))
	return nil
}

// scaleQuery is one query an app or an operator runs, through store's
// functions where store has it, so the bench times exactly their SQL.
type scaleQuery struct {
	name string
	what string
	run  func(ctx context.Context, db store.DB) error
}

func scaleQueries(big, small string) []scaleQuery {
	list := func(f store.JobFilter) func(context.Context, store.DB) error {
		return func(ctx context.Context, db store.DB) error {
			_, err := store.Jobs(ctx, db, f)
			return err
		}
	}
	return []scaleQuery{
		{"ws_latest_big", "README: a workspace's latest 50 jobs, the workspace with half of them", list(store.JobFilter{WorkspaceID: big})},
		{"ws_latest_small", "README: a workspace's latest 50 jobs, a small workspace", list(store.JobFilter{WorkspaceID: small})},
		{"ws_failed_big", "a workspace's failed jobs, the big workspace (it has none)", list(store.JobFilter{WorkspaceID: big, Status: store.StatusFailed})},
		{"ws_failed_small", "a workspace's failed jobs, a small workspace", list(store.JobFilter{WorkspaceID: small, Status: store.StatusFailed})},
		{"failed_latest", "the latest 50 failed jobs of every workspace", list(store.JobFilter{Status: store.StatusFailed})},
		{"kind_failed", "the latest 50 failed email.send jobs", list(store.JobFilter{Kind: "email.send", Status: store.StatusFailed})},
		{"pending_latest", "the latest 50 pending jobs of every workspace", list(store.JobFilter{Status: store.StatusPending})},
		{"due_count", "pending jobs whose run_at has come", func(ctx context.Context, db store.DB) error {
			var n int64
			return db.QueryRow(ctx, scaleDueCount).Scan(&n)
		}},
		{"keda_startable", "KEDA: the due jobs a worker may start, at most 600", func(ctx context.Context, db store.DB) error {
			var n int64
			return db.QueryRow(ctx, scaleKEDA).Scan(&n)
		}},
		{"pending_by_queue", "backlog per queue with the oldest due job's age", func(ctx context.Context, db store.DB) error {
			_, err := store.PendingByQueue(ctx, db)
			return err
		}},
		{"pending_by_workspace", "the 10 workspaces with the most pending jobs", func(ctx context.Context, db store.DB) error {
			_, err := store.PendingByWorkspace(ctx, db, 10)
			return err
		}},
		{"ws_pending_big", "the big workspace's backlog", func(ctx context.Context, db store.DB) error {
			_, err := store.WorkspacePending(ctx, db, big)
			return err
		}},
		{"ops_stats", "`errand stats`: the backlog and the last hour's finished jobs per queue", func(ctx context.Context, db store.DB) error {
			_, err := store.Stats(ctx, db)
			return err
		}},
		{"ops_workspaces", "`errand workspaces list`: pending, processing and failed per workspace", func(ctx context.Context, db store.DB) error {
			_, err := store.Workspaces(ctx, db, 50)
			return err
		}},
	}
}

// scaleTime runs q once uncounted (the driver prepares its statement) and
// then samples times on conn, as an app's driver would (pgx prepares each
// statement once; after five runs PostgreSQL may give it a generic plan),
// and returns the median and the largest time in milliseconds.
func scaleTime(ctx context.Context, conn *pgx.Conn, q scaleQuery, samples int) (p50, maxMS float64, err error) {
	if err := q.run(ctx, conn); err != nil {
		return 0, 0, err
	}
	times := make([]time.Duration, 0, samples)
	for range samples {
		t := time.Now()
		if err := q.run(ctx, conn); err != nil {
			return 0, 0, err
		}
		times = append(times, time.Since(t))
	}
	return percentileMS(times, 0.5), percentileMS(times, 1), nil
}
