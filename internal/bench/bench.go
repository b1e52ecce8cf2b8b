// Package bench is `errand bench`: throughput and latency measured against
// the daemon running in this process. Its queries are in queries.go.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/daemon"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// modes are `errand bench`'s modes, in the order usage lists them. A mode
// lives in a file of its own; adding one is that file and a line here.
func modes() []mode {
	return []mode{
		{"throughput", "[--jobs N] [--workers W] [--workspaces K] [--baseline] [--cpuprofile FILE]", func(ctx context.Context, b *bench, args []string) error {
			f, err := parseThroughputFlags(args, b.stdout)
			if err != nil {
				return helpIsNoError(err)
			}
			return b.inWorkspace(ctx, func(st *store.Store, ws string) (string, error) { return b.throughput(ctx, st, ws, f) })
		}},
		{"latency", "[--samples N] [--background-rps R] [--gap D]", func(ctx context.Context, b *bench, args []string) error {
			f, err := parseLatencyFlags(args, b.stdout)
			if err != nil {
				return helpIsNoError(err)
			}
			return b.inWorkspace(ctx, func(st *store.Store, ws string) (string, error) { return b.latency(ctx, st, ws, f) })
		}},
		{"enqueue", "[--clients N] [--duration D] [--bulk N [--via insert|many]] [--rounds R] [--baseline]", func(ctx context.Context, b *bench, args []string) error {
			f, err := parseEnqueueFlags(args, b.stdout)
			if err != nil {
				return helpIsNoError(err)
			}
			return b.inWorkspace(ctx, func(st *store.Store, ws string) (string, error) { return b.enqueue(ctx, st, ws, f) })
		}},
		{"scale", "[--retained N] [--workspaces W] [--jobs J] [--workers W] [--samples S] [--rounds R]", runScale},
		{"noisy", "[--flood N] [--small W] [--each K] [--sleep-ms M] [--flood-sleep-ms M]", runNoisy},
	}
}

// mode is one `errand bench` mode.
type mode struct {
	name  string
	flags string // for usage
	run   func(ctx context.Context, b *bench, args []string) error
}

func usage() string {
	var u strings.Builder
	u.WriteString("usage:\n")
	for _, m := range modes() {
		fmt.Fprintf(&u, "  errand bench %s %s\n", m.name, m.flags)
	}
	u.WriteString(`
Each run creates its own workspace, prints progress lines and then exactly one
line starting with RESULT, and deletes its jobs and workspace afterwards.
`)
	return u.String()
}

func modeNames() string {
	var names []string
	for _, m := range modes() {
		names = append(names, m.name)
	}
	return strings.Join(names, ", ")
}

// ErrUsage is returned (wrapped) for a bad command line.
var ErrUsage = errors.New("usage")

// Run is `errand bench`. Every mode runs against DATABASE_URL (the daemon,
// when it needs one, in this process), in a workspace of its own that it
// deletes afterwards, and prints exactly one machine-readable RESULT line,
// last.
//
// throughput inserts N ping jobs through the SQL contract before any worker
// starts (as River's own bench does: insert time is reported, not counted)
// and times the burn-down; --baseline burns down the same number of no-op
// jobs on a bare River client, every errand layer off, measured the same way.
// latency times serial single-row INSERTs to the job's start.
func Run(ctx context.Context, cfg config.Config, reg *jobs.Registry, args []string, stdout io.Writer, logger *slog.Logger, hooks daemon.Hooks) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: errand bench needs a mode, one of %s\n%s", ErrUsage, modeNames(), usage())
	}
	b := &bench{
		cfg:    cfg,
		reg:    reg,
		stdout: stdout,
		// River and errand log each job at info; at warn the hot path only
		// pays an Enabled check.
		quiet: daemon.QuietLogger(logger),
		hooks: hooks,
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" {
		_, err := io.WriteString(stdout, usage())
		return err
	}
	for _, m := range modes() {
		if m.name == name {
			return m.run(ctx, b, rest)
		}
	}
	return fmt.Errorf("%w: unknown bench mode %q, want one of %s\n%s", ErrUsage, name, modeNames(), usage())
}

// helpIsNoError: -h has printed the flags, which is all that was asked.
func helpIsNoError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

type throughputFlags struct {
	jobs       int
	workers    int
	workspaces int
	baseline   bool
	cpuprofile string
}

