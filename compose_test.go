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
	// docker compose fills ${VAR:-} from the shell: here, the README's
	// RESEND_API_KEY and ERRAND_EMAIL_FROM.
	shell := map[string]string{"RESEND_API_KEY": "re_test", "ERRAND_EMAIL_FROM": "Acme <notifications@acme.test>"}
	expand := func(env map[string]string, shell map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range env {
			out[k] = os.Expand(v, func(name string) string { return shell[strings.TrimSuffix(name, ":-")] })
		}
		return out
	}
	for _, s := range []string{"migrate", "errand"} {
		env := expand(f.Services[s].Environment, shell)
		if !strings.HasPrefix(env["DATABASE_URL"], "postgres://") {
			t.Errorf("%s: DATABASE_URL %q", s, env["DATABASE_URL"])
		}
		// The environment passes errand's own checks.
		if _, err := config.Load(func(k string) string { return env[k] }, errand.Builtin()); err != nil {
			t.Errorf("%s: errand refuses its environment: %v", s, err)
		}
	}
	// The replicas send through Resend with the shell's key, and never
	// capture by themselves: without the key errand run refuses to start.
	if env := expand(run.Environment, shell); env["RESEND_API_KEY"] != "re_test" || env["ERRAND_EMAIL_FROM"] == "" {
		t.Errorf("errand service does not take RESEND_API_KEY and ERRAND_EMAIL_FROM from the shell: %v", run.Environment)
	}
	if env := expand(run.Environment, nil); env["RESEND_API_KEY"] != "" || env["ERRAND_EMAIL_CAPTURE"] == "true" {
		t.Errorf("errand service captures or has a key of its own without the shell's: %v", env)
	}
	// The capture overlay is the way to try it without Resend.
	rawOverlay, err := os.ReadFile("docker-compose.capture.yml")
	if err != nil {
		t.Fatal(err)
	}
	var overlay struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(rawOverlay, &overlay); err != nil {
		t.Fatalf("docker-compose.capture.yml does not parse: %v", err)
	}
	merged := expand(run.Environment, nil)
	for k, v := range overlay.Services["errand"].Environment {
		merged[k] = v
	}
	if merged["ERRAND_EMAIL_CAPTURE"] != "true" || merged["RESEND_API_KEY"] != "" {
		t.Errorf("docker-compose.capture.yml does not turn capture on for the errand service: %v", merged)
	}
	if _, err := config.Load(func(k string) string { return merged[k] }, errand.Builtin()); err != nil {
		t.Errorf("errand refuses the capture overlay's environment: %v", err)
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
	for _, want := range []string{"docker compose up", "docker-compose.capture.yml"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README does not tell how to start the compose file: no %q", want)
		}
	}
}
