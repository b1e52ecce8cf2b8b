package errand_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// badInput is one malformed input a user can send. In sql, $1 is a live
// workspace and $2 a deleted one. Either the INSERT is refused (code and
// message) and nothing is enqueued, or the job fails on its first attempt
// with failed in last_error.
type badInput struct {
	name    string
	sql     string
	code    string
	message string
	failed  string
}

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// Invoices and their lines as an app inserts them; invoiceThen makes
// invoice ...c001 in $1 first, in the same implicit transaction.
const (
	newInvoice     = `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency) VALUES `
	newInvoiceItem = `INSERT INTO errand.invoice_items (invoice_id, workspace_id, quantity, unit_amount, tax_rate) VALUES `
	invoiceThen    = `INSERT INTO errand.invoices (id, workspace_id, number, customer_name, currency) VALUES ('00000000-0000-0000-0000-00000000c001', $1, 'C-9', 'Ann', 'EUR'); `
)

// webhookEndpointThen makes webhook endpoint ...e001 in $1 first, in the
// same implicit transaction, for the cases that update one.
const webhookEndpointThen = `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ('00000000-0000-0000-0000-00000000e001', $1, 'https://example.com/hook'); `

// contractCorpus: what the SQL contract refuses for every kind.
var contractCorpus = []badInput{
	{name: "an unknown kind", sql: insertJob + `($1, 'pingg', '{}')`, code: "22023", message: `unknown job kind "pingg" (known kinds: `},
	{name: "a kind in the wrong case", sql: insertJob + `($1, 'PING', '{}')`, code: "22023", message: `unknown job kind "PING"`},
	{name: "a kind with a trailing space", sql: insertJob + `($1, 'ping ', '{}')`, code: "22023", message: `unknown job kind "ping "`},
	{name: "an empty kind", sql: insertJob + `($1, '', '{}')`, code: "22023", message: `unknown job kind ""`},
	{name: "kind left out", sql: `INSERT INTO errand.jobs (workspace_id, args) VALUES ($1, '{}')`, code: "23502", message: "kind is required"},
	{name: "kind set to NULL", sql: insertJob + `($1, NULL, '{}')`, code: "23502", message: "kind is required"},
	{name: "NULL workspace_id", sql: insertJob + `(NULL, 'ping', '{}')`, code: "23502", message: `workspace_id is required for kind "ping"`},
	{name: "workspace_id left out", sql: `INSERT INTO errand.jobs (kind, args) VALUES ('ping', '{}')`, code: "23502", message: "workspace_id is required"},
	{name: "a workspace that never existed", sql: insertJob + `('00000000-0000-0000-0000-000000000001', 'ping', '{}')`, code: "23503", message: "workspace 00000000-0000-0000-0000-000000000001 does not exist"},
	{name: "a deleted workspace", sql: insertJob + `($2, 'ping', '{}')`, code: "23503", message: "does not exist in errand.workspaces"},
	{name: "a workspace slug instead of its id", sql: insertJob + `('acme', 'ping', '{}')`, code: "22P02", message: "invalid input syntax for type uuid"},
	{name: "args that are an array", sql: insertJob + `($1, 'ping', '[1, 2]')`, code: "22023", message: "args must be a JSON object, got array"},
	{name: "args that are a string", sql: insertJob + `($1, 'ping', '"hello"')`, code: "22023", message: "args must be a JSON object, got string"},
	{name: "args that are a number", sql: insertJob + `($1, 'ping', '42')`, code: "22023", message: "args must be a JSON object, got number"},
	{name: "args that are JSON null", sql: insertJob + `($1, 'ping', 'null')`, code: "22023", message: "args must be a JSON object, got null"},
	{name: "args set to SQL NULL", sql: insertJob + `($1, 'ping', NULL)`, code: "22023", message: "args must be a JSON object, got NULL"},
	{name: "args that are not JSON", sql: insertJob + `($1, 'ping', '{sleep_ms: 1}')`, code: "22P02", message: "invalid input syntax for type json"},
	{name: "args over the size limit", sql: insertJob + `($1, 'ping', jsonb_build_object('pad', repeat('x', 1048576)))`, code: "54000", message: "over the limit of 1048576 bytes (ERRAND_MAX_ARGS_BYTES)"},
	{name: "args missing a required field", sql: insertJob + `($1, 'test.scoped', '{"fail": false}')`, code: "22023", message: `args for kind "test.scoped" are missing required field(s): note`},
	{name: "a required field set to null", sql: insertJob + `($1, 'test.scoped', '{"note": null}')`, code: "22023", message: "missing required field(s): note"},
	{name: "priority 5", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 5)`, code: "23514", message: "priority must be between 1 and 4, got 5"},
	{name: "priority 0", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', 0)`, code: "23514", message: "priority must be between 1 and 4, got 0"},
	{name: "a negative priority", sql: `INSERT INTO errand.jobs (workspace_id, kind, priority) VALUES ($1, 'ping', -1)`, code: "23514", message: "got -1"},
	{name: "max_attempts 0", sql: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 0)`, code: "23514", message: "max_attempts must be between 1 and 1000, got 0"},
	{name: "max_attempts over 1000", sql: `INSERT INTO errand.jobs (workspace_id, kind, max_attempts) VALUES ($1, 'ping', 100000)`, code: "23514", message: "got 100000"},
	{name: "an empty idempotency_key", sql: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', '')`, code: "23514", message: "idempotency_key must be 1 to 255 characters, got 0"},
	{name: "an idempotency_key of 300 characters", sql: `INSERT INTO errand.jobs (workspace_id, kind, idempotency_key) VALUES ($1, 'ping', repeat('k', 300))`, code: "23514", message: "got 300"},
	{name: "run_at that is not a time", sql: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'tomorrow-ish')`, code: "22007", message: "invalid input syntax for type timestamp"},
	{name: "run_at infinity", sql: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', 'infinity')`, code: "22023", message: "errand: run_at must be a finite time, got infinity"},
	{name: "run_at -infinity", sql: `INSERT INTO errand.jobs (workspace_id, kind, run_at) VALUES ($1, 'ping', '-infinity')`, code: "22023", message: "errand: run_at must be a finite time, got -infinity"},
	{name: "enqueue_many with run_at -infinity in its second row", sql: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{ping,ping}', run_at => ARRAY[now(), '-infinity'])`, code: "22023", message: "errand: run_at must be a finite time, got -infinity (row 2)"},
	{name: "enqueue_many with kinds indexed from 0", sql: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '[0:1]={ping,pingg}')`, code: "22023", message: "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [0:1]"},
	{name: "enqueue_many with a two-dimensional array", sql: `SELECT errand.enqueue_many(ARRAY[$1, $1]::uuid[], '{{ping},{ping}}')`, code: "22023", message: "errand: enqueue_many: kind must be a one-dimensional array starting at 1, got [1:2][1:1]"},
	{name: "a kind named with a slash", sql: `INSERT INTO errand.kinds (kind, queue) VALUES ('report/pdf', 'reports')`, code: "23514", message: `violates check constraint "kind_without_slash"`},
	{name: "one bad row among good ones", sql: insertJob + `($1, 'ping', '{}'), ($1, 'ping', '[]'), ($1, 'ping', '{}')`, code: "22023", message: "args must be a JSON object"},
	{name: "enqueue() with an unknown kind", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'nope')`, code: "22023", message: `unknown job kind "nope"`},
	{name: "enqueue() with NULL args", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', args => NULL)`, code: "22023", message: "got NULL"},
	{name: "enqueue() with a parameter that does not exist", sql: `SELECT errand.enqueue(workspace_id => $1, kind => 'ping', queue => 'email')`, code: "42883", message: "function errand.enqueue"},
	// Outgoing webhooks: endpoints as an app inserts them, the kinds' args,
	// and the SQL functions (migrations/009_webhooks.sql).
	{name: "a webhook endpoint without a url", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, NULL)`, code: "23502", message: "webhook endpoint url is required"},
	{name: "a webhook endpoint url with another scheme", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'ftp://example.com/hook')`, code: "22023", message: "must start with http:// or https://, got 'ftp://example.com/hook'"},
	{name: "a webhook endpoint url that is not a url", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'example.com/hook')`, code: "22023", message: "must start with http:// or https://"},
	{name: "a webhook endpoint url without a host", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https:///hook')`, code: "22023", message: "webhook endpoint url has no host"},
	{name: "a webhook endpoint url with a user and password", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://user:secret@example.com/hook')`, code: "22023", message: "must not carry a user or password"},
	{name: "a webhook endpoint url over 2048 characters", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/' || repeat('a', 2040))`, code: "22023", message: "is 2060 characters, at most 2048"},
	{name: "a webhook endpoint url with a space", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/my hook')`, code: "22023", message: "must not contain spaces, control characters or backslashes"},
	{name: "a webhook endpoint url with a backslash before an @", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com\@127.0.0.1/')`, code: "22023", message: "backslashes"},
	{name: "a webhook endpoint url with port 99999", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com:99999/')`, code: "22023", message: "has an invalid port '99999' (a port is 1 to 65535)"},
	// What every delivery would refuse or fail to reach (migrations/052_webhook_url_parses.sql).
	{name: "a webhook endpoint url with a % before two letters", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/%zz')`, code: "22023", message: "webhook endpoint url has '%zz' in its path: a % must start an escape of two hex digits (write a % itself as %25)"},
	{name: "a webhook endpoint url ending in a lone %", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook%')`, code: "22023", message: "has '%' in its path"},
	{name: "a webhook endpoint url with a % before two letters in the fragment", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook#%zz')`, code: "22023", message: "has '%zz' in its fragment"},
	{name: "a webhook endpoint url with a percent sign unescaped in the query", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook?discount=50%')`, code: "22023", message: "has '%' in its query"},
	{name: "a webhook endpoint url whose host is three dots", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://.../')`, code: "22023", message: "webhook endpoint url host '...' has an empty label (a dot at its start or two dots in a row)"},
	{name: "a webhook endpoint url with two dots in a row in its host", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://a..b/')`, code: "22023", message: "host 'a..b' has an empty label"},
	{name: "a webhook endpoint url with a word after its IPv6 address", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2606:4700::1111]x/')`, code: "22023", message: "host [2606:4700::1111] is followed by 'x', which is not a port (a port follows a colon: [2606:4700::1111]:8443)"},
	{name: "a webhook endpoint url with a non-ASCII host", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://bücher.example/')`, code: "22023", message: "xn-- form"},
	{name: "a webhook endpoint on loopback", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://127.0.0.1:8080/hook')`, code: "22023", message: "host 127.0.0.1 is loopback: errand does not connect there"},
	{name: "a webhook endpoint on loopback in decimal", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://2130706433/')`, code: "22023", message: "host 2130706433 (the IPv4 address 127.0.0.1 written another way) is loopback"},
	{name: "a webhook endpoint on loopback in octal", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://0177.0.0.1/')`, code: "22023", message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{name: "a webhook endpoint on loopback in hex", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://0x7f.0.0.1/')`, code: "22023", message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{name: "a webhook endpoint on loopback, shortened", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://127.1/')`, code: "22023", message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{name: "a webhook endpoint on localhost", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://localhost:3000/hook')`, code: "22023", message: "host localhost is loopback"},
	{name: "a webhook endpoint on the cloud metadata address", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://169.254.169.254/latest/meta-data/')`, code: "22023", message: "is link-local"},
	{name: "a webhook endpoint on the cloud metadata address in decimal", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://2852039166/')`, code: "22023", message: "169.254.169.254 written another way) is link-local"},
	{name: "a webhook endpoint in a private network", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://10.0.0.5/hook')`, code: "22023", message: "is private (RFC 1918)"},
	{name: "a webhook endpoint in carrier-grade NAT space", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://100.64.1.1/')`, code: "22023", message: "carrier-grade NAT"},
	{name: "a webhook endpoint on a written-as-number host that is no address", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://1.2.3.999/')`, code: "22023", message: "is written as a number but is not a valid IPv4 address"},
	{name: "a webhook endpoint on IPv6 loopback", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::1]:8080/')`, code: "22023", message: "host [::1] is loopback"},
	{name: "a webhook endpoint on IPv4-mapped loopback", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::ffff:127.0.0.1]/')`, code: "22023", message: "the IPv4-mapped form of 127.0.0.1, which is loopback"},
	{name: "a webhook endpoint on IPv4-compatible IPv6", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::127.0.0.1]/')`, code: "22023", message: "IPv4-compatible IPv6"},
	{name: "a webhook endpoint on NAT64 of the metadata address", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[64:ff9b::a9fe:a9fe]/')`, code: "22023", message: "the NAT64 form of 169.254.169.254, which is link-local"},
	{name: "a webhook endpoint on 6to4", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2002:a9fe:a9fe::1]/')`, code: "22023", message: "6to4"},
	{name: "a webhook endpoint on Teredo", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/')`, code: "22023", message: "Teredo"},
	{name: "a webhook endpoint on an IPv6 unique local address", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[fd12::1]/')`, code: "22023", message: "unique local"},
	{name: "a webhook endpoint with an IPv6 zone", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[fe80::1%25eth0]/')`, code: "22023", message: "carries an IPv6 zone"},
	{name: "a webhook endpoint with a malformed IPv6 host", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::1/')`, code: "22023", message: "unterminated IPv6 address"},
	{name: "a webhook endpoint secret without whsec_", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')`, code: "22023", message: `secret must be "whsec_" followed by the base64 of 24 to 64 random bytes`},
	{name: "a webhook endpoint secret of 3 bytes", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'whsec_YWJj')`, code: "22023", message: "secret is 3 bytes, want 24 to 64"},
	{name: "a webhook endpoint secret that is not base64", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'whsec_not-base64!')`, code: "22023", message: `secret must be "whsec_"`},
	{name: "a webhook endpoint subscribed to an empty event type", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', '{invoice.paid,""}')`, code: "22023", message: "event_types must be names such as invoice.paid"},
	{name: "a webhook endpoint subscribed to a NULL event type", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', ARRAY['invoice.paid', NULL])`, code: "22023", message: "got NULL"},
	{name: "a webhook endpoint subscribed to a type with a space", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', '{"invoice paid"}')`, code: "22023", message: "got 'invoice paid'"},
	{name: "a webhook endpoint without a workspace", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES (NULL, 'https://example.com/')`, code: "23502", message: "webhook endpoint workspace_id is required"},
	{name: "a webhook endpoint of a deleted workspace", sql: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($2, 'https://example.com/')`, code: "23503", message: "does not exist in errand.workspaces"},
	{name: "webhook.dispatch without event_type", sql: insertJob + `($1, 'webhook.dispatch', '{"payload": {}}')`, code: "22023", message: `args for kind "webhook.dispatch" are missing required field(s): event_type`},
	{name: "webhook.dispatch without payload", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid"}')`, code: "22023", message: "missing required field(s): payload"},
	{name: "webhook.dispatch with a null payload", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": null}')`, code: "22023", message: "missing required field(s): payload"},
	{name: "webhook.deliver without endpoint_id", sql: insertJob + `($1, 'webhook.deliver', '{"message_id": "00000000-0000-0000-0000-000000000001"}')`, code: "22023", message: "missing required field(s): endpoint_id"},
	{name: "webhook_replay of a message that does not exist", sql: `SELECT errand.webhook_replay('00000000-0000-0000-0000-000000000001')`, code: "23503", message: "webhook message 00000000-0000-0000-0000-000000000001 does not exist"},
	{name: "webhook_replay of NULL", sql: `SELECT errand.webhook_replay(NULL)`, code: "23503", message: "webhook message NULL does not exist"},
	{name: "webhook_replay of something that is not a uuid", sql: `SELECT errand.webhook_replay('msg_1')`, code: "22P02", message: "invalid input syntax for type uuid"},
	{name: "webhook_rotate_secret of an endpoint that does not exist", sql: `SELECT errand.webhook_rotate_secret('00000000-0000-0000-0000-000000000001')`, code: "23503", message: "webhook endpoint 00000000-0000-0000-0000-000000000001 does not exist"},
	{name: "a webhook endpoint url updated to loopback", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'http://127.0.0.1:8080/hook' WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "22023", message: "host 127.0.0.1 is loopback: errand does not connect there"},
	{name: "a webhook endpoint url updated to a private address in hex", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'http://0xa000001/' WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "22023", message: "(the IPv4 address 10.0.0.1 written another way) is private (RFC 1918)"},
	{name: "a webhook endpoint url updated to something that is not a url", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'example.com/hook' WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "22023", message: "must start with http:// or https://"},
	{name: "a webhook endpoint url updated to NULL", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = NULL WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "23502", message: "webhook endpoint url is required"},
	{name: "a webhook endpoint secret updated to 3 bytes", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET secret = 'whsec_YWJj' WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "22023", message: "secret is 3 bytes, want 24 to 64"},
	{name: "a webhook endpoint moved to another workspace", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET workspace_id = $2 WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "23514", message: "a webhook endpoint cannot move to another workspace"},
	{name: "a webhook endpoint given another id", sql: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET id = '00000000-0000-0000-0000-00000000e002' WHERE id = '00000000-0000-0000-0000-00000000e001'`, code: "23514", message: "a webhook endpoint's id cannot change"},
	// Tracing (migrations/017_traceparent.sql).
	{name: "a traceparent that is not W3C trace context", sql: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', 'trace-123')`, code: "22023", message: `traceparent must be a W3C trace context traceparent such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, got "trace-123"`},
	{name: "a traceparent with an all-zero trace id", sql: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', '00-00000000000000000000000000000000-00f067aa0ba902b7-01')`, code: "22023", message: "traceparent must be a W3C trace context traceparent"},
	{name: "a traceparent in upper case", sql: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01')`, code: "22023", message: "traceparent must be a W3C trace context traceparent"},
	{name: "a traceparent of the invalid version ff", sql: `INSERT INTO errand.jobs (workspace_id, kind, args, traceparent) VALUES ($1, 'ping', '{}', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')`, code: "22023", message: "traceparent must be a W3C trace context traceparent"},
	// Invoices (migrations/012_invoices.sql): what could never render.
	{name: "invoice.render without invoice_id", sql: insertJob + `($1, 'invoice.render', '{"email_to": "ann@example.com"}')`, code: "22023", message: `args for kind "invoice.render" are missing required field(s): invoice_id`},
	{name: "an invoice in an unknown currency", sql: newInvoice + `($1, 'C-1', 'Ann', 'EUX')`, code: "22023", message: "invoice currency 'EUX' is not an ISO 4217 code errand knows"},
	{name: "an invoice without a currency", sql: newInvoice + `($1, 'C-1', 'Ann', NULL)`, code: "23502", message: "invoice currency is required"},
	{name: "an invoice number that is a zero-width space", sql: newInvoice + `($1, E'\u200b', 'Ann', 'EUR')`, code: "23502", message: "it has no visible character, only U+200B"},
	{name: "an invoice customer name that is a tab", sql: newInvoice + `($1, 'C-1', E'\t', 'EUR')`, code: "23502", message: "invoice customer_name is required"},
	{name: "an invoice of a deleted workspace", sql: newInvoice + `($2, 'C-1', 'Ann', 'EUR')`, code: "23503", message: "does not exist in errand.workspaces"},
	// Dates no PDF can print (migrations/051_invoice_printable_dates.sql).
	{name: "an invoice issued at infinity", sql: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', 'infinity')`, code: "22023", message: "errand: invoice issued_at must be a date, got infinity"},
	{name: "an invoice due at infinity for no due date", sql: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, due_at) VALUES ($1, 'C-1', 'Ann', 'EUR', 'infinity')`, code: "22023", message: "errand: invoice due_at must be a date, got infinity"},
	{name: "an invoice issued at -infinity", sql: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '-infinity')`, code: "22023", message: "errand: invoice issued_at must be a date, got -infinity"},
	{name: "an invoice issued before year 1", sql: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, issued_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '0001-12-31 BC')`, code: "22023", message: "issued_at must be from 0001-01-01 to 9999-12-31 (a PDF's dates have four-digit years), got 0001-12-31 BC"},
	{name: "an invoice due in year 10000", sql: `INSERT INTO errand.invoices (workspace_id, number, customer_name, currency, due_at) VALUES ($1, 'C-1', 'Ann', 'EUR', '10000-01-01')`, code: "22023", message: "due_at must be from 0001-01-01 to 9999-12-31"},
	{name: "an invoice item with a negative quantity", sql: invoiceThen + newInvoiceItem + `('00000000-0000-0000-0000-00000000c001', $1, -1, 500, 0)`, code: "23514", message: "invoice item quantity must not be negative, got -1"},
	{name: "an invoice item in another workspace than its invoice", sql: invoiceThen + newInvoiceItem + `('00000000-0000-0000-0000-00000000c001', $2, 1, 500, 0)`, code: "23503", message: "is not its invoice's"},
	{name: "an invoice item of an invoice that does not exist", sql: newInvoiceItem + `('00000000-0000-0000-0000-00000000c002', $1, 1, 500, 0)`, code: "23503", message: "invoice 00000000-0000-0000-0000-00000000c002 does not exist"},
	{name: "an invoice item with a tax rate over 100", sql: invoiceThen + newInvoiceItem + `('00000000-0000-0000-0000-00000000c001', $1, 1, 500, 120)`, code: "23514", message: "tax_rate is a percentage from 0 to 100"},
}

// pingCorpus: what only the worker can tell, failed at once.
var pingCorpus = []badInput{
	{name: "sleep_ms as a string", sql: insertJob + `($1, 'ping', '{"sleep_ms": "100"}')`, failed: "decode args: json: cannot unmarshal string"},
	{name: "sleep_ms with a fraction", sql: insertJob + `($1, 'ping', '{"sleep_ms": 1.5}')`, failed: "decode args: json: cannot unmarshal number 1.5"},
	{name: "sleep_ms as an object", sql: insertJob + `($1, 'ping', '{"sleep_ms": {"ms": 1}}')`, failed: "decode args"},
	{name: "a negative sleep_ms", sql: insertJob + `($1, 'ping', '{"sleep_ms": -1}')`, failed: "sleep_ms must be between 0 and 30000, got -1"},
	{name: "sleep_ms over 30 s", sql: insertJob + `($1, 'ping', '{"sleep_ms": 30001}')`, failed: "sleep_ms must be between 0 and 30000, got 30001"},
	{name: "sleep_ms beyond int64", sql: insertJob + `($1, 'ping', '{"sleep_ms": 1e30}')`, failed: "decode args"},
	{name: "fail_times negative", sql: insertJob + `($1, 'ping', '{"fail_times": -2}')`, failed: "fail_times must not be negative, got -2"},
	{name: "fail_times as a boolean", sql: insertJob + `($1, 'ping', '{"fail_times": true}')`, failed: "decode args: json: cannot unmarshal bool"},
	{name: "a tenant kind whose note is a number", sql: insertJob + `($1, 'test.scoped', '{"note": 7}')`, failed: "decode args: json: cannot unmarshal number"},
	{name: "webhook.dispatch with a payload that is an array", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": [1, 2]}')`, failed: "payload must be a JSON object"},
	{name: "webhook.dispatch with a payload that is a string", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": "paid"}')`, failed: "payload must be a JSON object"},
	{name: "webhook.dispatch with an event_type with a space", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice paid", "payload": {}}')`, failed: `event_type "invoice paid" must be a name such as invoice.paid`},
	{name: "webhook.dispatch with an event_type of 300 characters", sql: insertJob + `($1, 'webhook.dispatch', jsonb_build_object('event_type', repeat('e', 300), 'payload', '{}'::jsonb))`, failed: "at most 255 characters"},
	{name: "webhook.dispatch with an event_type that is a number", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": 7, "payload": {}}')`, failed: "decode args: json: cannot unmarshal number"},
	{name: "webhook.dispatch with an empty event_id", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": {}, "event_id": ""}')`, failed: `event_id must be 1 to 255 characters without control characters, got ""`},
	{name: "webhook.dispatch with an event_id that is a number", sql: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": {}, "event_id": 42}')`, failed: "decode args: json: cannot unmarshal number"},
	{name: "webhook.deliver with ids that are not uuids", sql: insertJob + `($1, 'webhook.deliver', '{"message_id": "msg_1", "endpoint_id": "7"}')`, failed: `message_id "msg_1" is not a uuid`},
	{name: "webhook.deliver of a message that does not exist", sql: insertJob + `($1, 'webhook.deliver', '{"message_id": "00000000-0000-0000-0000-000000000001", "endpoint_id": "00000000-0000-0000-0000-000000000002"}')`, failed: "does not exist in workspace"},
	{name: "email.send with a cc field", sql: insertJob + `($1, 'email.send', '{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "cc": "b@example.com"}')`, failed: `decode args: json: unknown field "cc"`},
	{name: "email.send with replyTo for reply_to", sql: insertJob + `($1, 'email.send', '{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "replyTo": "b@example.com"}')`, failed: `decode args: json: unknown field "replyTo"`},
	{name: "invoice.render with an invoice_id that is not a uuid", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "INV-1"}')`, failed: `invoice_id "INV-1" is not a uuid`},
	{name: "invoice.render of an invoice that does not exist", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003"}')`, failed: "invoice 00000000-0000-0000-0000-00000000c003 does not exist in workspace"},
	{name: "invoice.render with email_to that is a number", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": 7}')`, failed: `"email_to" must be an address or an array of addresses`},
	{name: "invoice.render with email_to hiding a control character", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": "Ann\u0085 <a@example.com>"}')`, failed: "has a control character"},
	{name: "invoice.render with a field it does not have", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "emailTo": "a@example.com"}')`, failed: `unknown field "emailTo"`},
	{name: "invoice.render with email_to that is no address", sql: insertJob + `($1, 'invoice.render', '{"invoice_id": "00000000-0000-0000-0000-00000000c003", "email_to": "ann at example"}')`, failed: `email_to: "ann at example" is not an email address`},
}

// TestBadInputCorpus runs every malformed input against one daemon: each is
// refused or fails at once with its reason, nothing retries, and the daemon
// stays healthy throughout.
func TestBadInputCorpus(t *testing.T) {
	corpus := append(append([]badInput{}, contractCorpus...), pingCorpus...)
	if len(corpus) < 40 {
		t.Fatalf("corpus has %d inputs, want at least 40", len(corpus))
	}
	url, pool := errandtest.MigratedDB(t, errand.WithKinds(errandtest.ScopedKind()))
	ws := errandtest.NewWorkspace(t, pool, "acme")
	gone := errandtest.NewWorkspace(t, pool, "gone")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `DELETE FROM errand.workspaces WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	d := errandtest.StartDaemon(t, url, nil, errand.WithKinds(errandtest.ScopedKind()))

	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			before := errandtest.CountJobs(t, pool)
			sql := strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+gone+"'").Replace(tc.sql)
			if tc.code != "" {
				_, err := pool.Exec(ctx, sql)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) {
					t.Fatalf("want a PostgreSQL error, got %v", err)
				}
				if pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
					t.Errorf("got %s %q, want %s containing %q", pgErr.Code, pgErr.Message, tc.code, tc.message)
				}
				if after := errandtest.CountJobs(t, pool); after != before {
					t.Errorf("%d jobs enqueued by a refused insert", after-before)
				}
				return
			}
			var id int64
			if err := pool.QueryRow(ctx, sql+" RETURNING id").Scan(&id); err != nil {
				t.Fatalf("insert refused (%v), want it accepted and failed by the worker", err)
			}
			j := errandtest.WaitJob(t, pool, id, 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.failed) {
				t.Errorf("got %+v, want failed on attempt 1 with %q", j, tc.failed)
			}
		})
	}

	// Still serving after the corpus. A heartbeat renewed late on a busy
	// machine makes /readyz say 503 for a moment; a daemon the corpus broke
	// never says 200 again.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + d.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("daemon not ready within 30s after the corpus: %d", resp.StatusCode)
			break
		}
	}
	var retried int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM errand.jobs WHERE attempt > 1`).Scan(&retried); err != nil {
		t.Fatal(err)
	}
	if retried != 0 {
		t.Errorf("%d hopeless jobs were retried", retried)
	}
	if strings.Contains(d.Logs.String(), "panic") {
		t.Errorf("a panic was logged:\n%s", d.Logs.String())
	}
}
