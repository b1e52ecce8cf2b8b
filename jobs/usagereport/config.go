package usagereport

import (
	"strconv"

	"github.com/errand-dev/errand/jobs"
)

// config is the kind's configuration, from the environment.
type config struct {
	// skipEmpty: a workspace with no activity in the week gets no report.
	skipEmpty bool
}

func envVars() []jobs.EnvVar {
	return []jobs.EnvVar{
		{Name: "ERRAND_USAGE_REPORTS_SKIP_EMPTY", Default: "false", Help: "true: a workspace with no usage and no errand activity in the week gets no usage report (by default it gets a short one); the reports' own jobs and emails and digest.send jobs are not activity",
			Check: func(v string) error { _, err := strconv.ParseBool(v); return err }},
	}
}

func loadConfig(env jobs.Env) (config, error) {
	skip, err := strconv.ParseBool(env.Get("ERRAND_USAGE_REPORTS_SKIP_EMPTY"))
	return config{skipEmpty: skip}, err
}
