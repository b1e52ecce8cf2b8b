// Package usagereport is kind "usage_report.generate": one weekly report
// per workspace (usage per metric from errand.usage_events with the change
// against the previous week, a daily breakdown and the plan's limits, and
// errand's own activity for the workspace), stored in errand.usage_reports
// and emailed to the workspace's owners and admins (template usage_report)
// in the transaction that completes the job. Its schedule entry
// "usage_reports" (Mondays 08:00 UTC) enqueues one per workspace for the
// week that just ended. Its job numbers come from errand.job_counts, which
// the leader keeps as jobs finish (River deletes the jobs themselves within
// a day). Tables: migrations/013_schedules.sql and 029_usage_rollup.sql;
// decisions: docs/schedules.md.
package usagereport

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/store"
)

// Name is the kind's name in errand.jobs; Schedule its cron table entry.
const (
	Name     = "usage_report.generate"
	Schedule = "usage_reports"
	Template = "usage_report"
)

// Args are the args of kind "usage_report.generate", unique per workspace
// and week (the idempotency key "usage_report/<week>").
type Args struct {
	// Week is an ISO week, "2026-W47": Monday 00:00 to Monday 00:00 UTC.
	Week string `json:"week" errand:"required"`
	// AsOf, set by `errand schedules tick --future` (tests and rehearsals
	// drive time with it), builds the report as if the time were AsOf: a
	// week over by then is reported at once. Without it a week not over
	// on the database's clock waits until it is.
	AsOf *time.Time `json:"as_of,omitempty"`
}

var weekPattern = regexp.MustCompile(`^(\d{4})-W(\d{2})$`)

// Validate checks the week exists.
func (a Args) Validate() error {
	_, err := WeekStart(a.Week)
	return err
}

// WeekStart is the Monday 00:00 UTC that begins ISO week w ("2026-W47").
func WeekStart(w string) (time.Time, error) {
	m := weekPattern.FindStringSubmatch(w)
	if m == nil {
		return time.Time{}, fmt.Errorf("week %q must be an ISO week such as 2026-W47", w)
	}
	year, _ := strconv.Atoi(m[1])
	week, _ := strconv.Atoi(m[2])
	// January 4th is always in week 1.
	jan4 := time.Date(year, 1, 4, 0, 0, 0, 0, time.UTC)
	start := jan4.AddDate(0, 0, -(int(jan4.Weekday())+6)%7+(week-1)*7)
	if y, wk := start.ISOWeek(); week < 1 || y != year || wk != week {
		return time.Time{}, fmt.Errorf("week %q does not exist (%d has %d ISO weeks)", w, year, weeksIn(year))
	}
	return start, nil
}

func weeksIn(year int) int {
	_, w := time.Date(year, 12, 28, 0, 0, 0, 0, time.UTC).ISOWeek()
	return w
}

// WeekOf names the ISO week t is in.
func WeekOf(t time.Time) string {
	y, w := t.UTC().ISOWeek()
	return fmt.Sprintf("%04d-W%02d", y, w)
}

// ReportedWeek is the week a report enqueued at at covers: the latest
// complete week, the one before at's own.
func ReportedWeek(at time.Time) string {
	at = at.UTC()
	monday := time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(int(at.Weekday())+6)%7)
	return WeekOf(monday.AddDate(0, 0, -1))
}

// Kind is kind "usage_report.generate" with its schedule entry. Build it
// once per daemon (errand.Main does).
func Kind() jobs.Kind {
	r := &reporter{}
	return jobs.Define(Name, jobs.QueueReports, r.work,
		jobs.WithStrictArgs(),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(func(ctx context.Context, s *jobs.Setup) error {
			cfg, err := loadConfig(s.Env)
			r.cfg = cfg
			return err
		}),
		jobs.WithSchedule(jobs.Schedule{
			Name:        Schedule,
			Spec:        "0 8 * * MON",
			Description: "enqueues usage_report.generate for every workspace for the week that ended",
			Pending: func(ctx context.Context, db store.DB, at time.Time) (bool, error) {
				return anyWorkspace(ctx, db)
			},
			Tick: func(ctx context.Context, tx pgx.Tx, at time.Time) (int, error) {
				return enqueueReports(ctx, tx, ReportedWeek(at), at)
			},
		}),
		jobs.WithTimeout(5*time.Minute),
		jobs.WithDescription("builds a workspace's weekly usage report, stores it in errand.usage_reports and emails owners and admins"))
}

type reporter struct{ cfg config }

// countLag is how far behind the database's clock the roll-up counts
// finished jobs (errand.roll_up_job_counts' default): a report that ran
// within it after its week ended would miss the jobs of the week's last
// moments, and a stored report is never redone.
const countLag = time.Minute

// waitForWeekEnd is how long the report of the week that ends at end waits
// when it runs at now (the database's clock), asked for as of asOf (zero
// unless a tick in the future enqueued it): until the roll-up has passed
// the week's end, when now is less than countLag after it (an
// ERRAND_SCHEDULES override such as usage_reports=0 0 * * MON) or before
// it (an app's INSERT for a week not over: a report built then would be
// stored, emailed and never redone); not at all for a week long over, or
// one over as of asOf.
func waitForWeekEnd(end, now, asOf time.Time) time.Duration {
	if !asOf.Before(end) || !now.Before(end.Add(countLag)) {
		return 0
	}
	return end.Add(countLag + time.Second).Sub(now)
}

