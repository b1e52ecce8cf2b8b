// Package localpg starts a private PostgreSQL server from the installed
// (Debian) binaries: for `errand dev`, on a data directory kept across runs,
// and for tests, on a throwaway one.
//
// It exists instead of a library such as embedded-postgres because that one
// cannot run as root, which sessions here are, and deletes a data directory
// made by another PostgreSQL version. So it does only what PostgreSQL cannot
// do for us: find the binaries; as root, run them as the "postgres" OS user,
// first checking that the user can reach the data directory (PostgreSQL only
// says "Permission denied" on some file); never remove or overwrite a data
// directory; pick a free port for a throwaway server; wait until our own
// postmaster reports "ready" in its postmaster.pid, as pg_ctl does, so that
// another server on the port is never taken for ours and no SQL is needed;
// stop it, killing its process group if it hangs.
//
// Everything else is PostgreSQL's: it replaces a stale postmaster.pid, and
// refuses, in its own words, which Start returns (initdb's output or the tail
// of the server log), a data directory in use by another postmaster, made by
// another major version or with the wrong owner or permissions, a non-empty
// directory that is no cluster, and a port already taken.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	superuser        = "postgres"
	startTimeout     = 60 * time.Second
	stopTimeout      = 30 * time.Second
	suggestedDataDir = "/var/tmp/errand-dev"
)

// Options configures Start. The zero value starts a throwaway server in a
// temporary directory on a free port.
type Options struct {
	// DataDir holds the cluster: initdb runs when it has no PG_VERSION,
	// otherwise the cluster is reused. "" means a temporary directory that
	// Stop removes, and implies Ephemeral.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// BinDir holds postgres and initdb. "" means `pg_config --bindir`, else
	// the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// Ephemeral trades durability for speed (fsync, synchronous_commit and
	// full_page_writes off): for throwaway data only.
	Ephemeral bool
}

// Server is a postmaster started by Start.
type Server struct {
	port    int
	dataDir string
	logPath string
	logOff  int64  // where this start's lines begin in logPath
	tempDir string // removed by Stop; "" for a persistent server

	pid     int
	done    chan struct{} // closed once the postmaster has exited and been reaped
	waitErr error         // cmd.Wait's result, valid once done is closed

	stopOnce sync.Once
	stopErr  error
}

// NotTraversableError reports that the OS user PostgreSQL runs as cannot
// reach the data directory because a parent directory lacks search
// permission for it (typically /root, mode 0700, when running as root).
type NotTraversableError struct {
	DataDir string // the requested data directory
	Dir     string // the topmost directory the user cannot traverse
	User    string // the OS user PostgreSQL runs as
	Mode    fs.FileMode
	OwnerID uint32
}

func (e *NotTraversableError) Error() string {
	return fmt.Sprintf("data directory %s is not reachable by OS user %q: parent directory %s (mode %v, owner uid %d) is not traversable by that user; "+
		"PostgreSQL refuses to run as root, so it runs as %q and needs search (x) permission on every parent directory. "+
		"Use a data directory whose parents are all world-traversable, such as %s",
		e.DataDir, e.User, e.Dir, e.Mode.Perm(), e.OwnerID, e.User, suggestedDataDir)
}

