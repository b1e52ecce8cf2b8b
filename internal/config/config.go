// Package config reads errand's configuration from the environment: the
// daemon's own variables here, each kind's beside its kind (jobs.WithEnv).
// Every command checks all of them at start and reports every bad value at
// once, one line each.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/schedules"
)

// Config is errand's configuration, read only from the environment.
type Config struct {
	DatabaseURL       string
	HTTPAddr          string
	Queues            map[string]int
	ShutdownTimeout   time.Duration
	MaxArgsBytes      int
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	PollOnly          bool
	DBMaxConns        int
	RetryBase         time.Duration
	RescueAfter       time.Duration
	RetainCompleted   time.Duration
	RetainFailed      time.Duration
	RetainLogs        time.Duration
	Fairness          bool
	WorkspaceCap      int
	UIUser            string
	UIPassword        string
	OTLPEndpoint      string
	ServiceName       string
	LogLevel          slog.Level
	LogFormat         string
	DevDir            string
	PGBinDir          string
	// KindVars are the variables the kinds declare (jobs.WithEnv).
	KindVars []jobs.EnvVar
	// Getenv is the environment the configuration was read from; the kinds
	// read theirs through it when the daemon starts them (KindEnv).
	Getenv func(string) string
}

// KindEnv is the environment as the kinds see it: their declared variables
// and the workers per queue.
func (c Config) KindEnv() jobs.Env { return jobs.NewEnv(c.Getenv, c.KindVars, c.Queues) }

// WithEnv returns c reading name as value, whatever the environment says
// (`errand dev` sets the kinds' dev defaults this way).
func (c Config) WithEnv(name, value string) Config {
	getenv := c.Getenv
	c.Getenv = func(k string) string {
		if k == name {
			return value
		}
		return getenv(k)
	}
	return c
}

// WithDevDefaults returns c with each kind's development default
// (jobs.EnvVar.Dev) set for the variables that are unset or empty, unless
// one of the variable's DevUnless is set, and the variables it set, in the
// kinds' order. `errand dev` and `errand bench` call it; neither names a
// kind.
func (c Config) WithDevDefaults() (Config, []jobs.EnvVar) {
	var set []jobs.EnvVar
	for _, ev := range c.KindVars {
		if ev.Dev == "" || c.Getenv(ev.Name) != "" || slices.ContainsFunc(ev.DevUnless, func(n string) bool { return c.Getenv(n) != "" }) {
			continue
		}
		c = c.WithEnv(ev.Name, ev.Dev)
		set = append(set, ev)
	}
	return c, set
}

// envVar documents one variable; `errand help` prints the table.
type envVar struct {
	Name    string
	Default string
	Help    string
	parse   func(c *Config, v string) error
}

// defaultQueues are errand's own queues' workers per replica; kinds add
// theirs (jobs.WithQueueWorkers) after them.
var defaultQueues = "email=20,webhooks=200,documents=8,reports=2,default=50"

// queueDefaults is ERRAND_QUEUES' default with the kinds' own queues.
func queueDefaults(kinds []jobs.Kind) string {
	s := defaultQueues
	for _, q := range jobs.OwnQueues(kinds) {
		s += fmt.Sprintf(",%s=%d", q.Name, q.Workers)
	}
	return s
}

// queueNames are the queues ERRAND_QUEUES may name: errand's, then the
// kinds' own.
func queueNames(kinds []jobs.Kind) []string {
	names := slices.Clone(jobs.Queues)
	for _, q := range jobs.OwnQueues(kinds) {
		names = append(names, q.Name)
	}
	return names
}

