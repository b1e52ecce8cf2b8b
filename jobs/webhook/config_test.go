package webhook

import (
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand/jobs"
)

func TestDefaultsAreSvixLike(t *testing.T) {
	cfg, err := loadConfig(jobs.NewEnv(func(string) string { return "" }, envVars(), nil))
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	if len(cfg.schedule) != len(want) {
		t.Fatalf("schedule %v, want %v", cfg.schedule, want)
	}
	for i := range want {
		if cfg.schedule[i] != want[i] {
			t.Errorf("retry %d after %s, want %s", i+1, cfg.schedule[i], want[i])
		}
	}
	if cfg.disableAfter != 5*24*time.Hour || cfg.concurrency != 10 || cfg.connectTimeout != 10*time.Second || cfg.timeout != 30*time.Second || len(cfg.allowed) != 0 {
		t.Errorf("defaults %+v", cfg)
	}
	if len(cfg.schedule)+1 != deliverAttempts {
		t.Errorf("the kind's default attempts %d do not match the default schedule's %d", deliverAttempts, len(cfg.schedule)+1)
	}
}

// Each bad value is refused at start with what a good one looks like.
func TestEnvChecksRefuseBadValues(t *testing.T) {
	checks := map[string]func(string) error{}
	for _, v := range envVars() {
		checks[v.Name] = v.Check
	}
	cases := []struct{ name, value, want string }{
		{"ERRAND_WEBHOOK_ALLOW_CIDRS", "localhost", "not a range"},
		{"ERRAND_WEBHOOK_RETRY_SCHEDULE", "5s,soon", "not a duration"},
		{"ERRAND_WEBHOOK_RETRY_SCHEDULE", "5s,0s", "must be above 0"},
		{"ERRAND_WEBHOOK_RETRY_SCHEDULE", strings.Repeat("1s,", 50) + "1s", "at most 50"},
		{"ERRAND_WEBHOOK_DISABLE_AFTER", "0d", "above 0"},
		{"ERRAND_WEBHOOK_DISABLE_AFTER", "five days", "not a duration"},
		{"ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY", "0", "from 1 to 10000"},
		{"ERRAND_WEBHOOK_TIMEOUT", "5m", "at most 1m30s"},
		{"ERRAND_WEBHOOK_CONNECT_TIMEOUT", "-1s", "above 0"},
		{"ERRAND_WEBHOOK_HELD_BACK_WAIT", "2m", "at most 1m0s"},
	}
	for _, tc := range cases {
		err := checks[tc.name](tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: %v, want an error saying %q", tc.name, tc.value, err, tc.want)
		}
	}
	for name, ok := range map[string]string{
		"ERRAND_WEBHOOK_RETRY_SCHEDULE": "10ms, 20ms,1d", "ERRAND_WEBHOOK_DISABLE_AFTER": "36h",
		"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8,::1/128",
	} {
		if err := checks[name](ok); err != nil {
			t.Errorf("%s=%q: %v", name, ok, err)
		}
	}
}

// Retry waits follow the schedule within ±10% (the last entry beyond it),
// and held-back waits double up to 30 times the first.
func TestWaits(t *testing.T) {
	d := &deliverer{cfg: config{schedule: []time.Duration{time.Second, time.Minute}, heldBackWait: time.Second}}
	for _, r := range []float64{0, 1} {
		d.jitter = func() float64 { return r }
		lo, hi := r == 0, r == 1
		for attempt, base := range map[int]time.Duration{1: time.Second, 2: time.Minute, 5: time.Minute} {
			got := d.retryWait(attempt)
			if lo && got != base*9/10 || hi && got != base*11/10 {
				t.Errorf("jitter %v: wait after attempt %d is %s (schedule %s)", r, attempt, got, base)
			}
		}
	}
	d.jitter = func() float64 { return 0.5 }
	for snoozes, want := range map[int]time.Duration{0: time.Second, 1: 2 * time.Second, 4: 16 * time.Second, 5: 30 * time.Second, 40: 30 * time.Second} {
		if got := d.heldBackWait(snoozes); got != want {
			t.Errorf("held back after %d snoozes: %s, want %s", snoozes, got, want)
		}
	}
}
