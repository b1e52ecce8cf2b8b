// Package daemon is `errand run`: one replica that works jobs (River with
// errand's middleware and completion guard), keeps its lease (heartbeat),
// rescues dead replicas' jobs, and serves /healthz, /readyz and the kinds'
// routes. `errand dev` and `errand bench` run it too.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/fair"
	"github.com/errand-dev/errand/internal/maintenance"
	"github.com/errand-dev/errand/internal/metrics"
	"github.com/errand-dev/errand/internal/tracing"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/schedules"
	"github.com/errand-dev/errand/store"
)

// Hooks are the binary's callbacks into the daemon.
type Hooks struct {
	// OnReady is called once the daemon works jobs, with its HTTP address.
	OnReady func(httpAddr string)
	// OnJobStart is called in the worker goroutine as each job starts, for
	// metrics and benchmarks; keep it fast.
	OnJobStart func(job *rivertype.JobRow)
}

// Run is `errand run`: it works jobs until ctx is cancelled, then shuts down
// gracefully (see shutdown) and returns nil.
func Run(ctx context.Context, cfg config.Config, reg *jobs.Registry, logger *slog.Logger, hooks Hooks) error {
	// The cron table (ERRAND_SCHEDULES) is checked before anything starts.
	table, err := schedules.Load(cfg.Getenv, reg.Kinds())
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	// A small pool for checks, readiness and the rescuer; jobs use their
	// engine's pool of ERRAND_DB_MAX_CONNS, the kinds' pages one of their own.
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 4, SkipScopeCheck: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := migrations.Check(ctx, st.Pool()); err != nil {
		return err
	}
	if err := st.DetectScopeRole(ctx); err != nil {
		return err
	}
	if oidOnly, err := store.InstanceBoundToOIDOnly(ctx, st); err != nil {
		return err
	} else if oidOnly {
		logger.Warn("the role that migrated errand may not call pg_control_system(), so this database's instance id " +
			"(in every email's Resend idempotency key) is bound to the database's oid alone: a copy in another cluster " +
			"whose database gets the same oid keeps it, and its emails' keys collide with this one's. On such a copy run " +
			"DELETE FROM errand.settings WHERE name IN ('instance_id', 'instance_bound_to'); before errand starts on it")
	}
	if err := Publish(ctx, st, cfg, reg, store.Widen); err != nil {
		return err
	}
	// The caps this replica's fetch applies, for errand.queue_startable
	// (KEDA's query, the metrics). Only replicas publish them: `errand
	// migrate` runs with the database's settings alone (the Kubernetes Job
	// sets DATABASE_URL only) and would put its defaults over the fleet's.
	if err := store.PublishWorkspaceCaps(ctx, st, cfg.Fairness, cfg.WorkspaceCap); err != nil {
		return err
	}
	web, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: webConns})
	if err != nil {
		return err
	}
	defer web.Close()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on ERRAND_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	defer ln.Close()
	problems := &jobs.Problems{}
	mux := http.NewServeMux()
	// The engine (River client, its pool, its heartbeat) is replaced when it
	// fences itself; readiness follows the current one.
	var current atomic.Pointer[engine]
	m := metrics.New(metrics.Config{DB: st, Logger: logger, Queues: slices.Sorted(maps.Keys(cfg.Queues))})
	mux.Handle("GET /metrics", m.Handler())
	host, _ := os.Hostname()
	tr, err := tracing.New(ctx, tracing.Config{Endpoint: cfg.OTLPEndpoint, ServiceName: cfg.ServiceName,
		Replica: fmt.Sprintf("%s/%d", host, os.Getpid()), BatchTimeout: time.Second})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			logger.Warn("tracing: could not export the last spans", slog.String("error", err.Error()))
		}
	}()
	if err := mountUI(ctx, mux, web, cfg, logger); err != nil {
		return err
	}
	if err := startKinds(ctx, reg, cfg, logger, problems, web, mux, m); err != nil {
		return err
	}

	// Behind a transaction-mode pooler session state leaks between clients,
	// so the replica id the completion guard reads could be another
	// replica's, and the guard would refuse an owner's own completion. The
	// guard is on only when the probe proves a session of our own (a
	// notification reached the connection that LISTENed), whatever
	// ERRAND_POLL_ONLY says: that setting is about fetching, not about the
	// connection.
	pollOnly, guard := cfg.PollOnly, true
	if err := store.ProbeListen(ctx, st.Pool()); err != nil {
		guard = false
		fallback := "falling back to polling every ERRAND_FETCH_POLL_INTERVAL: jobs start up to that much later, and "
		if pollOnly {
			fallback = ""
		}
		pollOnly = true
		logger.Warn("LISTEN/NOTIFY does not work on this connection (a transaction-mode pooler such as PgBouncer or Supavisor?); "+
			fallback+"the completion guard that stops a rescued job's stale attempt from finishing it is off. Point DATABASE_URL at a direct or session-mode connection to fix.",
			slog.String("cause", err.Error()), slog.Duration("poll_interval", cfg.FetchPollInterval))
	}

	ready := func() error {
		e := current.Load()
		if e == nil {
			return errors.New("job processing is not running")
		}
		if !e.heartbeat.Healthy() {
			return errors.New("this replica's heartbeat is not being renewed")
		}
		return nil
	}
	handleHealth(mux, st, ready, problems, logger)
	srv := newServer(mux)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", slog.String("error", err.Error()))
		}
	}()
	defer srv.Close()

	timing := rescueTimings(cfg.RescueAfter)
	rescueCtx, stopRescuer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRescuer()
	go maintenance.NewRescuer(st, maintenance.RescuerConfig{Lease: timing.lease, Interval: timing.interval, Logger: logger}).Run(rescueCtx)
	leading := func(ctx context.Context) bool {
		e := current.Load()
		if e == nil {
			return false
		}
		leader, err := store.Leader(ctx, st)
		return err == nil && leader == e.id
	}
	// Old logs go on the leader; River's cleaner (configured in
	// newRiverClient) does the jobs, after the leader has counted them
	// (errand.job_counts, for the usage reports).
	go maintenance.NewPruner(st, maintenance.PrunerConfig{Keep: cfg.RetainLogs, Logger: logger, Leading: leading}).Run(rescueCtx)
	counter := maintenance.NewJobCounter(st, maintenance.JobCounterConfig{Logger: logger, Leading: leading})
	go counter.Run(rescueCtx)

	first := true
	for {
		// Finished jobs are counted before River's cleaner, which starts
		// with the engine, may delete them: after an outage longer than
		// ERRAND_RETAIN_COMPLETED the cleaner's first pass on the new leader
		// came before the leader's first roll-up, a minute later, and the
		// jobs that finished just before the outage were never counted.
		// (Every replica does this once per engine start: a roll-up waits
		// for another's and then counts nothing twice. At most 10 s: a
		// roll-up holding the watermark longer delays the start no more.)
		countCtx, cancelCount := context.WithTimeout(ctx, 10*time.Second)
		if _, err := counter.Round(countCtx); err != nil && ctx.Err() == nil {
			logger.Warn("counting finished jobs before starting failed; River's cleaner may delete some uncounted",
				slog.String("error", err.Error()))
		}
		cancelCount()
		e, err := startEngine(ctx, cfg, reg, table, logger, pollOnly, guard, hooks.OnJobStart, timing, m, tr)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if first {
				return err
			}
			logger.Warn("cannot start job processing yet; retrying", slog.String("error", err.Error()))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		// Logged before /readyz says ready, so whoever waits for ready
		// finds the line.
		if first {
			logger.Info("errand running",
				slog.String("http", "http://"+ln.Addr().String()),
				slog.String("replica", e.id),
				slog.Any("queues", cfg.Queues),
				slog.Bool("poll_only", pollOnly),
				slog.Bool("completion_guard", guard),
				slog.String("tenant_scope_role", st.ScopeRole()),
				slog.Duration("rescue_after", cfg.RescueAfter),
				slog.Int("kinds", len(reg.Kinds())))
		} else {
			logger.Info("rejoined as a new replica", slog.String("replica", e.id))
		}
		current.Store(e)
		if first {
			if hooks.OnReady != nil {
				hooks.OnReady(ln.Addr().String())
			}
			first = false
		}

		select {
		case <-ctx.Done():
			current.Store(nil)
			return e.shutdown(cfg.ShutdownTimeout, logger)
		case <-e.heartbeat.Fenced():
			current.Store(nil)
			e.abandon(logger)
		case <-e.client.Stopped():
			current.Store(nil)
			e.close(false)
			return errors.New("river client stopped unexpectedly")
		}
	}
}

