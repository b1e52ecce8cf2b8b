package webhook

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// LocalResolver is a resolver that asks only a DNS server of the test's
// own, a real one on a local UDP port: lookup answers for a name (lower
// case, without the root dot) with its addresses, IPv4 ones to A queries
// and IPv6 ones to AAAA, or nil when the name does not exist. So a test
// points rebind.test at 127.0.0.1, or at one address and then another, on
// any machine. (Names in /etc/hosts are still read from there first.)
func LocalResolver(t testing.TB, lookup func(name string) []netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], lookup); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	server := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", server)
	}}
}

// dnsAnswer answers one DNS query (RFC 1035 4.1): the question copied, and
// an A or AAAA record per address of the queried family; nil for what is
// no query.
func dnsAnswer(q []byte, lookup func(name string) []netip.Addr) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if l > 63 || i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	addrs := lookup(strings.ToLower(strings.Join(labels, ".")))

	const typeA, typeAAAA = 1, 28
	var records [][]byte
	for _, a := range addrs {
		switch {
		case qtype == typeA && a.Is4():
			b := a.As4()
			records = append(records, b[:])
		case qtype == typeAAAA && a.Is6() && !a.Is4In6():
			b := a.As16()
			records = append(records, b[:])
		}
	}
	// QR, AA, RA, RD as asked; NXDOMAIN for a name lookup does not know.
	flags := 0x8000 | 0x0400 | 0x0080 | binary.BigEndian.Uint16(q[2:])&0x0100
	if addrs == nil {
		flags |= 3
	}
	resp := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q))
	resp = binary.BigEndian.AppendUint16(resp, flags)
	resp = binary.BigEndian.AppendUint16(resp, 1)
	resp = binary.BigEndian.AppendUint16(resp, uint16(len(records)))
	resp = append(resp, 0, 0, 0, 0) // no authority, no additional records
	resp = append(resp, question...)
	for _, r := range records {
		resp = append(resp, 0xc0, 12) // the question's name
		resp = binary.BigEndian.AppendUint16(resp, qtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = append(resp, 0, 0, 0, 0)               // TTL 0
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(r)))
		resp = append(resp, r...)
	}
	return resp
}
