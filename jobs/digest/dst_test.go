package digest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// transitions finds the days of year on which zone's UTC offset at noon
// changes (Go's own tzdata, independent of PostgreSQL's).
func transitions(loc *time.Location, year int) []time.Time {
	var out []time.Time
	prev := time.Date(year, 1, 1, 12, 0, 0, 0, loc)
	for d := 1; d < 366; d++ {
		day := time.Date(year, 1, 1+d, 12, 0, 0, 0, loc)
		_, a := prev.Zone()
		_, b := day.Zone()
		if a != b {
			out = append(out, time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, loc))
		}
		prev = day
	}
	return out
}

// Local 08:00 stays 08:00 across every daylight saving change of 2030 in
// Berlin, New York and Lord Howe (whose clocks move by half an hour), and
// in Kolkata, which has none: each next due time PostgreSQL computes is
// 08:00 local by Go's tzdata, one day (or one week) after the last.
func TestLocalHourHoldsAcrossDaylightSaving(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"} {
		loc := mustZone(t, zone)
		days := transitions(loc, 2030)
		if zone == "Asia/Kolkata" {
			if len(days) != 0 {
				t.Fatalf("Kolkata changes clocks? %v", days)
			}
			days = []time.Time{time.Date(2030, 3, 31, 0, 0, 0, 0, loc)}
		} else if len(days) != 2 {
			t.Fatalf("%s: %d changes in 2030", zone, len(days))
		}
		for _, day := range days {
			for _, freq := range []string{"daily", "weekly"} {
				after := day.AddDate(0, 0, -10)
				var offsets []int
				n := 20
				if freq == "weekly" {
					n = 8
				}
				for i := 0; i < n; i++ {
					var next time.Time
					err := pool.QueryRow(ctx, `SELECT errand.digest_next_due($1, $2, 8, $3, $4)`, freq, zone, int(day.Weekday()+6)%7+1, after).Scan(&next)
					if err != nil {
						t.Fatal(err)
					}
					l := next.In(loc)
					if l.Hour() != 8 || l.Minute() != 0 {
						t.Errorf("%s %s after %s: %s, not 08:00 local", zone, freq, local(after, loc), local(next, loc))
					}
					step := 24 * time.Hour
					if freq == "weekly" {
						step = 7 * 24 * time.Hour
						if l.Weekday() != day.Weekday() {
							t.Errorf("%s weekly on %s: %s", zone, day.Weekday(), local(next, loc))
						}
					}
					if d := next.Sub(after); i > 0 && (d < step-time.Hour || d > step+time.Hour) {
						t.Errorf("%s %s: %s after %s", zone, freq, local(next, loc), local(after, loc))
					}
					_, off := next.In(loc).Zone()
					offsets = append(offsets, off)
					after = next
				}
				if zone != "Asia/Kolkata" && offsets[0] == offsets[len(offsets)-1] {
					t.Errorf("%s %s: the sequence did not cross the change of %s", zone, freq, day.Format(time.DateOnly))
				}
				if zone == "Australia/Lord_Howe" {
					if d := offsets[0] - offsets[len(offsets)-1]; d != 1800 && d != -1800 {
						t.Errorf("Lord Howe: offsets %d and %d, want half an hour apart", offsets[0], offsets[len(offsets)-1])
					}
				}
			}
		}
	}
}

// An hour a spring change skips is sent at the end of the gap; an hour an
// autumn change repeats is sent once, at its standard-time occurrence.
func TestSkippedAndRepeatedHours(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	cases := []struct {
		name, zone  string
		hour        int
		after, want string
	}{
		{"02:00 on Berlin's spring day is 03:00 CEST", "Europe/Berlin", 2, "2030-03-30T12:00:00Z", "2030-03-31T01:00:00Z"},
		{"02:00 on Lord Howe's spring day is 02:30", "Australia/Lord_Howe", 2, "2030-10-05T00:00:00Z", "2030-10-05T15:30:00Z"},
		{"02:00 on New York's spring day is 03:00 EDT", "America/New_York", 2, "2030-03-09T12:00:00Z", "2030-03-10T07:00:00Z"},
		{"02:00 on Berlin's autumn day, the second time", "Europe/Berlin", 2, "2030-10-26T12:00:00Z", "2030-10-27T01:00:00Z"},
		{"and not a third time the same night", "Europe/Berlin", 2, "2030-10-27T01:00:00Z", "2030-10-28T01:00:00Z"},
		{"01:00 on New York's autumn day, once", "America/New_York", 1, "2030-11-03T05:00:00Z", "2030-11-03T06:00:00Z"},
	}
	for _, tc := range cases {
		var got time.Time
		if err := pool.QueryRow(context.Background(), `SELECT errand.digest_next_due('daily', $1, $2, 1, $3)`, tc.zone, tc.hour, tc.after).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want, _ := time.Parse(time.RFC3339, tc.want); !got.Equal(want) {
			t.Errorf("%s: %s, want %s", tc.name, got.UTC().Format(time.RFC3339), tc.want)
		}
	}
}

