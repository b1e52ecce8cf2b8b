package daemon_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// transactionPooler is PgBouncer in transaction mode with a pool of one
// server connection: every client that connects to it shares that one
// PostgreSQL session, a transaction at a time. Session state (set_config(...,
// false), LISTEN) set by one client is what the next one finds, and
// notifications reach no one waiting for them. Like PgBouncer 1.21+ with
// max_prepared_statements, it renames clients' prepared statements so pgx's
// statement cache works. It returns a DATABASE_URL that goes through it.
func transactionPooler(t *testing.T, dbURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, err := pgconn.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	hj, err := server.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pooler{server: hj.Conn, params: hj.ParameterStatuses, free: make(chan struct{}, 1)}
	p.free <- struct{}{}
	t.Cleanup(func() { ln.Close(); hj.Conn.Close() })
	go p.readServer(hj.Frontend)
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serveClient(&pooledClient{conn: c, prefix: fmt.Sprintf("c%d_", n)})
		}
	}()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = ln.Addr().String()
	return u.String()
}

type pooler struct {
	server  net.Conn
	params  map[string]string
	writeMu sync.Mutex
	// free holds the session's one token: a client takes it with its first
	// message and the server's reader gives it back when the session is idle
	// again (ReadyForQuery 'I' with nothing outstanding).
	free   chan struct{}
	mu     sync.Mutex
	holder *pooledClient
}

type pooledClient struct {
	conn    net.Conn
	prefix  string
	pending int  // Sync and Query messages not yet answered by ReadyForQuery
	gone    bool // disconnected while holding the session
}

func (p *pooler) toServer(msg pgproto3.FrontendMessage) {
	b, err := msg.Encode(nil)
	if err != nil {
		return
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_, _ = p.server.Write(b)
}

// readServer routes everything the server says to the client holding the
// session; what arrives while nobody holds it (a notification) is dropped.
func (p *pooler) readServer(fe *pgproto3.Frontend) {
	for {
		msg, err := fe.Receive()
		if err != nil {
			return
		}
		p.mu.Lock()
		h := p.holder
		forward := h != nil && !h.gone
		release, rollback := false, false
		if rfq, ok := msg.(*pgproto3.ReadyForQuery); ok && h != nil {
			h.pending--
			if h.pending == 0 {
				if rfq.TxStatus == 'I' {
					release, p.holder = true, nil
				} else if h.gone {
					rollback, h.pending = true, 1
				}
			}
		}
		p.mu.Unlock()
		if forward {
			if b, err := msg.Encode(nil); err == nil {
				_, _ = h.conn.Write(b)
			}
		}
		if rollback {
			p.toServer(&pgproto3.Query{String: "ROLLBACK"})
		}
		if release {
			p.free <- struct{}{}
		}
	}
}

func (p *pooler) serveClient(c *pooledClient) {
	defer c.conn.Close()
	be := pgproto3.NewBackend(c.conn, c.conn)
	if !p.greet(c, be) {
		return
	}
	for {
		msg, err := be.Receive()
		if _, ok := msg.(*pgproto3.Terminate); ok || err != nil {
			p.leave(c)
			return
		}
		p.mu.Lock()
		holding := p.holder == c
		p.mu.Unlock()
		if !holding {
			<-p.free
			p.mu.Lock()
			p.holder = c
			p.mu.Unlock()
		}
		switch m := msg.(type) {
		case *pgproto3.Sync, *pgproto3.Query:
			p.mu.Lock()
			c.pending++
			p.mu.Unlock()
		case *pgproto3.Parse:
			m.Name = c.rename(m.Name)
		case *pgproto3.Bind:
			m.PreparedStatement = c.rename(m.PreparedStatement)
		case *pgproto3.Describe:
			if m.ObjectType == 'S' {
				m.Name = c.rename(m.Name)
			}
		case *pgproto3.Close:
			if m.ObjectType == 'S' {
				m.Name = c.rename(m.Name)
			}
		}
		p.toServer(msg)
	}
}

// greet answers the startup as the server would: trust, the server's
// parameters, a key nobody can cancel with.
func (p *pooler) greet(c *pooledClient, be *pgproto3.Backend) bool {
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return false
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.conn.Write([]byte("N")); err != nil {
				return false
			}
			continue
		case *pgproto3.StartupMessage:
		default: // a CancelRequest: not supported
			return false
		}
		out := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
		for k, v := range p.params {
			out = append(out, &pgproto3.ParameterStatus{Name: k, Value: v})
		}
		key := make([]byte, 4)
		_, _ = rand.Read(key)
		out = append(out, &pgproto3.BackendKeyData{ProcessID: binary.BigEndian.Uint32(key), SecretKey: key},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
		var b []byte
		for _, m := range out {
			if b, err = m.Encode(b); err != nil {
				return false
			}
		}
		_, err = c.conn.Write(b)
		return err == nil
	}
}

// leave ends a client's turn if it held the session: a Sync closes whatever
// it left half sent, and readServer rolls back a transaction it left open.
func (p *pooler) leave(c *pooledClient) {
	p.mu.Lock()
	holding := p.holder == c
	if holding {
		c.gone = true
		c.pending++
	}
	p.mu.Unlock()
	if holding {
		p.toServer(&pgproto3.Sync{})
	}
}

func (c *pooledClient) rename(name string) string {
	if name == "" {
		return ""
	}
	return c.prefix + name
}