type latencyFlags struct {
	samples       int
	backgroundRPS int
	gap           time.Duration
}

func parseThroughputFlags(args []string, out io.Writer) (throughputFlags, error) {
	var f throughputFlags
	fs := flag.NewFlagSet("errand bench throughput", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&f.jobs, "jobs", 100_000, "ping jobs to insert and work")
	fs.IntVar(&f.workers, "workers", 2000, "workers of the default queue")
	fs.IntVar(&f.workspaces, "workspaces", 1, "workspaces the jobs are spread over, round robin (fair fetch shares the workers among them)")
	fs.BoolVar(&f.baseline, "baseline", false, "burn down no-op jobs on a bare River client instead (every errand layer off)")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "write this process's CPU profile of the burn-down to this file (go tool pprof reads it)")
	if err := parseBenchFlags(fs, args); err != nil {
		return f, err
	}
	switch {
	case f.jobs <= 0:
		return f, fmt.Errorf("%w: errand bench throughput: --jobs must be positive, got %d", ErrUsage, f.jobs)
	case f.workspaces < 1 || f.workspaces > 10000:
		return f, fmt.Errorf("%w: errand bench throughput: --workspaces must be 1 to 10000, got %d", ErrUsage, f.workspaces)
	case f.workers < 1 || f.workers > 10000:
		return f, fmt.Errorf("%w: errand bench throughput: --workers must be 1 to 10000, got %d", ErrUsage, f.workers)
	}
	if f.cpuprofile != "" {
		// Checked before anything runs; the file is written at the end.
		if st, err := os.Stat(filepath.Dir(f.cpuprofile)); err != nil || !st.IsDir() {
			return f, fmt.Errorf("%w: errand bench throughput: --cpuprofile %s: its directory does not exist", ErrUsage, f.cpuprofile)
		}
	}
	return f, nil
}

func parseLatencyFlags(args []string, out io.Writer) (latencyFlags, error) {
	var f latencyFlags
	fs := flag.NewFlagSet("errand bench latency", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&f.samples, "samples", 2000, "serial INSERTs to time")
	fs.IntVar(&f.backgroundRPS, "background-rps", 0, "ping jobs per second inserted on another connection throughout (0: none)")
	fs.DurationVar(&f.gap, "gap", 0, "wait between a sample's start and the next INSERT (0: back to back, as the anchors' River and graphile-worker loops)")
	if err := parseBenchFlags(fs, args); err != nil {
		return f, err
	}
	switch {
	case f.samples <= 0:
		return f, fmt.Errorf("%w: errand bench latency: --samples must be positive, got %d", ErrUsage, f.samples)
	case f.gap < 0 || f.gap > 10*time.Second:
		return f, fmt.Errorf("%w: errand bench latency: --gap must be 0 to 10s, got %s", ErrUsage, f.gap)
	case f.backgroundRPS < 0 || f.backgroundRPS > 10000:
		return f, fmt.Errorf("%w: errand bench latency: --background-rps must be 0 to 10000, got %d", ErrUsage, f.backgroundRPS)
	}
	return f, nil
}

func parseBenchFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %s: %v", ErrUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", ErrUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

type bench struct {
	cfg    config.Config
	reg    *jobs.Registry
	stdout io.Writer
	quiet  *slog.Logger
	hooks  daemon.Hooks
}

func (b *bench) printf(format string, args ...any) {
	fmt.Fprintf(b.stdout, "bench: "+format+"\n", args...)
}

// The bench's SQL. Jobs go in through the contract (errand.jobs); the
// baseline writes River's table directly, as River's own inserts would.

