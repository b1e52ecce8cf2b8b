package webhook

import (
	"net"

	"github.com/errand-dev/errand/jobs"
)

// DeliverKindResolving is DeliverKind with its dialer looking names up
// with r, for the package's external tests.
func DeliverKindResolving(r *net.Resolver) jobs.Kind { return deliverKind(r) }
