package errand

import (
	"context"
	"io"
	"log/slog"

	"github.com/errand-dev/errand/jobs"
)

// Dev is `errand dev` (placeholder until the local PostgreSQL launcher lands).
func Dev(ctx context.Context, cfg Config, reg *jobs.Registry, getenv func(string) string, stdout io.Writer, logger *slog.Logger) error {
	return Run(ctx, cfg, reg, logger)
}
