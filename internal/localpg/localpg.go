// Package localpg starts a private PostgreSQL server from the locally
// installed (Debian) PostgreSQL binaries.
//
// It serves two users: `errand dev`, which keeps a persistent data directory
// across restarts, and tests, which get a throwaway instance in a temporary
// directory (Options.DataDir == "").
//
// PostgreSQL refuses to run as root. When the calling process is root, initdb
// and postgres are run as the "postgres" OS user (or "nobody" if that user
// does not exist), so every parent directory of the data directory must be
// traversable by that user.
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

	"github.com/jackc/pgx/v5"
)

const (
	superuser           = "postgres"
	defaultStartTimeout = 60 * time.Second
	stopTimeout         = 30 * time.Second
	killWaitTimeout     = 10 * time.Second
	suggestedDataDir    = "/var/tmp/errand-dev"
)

// Options configures Start. The zero value starts an ephemeral server in a
// temporary directory on a free port.
type Options struct {
	// DataDir is where the cluster lives. It is created (initdb) if missing
	// or empty and reused if it already holds a cluster (PG_VERSION present).
	// "" means a fresh temporary directory that Stop removes; this implies
	// Ephemeral.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// BinDir holds the postgres and initdb binaries. "" discovers it via
	// `pg_config --bindir`, falling back to the highest-numbered
	// /usr/lib/postgresql/*/bin.
	BinDir string
	// Logf, if set, receives progress messages.
	Logf func(format string, args ...any)
	// StartTimeout bounds how long Start waits for the server to accept
	// connections. Default 60s.
	StartTimeout time.Duration
	// Ephemeral trades durability for speed (fsync=off,
	// synchronous_commit=off, full_page_writes=off). Only for throwaway
	// data such as tests. Forced on when DataDir is "".
	Ephemeral bool
}

// Server is a running PostgreSQL postmaster started by Start.
type Server struct {
	port    int
	dataDir string
	sockDir string
	logPath string
	logOff  int64
	logf    func(format string, args ...any)

	pid     int
	done    chan struct{} // closed when the postmaster has exited and been reaped
	waitErr error         // result of cmd.Wait, valid after done is closed

	removeDirs []string // removed by Stop (temp dirs we created)

	stopOnce sync.Once
	stopErr  error
}

// NotTraversableError reports that the OS user PostgreSQL runs as cannot
// reach the data directory because some parent directory lacks search
// permission for it (typically /root, mode 0700, when running as root).
type NotTraversableError struct {
	DataDir string // the requested data directory
	Dir     string // the first directory the user cannot traverse
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

// Start initializes (if needed) and starts a PostgreSQL server, returning
// once it accepts connections. ctx bounds startup only; the server runs until
// Stop is called (or this process dies).
func Start(ctx context.Context, opts Options) (*Server, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}

	binDir, err := findBinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	id, err := runIdentity()
	if err != nil {
		return nil, err
	}
	binVersion, err := serverMajorVersion(ctx, binDir, id)
	if err != nil {
		return nil, err
	}
	if id.switchUser {
		logf("localpg: running as root; PostgreSQL will run as OS user %q (uid %d)", id.name, id.uid)
	}

	s := &Server{logf: logf}
	ok := false
	defer func() {
		if !ok {
			s.removeTempDirs()
		}
	}()

	ephemeral := opts.Ephemeral
	base := tempBase(id)
	if opts.DataDir == "" {
		ephemeral = true
		root, err := os.MkdirTemp(base, "localpg-")
		if err != nil {
			return nil, fmt.Errorf("create temp dir: %w", err)
		}
		s.removeDirs = append(s.removeDirs, root)
		// The server user must be able to traverse it.
		if err := os.Chmod(root, 0o755); err != nil {
			return nil, fmt.Errorf("chmod temp dir: %w", err)
		}
		s.dataDir = filepath.Join(root, "data")
		s.sockDir = filepath.Join(root, "run")
		s.logPath = filepath.Join(root, "postgres.log")
		if err := os.Mkdir(s.sockDir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket dir: %w", err)
		}
	} else {
		if abs, err := filepath.Abs(opts.DataDir); err == nil && id.switchUser {
			// Check before creating any parent directories.
			if err := checkTraversable(id, abs); err != nil {
				return nil, err
			}
		}
		dataDir, err := resolveDataDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		s.dataDir = dataDir
		sockDir, err := os.MkdirTemp(base, "localpg-run-")
		if err != nil {
			return nil, fmt.Errorf("create socket dir: %w", err)
		}
		s.removeDirs = append(s.removeDirs, sockDir)
		s.sockDir = sockDir
		// Keep the log next to the data dir so it survives Stop.
		s.logPath = dataDir + ".log"
	}
	if err := id.chown(s.sockDir); err != nil {
		return nil, fmt.Errorf("chown socket dir: %w", err)
	}
	if id.switchUser {
		if err := checkTraversable(id, s.dataDir); err != nil {
			return nil, err
		}
	}

	if err := prepareDataDir(ctx, s.dataDir, binDir, binVersion, id, logf); err != nil {
		return nil, err
	}

	// Start the postmaster; when we picked the port ourselves, retry a few
	// times if someone else grabbed it between our probe and the bind.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				return nil, err
			}
		} else if err := portFree(port); err != nil {
			return nil, err
		}
		err = s.launch(ctx, binDir, port, ephemeral, id, timeout)
		if err == nil {
			break
		}
		var bindErr *addrInUseError
		if opts.Port == 0 && attempt < attempts && errors.As(err, &bindErr) {
			logf("localpg: port %d was taken, retrying", port)
			continue
		}
		return nil, err
	}
	ok = true
	logf("localpg: PostgreSQL ready on 127.0.0.1:%d (data %s, log %s)", s.port, s.dataDir, s.logPath)
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

