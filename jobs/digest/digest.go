// Package digest is kind "digest.send": one email per user and period with
// the notifications that arrived since that user's last digest, at the
// user's local time (errand.notification_preferences), through email.send.
// Its schedule entry "digests" ticks every ERRAND_DIGEST_TICK and enqueues
// a digest.send for every user whose digest time has passed (queries.go);
// the tables are in migrations/013_schedules.sql. Decisions:
// docs/schedules.md.
package digest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// Name is the kind's name in errand.jobs; Schedule its cron table entry.
const (
	Name     = "digest.send"
	Schedule = "digests"
	// Template is the email.send template the digest is rendered with.
	Template = "digest"
)

// Args are the args of kind "digest.send". The tick enqueues them, unique
// per workspace, user and period (the idempotency key
// "digest/<user_id>/<period>").
type Args struct {
	UserID string `json:"user_id" errand:"required"`
	// Period is the user's local date ("2026-11-27") of a daily digest or
	// the ISO week ("2026-W48") of a weekly one.
	Period string `json:"period" errand:"required"`
}

var (
	uuidPattern   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	periodPattern = regexp.MustCompile(`^\d{4}-(\d{2}-\d{2}|W\d{2})$`)
)

// Validate checks what the SQL contract cannot: the job fails at once.
func (a Args) Validate() error {
	var problems []error
	if !uuidPattern.MatchString(a.UserID) {
		problems = append(problems, fmt.Errorf("user_id %q is not a uuid", a.UserID))
	}
	if !periodPattern.MatchString(a.Period) {
		problems = append(problems, fmt.Errorf("period %q must be a date such as 2026-11-27 or an ISO week such as 2026-W48", a.Period))
	} else if len(a.Period) == 10 {
		if _, err := time.Parse(time.DateOnly, a.Period); err != nil {
			problems = append(problems, fmt.Errorf("period %q is not a date", a.Period))
		}
	}
	return errors.Join(problems...)
}

// Kind is kind "digest.send" with its schedule entry. Build it once per
// daemon (errand.Main does): its configuration is read when the daemon
// starts it.
func Kind() jobs.Kind {
	d := &digester{cfg: config{backfill: 24 * time.Hour, maxItems: 50}}
	return jobs.Define(Name, jobs.QueueEmail, d.work,
		jobs.WithStrictArgs(),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(func(ctx context.Context, s *jobs.Setup) error {
			cfg, err := loadConfig(s.Env)
			d.cfg = cfg
			return err
		}),
		jobs.WithSchedule(jobs.Schedule{
			Name:        Schedule,
			EveryEnv:    "ERRAND_DIGEST_TICK",
			MaxGapEnv:   "ERRAND_DIGEST_BACKFILL",
			Description: "enqueues digest.send for every user whose local digest time has passed",
			Pending: func(ctx context.Context, db store.DB, at time.Time) (bool, error) {
				return anyDue(ctx, db, at)
			},
			Tick: func(ctx context.Context, tx pgx.Tx, at time.Time) (int, error) {
				return tick(ctx, tx, at, d.cfg.backfill)
			},
		}),
		jobs.WithDescription("emails one user the notifications since their last digest (template digest), once per period"))
}

type digester struct{ cfg config }

// work takes the user's undigested notifications, marks them and enqueues
// the email, all in the transaction that completes the job: a retried or
// rescued digest cannot send twice or lose a notification. Nothing new: no
// email.
func (d *digester) work(ctx context.Context, job *jobs.Job, args Args) error {
	return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
		u, err := loadUser(ctx, tx, args.UserID)
		if errors.Is(err, pgx.ErrNoRows) {
			return jobs.Permanent(fmt.Errorf("user %s is not a member of this workspace (errand.workspace_members)", args.UserID))
		}
		if err != nil {
			return err
		}
		items, err := takeUndigested(ctx, tx, args.UserID)
		if err != nil || len(items) == 0 {
			return err
		}
		data := emailData(args.Period, items, u.location(), d.cfg.maxItems)
		// The notifications were read under the workspace's scope; the
		// email is enqueued through the contract as errand's own role.
		if err := job.Store().Unscope(ctx, tx); err != nil {
			return err
		}
		// Keyed by this job too: a second digest job for the period (its
		// first one's row pruned, the user's weekday moved later in the
		// week) sends the notifications it took, instead of getting the
		// first one's email back and sending nothing.
		return enqueueEmail(ctx, tx, job.WorkspaceID, u.email, data, fmt.Sprintf("digest/%s/%s/%d", args.UserID, args.Period, job.ID))
	})
}

// item is one notification in a digest.
type item struct {
	Kind      string
	Title     string
	Body      string
	URL       string
	CreatedAt time.Time
}

// emailData is what template "digest" reads: period, count, items (title,
// body, url, kind, at in the user's time zone) and, when some are not
// listed, more.
func emailData(period string, items []item, loc *time.Location, maxItems int) map[string]any {
	listed := make([]map[string]any, 0, min(len(items), maxItems))
	for _, it := range items[:min(len(items), maxItems)] {
		listed = append(listed, map[string]any{
			"kind": it.Kind, "title": it.Title, "body": it.Body, "url": it.URL,
			"at": it.CreatedAt.In(loc).Format("Mon 2 Jan 15:04"),
		})
	}
	data := map[string]any{"period": period, "count": len(items), "items": listed}
	if more := len(items) - len(listed); more > 0 {
		data["more"] = more
	}
	return data
}
