package errand

import (
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/jobs/digest"
	"github.com/errand-dev/errand/jobs/email"
	"github.com/errand-dev/errand/jobs/invoice"
	"github.com/errand-dev/errand/jobs/ping"
	"github.com/errand-dev/errand/jobs/usagereport"
	"github.com/errand-dev/errand/jobs/webhook"
)

// Builtin returns errand's built-in kinds, built afresh for each call (a kind
// keeps its configuration once a daemon starts it). Adding a built-in kind
// is one line here, its package under jobs/, and a migration if it has
// tables.
func Builtin() []jobs.Kind {
	return []jobs.Kind{
		ping.Kind(),
		email.Kind(),
		webhook.DispatchKind(), webhook.DeliverKind(),
		digest.Kind(),
		usagereport.Kind(),
		invoice.Kind(),
	}
}
