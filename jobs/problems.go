package jobs

import (
	"maps"
	"slices"
	"sync"
)

// Problems is a set of named operator-facing problems, safe for concurrent
// use. The zero value is empty and ready.
type Problems struct {
	mu sync.Mutex
	m  map[string]string
}

// Set records (or replaces) the problem called name.
func (p *Problems) Set(name, message string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]string{}
	}
	p.m[name] = message
}

// Clear removes the problem called name.
func (p *Problems) Clear(name string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, name)
}

// List returns the current problems' messages, sorted by name.
func (p *Problems) List() []string {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, name := range slices.Sorted(maps.Keys(p.m)) {
		out = append(out, name+": "+p.m[name])
	}
	return out
}