// work builds, stores and emails the report in the transaction that
// completes the job: a retried job cannot store or email it twice.
func (r *reporter) work(ctx context.Context, job *jobs.Job, args Args) error {
	from, err := WeekStart(args.Week)
	if err != nil {
		return jobs.Permanent(err)
	}
	now, err := store.Now(ctx, job.Store())
	if err != nil {
		return err
	}
	var asOf time.Time
	if args.AsOf != nil {
		asOf = *args.AsOf
	}
	if d := waitForWeekEnd(from.AddDate(0, 0, 7), now, asOf); d > 0 {
		// A second job for a week already reported has nothing to wait for.
		var done bool
		if err := job.InWorkspace(ctx, func(tx pgx.Tx) (err error) {
			done, err = reportExists(ctx, tx, args.Week)
			return err
		}); err != nil {
			return err
		}
		if !done {
			return jobs.Snooze(d) // no attempt used
		}
	}
	if err := rollUp(ctx, job.Store()); err != nil {
		return err
	}
	return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
		done, err := reportExists(ctx, tx, args.Week)
		if err != nil || done {
			return err
		}
		s, err := summarize(ctx, tx, job.WorkspaceID, args.Week, from)
		if err != nil {
			return err
		}
		if s.Empty && r.cfg.skipEmpty {
			return nil
		}
		if err := storeReport(ctx, tx, args.Week, s, job.ID); err != nil {
			return err
		}
		to, err := recipients(ctx, tx)
		if err != nil || len(to) == 0 {
			return err
		}
		if err := job.Store().Unscope(ctx, tx); err != nil {
			return err
		}
		return enqueueEmail(ctx, tx, job.WorkspaceID, to, s.emailData(), "usage_report/"+args.Week)
	})
}

// Summary is what errand.usage_reports.summary holds.
type Summary struct {
	Week     string   `json:"week"`
	From     string   `json:"from"` // first day, UTC
	To       string   `json:"to"`   // last day, UTC
	Plan     string   `json:"plan"`
	Metrics  []Metric `json:"metrics"`
	Jobs     []Jobs   `json:"jobs"`
	Emails   Emails   `json:"emails"`
	Webhooks Webhooks `json:"webhooks"`
	Invoices Invoices `json:"invoices"`
	// Empty: no usage and no errand activity in the week. The usage
	// report's own job and email, and digest.send jobs, are not activity.
	Empty bool `json:"empty"`
}

// Metric is one metric's week.
type Metric struct {
	Metric   string `json:"metric"`
	Total    int64  `json:"total"`
	Previous int64  `json:"previous"`
	Change   int64  `json:"change"`
	// ChangePct is the change in percent of the previous week, one
	// decimal; null when the previous week was 0.
	ChangePct *float64 `json:"change_pct"`
	// Daily are Monday .. Sunday (UTC).
	Daily []int64 `json:"daily"`
	// Limit is the plan's weekly limit (errand.plan_limits); null when none.
	Limit        *int64   `json:"limit"`
	LimitUsedPct *float64 `json:"limit_used_pct"`
}

// Jobs counts the workspace's jobs that finished in the week (UTC days of
// their finalized_at, from errand.job_counts) by kind and status: completed,
// or failed (discarded or cancelled).
type Jobs struct {
	Kind   string `json:"kind"`
	Status string `json:"status"`
	Count  int64  `json:"count"`
}

// Emails counts the workspace's emails created in the week, the usage
// reports' own left out.
type Emails struct {
	Sent   int64 `json:"sent"` // sent or captured
	Failed int64 `json:"failed"`
}

// Webhooks counts the workspace's webhook deliveries in the week.
type Webhooks struct {
	Delivered      int64 `json:"delivered"`       // message and endpoint pairs answered 2xx
	FailedAttempts int64 `json:"failed_attempts"` // attempts that were not
}

// Invoices counts the workspace's invoice.render jobs that finished in the
// week: rendered (completed; a render identical to the latest version
// stores no new one but counts) and failed.
type Invoices struct {
	Rendered int64 `json:"rendered"`
	Failed   int64 `json:"failed"`
}

// invoiceKind is kind invoice.render's name (jobs/invoice).
const invoiceKind = "invoice.render"

func pct(part, whole int64) *float64 {
	if whole == 0 {
		return nil
	}
	v := math.Round(float64(part)*1000/float64(whole)) / 10
	return &v
}

// emailData is what template usage_report reads.
func (s Summary) emailData() map[string]any {
	metrics := make([]map[string]any, len(s.Metrics))
	for i, m := range s.Metrics {
		metrics[i] = map[string]any{"metric": m.Metric, "total": m.Total, "previous": m.Previous, "change_pct": m.ChangePct,
			"limit": m.Limit, "limit_used_pct": m.LimitUsedPct}
	}
	jobs := make([]map[string]any, len(s.Jobs))
	for i, j := range s.Jobs {
		jobs[i] = map[string]any{"kind": j.Kind, "status": j.Status, "count": j.Count}
	}
	return map[string]any{"week": s.Week, "from": s.From, "to": s.To, "plan": s.Plan, "metrics": metrics, "jobs": jobs,
		"emails_sent": s.Emails.Sent, "emails_failed": s.Emails.Failed,
		"webhooks_delivered": s.Webhooks.Delivered, "webhook_attempts_failed": s.Webhooks.FailedAttempts,
		"invoices_rendered": s.Invoices.Rendered, "invoices_failed": s.Invoices.Failed}
}
