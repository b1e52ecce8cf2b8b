// Package cli is errand's command line: it reads the configuration and runs
// one command (run, migrate, dev, bench, schedules, jobs, workspaces, stats, help). errand.Main is its public
// face; every command takes the same Options.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/bench"
	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/daemon"
	"github.com/errand-dev/errand/internal/dev"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Options are what a binary built on errand sets (errand.Option), honoured
// the same by every command.
type Options struct {
	// Kinds are every kind the binary works: errand's built-in ones and its own.
	Kinds []jobs.Kind
	// OnReady is called once the daemon works jobs, with its HTTP address.
	OnReady func(httpAddr string)
	// OnJobStart is called in the worker goroutine as each job starts.
	OnJobStart func(job *rivertype.JobRow)
}

// ErrUsage is returned (wrapped) for a bad command line.
var ErrUsage = errors.New("usage")

// usageError is another package's usage error (bench's), which is also
// ErrUsage, with its own message.
type usageError struct{ err error }

func (u usageError) Error() string   { return u.err.Error() }
func (u usageError) Unwrap() []error { return []error{ErrUsage, u.err} }

// Main runs one command. It returns when the command is done or, for run and
// dev, when ctx is cancelled (SIGTERM) and shutdown is complete.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, o Options) error {
	reg, err := jobs.NewRegistry(o.Kinds...)
	if err != nil {
		return err
	}
	cmd := "help"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "help", "-h", "--help":
		_, err := io.WriteString(stdout, config.Help(reg.Kinds())+schedulesHelp()+opsHelp())
		return err
	}

	cfg, err := config.Load(getenv, reg.Kinds())
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	logger := newLogger(stdout, cfg)
	hooks := daemon.Hooks{OnReady: o.OnReady, OnJobStart: o.OnJobStart}

	// run and dev take no arguments: `errand dev --help` started everything
	// with its defaults.
	if (cmd == "run" || cmd == "dev") && len(args) > 1 {
		return fmt.Errorf("%w: errand %s takes no arguments, got %q (configuration is from the environment: errand help lists it)", ErrUsage, cmd, strings.Join(args[1:], " "))
	}
	switch cmd {
	case "run":
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set: point it at PostgreSQL, or use `errand dev` for a local one")
		}
		return daemon.Run(ctx, cfg, reg, logger, hooks)
	case "migrate":
		// Arguments first: `errand migrate status extra` showed the status
		// and said nothing of the word it had ignored.
		if len(args) == 2 && isHelp(args[1]) {
			_, err := io.WriteString(stdout, "Usage: errand migrate [status]\n\n"+helpSection(config.Help(reg.Kinds()), "migrate"))
			return err
		}
		status := len(args) > 1 && args[1] == "status"
		if status && len(args) > 2 {
			return fmt.Errorf("%w: errand migrate status takes no arguments, got %q", ErrUsage, strings.Join(args[2:], " "))
		}
		if len(args) > 1 && !status {
			return fmt.Errorf("%w: errand migrate [status], got %q", ErrUsage, strings.Join(args[1:], " "))
		}
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set")
		}
		if status {
			return migrateStatus(ctx, cfg, stdout)
		}
		return daemon.Migrate(ctx, cfg, reg, stdout)
	case "dev":
		return dev.Run(ctx, cfg, reg, stdout, logger, hooks)
	case "bench":
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set: errand bench needs a database it may write to")
		}
		err := bench.Run(ctx, cfg, reg, args[1:], stdout, logger, hooks)
		if errors.Is(err, bench.ErrUsage) {
			return usageError{err} // its message says "usage" already
		}
		return err
	case "schedules":
		return runSchedules(ctx, cfg, reg.Kinds(), args[1:], stdout)
	case "jobs":
		return helped(runJobs(ctx, cfg, args[1:], stdout))
	case "workspaces":
		return helped(runWorkspaces(ctx, cfg, args[1:], stdout))
	case "stats":
		return helped(runStats(ctx, cfg, args[1:], stdout))
	default:
		return fmt.Errorf("%w: unknown command %q; `errand help` lists them", ErrUsage, cmd)
	}
}

func migrateStatus(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, SkipScopeCheck: true})
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := migrations.CurrentStatus(ctx, st.Pool())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "river:  applied %v, pending %v\nerrand: applied %v, pending %v\n",
		s.RiverApplied, s.RiverPending, s.ErrandApplied, s.ErrandPending)
	if s.UpToDate() {
		fmt.Fprintln(stdout, "up to date")
	} else {
		fmt.Fprintln(stdout, "pending migrations: run `errand migrate`")
	}
	return nil
}

func newLogger(stdout io.Writer, cfg config.Config) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: cfg.LogLevel}
	format := cfg.LogFormat
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := stdout.(*os.File); ok && isTerminal(f) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(stdout, hopts))
	}
	return slog.New(slog.NewJSONHandler(stdout, hopts))
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
