package email

import (
	"errors"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"github.com/errand-dev/errand/jobs"
)

const defaultBaseURL = "https://api.resend.com"

// config is the kind's configuration, from the environment.
type config struct {
	// apiKey is "" only with capture, or on a replica whose email queue
	// has 0 workers: loadConfig refuses it otherwise, so a secret that
	// failed to mount is not a silent capture mode.
	apiKey  string
	baseURL string
	from    string
	rps     float64
	capture bool // ERRAND_EMAIL_CAPTURE=true (never with apiKey)
}

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "RESEND_API_KEY", Help: "Resend API key; required for a replica that works the email queue, unless ERRAND_EMAIL_CAPTURE=true"},
		{Name: "RESEND_BASE_URL", Default: defaultBaseURL, Help: "Resend-compatible API endpoint (https; plain http only on a loopback host)",
			Check: func(v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return errors.New("want an http(s) URL")
				}
				// The API key travels in every request's headers.
				if u.Scheme == "http" && !jobs.IsLoopbackHost(u.Hostname()) {
					return errors.New("want https: plain http would send RESEND_API_KEY in clear text (http is allowed only for a loopback host such as 127.0.0.1)")
				}
				return nil
			}},
		{Name: "ERRAND_EMAIL_CAPTURE", Default: "false", Help: "true: without RESEND_API_KEY, store emails in errand.emails instead of sending them (development; `errand dev` sets it)",
			Dev: "true", DevUnless: []string{"RESEND_API_KEY"},
			Check: func(v string) error {
				if _, err := strconv.ParseBool(v); err != nil {
					return errors.New("want true or false")
				}
				return nil
			}},
		{Name: "ERRAND_EMAIL_FROM", Help: "sender, e.g. `Acme <notifications@acme.com>`; required with RESEND_API_KEY",
			Check: func(v string) error {
				if v == "" {
					return nil
				}
				if _, err := mail.ParseAddress(v); err != nil || strings.ContainsAny(v, "\r\n") {
					return errors.New("want an address such as `Acme <notifications@acme.com>`")
				}
				return nil
			}},
		{Name: "ERRAND_RESEND_RPS", Default: "2", Help: "Resend requests per second, shared by all replicas (Resend's limit is per team)",
			Check: func(v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f <= 0 || f > 1000 {
					return errors.New("want a number of requests per second above 0")
				}
				return nil
			}},
	}
}

// loadConfig reads the (already checked) variables and checks how they go
// together.
func loadConfig(env jobs.Env) (config, error) {
	c := config{
		apiKey:  strings.TrimSpace(env.Get("RESEND_API_KEY")),
		baseURL: strings.TrimRight(env.Get("RESEND_BASE_URL"), "/"),
		from:    env.Get("ERRAND_EMAIL_FROM"),
	}
	c.rps, _ = strconv.ParseFloat(env.Get("ERRAND_RESEND_RPS"), 64)
	c.capture, _ = strconv.ParseBool(env.Get("ERRAND_EMAIL_CAPTURE"))
	switch {
	case c.apiKey != "" && c.from == "":
		return c, errors.New("ERRAND_EMAIL_FROM is required when RESEND_API_KEY is set (e.g. `Acme <notifications@acme.com>`)")
	case c.apiKey != "" && c.capture:
		return c, errors.New("RESEND_API_KEY and ERRAND_EMAIL_CAPTURE=true are both set: unset one (capture mode never sends)")
	case c.apiKey == "" && !c.capture && env.Workers(jobs.QueueEmail) > 0:
		// A production secret that failed to mount must not turn into a
		// silent capture mode that sends nothing.
		return c, errors.New("RESEND_API_KEY is not set: set it (and ERRAND_EMAIL_FROM) to send emails through Resend, " +
			"or set ERRAND_EMAIL_CAPTURE=true to store them in errand.emails without sending (development), " +
			"or give this replica's email queue 0 workers (ERRAND_QUEUES=email=0)")
	}
	return c, nil
}
