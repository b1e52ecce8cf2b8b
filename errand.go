// Package errand is the errand daemon as a library: a team's own binary calls
// Main with its extra kinds, exactly as cmd/errand does without any.
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		defer stop()
//		err := errand.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr,
//			errand.WithKinds(myKind))
//		...
//	}
package errand

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Option customises a binary built on errand.
type Option func(*options)

type options struct {
	kinds      []jobs.Kind
	onReady    func(httpAddr string)
	onJobStart func(job *rivertype.JobRow)
	problems   *jobs.Problems
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithReady is called once the daemon works jobs, with its HTTP address.
func WithReady(fn func(httpAddr string)) Option {
	return func(o *options) { o.onReady = fn }
}

// WithProblems shares the set of operator problems the kinds report (see
// jobs.Deps) with /readyz.
func WithProblems(p *jobs.Problems) Option {
	return func(o *options) { o.problems = p }
}

// WithJobStartHook is called in the worker goroutine as each job starts, for
// metrics and benchmarks; keep it fast.
func WithJobStartHook(fn func(job *rivertype.JobRow)) Option {
	return func(o *options) { o.onJobStart = fn }
}

// WithKinds registers kinds beside the built-in ones. They are published to
// errand.kinds when the binary starts.
func WithKinds(kinds ...jobs.Kind) Option {
	return func(o *options) { o.kinds = append(o.kinds, kinds...) }
}

// ErrUsage is returned (wrapped) for a bad command line; cmd/errand exits 2.
var ErrUsage = errors.New("usage")

// Main runs the errand command line. It returns when the command is done or,
// for run and dev, when ctx is cancelled (SIGTERM) and shutdown is complete.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts ...Option) error {
	o := collect(opts)
	cmd := "help"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "help", "-h", "--help":
		_, err := io.WriteString(stdout, helpText())
		return err
	}

	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	logger := newLogger(stdout, cfg)
	if o.problems == nil {
		o.problems = &jobs.Problems{}
		opts = append(opts, WithProblems(o.problems))
	}
	reg, err := registry(o, jobs.Deps{
		Logger:        logger,
		Problems:      o.problems,
		ResendAPIKey:  cfg.ResendAPIKey,
		ResendBaseURL: cfg.ResendBaseURL,
		EmailFrom:     cfg.EmailFrom,
		ResendRPS:     cfg.ResendRPS,
	})
	if err != nil {
		return err
	}

	switch cmd {
	case "run":
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set: point it at PostgreSQL, or use `errand dev` for a local one")
		}
		return Run(ctx, cfg, reg, logger, opts...)
	case "migrate":
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set")
		}
		if len(args) > 1 && args[1] == "status" {
			return migrateStatus(ctx, cfg, stdout)
		}
		if len(args) > 1 {
			return fmt.Errorf("%w: errand migrate [status], got %q", ErrUsage, strings.Join(args[1:], " "))
		}
		return Migrate(ctx, cfg, reg, stdout)
	case "dev":
		return Dev(ctx, cfg, reg, getenv, stdout, logger, opts...)
	case "bench":
		if cfg.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL is not set: errand bench needs a database it may write to")
		}
		return Bench(ctx, cfg, reg, args[1:], stdout, logger, opts...)
	default:
		return fmt.Errorf("%w: unknown command %q; `errand help` lists them", ErrUsage, cmd)
	}
}

func registry(o options, deps jobs.Deps) (*jobs.Registry, error) {
	reg, err := jobs.NewRegistry(jobs.Builtin(deps)...)
	if err != nil {
		return nil, err
	}
	if err := reg.Add(o.kinds...); err != nil {
		return nil, err
	}
	return reg, nil
}

// Migrate applies the schema and publishes the kinds and settings.
func Migrate(ctx context.Context, cfg Config, reg *jobs.Registry, stdout io.Writer) error {
	st, err := openStore(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := migrations.Up(ctx, st.Pool(), nil)
	if err != nil {
		return err
	}
	if err := publish(ctx, st, cfg, reg); err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "errand migrate: already up to date")
	} else {
		fmt.Fprintf(stdout, "errand migrate: applied %s\n", strings.Join(applied, ", "))
	}
	return nil
}

func migrateStatus(ctx context.Context, cfg Config, stdout io.Writer) error {
	st, err := openStore(ctx, cfg, false)
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

// openStore connects; scoped says whether tenant scoping must work (it needs
// the tenant role, which only exists after migrate).
func openStore(ctx context.Context, cfg Config, scoped bool) (*store.Store, error) {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: int32(cfg.DBMaxConns), SkipScopeCheck: !scoped})
	if err != nil {
		return nil, err
	}
	return st, nil
}

func publish(ctx context.Context, st *store.Store, cfg Config, reg *jobs.Registry) error {
	if err := st.PublishKinds(ctx, reg.Infos()); err != nil {
		return err
	}
	return st.PublishMaxArgsBytes(ctx, cfg.MaxArgsBytes)
}

func newLogger(stdout io.Writer, cfg Config) *slog.Logger {
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
