package errand

import (
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/errand-dev/errand/jobs"
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
	LogLevel          slog.Level
	LogFormat         string
	DevDir            string
	PGBinDir          string
	ResendAPIKey      string
	ResendBaseURL     string
	EmailFrom         string
	ResendRPS         float64
}

// envVar documents one variable; `errand help` prints the table.
type envVar struct {
	Name    string
	Default string
	Help    string
	parse   func(c *Config, v string) error
}

var defaultQueues = "email=20,webhooks=50,documents=4,reports=2,default=50"

func envVars() []envVar {
	return []envVar{
		{"DATABASE_URL", "", "PostgreSQL connection string (a direct session connection: LISTEN/NOTIFY needs one)",
			func(c *Config, v string) error { c.DatabaseURL = v; return nil }},
		{"ERRAND_HTTP_ADDR", "127.0.0.1:8080", "address of /healthz and /readyz",
			func(c *Config, v string) error { c.HTTPAddr = v; return nil }},
		{"ERRAND_QUEUES", defaultQueues, "workers per queue, name=count pairs (queues: " + strings.Join(jobs.Queues, ", ") + ")",
			func(c *Config, v string) (err error) { c.Queues, err = parseQueues(v); return err }},
		{"ERRAND_SHUTDOWN_TIMEOUT", "30s", "on SIGTERM, how long running jobs may finish before they are cancelled and put back",
			durationVar(func(c *Config) *time.Duration { return &c.ShutdownTimeout }, 0)},
		{"ERRAND_MAX_ARGS_BYTES", "1048576", "largest args JSON an INSERT may carry, in bytes",
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
				if err != nil || n < 4 {
					return fmt.Errorf("want at least 4 (River's listener holds one, fetches and completions need more)")
				}
				c.DBMaxConns = n
				return nil
			}},
		{"ERRAND_RETRY_BASE", "1s", "first retry delay; each later one doubles (with jitter), up to 1h",
			durationVar(func(c *Config) *time.Duration { return &c.RetryBase }, time.Millisecond)},
		{"ERRAND_RESCUE_AFTER", "10s", "a dead replica's running jobs are available again within this (heartbeats on the database clock)",
			durationVar(func(c *Config) *time.Duration { return &c.RescueAfter }, 3*time.Second)},
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
		{"RESEND_API_KEY", "", "Resend API key; unset means emails are captured locally (errand.emails), nothing leaves the machine",
			func(c *Config, v string) error { c.ResendAPIKey = v; return nil }},
		{"RESEND_BASE_URL", "https://api.resend.com", "Resend-compatible API endpoint",
			func(c *Config, v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return fmt.Errorf("want an http(s) URL")
				}
				c.ResendBaseURL = strings.TrimRight(v, "/")
				return nil
			}},
		{"ERRAND_EMAIL_FROM", "", "sender, e.g. `Acme <notifications@acme.com>`; required with RESEND_API_KEY",
			func(c *Config, v string) error {
				if v == "" {
					return nil
				}
				if _, err := mail.ParseAddress(v); err != nil || strings.ContainsAny(v, "\r\n") {
					return fmt.Errorf("want an address such as `Acme <notifications@acme.com>`")
				}
				c.EmailFrom = v
				return nil
			}},
		{"ERRAND_RESEND_RPS", "2", "Resend requests per second, shared by all replicas (Resend's limit is per team)",
			func(c *Config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f <= 0 || f > 1000 {
					return fmt.Errorf("want a number of requests per second above 0")
				}
				c.ResendRPS = f
				return nil
			}},
		{"ERRAND_DEV_DIR", "", "errand dev: where its PostgreSQL keeps data (default: user cache dir, or /var/tmp/errand-dev as root)",
			func(c *Config, v string) error { c.DevDir = v; return nil }},
		{"ERRAND_PG_BINDIR", "", "errand dev and tests: PostgreSQL server binaries (default: pg_config --bindir, else /usr/lib/postgresql/*/bin)",
			func(c *Config, v string) error { c.PGBinDir = v; return nil }},
	}
}

// LoadConfig reads the environment through getenv. It reports every bad value
// at once, one line each.
func LoadConfig(getenv func(string) string) (Config, error) {
	var c Config
	var errs []error
	for _, ev := range envVars() {
		v := getenv(ev.Name)
		if v == "" {
			v = ev.Default
		}
		if err := ev.parse(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", ev.Name, v, err))
		}
	}
	if c.ResendAPIKey != "" && c.EmailFrom == "" {
		errs = append(errs, fmt.Errorf("ERRAND_EMAIL_FROM is required when RESEND_API_KEY is set (e.g. `Acme <notifications@acme.com>`)"))
	}
	return c, errors.Join(errs...)
}

func parseQueues(v string) (map[string]int, error) {
	out := map[string]int{}
	if err := mergeQueues(out, defaultQueues); err != nil {
		return nil, err
	}
	if err := mergeQueues(out, v); err != nil {
		return nil, err
	}
	return out, nil
}

// mergeQueues applies name=count pairs; queues not named keep their count.
func mergeQueues(into map[string]int, v string) error {
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
		if !slices.Contains(jobs.Queues, name) {
			return fmt.Errorf("unknown queue %q (queues: %s)", name, strings.Join(jobs.Queues, ", "))
		}
		n, err := strconv.Atoi(strings.TrimSpace(count))
		if err != nil || n < 1 || n > 10000 {
			return fmt.Errorf("queue %s: worker count must be 1 to 10000, got %q", name, count)
		}
		into[name] = n
	}
	return nil
}

func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive integer")
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

func helpText() string {
	var b strings.Builder
	b.WriteString(`errand: a background job worker for multi-tenant SaaS apps, on PostgreSQL and River.

Usage: errand <command>

Commands:
  run              work jobs (the daemon; run N replicas)
  migrate          apply errand's and River's migrations (idempotent, safe to run concurrently)
  migrate status   show applied and pending migrations
  dev              run everything on a private local PostgreSQL (when DATABASE_URL is unset)
  bench            measure: bench throughput --jobs N [--baseline] | bench latency --samples N [--background-rps R]
  help             this text

Environment:
`)
	for _, ev := range envVars() {
		def := ev.Default
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(&b, "  %-28s default %s\n      %s\n", ev.Name, def, ev.Help)
	}
	return b.String()
}
