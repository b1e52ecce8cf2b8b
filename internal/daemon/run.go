package errand

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/maintenance"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Run is `errand run`: it works jobs until ctx is cancelled, then shuts down
// gracefully (see shutdown) and returns nil. Of opts, WithReady and
// WithJobStartHook apply; kinds come in reg.
func Run(ctx context.Context, cfg Config, reg *jobs.Registry, logger *slog.Logger, opts ...Option) error {
	o := collect(opts)
	// A small pool for checks, readiness and the rescuer; jobs use their
	// engine's pool of ERRAND_DB_MAX_CONNS.
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
	if err := publish(ctx, st, cfg, reg); err != nil {
		return err
	}

	// Behind a transaction-mode pooler session state leaks between clients,
	// so the replica id the completion guard reads could be another
	// replica's, and the guard would refuse an owner's own completion: the
	// guard is left off there.
	pollOnly, guard := cfg.PollOnly, true
	if !pollOnly {
		if err := probeListen(ctx, st.Pool()); err != nil {
			pollOnly, guard = true, false
			logger.Warn("LISTEN/NOTIFY does not work on this connection (a transaction-mode pooler such as PgBouncer or Supavisor?); "+
				"falling back to polling every ERRAND_FETCH_POLL_INTERVAL: jobs start up to that much later, and the completion guard that stops a rescued job's stale attempt from finishing it is off. Point DATABASE_URL at a direct or session-mode connection to fix.",
				slog.String("cause", err.Error()), slog.Duration("poll_interval", cfg.FetchPollInterval))
		}
	}

	// The engine (River client, its pool, its heartbeat) is replaced when it
	// fences itself; readiness follows the current one.
	var current atomic.Pointer[engine]
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
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on ERRAND_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{Handler: healthHandler(st, ready, o.problems, cfg.ResendAPIKey == ""), ReadHeaderTimeout: 5 * time.Second}
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

	first := true
	for {
		e, err := startEngine(ctx, cfg, reg, logger, pollOnly, guard, o.onJobStart, timing)
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
		current.Store(e)
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
			if o.onReady != nil {
				o.onReady(ln.Addr().String())
			}
			first = false
		} else {
			logger.Info("rejoined as a new replica", slog.String("replica", e.id))
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
//   - interval R/10: renewals, their timeout, and rescuer sweeps;
//   - fenceAfter 0.4R: a replica with no renewal confirmed for this long
//     (counted from when the renewal was sent, so no later than the
//     database's stamp) cancels its jobs.
//
// A dead replica's jobs are back within lease + one sweep = 0.7R < R. A
// cut-off replica fences at most 0.4R after its last visible stamp, leaving
// 0.2R for its cancelled jobs to stop before anyone may rescue them.
func rescueTimings(rescueAfter time.Duration) rescueTiming {
	return rescueTiming{lease: rescueAfter * 6 / 10, fenceAfter: rescueAfter * 4 / 10, interval: rescueAfter / 10}
}

func newRiverClient(st *store.Store, id string, cfg Config, reg *jobs.Registry, logger *slog.Logger, pollOnly bool, onStart func(*rivertype.JobRow)) (*river.Client[pgx.Tx], error) {
	queues := make(map[string]river.QueueConfig, len(cfg.Queues))
	for name, n := range cfg.Queues {
		queues[name] = river.QueueConfig{MaxWorkers: n}
	}
	jobTimeout := reg.MaxTimeout()
	riverLogger := logger
	if !logger.Enabled(context.Background(), slog.LevelInfo-1) {
		// River logs every retry at info; errand's middleware already logs
		// each attempt with more context.
		riverLogger = slog.New(levelFloor{logger.Handler(), slog.LevelWarn})
	}
	client, err := river.NewClient(riverpgxv5.New(st.Pool()), &river.Config{
		Schema:              migrations.Schema,
		ID:                  id,
		Queues:              queues,
		Workers:             reg.Workers(st),
		FetchCooldown:       cfg.FetchCooldown,
		FetchPollInterval:   cfg.FetchPollInterval,
		FetchOnlyKnownKinds: true,
		PollOnly:            pollOnly,
		JobTimeout:          jobTimeout,
		// River's own rescuer is the slow backstop; it must not fire before a
		// job's own timeout.
		RescueStuckJobsAfter: max(time.Hour, jobTimeout+time.Minute),
		RetryPolicy:          &jobs.RetryPolicy{Base: cfg.RetryBase},
		Middleware:           []rivertype.Middleware{&jobs.Middleware{Logger: logger, OnStart: onStart}},
		Logger:               riverLogger,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return client, nil
}

// clientID names this replica in River's attempted_by and leader election.
func clientID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s_%s", host, hex.EncodeToString(b))
}

// probeListen checks that a notification sent on one connection reaches a
// LISTEN on another. Behind a transaction-mode pooler it does not.
func probeListen(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The probe connection may be left in an odd state (LISTEN on a pooled
	// backend): never return it to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	channel := "errand_probe_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_notify($1, 'probe')", channel); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := conn.WaitForNotification(ctx); err != nil {
		return fmt.Errorf("no notification within 3s: %w", err)
	}
	return nil
}

// healthHandler serves /healthz and /readyz, and in capture mode (no
// RESEND_API_KEY) the captured-email pages: they list every tenant's
// recipients, which only a development setup should show.
func healthHandler(st *store.Store, ready func() error, problems *jobs.Problems, captureMode bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := st.Ping(r.Context()); err != nil {
			http.Error(w, "not ready: database unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if list := problems.List(); len(list) > 0 {
			http.Error(w, "not ready:\n"+strings.Join(list, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if captureMode {
		emails := jobs.EmailsHandler(st)
		mux.Handle("GET /emails", emails)
		mux.Handle("GET /emails/{id}", emails)
	}
	return mux
}

// levelFloor raises a handler's minimum level.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(a), h.min}
}
func (h levelFloor) WithGroup(n string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(n), h.min}
}
