package email_test

import (
	"context"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// A workspace's plan limits its emails per minute across replicas: over
// it, an email waits (snoozed, its attempt kept), and it is sent once its
// slot comes; another workspace's emails are not held.
func TestEmailOverTheWorkspacesPlanWaitsWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	fake := newFakeResend(t)
	url, pool := errandtest.MigratedDB(t)
	limited := errandtest.NewWorkspace(t, pool, "limited")
	other := errandtest.NewWorkspace(t, pool, "other")
	ctx := context.Background()
	// Two a minute: one slot every 30 s, further than an attempt waits.
	if _, err := pool.Exec(ctx, `INSERT INTO errand.plans (plan, emails_per_minute) VALUES ('starter', 2);
		UPDATE errand.workspaces SET plan = 'starter' WHERE slug = 'limited'`); err != nil {
		t.Fatal(err)
	}
	errandtest.StartDaemon(t, url, sendEnv(fake))
	enqueue := func(ws, subject string) int64 {
		var id int64
		if err := pool.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, max_attempts)
			VALUES ($1, 'email.send', $2, 1) RETURNING id`, ws, customEmail(subject)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := enqueue(limited, "limited")
	errandtest.WaitJob(t, pool, first, 30*time.Second, "completed")
	// The next slot an hour away rather than 30 s: the checks below must
	// see the held emails still held however slowly this machine gets
	// there (the test moves time itself further down).
	if tag, err := pool.Exec(ctx, `UPDATE errand.rate_limits SET next_at = now() + interval '1 hour'
		WHERE name = 'email:workspace:' || $1::text`, limited); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("move the limited workspace's next slot: %v, %d rows", err, tag.RowsAffected())
	}
	held := []int64{enqueue(limited, "limited"), enqueue(limited, "limited")}
	for range 2 {
		id := enqueue(other, "other")
		errandtest.WaitJob(t, pool, id, 30*time.Second, "completed")
	}
	// Both held emails are snoozed, attempt kept, nothing sent for them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var snoozed int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.river_job
			WHERE id = ANY($1) AND state = 'scheduled' AND attempt = 0 AND (metadata ->> 'snoozes')::int >= 1`, held).Scan(&snoozed); err != nil {
			t.Fatal(err)
		}
		if snoozed == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 emails over the plan's limit snoozed after 30 s", snoozed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(fake.withSubject("limited")); n != 1 {
		t.Fatalf("%d emails of the limited workspace reached Resend, want 1 (two a minute)", n)
	}
	if n := len(fake.withSubject("other")); n != 2 {
		t.Errorf("%d emails of the other workspace reached Resend, want 2: the limit is per workspace", n)
	}
	// Time passes (the limit's schedule and the snoozes come due): each
	// held email is sent, on its single attempt.
	deadline = time.Now().Add(60 * time.Second)
	for len(fake.withSubject("limited")) < 3 {
		if _, err := pool.Exec(ctx, `UPDATE errand.rate_limits SET next_at = now() - interval '1 hour'
			WHERE name = 'email:workspace:' || $1::text`, limited); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE errand.river_job SET scheduled_at = now()
			WHERE id = ANY($1) AND state = 'scheduled'`, held); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 emails of the limited workspace sent", len(fake.withSubject("limited")))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range held {
		if j := errandtest.WaitJob(t, pool, id, 30*time.Second, "completed", "failed"); j.Status != "completed" || j.Attempt != 1 {
			t.Errorf("held email %+v, want completed on its single attempt", j)
		}
	}
}
