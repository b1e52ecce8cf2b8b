package schedules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// TickKind is the fan-out jobs' kind. It is not in errand.kinds: the SQL
// contract refuses it, and only errand inserts it (River's client).
const TickKind = "schedules.tick"

// TickArgs are a fan-out job's args: the entry and the start of its period.
// River's unique jobs key on them (UniqueOpts.ByArgs), so one period is one
// job while its row exists; errand.schedule_runs keeps it one run after.
type TickArgs struct {
	Schedule string    `json:"schedule"`
	At       time.Time `json:"at"`
}

// Kind is River's job kind.
func (TickArgs) Kind() string { return TickKind }

// tickTimeout bounds one fan-out (a digest tick over 100,000 due users takes
// seconds; see docs/schedules.md).
const tickTimeout = 10 * time.Minute

// liveWindow tells a period River fires on time from one caught up after
// downtime: a period that began longer ago than this is a backfill.
const liveWindow = time.Minute

func insertOpts() *river.InsertOpts {
	return &river.InsertOpts{Queue: jobs.QueueDefault, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// AddWorker registers the fan-out jobs' worker; pool is the one the
// daemon's River client runs on.
func (t *Table) AddWorker(w *river.Workers, pool *pgxpool.Pool, logger *slog.Logger) {
	river.AddWorker(w, &worker{table: t, pool: pool, logger: logger})
}

type worker struct {
	river.WorkerDefaults[TickArgs]
	table  *Table
	pool   *pgxpool.Pool
	logger *slog.Logger
}

func (w *worker) Timeout(*river.Job[TickArgs]) time.Duration { return tickTimeout }

// Work claims the period in errand.schedule_runs, runs the entry's Tick and
// completes the job, all in one transaction: a second job for the period
// (or a rescued attempt) waits on the claim and then finds it taken.
func (w *worker) Work(ctx context.Context, job *river.Job[TickArgs]) error {
	e, ok := w.table.Lookup(job.Args.Schedule)
	if !ok {
		return jobs.Permanent(fmt.Errorf("schedule %q is not in this binary's cron table (schedules: %s)", job.Args.Schedule, strings.Join(w.table.names(), ", ")))
	}
	at := job.Args.At.UTC()
	var enqueued int
	var fresh bool
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		var err error
		fresh, err = claimRun(ctx, tx, e.Name, at, job.ID)
		if err != nil {
			return err
		}
		if fresh {
			if enqueued, err = e.def.Tick(ctx, tx, at); err != nil {
				return fmt.Errorf("schedule %s, period %s: %w", e.Name, at.Format(time.RFC3339), err)
			}
			if err := recordEnqueued(ctx, tx, e.Name, at, enqueued); err != nil {
				return err
			}
		}
		done, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		if err != nil {
			return err
		}
		if done.State != rivertype.JobStateCompleted {
			return fmt.Errorf("job %d not completed by this attempt (state %s): %w", job.ID, done.State, jobs.ErrAttemptSuperseded)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if fresh {
		w.logger.Info("schedule ran", slog.String("schedule", e.Name), slog.Time("period", at), slog.Int("enqueued", enqueued), slog.Int64("job_id", job.ID))
	}
	return nil
}

// PeriodicJobs are the table's entries as River periodic jobs, run by the
// elected leader only. db answers the constructors' one question (is the
// period due, not yet run, and pending?); now is the clock.
func (t *Table) PeriodicJobs(db store.DB, logger *slog.Logger, now func() time.Time) []*river.PeriodicJob {
	var out []*river.PeriodicJob
	for _, e := range t.entries {
		if e.Off {
			continue
		}
		out = append(out, river.NewPeriodicJob(e.asked(), func() (river.JobArgs, *river.InsertOpts) {
			// River calls a constructor up to 100 ms before its time, and
			// must not be blocked for long.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			at, ok, err := t.due(ctx, db, e, now())
			if err != nil {
				logger.Warn("schedule not enqueued", slog.String("schedule", e.Name), slog.String("error", err.Error()))
				return nil, nil
			}
			if !ok {
				return nil, nil
			}
			return TickArgs{Schedule: e.Name, At: at}, insertOpts()
		}, &river.PeriodicJobOpts{ID: "errand_schedule_" + e.Name, RunOnStart: true}))
	}
	return out
}

// catchUp is when the leader asks whether an entry is due: at each of its
// times, and at every whole minute between them. The question at its time
// can fail (the database unreachable, or errand.schedule_runs locked past
// the constructor's 5 s), and River never asks for that time again: the
// next minute asks instead, and due() still takes the period within
// ERRAND_SCHEDULE_BACKFILL. A minute whose period already ran costs one
// indexed read of errand.schedule_runs on the leader.
type catchUp struct{ expr Expr }

// asked is when the leader asks about e (River's schedule for it).
func (e Entry) asked() river.PeriodicSchedule { return catchUp{e.expr} }

// Next is the entry's next time after t, or the next whole minute if that
// comes first.
func (c catchUp) Next(t time.Time) time.Time {
	next := c.expr.Next(t)
	if m := t.Truncate(time.Minute).Add(time.Minute); next.IsZero() || m.Before(next) {
		return m
	}
	return next
}

// due decides for the leader: the period now is in, when it has not run yet
// and its entry has something to do. A period that began more than a
// minute ago (a new leader, or the first replica back after downtime) is
// run only if it began within ERRAND_SCHEDULE_BACKFILL and the entry has
// run before in this database (a new deployment backfills nothing). Only
// the latest period is ever caught up: never a burst of stale ones.
func (t *Table) due(ctx context.Context, db store.DB, e Entry, now time.Time) (time.Time, bool, error) {
	at := e.expr.Prev(now.Add(time.Second)).UTC()
	if at.IsZero() {
		return at, false, nil
	}
	ran, ranBefore, err := runs(ctx, db, e.Name, at)
	if err != nil || ran {
		return at, false, err
	}
	if age := now.Sub(at); age > liveWindow && (age > t.backfill || !ranBefore) {
		return at, false, nil
	}
	return t.pending(ctx, db, e, at)
}

func (t *Table) pending(ctx context.Context, db store.DB, e Entry, at time.Time) (time.Time, bool, error) {
	if e.def.Pending == nil {
		return at, true, nil
	}
	ok, err := e.def.Pending(ctx, db, at)
	if err != nil {
		return at, false, fmt.Errorf("schedule %s: %w", e.Name, err)
	}
	return at, ok, nil
}

// Inserter is River's client as `errand schedules tick` uses it.
type Inserter interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// TickResult is what `errand schedules tick` did for one entry.
type TickResult struct {
	Schedule string
	Period   time.Time
	// Status is "enqueued", "already enqueued", "already ran", "nothing due"
	// or "off".
	Status string
	JobID  int64
}

// Tick evaluates the table as of at against the database: for each entry
// (only the one named by only, when given, even if it is off) it enqueues
// the fan-out job of the period at is in, unless that period already ran or
// has nothing to do. Ops backfill with it; tests drive time with it.
func (t *Table) Tick(ctx context.Context, client Inserter, db store.DB, at time.Time, only string) ([]TickResult, error) {
	if only != "" {
		if _, ok := t.Lookup(only); !ok {
			return nil, fmt.Errorf("unknown schedule %q (schedules: %s)", only, strings.Join(t.names(), ", "))
		}
	}
	var out []TickResult
	for _, e := range t.entries {
		if only != "" && e.Name != only {
			continue
		}
		period := e.expr.Prev(at).UTC()
		r := TickResult{Schedule: e.Name, Period: period}
		switch {
		case e.Off && only == "":
			r.Status = "off"
		case period.IsZero():
			r.Status = "nothing due"
		default:
			ran, _, err := runs(ctx, db, e.Name, period)
			if err != nil {
				return out, err
			}
			if ran {
				r.Status = "already ran"
				break
			}
			_, ok, err := t.pending(ctx, db, e, period)
			if err != nil {
				return out, err
			}
			if !ok {
				r.Status = "nothing due"
				break
			}
			res, err := client.Insert(ctx, TickArgs{Schedule: e.Name, At: period}, insertOpts())
			if err != nil {
				return out, fmt.Errorf("enqueue schedule %s: %w", e.Name, err)
			}
			r.JobID, r.Status = res.Job.ID, "enqueued"
			if res.UniqueSkippedAsDuplicate {
				r.Status = "already enqueued"
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// ErrNoSchedules is returned by commands that need at least one entry.
var ErrNoSchedules = errors.New("no schedules: no kind of this binary declares one")
