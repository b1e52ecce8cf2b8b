package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/errand-dev/errand/jobs"
)

// config is the kinds' configuration, from the environment.
type config struct {
	// allowed may be dialled despite the refused ranges (development and
	// tests: a receiver on 127.0.0.1).
	allowed []netip.Prefix
	// schedule is the wait before each retry; a delivery has
	// len(schedule)+1 attempts.
	schedule       []time.Duration
	disableAfter   time.Duration
	concurrency    int
	connectTimeout time.Duration
	timeout        time.Duration
	// heldBackWait is how long a delivery held back by its endpoint's
	// concurrency cap waits in its replica (slotWaits), and its first
	// snooze after that; the snooze doubles each time, up to 30 times.
	heldBackWait time.Duration
}

const (
	defaultSchedule = "5s,5m,30m,2h,5h,10h,10h"
	// maxTimeout keeps a request inside the kind's per-attempt timeout
	// (deliverTimeout), which also has to cover the bookkeeping.
	maxTimeout = 90 * time.Second
)

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "ERRAND_WEBHOOK_ALLOW_CIDRS", Help: "address ranges webhooks may reach although they are private, loopback or reserved, comma-separated " +
			"(development and tests, e.g. 127.0.0.0/8,::1/128); empty in production",
			Check: func(v string) error { _, err := parseAllowed(v); return err },
			Dev:   "127.0.0.0/8,::1/128", DevNote: "webhooks may reach loopback addresses, which production refuses"},
		{Name: "ERRAND_WEBHOOK_RETRY_SCHEDULE", Default: defaultSchedule, Help: "waits before each retry of a webhook delivery (±10% jitter); a delivery has one attempt more than the list has entries",
			Check: func(v string) error { _, err := parseSchedule(v); return err }},
		{Name: "ERRAND_WEBHOOK_DISABLE_AFTER", Default: "5d", Help: "an endpoint failing without a single success for this long is disabled (e.g. 5d, 36h)",
			Check: func(v string) error { return positive(v) }},
		{Name: "ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY", Default: "10", Help: "webhook deliveries in flight per endpoint across all replicas",
			Check: func(v string) error {
				if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 10000 {
					return errors.New("want a number from 1 to 10000")
				}
				return nil
			}},
		{Name: "ERRAND_WEBHOOK_CONNECT_TIMEOUT", Default: "10s", Help: "how long a webhook delivery may take to connect (TCP and TLS)",
			Check: func(v string) error { return upTo(v, maxTimeout) }},
		{Name: "ERRAND_WEBHOOK_TIMEOUT", Default: "30s", Help: "how long one webhook request may take in all, the answer included",
			Check: func(v string) error { return upTo(v, maxTimeout) }},
		{Name: "ERRAND_WEBHOOK_HELD_BACK_WAIT", Default: "1s", Help: "how long a delivery held back by its endpoint's concurrency cap waits in its replica for a slot that replica hands over or gives back, then its first snooze (no attempt used; a slot the endpoint gives back wakes it); without a wake-up the snooze doubles each time, up to 30 times",
			Check: func(v string) error { return upTo(v, time.Minute) }},
	}
}

// loadConfig reads the (already checked) variables.
func loadConfig(env jobs.Env) (config, error) {
	var c config
	var err error
	var errs []error
	keep := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	c.allowed, err = parseAllowed(env.Get("ERRAND_WEBHOOK_ALLOW_CIDRS"))
	keep(err)
	c.schedule, err = parseSchedule(env.Get("ERRAND_WEBHOOK_RETRY_SCHEDULE"))
	keep(err)
	c.disableAfter, err = parseDuration(env.Get("ERRAND_WEBHOOK_DISABLE_AFTER"))
	keep(err)
	c.concurrency, err = strconv.Atoi(env.Get("ERRAND_WEBHOOK_ENDPOINT_CONCURRENCY"))
	keep(err)
	c.connectTimeout, err = parseDuration(env.Get("ERRAND_WEBHOOK_CONNECT_TIMEOUT"))
	keep(err)
	c.timeout, err = parseDuration(env.Get("ERRAND_WEBHOOK_TIMEOUT"))
	keep(err)
	c.heldBackWait, err = parseDuration(env.Get("ERRAND_WEBHOOK_HELD_BACK_WAIT"))
	keep(err)
	return c, errors.Join(errs...)
}

// maxAttempts is how many attempts a delivery has: one, and a retry for
// each entry of the schedule.
func (c config) maxAttempts() int { return len(c.schedule) + 1 }

// allowedText is ERRAND_WEBHOOK_ALLOW_CIDRS as published for the SQL
// contract's checks.
func (c config) allowedText() string {
	s := make([]string, len(c.allowed))
	for i, p := range c.allowed {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// parseDuration is time.ParseDuration plus whole days ("5d").
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("%q is not a duration such as 5d or 36h", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 5d, 36h or 10s", v)
	}
	return d, nil
}

func positive(v string) error {
	d, err := parseDuration(v)
	if err != nil {
		return err
	}
	if d <= 0 {
		return errors.New("want a duration above 0")
	}
	return nil
}

func upTo(v string, limit time.Duration) error {
	d, err := parseDuration(v)
	if err != nil {
		return err
	}
	if d <= 0 || d > limit {
		return fmt.Errorf("want a duration above 0 and at most %s", limit)
	}
	return nil
}

// parseSchedule reads a comma-separated list of waits, 1 to 50 of them.
func parseSchedule(v string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(v, ",") {
		d, err := parseDuration(f)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, fmt.Errorf("wait %q must be above 0", strings.TrimSpace(f))
		}
		out = append(out, d)
	}
	if len(out) > 50 {
		return nil, fmt.Errorf("%d retries, at most 50", len(out))
	}
	return out, nil
}
