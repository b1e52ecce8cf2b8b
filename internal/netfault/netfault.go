// Package netfault is a TCP proxy for tests that break the network between
// errand and PostgreSQL: cut (connections dropped, new ones refused) or
// blackholed (connections stay open, nothing gets through: a partition,
// where queries hang instead of failing).
package netfault

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections to an upstream address.
type Proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	cut   bool
	hole  atomic.Bool
	conns []net.Conn
}

// New starts a proxy to upstream (host:port), closed when the test ends.
func New(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.Cut(true) })
	go p.serve(upstream)
	return p
}

func (p *Proxy) serve(upstream string) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", upstream)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { p.pipe(s, c); s.Close() }()
		go func() { p.pipe(c, s); c.Close() }()
	}
}

// Cut drops every connection and refuses new ones (true), or accepts again (false).
func (p *Proxy) Cut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// Blackhole swallows every byte while on, leaving connections open.
func (p *Proxy) Blackhole(on bool) { p.hole.Store(on) }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is dbURL with its host replaced by the proxy's.
func (p *Proxy) URL(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return u.String()
}

// pipe copies like io.Copy, swallowing everything while blackholed.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.hole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
