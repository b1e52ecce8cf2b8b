package schedules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand/schedules"
)

// Each expression a user can get wrong is refused with what a good one
// looks like.
func TestParseRefusesBadExpressions(t *testing.T) {
	cases := []struct{ name, spec, want string }{
		{"empty", "", "want five cron fields"},
		{"hour 24", "0 24 * * *", "above maximum (23)"},
		{"minute 60", "60 8 * * *", "above maximum (59)"},
		{"six fields (seconds)", "0 0 8 * * MON", "expected exactly 5 fields"},
		{"unknown weekday", "0 8 * * MOON", "failed to parse"},
		{"unknown time zone", "CRON_TZ=Mars/Olympus 0 8 * * *", "provided bad location"},
		{"TZ= instead of CRON_TZ=", "TZ=Europe/Berlin 0 8 * * *", "write CRON_TZ=<zone>"},
		{"the machine's own zone", "CRON_TZ=Local 0 8 * * MON", "name the zone"},
		{"the machine's own zone by the tz database's link", "CRON_TZ=localtime 0 8 * * MON", "CRON_TZ=localtime is each replica's own zone"},
		{"the tz database's default rules", "CRON_TZ=posixrules 0 8 * * MON", "CRON_TZ=posixrules is a file of the tz database"},
		{"the tz database's placeholder zone", "CRON_TZ=Factory 0 8 * * MON", "CRON_TZ=Factory is a file of the tz database"},
		{"a zone from the posix/ copy", "CRON_TZ=posix/Europe/Berlin 0 8 * * MON", "write CRON_TZ=Europe/Berlin"},
		{"a zone from the right/ copy", "CRON_TZ=right/UTC 0 8 * * MON", "write CRON_TZ=UTC"},
		{"CRON_TZ= without a zone", "CRON_TZ= 0 8 * * MON", "CRON_TZ= names no zone"},
		{"every too often", "@every 10s", "at least @every 1m0s"},
		{"every not a duration", "@every often", "not a duration"},
		{"every fractions of a second", "@every 90500ms", "whole seconds"},
		{"a date that never comes", "0 8 31 2 *", "never fires"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schedules.Parse(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%q) = %v, want an error saying %q", tc.spec, err, tc.want)
			}
		})
	}
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Next and Prev agree: Prev is the latest time at or before t, Next the
// first after; cron times are UTC unless CRON_TZ names a zone, whose
// local time holds across daylight saving changes.
func TestNextAndPrev(t *testing.T) {
	cases := []struct {
		spec, t, prev, next string
	}{
		{"0 8 * * MON", "2026-11-25T12:00:00Z", "2026-11-23T08:00:00Z", "2026-11-30T08:00:00Z"},
		{"0 8 * * MON", "2026-11-30T08:00:00Z", "2026-11-30T08:00:00Z", "2026-12-07T08:00:00Z"},
		{"*/15 * * * *", "2026-11-25T12:14:59Z", "2026-11-25T12:00:00Z", "2026-11-25T12:15:00Z"},
		{"@every 5m", "2026-11-25T12:07:30Z", "2026-11-25T12:05:00Z", "2026-11-25T12:10:00Z"},
		{"@daily", "2026-11-25T00:00:00Z", "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"},
		// 08:00 Berlin is 07:00 UTC in winter, 06:00 in summer (DST from 29 March 2026).
		{"CRON_TZ=Europe/Berlin 0 8 * * *", "2026-03-29T12:00:00Z", "2026-03-29T06:00:00Z", "2026-03-30T06:00:00Z"},
		{"CRON_TZ=Europe/Berlin 0 8 * * *", "2026-03-28T12:00:00Z", "2026-03-28T07:00:00Z", "2026-03-29T06:00:00Z"},
		// Yearly: Prev searches back months.
		{"0 0 1 1 *", "2026-11-25T12:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	}
	for _, tc := range cases {
		e, err := schedules.Parse(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Prev(at(tc.t)); !got.Equal(at(tc.prev)) {
			t.Errorf("%q: Prev(%s) = %s, want %s", tc.spec, tc.t, got.UTC().Format(time.RFC3339), tc.prev)
		}
		if got := e.Next(at(tc.t)); !got.Equal(at(tc.next)) {
			t.Errorf("%q: Next(%s) = %s, want %s", tc.spec, tc.t, got.UTC().Format(time.RFC3339), tc.next)
		}
	}
}
