package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errand-dev/errand/store"
)

// A kind brings what it needs beside its work: its environment variables
// (WithEnv), and what it does when a daemon starts it (WithSetup): read its
// configuration, mount its HTTP routes, report problems to /readyz. A kind
// defined outside this repository has exactly the same powers.

// EnvVar is an environment variable a kind reads. `errand help` lists it;
// every command checks it at start, one line per bad value.
type EnvVar struct {
	Name    string
	Default string
	Help    string
	// Check validates a value (the default when the variable is unset or
	// empty); nil accepts anything. Say what a good value looks like.
	Check func(value string) error
	// Dev is the variable's development default: `errand dev` and
	// `errand bench` set it when the variable is unset or empty (email
	// capture on, local webhook receivers allowed); `errand run` never
	// does. "" for none. It must pass Check.
	Dev string
	// DevNote is what `errand dev` prints when it sets Dev: what the value
	// lets happen that production would not. "" prints nothing.
	DevNote string
	// DevUnless names variables any of which, set, keep Dev from being
	// set: whoever sets RESEND_API_KEY means to send, so email capture
	// stays off.
	DevUnless []string
}

// Env is the configuration as a kind sees it at start.
type Env struct {
	getenv  func(string) string
	vars    map[string]EnvVar
	workers map[string]int
}

// NewEnv is for commands and tests that start kinds: getenv reads the
// process environment, workers is the number of workers per queue.
func NewEnv(getenv func(string) string, vars []EnvVar, workers map[string]int) Env {
	m := make(map[string]EnvVar, len(vars))
	for _, v := range vars {
		m[v.Name] = v
	}
	return Env{getenv: getenv, vars: m, workers: workers}
}

// Get returns the variable's value, or its declared default when it is unset
// or empty. A kind reads only variables it declared (see WithEnv); anything
// else reads "".
func (e Env) Get(name string) string {
	v, ok := e.vars[name]
	if !ok {
		return ""
	}
	if s := e.getenv(name); s != "" {
		return s
	}
	return v.Default
}

// Workers is how many workers this replica runs for queue; 0 means the
// replica does not work the queue at all (ERRAND_QUEUES gave it 0).
func (e Env) Workers(queue string) int { return e.workers[queue] }

// Setup is what a kind gets when a daemon starts it.
type Setup struct {
	Env    Env
	Logger *slog.Logger
	// Problems collects conditions an operator must fix (a rotated API
	// key); /readyz answers 503 while any is set.
	Problems *Problems
	// Store is a small pool of its own for the kind's HTTP routes, so page
	// loads never take connections from jobs or from crash recovery. Jobs
	// use Job.Store.
	Store *store.Store
	// PrivateHTTP reports whether the daemon's HTTP address is a loopback
	// one (127.0.0.1, ::1, localhost), unreachable from other machines.
	PrivateHTTP bool
	// Metrics is where the kind registers its own Prometheus metrics,
	// served on the daemon's /metrics. Name them errand_<kind>_..., keep
	// label values bounded (never a workspace or a user), and build them in
	// setup: each daemon has its own registry.
	Metrics prometheus.Registerer

	handle    func(pattern string, h http.Handler)
	routeErrs []error
}

// NewSetup is for the daemon (and tests) that start kinds: handle mounts a
// route on its HTTP server.
func NewSetup(env Env, logger *slog.Logger, problems *Problems, st *store.Store, privateHTTP bool, handle func(pattern string, h http.Handler)) *Setup {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Setup{Env: env, Logger: logger, Problems: problems, Store: st, PrivateHTTP: privateHTTP, Metrics: prometheus.NewRegistry(), handle: handle}
}

// RegisterMetrics registers a kind's collectors on reg; one already
// registered there (the same kind started twice on one registry) is not an
// error.
func RegisterMetrics(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				continue
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// Handle serves h at pattern (net/http.ServeMux syntax, e.g. "GET /emails")
// on the daemon's HTTP address, beside /healthz and /readyz.
//
// A pattern the mux refuses (malformed, or one another route already has,
// such as "GET /healthz") stops the daemon from starting, naming the kind
// and the pattern, as an error from setup does.
func (s *Setup) Handle(pattern string, h http.Handler) {
	if s.handle == nil {
		return
	}
	if h == nil {
		s.routeErrs = append(s.routeErrs, fmt.Errorf("route %q: the handler is nil", pattern))
		return
	}
	defer func() {
		// net/http.ServeMux panics on a bad or conflicting pattern.
		if r := recover(); r != nil {
			s.routeErrs = append(s.routeErrs, fmt.Errorf("route %q: %v", pattern, r))
		}
	}()
	s.handle(pattern, h)
}

// HandleTenantData serves a page that shows tenants' data without
// authentication only where nobody else can reach it: when the HTTP address
// is loopback. Elsewhere it mounts nothing, logs why, and returns false.
// It answers only requests whose Host is this machine (see loopbackHostOnly).
func (s *Setup) HandleTenantData(pattern string, h http.Handler) bool {
	if !s.PrivateHTTP {
		s.Logger.Warn(fmt.Sprintf("not serving %s: it shows every tenant's data without authentication, and ERRAND_HTTP_ADDR is not a loopback address", pattern))
		return false
	}
	s.Handle(pattern, loopbackHostOnly(h))
	return true
}

// loopbackHostOnly refuses (403) a request whose Host header is not a
// loopback name or address. A loopback listener is out of other machines'
// reach but not of a browser on this one: a page from a name whose DNS its
// owner then points at 127.0.0.1 (DNS rebinding) can read the answers,
// which the browser takes for that name's; its requests carry that name.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsLoopbackHost(r.Host) {
			http.Error(w, "errand serves this page only to requests for localhost, 127.0.0.1 or [::1]", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// IsLoopbackHost reports whether a host, with or without a port (a Host
// header, a URL's host, a listen address), names this machine: localhost,
// an address in 127.0.0.0/8, or ::1.
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// SetupFunc starts a kind in a daemon. An error stops the daemon from
// starting, with the error as the reason: name the variable to fix.
type SetupFunc func(ctx context.Context, s *Setup) error

// WithEnv declares the kind's environment variables.
func WithEnv(vars ...EnvVar) Option {
	return func(k *Kind) { k.Env = append(k.Env, vars...) }
}

// WithSetup runs fn when a daemon starts the kind, before any of its jobs.
// A kind that keeps state set up here is built once per daemon: construct it
// in a function (as errand's own kinds do) rather than in a package variable.
func WithSetup(fn SetupFunc) Option {
	return func(k *Kind) { k.setup = fn }
}

// Start runs the kind's setup (nothing when it has none).
func (k Kind) Start(ctx context.Context, s *Setup) error {
	if k.setup == nil {
		return nil
	}
	if err := k.setup(ctx, s); err != nil {
		return fmt.Errorf("kind %s: %w", k.Name, err)
	}
	if err := errors.Join(s.routeErrs...); err != nil {
		return fmt.Errorf("kind %s: %w", k.Name, err)
	}
	return nil
}