// LogPath returns the file that receives the server's stdout/stderr. For a
// temporary server it lives in the temp dir and is removed by Stop; for a
// persistent one it is DataDir + ".log".
func (s *Server) LogPath() string { return s.logPath }

// Stop shuts the server down (fast shutdown: SIGINT to the postmaster),
// waiting up to 30s before resorting to SIGKILL, then removes any temporary
// directories. It is idempotent and safe to call concurrently.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		err := s.terminate(syscall.SIGINT, stopTimeout)
		s.stopErr = errors.Join(err, s.removeTempDirs())
	})
	return s.stopErr
}

// terminate sends sig to the postmaster and waits up to wait for it to exit,
// then SIGKILLs its process group.
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
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
	}
	s.logf("localpg: postgres (pid %d) did not exit within %s; killing it", s.pid, wait)
	_ = syscall.Kill(-s.pid, syscall.SIGKILL)
	_ = syscall.Kill(s.pid, syscall.SIGKILL)
	select {
	case <-s.done:
		return fmt.Errorf("postgres (pid %d) did not shut down within %s and was killed", s.pid, wait)
	case <-time.After(killWaitTimeout):
		return fmt.Errorf("postgres (pid %d) did not exit even after SIGKILL", s.pid)
	}
}

func (s *Server) removeTempDirs() error {
	var errs []error
	for _, d := range s.removeDirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	s.removeDirs = nil
	return errors.Join(errs...)
}

type addrInUseError struct{ err error }

func (e *addrInUseError) Error() string { return e.err.Error() }
func (e *addrInUseError) Unwrap() error { return e.err }

