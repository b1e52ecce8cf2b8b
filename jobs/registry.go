package jobs

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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

// kindNameOK reports whether a kind may be called name: what apps write in
// INSERTs and operators in `errand jobs list --kind`, so 1 to 128
// characters of valid UTF-8 without spaces, control or invisible format
// characters (and never '/', below).
func kindNameOK(name string) bool {
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > 128 {
		return false
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

// envName is what a kind's variable may be called.
var envName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// Add registers kinds. A mistake in a kind's definition (its name, its
// queue, its args type's tags, its options, its variables' names) is an
// error, so that the binary refuses to start rather than fail every job.
func (r *Registry) Add(kinds ...Kind) error {
	for _, k := range kinds {
		if k.register == nil {
			return fmt.Errorf("register kind %q: build kinds with jobs.Define (a Kind literal cannot run jobs)", k.Name)
		}
		// The contract hashes an idempotency key from workspace/kind/key:
		// with a '/' in a kind's name, kind "report" with key "pdf/x" would
		// be kind "report/pdf" with key "x".
		if strings.Contains(k.Name, "/") {
			return fmt.Errorf("register kind %q: a kind's name may not contain \"/\" (use dots, as in report.pdf)", k.Name)
		}
		if !kindNameOK(k.Name) {
			return fmt.Errorf("register kind %q: a kind's name is 1 to 128 characters without spaces, control or invisible characters (as in report.export)", k.Name)
		}
		if err := r.queueOK(k); err != nil {
			return fmt.Errorf("register kind %q: %w", k.Name, err)
		}
		if len(k.defErrs) > 0 {
			return fmt.Errorf("register kind %q: %s", k.Name, strings.Join(k.defErrs, "; "))
		}
		for _, ev := range k.Env {
			if !envName.MatchString(ev.Name) {
				return fmt.Errorf("register kind %q: variable %q: a name is capital letters, digits and '_', starting with a letter", k.Name, ev.Name)
			}
		}
		if _, ok := r.Lookup(k.Name); ok {
			return fmt.Errorf("register kind %q: already registered", k.Name)
		}
		r.kinds = append(r.kinds, k)
	}
	return nil
}

// maxQueueWorkers is the most workers ERRAND_QUEUES gives a queue.
const maxQueueWorkers = 10000

// queueName is River's rule for a queue's name (its client refuses others
// at start, naming neither the kind nor the fix).
var queueName = regexp.MustCompile(`^[a-z0-9]+(?:[_-]?[a-z0-9]+)*$`)

// queueOK checks k's queue: one of errand's, or one of its own declared
// with WithQueueWorkers, the same count as any other kind in it.
func (r *Registry) queueOK(k Kind) error {
	if slices.Contains(Queues, k.Queue) {
		if k.QueueWorkers != 0 {
			return fmt.Errorf("WithQueueWorkers(%d) is for a queue of the kind's own; errand's queue %q takes its workers from ERRAND_QUEUES", k.QueueWorkers, k.Queue)
		}
		return nil
	}
	if k.QueueWorkers == 0 {
		return fmt.Errorf("unknown queue %q (errand's queues: %s; a queue of the kind's own needs jobs.WithQueueWorkers)", k.Queue, strings.Join(Queues, ", "))
	}
	if len(k.Queue) > 64 || !queueName.MatchString(k.Queue) {
		return fmt.Errorf("queue %q: a queue's name is lower-case letters and digits, words joined by '_' or '-', at most 64 characters (as in report_exports)", k.Queue)
	}
	if k.QueueWorkers < 0 || k.QueueWorkers > maxQueueWorkers {
		return fmt.Errorf("WithQueueWorkers(%d): want 1 to %d workers", k.QueueWorkers, maxQueueWorkers)
	}
	for _, o := range r.kinds {
		if o.Queue == k.Queue && o.QueueWorkers != k.QueueWorkers {
			return fmt.Errorf("WithQueueWorkers(%d) for queue %q, but kind %q gives it %d; kinds that share a queue give it the same count", k.QueueWorkers, k.Queue, o.Name, o.QueueWorkers)
		}
	}
	return nil
}

// OwnQueues is every queue the kinds run in besides errand's own (which
// always run), with its workers per replica unless ERRAND_QUEUES says
// otherwise, in the order the kinds name them.
func OwnQueues(kinds []Kind) []OwnQueue {
	var out []OwnQueue
	for _, k := range kinds {
		if k.QueueWorkers > 0 && !slices.Contains(Queues, k.Queue) &&
			!slices.ContainsFunc(out, func(q OwnQueue) bool { return q.Name == k.Queue }) {
			out = append(out, OwnQueue{Name: k.Queue, Workers: k.QueueWorkers})
		}
	}
	return out
}

// OwnQueue is a kind's own queue and its default workers per replica.
type OwnQueue struct {
	Name    string
	Workers int
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
