package bench_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// These check that errand bench works and reports in the promised format;
// they never judge the numbers, which depend on the machine.

func benchRun(t *testing.T, url string, args ...string) []string {
	t.Helper()
	out := &errandtest.Buffer{}
	env := errandtest.Env(map[string]string{"DATABASE_URL": url, "ERRAND_LOG_FORMAT": "json"})
	err := errand.Main(context.Background(), append([]string{"bench"}, args...), env, out, out)
	if err != nil {
		t.Fatalf("errand bench %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

// benchResult checks that the last line matches re and returns its submatches as
// numbers, each of which must be positive.
func benchResult(t *testing.T, lines []string, re string) []float64 {
	t.Helper()
	last := lines[len(lines)-1]
	m := regexp.MustCompile(re).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line %q does not match %s\noutput:\n%s", last, re, strings.Join(lines, "\n"))
	}
	var nums []float64
	for _, s := range m[1:] {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 {
			t.Errorf("last line %q: %q is not a positive number", last, s)
		}
		nums = append(nums, f)
	}
	return nums
}

func benchHasLine(t *testing.T, lines []string, want string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, want) {
			return
		}
	}
	t.Errorf("no line contains %q:\n%s", want, strings.Join(lines, "\n"))
}

// benchAssertCleanedUp checks the bench left no jobs and no workspace behind.
func benchAssertCleanedUp(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var jobs, workspaces int
	err := pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM errand.river_job),
		       (SELECT count(*) FROM errand.workspaces WHERE slug LIKE 'bench-%')`).Scan(&jobs, &workspaces)
	if err != nil {
		t.Fatal(err)
	}
	if jobs != 0 || workspaces != 0 {
		t.Errorf("left behind %d jobs and %d bench workspaces", jobs, workspaces)
	}
}

const benchNumber = `(\d+(?:\.\d+)?)`

// benchRatio is a ratio that may round to 0.00: behind a flood of 1 ms
// pings the small workspaces may wait less than with nothing running (the
// producer is fetching already), so their wait ratio is not checked for
// being positive.
const benchRatio = `\d+\.\d+`

func TestBenchThroughputWorksEveryJobAndCleansUp(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	profile := filepath.Join(t.TempDir(), "cpu.pprof")
	lines := benchRun(t, url, "throughput", "--jobs", "2000", "--workers", "200", "--cpuprofile", profile)
	// A profile is gzip-compressed protobuf (go tool pprof reads it).
	if b, err := os.ReadFile(profile); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("--cpuprofile %s: no gzip-compressed profile written (err %v, %d bytes)", profile, err, len(b))
	}
	benchResult(t, lines, `^RESULT mode=throughput jobs=2000 workspaces=1 fairness=on workspace_concurrency=0 jobs_per_s=`+benchNumber+` insert_jobs_per_s=`+benchNumber+` max_rss_mb=`+benchNumber+`$`)
	benchHasLine(t, lines, "completed 2000/2000 jobs of 1 workspaces")
	benchAssertCleanedUp(t, pool)
}

func TestBenchThroughputSpreadOverWorkspacesWorksEveryJobAndCleansUp(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "throughput", "--jobs", "2000", "--workers", "200", "--workspaces", "7")
	benchResult(t, lines, `^RESULT mode=throughput jobs=2000 workspaces=7 fairness=on workspace_concurrency=0 jobs_per_s=`+benchNumber+` insert_jobs_per_s=`+benchNumber+` max_rss_mb=`+benchNumber+`$`)
	benchHasLine(t, lines, "completed 2000/2000 jobs of 7 workspaces")
	benchAssertCleanedUp(t, pool)
}

func TestBenchThroughputBaselineWorksEveryJobAndCleansUp(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "throughput", "--jobs", "2000", "--workers", "200", "--baseline")
	benchResult(t, lines, `^RESULT mode=throughput-baseline jobs=2000 workspaces=1 fairness=off workspace_concurrency=0 jobs_per_s=`+benchNumber+` insert_jobs_per_s=`+benchNumber+` max_rss_mb=`+benchNumber+`$`)
	benchHasLine(t, lines, "completed 2000/2000 jobs")
	benchAssertCleanedUp(t, pool)
}

func TestBenchLatencyWithBackgroundLoad(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "latency", "--samples", "30", "--background-rps", "50", "--gap", "2ms")
	p := benchResult(t, lines, `^RESULT mode=latency samples=30 background_rps=50 p50_ms=`+benchNumber+` p95_ms=`+benchNumber+` p99_ms=`+benchNumber+` max_ms=`+benchNumber+`$`)
	if len(p) == 4 && !(p[0] <= p[1] && p[1] <= p[2] && p[2] <= p[3]) {
		t.Errorf("percentiles out of order: %v", p)
	}
	benchHasLine(t, lines, "background load: ")
	benchHasLine(t, lines, "2ms idle between samples")
	benchAssertCleanedUp(t, pool)
}

func TestBenchEnqueueSingleRowsAgainstTheBaseline(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "enqueue", "--clients", "2", "--duration", "300ms", "--rounds", "2", "--baseline")
	benchResult(t, lines, `^RESULT mode=enqueue clients=2 rows_per_sec=`+benchNumber+` river_rows_per_sec=`+benchNumber+` ratio=`+benchNumber+`$`)
	benchHasLine(t, lines, "round 2: river")
	benchAssertCleanedUp(t, pool)
}

func TestBenchEnqueueBulk(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "enqueue", "--bulk", "500", "--rounds", "1", "--baseline")
	benchResult(t, lines, `^RESULT mode=enqueue bulk=500 rows_per_sec=`+benchNumber+` river_rows_per_sec=`+benchNumber+` ratio=`+benchNumber+`$`)
	benchAssertCleanedUp(t, pool)
}

func TestBenchEnqueueMany(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "enqueue", "--bulk", "500", "--via", "many", "--rounds", "1", "--baseline")
	benchResult(t, lines, `^RESULT mode=enqueue bulk=500 via=many rows_per_sec=`+benchNumber+` river_rows_per_sec=`+benchNumber+` ratio=`+benchNumber+`$`)
	benchAssertCleanedUp(t, pool)
}

func TestBenchRefusesABadCommandLine(t *testing.T) {
	cases := map[string][]string{
		"no mode":                      {},
		"an unknown mode":              {"thruput"},
		"zero jobs":                    {"throughput", "--jobs", "0"},
		"jobs that are not a number":   {"throughput", "--jobs", "abc"},
		"negative jobs":                {"throughput", "--jobs", "-5"},
		"zero workers":                 {"throughput", "--workers", "0"},
		"zero workspaces":              {"throughput", "--workspaces", "0"},
		"an unknown flag":              {"throughput", "--jbos", "10"},
		"a stray argument":             {"throughput", "--jobs", "10", "extra"},
		"zero samples":                 {"latency", "--samples", "0"},
		"a negative background rate":   {"latency", "--background-rps", "-1"},
		"a negative gap":               {"latency", "--gap", "-5ms"},
		"a gap that is not a duration": {"latency", "--gap", "5"},
		"a throughput flag in latency": {"latency", "--jobs", "10"},
		"zero enqueue clients":         {"enqueue", "--clients", "0"},
		"no flood":                     {"noisy", "--flood", "0"},
		"no small workspaces":          {"noisy", "--small", "0"},
		"a negative ping sleep":        {"noisy", "--sleep-ms", "-1"},
		"a negative flood sleep":       {"noisy", "--flood-sleep-ms", "-2"},
		"a negative bulk size":         {"enqueue", "--bulk", "-1"},
		"an unknown bulk path":         {"enqueue", "--bulk", "10", "--via", "copy"},
		"enqueue_many without --bulk":  {"enqueue", "--via", "many"},
		"no enqueue duration":          {"enqueue", "--duration", "0s"},
		"zero enqueue rounds":          {"enqueue", "--rounds", "0"},
		"a CPU profile in a directory that does not exist": {"throughput", "--cpuprofile", "/nonexistent-errand-dir/cpu.pprof"},
	}
	// The command line is checked before anything connects.
	env := errandtest.Env(map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"})
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			out := &errandtest.Buffer{}
			err := errand.Main(context.Background(), append([]string{"bench"}, args...), env, out, out)
			if !errors.Is(err, errand.ErrUsage) {
				t.Errorf("errand bench %s: got %v, want a usage error\n%s", strings.Join(args, " "), err, out.String())
			}
		})
	}
}

func TestBenchNoisy(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "noisy", "--flood", "300", "--small", "3", "--each", "4", "--sleep-ms", "1")
	benchResult(t, lines, `^RESULT mode=noisy flood=300 small=3 each=4 sleep_ms=1 small_p95_ms_idle=`+benchNumber+` small_p95_ms_flooded=`+benchNumber+` wait_ratio=`+benchRatio+` flood_jobs_per_s=`+benchNumber+` single_tenant_jobs_per_s=`+benchNumber+` flood_ratio=`+benchNumber+`$`)
	benchHasLine(t, lines, "flood alone: 300 pings")
	benchAssertCleanedUp(t, pool)
}

func TestBenchNoisyWithASlowFlood(t *testing.T) {
	t.Parallel()
	url, pool := errandtest.MigratedDB(t)
	lines := benchRun(t, url, "noisy", "--flood", "100", "--small", "2", "--each", "4", "--sleep-ms", "1", "--flood-sleep-ms", "5")
	benchResult(t, lines, `^RESULT mode=noisy flood=100 small=2 each=4 sleep_ms=1 flood_sleep_ms=5 small_p95_ms_idle=`+benchNumber+` small_p95_ms_flooded=`+benchNumber+` wait_ratio=`+benchRatio+` flood_running_median=\d+\.\d flood_running_most=\d+ flood_jobs_per_s=`+benchNumber+` single_tenant_jobs_per_s=`+benchNumber+` flood_ratio=`+benchNumber+`$`)
	benchHasLine(t, lines, "running when a small workspace's ping started: median")
	benchAssertCleanedUp(t, pool)
}
