package email_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// An invitation, enqueued with one INSERT, rendered from the "invite"
// template with the workspace's name, and captured in errand.emails
// (ERRAND_EMAIL_CAPTURE=true: nothing leaves the machine).
func Example_invite() {
	ctx := context.Background()
	url, drop, err := errandtest.ExampleDatabase()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drop()
	env := map[string]string{"DATABASE_URL": url, "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_EMAIL_CAPTURE": "true", "ERRAND_LOG_LEVEL": "error"}
	getenv := func(k string) string { return env[k] }
	if err := errand.Main(ctx, []string{"migrate"}, getenv, io.Discard, os.Stderr); err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- errand.Main(runCtx, []string{"run"}, getenv, io.Discard, os.Stderr, errand.WithReady(func(string) { close(ready) }))
	}()
	<-ready

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(ctx)
	var ws string
	var id int64
	_ = conn.QueryRow(ctx, `INSERT INTO errand.workspaces (name, slug) VALUES ('Acme', 'acme') RETURNING id`).Scan(&ws)
	_ = conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'email.send', '{
		"to": "Ann Lee <ann@example.com>",
		"template": "invite",
		"data": {"invite_url": "https://app.example.com/invite/7f3a", "inviter_name": "Bob"}
	}') RETURNING id`, ws).Scan(&id)

	var status string
	for status != "completed" && status != "failed" {
		time.Sleep(10 * time.Millisecond)
		_ = conn.QueryRow(ctx, `SELECT status FROM errand.jobs WHERE id = $1`, id).Scan(&status)
	}
	var recipients []string
	var subject, emailStatus string
	_ = conn.QueryRow(ctx, `SELECT recipients, subject, status FROM errand.emails WHERE job_id = $1`, id).Scan(&recipients, &subject, &emailStatus)
	fmt.Println(status)
	fmt.Println(recipients, subject, emailStatus)
	stop()
	fmt.Println(<-done)
	// Output:
	// completed
	// [Ann Lee <ann@example.com>] You've been invited to Acme captured
	// <nil>
}
