package email

// The kind's queries, on its tenant table errand.emails (migration
// 002_email.sql). Read and write it only in a workspace-scoped transaction.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// Email statuses in errand.emails.
const (
	StatusQueued   = "queued"   // rendered, not sent yet (or waiting to be retried)
	StatusSent     = "sent"     // Resend accepted it
	StatusFailed   = "failed"   // failed for good; Error says why
	StatusCaptured = "captured" // capture mode: stored here, never sent
)

// Email is a row of errand.emails, a tenant table: read and write it only in
// a transaction scoped with store.InWorkspace.
type Email struct {
	ID          int64
	WorkspaceID string
	JobID       int64
	Recipients  []string
	Template    string
	// Sender, Subject, HTML and Text are what was rendered on the first
	// attempt ("" until then, and Text or HTML may stay ""); retries send
	// them again unchanged.
	Sender            string
	ReplyTo           string
	Subject           string
	HTML              string
	Text              string
	Status            string
	ProviderMessageID string
	Error             string
	CreatedAt         time.Time
	SentAt            time.Time // zero until sent or captured
}

// Rendered reports whether the row holds a rendering to reuse.
func (e Email) Rendered() bool { return e.Subject != "" }

const emailColumns = `id, workspace_id::text, coalesce(job_id, 0), recipients, template, coalesce(sender, ''),
	coalesce(reply_to, ''), coalesce(subject, ''), coalesce(html, ''), coalesce(text, ''), status,
	coalesce(provider_message_id, ''), coalesce(error, ''), created_at, coalesce(sent_at, 'epoch')`

func scanEmail(row pgx.Row) (Email, error) {
	var e Email
	err := row.Scan(&e.ID, &e.WorkspaceID, &e.JobID, &e.Recipients, &e.Template, &e.Sender,
		&e.ReplyTo, &e.Subject, &e.HTML, &e.Text, &e.Status,
		&e.ProviderMessageID, &e.Error, &e.CreatedAt, &e.SentAt)
	if e.SentAt.Unix() == 0 {
		e.SentAt = time.Time{}
	}
	return e, err
}

// saveEmail records the email of job e.JobID in the scoped transaction
// tx: it inserts the row, or updates the job's existing one. Empty fields
// never erase stored ones (a failure recorded after rendering keeps the
// rendering), a sent or captured email keeps that status whatever a later
// (stale) attempt says, and Error is cleared once the email is sent or
// captured. SentAt
// is set (once) by the database when Status becomes sent or captured.
func saveEmail(ctx context.Context, tx store.DB, e Email) (Email, error) {
	recipients := e.Recipients
	if recipients == nil {
		recipients = []string{}
	}
	row := tx.QueryRow(ctx, `
		INSERT INTO errand.emails AS m (workspace_id, job_id, recipients, template, sender, reply_to, subject, html, text,
			status, provider_message_id, error, sent_at)
		VALUES ($1, $2, $3, $4, nullif($5, ''), nullif($6, ''), nullif($7, ''), nullif($8, ''), nullif($9, ''),
			$10, nullif($11, ''), nullif($12, ''), CASE WHEN $10 IN ('sent', 'captured') THEN now() END)
		ON CONFLICT (job_id) DO UPDATE SET
			recipients = CASE WHEN cardinality(EXCLUDED.recipients) > 0 THEN EXCLUDED.recipients ELSE m.recipients END,
			-- The first rendering wins: every attempt sends the same bytes.
			sender = coalesce(m.sender, EXCLUDED.sender),
			reply_to = coalesce(m.reply_to, EXCLUDED.reply_to),
			subject = coalesce(m.subject, EXCLUDED.subject),
			html = coalesce(m.html, EXCLUDED.html),
			text = coalesce(m.text, EXCLUDED.text),
			-- Sent and captured are final: a stale attempt's late "queued" or
			-- "failed" must not undo them.
			status = CASE WHEN m.status IN ('sent', 'captured') THEN m.status ELSE EXCLUDED.status END,
			provider_message_id = coalesce(EXCLUDED.provider_message_id, m.provider_message_id),
			error = CASE WHEN m.status IN ('sent', 'captured') OR EXCLUDED.status IN ('sent', 'captured') THEN NULL
			             ELSE coalesce(EXCLUDED.error, m.error) END,
			sent_at = coalesce(m.sent_at, EXCLUDED.sent_at)
		RETURNING `+emailColumns,
		e.WorkspaceID, e.JobID, recipients, e.Template, e.Sender, e.ReplyTo, e.Subject, e.HTML, e.Text,
		e.Status, e.ProviderMessageID, e.Error)
	saved, err := scanEmail(row)
	if err != nil {
		return saved, fmt.Errorf("save email of job %d: %w", e.JobID, err)
	}
	return saved, nil
}

// emailForJob reads the email of a job of workspaceID; found is false when
// it has none yet. (A row's job is a job of its workspace, migration 040;
// the workspace in the filter says so again.)
func emailForJob(ctx context.Context, tx store.DB, workspaceID string, jobID int64) (e Email, found bool, err error) {
	e, err = scanEmail(tx.QueryRow(ctx, `SELECT `+emailColumns+` FROM errand.emails WHERE job_id = $1 AND workspace_id = $2`, jobID, workspaceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Email{}, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("read email of job %d: %w", jobID, err)
	}
	return e, true, nil
}

// emailByID reads one email by id; found is false when the scoped workspace
// has no such email.
func emailByID(ctx context.Context, tx store.DB, id int64) (e Email, found bool, err error) {
	e, err = scanEmail(tx.QueryRow(ctx, `SELECT `+emailColumns+` FROM errand.emails WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Email{}, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("read email %d: %w", id, err)
	}
	return e, true, nil
}

// recentEmails lists the scoped workspace's latest emails, newest first,
// without their bodies.
func recentEmails(ctx context.Context, tx store.DB, limit int) ([]Email, error) {
	rows, err := tx.Query(ctx, `
		SELECT id, workspace_id::text, coalesce(job_id, 0), recipients, template, coalesce(sender, ''),
			coalesce(reply_to, ''), coalesce(subject, ''), '', '', status,
			coalesce(provider_message_id, ''), coalesce(error, ''), created_at, coalesce(sent_at, 'epoch')
		FROM errand.emails ORDER BY created_at DESC, id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list emails: %w", err)
	}
	emails, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Email, error) { return scanEmail(row) })
	if err != nil {
		return nil, fmt.Errorf("list emails: %w", err)
	}
	return emails, nil
}