// Start initializes the cluster if needed, starts the server and returns once
// it accepts connections. ctx bounds startup only; the server runs until Stop
// (or until this process dies).
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = findBinDir(ctx); err != nil {
			return nil, err
		}
	}
	u, err := serverUser()
	if err != nil {
		return nil, err
	}

	s := &Server{}
	defer func() {
		if err != nil && s.tempDir != "" {
			os.RemoveAll(s.tempDir)
		}
	}()
	if opts.DataDir == "" {
		if s.tempDir, err = os.MkdirTemp(tempBase(u), "localpg-"); err != nil {
			return nil, fmt.Errorf("create temp dir: %w", err)
		}
		if err := os.Chmod(s.tempDir, 0o755); err != nil { // for the server user
			return nil, err
		}
		s.dataDir = filepath.Join(s.tempDir, "data")
		s.logPath = filepath.Join(s.tempDir, "postgres.log")
	} else {
		if s.dataDir, err = filepath.Abs(opts.DataDir); err != nil {
			return nil, err
		}
		s.logPath = s.dataDir + ".log" // beside the data, so it outlives Stop
	}
	if u != nil {
		if err := checkTraversable(u, s.dataDir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(s.dataDir), 0o755); err != nil {
		return nil, fmt.Errorf("create parent of data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := initdb(ctx, binDir, s.dataDir, u); err != nil {
			return nil, err
		}
	}

	ephemeral := opts.Ephemeral || opts.DataDir == ""
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = s.launch(ctx, binDir, port, ephemeral, u)
		// Someone may bind a port we picked before the server does.
		if err == nil || opts.Port != 0 || attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// URL returns a connection URL for database as the postgres superuser.
func (s *Server) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.port, url.PathEscape(database))
}

// Port returns the TCP port the server listens on (127.0.0.1).
func (s *Server) Port() int { return s.port }

// DataDir returns the absolute data directory.
func (s *Server) DataDir() string { return s.dataDir }

// LogPath returns the file that receives the server's output: DataDir +
// ".log" for a persistent server, a file in the temporary directory (removed
// by Stop) otherwise.
func (s *Server) LogPath() string { return s.logPath }

// Stop shuts the server down (fast shutdown), killing it after 30s, then
// removes the temporary directory if there is one. It is idempotent and safe
// to call concurrently.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.terminate(syscall.SIGINT, stopTimeout)
		if s.tempDir != "" {
			s.stopErr = errors.Join(s.stopErr, os.RemoveAll(s.tempDir))
		}
	})
	return s.stopErr
}

// terminate sends sig to the postmaster and waits up to wait for it to exit,
// then kills its process group: backends left behind would keep the port.
func (s *Server) terminate(sig syscall.Signal, wait time.Duration) error {
	if s.done == nil {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := syscall.Kill(s.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal postgres (pid %d): %w", s.pid, err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(wait):
	}
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
	select {
	case <-s.done:
		return fmt.Errorf("postgres (pid %d) did not stop within %s and was killed", s.pid, wait)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("postgres (pid %d) did not exit even after SIGKILL", s.pid)
	}
}

// launch starts the postmaster on port and waits until it is ready; on
// failure it is stopped.
func (s *Server) launch(ctx context.Context, binDir string, port int, ephemeral bool, u *osUser) error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	if st, err := logFile.Stat(); err == nil {
		s.logOff = st.Size()
	}

	args := []string{
		"-D", s.dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=", // TCP only: nothing to share with a system cluster
		"-c", "max_connections=200",
	}
	if ephemeral {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := u.command(exec.Command(filepath.Join(binDir, "postgres"), args...))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr.Setpgid = true              // a terminal's Ctrl-C reaches us, and we stop the server
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT // immediate shutdown if we die

	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		// Pdeathsig fires when the thread that forked the child exits, not
		// the process: keep this thread for the child's lifetime.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.pid, s.port, s.done = cmd.Process.Pid, port, done

	who := "postgres"
	if u != nil {
		who = fmt.Sprintf("postgres (as OS user %s)", u.name)
	}
	if err := s.waitReady(ctx, who); err != nil {
		_ = s.terminate(syscall.SIGQUIT, 5*time.Second)
		return err
	}
	return nil
}

// waitReady waits for our postmaster's pid and "ready" in postmaster.pid: it
// is then accepting connections on the port it bound, so the server on that
// port is ours.
func (s *Server) waitReady(ctx context.Context, who string) error {
	ctx, cancel := context.WithTimeoutCause(ctx, startTimeout, fmt.Errorf("not ready after %s", startTimeout))
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
		if lines := strings.Split(string(b), "\n"); len(lines) > 7 && lines[0] == strconv.Itoa(s.pid) && strings.TrimSpace(lines[7]) == "ready" {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during startup (%v); %s", who, s.waitErr, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; %s", who, context.Cause(ctx), s.logTail())
		case <-tick.C:
		}
	}
}

