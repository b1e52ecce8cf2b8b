package jobs

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/store"
)

// Registry is the set of kinds a binary works. The zero value is empty and
// ready to use.
type Registry struct {
	kinds []Kind
}

// NewRegistry returns a registry holding kinds.
func NewRegistry(kinds ...Kind) (*Registry, error) {
	r := &Registry{}
	if err := r.Add(kinds...); err != nil {
		return nil, err
	}
	return r, nil
}

// Add registers kinds. A duplicate name, a name with a '/' or an unknown
// queue is an error.
func (r *Registry) Add(kinds ...Kind) error {
	for _, k := range kinds {
		if k.Name == "" || k.register == nil {
			return fmt.Errorf("register kind %q: build kinds with jobs.Define", k.Name)
		}
		// The contract hashes an idempotency key from workspace/kind/key:
		// with a '/' in a kind's name, kind "report" with key "pdf/x" would
		// be kind "report/pdf" with key "x".
		if strings.Contains(k.Name, "/") {
			return fmt.Errorf("register kind %q: a kind's name may not contain \"/\" (use dots, as in report.pdf)", k.Name)
		}
		if !slices.Contains(Queues, k.Queue) {
			return fmt.Errorf("register kind %q: unknown queue %q (queues: %v)", k.Name, k.Queue, Queues)
		}
		if _, ok := r.Lookup(k.Name); ok {
			return fmt.Errorf("register kind %q: already registered", k.Name)
		}
		r.kinds = append(r.kinds, k)
	}
	return nil
}

// Lookup finds a kind by name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	for _, k := range r.kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// Kinds returns the registered kinds in registration order.
func (r *Registry) Kinds() []Kind { return slices.Clone(r.kinds) }

// Infos is what gets published to errand.kinds.
func (r *Registry) Infos() []store.KindInfo {
	out := make([]store.KindInfo, len(r.kinds))
	for i, k := range r.kinds {
		out[i] = k.Info()
	}
	return out
}

// MaxTimeout is the longest per-attempt timeout of any kind.
func (r *Registry) MaxTimeout() time.Duration {
	var m time.Duration
	for _, k := range r.kinds {
		m = max(m, k.Timeout)
	}
	return m
}

// Workers builds River's worker set; st backs Job.InWorkspace.
func (r *Registry) Workers(st *store.Store) *river.Workers {
	w := river.NewWorkers()
	for _, k := range r.kinds {
		k.register(w, st)
	}
	return w
}