// launch starts the postmaster on port and waits until it accepts
// connections. On failure the process is stopped.
func (s *Server) launch(ctx context.Context, binDir string, port int, ephemeral bool, id identity, timeout time.Duration) error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil && !strings.HasPrefix(s.logPath, s.sockDir+string(filepath.Separator)) {
		// Parent of a persistent data dir may not be writable; fall back.
		s.logPath = filepath.Join(s.sockDir, "postgres.log")
		logFile, err = os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close() // the child keeps its own copy of the descriptor
	if st, err := logFile.Stat(); err == nil {
		s.logOff = st.Size()
	}
	fmt.Fprintf(logFile, "---- localpg: starting postgres on 127.0.0.1:%d at %s ----\n", port, time.Now().Format(time.RFC3339))

	args := []string{
		"-D", s.dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=" + s.sockDir,
		"-c", "max_connections=200",
	}
	if ephemeral {
		args = append(args,
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
		)
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	cmd.Dir = "/" // must be accessible to the server user
	cmd.Env = childEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	attr := id.sysProcAttr()
	attr.Setpgid = true              // terminal Ctrl-C goes to us; we stop the server ourselves
	attr.Pdeathsig = syscall.SIGQUIT // immediate shutdown if we die
	cmd.SysProcAttr = attr

	s.port = port
	done := make(chan struct{})
	s.done = done
	startErr := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the *thread* that forked the child exits, not
		// the process. Lock this goroutine to its thread for the lifetime of
		// the child so the Go runtime can never retire that thread early.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		s.pid = cmd.Process.Pid
		startErr <- nil
		s.waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-startErr; err != nil {
		s.done = nil
		return fmt.Errorf("start postgres: %w", err)
	}
	s.logf("localpg: started postgres (pid %d) on 127.0.0.1:%d", s.pid, port)

	if err := s.waitReady(ctx, timeout); err != nil {
		_ = s.terminate(syscall.SIGQUIT, 5*time.Second)
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	cfg, err := pgx.ParseConfig(s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("parse connection URL: %w", err)
	}
	cfg.ConnectTimeout = 2 * time.Second
	var lastErr error
	for {
		select {
		case <-s.done:
			tail := s.logTail()
			err := fmt.Errorf("postgres exited during startup (%v); log %s:\n%s", s.waitErr, s.logPath, tail)
			if strings.Contains(tail, "Address already in use") {
				return &addrInUseError{err}
			}
			return err
		default:
		}
		err := s.probe(ctx, cfg)
		if err == nil {
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for postgres: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not accepting connections after %s (last error: %v); log %s:\n%s",
				timeout, lastErr, s.logPath, s.logTail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for postgres: %w", ctx.Err())
		case <-s.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probe connects once and checks that the server answering is ours: with a
// fixed port, another PostgreSQL (e.g. the system cluster on 5432) could be
// answering while our postmaster is failing to bind.
func (s *Server) probe(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		return fmt.Errorf("query data_directory: %w", err)
	}
	if !sameFile(dir, s.dataDir) {
		return fmt.Errorf("port %d is served by another PostgreSQL server (data directory %s)", s.port, dir)
	}
	return nil
}

// logTail returns the last lines this run wrote to the log.
func (s *Server) logTail() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxBytes = 8 << 10
	off := s.logOff
	if st, err := f.Stat(); err == nil && st.Size()-off > maxBytes {
		off = st.Size() - maxBytes
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// ---- data directory ----

// resolveDataDir makes dir absolute with symlinks resolved, creating its
// parent if needed (the data dir itself is created by prepareDataDir).
func resolveDataDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create parent of data dir: %w", err)
	}
	realParent, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	return filepath.Join(realParent, filepath.Base(abs)), nil
}

// checkTraversable verifies id can search every ancestor of dataDir.
func checkTraversable(id identity, dataDir string) error {
	var ancestors []string
	for d := filepath.Dir(dataDir); ; d = filepath.Dir(d) {
		ancestors = append(ancestors, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	slices.Reverse(ancestors) // check from / downwards to report the topmost culprit
	for _, d := range ancestors {
		st, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) {
			break // will be created (0755) by us
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if !id.canSearch(st.Mode(), sys.Uid, sys.Gid) {
			return &NotTraversableError{DataDir: dataDir, Dir: d, User: id.name, Mode: st.Mode(), OwnerID: sys.Uid}
		}
	}
	return nil
}

func prepareDataDir(ctx context.Context, dataDir, binDir, binVersion string, id identity, logf func(string, ...any)) error {
	st, err := os.Stat(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dataDir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		return initdb(ctx, dataDir, binDir, id, logf)
	case err != nil:
		return fmt.Errorf("data dir: %w", err)
	case !st.IsDir():
		return fmt.Errorf("data dir %s exists and is not a directory", dataDir)
	}

	verBytes, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if errors.Is(err, fs.ErrNotExist) {
		entries, err := os.ReadDir(dataDir)
		if err != nil {
			return fmt.Errorf("read data dir: %w", err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("data dir %s is not empty but holds no PostgreSQL cluster (no PG_VERSION); refusing to touch it", dataDir)
		}
		if err := os.Chmod(dataDir, 0o700); err != nil {
			return fmt.Errorf("chmod data dir: %w", err)
		}
		return initdb(ctx, dataDir, binDir, id, logf)
	}
	if err != nil {
		return fmt.Errorf("read PG_VERSION: %w", err)
	}

	// Reuse an existing cluster.
	dataVersion := strings.TrimSpace(string(verBytes))
	if dataVersion != binVersion {
		hint := ""
		if d := fmt.Sprintf("/usr/lib/postgresql/%s/bin", dataVersion); hasServerBinaries(d) {
			hint = fmt.Sprintf(" (PostgreSQL %s binaries exist in %s: pass that as the bin dir)", dataVersion, d)
		}
		return fmt.Errorf("data dir %s was created by PostgreSQL %s but the binaries in %s are PostgreSQL %s%s; "+
			"upgrade it with pg_upgrade or move it aside (data was left untouched)", dataDir, dataVersion, binDir, binVersion, hint)
	}
	if err := checkPostmasterPid(dataDir, logf); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && id.switchUser && sys.Uid != id.uid {
		logf("localpg: data dir %s is owned by uid %d; chowning it to %s", dataDir, sys.Uid, id.name)
		if err := id.chownRecursive(dataDir); err != nil {
			return fmt.Errorf("chown data dir: %w", err)
		}
	}
	// PostgreSQL insists on 0700 or 0750.
	if perm := st.Mode().Perm(); perm != 0o700 && perm != 0o750 {
		if err := os.Chmod(dataDir, 0o700); err != nil {
			return fmt.Errorf("chmod data dir: %w", err)
		}
	}
	logf("localpg: reusing PostgreSQL %s cluster in %s", dataVersion, dataDir)
	return nil
}

func initdb(ctx context.Context, dataDir, binDir string, id identity, logf func(string, ...any)) error {
	if err := id.chown(dataDir); err != nil {
		return fmt.Errorf("chown data dir: %w", err)
	}
	logf("localpg: initdb %s", dataDir)
	base := []string{"-D", dataDir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--no-sync"}
	// Prefer C.UTF-8 (deterministic, Unicode-aware); fall back to plain C if
	// the system lacks that locale. initdb cleans the directory on failure.
	var out []byte
	var err error
	for _, loc := range []string{"--locale=C.UTF-8", "--no-locale"} {
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), append(slices.Clone(base), loc)...)
		cmd.Dir = "/"
		cmd.Env = childEnv()
		cmd.SysProcAttr = id.sysProcAttr()
		out, err = cmd.CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("locale")) {
			break
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		// The directory was empty before; don't leave a half-initialized
		// cluster (with PG_VERSION) that a later Start would try to reuse.
		if entries, rerr := os.ReadDir(dataDir); rerr == nil {
			for _, e := range entries {
				_ = os.RemoveAll(filepath.Join(dataDir, e.Name()))
			}
		}
		if o := strings.TrimSpace(string(out)); o != "" {
			return fmt.Errorf("initdb: %w\n%s", err, o)
		}
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

// checkPostmasterPid refuses to start when a live postmaster still owns
// dataDir, and removes a stale lock file whose pid has been reused by an
// unrelated process (PostgreSQL itself would refuse to start in that case).
// A lock file naming a dead pid is left for PostgreSQL to handle.
func checkPostmasterPid(dataDir string, logf func(string, ...any)) error {
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", pidFile, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid == 0 {
		return nil // let PostgreSQL report the bogus lock file
	}
	if pid < 0 { // standalone backend
		pid = -pid
	}
	if !processAlive(pid) {
		logf("localpg: stale %s (pid %d is gone); PostgreSQL will replace it", pidFile, pid)
		return nil
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	name := strings.TrimSpace(string(comm))
	if name == "postgres" || name == "postmaster" {
		cwd, cwdErr := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if cwdErr != nil || sameFile(cwd, dataDir) {
			return fmt.Errorf("data dir %s is in use by a running PostgreSQL server (pid %d, from %s); stop it first (kill -INT %d) or use another data directory",
				dataDir, pid, pidFile, pid)
		}
	}
	logf("localpg: removing stale %s: pid %d now belongs to an unrelated process (%s)", pidFile, pid, name)
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", pidFile, err)
	}
	return nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie is dead for our purposes.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(sa, sb)
}

// ---- binaries ----

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"postgres", "initdb"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

func findBinDir(ctx context.Context, explicit string) (string, error) {
	if explicit != "" {
		if !hasServerBinaries(explicit) {
			return "", fmt.Errorf("bin dir %s does not contain executable postgres and initdb", explicit)
		}
		return explicit, nil
	}
	if out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); d != "" && hasServerBinaries(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var best string
	var bestVer []int
	for _, d := range dirs {
		if !hasServerBinaries(d) {
			continue
		}
		v := parseVersion(filepath.Base(filepath.Dir(d)))
		if best == "" || slices.Compare(v, bestVer) > 0 {
			best, bestVer = d, v
		}
	}
	if best == "" {
		return "", errors.New("no PostgreSQL server binaries found (tried `pg_config --bindir` and /usr/lib/postgresql/*/bin); install them (apt-get install postgresql) or set the bin dir")
	}
	return best, nil
}

func parseVersion(s string) []int {
	var v []int
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			n = -1
		}
		v = append(v, n)
	}
	return v
}

// serverMajorVersion returns the major version as written to PG_VERSION:
// "15" for 10+, "9.6" for older releases.
func serverMajorVersion(ctx context.Context, binDir string, id identity) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "postgres"), "--version")
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.SysProcAttr = id.sysProcAttr()
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("postgres --version: %w", err)
	}
	// e.g. "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
	_, rest, found := strings.Cut(string(out), "(PostgreSQL) ")
	fields := strings.Fields(rest)
	if !found || len(fields) == 0 {
		return "", fmt.Errorf("postgres --version: unrecognized output %q", strings.TrimSpace(string(out)))
	}
	parts := strings.FieldsFunc(fields[0], func(r rune) bool { return r < '0' || r > '9' })
	if len(parts) == 0 {
		return "", fmt.Errorf("postgres --version: unrecognized version %q", fields[0])
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return "", fmt.Errorf("postgres --version: unrecognized version %q", fields[0])
	}
	if major < 10 && len(parts) > 1 {
		return parts[0] + "." + parts[1], nil
	}
	return parts[0], nil
}