func envVars(kinds []jobs.Kind) []envVar {
	queues := queueDefaults(kinds)
	return []envVar{
		{"DATABASE_URL", "", "PostgreSQL connection string (a direct session connection: LISTEN/NOTIFY needs one)",
			func(c *Config, v string) error { c.DatabaseURL = v; return nil }},
		{"ERRAND_HTTP_ADDR", "127.0.0.1:8080", "address of /healthz, /readyz, /metrics, the dashboard at /ui/ (ERRAND_UI_PASSWORD) and the kinds' pages",
			func(c *Config, v string) error { c.HTTPAddr = v; return nil }},
		{"ERRAND_QUEUES", queues, "workers per queue, name=count pairs; 0 leaves a queue to other replicas (queues: " + strings.Join(queueNames(kinds), ", ") + ")",
			func(c *Config, v string) (err error) {
				c.Queues, err = parseQueues(queues, queueNames(kinds), v)
				return err
			}},
		{"ERRAND_SHUTDOWN_TIMEOUT", "30s", "on SIGTERM, how long running jobs may finish before they are cancelled and put back",
			durationVar(func(c *Config) *time.Duration { return &c.ShutdownTimeout }, 0)},
		{"ERRAND_MAX_ARGS_BYTES", "1048576", "largest args JSON an INSERT may carry, in bytes (errand run only raises the database's; errand migrate with it set sets it exactly)",
			func(c *Config, v string) (err error) { c.MaxArgsBytes, err = positiveInt(v); return err }},
		{"ERRAND_FETCH_COOLDOWN", "2ms", "least time between two fetches of one queue (River's FetchCooldown)",
			durationVar(func(c *Config) *time.Duration { return &c.FetchCooldown }, time.Millisecond)},
		{"ERRAND_FETCH_POLL_INTERVAL", "1s", "how often an idle queue polls when no notification arrives",
			durationVar(func(c *Config) *time.Duration { return &c.FetchPollInterval }, time.Millisecond)},
		{"ERRAND_POLL_ONLY", "false", "never LISTEN; poll only (set automatically behind a transaction-mode pooler)",
			func(c *Config, v string) (err error) { c.PollOnly, err = strconv.ParseBool(v); return err }},
		{"ERRAND_DB_MAX_CONNS", "20", "size of the connection pool (River's listener keeps one)",
			func(c *Config, v string) error {
				n, err := positiveInt(v)
				if err != nil || n < 4 || n > maxDBConns {
					return fmt.Errorf("want 4 to %d (River's listener holds one, fetches and completions need more)", maxDBConns)
				}
				c.DBMaxConns = n
				return nil
			}},
		{"ERRAND_RETRY_BASE", "1s", "first retry delay; each later one doubles (with jitter), up to 1h",
			durationVar(func(c *Config) *time.Duration { return &c.RetryBase }, time.Millisecond)},
		{"ERRAND_RESCUE_AFTER", "10s", "a dead replica's running jobs are available again within this (heartbeats on the database clock)",
			durationVar(func(c *Config) *time.Duration { return &c.RescueAfter }, 3*time.Second)},
		{"ERRAND_FAIRNESS", "on", "share each queue's workers fairly among workspaces with work, weighted by plan (off: River's first-come-first-served fetch, and no caps)",
			func(c *Config, v string) error {
				switch v {
				case "on":
					c.Fairness = true
				case "off":
					c.Fairness = false
				default:
					return fmt.Errorf("want on or off")
				}
				return nil
			}},
		{"ERRAND_WORKSPACE_CONCURRENCY", "0", "at most this many jobs of one workspace run at once in each queue, across replicas, unless its plan sets concurrency in errand.plans; 0: no cap",
			func(c *Config, v string) error {
				// The fetch takes it as a PostgreSQL integer: a larger value
				// would fail every fetch of every queue.
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > math.MaxInt32 {
					return fmt.Errorf("want a whole number of jobs, 0 or more, at most %d (0: no cap)", math.MaxInt32)
				}
				c.WorkspaceCap = n
				return nil
			}},
		// At least 10 minutes: the leader counts finished jobs for the usage
		// reports every minute, a minute behind (errand.job_counts), and must
		// see a job before River's cleaner deletes it.
		{"ERRAND_RETAIN_COMPLETED", "24h", "how long completed jobs are kept (an idempotency key holds while its job is kept); at least 10m",
			durationVar(func(c *Config) *time.Duration { return &c.RetainCompleted }, 10*time.Minute)},
		{"ERRAND_RETAIN_FAILED", "168h", "how long failed (discarded or cancelled) jobs are kept; at least 10m",
			durationVar(func(c *Config) *time.Duration { return &c.RetainFailed }, 10*time.Minute)},
		{"ERRAND_RETAIN_LOGS", "720h", "how long emails, webhook messages and attempts, superseded invoice versions and past schedule runs are kept (whatever is still in use is kept longer)",
			durationVar(func(c *Config) *time.Duration { return &c.RetainLogs }, time.Hour)},
		{"ERRAND_UI_PASSWORD", "", "turns on River's dashboard at /ui/ behind basic auth with this password (at least 12 characters); unset: no dashboard",
			func(c *Config, v string) error {
				if v != "" && len(v) < 12 {
					return fmt.Errorf("want at least 12 characters (the dashboard shows every workspace's jobs and args), got %d", len(v))
				}
				c.UIPassword = v
				return nil
			}},
		{"ERRAND_UI_USER", "errand", "the dashboard's basic auth user name",
			func(c *Config, v string) error {
				if strings.ContainsAny(v, ":") {
					return fmt.Errorf("a basic auth user name cannot hold a colon")
				}
				c.UIUser = v
				return nil
			}},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "turns on OpenTelemetry tracing: an OTLP/HTTP collector's base URL (spans go to <it>/v1/traces), e.g. http://otel-collector:4318",
			func(c *Config, v string) error {
				if v != "" {
					u, err := url.Parse(v)
					if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
						return fmt.Errorf("want an http or https URL such as http://otel-collector:4318")
					}
				}
				c.OTLPEndpoint = v
				return nil
			}},
		{"OTEL_SERVICE_NAME", "errand", "the service name on errand's spans",
			func(c *Config, v string) error { c.ServiceName = v; return nil }},
		{"ERRAND_LOG_LEVEL", "info", "debug, info, warn or error",
			func(c *Config, v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
		{"ERRAND_LOG_FORMAT", "auto", "json, text, or auto (json unless stdout is a terminal)",
			func(c *Config, v string) error {
				if !slices.Contains([]string{"auto", "json", "text"}, v) {
					return fmt.Errorf("want auto, json or text")
				}
				c.LogFormat = v
				return nil
			}},
		{"ERRAND_DEV_DIR", "", "errand dev: where its PostgreSQL keeps data (default: user cache dir, or /var/tmp/errand-dev as root)",
			func(c *Config, v string) error { c.DevDir = v; return nil }},
		{"ERRAND_PG_BINDIR", "", "errand dev and tests: PostgreSQL server binaries (default: pg_config --bindir, else /usr/lib/postgresql/*/bin)",
			func(c *Config, v string) error { c.PGBinDir = v; return nil }},
	}
}

