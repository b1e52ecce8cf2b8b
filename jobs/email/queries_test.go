package email

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// A stale attempt's late bookkeeping must not turn a sent email back into a
// queued or failed one.
func TestSaveEmailNeverDowngradesASentEmail(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := store.EnsureWorkspace(ctx, st, "Acme", "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, final := range []string{StatusSent, StatusCaptured} {
		for _, late := range []string{StatusQueued, StatusFailed} {
			jobID := emailJob(t, st, ws.ID)
			var got Email
			err := st.InWorkspace(ctx, ws.ID, func(tx pgx.Tx) error {
				base := Email{WorkspaceID: ws.ID, JobID: jobID, Template: "custom", Subject: "s", Text: "t", Recipients: []string{"a@example.com"}}
				base.Status = StatusQueued
				if _, err := saveEmail(ctx, tx, base); err != nil {
					return err
				}
				base.Status, base.ProviderMessageID = final, "em_1"
				if _, err := saveEmail(ctx, tx, base); err != nil {
					return err
				}
				var err error
				got, err = saveEmail(ctx, tx, Email{WorkspaceID: ws.ID, JobID: jobID, Template: "custom", Status: late, Error: "a stale attempt's reason"})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != final || got.Error != "" || got.SentAt.IsZero() {
				t.Errorf("%s then %s: status %q error %q sent_at %v, want %s kept", final, late, got.Status, got.Error, got.SentAt, final)
			}
		}
	}
}

// A job that ends without its code finishing the email (discarded by the
// crash rescuer after its last attempt, cancelled by an operator) fails its
// queued email with the job's reason; a sent one is left alone.
func TestEmailRowIsFinishedWhenItsJobEndsAnyOtherWay(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := store.EnsureWorkspace(ctx, st, "Acme", "acme")
	if err != nil {
		t.Fatal(err)
	}
	job := func(owner string) int64 {
		var id int64
		if err := st.QueryRow(ctx, `INSERT INTO errand.river_job (kind, args, metadata, queue, max_attempts, state, attempt, attempted_at, attempted_by)
			VALUES ($1, '{}', jsonb_build_object('workspace_id', $2::text), 'email', 1, 'running', 1, now(), ARRAY[$3]) RETURNING id`, Name, ws.ID, owner).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	email := func(jobID int64, status string) {
		err := st.InWorkspace(ctx, ws.ID, func(tx pgx.Tx) error {
			_, err := saveEmail(ctx, tx, Email{WorkspaceID: ws.ID, JobID: jobID, Template: "custom", Status: status, Recipients: []string{"a@example.com"}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	status := func(jobID int64) (s, e string) {
		_ = st.InWorkspace(ctx, ws.ID, func(tx pgx.Tx) error {
			got, _, err := emailForJob(ctx, tx, ws.ID, jobID)
			s, e = got.Status, got.Error
			return err
		})
		return s, e
	}
	discarded, cancelled, sent := job("gone"), job("alive"), job("gone")
	email(discarded, StatusQueued)
	email(cancelled, StatusQueued)
	email(sent, StatusSent)

	// The crash rescuer's way of ending a job out of attempts.
	if _, err := st.Exec(ctx, `INSERT INTO errand.replicas (id, heartbeat_at) VALUES ('gone', '-infinity')`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RescueOrphans(ctx, st, 0); err != nil {
		t.Fatal(err)
	}
	if s, e := status(discarded); s != StatusFailed || e != "rescued: replica gone stopped heartbeating while running this job" {
		t.Errorf("email of a discarded job: %s %q, want failed with the job's reason", s, e)
	}
	if s, _ := status(sent); s != StatusSent {
		t.Errorf("email already sent: %s, want sent", s)
	}
	// An operator's cancel of a job that never recorded a reason.
	if _, err := st.Exec(ctx, `UPDATE errand.river_job SET state = 'cancelled', finalized_at = now(), errors = NULL WHERE id = $1`, cancelled); err != nil {
		t.Fatal(err)
	}
	if s, e := status(cancelled); s != StatusFailed || e != "the job was cancelled" {
		t.Errorf("email of a cancelled job: %s %q, want failed", s, e)
	}
}

// An email row's job must be a job of the row's workspace (migration 040).
// With errand.emails.job_id unique across workspaces, a tenant session of
// another workspace could write a row with a job id an email job was about
// to get (or had), and that job failed every attempt on a row it may not
// see, or probe other workspaces' job ids through duplicate-key errors. The
// refusal is the same for a job of another workspace and for one that does
// not exist, and comes before the unique index is consulted.
func TestAnotherWorkspaceCannotWriteAnEmailRowForAJobItDoesNotOwn(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acme, err := store.EnsureWorkspace(ctx, st, "Acme", "acme")
	if err != nil {
		t.Fatal(err)
	}
	rival, err := store.EnsureWorkspace(ctx, st, "Rival", "rival")
	if err != nil {
		t.Fatal(err)
	}
	acmeJob, rivalJob := emailJob(t, st, acme.ID), emailJob(t, st, rival.ID)
	// What a tenant session of the other workspace can try: a row of its
	// own, with any job id.
	squat := func(jobID int64) error {
		return st.InWorkspace(ctx, rival.ID, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO errand.emails (workspace_id, job_id, template) VALUES ($1, $2, 'custom')`, rival.ID, jobID)
			return err
		})
	}
	for what, id := range map[string]int64{"Acme's email job": acmeJob, "a job id not given yet": acmeJob + 1000} {
		err := squat(id)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" || pgErr.Message != fmt.Sprintf("errand: email job_id %d is not a job of workspace %s", id, rival.ID) {
			t.Errorf("another workspace's row for %s: %v; want 23503 saying it is not a job of that workspace", what, err)
		}
	}
	if err := squat(rivalJob); err != nil {
		t.Errorf("a row for the workspace's own job: %v", err)
	}

	var saved, read Email
	var found bool
	err = st.InWorkspace(ctx, acme.ID, func(tx pgx.Tx) error {
		var err error
		saved, err = saveEmail(ctx, tx, Email{WorkspaceID: acme.ID, JobID: acmeJob, Template: "custom", Subject: "Hi", Text: "t",
			Status: StatusCaptured, Recipients: []string{"a@example.com"}})
		if err != nil {
			return err
		}
		read, found, err = emailForJob(ctx, tx, acme.ID, acmeJob)
		return err
	})
	if err != nil {
		t.Fatalf("saving the job's email after another workspace tried its id: %v", err)
	}
	if saved.WorkspaceID != acme.ID || saved.Status != StatusCaptured || !found || read.ID != saved.ID {
		t.Errorf("saved %+v, read back %+v (found %v): want the job's own captured email", saved, read, found)
	}

	// A stale attempt's late bookkeeping after River's cleaner deleted the
	// job updates the job's own row, as before 040.
	if _, err := st.Pool().Exec(ctx, `DELETE FROM errand.river_job WHERE id = $1`, acmeJob); err != nil {
		t.Fatal(err)
	}
	err = st.InWorkspace(ctx, acme.ID, func(tx pgx.Tx) error {
		_, err := saveEmail(ctx, tx, Email{WorkspaceID: acme.ID, JobID: acmeJob, Template: "custom", Status: StatusFailed, Error: "a stale attempt's reason"})
		return err
	})
	if err != nil {
		t.Errorf("a late save of the job's email after its job was deleted: %v", err)
	}
}

// emailJob inserts a running email.send job of workspace ws (an email row's
// job must be one of its workspace's, migration 040) and returns its id.
func emailJob(t *testing.T, st *store.Store, ws string) int64 {
	t.Helper()
	var id int64
	if err := st.Pool().QueryRow(context.Background(), `INSERT INTO errand.river_job (kind, args, metadata, queue, max_attempts, state)
		VALUES ('email.send', '{}', jsonb_build_object('workspace_id', $1::uuid), 'email', 5, 'running') RETURNING id`, ws).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}