// prepare connects, checks the schema, publishes the kinds (so the contract
// knows ping before the daemon starts) and creates the run's workspace.
func (b *bench) prepare(ctx context.Context) (*store.Store, string, error) {
	if _, ok := b.reg.Lookup("ping"); !ok {
		return nil, "", errors.New("errand bench: kind ping is not registered")
	}
	st, err := store.Open(ctx, b.cfg.DatabaseURL, store.Options{MaxConns: int32(b.cfg.DBMaxConns), SkipScopeCheck: true})
	if err != nil {
		return nil, "", err
	}
	if err := migrations.Check(ctx, st.Pool()); err != nil {
		st.Close()
		return nil, "", err
	}
	if err := daemon.Publish(ctx, st, b.cfg, b.reg, store.Widen); err != nil {
		st.Close()
		return nil, "", err
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	slug := "bench-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(suffix)
	ws, err := store.EnsureWorkspace(ctx, st, "errand bench", slug)
	if err != nil {
		st.Close()
		return nil, "", err
	}
	b.printf("workspace %s (%s)", ws.ID, slug)
	return st, ws.ID, nil
}

// inWorkspace gives a mode a workspace of its own, cleans it up whatever
// happened, and prints the mode's RESULT line last.
func (b *bench) inWorkspace(ctx context.Context, mode func(st *store.Store, ws string) (string, error)) error {
	st, ws, err := b.prepare(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	result, err := mode(st, ws)
	if cerr := b.cleanup(ctx, st, ws); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(b.stdout, result)
	return err
}

// cleanup deletes the run's jobs and workspace, also after a failed or
// interrupted run, and vacuums so the next run starts from a tidy table.
func (b *bench) cleanup(ctx context.Context, st *store.Store, ws string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	deleted, err := b.clearJobs(ctx, st, ws)
	if err != nil {
		return fmt.Errorf("bench cleanup: delete jobs of workspace %s: %w", ws, err)
	}
	if _, err := st.Pool().Exec(ctx, benchDeleteWorkspace, ws); err != nil {
		return fmt.Errorf("bench cleanup: delete workspace %s: %w", ws, err)
	}
	b.printf("cleaned up: deleted %d jobs and the workspace", deleted)
	return nil
}

// clearJobs deletes workspace ws's jobs between the rounds or phases of one
// run and vacuums, so that the next starts from the same table: the dead
// rows a DELETE leaves sit at the head of the fetch indexes, which every
// enqueue's wake-up check and every fetch walks until vacuum (without it,
// three rounds of single-row enqueues ran at 2,283, 1,494 and 1,262 rows/s
// through the contract while plain inserts, which read no index, held).
// It returns how many jobs it deleted.
func (b *bench) clearJobs(ctx context.Context, st *store.Store, ws string) (int64, error) {
	tag, err := st.Pool().Exec(ctx, benchDeleteJobs, ws)
	if err != nil {
		return 0, err
	}
	// Best effort: VACUUM needs ownership of the table.
	if _, err := st.Pool().Exec(ctx, benchVacuum); err != nil {
		b.printf("vacuum skipped: %v", err)
	}
	return tag.RowsAffected(), nil
}

// benchDaemon is Run working in the background.
type benchDaemon struct {
	ready  time.Time     // when it started working jobs
	done   chan struct{} // closed when Run returns
	err    error         // what Run returned, valid after done
	cancel context.CancelFunc
}

// stop shuts the daemon down gracefully and returns what Run returned.
func (d *benchDaemon) stop() error {
	d.cancel()
	<-d.done
	return d.err
}

// startDaemon runs Run with cfg and the bench's start hook (chained with a
// hook the binary set) and returns once it works jobs.
func (b *bench) startDaemon(ctx context.Context, cfg config.Config, onStart func(*rivertype.JobRow)) (*benchDaemon, error) {
	user := b.hooks
	hooks := daemon.Hooks{OnJobStart: onStart}
	if user.OnJobStart != nil {
		hooks.OnJobStart = func(job *rivertype.JobRow) { onStart(job); user.OnJobStart(job) }
	}
	cfg, _ = cfg.WithDevDefaults() // as errand dev: benches send no email
	runCtx, cancel := context.WithCancel(ctx)
	d := &benchDaemon{done: make(chan struct{}), cancel: cancel}
	ready := make(chan struct{})
	hooks.OnReady = func(addr string) {
		d.ready = time.Now()
		close(ready)
		if user.OnReady != nil {
			user.OnReady(addr)
		}
	}
	go func() {
		defer close(d.done)
		d.err = daemon.Run(runCtx, cfg, b.reg, b.quiet, hooks)
	}()
	select {
	case <-ready:
		return d, nil
	case <-d.done:
		cancel()
		if d.err == nil {
			return nil, errors.New("daemon stopped before it was ready")
		}
		return nil, d.err
	}
}

func (b *bench) throughput(ctx context.Context, st *store.Store, ws string, f throughputFlags) (result string, err error) {
	insert, mode := benchInsertPings, "throughput"
	if f.baseline {
		insert, mode = benchInsertRiver, "throughput-baseline"
	}
	// The run's workspace and f.workspaces-1 more, the jobs dealt round
	// robin among them.
	extra, err := b.scaleCreateWorkspaces(ctx, st, ws, f.workspaces-1)
	defer func() {
		if cerr := b.scaleCleanup(ctx, st, extra); err == nil {
			err = cerr
		}
	}()
	if err != nil {
		return "", err
	}
	all := append([]string{ws}, extra...)
	t := time.Now()
	tag, err := st.Pool().Exec(ctx, insert, all, f.jobs)
	if err != nil {
		return "", fmt.Errorf("insert %d jobs: %w", f.jobs, err)
	}
	insertTime := time.Since(t)
	if n := tag.RowsAffected(); n != int64(f.jobs) {
		return "", fmt.Errorf("insert %d jobs: %d rows inserted", f.jobs, n)
	}
	insertRate := float64(f.jobs) / insertTime.Seconds()
	b.printf("inserted %d jobs in one statement in %s (%.0f jobs/s, not counted)", f.jobs, insertTime.Round(time.Millisecond), insertRate)
	// Fresh statistics, so the fetch plans don't depend on when autovacuum
	// (if it runs at all) last looked at the table.
	if _, err := st.Pool().Exec(ctx, benchAnalyze); err != nil {
		return "", fmt.Errorf("analyze: %w", err)
	}

	var started atomic.Int64
	var elapsed time.Duration
	if f.cpuprofile != "" {
		stop, perr := startCPUProfile(f.cpuprofile)
		if perr != nil {
			return "", perr
		}
		defer func() {
			if perr := stop(); err == nil && perr != nil {
				err = perr
			}
		}()
	}
	cpu0 := processCPU()
	if f.baseline {
		elapsed, err = b.burnDownRiver(ctx, st, all, f, &started)
	} else {
		elapsed, err = b.burnDownErrand(ctx, st, all, f, &started)
	}
	if err != nil {
		return "", err
	}
	cpu := processCPU() - cpu0
	rate := float64(f.jobs) / elapsed.Seconds()
	b.printf("completed %d/%d jobs of %d workspaces in %s with %d workers", f.jobs, f.jobs, len(all), elapsed.Round(time.Millisecond), f.workers)
	// The database's share is not visible from here (it may be remote).
	b.printf("this process used %s of CPU working them (%.1f µs per job)", cpu.Round(time.Millisecond), float64(cpu.Microseconds())/float64(f.jobs))
	return fmt.Sprintf("RESULT mode=%s jobs=%d workspaces=%d fairness=%s workspace_concurrency=%d jobs_per_s=%.0f insert_jobs_per_s=%.0f max_rss_mb=%.1f",
		mode, f.jobs, len(all), onOff(b.cfg.Fairness && !f.baseline), b.cfg.WorkspaceCap, rate, insertRate, maxRSSMB()), nil
}

func (b *bench) burnDownErrand(ctx context.Context, st *store.Store, ws []string, f throughputFlags, started *atomic.Int64) (time.Duration, error) {
	cfg := b.cfg
	cfg.Queues = make(map[string]int, len(b.cfg.Queues))
	for q, n := range b.cfg.Queues {
		cfg.Queues[q] = n
	}
	cfg.Queues[jobs.QueueDefault] = f.workers
	cfg.FetchCooldown = 2 * time.Millisecond
	cfg.HTTPAddr = "127.0.0.1:0"
	d, err := b.startDaemon(ctx, cfg, func(*rivertype.JobRow) { started.Add(1) })
	if err != nil {
		return 0, err
	}
	end, err := b.waitBurnDown(ctx, st.Pool(), ws, f.jobs, started, d.done)
	if serr := d.stop(); serr != nil {
		err = errors.Join(err, serr)
	}
	return end.Sub(d.ready), err
}

// The baseline's jobs have a kind and a queue of their own: a bare River
// client fetches every kind in its queues and would fail real jobs whose kind
// it lacks, and no errand replica serves this queue. River's queue cleaner
// removes the queue's row a day after its last use.
const (
	benchNoopKind      = "bench_noop"
	benchBaselineQueue = "bench_baseline"
)

type benchNoopArgs struct{}

func (benchNoopArgs) Kind() string { return benchNoopKind }

type benchNoopWorker struct {
	river.WorkerDefaults[benchNoopArgs]
	started *atomic.Int64
}

func (w *benchNoopWorker) Work(context.Context, *river.Job[benchNoopArgs]) error {
	w.started.Add(1)
	return nil
}

// burnDownRiver is the baseline: a bare River client on a pool of the size
// errand uses, no middleware, hooks, retry policy or other queues.
func (b *bench) burnDownRiver(ctx context.Context, st *store.Store, ws []string, f throughputFlags, started *atomic.Int64) (time.Duration, error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &benchNoopWorker{started: started})
	client, err := river.NewClient(riverpgxv5.New(st.Pool()), &river.Config{
		Schema:            migrations.Schema,
		Queues:            map[string]river.QueueConfig{benchBaselineQueue: {MaxWorkers: f.workers}},
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: b.cfg.FetchPollInterval,
		Workers:           workers,
		Logger:            b.quiet,
	})
	if err != nil {
		return 0, fmt.Errorf("river client: %w", err)
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return 0, fmt.Errorf("start river client: %w", err)
	}
	t0 := time.Now()
	end, err := b.waitBurnDown(ctx, st.Pool(), ws, f.jobs, started, client.Stopped())
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if serr := client.Stop(stopCtx); serr != nil && err == nil {
		err = fmt.Errorf("stop river client: %w", serr)
	}
	return end.Sub(t0), err
}

// waitBurnDown returns when every job of ws is finalized. Jobs are counted
// as they start (an atomic add in the hot path, nothing more); once all have
// started, or every second in case another replica took some, the database
// is asked whether any is unfinished. The answer lags completion by River's
// batched completer (up to ~50 ms) plus up to one poll interval, the same in
// both modes.
func (b *bench) waitBurnDown(ctx context.Context, pool *pgxpool.Pool, ws []string, n int, started *atomic.Int64, stopped <-chan struct{}) (time.Time, error) {
	const (
		poll    = 10 * time.Millisecond
		every   = time.Second
		stalled = time.Minute
	)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	t0 := time.Now()
	lastCheck, lastProgress := t0, t0
	lastStarted := int64(0)
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-stopped:
			return time.Time{}, errors.New("the workers stopped during the run")
		case now := <-tick.C:
			s := started.Load()
			if s != lastStarted {
				lastStarted, lastProgress = s, now
			}
			if s < int64(n) && now.Sub(lastCheck) < every {
				continue
			}
			if s < int64(n) {
				b.printf("%d/%d jobs started after %s", s, n, now.Sub(t0).Round(time.Millisecond))
			}
			lastCheck = now
			// The answer holds as of the query's snapshot, so the burn-down
			// ended before the question was asked.
			asked := time.Now()
			var unfinished bool
			if err := pool.QueryRow(ctx, benchUnfinished, ws).Scan(&unfinished); err != nil {
				return time.Time{}, fmt.Errorf("check progress: %w", err)
			}
			if !unfinished {
				var completed, other int64
				if err := pool.QueryRow(ctx, benchCountFinal, ws).Scan(&completed, &other); err != nil {
					return time.Time{}, fmt.Errorf("count jobs: %w", err)
				}
				if completed != int64(n) {
					return time.Time{}, fmt.Errorf("%d of %d jobs completed, %d failed or cancelled", completed, n, other)
				}
				return asked, nil
			}
			if now.Sub(lastProgress) > stalled {
				return time.Time{}, fmt.Errorf("no job started for %s: %d of %d started (is its queue served?)", stalled, s, n)
			}
		}
	}
}

