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
//
// Kinds are built with package jobs; errand's own are listed in kinds.go.
package errand

import (
	"context"
	"io"

	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/cli"
	"github.com/errand-dev/errand/jobs"
)

// Option customises a binary built on errand. Every command honours the
// same options.
type Option func(*cli.Options)

// WithKinds registers kinds beside the built-in ones. They are published to
// errand.kinds when the binary migrates or starts, their environment
// variables are checked at start and listed by `errand help`.
func WithKinds(kinds ...jobs.Kind) Option {
	return func(o *cli.Options) { o.Kinds = append(o.Kinds, kinds...) }
}

// WithReady is called once the daemon works jobs, with its HTTP address.
func WithReady(fn func(httpAddr string)) Option {
	return func(o *cli.Options) { o.OnReady = fn }
}

// WithJobStartHook is called in the worker goroutine as each job starts, for
// metrics and benchmarks; keep it fast.
func WithJobStartHook(fn func(job *rivertype.JobRow)) Option {
	return func(o *cli.Options) { o.OnJobStart = fn }
}

// ErrUsage is returned (wrapped) for a bad command line; cmd/errand exits 2.
var ErrUsage = cli.ErrUsage

// Main runs the errand command line (`errand help` lists the commands and
// every environment variable). It returns when the command is done or, for
// run and dev, when ctx is cancelled (SIGTERM) and shutdown is complete.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts ...Option) error {
	o := cli.Options{Kinds: Builtin()}
	for _, opt := range opts {
		opt(&o)
	}
	return cli.Main(ctx, args, getenv, stdout, stderr, o)
}
