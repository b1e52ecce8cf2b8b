package email

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"github.com/errand-dev/errand/jobs"
)

const defaultBaseURL = "https://api.resend.com"

// config is the kind's configuration, from the environment.
type config struct {
	apiKey  string // "" means capture mode
	baseURL string
	from    string
	rps     float64
}

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "RESEND_API_KEY", Help: "Resend API key; unset means emails are captured locally (errand.emails), nothing leaves the machine"},
		{Name: "RESEND_BASE_URL", Default: defaultBaseURL, Help: "Resend-compatible API endpoint",
			Check: func(v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return errors.New("want an http(s) URL")
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
	if c.apiKey != "" && c.from == "" {
		return c, fmt.Errorf("ERRAND_EMAIL_FROM is required when RESEND_API_KEY is set (e.g. `Acme <notifications@acme.com>`)")
	}
	return c, nil
}