type benchStart struct {
	id int64
	at time.Time
}

func (b *bench) latency(ctx context.Context, st *store.Store, ws string, f latencyFlags) (result string, err error) {
	// The hook must never block a worker: starts queue up for the sampler,
	// which skips the background jobs' ones.
	starts := make(chan benchStart, 1<<14)
	var dropped atomic.Int64
	cfg := b.cfg
	cfg.HTTPAddr = "127.0.0.1:0"
	d, err := b.startDaemon(ctx, cfg, func(job *rivertype.JobRow) {
		select {
		case starts <- benchStart{job.ID, time.Now()}:
		default:
			dropped.Add(1)
		}
	})
	if err != nil {
		return "", err
	}
	defer d.stop()

	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	stopBackground := func() (int64, float64, error) { return 0, 0, nil }
	if f.backgroundRPS > 0 {
		if stopBackground, err = b.background(ctx, cfg.DatabaseURL, ws, f.backgroundRPS); err != nil {
			return "", err
		}
		defer stopBackground()
	}

	// A sample is timed from just before the INSERT is sent to the job's
	// start; the INSERT's own round trip (trigger, commit) is kept apart too.
	sample := func() (total, insert time.Duration, err error) {
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		t0 := time.Now()
		var id int64
		if err := conn.QueryRow(ctx, benchInsertOne, ws).Scan(&id); err != nil {
			return 0, 0, fmt.Errorf("insert: %w", err)
		}
		insert = time.Since(t0)
		for {
			select {
			case s := <-starts:
				if s.id == id {
					return s.at.Sub(t0), insert, nil
				}
			case <-d.done:
				return 0, 0, fmt.Errorf("daemon stopped: %v", d.err)
			case <-timeout.C:
				return 0, 0, fmt.Errorf("job %d did not start within 10s (%d start events dropped)", id, dropped.Load())
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			}
		}
	}
	// A few uncounted samples warm up the connection's prepared statement and
	// the workers. Each INSERT goes as soon as the last sample's job has
	// started, or --gap later: the queue is empty either way, but after a
	// gap of a few milliseconds every process on the path (the app's
	// backend, the listener's, the workers, on a VM the virtual CPUs) has
	// gone to sleep and pays for waking up.
	const warmup = 20
	totals := make([]time.Duration, 0, f.samples)
	inserts := make([]time.Duration, 0, f.samples)
	for i := range warmup + f.samples {
		if f.gap > 0 {
			time.Sleep(f.gap)
		}
		total, insert, err := sample()
		if err != nil {
			return "", err
		}
		if i >= warmup {
			totals = append(totals, total)
			inserts = append(inserts, insert)
		}
	}
	n, rate, err := stopBackground()
	if err != nil {
		return "", err
	}
	if f.backgroundRPS > 0 {
		b.printf("background load: %d jobs inserted at %.0f/s", n, rate)
	}
	if err := d.stop(); err != nil {
		return "", err
	}
	b.printf("%d samples, %d warm-up samples not counted, %s idle between samples", f.samples, warmup, f.gap)
	b.printf("of which the INSERT round trip (trigger and commit): p50 %.3f ms, p99 %.3f ms",
		percentileMS(inserts, 0.50), percentileMS(inserts, 0.99))
	return fmt.Sprintf("RESULT mode=latency samples=%d background_rps=%d p50_ms=%.3f p95_ms=%.3f p99_ms=%.3f max_ms=%.3f",
		f.samples, f.backgroundRPS, percentileMS(totals, 0.50), percentileMS(totals, 0.95), percentileMS(totals, 0.99), percentileMS(totals, 1)), nil
}