// End to end, ticking every five minutes around 08:00 local on Berlin's,
// New York's and Lord Howe's change days, and three days in Kolkata, which
// has none: nothing at 07:55, the digest at 08:00, its period the local
// date.
func TestDigestAtLocalEightOnChangeDays(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, daemonEnv)
	zones := []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"}
	for _, zone := range zones {
		loc := mustZone(t, zone)
		user := newUser(t, pool, ws, "ann@"+loc.String()+".example", "daily", zone, 8, 1)
		change := time.Date(2030, 3, 10, 0, 0, 0, 0, loc) // Kolkata: no change
		if ts := transitions(loc, 2030); len(ts) > 0 {
			change = ts[1] // Berlin's and New York's autumn, Lord Howe's spring
		}
		// The first tick moves the schedule from now to 2030: the next
		// digest is the day before the change.
		tick(t, url, pool, change.AddDate(0, 0, -1))
		for _, day := range []time.Time{change.AddDate(0, 0, -1), change, change.AddDate(0, 0, 1)} {
			eight := time.Date(day.Year(), day.Month(), day.Day(), 8, 0, 0, 0, loc)
			notify(t, pool, ws, user, "news of "+day.Format(time.DateOnly))
			if got := tick(t, url, pool, eight.Add(-5*time.Minute)); got != "nothing due" {
				t.Errorf("%s at %s: %s", zone, local(eight.Add(-5*time.Minute), loc), got)
			}
			if got := tick(t, url, pool, eight); got != "enqueued" {
				t.Errorf("%s at %s: %s", zone, local(eight, loc), got)
			}
			s := scheduleOf(t, pool, user)
			if s.LastDue == nil || !s.LastDue.Equal(eight) {
				t.Errorf("%s: last digest at %v, want %s", zone, s.LastDue, local(eight, loc))
			}
			es := digestEmails(t, pool)
			if len(es) == 0 || es[len(es)-1].Subject != "1 new in ACME ("+day.Format(time.DateOnly)+")" {
				t.Errorf("%s %s: emails %+v", zone, day.Format(time.DateOnly), es)
			}
		}
		// Done with this zone: its user's digests would be due at the next
		// zone's ticks, which the test tells apart by "nothing due".
		exec(t, pool, `UPDATE errand.notification_preferences SET frequency = 'off' WHERE user_id = $1`, user)
	}
	if n := len(digestEmails(t, pool)); n != 3*len(zones) {
		t.Errorf("%d digests, want %d", n, 3*len(zones))
	}
}

