// Package webhook is errand's outgoing webhooks: kind "webhook.dispatch"
// records an event as a message and fans it out, kind "webhook.deliver"
// sends one message to one endpoint, signed as the Standard Webhooks
// specification says, retried on a schedule like Svix's, through a dialer
// that never reaches the private network. Both run on the webhooks queue.
// The kinds bring their configuration (config.go), their queries
// (queries.go), the address checks (guard.go) and signing (sign.go); their
// tables are in migrations/009_webhooks.sql. Decisions: docs/webhooks.md.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/jobs"
)

// The kinds' names in errand.jobs.
const (
	DispatchName = "webhook.dispatch"
	DeliverName  = "webhook.deliver"
)

// DispatchArgs are the args of kind "webhook.dispatch".
type DispatchArgs struct {
	// EventType is a name such as "invoice.paid": endpoints subscribe to it.
	EventType string `json:"event_type" errand:"required"`
	// Payload is the event's data, a JSON object, sent as the body's "data".
	Payload json.RawMessage `json:"payload" errand:"required"`
	// EventID is the app's id for the event: the same one twice in a
	// workspace makes no second message and no second delivery.
	EventID *string `json:"event_id,omitempty"`
}

var eventTypePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// Validate checks what the SQL contract cannot: the job fails at once.
func (a DispatchArgs) Validate() error {
	var problems []error
	if len(a.EventType) > 255 || !eventTypePattern.MatchString(a.EventType) {
		problems = append(problems, fmt.Errorf("event_type %q must be a name such as invoice.paid: letters, digits, _ and - between dots, at most 255 characters", a.EventType))
	}
	if p := bytes.TrimSpace(a.Payload); len(p) == 0 || p[0] != '{' {
		problems = append(problems, errors.New("payload must be a JSON object"))
	}
	if a.EventID != nil && (len(*a.EventID) == 0 || len(*a.EventID) > 255 || hasControl(*a.EventID)) {
		problems = append(problems, fmt.Errorf("event_id must be 1 to 255 characters without control characters, got %q", *a.EventID))
	}
	return errors.Join(problems...)
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// DeliverArgs are the args of kind "webhook.deliver": one message to one
// endpoint. webhook.dispatch and errand.webhook_replay enqueue them.
type DeliverArgs struct {
	MessageID  string `json:"message_id" errand:"required"`
	EndpointID string `json:"endpoint_id" errand:"required"`
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Validate checks the ids are uuids.
func (a DeliverArgs) Validate() error {
	var problems []error
	if !uuidPattern.MatchString(a.MessageID) {
		problems = append(problems, fmt.Errorf("message_id %q is not a uuid", a.MessageID))
	}
	if !uuidPattern.MatchString(a.EndpointID) {
		problems = append(problems, fmt.Errorf("endpoint_id %q is not a uuid", a.EndpointID))
	}
	return errors.Join(problems...)
}

// DispatchKind is kind "webhook.dispatch". Build it once per daemon
// (errand.Main does): its configuration is read when the daemon starts it.
func DispatchKind() jobs.Kind {
	d := &dispatcher{}
	return jobs.Define(DispatchName, jobs.QueueWebhooks, d.work,
		jobs.WithStrictArgs(),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(func(ctx context.Context, s *jobs.Setup) error {
			cfg, err := loadConfig(s.Env)
			d.cfg = cfg
			return err
		}),
		jobs.WithDescription("records a webhook event once and enqueues a webhook.deliver per subscribed endpoint"))
}

type dispatcher struct{ cfg config }

// work records the message and enqueues its deliveries in the transaction
// that completes the job: a retried dispatch cannot fan out twice, and a
// slow endpoint never delays another's delivery.
func (d *dispatcher) work(ctx context.Context, job *jobs.Job, args DispatchArgs) error {
	body, err := messageBody(args.EventType, args.Payload, time.Now())
	if err != nil {
		return jobs.Permanent(err)
	}
	return job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
		id, created, err := recordMessage(ctx, tx, job.WorkspaceID, job.ID, args.EventType, args.EventID, body)
		if err != nil || !created {
			return err
		}
		endpoints, err := subscribedEndpoints(ctx, tx, args.EventType)
		if err != nil || len(endpoints) == 0 {
			return err
		}
		// The endpoints were read under the workspace's scope; jobs are
		// enqueued through the contract as errand's own role.
		if err := job.Store().Unscope(ctx, tx); err != nil {
			return err
		}
		return enqueueDeliveries(ctx, tx, job.WorkspaceID, id, endpoints, d.cfg.maxAttempts())
	})
}

// messageBody is what is signed and sent, the same bytes on every attempt:
// {"type", "timestamp" (when errand recorded the event), "data"}.
func messageBody(eventType string, payload json.RawMessage, at time.Time) ([]byte, error) {
	var data bytes.Buffer
	if err := json.Compact(&data, payload); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	typ, err := json.Marshal(eventType)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `{"type":%s,"timestamp":"%s","data":%s}`, typ, at.UTC().Format("2006-01-02T15:04:05.000000Z"), data.Bytes()), nil
}

// userAgent names errand and its version (the module's, when it is built
// as one; "dev" from a source tree).
var userAgent = func() string {
	version := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok {
		mods := append([]*debug.Module{&bi.Main}, bi.Deps...)
		for _, m := range mods {
			if m.Path == "github.com/errand-dev/errand" && m.Version != "" && m.Version != "(devel)" {
				version = m.Version
			}
		}
	}
	return "errand-webhooks/" + version + " (+https://github.com/errand-dev/errand)"
}()
