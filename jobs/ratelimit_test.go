package jobs_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

func TestMain(m *testing.M) { os.Exit(errandtest.Main(m)) }

func TestPlanLimitsCacheReadsThePlanAndRereadsAfterItsTTL(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	ws := errandtest.NewWorkspace(t, pool, "acme")
	bare := errandtest.NewWorkspace(t, pool, "bare")
	if _, err := pool.Exec(ctx, `INSERT INTO errand.plans (plan, emails_per_minute, webhooks_per_second) VALUES ('starter', 10, 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.workspaces SET plan = 'starter' WHERE id = $1`, ws); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	c := &jobs.PlanLimitsCache{TTL: 5 * time.Second, Now: func() time.Time { return now }}
	get := func(id string) jobs.PlanLimits {
		t.Helper()
		l, err := c.Get(ctx, pool, id)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := get(ws); l != (jobs.PlanLimits{EmailsPerMinute: 10, WebhooksPerSecond: 3}) {
		t.Errorf("limits %+v, want 10 emails a minute and 3 deliveries a second", l)
	}
	if l := get(bare); l != (jobs.PlanLimits{}) {
		t.Errorf("a workspace whose plan has no row: limits %+v, want none", l)
	}
	if l := get("00000000-0000-0000-0000-000000000001"); l != (jobs.PlanLimits{}) {
		t.Errorf("a workspace that does not exist: limits %+v, want none", l)
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.plans SET emails_per_minute = 20`); err != nil {
		t.Fatal(err)
	}
	now = now.Add(4 * time.Second)
	if l := get(ws); l.EmailsPerMinute != 10 {
		t.Errorf("within the TTL: %d emails a minute, want the cached 10", l.EmailsPerMinute)
	}
	now = now.Add(2 * time.Second)
	if l := get(ws); l.EmailsPerMinute != 20 {
		t.Errorf("after the TTL: %d emails a minute, want the new 20", l.EmailsPerMinute)
	}
}

// A plans view (the README allows one in the table's place; a view has no
// CHECK) may give rates the table refuses: each is read within the
// table's checks instead of failing every email and delivery of its
// workspaces.
func TestAPlansViewWithRatesTheTableRefusesLimitsWithinItsChecks(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
		ALTER TABLE errand.plans RENAME TO plans_table;
		CREATE VIEW errand.plans AS
			SELECT plan, weight, concurrency, emails_per_minute::numeric, webhooks_per_second::numeric FROM errand.plans_table
			UNION ALL SELECT 'fractions', 1, NULL, 2.5, 0.5
			UNION ALL SELECT 'zero and negative', 1, NULL, 0, -3
			UNION ALL SELECT 'beyond an integer', 1, NULL, 3000000000, 1e12`); err != nil {
		t.Fatal(err)
	}
	c := &jobs.PlanLimitsCache{}
	for plan, want := range map[string]jobs.PlanLimits{
		"fractions":         {EmailsPerMinute: 2, WebhooksPerSecond: 1},
		"zero and negative": {},
		"beyond an integer": {EmailsPerMinute: 2147483647, WebhooksPerSecond: 2147483647},
	} {
		ws := errandtest.NewWorkspace(t, pool, strings.ReplaceAll(plan, " ", "-"))
		if _, err := pool.Exec(ctx, `UPDATE errand.workspaces SET plan = $2 WHERE id = $1`, ws, plan); err != nil {
			t.Fatal(err)
		}
		l, err := c.Get(ctx, pool, ws)
		if err != nil {
			t.Errorf("plan %q: %v", plan, err)
			continue
		}
		if l != want {
			t.Errorf("plan %q: limits %+v, want %+v", plan, l, want)
		}
	}
}

func TestWaitForSlotSnoozesWhenTheNextSlotIsTooFar(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if err := jobs.WaitForSlot(ctx, pool, "test", time.Minute, 0); err != nil {
		t.Fatalf("the first slot: %v, want it at once", err)
	}
	err := jobs.WaitForSlot(ctx, pool, "test", time.Minute, 0)
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) {
		t.Fatalf("the second slot a minute away: %v, want a snooze", err)
	}
	if snooze.Duration < time.Minute-time.Second || snooze.Duration > 2*time.Minute {
		t.Errorf("snoozed %s, want about a minute", snooze.Duration)
	}
	if err := jobs.WaitForSlot(ctx, pool, "other", time.Minute, 0); err != nil {
		t.Errorf("another limit's first slot: %v, want it at once", err)
	}
}
