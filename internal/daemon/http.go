package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/metrics"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// webConns is the kinds' pages' own pool: page loads must never take the
// connections crash recovery and /readyz need.
const webConns = 3

// newServer bounds every phase of a request, so slow or idle clients cannot
// hold connections open.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

// pinger is what /readyz asks whether the database answers (a *store.Store).
type pinger interface {
	Ping(ctx context.Context) error
}

// handleHealth serves /healthz (alive) and /readyz (database reachable, jobs
// being worked, no operator problem). Database errors are logged, not shown:
// the callers are unauthenticated.
func handleHealth(mux *http.ServeMux, db pinger, ready func() error, problems *jobs.Problems, logger *slog.Logger) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := db.Ping(r.Context()); err != nil {
			logger.Warn("readyz: database unreachable", slog.String("error", err.Error()))
			http.Error(w, "not ready: database unreachable", http.StatusServiceUnavailable)
			return
		}
		if list := problems.List(); len(list) > 0 {
			http.Error(w, "not ready:\n"+strings.Join(list, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

// startKinds runs every kind's setup: its configuration, routes and
// problems. All failures are reported together.
func startKinds(ctx context.Context, reg *jobs.Registry, cfg config.Config, logger *slog.Logger, problems *jobs.Problems, web *store.Store, mux *http.ServeMux, m *metrics.Metrics) error {
	private := jobs.IsLoopbackHost(cfg.HTTPAddr)
	var errs []string
	for _, k := range reg.Kinds() {
		s := jobs.NewSetup(cfg.KindEnv(), logger.With(slog.String("kind", k.Name)), problems, web, private, func(pattern string, h http.Handler) {
			mux.Handle(pattern, h)
		})
		s.Metrics = m.Registerer()
		if err := k.Start(ctx, s); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("configuration:\n%s", strings.Join(errs, "\n"))
	}
	return nil
}

// QuietLogger drops records below warn: River logs every retry at info, and
// errand's middleware already logs each attempt with more context.
func QuietLogger(l *slog.Logger) *slog.Logger {
	return slog.New(levelFloor{l.Handler(), slog.LevelWarn})
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

// Publish tells the SQL contract this binary's kinds (see store.Publish for
// the mode) and settings.
func Publish(ctx context.Context, st *store.Store, cfg config.Config, reg *jobs.Registry, mode store.Publish) error {
	if err := store.PublishKinds(ctx, st, reg.Infos(), mode); err != nil {
		return err
	}
	// `errand migrate` publishes the args limit only when its environment
	// sets it: its Kubernetes Job and compose service have DATABASE_URL
	// alone, and put the default over the replicas' larger limit (INSERTs
	// the replicas would work were refused until one restarted). A fresh
	// database has the default from migration 001. A replica only raises it.
	if mode == store.Exact && cfg.Getenv("ERRAND_MAX_ARGS_BYTES") == "" {
		return nil
	}
	return store.PublishMaxArgsBytes(ctx, st, cfg.MaxArgsBytes, mode)
}
