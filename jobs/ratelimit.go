package jobs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
// river.JobSnooze's error, so the job waits in the database without using
// an attempt and comes back when slots are near. Nothing is dropped or
// failed for being over the limit.
func WaitForSlot(ctx context.Context, db store.DB, name string, interval, maxWait time.Duration) error {
	if interval <= 0 {
		return nil
	}
	wait, reserved, err := store.ReserveSlot(ctx, db, name, interval, maxWait)
	if err != nil {
		return err
	}
	if !reserved {
		// Jitter spreads the snoozed jobs' return.
		jitter := time.Duration(rand.Int64N(int64(time.Second)))
		return river.JobSnooze(max(wait-maxWait, interval) + jitter)
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
