package errand

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

	"github.com/errand-dev/errand/internal/localpg"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// devPort is tried first so the printed connection string stays the same
// from one `errand dev` to the next.
const devPort = 54329

// Dev is `errand dev`: with DATABASE_URL unset it starts a private PostgreSQL
// from the locally installed binaries (data kept in ERRAND_DEV_DIR across
// restarts), migrates it, seeds a demo workspace, prints how to use it, and
// works jobs until ctx is cancelled.
func Dev(ctx context.Context, cfg Config, reg *jobs.Registry, getenv func(string) string, stdout io.Writer, logger *slog.Logger, opts ...Option) error {
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
		server, err := localpg.Start(ctx, localpg.Options{DataDir: dir, Port: port, BinDir: cfg.PGBinDir})
		if err != nil {
			return fmt.Errorf("start local PostgreSQL (install Debian's postgresql package, or set DATABASE_URL): %w", err)
		}
		defer server.Stop()
		if err := createDatabase(ctx, server.URL("postgres"), "errand"); err != nil {
			return err
		}
		cfg.DatabaseURL = server.URL("errand")
	}
	if getenv("ERRAND_HTTP_ADDR") == "" && !tcpFree(cfg.HTTPAddr) {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if err := Migrate(ctx, cfg, reg, stdout); err != nil {
		return err
	}
	ws, err := seedDemo(ctx, cfg)
	if err != nil {
		return err
	}
	ready := WithReady(func(addr string) {
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
	})
	return Run(ctx, cfg, reg, logger, append(opts, ready)...)
}

func devDir(cfg Config) (string, error) {
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
		return fmt.Errorf("connect to local PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func seedDemo(ctx context.Context, cfg Config) (store.Workspace, error) {
	st, err := openStore(ctx, cfg, false)
	if err != nil {
		return store.Workspace{}, err
	}
	defer st.Close()
	ws, err := st.EnsureWorkspace(ctx, "Demo", "demo")
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
