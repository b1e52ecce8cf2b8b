package invoice

import (
	"fmt"

	"github.com/errand-dev/errand/jobs"
)

// config is the kind's configuration, from the environment.
type config struct {
	paper string // PaperA4 or PaperLetter
}

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "ERRAND_INVOICE_PAPER", Default: PaperA4, Help: "paper size of invoice PDFs: A4 or Letter",
			Check: func(v string) error { _, err := parsePaper(v); return err }},
	}
}

// loadConfig reads the (already checked) variables.
func loadConfig(env jobs.Env) (config, error) {
	paper, err := parsePaper(env.Get("ERRAND_INVOICE_PAPER"))
	return config{paper: paper}, err
}

func parsePaper(v string) (string, error) {
	switch v {
	case PaperA4, "a4":
		return PaperA4, nil
	case PaperLetter, "letter":
		return PaperLetter, nil
	}
	return "", fmt.Errorf("%q is not a paper size errand knows: want A4 or Letter", v)
}
