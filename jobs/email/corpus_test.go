package email_test

import (
	"testing"

	"github.com/errand-dev/errand/errandtest"
)

const insertJob = `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES `

// corpus: what the SQL contract cannot tell about email.send, failed at
// once by the worker ($1 a live workspace). The contract's own refusals of
// its args are in send_test.go.
var corpus = []errandtest.BadInput{
	{Name: "email.send with a cc field", SQL: insertJob + `($1, 'email.send', '{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "cc": "b@example.com"}')`, Failed: `decode args: json: unknown field "cc"`},
	{Name: "email.send with replyTo for reply_to", SQL: insertJob + `($1, 'email.send', '{"to": "a@example.com", "template": "custom", "subject": "s", "text": "t", "replyTo": "b@example.com"}')`, Failed: `decode args: json: unknown field "replyTo"`},
}

// TestBadInputCorpus runs the email corpus against one daemon: each input
// fails at once with its reason, nothing retries, and the daemon stays
// healthy throughout.
func TestBadInputCorpus(t *testing.T) { errandtest.RunCorpus(t, corpus) }
