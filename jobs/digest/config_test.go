package digest_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// A backfill shorter than the tick would drop digests that are on time: a
// tick finds a digest time up to one tick after it passed. `errand run`
// refuses to start and says what to set. (The test daemons' schedules are
// off unless ERRAND_SCHEDULES says otherwise; with the digests off the
// backfill does not matter.)
func TestRunRefusesABackfillShorterThanTheTick(t *testing.T) {
	url, _ := errandtest.MigratedDB(t)
	cases := map[string]struct {
		env  map[string]string
		want []string
	}{
		// Under a minute, the shortest tick, is refused by the kind itself,
		// with the digests off too: `errand schedules tick --schedule
		// digests` still runs their tick by hand.
		"a backfill of 0, meant as never backfill": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "0", "ERRAND_SCHEDULES": "usage_reports=off"},
			want: []string{`ERRAND_DIGEST_BACKFILL="0": want at least 1m0s`},
		},
		"a backfill of 0 with the digests off": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "0", "ERRAND_SCHEDULES": "usage_reports=off;digests=off"},
			want: []string{`ERRAND_DIGEST_BACKFILL="0": want at least 1m0s`},
		},
		"a backfill of 4 minutes with the default tick": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "4m", "ERRAND_SCHEDULES": "usage_reports=off"},
			want: []string{`schedule "digests" (@every 5m): its times are up to 5m0s apart`, "set ERRAND_DIGEST_BACKFILL to at least 5m0s"},
		},
		"a backfill of a minute with the default tick": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "1m", "ERRAND_SCHEDULES": "usage_reports=off"},
			want: []string{"longer than ERRAND_DIGEST_BACKFILL=1m"},
		},
		"an ERRAND_SCHEDULES override that ticks further apart than the backfill": {
			env:  map[string]string{"ERRAND_SCHEDULES": "digests=0 8 * * *", "ERRAND_DIGEST_BACKFILL": "12h"},
			want: []string{`ERRAND_SCHEDULES entry "digests=0 8 * * *": its times are up to 24h0m0s apart`, "set ERRAND_DIGEST_BACKFILL to at least 24h0m0s"},
		},
		"a tick made longer than the backfill": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "30m", "ERRAND_DIGEST_TICK": "1h", "ERRAND_SCHEDULES": "usage_reports=off"},
			want: []string{`schedule "digests" (@every 1h): its times are up to 1h0m0s apart`, "set ERRAND_DIGEST_BACKFILL to at least 1h0m0s"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var started atomic.Bool
			var out bytes.Buffer
			err := errand.Main(ctx, []string{"run"}, errandtest.Env(errandtest.DaemonEnv(t, url, tc.env)), &out, &out,
				errand.WithReady(func(string) { started.Store(true); cancel() }))
			if started.Load() || err == nil {
				t.Fatalf("started (%v); want refused with %q", err, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The check is against the tick in effect: ERRAND_SCHEDULES' own digests
// expression, when it overrides ERRAND_DIGEST_TICK, decides (a one-minute
// tick and a five-minute backfill start, whatever ERRAND_DIGEST_TICK says).
func TestRunChecksTheBackfillAgainstTheTickInEffect(t *testing.T) {
	url, _ := errandtest.MigratedDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started atomic.Bool
	var out bytes.Buffer
	env := map[string]string{"ERRAND_DIGEST_TICK": "10m", "ERRAND_DIGEST_BACKFILL": "5m", "ERRAND_SCHEDULES": "digests=@every 1m;usage_reports=off"}
	err := errand.Main(ctx, []string{"run"}, errandtest.Env(errandtest.DaemonEnv(t, url, env)), &out, &out,
		errand.WithReady(func(string) { started.Store(true); cancel() }))
	if !started.Load() {
		t.Fatalf("a five-minute backfill with digests ticking every minute: refused (%v), want started", err)
	}
}
