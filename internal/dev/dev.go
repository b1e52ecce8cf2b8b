// Package dev is `errand dev`: everything on a private local PostgreSQL,
// migrated, seeded and working jobs.
package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/daemon"
	"github.com/errand-dev/errand/internal/localpg"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// devPort is tried first so the printed connection string stays the same
// from one `errand dev` to the next.
const devPort = 54329

// Run is `errand dev`: with DATABASE_URL unset it starts a private PostgreSQL
// from the locally installed binaries (data kept in ERRAND_DEV_DIR across
// restarts), migrates it, seeds a demo workspace, prints how to use it, and
// works jobs until ctx is cancelled.
func Run(ctx context.Context, cfg config.Config, reg *jobs.Registry, stdout io.Writer, logger *slog.Logger, hooks daemon.Hooks) error {
	if cfg.DatabaseURL == "" {
		dir, err := devDir(cfg)
		if err != nil {
			return err
		}
		port := devPort
		if !tcpFree(fmt.Sprintf("127.0.0.1:%d", port)) {
			port = 0
		}
		fmt.Fprintf(stdout, "errand dev: starting PostgreSQL in %s ...\n", dir)
		if os.Geteuid() == 0 {
			fmt.Fprintln(stdout, "errand dev: running as root, so PostgreSQL (which refuses root) runs as the postgres user")
		}
		server, err := localpg.Start(ctx, localpg.Options{DataDir: dir, Port: port, BinDir: cfg.PGBinDir})
		if err != nil {
			return fmt.Errorf("start local PostgreSQL (install Debian's postgresql package, or set DATABASE_URL): %w", err)
		}
		defer server.Stop()
		if err := createDatabase(ctx, server.URL("postgres"), "errand"); err != nil {
			return fmt.Errorf("connect to local PostgreSQL: %w", err)
		}
		cfg.DatabaseURL = server.URL("errand")
	}
	// Each kind's development defaults (jobs.EnvVar.Dev) for what is unset:
	// emails captured, never sent; webhooks to receivers on this machine.
	cfg, set := cfg.WithDevDefaults()
	for _, ev := range set {
		if ev.DevNote != "" {
			fmt.Fprintf(stdout, "errand dev: %s (%s=%s)\n", ev.DevNote, ev.Name, ev.Dev)
		}
	}
	if cfg.Getenv("ERRAND_HTTP_ADDR") == "" && !tcpFree(cfg.HTTPAddr) {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if err := daemon.Migrate(ctx, cfg, reg, stdout); err != nil {
		return err
	}
	ws, err := seedDemo(ctx, cfg)
	if err != nil {
		return err
	}
	user := hooks.OnReady
	hooks.OnReady = func(addr string) {
		fmt.Fprintf(stdout, `
errand dev is running. Ctrl-C stops it; data is kept for the next run.

  health:    http://%[1]s/healthz
  database:  %[2]s
  workspace: demo (%[3]s)

Enqueue a ping:
  psql '%[2]s' -c "INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ('%[3]s', 'ping', '{\"sleep_ms\": 100}') RETURNING id"
Watch jobs:
  psql '%[2]s' -c "SELECT id, kind, status, attempt, last_error, created_at FROM errand.jobs ORDER BY id DESC LIMIT 10"
Send an email (captured: nothing leaves the machine without RESEND_API_KEY):
  psql '%[2]s' -c "INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ('%[3]s', 'email.send', '{\"to\": \"you@example.com\", \"template\": \"invite\", \"data\": {\"invite_url\": \"https://example.com/invite\"}}') RETURNING id"
Captured emails:
  http://%[1]s/emails

`, addr, cfg.DatabaseURL, ws.ID)
		if user != nil {
			user(addr)
		}
	}
	return daemon.Run(ctx, cfg, reg, logger, hooks)
}

func devDir(cfg config.Config) (string, error) {
	if cfg.DevDir != "" {
		return filepath.Abs(cfg.DevDir)
	}
	// As root, PostgreSQL runs as the postgres user, which cannot enter
	// /root; /var/tmp survives reboots and is open to it.
	if os.Geteuid() == 0 {
		return "/var/tmp/errand-dev/pg", nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a directory for dev data (set ERRAND_DEV_DIR): %w", err)
	}
	return filepath.Join(cache, "errand", "dev-pg"), nil
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return store.CreateDatabase(ctx, conn, name)
}

func seedDemo(ctx context.Context, cfg config.Config) (store.Workspace, error) {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, SkipScopeCheck: true})
	if err != nil {
		return store.Workspace{}, err
	}
	defer st.Close()
	ws, err := store.EnsureWorkspace(ctx, st, "Demo", "demo")
	if err != nil {
		return ws, errors.Join(errors.New("seed demo workspace"), err)
	}
	return ws, nil
}

func tcpFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