// Load reads the environment through getenv: errand's own variables and
// those the kinds declare. It reports every bad value at once, one line each.
func Load(getenv func(string) string, kinds []jobs.Kind) (Config, error) {
	c := Config{Getenv: getenv}
	var errs []error
	for _, ev := range envVars(kinds) {
		v := getenv(ev.Name)
		if v == "" {
			v = ev.Default
		}
		if err := ev.parse(&c, v); err != nil {
			shown := strconv.Quote(v)
			if strings.HasSuffix(ev.Name, "_PASSWORD") {
				shown = "(hidden)"
			}
			errs = append(errs, fmt.Errorf("%s=%s: %w", ev.Name, shown, err))
		}
	}
	errs = append(errs, kindVarConflicts(kinds)...)
	c.KindVars = kindVars(kinds)
	failed := map[string]bool{}
	for _, ev := range c.KindVars {
		v := getenv(ev.Name)
		if v == "" {
			v = ev.Default
		}
		if ev.Check != nil {
			if err := ev.Check(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", ev.Name, v, err))
				failed[ev.Name] = true
			}
		}
	}
	// ERRAND_SCHEDULES and ERRAND_SCHEDULE_BACKFILL, with the rest: every
	// command refuses a bad entry, not only those that read the table. An
	// entry refused for a kind's variable that failed above is said once.
	if _, err := schedules.Load(getenv, kinds); err != nil {
		all := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			all = j.Unwrap()
		}
		for _, e := range all {
			var ve *schedules.VarError
			if errors.As(e, &ve) && failed[ve.Var] {
				continue
			}
			errs = append(errs, e)
		}
	}
	return c, errors.Join(errs...)
}

