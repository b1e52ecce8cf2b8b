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
// refuses to start and says what to set.
func TestRunRefusesABackfillShorterThanTheTick(t *testing.T) {
	url, _ := errandtest.MigratedDB(t)
	cases := map[string]struct {
		env  map[string]string
		want []string
	}{
		"a backfill of 0, meant as never backfill": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "0"},
			want: []string{"ERRAND_DIGEST_BACKFILL=0 is shorter than ERRAND_DIGEST_TICK=5m", "at least 5m"},
		},
		"a backfill of a minute with the default tick": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "1m"},
			want: []string{"ERRAND_DIGEST_BACKFILL=1m is shorter than ERRAND_DIGEST_TICK=5m"},
		},
		"an ERRAND_SCHEDULES override that ticks further apart than the backfill": {
			env:  map[string]string{"ERRAND_SCHEDULES": "digests=0 8 * * *", "ERRAND_DIGEST_BACKFILL": "12h"},
			want: []string{`ERRAND_SCHEDULES entry "digests=0 8 * * *": its times are up to 24h0m0s apart`, "set ERRAND_DIGEST_BACKFILL to at least 24h0m0s"},
		},
		"a tick made longer than the backfill": {
			env:  map[string]string{"ERRAND_DIGEST_BACKFILL": "30m", "ERRAND_DIGEST_TICK": "1h"},
			want: []string{"ERRAND_DIGEST_BACKFILL=30m is shorter than ERRAND_DIGEST_TICK=1h", "at least 1h"},
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
