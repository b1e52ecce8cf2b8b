package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errand-dev/errand/errandtest"
)

// An app registers its customer's endpoint and dispatches an event, each
// with one SQL statement; the customer's receiver (here a local server,
// allowed by ERRAND_WEBHOOK_ALLOW_CIDRS) verifies the signature with the
// secret it was given.
func Example_dispatch() {
	var secret string
	verified := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		verified <- string(body[:len(`{"type":"invoice.paid"`)])
	}))
	defer receiver.Close()

	run, err := errandtest.StartExample(map[string]string{"ERRAND_WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer run.Stop()
	ctx := context.Background()
	ws, _ := run.Workspace("Acme", "acme")

	// The secret is generated; show it to the customer once.
	_ = run.Conn.QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types)
		VALUES ($1, $2, '{invoice.paid}') RETURNING secret`, ws, receiver.URL+"/webhooks").Scan(&secret)

	var id int64
	_ = run.Conn.QueryRow(ctx, `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'webhook.dispatch', '{
		"event_type": "invoice.paid",
		"event_id": "in_1001",
		"payload": {"invoice": "in_1001", "amount": 4200}
	}') RETURNING id`, ws).Scan(&id)

	status, _, _, err := run.Wait(id)
	fmt.Println(status, err)
	fmt.Println(<-verified)
	// Output:
	// completed <nil>
	// {"type":"invoice.paid"
}
