package schedules_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/schedules"
	"github.com/errand-dev/errand/store"
)

// nightlyKind is a team's own kind with a recurring entry: every night at
// 03:00 UTC one ping per workspace, through the SQL contract, unique per
// workspace and night.
func nightlyKind() jobs.Kind {
	return jobs.Define("test.nightly", jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args struct{}) error { return nil },
		jobs.WithSchedule(jobs.Schedule{
			Name: "nightly",
			Spec: "0 3 * * *",
			Tick: func(ctx context.Context, tx pgx.Tx, at time.Time) (int, error) {
				n := 0
				err := store.ForEachWorkspace(ctx, tx, func(ws string) error {
					tag, err := tx.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args, idempotency_key) VALUES ($1, 'ping', '{}', $2)`,
						ws, "nightly/"+at.Format(time.DateOnly))
					n += int(tag.RowsAffected())
					return err
				})
				return n, err
			},
		}))
}

func load(env map[string]string) (*schedules.Table, error) {
	return schedules.Load(errandtest.Env(env), append(errand.Builtin(), nightlyKind()))
}

// Each bad ERRAND_SCHEDULES entry is refused at start, one line each,
// saying what is wrong.
func TestBadSchedulesEntriesAreRefused(t *testing.T) {
	cases := []struct{ name, value, want string }{
		{"an unknown schedule", "usage_report=0 8 * * MON", `unknown schedule "usage_report" (schedules: digests, usage_reports, nightly)`},
		{"no expression", "nightly", "want name=<cron expression> or name=off"},
		{"hour 24", "nightly=0 24 * * *", "above maximum (23)"},
		{"a schedule given twice", "nightly=0 4 * * *;nightly=off", `schedule "nightly" is given twice`},
		{"commas instead of semicolons", "nightly=0 4 * * *,digests=off", "failed to parse"},
		{"seconds", "digests=@every 30s", "at least @every 1m0s"},
		{"a wildcard with an expression", "*=0 4 * * *", "* takes only off"},
		{"the wildcard twice", "*=off;*=off", "* is given twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(map[string]string{schedules.EnvSchedules: tc.value})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ERRAND_SCHEDULES entry") {
				t.Errorf("ERRAND_SCHEDULES=%q: %v, want an error saying %q", tc.value, err, tc.want)
			}
		})
	}
	if _, err := load(map[string]string{schedules.EnvBackfill: "a day"}); err == nil || !strings.Contains(err.Error(), "ERRAND_SCHEDULE_BACKFILL") {
		t.Errorf("bad backfill: %v", err)
	}
	if _, err := load(map[string]string{"ERRAND_DIGEST_TICK": "10s"}); err == nil || !strings.Contains(err.Error(), "ERRAND_DIGEST_TICK") {
		t.Errorf("ERRAND_DIGEST_TICK=10s: %v", err)
	}
}

// The digests' tick sends only digest times that passed at most
// ERRAND_DIGEST_BACKFILL ago: an expression whose ticks are ever further
// apart would drop digests, and is refused at start with the gap it has and
// what to set. Ticks that close are accepted, daylight saving included.
func TestAScheduleFurtherApartThanItsKindAllowsIsRefused(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want []string // nil: accepted
	}{
		{"daily ticks with a half-day backfill",
			map[string]string{schedules.EnvSchedules: "digests=0 8 * * *", "ERRAND_DIGEST_BACKFILL": "12h"},
			[]string{`ERRAND_SCHEDULES entry "digests=0 8 * * *": its times are up to 24h0m0s apart`, "longer than ERRAND_DIGEST_BACKFILL=12h", "set ERRAND_DIGEST_BACKFILL to at least 24h0m0s"}},
		{"weekday ticks leave the weekend out",
			map[string]string{schedules.EnvSchedules: "digests=*/5 * * * MON-FRI"},
			[]string{"up to 48h5m0s apart (after 2027-01-01T23:55:00Z)", "longer than ERRAND_DIGEST_BACKFILL=24h"}},
		{"an every longer than the backfill",
			map[string]string{schedules.EnvSchedules: "digests=@every 2h", "ERRAND_DIGEST_BACKFILL": "90m"},
			[]string{"up to 2h0m0s apart", "ERRAND_DIGEST_BACKFILL=90m"}},
		{"local daily ticks lose an hour when the clocks go back",
			map[string]string{schedules.EnvSchedules: "digests=CRON_TZ=Europe/Berlin 0 8 * * *"},
			[]string{"up to 25h0m0s apart (after 2027-10-30T06:00:00Z)"}},
		{"the default tick", map[string]string{}, nil},
		{"daily ticks with the default backfill", map[string]string{schedules.EnvSchedules: "digests=0 8 * * *"}, nil},
		{"a gap that only January has, with a short backfill",
			map[string]string{schedules.EnvSchedules: "digests=* * * 2-12 *", "ERRAND_DIGEST_BACKFILL": "5m", "ERRAND_DIGEST_TICK": "1m"},
			[]string{"up to 744h1m0s apart (after 2026-12-31T23:59:00Z)"}},
		{"a gap that only December has, with a short backfill",
			map[string]string{schedules.EnvSchedules: "digests=* * * 1-11 *", "ERRAND_DIGEST_BACKFILL": "5m", "ERRAND_DIGEST_TICK": "1m"},
			nil}, // outside the 174 days sampled for a 5 minute backfill: documented
		{"a gap only a leap year has",
			map[string]string{schedules.EnvSchedules: "digests=0 0 30 * *", "ERRAND_DIGEST_BACKFILL": "1428h"},
			[]string{"up to 1440h0m0s apart (after 2028-01-30T00:00:00Z)"}},
		{"a day River's walk skips around Lord Howe's half-hour shift",
			map[string]string{schedules.EnvSchedules: "digests=CRON_TZ=Australia/Lord_Howe 0 0 * * *", "ERRAND_DIGEST_BACKFILL": "47h"},
			[]string{"up to 48h30m0s apart (after 2027-04-03T13:00:00Z)"}}, // robfig/cron's Next from 00:00 skips the next day
		{"a monthly tick with a backfill of two months", map[string]string{schedules.EnvSchedules: "digests=0 0 30 * *", "ERRAND_DIGEST_BACKFILL": "1440h"}, nil},
		{"digests off", map[string]string{schedules.EnvSchedules: "digests=off", "ERRAND_DIGEST_BACKFILL": "5m"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.env)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want refused saying %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestSchedulesOverridesAndOff(t *testing.T) {
	tb, err := load(map[string]string{schedules.EnvSchedules: "usage_reports=CRON_TZ=Europe/Berlin 0 9 * * FRI; digests=off\n", "ERRAND_DIGEST_TICK": "10m"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := tb.Lookup("digests")
	if !d.Off || d.Default != "@every 10m" || d.Next(time.Now(), 3) != nil {
		t.Errorf("digests %+v", d)
	}
	u, _ := tb.Lookup("usage_reports")
	next := u.Next(at("2026-11-25T12:00:00Z"), 2)
	if u.Spec != "CRON_TZ=Europe/Berlin 0 9 * * FRI" || u.Default != "0 8 * * MON" || !next[0].Equal(at("2026-11-27T08:00:00Z")) || !next[1].Equal(at("2026-12-04T08:00:00Z")) {
		t.Errorf("usage_reports %+v next %v", u, next)
	}
}

// "*=off" turns every entry off; a named entry beside it, before or after,
// keeps its own expression.
func TestWildcardTurnsEveryScheduleOff(t *testing.T) {
	for _, v := range []string{"*=off; nightly=0 4 * * *", "nightly=0 4 * * *;*=off"} {
		tb, err := load(map[string]string{schedules.EnvSchedules: v})
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		for _, e := range tb.Entries() {
			if wantOff := e.Name != "nightly"; e.Off != wantOff {
				t.Errorf("%q: %s off=%v, want %v", v, e.Name, e.Off, wantOff)
			}
		}
		if n, _ := tb.Lookup("nightly"); n.Spec != "0 4 * * *" {
			t.Errorf("%q: nightly %q, want 0 4 * * *", v, n.Spec)
		}
	}
}

// A daemon does not start with a bad entry, and says which and why.
func TestRunRefusesBadSchedules(t *testing.T) {
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"run"},
		errandtest.Env(map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "ERRAND_SCHEDULES": "digest=off"}), &out, &out)
	if err == nil || !strings.Contains(err.Error(), `ERRAND_SCHEDULES entry "digest=off": unknown schedule "digest"`) {
		t.Errorf("run with a bad entry: %v", err)
	}
}

// Every command refuses a bad entry, not only those that read the table,
// and reports it with the other bad values, one line each.
func TestEveryCommandRefusesBadSchedulesWithTheOtherBadValues(t *testing.T) {
	for _, args := range [][]string{{"jobs", "list"}, {"stats"}, {"workspaces", "list"}, {"migrate", "status"}, {"run"}} {
		var out bytes.Buffer
		err := errand.Main(context.Background(), args, errandtest.Env(map[string]string{
			"DATABASE_URL":     "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
			"ERRAND_SCHEDULES": "usage_report=0 8 * * MON",
			"ERRAND_QUEUES":    "bogus",
		}), &out, &out)
		if err == nil || !strings.Contains(err.Error(), `ERRAND_SCHEDULES entry "usage_report=0 8 * * MON": unknown schedule "usage_report"`) ||
			!strings.Contains(err.Error(), "ERRAND_QUEUES=") {
			t.Errorf("errand %s with a bad entry and a bad ERRAND_QUEUES: %v, want both reported", strings.Join(args, " "), err)
		}
	}
}

func TestListShowsNextThreeTimes(t *testing.T) {
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"schedules", "list", "--at", "2026-11-27T08:03:00+01:00"},
		errandtest.Env(map[string]string{"ERRAND_SCHEDULES": "digests=off"}), &out, &out, errand.WithKinds(nightlyKind()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"digests        digest.send            off (default @every 5m)  -",
		"usage_reports  usage_report.generate  0 8 * * MON              2026-11-30T08:00:00Z, 2026-12-07T08:00:00Z, 2026-12-14T08:00:00Z",
		"nightly        test.nightly           0 3 * * *                2026-11-28T03:00:00Z, 2026-11-29T03:00:00Z, 2026-11-30T03:00:00Z",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("list lacks %q:\n%s", want, out.String())
		}
	}
	err = errand.Main(context.Background(), []string{"schedules", "tick"}, errandtest.Env(nil), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "schedules tick needs --at") {
		t.Errorf("tick without --at: %v", err)
	}
	err = errand.Main(context.Background(), []string{"schedules", "tick", "--at", "tomorrow"}, errandtest.Env(nil), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "not an RFC 3339 time") {
		t.Errorf("tick --at tomorrow: %v", err)
	}
}

// --help (or -h) after schedules or one of its commands prints the usage
// and flags and succeeds, without a database; an unknown flag says where
// the flags are listed.
func TestSchedulesHelp(t *testing.T) {
	cases := []struct {
		args []string
		want []string
		not  string
	}{
		{[]string{"schedules", "--help"}, []string{"Usage: errand schedules COMMAND", "schedules list [--at T]", "schedules tick --at T"}, ""},
		{[]string{"schedules", "list", "--help"}, []string{"Usage: errand schedules list [flags]", "next three times", "-at string"}, "-future"},
		{[]string{"schedules", "tick", "-h"}, []string{"Usage: errand schedules tick [flags]", "(backfill)", "-at string", "-future", "-schedule string"}, "ERRAND_SCHEDULES"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		if err := errand.Main(context.Background(), tc.args, errandtest.Env(nil), &out, &out); err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v lacks %q:\n%s", tc.args, w, out.String())
			}
		}
		if tc.not != "" && strings.Contains(out.String(), tc.not) {
			t.Errorf("%v shows %q, not its own:\n%s", tc.args, tc.not, out.String())
		}
	}
	err := errand.Main(context.Background(), []string{"schedules", "list", "--bogus"}, errandtest.Env(nil), io.Discard, io.Discard)
	if !errors.Is(err, errand.ErrUsage) || !strings.Contains(err.Error(), "errand schedules list --help lists its flags") {
		t.Errorf("an unknown flag: %v", err)
	}
	err = errand.Main(context.Background(), []string{"schedules", "lsit", "--help"}, errandtest.Env(nil), io.Discard, io.Discard)
	if !errors.Is(err, errand.ErrUsage) || !strings.Contains(err.Error(), `unknown schedules command "lsit" (list, tick)`) {
		t.Errorf("--help after an unknown command: %v, want the command named unknown", err)
	}
}

// An interval variable its kind refuses is reported once, in the kind's
// words, not again by the table that reads it.
func TestABadScheduleIntervalIsReportedOnce(t *testing.T) {
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"stats"}, errandtest.Env(map[string]string{
		"DATABASE_URL":       "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
		"ERRAND_DIGEST_TICK": "10s",
	}), &out, &out)
	if err == nil || strings.Count(err.Error(), "10s") != 1 || !strings.Contains(err.Error(), `ERRAND_DIGEST_TICK="10s"`) {
		t.Errorf("errand stats with ERRAND_DIGEST_TICK=10s: %v, want it reported once", err)
	}
}
