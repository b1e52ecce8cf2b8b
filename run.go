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

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Run is `errand run`: it works jobs until ctx is cancelled, then shuts down
// gracefully (see shutdown) and returns nil. Of opts, WithReady and
// WithJobStartHook apply; kinds come in reg.
func Run(ctx context.Context, cfg Config, reg *jobs.Registry, logger *slog.Logger, opts ...Option) error {
	o := collect(opts)
	st, err := openStore(ctx, cfg, false)
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

	pollOnly := cfg.PollOnly
	if !pollOnly {
		if err := probeListen(ctx, st.Pool()); err != nil {
			pollOnly = true
			logger.Warn("LISTEN/NOTIFY does not work on this connection (a transaction-mode pooler such as PgBouncer or Supavisor?); "+
				"falling back to polling every ERRAND_FETCH_POLL_INTERVAL: jobs start up to that much later. Point DATABASE_URL at a direct or session-mode connection to fix.",
				slog.String("cause", err.Error()), slog.Duration("poll_interval", cfg.FetchPollInterval))
		}
	}

	client, err := newRiverClient(st, cfg, reg, logger, pollOnly, o.onJobStart)
	if err != nil {
		return err
	}

	var running atomic.Bool
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on ERRAND_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{Handler: healthHandler(st, &running, o.problems), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", slog.String("error", err.Error()))
		}
	}()
	defer srv.Close()

	// River's client runs on its own context: cancelling ctx (SIGTERM) starts
	// our graceful shutdown instead of River's abrupt one.
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start river client: %w", err)
	}
	running.Store(true)
	logger.Info("errand running",
		slog.String("http", "http://"+ln.Addr().String()),
		slog.Any("queues", cfg.Queues),
		slog.Bool("poll_only", pollOnly),
		slog.String("tenant_scope_role", st.ScopeRole()),
		slog.Int("kinds", len(reg.Kinds())))
	if o.onReady != nil {
		o.onReady(ln.Addr().String())
	}

	select {
	case <-ctx.Done():
	case <-client.Stopped():
		running.Store(false)
		return errors.New("river client stopped unexpectedly")
	}
	running.Store(false)
	return shutdown(client, cfg.ShutdownTimeout, logger)
}

// shutdown stops fetching, lets running jobs finish within timeout, then
// cancels the rest: a cancelled job goes back to pending with its attempt
// given back (River's soft-stop path), so nothing is lost or burned.
func shutdown(client *river.Client[pgx.Tx], timeout time.Duration, logger *slog.Logger) error {
	logger.Info("shutting down: letting running jobs finish", slog.Duration("timeout", timeout))
	softCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := client.Stop(softCtx)
	if err == nil {
		logger.Info("shut down cleanly")
		return nil
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stop: %w", err)
	}
	logger.Warn("shutdown timeout reached: cancelling running jobs; they return to pending without losing an attempt")
	hardCtx, cancelHard := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelHard()
	if err := client.StopAndCancel(hardCtx); err != nil {
		return fmt.Errorf("stop and cancel: %w", err)
	}
	logger.Info("shut down after cancelling running jobs")
	return nil
}

func newRiverClient(st *store.Store, cfg Config, reg *jobs.Registry, logger *slog.Logger, pollOnly bool, onStart func(*rivertype.JobRow)) (*river.Client[pgx.Tx], error) {
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
		ID:                  clientID(),
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

func healthHandler(st *store.Store, running *atomic.Bool, problems *jobs.Problems) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !running.Load() {
			http.Error(w, "not ready: job processing is not running", http.StatusServiceUnavailable)
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