// logTail returns the last lines this start wrote to the server log.
func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return fmt.Sprintf("cannot read server log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(s.logOff, io.SeekStart); err != nil {
		return fmt.Sprintf("cannot read server log: %v", err)
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	lines := strings.Split(string(bytes.TrimSpace(b)), "\n")
	return fmt.Sprintf("server log %s:\n%s", s.logPath, strings.Join(lines[max(0, len(lines)-20):], "\n"))
}

// initdb creates the cluster. initdb itself refuses a non-empty directory
// and, when it fails, removes only what it created.
func initdb(ctx context.Context, binDir, dataDir string, u *osUser) error {
	if u != nil {
		// The server user may not be able to write the parent: create the
		// directory for it, or hand it an existing empty one.
		if err := os.Mkdir(dataDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create data dir: %w", err)
		}
		if entries, err := os.ReadDir(dataDir); err == nil && len(entries) == 0 {
			if err := os.Chown(dataDir, u.uid, u.gid); err != nil {
				return fmt.Errorf("chown data dir: %w", err)
			}
		}
	}
	cmd := u.command(exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"-D", dataDir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"))
	// SIGTERM rather than SIGKILL lets initdb clean up instead of leaving a
	// half-made cluster that the next Start would try to run.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", dataDir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

func findBinDir(ctx context.Context) (string, error) {
	if out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); hasServer(d) {
			return d, nil
		}
	}
	// Debian installs major versions side by side: take the newest.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", 0.0
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64) // "15", "9.6"
		if err == nil && v > bestVersion && hasServer(d) {
			best, bestVersion = d, v
		}
	}
	if best == "" {
		return "", errors.New("no PostgreSQL server binaries found (tried `pg_config --bindir` and /usr/lib/postgresql/*/bin); install them (apt-get install postgresql) or set the bin dir")
	}
	return best, nil
}

func hasServer(dir string) bool {
	_, err1 := os.Stat(filepath.Join(dir, "postgres"))
	_, err2 := os.Stat(filepath.Join(dir, "initdb"))
	return dir != "" && err1 == nil && err2 == nil
}

// osUser is who PostgreSQL runs as when we are root; nil means ourselves.
type osUser struct {
	name     string
	uid, gid int
}

func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", name, err))
			continue
		}
		return &osUser{name: name, uid: uid, gid: gid}, nil
	}
	return nil, fmt.Errorf("PostgreSQL cannot run as root and there is no OS user (postgres, nobody) to run it as: %w", errors.Join(errs...))
}

// command makes cmd run as u, from a directory u can enter, without our PG*
// variables (PGDATA, PGPORT, ...), which would redirect it.
func (u *osUser) command(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = "/"
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if u != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
	}
	return cmd
}

// checkTraversable reports the topmost directory above dataDir that u cannot
// search (permission bits only, no ACLs). Missing ones will be created 0755.
func checkTraversable(u *osUser, dataDir string) error {
	existing := filepath.Dir(dataDir)
	for {
		if _, err := os.Stat(existing); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		existing = filepath.Dir(existing)
	}
	existing, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return err
	}
	var dirs []string
	for d := existing; ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range slices.Backward(dirs) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		search := fs.FileMode(0o001) // others
		if int(sys.Uid) == u.uid {
			search = 0o100
		} else if int(sys.Gid) == u.gid {
			search = 0o010
		}
		if st.Mode()&search == 0 {
			return &NotTraversableError{DataDir: dataDir, Dir: d, User: u.name, Mode: st.Mode(), OwnerID: sys.Uid}
		}
	}
	return nil
}

// tempBase picks a temporary directory u can traverse.
func tempBase(u *osUser) string {
	for _, d := range []string{os.TempDir(), "/tmp", "/var/tmp"} {
		if u == nil || checkTraversable(u, filepath.Join(d, "x")) == nil {
			return d
		}
	}
	return os.TempDir() // Start reports it
}

// freePort returns a TCP port on 127.0.0.1 that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
