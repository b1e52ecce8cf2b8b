// Package schedules is errand's cron table: every recurring entry the kinds
// declare (jobs.WithSchedule), with ERRAND_SCHEDULES' overrides, run as River
// periodic jobs on the elected leader. Each period is one fan-out job with
// no workspace (a NULL workspace_id in errand.jobs), inserted by errand with
// River's client, never through the SQL contract, unique per entry and
// period; the job records its period in errand.schedule_runs in the
// transaction that completes it, so a period runs once however often it is
// enqueued. `errand schedules list` and `errand schedules tick --at` are
// its command line. Decisions: docs/schedules.md.
package schedules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/errand-dev/errand/jobs"
)

// The variables the table reads (besides those its entries' kinds declare).
const (
	EnvSchedules = "ERRAND_SCHEDULES"
	EnvBackfill  = "ERRAND_SCHEDULE_BACKFILL"
)

// DefaultBackfill is how old a period missed while no replica ran may be and
// still run when one comes back.
const DefaultBackfill = 24 * time.Hour

// Help documents the table's variables for `errand help`.
func Help() string {
	return fmt.Sprintf(`  %-28s default (none)
      overrides schedule entries, ";"-separated: name=<cron expression> (CRON_TZ=<zone> allowed) or name=off, e.g. usage_reports=0 8 * * MON;digests=@every 10m
  %-28s default %s
      a period missed while no replica ran is run once when one comes back if it began at most this long ago
`, EnvSchedules, EnvBackfill, "24h")
}

// Entry is one row of the table.
type Entry struct {
	Name        string
	Kind        string // the kind that declared it
	Description string
	// Spec is the expression in effect (the kind's default unless
	// ERRAND_SCHEDULES overrides it); "" when Off.
	Spec string
	// Default is the kind's expression.
	Default string
	// Off is set when ERRAND_SCHEDULES turns the entry off: the leader never
	// enqueues it (`errand schedules tick --schedule <name>` still can).
	Off  bool
	expr Expr
	def  jobs.Schedule
}

// Next lists the entry's next n times after t (none when it is off).
func (e Entry) Next(t time.Time, n int) []time.Time {
	if e.Off {
		return nil
	}
	var out []time.Time
	for range n {
		t = e.expr.Next(t)
		out = append(out, t)
	}
	return out
}

// Period is the start of the period t is in: the entry's latest time at or
// before t.
func (e Entry) Period(t time.Time) time.Time {
	if e.Off {
		return time.Time{}
	}
	return e.expr.Prev(t)
}

