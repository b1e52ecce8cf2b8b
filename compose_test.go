package errand_test

import (
	"os"
	"strings"
	"testing"

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
		if !strings.HasPrefix(f.Services[s].Environment["DATABASE_URL"], "postgres://") {
			t.Errorf("%s: DATABASE_URL %q", s, f.Services[s].Environment["DATABASE_URL"])
		}
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
