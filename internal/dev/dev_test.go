package dev_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
	"github.com/errand-dev/errand/jobs"
)

// `errand dev` with DATABASE_URL unset: its own PostgreSQL, migrated and
// seeded, a health URL and a psql line that work, and data that survives a
// restart.
func TestDevRunsOnAPrivatePostgreSQLAndKeepsData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL twice")
	}
	base, err := os.MkdirTemp("", "errand-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // PostgreSQL may run as another user
		t.Fatal(err)
	}
	env := map[string]string{"ERRAND_DEV_DIR": filepath.Join(base, "pg"), "ERRAND_HTTP_ADDR": "127.0.0.1:0", "ERRAND_LOG_FORMAT": "json"} // the port printed on each run

	health := regexp.MustCompile(`health: +(http://127\.0\.0\.1:\d+/healthz)`)
	dbLine := regexp.MustCompile(`database: +(postgres://\S+)`)
	wsLine := regexp.MustCompile(`workspace: demo \(([0-9a-f-]{36})\)`)

	runDev := func(work func(dbURL, ws string)) {
		ctx, cancel := context.WithCancel(context.Background())
		out := &errandtest.Buffer{}
		done := make(chan error, 1)
		go func() { done <- errand.Main(ctx, []string{"dev"}, errandtest.Env(env), out, out) }()
		deadline := time.Now().Add(90 * time.Second)
		for !health.MatchString(out.String()) {
			select {
			case err := <-done:
				t.Fatalf("dev exited: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("dev printed no health URL within 90s:\n%s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		resp, err := http.Get(health.FindStringSubmatch(out.String())[1])
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("health URL: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		work(dbLine.FindStringSubmatch(out.String())[1], wsLine.FindStringSubmatch(out.String())[1])
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("dev stopped with %v\n%s", err, out.String())
		}
	}

	var firstID int64
	runDev(func(dbURL, ws string) {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{}') RETURNING id`, ws).Scan(&firstID); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var status string
			if err := conn.QueryRow(context.Background(), `SELECT status FROM errand.jobs WHERE id = $1`, firstID).Scan(&status); err != nil {
				t.Fatal(err)
			}
			if status == "completed" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ping status %s after 30s", status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	runDev(func(dbURL, ws string) {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var status string
		if err := conn.QueryRow(context.Background(), `SELECT status FROM errand.jobs WHERE id = $1`, firstID).Scan(&status); err != nil {
			t.Fatalf("job from the first run is gone after a restart: %v", err)
		}
		var workspaces int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM errand.workspaces WHERE slug = 'demo'`).Scan(&workspaces); err != nil || workspaces != 1 {
			t.Errorf("demo workspaces after restart: %d %v", workspaces, err)
		}
	})
}

// teamKind is a team's kind with a development default of its own, as
// errand's kinds have theirs; sandbox receives what its setup read.
func teamKind(sandbox chan<- string) jobs.Kind {
	return jobs.Define("team.report", jobs.QueueDefault, func(context.Context, *jobs.Job, struct{}) error { return nil },
		jobs.WithEnv(jobs.EnvVar{Name: "TEAM_REPORT_SANDBOX", Default: "false", Help: "send reports to the sandbox",
			Dev: "true", DevNote: "team reports go to the sandbox"}),
		jobs.WithSetup(func(_ context.Context, s *jobs.Setup) error {
			sandbox <- s.Env.Get("TEAM_REPORT_SANDBOX")
			return nil
		}))
}

// runDevUntilReady runs `errand dev` on a database of the test's own with
// env and the team's kind until it prints its health URL, then stops it,
// and returns what it printed and what the team's kind read.
func runDevUntilReady(t *testing.T, env map[string]string) (out, sandbox string) {
	t.Helper()
	env["DATABASE_URL"] = errandtest.NewDatabase(t)
	env["ERRAND_HTTP_ADDR"] = "127.0.0.1:0"
	env["ERRAND_LOG_FORMAT"] = "json"
	read := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	buf := &errandtest.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- errand.Main(ctx, []string{"dev"}, errandtest.Env(env), buf, buf, errand.WithKinds(teamKind(read)))
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(buf.String(), "health:") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("dev exited: %v\n%s", err, buf.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev printed no health URL within 60s:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dev stopped with %v\n%s", err, buf.String())
	}
	select {
	case sandbox = <-read:
	default:
		t.Fatalf("dev was ready and the team's kind was never set up:\n%s", buf.String())
	}
	return buf.String(), sandbox
}

// allowedCIDRs is what the webhook kind published, as it read
// ERRAND_WEBHOOK_ALLOW_CIDRS.
func allowedCIDRs(t *testing.T, dbURL string) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(context.Background(), `SELECT value FROM errand.settings WHERE name = 'webhook_allow_cidrs'`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Every kind's development default, errand's and a team's alike, is set
// when its variable is unset, and its note printed: webhooks may reach
// loopback, the team's kind runs in its sandbox, and emails are captured
// (without capture or RESEND_API_KEY the email kind refuses to start, and
// dev with it).
func TestDevSetsEachKindsDevDefaultsWhenUnset(t *testing.T) {
	env := map[string]string{}
	out, sandbox := runDevUntilReady(t, env)
	for _, want := range []string{
		"errand dev: webhooks may reach loopback addresses, which production refuses (ERRAND_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8,::1/128)\n",
		"errand dev: team reports go to the sandbox (TEAM_REPORT_SANDBOX=true)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dev did not print %q:\n%s", want, out)
		}
	}
	if got := allowedCIDRs(t, env["DATABASE_URL"]); got != "127.0.0.0/8,::1/128" {
		t.Errorf("the webhook kind read ERRAND_WEBHOOK_ALLOW_CIDRS=%q, want loopback", got)
	}
	if sandbox != "true" {
		t.Errorf("the team's kind read TEAM_REPORT_SANDBOX=%q, want its dev default true", sandbox)
	}
}

// What the developer set is left alone, and said nothing about; a
// RESEND_API_KEY keeps capture off (with capture on as well, the email
// kind would refuse to start).
func TestDevLeavesWhatIsSetAlone(t *testing.T) {
	env := map[string]string{
		"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
		"TEAM_REPORT_SANDBOX":        "false",
		"RESEND_API_KEY":             "re_test",
		"ERRAND_EMAIL_FROM":          "Acme <notifications@acme.test>",
	}
	out, sandbox := runDevUntilReady(t, env)
	for _, notWant := range []string{"ERRAND_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8", "TEAM_REPORT_SANDBOX=true", "ERRAND_EMAIL_CAPTURE=true"} {
		if strings.Contains(out, notWant) {
			t.Errorf("dev printed %q though the developer set the variable:\n%s", notWant, out)
		}
	}
	if got := allowedCIDRs(t, env["DATABASE_URL"]); got != "127.0.0.1/32" {
		t.Errorf("the webhook kind read ERRAND_WEBHOOK_ALLOW_CIDRS=%q, want the developer's 127.0.0.1/32", got)
	}
	if sandbox != "false" {
		t.Errorf("the team's kind read TEAM_REPORT_SANDBOX=%q, want the developer's false", sandbox)
	}
}
