package errand

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/errand-dev/errand/jobs"
)

// Bench is `errand bench` (being written).
func Bench(ctx context.Context, cfg Config, reg *jobs.Registry, args []string, stdout io.Writer, logger *slog.Logger, opts ...Option) error {
	return errors.New("errand bench: not implemented yet")
}