type rescueTiming struct {
	lease, fenceAfter, interval time.Duration
}

// rescueTimings derives everything from ERRAND_RESCUE_AFTER (R):
//   - lease 0.6R: a heartbeat older than this (database clock) is dead;
//   - interval R/10: renewals and rescuer sweeps (the rescuer also sweeps
//     once as it starts);
//   - fenceAfter 0.4R: a replica with no renewal confirmed for this long
//     (counted from when the renewal was sent, so no later than the
//     database's stamp) cancels its jobs. A renewal may take
//     fenceAfter - interval = 0.3R before it is given up.
//
// A dead replica's jobs are back within lease + one sweep = 0.7R < R. A
// cut-off replica fences at most 0.4R after its last visible stamp, leaving
// 0.2R for its cancelled jobs to stop before anyone may rescue them. The
// limits (see maintenance.HeartbeatConfig): a database-wide commit stall
// shorter than 0.3R fences nobody, one longer than 0.4R fences every
// replica; a forward step of the database's clock by more than 0.6R less
// the time since the last renewal has live replicas' jobs rescued.
func rescueTimings(rescueAfter time.Duration) rescueTiming {
	return rescueTiming{lease: rescueAfter * 6 / 10, fenceAfter: rescueAfter * 4 / 10, interval: rescueAfter / 10}
}

