package outbound

import (
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"2":                             2 * time.Second,
		"0.25":                          250 * time.Millisecond,
		"-1":                            0,
		"soon":                          0,
		"999999":                        time.Hour,
		"Thu, 26 Nov 2026 10:00:30 GMT": 30 * time.Second,
		"Thu, 26 Nov 2026 09:00:00 GMT": 0,
	}
	for v, want := range cases {
		if got := ParseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", v, got, want)
		}
	}
}