// A time zone PostgreSQL no longer knows (a tzdata update removed it after
// the preference was written) does not stop the tick: that user's digests
// follow UTC and the schedule row says why.
func TestUnknownZoneFallsBackToUTC(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	errandtest.StartDaemon(t, url, daemonEnv)
	user := newUser(t, pool, ws, "ann@example.com", "daily", "Europe/Berlin", 8, 1)
	other := newUser(t, pool, ws, "bob@example.com", "daily", "Asia/Kolkata", 8, 1)
	exec(t, pool, `UPDATE errand.digest_schedule SET zone = 'Mars/Olympus', next_due_at = '2030-01-10T00:00:00Z' WHERE user_id = $1`, user)
	exec(t, pool, `UPDATE errand.digest_schedule SET next_due_at = '2030-01-10T00:00:00Z' WHERE user_id = $1`, other)
	notify(t, pool, ws, user, "hello")
	if got := tick(t, url, pool, time.Date(2030, 1, 10, 9, 0, 0, 0, time.UTC)); got != "enqueued" {
		t.Fatalf("tick: %s", got)
	}
	s := scheduleOf(t, pool, user)
	if s.Zone != "UTC" || s.ZoneError != "errand: time zone 'Mars/Olympus' is not known to this PostgreSQL (its tzdata); digests follow UTC until the preference is changed" {
		t.Errorf("schedule %+v", s)
	}
	if want := time.Date(2030, 1, 10, 8, 0, 0, 0, time.UTC); s.LastDue == nil || !s.LastDue.Equal(want) || !s.NextDue.Equal(want.AddDate(0, 0, 1)) {
		t.Errorf("digest at %v, next %v: want 08:00 UTC", s.LastDue, s.NextDue)
	}
	if o := scheduleOf(t, pool, other); o.ZoneError != "" || o.Zone != "Asia/Kolkata" || o.LastDue == nil || !o.LastDue.Equal(time.Date(2030, 1, 10, 2, 30, 0, 0, time.UTC)) {
		t.Errorf("another user's schedule %+v", o)
	}
	if es := digestEmails(t, pool); len(es) != 1 || es[0].To != "ann@example.com" {
		t.Errorf("emails %+v", es)
	}
}

// Each day's (and each week's) digest has its own period, across every
// daylight saving change of two years, in zones where the due hour falls
// into a change: America/Nuuk at 23:00 (its clocks go from Saturday 23:00
// to Sunday 00:00, so Saturday's digest is due at an instant that shows as
// Sunday, and took Sunday's period, which made Sunday's own digest a
// duplicate, dropped), Europe/Dublin (negative daylight saving in tzdata),
// Antarctica/Troll (a two-hour change), Lord Howe's half hour, Berlin.
func TestEveryDigestPeriodOnceAcrossChanges(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	cases := []struct {
		zone  string
		hours []int
	}{
		{"America/Nuuk", []int{22, 23, 0}},
		{"Europe/Dublin", []int{0, 1, 2}},
		{"Antarctica/Troll", []int{0, 1, 2, 3}},
		{"Australia/Lord_Howe", []int{1, 2}},
		{"Europe/Berlin", []int{2, 3}},
		{"Pacific/Apia", []int{0, 23}},
	}
	for _, tc := range cases {
		for _, hour := range tc.hours {
			for _, frequency := range []string{"daily", "weekly"} {
				var labels []string
				if err := pool.QueryRow(context.Background(), `
					WITH RECURSIVE d(n, due) AS (
						SELECT 0, errand.digest_next_due($3, $1, $2, 6, '2029-12-01T00:00:00Z')
						UNION ALL
						SELECT n + 1, errand.digest_next_due($3, $1, $2, 6, due) FROM d WHERE n < CASE $3 WHEN 'daily' THEN 800 ELSE 115 END
					)
					SELECT array_agg(errand.digest_period($3, $1, $2, due) ORDER BY n) FROM d`, tc.zone, hour, frequency).Scan(&labels); err != nil {
					t.Fatal(err)
				}
				for i := 1; i < len(labels); i++ {
					if want := nextPeriod(t, frequency, labels[i-1]); labels[i] != want {
						t.Errorf("%s %s at %02d:00: the digest after %s's is labelled %s, want %s", tc.zone, frequency, hour, labels[i-1], labels[i], want)
						break
					}
				}
			}
		}
	}
}

// nextPeriod is the period after p: the next date, or the next ISO week.
func nextPeriod(t *testing.T, frequency, p string) string {
	t.Helper()
	if frequency == "daily" {
		d, err := time.Parse(time.DateOnly, p)
		if err != nil {
			t.Fatal(err)
		}
		return d.AddDate(0, 0, 1).Format(time.DateOnly)
	}
	var year, week int
	if _, err := fmt.Sscanf(p, "%d-W%d", &year, &week); err != nil {
		t.Fatalf("period %q: %v", p, err)
	}
	// Thursday of the week, plus seven days, says the next ISO week.
	jan4 := time.Date(year, 1, 4, 0, 0, 0, 0, time.UTC)
	monday := jan4.AddDate(0, 0, -((int(jan4.Weekday())+6)%7)+7*(week-1))
	y, w := monday.AddDate(0, 0, 10).ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}
