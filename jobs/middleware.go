package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Middleware wraps every job errand works: args that cannot be decoded fail
// the job at once (retrying the same bytes cannot help), and each attempt is
// logged with its job id, kind, workspace, attempt and duration.
type Middleware struct {
	river.MiddlewareDefaults
	Logger *slog.Logger
	// OnStart, when set, is called as each job starts (metrics, benchmarks).
	OnStart func(job *rivertype.JobRow)
}

var _ rivertype.WorkerMiddleware = (*Middleware)(nil)

// Work implements rivertype.WorkerMiddleware.
func (m *Middleware) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	start := time.Now()
	if m.OnStart != nil {
		m.OnStart(job)
	}
	err := doInner(ctx)
	if err != nil && IsDecodeError(err) && !IsPermanent(err) {
		err = Permanent(err)
	}
	// Successes at debug: at thousands of jobs a second a line each is the
	// daemon's main cost. Failures always say what happened.
	level := slog.LevelDebug
	msg := "job done"
	var snooze *rivertype.JobSnoozeError
	switch {
	case err == nil:
	case errors.As(err, &snooze):
		msg = "job snoozed (no attempt used)"
	case IsPermanent(err):
		level, msg = slog.LevelError, "job failed permanently"
	case ctx.Err() != nil:
		level, msg = slog.LevelWarn, "job interrupted"
	case job.Attempt >= job.MaxAttempts:
		level, msg = slog.LevelError, "job failed, no attempts left"
	default:
		level, msg = slog.LevelWarn, "job failed, will retry"
	}
	if m.Logger.Enabled(ctx, level) {
		attrs := []slog.Attr{
			slog.Int64("job_id", job.ID),
			slog.String("kind", job.Kind),
			slog.String("workspace_id", WorkspaceOf(job)),
			slog.Int("attempt", job.Attempt),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		m.Logger.LogAttrs(ctx, level, msg, attrs...)
	}
	return err
}
