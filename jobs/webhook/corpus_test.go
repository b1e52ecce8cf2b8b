package webhook_test

import (
	"testing"

	"github.com/errand-dev/errand/errandtest"
)

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// webhookEndpointThen makes webhook endpoint ...e001 in $1 first, in the
// same implicit transaction, for the cases that update one.
const webhookEndpointThen = `INSERT INTO errand.webhook_endpoints (id, workspace_id, url) VALUES ('00000000-0000-0000-0000-00000000e001', $1, 'https://example.com/hook'); `

// corpus: what an app can get wrong about webhooks, refused by SQL or failed
// at once by the worker ($1 a live workspace, $2 a deleted one).
var corpus = []errandtest.BadInput{
	// Outgoing webhooks: endpoints as an app inserts them, the kinds' args,
	// and the SQL functions (migrations/009_webhooks.sql).
	{Name: "a webhook endpoint without a url", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, NULL)`, Code: "23502", Message: "webhook endpoint url is required"},
	{Name: "a webhook endpoint url with another scheme", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'ftp://example.com/hook')`, Code: "22023", Message: "must start with http:// or https://, got 'ftp://example.com/hook'"},
	{Name: "a webhook endpoint url that is not a url", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'example.com/hook')`, Code: "22023", Message: "must start with http:// or https://"},
	{Name: "a webhook endpoint url without a host", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https:///hook')`, Code: "22023", Message: "webhook endpoint url has no host"},
	{Name: "a webhook endpoint url with a user and password", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://user:secret@example.com/hook')`, Code: "22023", Message: "must not carry a user or password"},
	{Name: "a webhook endpoint url over 2048 characters", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/' || repeat('a', 2040))`, Code: "22023", Message: "is 2060 characters, at most 2048"},
	{Name: "a webhook endpoint url with a space", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/my hook')`, Code: "22023", Message: "must not contain spaces, control characters or backslashes"},
	{Name: "a webhook endpoint url with a backslash before an @", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com\@127.0.0.1/')`, Code: "22023", Message: "backslashes"},
	{Name: "a webhook endpoint url with port 99999", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com:99999/')`, Code: "22023", Message: "has an invalid port '99999' (a port is 1 to 65535)"},
	// What every delivery would refuse or fail to reach (migrations/052_webhook_url_parses.sql).
	{Name: "a webhook endpoint url with a % before two letters", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/%zz')`, Code: "22023", Message: "webhook endpoint url has '%zz' in its path: a % must start an escape of two hex digits (write a % itself as %25)"},
	{Name: "a webhook endpoint url ending in a lone %", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook%')`, Code: "22023", Message: "has '%' in its path"},
	{Name: "a webhook endpoint url with a % before two letters in the fragment", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook#%zz')`, Code: "22023", Message: "has '%zz' in its fragment"},
	{Name: "a webhook endpoint url with a percent sign unescaped in the query", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://example.com/hook?discount=50%')`, Code: "22023", Message: "has '%' in its query"},
	{Name: "a webhook endpoint url whose host is three dots", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://.../')`, Code: "22023", Message: "webhook endpoint url host '...' has an empty label (a dot at its start or two dots in a row)"},
	{Name: "a webhook endpoint url with two dots in a row in its host", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://a..b/')`, Code: "22023", Message: "host 'a..b' has an empty label"},
	{Name: "a webhook endpoint url with a word after its IPv6 address", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2606:4700::1111]x/')`, Code: "22023", Message: "host [2606:4700::1111] is followed by 'x', which is not a port (a port follows a colon: [2606:4700::1111]:8443)"},
	{Name: "a webhook endpoint url with a non-ASCII host", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://bücher.example/')`, Code: "22023", Message: "xn-- form"},
	{Name: "a webhook endpoint on loopback", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://127.0.0.1:8080/hook')`, Code: "22023", Message: "host 127.0.0.1 is loopback: errand does not connect there"},
	{Name: "a webhook endpoint on loopback in decimal", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://2130706433/')`, Code: "22023", Message: "host 2130706433 (the IPv4 address 127.0.0.1 written another way) is loopback"},
	{Name: "a webhook endpoint on loopback in octal", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://0177.0.0.1/')`, Code: "22023", Message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{Name: "a webhook endpoint on loopback in hex", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://0x7f.0.0.1/')`, Code: "22023", Message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{Name: "a webhook endpoint on loopback, shortened", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://127.1/')`, Code: "22023", Message: "(the IPv4 address 127.0.0.1 written another way) is loopback"},
	{Name: "a webhook endpoint on localhost", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://localhost:3000/hook')`, Code: "22023", Message: "host localhost is loopback"},
	{Name: "a webhook endpoint on the cloud metadata address", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://169.254.169.254/latest/meta-data/')`, Code: "22023", Message: "is link-local"},
	{Name: "a webhook endpoint on the cloud metadata address in decimal", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://2852039166/')`, Code: "22023", Message: "169.254.169.254 written another way) is link-local"},
	{Name: "a webhook endpoint in a private network", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://10.0.0.5/hook')`, Code: "22023", Message: "is private (RFC 1918)"},
	{Name: "a webhook endpoint in carrier-grade NAT space", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://100.64.1.1/')`, Code: "22023", Message: "carrier-grade NAT"},
	{Name: "a webhook endpoint on a written-as-number host that is no address", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://1.2.3.999/')`, Code: "22023", Message: "is written as a number but is not a valid IPv4 address"},
	{Name: "a webhook endpoint on IPv6 loopback", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::1]:8080/')`, Code: "22023", Message: "host [::1] is loopback"},
	{Name: "a webhook endpoint on IPv4-mapped loopback", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::ffff:127.0.0.1]/')`, Code: "22023", Message: "the IPv4-mapped form of 127.0.0.1, which is loopback"},
	{Name: "a webhook endpoint on IPv4-compatible IPv6", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::127.0.0.1]/')`, Code: "22023", Message: "IPv4-compatible IPv6"},
	{Name: "a webhook endpoint on NAT64 of the metadata address", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[64:ff9b::a9fe:a9fe]/')`, Code: "22023", Message: "the NAT64 form of 169.254.169.254, which is link-local"},
	{Name: "a webhook endpoint on 6to4", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2002:a9fe:a9fe::1]/')`, Code: "22023", Message: "6to4"},
	{Name: "a webhook endpoint on Teredo", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/')`, Code: "22023", Message: "Teredo"},
	{Name: "a webhook endpoint on IPv6 reserved by the IETF", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[0:0:0:1::1]/')`, Code: "22023", Message: "host [0:0:0:1::1] is reserved by the IETF (::/8): errand does not connect there"},
	{Name: "a webhook endpoint on IPv6 reserved by the IETF outside ::/8", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'https://[1000::1]:8443/hook')`, Code: "22023", Message: "is reserved by the IETF (1000::/4)"},
	{Name: "a webhook endpoint on the IPv6 dummy prefix", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[100:0:0:1::1]/')`, Code: "22023", Message: "the dummy prefix (100:0:0:1::/64)"},
	{Name: "a webhook endpoint on an IPv6 SRv6 SID", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[5f00::1]/')`, Code: "22023", Message: "reserved for SRv6"},
	{Name: "a webhook endpoint on IPv6 documentation space", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[3fff::1]/')`, Code: "22023", Message: "documentation (3fff::/20)"},
	{Name: "a webhook endpoint on an IPv6 unique local address", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[fd12::1]/')`, Code: "22023", Message: "unique local"},
	{Name: "a webhook endpoint with an IPv6 zone", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[fe80::1%25eth0]/')`, Code: "22023", Message: "carries an IPv6 zone"},
	{Name: "a webhook endpoint with a malformed IPv6 host", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($1, 'http://[::1/')`, Code: "22023", Message: "unterminated IPv6 address"},
	{Name: "a webhook endpoint secret without whsec_", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')`, Code: "22023", Message: `secret must be "whsec_" followed by the base64 of 24 to 64 random bytes`},
	{Name: "a webhook endpoint secret of 3 bytes", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'whsec_YWJj')`, Code: "22023", Message: "secret is 3 bytes, want 24 to 64"},
	{Name: "a webhook endpoint secret that is not base64", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, secret) VALUES ($1, 'https://example.com/', 'whsec_not-base64!')`, Code: "22023", Message: `secret must be "whsec_"`},
	{Name: "a webhook endpoint subscribed to an empty event type", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', '{invoice.paid,""}')`, Code: "22023", Message: "event_types must be names such as invoice.paid"},
	{Name: "a webhook endpoint subscribed to a NULL event type", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', ARRAY['invoice.paid', NULL])`, Code: "22023", Message: "got NULL"},
	{Name: "a webhook endpoint subscribed to a type with a space", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url, event_types) VALUES ($1, 'https://example.com/', '{"invoice paid"}')`, Code: "22023", Message: "got 'invoice paid'"},
	{Name: "a webhook endpoint without a workspace", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES (NULL, 'https://example.com/')`, Code: "23502", Message: "webhook endpoint workspace_id is required"},
	{Name: "a webhook endpoint of a deleted workspace", SQL: `INSERT INTO errand.webhook_endpoints (workspace_id, url) VALUES ($2, 'https://example.com/')`, Code: "23503", Message: "does not exist in errand.workspaces"},
	{Name: "webhook.dispatch without event_type", SQL: insertJob + `($1, 'webhook.dispatch', '{"payload": {}}')`, Code: "22023", Message: `args for kind "webhook.dispatch" are missing required field(s): event_type`},
	{Name: "webhook.dispatch without payload", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid"}')`, Code: "22023", Message: "missing required field(s): payload"},
	{Name: "webhook.dispatch with a null payload", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": null}')`, Code: "22023", Message: "missing required field(s): payload"},
	{Name: "webhook.deliver without endpoint_id", SQL: insertJob + `($1, 'webhook.deliver', '{"message_id": "00000000-0000-0000-0000-000000000001"}')`, Code: "22023", Message: "missing required field(s): endpoint_id"},
	{Name: "webhook_replay of a message that does not exist", SQL: `SELECT errand.webhook_replay('00000000-0000-0000-0000-000000000001')`, Code: "23503", Message: "webhook message 00000000-0000-0000-0000-000000000001 does not exist"},
	{Name: "webhook_replay of NULL", SQL: `SELECT errand.webhook_replay(NULL)`, Code: "23503", Message: "webhook message NULL does not exist"},
	{Name: "webhook_replay of something that is not a uuid", SQL: `SELECT errand.webhook_replay('msg_1')`, Code: "22P02", Message: "invalid input syntax for type uuid"},
	{Name: "webhook_rotate_secret of an endpoint that does not exist", SQL: `SELECT errand.webhook_rotate_secret('00000000-0000-0000-0000-000000000001')`, Code: "23503", Message: "webhook endpoint 00000000-0000-0000-0000-000000000001 does not exist"},
	{Name: "a webhook endpoint url updated to loopback", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'http://127.0.0.1:8080/hook' WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "22023", Message: "host 127.0.0.1 is loopback: errand does not connect there"},
	{Name: "a webhook endpoint url updated to a private address in hex", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'http://0xa000001/' WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "22023", Message: "(the IPv4 address 10.0.0.1 written another way) is private (RFC 1918)"},
	{Name: "a webhook endpoint url updated to something that is not a url", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = 'example.com/hook' WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "22023", Message: "must start with http:// or https://"},
	{Name: "a webhook endpoint url updated to NULL", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET url = NULL WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "23502", Message: "webhook endpoint url is required"},
	{Name: "a webhook endpoint secret updated to 3 bytes", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET secret = 'whsec_YWJj' WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "22023", Message: "secret is 3 bytes, want 24 to 64"},
	{Name: "a webhook endpoint moved to another workspace", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET workspace_id = $2 WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "23514", Message: "a webhook endpoint cannot move to another workspace"},
	{Name: "a webhook endpoint given another id", SQL: webhookEndpointThen + `UPDATE errand.webhook_endpoints SET id = '00000000-0000-0000-0000-00000000e002' WHERE id = '00000000-0000-0000-0000-00000000e001'`, Code: "23514", Message: "a webhook endpoint's id cannot change"},
	{Name: "webhook.dispatch with a payload that is an array", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": [1, 2]}')`, Failed: "payload must be a JSON object"},
	{Name: "webhook.dispatch with a payload that is a string", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": "paid"}')`, Failed: "payload must be a JSON object"},
	{Name: "webhook.dispatch with an event_type with a space", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice paid", "payload": {}}')`, Failed: `event_type "invoice paid" must be a name such as invoice.paid`},
	{Name: "webhook.dispatch with an event_type of 300 characters", SQL: insertJob + `($1, 'webhook.dispatch', jsonb_build_object('event_type', repeat('e', 300), 'payload', '{}'::jsonb))`, Failed: "at most 255 characters"},
	{Name: "webhook.dispatch with an event_type that is a number", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": 7, "payload": {}}')`, Failed: "decode args: json: cannot unmarshal number"},
	{Name: "webhook.dispatch with an empty event_id", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": {}, "event_id": ""}')`, Failed: `event_id must be 1 to 255 characters without control characters, got ""`},
	{Name: "webhook.dispatch with an event_id that is a number", SQL: insertJob + `($1, 'webhook.dispatch', '{"event_type": "invoice.paid", "payload": {}, "event_id": 42}')`, Failed: "decode args: json: cannot unmarshal number"},
	{Name: "webhook.deliver with ids that are not uuids", SQL: insertJob + `($1, 'webhook.deliver', '{"message_id": "msg_1", "endpoint_id": "7"}')`, Failed: `message_id "msg_1" is not a uuid`},
	{Name: "webhook.deliver of a message that does not exist", SQL: insertJob + `($1, 'webhook.deliver', '{"message_id": "00000000-0000-0000-0000-000000000001", "endpoint_id": "00000000-0000-0000-0000-000000000002"}')`, Failed: "does not exist in workspace"},
}

// TestBadInputCorpus runs the webhook corpus against one daemon: each input
// is refused or fails at once with its reason, nothing retries, and the
// daemon stays healthy throughout.
func TestBadInputCorpus(t *testing.T) { errandtest.RunCorpus(t, corpus) }
