package email_test

import (
	"context"
	"fmt"

	"github.com/errand-dev/errand/errandtest"
)

// An invitation, enqueued with one INSERT, rendered from the "invite"
// template with the workspace's name, and captured in errand.emails
// (ERRAND_EMAIL_CAPTURE=true: nothing leaves the machine).
func Example_invite() {
	run, err := errandtest.StartExample(map[string]string{"ERRAND_EMAIL_CAPTURE": "true"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ctx := context.Background()
	ws, _ := run.Workspace("Acme", "acme")

	var id int64
	_ = run.Conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'email.send', '{
		"to": "Ann Lee <ann@example.com>",
		"template": "invite",
		"data": {"invite_url": "https://app.example.com/invite/7f3a", "inviter_name": "Bob"}
	}') RETURNING id`, ws).Scan(&id)

	status, _, _, err := run.Wait(id)
	fmt.Println(status, err)
	var recipients []string
	var subject, sent string
	_ = run.Conn.QueryRow(ctx, `SELECT recipients, subject, status FROM errand.emails WHERE job_id = $1`, id).Scan(&recipients, &subject, &sent)
	fmt.Println(recipients, subject, sent)
	// Output:
	// completed <nil>
	// [Ann Lee <ann@example.com>] You've been invited to Acme captured
}
