package webhook

import (
	"context"
	"fmt"
	"testing"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// One batch holding deliveries of three workspaces runs their transactions
// side by side: each delivery reads its own workspace's message and
// endpoint and takes a slot; one that names another workspace's message
// finds nothing (row level security scopes each transaction); and the next
// batch logs the attempts in the right workspaces and gives every slot
// back.
func TestBatchOfSeveralWorkspacesKeepsEachInItsOwn(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.NewDatabase(t, true), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	type tenant struct{ ws, endpoint, message, url, body string }
	var tenants []tenant
	for i := range 3 {
		w, err := store.EnsureWorkspace(ctx, st, fmt.Sprintf("W%d", i), fmt.Sprintf("w%d", i))
		if err != nil {
			t.Fatal(err)
		}
		tn := tenant{ws: w.ID, url: fmt.Sprintf("https://hooks%d.example.com/in", i), body: fmt.Sprintf(`{"n": %d}`, i)}
		if err := st.Pool().QueryRow(ctx, `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, $2) RETURNING id::text`, tn.ws, tn.url).Scan(&tn.endpoint); err != nil {
			t.Fatal(err)
		}
		if err := st.Pool().QueryRow(ctx, `INSERT INTO errand.webhook_messages (workspace_id, event_type, body) VALUES ($1, 'a.b', $2) RETURNING id::text`, tn.ws, tn.body).Scan(&tn.message); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, tn)
	}
	d := &deliverer{cfg: config{concurrency: 10}}
	var batch []*call[book, delivery]
	for i, tn := range tenants {
		for j := range 2 {
			batch = append(batch, &call[book, delivery]{in: book{store: st, workspaceID: tn.ws,
				load: &wanted{jobID: int64(10*i + j + 1), attempt: 1, messageID: tn.message, endpointID: tn.endpoint}}})
		}
	}
	// Workspace 0 asks for workspace 1's message.
	batch = append(batch, &call[book, delivery]{in: book{store: st, workspaceID: tenants[0].ws,
		load: &wanted{jobID: 99, attempt: 1, messageID: tenants[1].message, endpointID: tenants[0].endpoint}}})
	d.flushBooks(batch)
	for i, c := range batch[:len(batch)-1] {
		tn := tenants[i/2]
		if c.err != nil {
			t.Fatalf("delivery %d of workspace %d: %v", i, i/2, c.err)
		}
		if o := c.out; !o.found || o.url != tn.url || string(o.body) != tn.body || !o.enabled || !o.slot {
			t.Errorf("delivery %d of workspace %d read %+v, want its own endpoint %s and message %s, with a slot", i, i/2, o, tn.url, tn.body)
		}
	}
	if c := batch[len(batch)-1]; c.err != nil || c.out.found || c.out.slot {
		t.Errorf("a delivery naming another workspace's message read %+v (error %v), want nothing found and no slot", c.out, c.err)
	}

	var done []*call[book, delivery]
	for _, c := range batch[:len(batch)-1] {
		w := c.in.load
		done = append(done, &call[book, delivery]{in: book{store: st, workspaceID: c.in.workspaceID,
			done: &attemptRow{workspaceID: c.in.workspaceID, messageID: w.messageID, endpointID: w.endpointID, jobID: w.jobID, attempt: w.attempt, status: 204}}})
	}
	d.flushBooks(done)
	for _, c := range done {
		if c.err != nil {
			t.Fatal(c.err)
		}
	}
	var wrong, logged, leases int
	if err := st.Pool().QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE a.workspace_id <> m.workspace_id OR a.workspace_id <> e.workspace_id), count(*),
		       (SELECT count(*) FROM errand.webhook_inflight)
		FROM errand.webhook_attempts a JOIN errand.webhook_messages m ON m.id = a.message_id JOIN errand.webhook_endpoints e ON e.id = a.endpoint_id`).Scan(&wrong, &logged, &leases); err != nil {
		t.Fatal(err)
	}
	if logged != 6 || wrong != 0 || leases != 0 {
		t.Errorf("%d attempts logged (%d in another workspace than their message's or endpoint's), %d slots still taken; want 6, 0, 0", logged, wrong, leases)
	}
}