// kindVarConflicts are the kinds' variables that cannot be read as
// declared: one of errand's own (a kind reads it through its declaration,
// and `errand help` would list it twice), or one two kinds declare with
// different defaults or dev defaults (help shows, a kind reads and errand
// dev sets the first one's).
func kindVarConflicts(kinds []jobs.Kind) []error {
	own := map[string]bool{}
	for _, ev := range envVars(kinds) {
		own[ev.Name] = true
	}
	type declared struct{ kind, def, dev string }
	var errs []error
	first := map[string]declared{}
	for _, k := range kinds {
		for _, ev := range k.Env {
			f, seen := first[ev.Name]
			switch {
			case own[ev.Name]:
				errs = append(errs, fmt.Errorf("kind %s: declares %s, which is errand's own variable; give the kind's variable a name of its own", k.Name, ev.Name))
			case !seen:
				first[ev.Name] = declared{k.Name, ev.Default, ev.Dev}
			case f.def != ev.Default && f.kind != k.Name:
				errs = append(errs, fmt.Errorf("kind %s: declares %s with default %q, but kind %s declares it with default %q; kinds that share a variable declare the same default", k.Name, ev.Name, ev.Default, f.kind, f.def))
			case f.dev != ev.Dev && f.kind != k.Name:
				errs = append(errs, fmt.Errorf("kind %s: declares %s with dev default %q, but kind %s declares it with dev default %q; kinds that share a variable declare the same dev default", k.Name, ev.Name, ev.Dev, f.kind, f.dev))
			}
		}
	}
	return errs
}

// kindVars lists the kinds' variables once each, in the kinds' order (two
// kinds may share one, such as an API key).
func kindVars(kinds []jobs.Kind) []jobs.EnvVar {
	var out []jobs.EnvVar
	seen := map[string]bool{}
	for _, k := range kinds {
		for _, ev := range k.Env {
			if !seen[ev.Name] {
				seen[ev.Name] = true
				out = append(out, ev)
			}
		}
	}
	return out
}

// parseQueues reads ERRAND_QUEUES' value v over defaults; names are the
// queues it may name.
func parseQueues(defaults string, names []string, v string) (map[string]int, error) {
	out := map[string]int{}
	if err := mergeQueues(out, names, defaults); err != nil {
		return nil, err
	}
	if err := mergeQueues(out, names, v); err != nil {
		return nil, err
	}
	// River refuses to start a client that works no queue (its message
	// names neither the variable nor the fix).
	for _, n := range out {
		if n > 0 {
			return out, nil
		}
	}
	return nil, errors.New("every queue has 0 workers: a replica must work at least one")
}

// mergeQueues applies name=count pairs; queues not named keep their count.
func mergeQueues(into map[string]int, names []string, v string) error {
	for pair := range strings.SplitSeq(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, count, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("%q is not name=count", pair)
		}
		name = strings.TrimSpace(name)
		if !slices.Contains(names, name) {
			return fmt.Errorf("unknown queue %q (queues: %s)", name, strings.Join(names, ", "))
		}
		n, err := strconv.Atoi(strings.TrimSpace(count))
		if err != nil || n < 0 || n > 10000 {
			return fmt.Errorf("queue %s: worker count must be 0 (not worked by this replica) to 10000, got %q", name, count)
		}
		into[name] = n
	}
	return nil
}

// maxDBConns is the most connections ERRAND_DB_MAX_CONNS may ask for:
// more than PostgreSQL's own limit on max_connections (262,143) is a typo.
const maxDBConns = 10000

// positiveInt is a positive integer that fits PostgreSQL's integer (and
// pgx's int32 pool size): a larger one would fail, or wrap around, later.
func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("want a positive integer, at most %d", math.MaxInt32)
	}
	return n, nil
}

func durationVar(field func(*Config) *time.Duration, least time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a duration such as 30s or 500ms")
		}
		if d < least {
			return fmt.Errorf("must be at least %s", least)
		}
		*field(c) = d
		return nil
	}
}

// Help is `errand help`: the commands, then every variable with its default.
func Help(kinds []jobs.Kind) string {
	var b strings.Builder
	b.WriteString(`errand: a background job worker for multi-tenant SaaS apps, on PostgreSQL and River.

Usage: errand <command>

Commands:
  run              work jobs (the daemon; run N replicas)
  migrate          apply errand's and River's migrations (idempotent, safe to run concurrently)
  migrate status   show applied and pending migrations
  dev              run everything on a private local PostgreSQL (when DATABASE_URL is unset)
  bench            measure: bench throughput | latency | enqueue | scale | noisy (errand bench lists each mode's flags)
  help             this text

Environment:
`)
	line := func(name, def, help string) {
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(&b, "  %-28s default %s\n      %s\n", name, def, help)
	}
	for _, ev := range envVars(kinds) {
		line(ev.Name, ev.Default, ev.Help)
	}
	for _, ev := range kindVars(kinds) {
		line(ev.Name, ev.Default, ev.Help)
	}
	return b.String()
}
