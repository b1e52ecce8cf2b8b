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
	if zone, _, _ := strings.Cut(strings.TrimPrefix(spec, "CRON_TZ="), " "); strings.HasPrefix(spec, "CRON_TZ=") {
		if problem := cronZoneProblem(zone); problem != "" {
			return Expr{}, fmt.Errorf("%q: %s", spec, problem)
		}
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

// cronZoneProblem says why zone, named by CRON_TZ=, is not a time zone
// every replica reads alike; "" when it is one. time.LoadLocation takes
// these names (from the machine's tz database files), but each is a
// machine's own setting or a file of the database, not a zone: a leader on
// another machine would decide the periods by another clock.
func cronZoneProblem(zone string) string {
	switch {
	case zone == "":
		return "CRON_TZ= names no zone: write CRON_TZ=Europe/Berlin, or leave CRON_TZ out for UTC"
	case zone == "Local" || zone == "localtime":
		// Go's name for the machine's own zone, and the tz database's link
		// to /etc/localtime.
		return fmt.Sprintf("CRON_TZ=%s is each replica's own zone: name the zone (CRON_TZ=Europe/Berlin)", zone)
	case zone == "posixrules" || zone == "Factory":
		return fmt.Sprintf("CRON_TZ=%s is a file of the tz database (the default rules, or its placeholder for an unset zone), not a zone: name the zone (CRON_TZ=Europe/Berlin)", zone)
	case strings.HasPrefix(zone, "posix/") || strings.HasPrefix(zone, "right/"):
		// Copies of the database some systems install and others do not;
		// right/ counts leap seconds, which no clock here does.
		return fmt.Sprintf("CRON_TZ=%s is a copy of the tz database some machines have and others do not: write CRON_TZ=%s", zone, zone[strings.Index(zone, "/")+1:])
	}
	return ""
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

// gapOver is the longest time between two consecutive times of the
// expression that is longer than limit, among those of span after from, and
// the time it begins at; 0 when there is none.
//
// Times are walked as River walks them, each from the one before
// (robfig/cron's Next is not monotonic around some zones' daylight saving
// shifts: from one tick it can skip a day that a later instant would
// find), when there are at most maxGapWalk of them. More frequent
// expressions (every minute for a year is 527,000 Next calls, over a
// second) are sampled every limit/2 instead: a gap longer than limit holds
// a sample whose next time is more than limit/2 away, and only such samples
// are looked at closely, once per gap; the span is then cut to
// maxGapSamples half-limits if it holds more (50,000 limits: 35 days at
// the 1 minute floor, the whole span from about 21 minutes).
func (e Expr) gapOver(limit time.Duration, from time.Time, span time.Duration) (time.Duration, time.Time) {
	if e.every > 0 {
		if e.every > limit {
			return e.every, e.Prev(from)
		}
		return 0, time.Time{}
	}
	end := from.Add(span)
	var gap time.Duration
	var at time.Time
	p := e.Prev(from)
	for range maxGapWalk {
		if p.IsZero() || !p.Before(end) {
			return gap, at
		}
		n := e.Next(p)
		if n.IsZero() {
			return gap, at
		}
		if d := n.Sub(p); d > limit && d > gap {
			gap, at = d, p
		}
		p = n
	}
	gap, at = 0, time.Time{}
	stride := max(limit/2, time.Second)
	if span/stride > maxGapSamples {
		end = from.Add(stride * maxGapSamples)
	}
	var lastNext time.Time // the previous sample's next time
	for x := from; x.Before(end); x = x.Add(stride) {
		n := e.Next(x)
		if n.IsZero() {
			break
		}
		if n.Sub(x) > limit-stride && !n.Equal(lastNext) {
			p := e.lastAtOrBefore(x, lastNext)
			if d := n.Sub(p); d > limit && d > gap {
				gap, at = d, p
			}
		}
		lastNext = n
	}
	return gap, at
}

// lastAtOrBefore is Prev(x), found faster when a time at or before x is
// known (after, zero when not): the first whole second t in [after, x]
// whose next time is after x, by bisection (about 16 Next calls for 12
// hours). Prev instead walks forward time by time.
func (e Expr) lastAtOrBefore(x, after time.Time) time.Time {
	if after.IsZero() || after.After(x) {
		return e.Prev(x)
	}
	lo, hi := after, x.Truncate(time.Second)
	if e.Next(lo).After(x) {
		return lo
	}
	// Next(lo) is at or before x, Next(hi) after it.
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if e.Next(mid).After(x) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

const (
	maxGapWalk    = 20_000  // times walked one by one (hourly for two years is 17,544)
	maxGapSamples = 100_000 // samples otherwise
)
