package digest

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/errand-dev/errand/jobs"
)

// config is the kind's configuration, from the environment.
type config struct {
	// backfill: a digest time that passed more than this long before the
	// tick (every replica was down) is not sent; its notifications go with
	// the next digest.
	backfill time.Duration
	// maxItems is how many notifications one email lists (all are marked).
	maxItems int
}

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "ERRAND_DIGEST_TICK", Default: "5m", Help: "how often the leader looks for users whose digest time has passed (the `digests` schedule; ERRAND_SCHEDULES overrides it)",
			Check: func(v string) error { return atLeast(v, time.Minute) }},
		{Name: "ERRAND_DIGEST_BACKFILL", Default: "24h", Help: "a digest time missed while every replica was down is sent once when one comes back if it passed at most this long ago; older ones roll into the next digest. At least the time between two ticks (ERRAND_DIGEST_TICK, or the digests entry of ERRAND_SCHEDULES): a tick finds a digest time up to one tick after it passed; never under 1m, the shortest tick",
			Check: func(v string) error { return atLeast(v, time.Minute) }},
		{Name: "ERRAND_DIGEST_MAX_ITEMS", Default: "50", Help: "notifications listed in one digest email (the rest are counted, and all are marked digested)",
			Check: func(v string) error {
				if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
					return errors.New("want a number from 1 to 1000")
				}
				return nil
			}},
	}
}

func loadConfig(env jobs.Env) (config, error) {
	var c config
	var err1, err2 error
	c.backfill, err1 = time.ParseDuration(env.Get("ERRAND_DIGEST_BACKFILL"))
	c.maxItems, err2 = strconv.Atoi(env.Get("ERRAND_DIGEST_MAX_ITEMS"))
	// A backfill shorter than the time between two ticks would drop
	// on-time digests: the cron table refuses that at start (the digests
	// entry's MaxGapEnv), against the expression in effect, ERRAND_SCHEDULES'
	// override included, not against ERRAND_DIGEST_TICK alone.
	return c, errors.Join(err1, err2)
}

func atLeast(v string, least time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 5m or 24h", v)
	}
	if d < least {
		return fmt.Errorf("want at least %s", least)
	}
	return nil
}
