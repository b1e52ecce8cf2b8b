package errand_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

func TestConfigReportsEveryBadValue(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":            "postgres://x",
		"ERRAND_QUEUES":           "email=0,bogus=3",
		"ERRAND_SHUTDOWN_TIMEOUT": "soon",
		"ERRAND_MAX_ARGS_BYTES":   "-5",
		"ERRAND_LOG_LEVEL":        "loud",
		"ERRAND_FETCH_COOLDOWN":   "0s",
	}
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"run"}, errandtest.Env(env), &out, &out)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, name := range []string{"ERRAND_QUEUES", "ERRAND_SHUTDOWN_TIMEOUT", "ERRAND_MAX_ARGS_BYTES", "ERRAND_LOG_LEVEL", "ERRAND_FETCH_COOLDOWN"} {
		if !strings.Contains(err.Error(), name+"=") {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestHelpListsEveryVariableAndUnknownCommandIsAUsageError(t *testing.T) {
	var out bytes.Buffer
	if err := errand.Main(context.Background(), []string{"help"}, errandtest.Env(nil), &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"DATABASE_URL", "ERRAND_HTTP_ADDR", "ERRAND_QUEUES", "ERRAND_SHUTDOWN_TIMEOUT", "ERRAND_MAX_ARGS_BYTES",
		"ERRAND_FETCH_COOLDOWN", "ERRAND_FETCH_POLL_INTERVAL", "ERRAND_POLL_ONLY", "ERRAND_DB_MAX_CONNS", "ERRAND_RETRY_BASE", "ERRAND_LOG_LEVEL", "ERRAND_LOG_FORMAT"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("help does not list %s", v)
		}
	}
	err := errand.Main(context.Background(), []string{"frobnicate"}, errandtest.Env(nil), &out, &out)
	if !errors.Is(err, errand.ErrUsage) {
		t.Errorf("unknown command: %v, want ErrUsage", err)
	}
}

// run and dev take their configuration from the environment: an argument
// is a mistake, refused before anything starts (`errand dev --help` started
// a PostgreSQL and the daemon with the defaults).
func TestRunAndDevRefuseArguments(t *testing.T) {
	for name, args := range map[string][]string{
		"dev asked for help":     {"dev", "--help"},
		"run given a flag":       {"run", "--port", "9000"},
		"dev given a stray word": {"dev", "now"},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := errand.Main(context.Background(), args, errandtest.Env(nil), &out, &out)
			if !errors.Is(err, errand.ErrUsage) || !strings.Contains(err.Error(), "takes no arguments") {
				t.Errorf("errand %s: %v, want a usage error saying it takes no arguments", strings.Join(args, " "), err)
			}
		})
	}
}

// migrate takes one optional word, status: anything else is a usage error
// before it connects (`errand migrate status extra` showed the status and
// exited 0).
// errand migrate --help (or -h) prints its usage and succeeds, without a
// database.
func TestMigrateHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out bytes.Buffer
		if err := errand.Main(context.Background(), []string{"migrate", arg}, errandtest.Env(nil), &out, &out); err != nil {
			t.Errorf("errand migrate %s: %v", arg, err)
		}
		if !strings.Contains(out.String(), "Usage: errand migrate [status]") || !strings.Contains(out.String(), "show applied and pending migrations") {
			t.Errorf("errand migrate %s printed:\n%s", arg, out.String())
		}
	}
}

func TestMigrateRefusesArgumentsItDoesNotTake(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"migrate given an unknown word", []string{"migrate", "foo"}, `errand migrate [status], got "foo"`},
		{"migrate given a flag", []string{"migrate", "--dry-run"}, `errand migrate [status], got "--dry-run"`},
		{"migrate status given a stray word", []string{"migrate", "status", "extra"}, `errand migrate status takes no arguments, got "extra"`},
		{"migrate status given a flag", []string{"migrate", "status", "--json"}, `errand migrate status takes no arguments, got "--json"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := errand.Main(context.Background(), tc.args, errandtest.Env(nil), &out, &out)
			if !errors.Is(err, errand.ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("errand %s: %v, want a usage error saying %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

// errand migrate publishes the args limit only when its environment sets
// it: the migration Job (DATABASE_URL alone) put the 1 MiB default over the
// replicas' larger limit, and INSERTs they would work were refused.
func TestMigrateKeepsTheReplicasArgsLimitUnlessItSetsOne(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ctx := context.Background()
	limit := func() string {
		t.Helper()
		var v string
		if err := pool.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'max_args_bytes'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := pool.Exec(ctx, `UPDATE errand.settings SET value = '5000000' WHERE name = 'max_args_bytes'`); err != nil {
		t.Fatal(err) // as a replica with ERRAND_MAX_ARGS_BYTES=5000000 publishes it
	}
	migrate := func(env map[string]string) {
		t.Helper()
		env["DATABASE_URL"] = url
		if err := errand.Main(ctx, []string{"migrate"}, errandtest.Env(env), io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	migrate(map[string]string{})
	if got := limit(); got != "5000000" {
		t.Errorf("after errand migrate without ERRAND_MAX_ARGS_BYTES: max_args_bytes %s, want the replicas' 5000000", got)
	}
	migrate(map[string]string{"ERRAND_MAX_ARGS_BYTES": "2000000"})
	if got := limit(); got != "2000000" {
		t.Errorf("after errand migrate with ERRAND_MAX_ARGS_BYTES=2000000: max_args_bytes %s", got)
	}
}

// A replica restarting with a smaller ERRAND_MAX_ARGS_BYTES (an older
// release's manifest during a rolling deploy) must not refuse INSERTs the
// others were published to accept: `errand run` only raises the limit, and
// `errand migrate` with ERRAND_MAX_ARGS_BYTES set is how it is lowered.
func TestAReplicaStartedWithASmallerArgsLimitDoesNotNarrowTheContract(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	ctx := context.Background()
	// 1.5 MiB of args: over 1 MiB, under 2 MiB.
	insert := func() error {
		_, err := pool.Exec(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args)
			VALUES ($1, 'ping', jsonb_build_object('pad', repeat('x', 1572864)))`, ws)
		return err
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_MAX_ARGS_BYTES": "2097152"})
	if err := insert(); err != nil {
		t.Fatalf("1.5 MiB of args with a replica's 2 MiB limit published: %v", err)
	}
	errandtest.StartDaemon(t, url, map[string]string{"ERRAND_MAX_ARGS_BYTES": "1048576"})
	if err := insert(); err != nil {
		t.Errorf("1.5 MiB of args after a replica with a 1 MiB limit started: %v, want accepted", err)
	}
	err := errand.Main(ctx, []string{"migrate"},
		errandtest.Env(map[string]string{"DATABASE_URL": url, "ERRAND_MAX_ARGS_BYTES": "1048576"}), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := insert(); err == nil || !strings.Contains(err.Error(), "over the limit of 1048576 bytes") {
		t.Errorf("1.5 MiB of args after errand migrate with ERRAND_MAX_ARGS_BYTES=1048576: %v, want refused", err)
	}
}
