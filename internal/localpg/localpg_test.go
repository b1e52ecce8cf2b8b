package localpg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := findBinDir(context.Background(), ""); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
}

// traversableTempDir returns a temp dir the server user can traverse.
func traversableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postgres pid %d still alive after %s", pid, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEphemeral(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := context.Background()

	s, err := Start(ctx, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})
	if s.Port() == 0 {
		t.Fatal("port is 0")
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port())
	if got := s.URL("postgres"); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}

	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("ephemeral fsync = %q, %v; want off", fsync, err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "postgres" {
		t.Errorf("current_user = %q, %v", user, err)
	}
	conn.Close(ctx)

	pid := s.pid
	root := filepath.Dir(s.DataDir())
	stopped = true
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if processAlive(pid) {
		t.Errorf("postgres pid %d still alive after Stop", pid)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s not removed: %v", root, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestPersistent(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := context.Background()
	dataDir := filepath.Join(traversableTempDir(t), "nested", "pgdata")

	s, err := Start(ctx, Options{DataDir: dataDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Errorf("persistent fsync = %q, %v; want on", fsync, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	// A second server on the same data dir must be refused, naming the pid.
	if s2, err := Start(ctx, Options{DataDir: dataDir}); err == nil {
		s2.Stop()
		t.Fatal("second Start on a live data dir succeeded")
	} else if !strings.Contains(err.Error(), strconv.Itoa(s.pid)) {
		t.Errorf("error does not name pid %d: %v", s.pid, err)
	}

	pid := s.pid
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if processAlive(pid) {
		t.Fatalf("postgres pid %d still alive after Stop", pid)
	}
	if _, err := os.Stat(dataDir); err != nil {
		t.Fatalf("persistent data dir removed: %v", err)
	}

	// Simulate a stale lock file whose pid now belongs to an unrelated
	// process (pid 1), as after a container restart.
	if comm, _ := os.ReadFile("/proc/1/comm"); strings.TrimSpace(string(comm)) != "postgres" {
		if err := os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte("1\n"+dataDir+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	s, err = Start(ctx, Options{DataDir: dataDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "survives" {
		t.Fatalf("row after restart = %q, %v", v, err)
	}
	if _, err := os.Stat(s.LogPath()); err != nil {
		t.Errorf("log file: %v", err)
	}
}

func TestNotTraversable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only meaningful when running as root")
	}
	requireBinaries(t)
	t.Parallel()
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "data")
	_, err := Start(context.Background(), Options{DataDir: dataDir})
	var nt *NotTraversableError
	if !errors.As(err, &nt) {
		t.Fatalf("want NotTraversableError, got %v", err)
	}
	if !strings.Contains(err.Error(), "/var/tmp/errand-dev") {
		t.Errorf("error lacks suggestion: %v", err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir created despite error: %v", err)
	}
	t.Log(err)
}

func TestVersionMismatch(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dataDir := filepath.Join(traversableTempDir(t), "old")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	verFile := filepath.Join(dataDir, "PG_VERSION")
	if err := os.WriteFile(verFile, []byte("9.6\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{DataDir: dataDir})
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 9.6") {
		t.Fatalf("want version mismatch error, got %v", err)
	}
	if b, _ := os.ReadFile(verFile); string(b) != "9.6\n" {
		t.Errorf("PG_VERSION modified: %q", b)
	}
}

func TestNonEmptyNonCluster(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dataDir := traversableTempDir(t)
	if err := os.WriteFile(filepath.Join(dataDir, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), Options{DataDir: dataDir}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("want not-empty error, got %v", err)
	}
}

const helperEnv = "LOCALPG_TEST_HELPER"

// TestParentDeath checks that the server dies with the process that started
// it (Pdeathsig), e.g. when a test binary is killed.
func TestParentDeath(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServer$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "LOCALPG_READY" {
				ready <- f[1:]
				return
			}
		}
		close(ready)
	}()
	var pid int
	select {
	case f, ok := <-ready:
		if !ok {
			t.Fatal("helper exited without starting a server")
		}
		pid, _ = strconv.Atoi(f[0])
		t.Cleanup(func() { os.RemoveAll(f[1]) }) // leaked by the killed helper
	case <-time.After(90 * time.Second):
		t.Fatal("helper did not start a server in time")
	}
	if !processAlive(pid) {
		t.Fatalf("postgres pid %d not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitGone(t, pid, 20*time.Second)
}

func TestHelperServer(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper for TestParentDeath")
	}
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LOCALPG_READY %d %s\n", s.pid, filepath.Dir(s.DataDir()))
	time.Sleep(5 * time.Minute) // killed by the parent
	s.Stop()
}
