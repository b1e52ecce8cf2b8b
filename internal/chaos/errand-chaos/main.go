// Command errand-chaos is errand plus one test kind, chaos.effect, whose
// effect (a row) commits in the transaction that completes the job: the
// chaos tests count those rows to prove effects happen exactly once.
package main

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

type effectArgs struct {
	SleepMS int `json:"sleep_ms"`
}

func main() {
	effect := jobs.Define("chaos.effect", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args effectArgs) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(args.SleepMS) * time.Millisecond):
		}
		return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO errand.chaos_effects (workspace_id, job_id, replica)
				VALUES (current_setting('app.current_workspace_id')::uuid, $1, current_setting('errand.replica_id'))`, job.ID)
			return err
		})
	}, jobs.WithTimeout(time.Minute))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := errand.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, errand.WithKinds(effect)); err != nil {
		fmt.Fprintln(os.Stderr, "errand-chaos:", err)
		os.Exit(1)
	}
}
