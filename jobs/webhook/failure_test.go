package webhook

import (
	"context"
	"testing"
	"time"
)

// A failure is counted against its endpoint by recordFailure's own UPDATE:
// enabled stays true at the first failure (failing_since was NULL, and
// NOT (false OR NULL) would be NULL), and turns false for a 410 or a
// failure past disableAfter, without errand.webhook_endpoint_check (which
// turns a NULL enabled into true) to set it right.
func TestRecordFailureSetsEnabledWithoutTheTrigger(t *testing.T) {
	ctx := context.Background()
	st := bookStore(t)
	tn := newTenant(t, st, 0)
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `ALTER TABLE errand.webhook_endpoints DISABLE TRIGGER webhook_endpoint_check`); err != nil {
		t.Fatal(err)
	}
	const day = 24 * time.Hour
	fail := func(job int64, gone bool) (bool, string) {
		t.Helper()
		a := attemptRow{workspaceID: tn.ws, messageID: tn.message, endpointID: tn.endpoint, jobID: job, attempt: 1, status: 500, err: "answered 500 Internal Server Error"}
		disabled, reason, err := recordFailure(ctx, tx, a, gone, "the endpoint answered 410 Gone", 5*day, "5d")
		if err != nil {
			t.Fatalf("failure of job %d: %v", job, err)
		}
		return disabled, reason
	}
	state := func() (enabled *bool, failing bool) {
		t.Helper()
		if err := tx.QueryRow(ctx, `SELECT enabled, failing_since IS NOT NULL FROM errand.webhook_endpoints WHERE id = $1`, tn.endpoint).Scan(&enabled, &failing); err != nil {
			t.Fatal(err)
		}
		return enabled, failing
	}

	if disabled, _ := fail(1, false); disabled {
		t.Error("the first failure disabled the endpoint")
	}
	if enabled, failing := state(); enabled == nil || !*enabled || !failing {
		t.Fatalf("after the first failure: enabled %v, failing %v; want true, true", enabled, failing)
	}
	if _, err := tx.Exec(ctx, `UPDATE errand.webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1`, tn.endpoint); err != nil {
		t.Fatal(err)
	}
	if disabled, reason := fail(2, false); !disabled || reason == "" {
		t.Errorf("a failure six days into failing: disabled %v (%q), want disabled with a reason", disabled, reason)
	}
	if enabled, _ := state(); enabled == nil || *enabled {
		t.Errorf("enabled %v after the endpoint was disabled, want false", enabled)
	}
}