// ---- OS identity ----

// identity is the OS user the server runs as.
type identity struct {
	name       string
	uid, gid   uint32
	groups     []uint32
	switchUser bool // we are root and must drop to uid/gid
}

func runIdentity() (identity, error) {
	if os.Geteuid() != 0 {
		id := identity{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), name: strconv.Itoa(os.Geteuid())}
		if u, err := user.Current(); err == nil {
			id.name = u.Username
		}
		return id, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("user %s: non-numeric uid/gid", name))
			continue
		}
		id := identity{name: name, uid: uint32(uid), gid: uint32(gid), switchUser: true}
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					id.groups = append(id.groups, uint32(n))
				}
			}
		}
		if !slices.Contains(id.groups, id.gid) {
			id.groups = append(id.groups, id.gid)
		}
		return id, nil
	}
	return identity{}, fmt.Errorf("running as root and no unprivileged OS user (postgres, nobody) to run PostgreSQL as: %w", errors.Join(errs...))
}

func (id identity) sysProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if id.switchUser {
		a.Credential = &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}
	}
	return a
}

func (id identity) chown(path string) error {
	if !id.switchUser {
		return nil
	}
	return os.Lchown(path, int(id.uid), int(id.gid))
}

func (id identity) chownRecursive(root string) error {
	if !id.switchUser {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(id.uid), int(id.gid))
	})
}

// canSearch reports whether id may traverse a directory with the given mode
// and ownership (classic permission bits; ACLs are not considered).
func (id identity) canSearch(mode fs.FileMode, uid, gid uint32) bool {
	perm := mode.Perm()
	switch {
	case uid == id.uid:
		return perm&0o100 != 0
	case gid == id.gid || slices.Contains(id.groups, gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// tempBase picks a temp directory the server user can traverse.
func tempBase(id identity) string {
	candidates := []string{os.TempDir(), "/tmp", "/var/tmp"}
	if !id.switchUser {
		return candidates[0]
	}
	for _, c := range candidates {
		st, err := os.Stat(c)
		if err == nil && st.IsDir() && checkTraversable(id, filepath.Join(c, "x")) == nil {
			return c
		}
	}
	return candidates[0]
}

// childEnv is our environment minus PG* variables, which could redirect
// the server or tools (PGDATA, PGPORT, ...).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// portFree reports an error if 127.0.0.1:port cannot be bound right now.
func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is not available: %w", port, err)
	}
	return l.Close()
}

// freePort returns a currently unused TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
