package config

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigQueueErrors(t *testing.T) {
	cases := map[string]string{
		"a queue that does not exist":  "bogus=3",
		"a negative worker count":      "email=-1",
		"a pair without =":             "email",
		"a count that is not a number": "email=many",
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(map[string]string{"ERRAND_QUEUES": v}), nil)
			if err == nil || !strings.Contains(err.Error(), "ERRAND_QUEUES") {
				t.Errorf("ERRAND_QUEUES=%q: got %v", v, err)
			}
		})
	}
	cfg, err := Load(env(map[string]string{"ERRAND_QUEUES": "email=3"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queues["email"] != 3 || cfg.Queues["default"] != 50 {
		t.Errorf("queues %v: want email=3 and the other defaults kept", cfg.Queues)
	}
}