func newRiverClient(st *store.Store, id string, cfg config.Config, reg *jobs.Registry, table *schedules.Table, logger *slog.Logger, pollOnly bool, onStart func(*rivertype.JobRow), tr *tracing.Tracing, m *metrics.Metrics, reindex []string) (*river.Client[pgx.Tx], error) {
	queues := make(map[string]river.QueueConfig, len(cfg.Queues))
	for name, n := range cfg.Queues {
		if n > 0 { // 0: this replica leaves the queue to others
			queues[name] = river.QueueConfig{MaxWorkers: n}
		}
	}
	jobTimeout := reg.MaxTimeout()
	riverLogger := logger
	if !logger.Enabled(context.Background(), slog.LevelInfo-1) {
		// River logs every retry at info; errand's middleware already logs
		// each attempt with more context.
		riverLogger = QuietLogger(logger)
	}
	// The cron table's fan-out jobs are River's own kind, worked here and
	// enqueued by the leader's periodic jobs (see package schedules).
	workers := reg.Workers(st)
	table.AddWorker(workers, st.Pool(), logger)
	var driver riverdriver.Driver[pgx.Tx] = riverpgxv5.New(st.Pool())
	middleware := append([]rivertype.Middleware{&jobs.Middleware{Logger: logger, OnStart: onStart}}, tr.Middleware()...)
	if cfg.Fairness {
		fd := fair.NewDriver(st.Pool(), fair.Config{DefaultCap: cfg.WorkspaceCap, Logger: logger})
		driver = fd
		// First, so that a job's work has ended when it says so.
		middleware = append([]rivertype.Middleware{fd.Middleware()}, middleware...)
	}
	client, err := river.NewClient(driver, &river.Config{
		Schema:       migrations.Schema,
		ID:           id,
		Queues:       queues,
		Workers:      workers,
		PeriodicJobs: table.PeriodicJobs(st, logger, time.Now),
		// Retention: a failed job is discarded or cancelled.
		CompletedJobRetentionPeriod: cfg.RetainCompleted,
		DiscardedJobRetentionPeriod: cfg.RetainFailed,
		CancelledJobRetentionPeriod: cfg.RetainFailed,
		FetchCooldown:               cfg.FetchCooldown,
		FetchPollInterval:           cfg.FetchPollInterval,
		FetchOnlyKnownKinds:         true,
		PollOnly:                    pollOnly,
		JobTimeout:                  jobTimeout,
		// River's own rescuer is the slow backstop for live replicas' jobs.
		RescueStuckJobsAfter: rescueStuckJobsAfter(reg),
		RetryPolicy:          &jobs.RetryPolicy{Base: cfg.RetryBase},
		ReindexerIndexNames:  reindex,
		Middleware:           middleware,
		// Counts each attempt (outermost, before the middleware above) and
		// knows whether this client leads.
		Plugins: []rivertype.Plugin{m.Plugin()},
		Logger:  riverLogger,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return client, nil
}

// rescueStuckJobsAfter is when River's own rescuer takes a running job back
// from a live replica (errand's rescuer handles dead ones): the slow backstop
// for a job that ignores its context. It must not fire before a job's own
// timeout.
func rescueStuckJobsAfter(reg *jobs.Registry) time.Duration {
	return max(time.Hour, reg.MaxTimeout()+time.Minute)
}

// clientID names this replica in River's attempted_by and leader election.
func clientID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s_%s", host, hex.EncodeToString(b))
}
