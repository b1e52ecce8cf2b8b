package localpg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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
	if _, err := findBinDir(context.Background()); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
}

// traversableTempDir returns a temp dir the server user can traverse.
func traversableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "localpg-test-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestEphemeral(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := context.Background()

	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port())
	if got := s.URL("postgres"); s.Port() == 0 || got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}

	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("ephemeral fsync = %q, %v; want off", fsync, err)
	}
	conn.Close(ctx)

	pid, root := s.pid, filepath.Dir(s.DataDir())
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Errorf("postgres pid %d still alive after Stop", pid)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s not removed: %v", root, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestPersistent runs one cluster through what `errand dev` meets across
// runs. Where PostgreSQL itself refuses, the test checks that its own words
// reach the caller and that the data is left alone.
func TestPersistent(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	ctx := context.Background()
	dataDir := filepath.Join(traversableTempDir(t), "nested", "pgdata")

	s, err := Start(ctx, Options{DataDir: dataDir})
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

	// Started twice on one data dir: PostgreSQL names the running postmaster.
	if s2, err := Start(ctx, Options{DataDir: dataDir}); err == nil {
		s2.Stop()
		t.Fatal("second Start on a live data dir succeeded")
	} else if !strings.Contains(err.Error(), fmt.Sprintf("another postmaster (PID %d)", s.pid)) {
		t.Errorf("error does not name pid %d: %v", s.pid, err)
	}

	pid := s.pid
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Fatalf("postgres pid %d still alive after Stop", pid)
	}

	// The port asked for is taken by someone else: PostgreSQL cannot bind it,
	// and whoever holds it is never taken for our server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := Start(ctx, Options{DataDir: dataDir, Port: l.Addr().(*net.TCPAddr).Port}); err == nil {
		s2.Stop()
		t.Fatal("Start on a taken port succeeded")
	} else if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("error does not say the address is in use: %v", err)
	}
	l.Close()

	s, err = Start(ctx, Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	conn, err = pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "survives" {
		t.Fatalf("row after restart = %q, %v", v, err)
	}
	conn.Close(ctx)
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(s.LogPath()); err != nil {
		t.Errorf("log file: %v", err)
	}

	// A cluster of another major version: PostgreSQL says which, and nothing
	// is rewritten.
	verFile := filepath.Join(dataDir, "PG_VERSION")
	if err := os.WriteFile(verFile, []byte("9.6\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s2, err := Start(ctx, Options{DataDir: dataDir}); err == nil {
		s2.Stop()
		t.Fatal("Start on a 9.6 cluster succeeded")
	} else if !strings.Contains(err.Error(), "initialized by PostgreSQL version 9.6") {
		t.Errorf("error does not name the cluster's version: %v", err)
	}
	if b, _ := os.ReadFile(verFile); string(b) != "9.6\n" {
		t.Errorf("PG_VERSION rewritten: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgresql.conf")); err != nil {
		t.Errorf("cluster touched: %v", err)
	}
}

func TestNotTraversable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only meaningful when running as root")
	}
	requireBinaries(t)
	t.Parallel()
	private := filepath.Join(traversableTempDir(t), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "nested", "data")
	_, err := Start(context.Background(), Options{DataDir: dataDir})
	var nt *NotTraversableError
	if !errors.As(err, &nt) {
		t.Fatalf("want NotTraversableError, got %v", err)
	}
	if nt.Dir != private || !strings.Contains(err.Error(), suggestedDataDir) {
		t.Errorf("error does not name %s or suggest %s: %v", private, suggestedDataDir, err)
	}
	if _, err := os.Stat(filepath.Dir(dataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("parent of data dir created despite error: %v", err)
	}
}

// A directory that holds something other than a cluster is never
// initialized over: initdb refuses it, and its message is the error.
func TestNonEmptyDirectory(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dataDir := traversableTempDir(t)
	precious := filepath.Join(dataDir, "precious")
	if err := os.WriteFile(precious, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Start(context.Background(), Options{DataDir: dataDir}); err == nil {
		s.Stop()
		t.Fatal("Start on a non-empty directory succeeded")
	} else if !strings.Contains(err.Error(), "exists but is not empty") {
		t.Errorf("error is not initdb's: %v", err)
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "x" {
		t.Errorf("precious file = %q, %v", b, err)
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

	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "LOCALPG_READY" {
			pid, _ = strconv.Atoi(f[1])
			t.Cleanup(func() { os.RemoveAll(f[2]) }) // left by the killed helper
			break
		}
	}
	if pid == 0 || !alive(pid) {
		t.Fatalf("helper did not start a server (pid %d)", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for deadline := time.Now().Add(20 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("postgres pid %d still alive 20s after its parent was killed", pid)
		}
	}
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
