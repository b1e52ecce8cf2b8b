package errand_test

import (
	"os"
	"strings"
	"testing"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/internal/config"
	"gopkg.in/yaml.v3"
)

// No Docker engine runs here, so this checks what can be checked: the
// compose file parses and wires what the README promises.
func TestComposeFileRunsMigrateThenTwoReplicas(t *testing.T) {
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Deploy struct {
				Replicas int `yaml:"replicas"`
			} `yaml:"deploy"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	pg, ok := f.Services["postgres"]
	if !ok || !strings.HasPrefix(pg.Image, "postgres:") {
		t.Errorf("no postgres service: %+v", pg)
	}
	mig := f.Services["migrate"]
	if mig.Build == nil || strings.Join(mig.Command, " ") != "migrate" || mig.DependsOn["postgres"].Condition != "service_healthy" {
		t.Errorf("migrate service: %+v", mig)
	}
	run := f.Services["errand"]
	if run.Build == nil || strings.Join(run.Command, " ") != "run" || run.Deploy.Replicas != 2 ||
		run.DependsOn["migrate"].Condition != "service_completed_successfully" {
		t.Errorf("errand service: %+v", run)
	}
	for _, s := range []string{"migrate", "errand"} {
		env := f.Services[s].Environment
		if !strings.HasPrefix(env["DATABASE_URL"], "postgres://") {
			t.Errorf("%s: DATABASE_URL %q", s, env["DATABASE_URL"])
		}
		// The environment passes errand's own checks.
		if _, err := config.Load(func(k string) string { return env[k] }, errand.Builtin()); err != nil {
			t.Errorf("%s: errand refuses its environment: %v", s, err)
		}
	}
	// `errand run` needs either a Resend key and sender or explicit capture.
	if env := run.Environment; env["RESEND_API_KEY"] == "" && env["ERRAND_EMAIL_CAPTURE"] != "true" {
		t.Errorf("errand service: neither RESEND_API_KEY nor ERRAND_EMAIL_CAPTURE=true, so errand run refuses to start")
	}
	if strings.Join(f.Services["errand"].Command, " ") == "run" && f.Services["postgres"].Healthcheck.Test == nil {
		t.Errorf("postgres has no healthcheck, so depends_on service_healthy never passes")
	}
	if _, err := os.Stat("Dockerfile"); err != nil {
		t.Error(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "docker compose up") {
		t.Error("README does not tell how to start the compose file")
	}
}
