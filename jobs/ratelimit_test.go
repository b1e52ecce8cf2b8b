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
	"github.com/errand-dev/errand/store"
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
	if d := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", time.Minute, 0)); d < 50*time.Second || d > time.Minute {
		t.Errorf("the second slot a minute away: snoozed %s, want about a minute", d)
	}
	if err := jobs.WaitForSlot(ctx, pool, "other", time.Minute, 0); err != nil {
		t.Errorf("another limit's first slot: %v, want it at once", err)
	}
}

// snoozed is how long err says to snooze, failing the test if it is not a
// snooze.
func snoozed(t *testing.T, err error) time.Duration {
	t.Helper()
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) {
		t.Fatalf("%v, want a snooze", err)
	}
	return snooze.Duration
}

// Jobs over the limit are given turns one interval apart after the slots
// taken, and snooze until about theirs, so a backlog comes back about once
// per job instead of every interval; their turns reserve nothing, so the
// next free slot stays where it was for whoever asks when it is near. A
// turn far off is asked about again within a minute.
func TestJobsOverTheLimitComeBackAtTheirTurns(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	const interval = 10 * time.Second
	if err := jobs.WaitForSlot(ctx, pool, "test", interval, 0); err != nil {
		t.Fatalf("the first slot: %v, want it at once", err)
	}
	// The next free slot is 10 s out: the waiters' turns are 10, 20, 30 s
	// and so on. (The calls take a little of the database's time: 5 s slack.)
	for k := 1; k <= 5; k++ {
		turn := time.Duration(k) * interval
		d := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", interval, 0))
		if want := min(turn, time.Minute); d > want || d < want-5*time.Second {
			t.Errorf("waiter %d: snoozed %s, want its turn %s (at most a minute)", k, d, want)
		}
	}
	// Nothing was reserved for them: a caller that waits up to an hour gets
	// the slot 10 s out.
	wait, reserved, err := store.ReserveSlot(ctx, pool, "test", interval, time.Hour)
	if err != nil || !reserved || wait > interval || wait < interval-5*time.Second {
		t.Errorf("after five waiters: wait %s, reserved %v, %v; want the slot 10 s out", wait, reserved, err)
	}
}

// How long a job snoozes for a turn in wait: until half maxWait before it,
// at most a minute, at least 10 ms.
func TestSnoozeComesBackJustBeforeTheTurn(t *testing.T) {
	for _, c := range []struct {
		wait, maxWait, want time.Duration
	}{
		{3 * time.Second, 2 * time.Second, 2 * time.Second},
		{1 * time.Second, 2 * time.Second, 10 * time.Millisecond},
		{40 * time.Second, 0, 40 * time.Second},
		{10 * time.Minute, 15 * time.Second, time.Minute},
	} {
		if got := jobs.SnoozeFor(c.wait, c.maxWait); got != c.want {
			t.Errorf("a turn in %s, sleeping at most %s: snooze %s, want %s", c.wait, c.maxWait, got, c.want)
		}
	}
}
