package config

import (
	"context"
	"strings"
	"testing"

	"github.com/errand-dev/errand/jobs"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigQueueErrors(t *testing.T) {
	cases := map[string]string{
		"a queue that does not exist":  "bogus=3",
		"a negative worker count":      "email=-1",
		"a pair without =":             "email",
		"a count that is not a number": "email=many",
		"no workers in any queue":      "email=0,webhooks=0,documents=0,reports=0,default=0",
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(map[string]string{"ERRAND_QUEUES": v}), nil)
			if err == nil || !strings.Contains(err.Error(), "ERRAND_QUEUES") {
				t.Errorf("ERRAND_QUEUES=%q: got %v", v, err)
			}
		})
	}
	cfg, err := Load(env(map[string]string{"ERRAND_QUEUES": "email=3"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queues["email"] != 3 || cfg.Queues["default"] != 50 {
		t.Errorf("queues %v: want email=3 and the other defaults kept", cfg.Queues)
	}
}

// A kind's own queue (jobs.WithQueueWorkers) is a queue like errand's:
// started with its default, set or left to other replicas by
// ERRAND_QUEUES, listed by help; a misspelling of it is refused.
func TestConfigTakesAKindsOwnQueue(t *testing.T) {
	noop := func(context.Context, *jobs.Job, struct{}) error { return nil }
	kinds := []jobs.Kind{jobs.Define("report.export", "report_exports", noop, jobs.WithQueueWorkers(4))}
	cfg, err := Load(env(nil), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queues["report_exports"] != 4 || cfg.Queues["default"] != 50 {
		t.Errorf("queues %v: want report_exports=4 beside errand's defaults", cfg.Queues)
	}
	cfg, err = Load(env(map[string]string{"ERRAND_QUEUES": "report_exports=0,email=1"}), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := cfg.Queues["report_exports"]; !ok || n != 0 || cfg.Queues["email"] != 1 {
		t.Errorf("queues %v: want report_exports=0 (left to other replicas) and email=1", cfg.Queues)
	}
	_, err = Load(env(map[string]string{"ERRAND_QUEUES": "report_export=2"}), kinds)
	if want := `ERRAND_QUEUES="report_export=2": unknown queue "report_export" (queues: email, webhooks, documents, reports, default, report_exports)`; err == nil || err.Error() != want {
		t.Errorf("a misspelt queue of a kind's own: got %v, want %s", err, want)
	}
	// Without the kind, its queue is unknown.
	if _, err := Load(env(map[string]string{"ERRAND_QUEUES": "report_exports=2"}), nil); err == nil || !strings.Contains(err.Error(), `unknown queue "report_exports"`) {
		t.Errorf("a kind's queue named without the kind: got %v", err)
	}
	help := Help(kinds)
	if !strings.Contains(help, "default email=20,webhooks=200,documents=8,reports=2,default=50,report_exports=4") ||
		!strings.Contains(help, "(queues: email, webhooks, documents, reports, default, report_exports)") {
		t.Errorf("help does not list the kind's queue:\n%s", help)
	}
}

func TestRetentionErrors(t *testing.T) {
	cases := []varError{
		{"a completed retention that is not a duration", "ERRAND_RETAIN_COMPLETED", "1 day", "want a duration"},
		{"a completed retention under ten minutes", "ERRAND_RETAIN_COMPLETED", "5m", "at least 10m0s"},
		{"a negative failed retention", "ERRAND_RETAIN_FAILED", "-1h", "at least 10m0s"},
		{"a log retention in days", "ERRAND_RETAIN_LOGS", "30d", "want a duration"},
		{"a log retention under an hour", "ERRAND_RETAIN_LOGS", "10m", "at least 1h0m0s"},
	}
	assertVarErrors(t, cases)
	cfg, err := Load(env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RetainCompleted.Hours() != 24 || cfg.RetainFailed.Hours() != 168 || cfg.RetainLogs.Hours() != 720 {
		t.Errorf("defaults %s / %s / %s, want 24h / 168h / 720h", cfg.RetainCompleted, cfg.RetainFailed, cfg.RetainLogs)
	}
}

func TestFairnessErrors(t *testing.T) {
	cases := []varError{
		{"fairness neither on nor off", "ERRAND_FAIRNESS", "yes", "want on or off"},
		{"a negative workspace concurrency", "ERRAND_WORKSPACE_CONCURRENCY", "-1", "0 or more"},
		{"a workspace concurrency that is not a number", "ERRAND_WORKSPACE_CONCURRENCY", "ten", "0 or more"},
		{"a workspace concurrency too large for the fetch", "ERRAND_WORKSPACE_CONCURRENCY", "3000000000", "at most 2147483647"},
		{"more database connections than PostgreSQL allows", "ERRAND_DB_MAX_CONNS", "300000", "4 to 10000"},
		{"a database pool size that wraps around", "ERRAND_DB_MAX_CONNS", "4294967300", "4 to 10000"},
		{"a largest args size too large for an integer", "ERRAND_MAX_ARGS_BYTES", "3000000000", "at most 2147483647"},
	}
	assertVarErrors(t, cases)
	cfg, err := Load(env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Fairness || cfg.WorkspaceCap != 0 {
		t.Errorf("defaults fairness %v, workspace concurrency %d, want on and 0 (no cap)", cfg.Fairness, cfg.WorkspaceCap)
	}
	cfg, err = Load(env(map[string]string{"ERRAND_FAIRNESS": "off", "ERRAND_WORKSPACE_CONCURRENCY": "5"}), nil)
	if err != nil || cfg.Fairness || cfg.WorkspaceCap != 5 {
		t.Errorf("off and 5: got %v, %d (%v)", cfg.Fairness, cfg.WorkspaceCap, err)
	}
}

// varError is a variable set to a bad value and what the error must say.
type varError struct{ name, variable, value, want string }

// assertVarErrors loads each bad value alone and wants an error naming the
// variable and saying want.
func assertVarErrors(t *testing.T, cases []varError) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(map[string]string{tc.variable: tc.value}), nil)
			if err == nil || !strings.Contains(err.Error(), tc.variable) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s=%q: got %v, want an error naming it and saying %q", tc.variable, tc.value, err, tc.want)
			}
		})
	}
}

