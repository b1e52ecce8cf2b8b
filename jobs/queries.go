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
// A workspace that is not there, or whose plan has no row, has none.
const queryPlanLimits = `
	SELECT coalesce(max(p.emails_per_minute), 0), coalesce(max(p.webhooks_per_second), 0)
	FROM errand.workspaces w JOIN errand.plans p ON p.plan = w.plan
	WHERE w.id = $1::uuid`
