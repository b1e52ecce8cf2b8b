package bench_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// errand bench scale with a small table: it loads, times every query, burns
// down twice and cleans up everything it made. The numbers are not judged.
func TestBenchScaleTimesEveryQueryAndCleansUp(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "scale", "--retained", "4000", "--workspaces", "20", "--jobs", "500", "--workers", "100", "--samples", "3")
	benchResult(t, lines, `^RESULT mode=scale retained=4000 workspaces=20 jobs=500 load_rows_per_s=`+benchNumber+
		` jobs_per_s_empty=`+benchNumber+` jobs_per_s_retained=`+benchNumber+` ratio=`+benchNumber+
		` slowest_query=[a-z_]+ slowest_p50_ms=`+benchNumber+` max_query_ms=`+benchNumber+`$`)
	benchHasLine(t, lines, "loaded 3996 completed, 4 failed and 2 pending jobs across 20 workspaces")
	for _, q := range []string{"ws_latest_big", "ws_failed_big", "failed_latest", "kind_failed", "due_count", "keda_startable", "pending_by_queue", "pending_by_workspace", "ws_pending_big", "ops_stats", "ops_workspaces"} {
		benchHasLine(t, lines, "query "+q+" ")
	}
	benchHasLine(t, lines, "burn-down beside 4000 retained jobs: 500 jobs")
	benchHasLine(t, lines, "cleaned up: deleted 4002 retained jobs and 20 workspaces")
	benchAssertCleanedUp(t, pool)
}

func TestBenchScaleRefusesABadCommandLine(t *testing.T) {
	cases := map[string][]string{
		"one retained job":               {"scale", "--retained", "1"},
		"one workspace":                  {"scale", "--workspaces", "1"},
		"more workspaces than jobs":      {"scale", "--retained", "10", "--workspaces", "11"},
		"zero burn-down jobs":            {"scale", "--jobs", "0"},
		"zero workers":                   {"scale", "--workers", "0"},
		"zero samples":                   {"scale", "--samples", "0"},
		"zero rounds":                    {"scale", "--rounds", "0"},
		"a throughput flag in scale":     {"scale", "--baseline"},
		"a stray argument":               {"scale", "extra"},
		"retained jobs that are letters": {"scale", "--retained", "many"},
		"no mode":                        {},
	}
	// The command line is checked before anything connects.
	env := errandtest.Env(map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"})
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			out := &errandtest.Buffer{}
			err := errand.Main(context.Background(), append([]string{"bench"}, args...), env, out, out)
			if !errors.Is(err, errand.ErrUsage) || strings.HasPrefix(err.Error(), "usage: usage") {
				t.Errorf("errand bench %s: got %v, want a usage error saying usage once\n%s", strings.Join(args, " "), err, out.String())
			}
		})
	}
}