// A kind's variable that cannot be read as declared refuses the start,
// naming the kind and the variable.
func TestKindVariableConflicts(t *testing.T) {
	noop := func(context.Context, *jobs.Job, struct{}) error { return nil }
	withVar := func(kind, name, def string) jobs.Kind {
		return jobs.Define(kind, jobs.QueueDefault, noop, jobs.WithEnv(jobs.EnvVar{Name: name, Default: def}))
	}
	cases := map[string]struct {
		kinds []jobs.Kind
		want  string
	}{
		"a kind declaring errand's own variable": {[]jobs.Kind{withVar("report.export", "DATABASE_URL", "x")},
			"kind report.export: declares DATABASE_URL, which is errand's own variable"},
		"two kinds sharing a variable with different defaults": {[]jobs.Kind{withVar("a.one", "SHARED_KEY", "1"), withVar("a.two", "SHARED_KEY", "2")},
			`kind a.two: declares SHARED_KEY with default "2", but kind a.one declares it with default "1"`},
		"two kinds sharing a variable with different dev defaults": {[]jobs.Kind{withVar("a.one", "SHARED_KEY", "1"),
			jobs.Define("a.two", jobs.QueueDefault, noop, jobs.WithEnv(jobs.EnvVar{Name: "SHARED_KEY", Default: "1", Dev: "2"}))},
			`kind a.two: declares SHARED_KEY with dev default "2", but kind a.one declares it with dev default ""`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(nil), tc.kinds)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// Two kinds may share one (an API key) with the same default.
	if _, err := Load(env(nil), []jobs.Kind{withVar("a.one", "SHARED_KEY", "1"), withVar("a.two", "SHARED_KEY", "1")}); err != nil {
		t.Errorf("two kinds sharing a variable with one default: %v", err)
	}
}

// Help says what is served on ERRAND_HTTP_ADDR: it said /healthz and
// /readyz only, and an operator opening the address to a scraper would not
// know the dashboard and the kinds' pages are there too.
func TestHelpNamesEverythingServedOnTheHTTPAddress(t *testing.T) {
	help := Help(nil)
	_, after, _ := strings.Cut(help, "  ERRAND_HTTP_ADDR ")
	lines := strings.SplitN(after, "\n", 3) // its default, then what it is
	desc := strings.Join(lines[:min(2, len(lines))], "\n")
	for _, want := range []string{"/healthz", "/readyz", "/metrics", "/ui/", "the kinds' pages"} {
		if !strings.Contains(desc, want) {
			t.Errorf("help's ERRAND_HTTP_ADDR does not name %s:\n%s", want, desc)
		}
	}
}