// Table is the cron table of one binary.
type Table struct {
	entries  []Entry
	backfill time.Duration
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Load builds the table from the kinds' entries and the environment,
// reporting every problem at once, one line each.
func Load(getenv func(string) string, kinds []jobs.Kind) (*Table, error) {
	t := &Table{backfill: DefaultBackfill}
	var errs []error
	for _, k := range kinds {
		for _, s := range k.Schedules {
			e, err := declared(getenv, k, s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if _, dup := t.Lookup(e.Name); dup {
				errs = append(errs, fmt.Errorf("schedule %q is declared twice (kind %s)", e.Name, k.Name))
				continue
			}
			t.entries = append(t.entries, e)
		}
	}
	if v := strings.TrimSpace(getenv(EnvBackfill)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 24h or 90m (0: never backfill)", EnvBackfill, v))
		} else {
			t.backfill = d
		}
	}
	if err := t.override(getenv(EnvSchedules)); err != nil {
		errs = append(errs, err)
	}
	for _, k := range kinds {
		for _, s := range k.Schedules {
			if err := t.checkGap(getenv, k, s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func declared(getenv func(string) string, k jobs.Kind, s jobs.Schedule) (Entry, error) {
	if !namePattern.MatchString(s.Name) {
		return Entry{}, fmt.Errorf("kind %s: schedule name %q: want lowercase letters, digits and underscores", k.Name, s.Name)
	}
	if s.Tick == nil {
		return Entry{}, fmt.Errorf("kind %s: schedule %q has no Tick", k.Name, s.Name)
	}
	spec := s.Spec
	if s.EveryEnv != "" {
		v, err := kindEnv(getenv, k, s, s.EveryEnv)
		if err != nil {
			return Entry{}, err
		}
		spec = "@every " + v
	}
	expr, err := Parse(spec)
	if err != nil {
		if s.EveryEnv != "" {
			return Entry{}, &VarError{Var: s.EveryEnv, Err: err}
		}
		return Entry{}, fmt.Errorf("kind %s: schedule %q: %w", k.Name, s.Name, err)
	}
	return Entry{Name: s.Name, Kind: k.Name, Description: s.Description, Spec: expr.String(), Default: expr.String(), expr: expr, def: s}, nil
}

// VarError is an entry refused for the value of its kind's interval
// variable (jobs.Schedule.EveryEnv), which the kind's own check may have
// reported already (config.Load then leaves this one out).
type VarError struct {
	Var string
	Err error
}

func (e *VarError) Error() string { return e.Var + ": " + e.Err.Error() }
func (e *VarError) Unwrap() error { return e.Err }

// override applies ERRAND_SCHEDULES: "name=expression" or "name=off",
// separated by ";" or new lines (cron expressions hold spaces and commas).
// "*=off" turns every entry off (tests use it, and drive time with
// `errand schedules tick`); a named entry beside it, wherever it stands,
// overrides it for that entry.
func (t *Table) override(v string) error {
	var errs []error
	seen := map[string]bool{}
	for item := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ';' || r == '\n' }) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s entry %q: %s", EnvSchedules, item, fmt.Sprintf(format, args...)))
		}
		name, spec, ok := strings.Cut(item, "=")
		name, spec = strings.TrimSpace(name), strings.TrimSpace(spec)
		if !ok || name == "" {
			bad("want name=<cron expression> or name=off")
			continue
		}
		if name == "*" {
			switch {
			case !strings.EqualFold(spec, "off"):
				bad("* takes only off (every schedule off)")
			case seen[name]:
				bad("* is given twice")
			default:
				seen[name] = true
				for i := range t.entries {
					if !seen[t.entries[i].Name] {
						t.entries[i].Off, t.entries[i].Spec = true, ""
					}
				}
			}
			continue
		}
		i := slices.IndexFunc(t.entries, func(e Entry) bool { return e.Name == name })
		if i < 0 {
			bad("unknown schedule %q (schedules: %s)", name, strings.Join(t.names(), ", "))
			continue
		}
		if seen[name] {
			bad("schedule %q is given twice", name)
			continue
		}
		seen[name] = true
		if strings.EqualFold(spec, "off") {
			t.entries[i].Off, t.entries[i].Spec = true, ""
			continue
		}
		t.entries[i].Off = false
		expr, err := Parse(spec)
		if err != nil {
			bad("%v", err)
			continue
		}
		t.entries[i].expr, t.entries[i].Spec = expr, expr.String()
	}
	return errors.Join(errs...)
}

// kindEnv is the value of one of the kind's variables that schedule s
// reads: the environment's, else the kind's default.
func kindEnv(getenv func(string) string, k jobs.Kind, s jobs.Schedule, name string) (string, error) {
	i := slices.IndexFunc(k.Env, func(v jobs.EnvVar) bool { return v.Name == name })
	if i < 0 {
		return "", fmt.Errorf("kind %s: schedule %q reads %s, which the kind does not declare", k.Name, s.Name, name)
	}
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v, nil
	}
	return k.Env[i].Default, nil
}

// checkGap refuses an entry whose times are further apart than its kind's
// MaxGapEnv allows. A variable that is not a duration is left to the kind's
// own check, which reports it.
func (t *Table) checkGap(getenv func(string) string, k jobs.Kind, s jobs.Schedule) error {
	if s.MaxGapEnv == "" {
		return nil
	}
	v, err := kindEnv(getenv, k, s, s.MaxGapEnv)
	if err != nil {
		return err
	}
	limit, err := time.ParseDuration(v)
	e, ok := t.Lookup(s.Name)
	if err != nil || !ok || e.Off || e.Kind != k.Name {
		return nil
	}
	gap, at := e.expr.gapOver(limit, gapFrom, gapSpan)
	if gap == 0 {
		return nil
	}
	where := fmt.Sprintf("schedule %q (%s)", e.Name, e.Spec)
	if e.Spec != e.Default {
		where = fmt.Sprintf("%s entry %q", EnvSchedules, e.Name+"="+e.Spec)
	}
	return fmt.Errorf("%s: its times are up to %s apart (after %s), longer than %s=%s: a tick would find work due since the previous one already older than that, and drop it; set %s to at least %s, or tick more often",
		where, gap, at.UTC().Format(time.RFC3339), s.MaxGapEnv, v, s.MaxGapEnv, gap)
}

// Gaps are looked for over two years of times, 2027 and the leap year
// 2028 (a cron expression's pattern repeats within a year, but a leap day
// changes some gaps: "0 0 30 * *" is 59 days apart at most in 2027, 60 in
// 2028), from a fixed start so that `errand run` decides the same way
// every day.
var (
	gapFrom = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	gapSpan = time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC).Sub(gapFrom)
)

func (t *Table) names() []string {
	out := make([]string, len(t.entries))
	for i, e := range t.entries {
		out[i] = e.Name
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// Entries lists the table in declaration order.
func (t *Table) Entries() []Entry { return slices.Clone(t.entries) }

// Lookup finds an entry by name.
func (t *Table) Lookup(name string) (Entry, bool) {
	for _, e := range t.entries {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Backfill is ERRAND_SCHEDULE_BACKFILL.
func (t *Table) Backfill() time.Duration { return t.backfill }