// percentileMS is the p-quantile (nearest rank below) of ds in milliseconds;
// it sorts ds.
func percentileMS(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
}

// background inserts rps ping jobs per second on a connection of its own,
// paced by a ticker (a tick missed while an INSERT is slow is skipped, not
// made up), until stop, which reports how many it inserted and at what rate.
func (b *bench) background(ctx context.Context, url, ws string, rps int) (stop func() (int64, float64, error), err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var inserted int64
	var insertErr error
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if _, err := conn.Exec(ctx, benchInsertOne, ws); err != nil {
				if ctx.Err() == nil {
					insertErr = fmt.Errorf("background insert: %w", err)
				}
				return
			}
			inserted++
		}
	}()
	var once sync.Once
	var rate float64
	return func() (int64, float64, error) {
		once.Do(func() {
			cancel()
			<-done
			rate = float64(inserted) / time.Since(start).Seconds()
			_ = conn.Close(context.WithoutCancel(ctx))
		})
		return inserted, rate, insertErr
	}, nil
}

// startCPUProfile profiles this process into path until stop is called.
func startCPUProfile(path string) (stop func() error, err error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return out.Close()
	}, nil
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxRSSMB is the process's peak resident set size. Linux reports ru_maxrss
// in KiB (errand is Linux-only: see internal/localpg).
func maxRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
