package jobs_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/jobs"
)

// ExportArgs are the args of the example's kind. An INSERT without
// report_id is refused by the SQL contract, before any worker sees it.
type ExportArgs struct {
	ReportID int64 `json:"report_id" errand:"required"`
}

// exportKind marks a report of the team's own table exported, in the
// transaction that completes the job: a retried job cannot do it twice.
func exportKind() jobs.Kind {
	return jobs.Define("report.export", jobs.QueueReports,
		func(ctx context.Context, job *jobs.Job, args ExportArgs) error {
			return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `UPDATE my_app.reports SET exported_at = now() WHERE id = $1`, args.ReportID)
				return err
			})
		}, jobs.WithTimeout(5*time.Minute))
}

// A team's binary: errand's commands with errand's kinds and its own.
// Compiled, not run (it needs my_app.reports and runs until SIGTERM);
// errand's Example_ownKind runs a team's kind end to end.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := errand.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, errand.WithKinds(exportKind())); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
