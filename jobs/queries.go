package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// owner is who a job's row says is running it.
type owner struct {
	State   string
	Attempt int
	By      string // the last of attempted_by
}

// lockOwner locks the job's row until tx ends and reads who runs it: no
// rescue and no other attempt can change it before tx commits.
func lockOwner(ctx context.Context, tx pgx.Tx, jobID int64) (owner, error) {
	var o owner
	err := tx.QueryRow(ctx, `
		SELECT state::text, attempt, coalesce(attempted_by[array_length(attempted_by, 1)], '')
		FROM errand.river_job WHERE id = $1 FOR UPDATE`, jobID).Scan(&o.State, &o.Attempt, &o.By)
	if err != nil {
		return owner{}, fmt.Errorf("lock job %d: %w", jobID, err)
	}
	return o, nil
}

// queryPlanLimits reads a workspace's plan's outbound rate limits (0: none).
// A workspace that is not there, or whose plan has no row, has none. The
// values are read within errand.plans' own checks, for an app that replaces
// the table by a view (a view has no CHECK, and its columns may be numeric):
// 0 or less is none, as NULL is; a fraction is rounded down, a positive
// value under 1 counting as 1 (0.5 emails a minute is a limit, not none);
// one beyond an integer is the largest integer. A view's 0.5 failed every
// email and delivery of its workspaces ("cannot convert ... to integer").
const queryPlanLimits = `
	SELECT coalesce(max(CASE WHEN p.emails_per_minute > 0
	                         THEN least(greatest(floor(p.emails_per_minute), 1), 2147483647)::bigint END), 0),
	       coalesce(max(CASE WHEN p.webhooks_per_second > 0
	                         THEN least(greatest(floor(p.webhooks_per_second), 1), 2147483647)::bigint END), 0)
	FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
	WHERE w.id = $1::uuid`
