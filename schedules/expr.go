package schedules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// minEvery is the shortest "@every": River's periodic jobs are meant for
// minutes, not seconds, and a period is one fan-out job.
const minEvery = time.Minute

// Expr is a parsed schedule expression. It satisfies River's
// PeriodicSchedule (Next), and knows its previous time (Prev), which names
// the period a late or repeated enqueue belongs to.
type Expr struct {
	spec  string
	every time.Duration // "@every": aligned to the Unix epoch
	cron  cron.Schedule
}

// Parse reads cron's five fields (robfig/cron's standard syntax, with
// descriptors such as @daily), in UTC or in the zone of a CRON_TZ=<zone>
// prefix, or "@every <duration>".
func Parse(spec string) (Expr, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return Expr{}, errors.New("empty expression: want five cron fields such as \"0 8 * * MON\", or @every 5m")
	}
	if d, ok := strings.CutPrefix(spec, "@every "); ok {
		every, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return Expr{}, fmt.Errorf("%q: %q is not a duration such as 5m or 1h", spec, strings.TrimSpace(d))
		}
		if every < minEvery {
			return Expr{}, fmt.Errorf("%q: at least @every %s", spec, minEvery)
		}
		if every%time.Second != 0 {
			return Expr{}, fmt.Errorf("%q: whole seconds only", spec)
		}
		return Expr{spec: spec, every: every}, nil
	}
	if strings.HasPrefix(spec, "TZ=") {
		return Expr{}, fmt.Errorf("%q: write CRON_TZ=<zone>, not TZ=<zone>", spec)
	}
	// Cron times are UTC unless the expression names a zone, whatever the
	// machine's own zone is.
	parsed := spec
	if !strings.HasPrefix(spec, "CRON_TZ=") {
		parsed = "CRON_TZ=UTC " + spec
	}
	s, err := cron.ParseStandard(parsed)
	if err != nil {
		return Expr{}, fmt.Errorf("%q: %v", spec, err)
	}
	if _, ok := s.(*cron.SpecSchedule); !ok {
		return Expr{}, fmt.Errorf("%q: not a cron expression", spec)
	}
	// robfig/cron never gives up on a date that cannot happen (30 2 31 2 *
	// searches for five years, then returns the zero time).
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return Expr{}, fmt.Errorf("%q never fires", spec)
	}
	return Expr{spec: spec, cron: s}, nil
}

// String is the expression as written.
func (e Expr) String() string { return e.spec }

// Next is the first time strictly after t.
func (e Expr) Next(t time.Time) time.Time {
	if e.every > 0 {
		return t.Truncate(e.every).Add(e.every)
	}
	return e.cron.Next(t)
}

// Prev is the latest time at or before t (the period t is in).
func (e Expr) Prev(t time.Time) time.Time {
	if e.every > 0 {
		return t.Truncate(e.every)
	}
	// Step back until a time fires in (t-step, t], then walk forward to the
	// last one. Cron times are whole seconds.
	t = t.Truncate(time.Second)
	for step := time.Minute; step <= 10*366*24*time.Hour; step *= 2 {
		cur := e.cron.Next(t.Add(-step))
		if cur.IsZero() || cur.After(t) {
			continue
		}
		for {
			n := e.cron.Next(cur)
			if n.IsZero() || n.After(t) {
				return cur
			}
			cur = n
		}
	}
	return time.Time{}
}
