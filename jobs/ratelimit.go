package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/store"
)

// PlanLimits are the outbound rate limits of a workspace's plan, from
// errand.plans (docs/fairness.md); 0 is no limit.
type PlanLimits struct {
	EmailsPerMinute   int
	WebhooksPerSecond int
}

// PlanLimitsCache reads workspaces' plan limits, each at most once per TTL,
// so a kind can check them on every job without a query per job. A change to
// errand.plans or to a workspace's plan applies within the TTL.
type PlanLimitsCache struct {
	TTL time.Duration // 0: 5 s
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]planLimitsEntry
}

type planLimitsEntry struct {
	limits PlanLimits
	at     time.Time
}

// Get returns the limits of workspace ws's plan.
func (c *PlanLimitsCache) Get(ctx context.Context, db store.DB, ws string) (PlanLimits, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	c.mu.Lock()
	e, ok := c.entries[ws]
	c.mu.Unlock()
	if ok && now().Sub(e.at) < ttl {
		return e.limits, nil
	}
	var l PlanLimits
	if err := db.QueryRow(ctx, queryPlanLimits, ws).Scan(&l.EmailsPerMinute, &l.WebhooksPerSecond); err != nil {
		return PlanLimits{}, fmt.Errorf("read the plan limits of workspace %s: %w", ws, err)
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[string]planLimitsEntry)
	}
	if len(c.entries) > 100_000 { // bounded: forget everything rather than grow
		clear(c.entries)
	}
	c.entries[ws] = planLimitsEntry{limits: l, at: now()}
	c.mu.Unlock()
	return l, nil
}

// WaitForWorkspaceSlot holds job to its workspace's plan limit across all
// replicas: limit(plan) requests per per (0: no limit), under the rate limit
// called name + ":workspace:" + the workspace's id. Over it, the job sleeps
// or snoozes as WaitForSlot says; snoozed tells the caller (for its
// metrics) that it did.
func (c *PlanLimitsCache) WaitForWorkspaceSlot(ctx context.Context, job *Job, name string, limit func(PlanLimits) int, per, maxWait time.Duration) (snoozed bool, err error) {
	limits, err := c.Get(ctx, job.Store(), job.WorkspaceID)
	if err != nil {
		return false, err
	}
	n := limit(limits)
	if n <= 0 {
		return false, nil
	}
	err = WaitForSlot(ctx, job.Store(), name+":workspace:"+job.WorkspaceID, per/time.Duration(n), maxWait)
	_, snoozed = errors.AsType[*river.JobSnoozeError](err)
	return snoozed, err
}

// WaitForSlot holds a job to one request every interval under the rate
// limit called name, across all replicas (store.ReserveSlot): it sleeps
// until the job's slot when that is within maxWait, and otherwise returns
// river.JobSnooze's error, so the job waits in the database without using an
// attempt and comes back about when its turn among those waiting is near
// (snoozeFor). Nothing is dropped or failed for being over the limit, and a
// backlog over it costs about one snooze per job, not one per job per
// interval.
func WaitForSlot(ctx context.Context, db store.DB, name string, interval, maxWait time.Duration) error {
	if interval <= 0 {
		return nil
	}
	wait, reserved, err := store.ReserveSlot(ctx, db, name, interval, maxWait)
	if err != nil {
		return err
	}
	if !reserved {
		return river.JobSnooze(snoozeFor(wait, maxWait))
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxSnooze bounds how long a job over a rate limit snoozes before it asks
// again: a line of waiters made long by jobs since cancelled, or a plan
// since made faster, delays a job by at most this.
const maxSnooze = time.Minute

// snoozeFor is how long a job whose turn comes in wait snoozes: until half
// maxWait before its turn, when the next free slot should be within reach
// (it then sleeps the rest), at most maxSnooze. A job snoozed for more than
// River's scheduler interval (5 s) may come back up to that much later,
// which costs it nothing but the wait: whoever asks first when a slot is
// near takes it.
func snoozeFor(wait, maxWait time.Duration) time.Duration {
	return min(max(wait-maxWait/2, 10*time.Millisecond), maxSnooze)
}
