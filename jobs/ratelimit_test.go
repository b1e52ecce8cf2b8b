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
	if err := jobs.WaitForSlot(ctx, pool, "test", 1, time.Minute, 0); err != nil {
		t.Fatalf("the first slot: %v, want it at once", err)
	}
	// The second slot is a minute away: kept for job 2, which snoozes as
	// scheduled, early by River's scheduler interval and a second.
	if d := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, 0)); d < 50*time.Second || d > 54*time.Second {
		t.Errorf("snoozed %s, want about 54s (a minute less 6 s)", d)
	}
	if err := jobs.WaitForSlot(ctx, pool, "other", 3, time.Minute, 0); err != nil {
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

// A job over the limit keeps the slot it was given: asking again (back from
// its snooze, or rerun after a crash) it gets the same slot, not a new one
// behind everyone who asked since, so a backlog comes back about once per
// job; the slot is taken when it is near, and the hold goes with it.
func TestAJobOverTheLimitKeepsItsSlot(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	holds := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.rate_limit_holds WHERE name = 'test'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := jobs.WaitForSlot(ctx, pool, "test", 1, time.Minute, 0); err != nil {
		t.Fatalf("the first slot: %v, want it at once", err)
	}
	first := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, 0))
	again := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, 0))
	if again > first || again < first-5*time.Second {
		t.Errorf("job 2 asked again: snoozed %s, then %s; want its same slot (a little less)", first, again)
	}
	// Job 3's slot is the one after job 2's, two minutes out, not three.
	if d := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 3, time.Minute, 0)); d < first+50*time.Second || d > first+time.Minute {
		t.Errorf("job 3 snoozed %s, want a minute after job 2's %s", d, first)
	}
	if n := holds(); n != 2 {
		t.Errorf("%d slots kept, want job 2's and job 3's", n)
	}
	// Job 2's slot has come near: it takes it (sleeping until it) and its
	// hold is gone; a later retry of job 2 would ask for a new slot.
	if _, err := pool.Exec(ctx, `UPDATE errand.rate_limit_holds SET slot = clock_timestamp() + interval '100 milliseconds' WHERE job_id = 2`); err != nil {
		t.Fatal(err)
	}
	if err := jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, time.Second); err != nil {
		t.Errorf("job 2 back for its slot 100 ms away: %v, want it taken", err)
	}
	if n := holds(); n != 1 {
		t.Errorf("%d slots kept after job 2 took its, want job 3's", n)
	}
}

// A job back long after its kept slot (its workspace was paused, or the
// workers busy) gets a new slot behind the others: taking the old ones
// late, many such jobs would start at once, over the limit.
func TestAJobBackLongAfterItsSlotGetsANewOne(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	if err := jobs.WaitForSlot(ctx, pool, "test", 1, time.Minute, 0); err != nil {
		t.Fatalf("the first slot: %v, want it at once", err)
	}
	snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, 0))
	if _, err := pool.Exec(ctx, `UPDATE errand.rate_limit_holds SET slot = clock_timestamp() - interval '1 hour' WHERE job_id = 2`); err != nil {
		t.Fatal(err)
	}
	if d := snoozed(t, jobs.WaitForSlot(ctx, pool, "test", 2, time.Minute, 0)); d < 100*time.Second {
		t.Errorf("job 2 back an hour after its slot: snoozed %s, want a new slot two minutes out (behind the old one)", d)
	}
	var ahead bool
	if err := pool.QueryRow(ctx, `SELECT slot > clock_timestamp() + interval '100 seconds' FROM errand.rate_limit_holds WHERE job_id = 2`).Scan(&ahead); err != nil || !ahead {
		t.Errorf("job 2's kept slot is not the new one: %v", err)
	}
}

// How long a job snoozes for a kept slot: on time when the return is within
// River's scheduler interval, else early by more than the scheduler's
// lateness; a return between the two is a scheduler interval's snooze on
// time, then another.
func TestSnoozeComesBackBeforeTheSlot(t *testing.T) {
	for _, c := range []struct {
		wait, maxWait, want time.Duration
	}{
		{3 * time.Second, 2 * time.Second, 2 * time.Second},
		{1 * time.Second, 1900 * time.Millisecond, 50 * time.Millisecond},
		{8 * time.Second, 2 * time.Second, 4900 * time.Millisecond},
		{60 * time.Second, 0, 54 * time.Second},
		{60 * time.Second, 30 * time.Second, 39 * time.Second},
	} {
		if got := jobs.SnoozeFor(c.wait, c.maxWait); got != c.want {
			t.Errorf("a slot in %s, sleeping at most %s: snooze %s, want %s", c.wait, c.maxWait, got, c.want)
		}
	}
}
