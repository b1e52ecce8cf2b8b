package webhook

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Customers' URLs are hostile input: a webhook must never reach into the
// network errand runs in. The address actually dialled is checked (the
// dialer's Control hook runs after DNS, for every address tried), so a name
// that resolves, or later rebinds, to a private address is refused too. The
// SQL contract refuses what it can tell from the URL's text at INSERT
// (errand.webhook_url_problem, migrations 009 and 052, with the same ranges
// in errand.webhook_refused_ranges; a test keeps them equal).

// refusedRange is a range errand does not connect to, and why.
type refusedRange struct {
	prefix netip.Prefix
	reason string
}

// refusedRanges: the most specific match names the reason. IPv4-mapped IPv6
// (::ffff:a.b.c.d) is judged as the IPv4 address it is, and NAT64
// (64:ff9b::/96) by the IPv4 address it carries.
//
// IPv6 outside 2000::/3 (global unicast) is refused whole: each block
// IANA's IPv6 address space registry lists as "Reserved by IETF" is here
// (migration 057), as IPv4's 240.0.0.0/4 is; no receiver has such an
// address (0:0:0:1::1, in ::/8, is nobody's). The special-purpose blocks
// within them keep their own reasons. 2001::/23 is refused whole, as
// 192.0.0.0/24 is, though IANA marks a few of its assignments globally
// reachable (anycast PCP and TURN, AMT, AS112, ORCHIDv2, drone IDs):
// services and identifiers, none a customer's HTTP receiver.
var refusedRanges = func() []refusedRange {
	list := []struct{ cidr, reason string }{
		{"0.0.0.0/8", `"this network" (0.0.0.0/8)`},
		{"10.0.0.0/8", "private (RFC 1918)"},
		{"100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10)"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local (169.254.0.0/16, where cloud metadata services answer)"},
		{"172.16.0.0/12", "private (RFC 1918)"},
		{"192.0.0.0/24", "reserved for IETF protocol assignments"},
		{"192.0.2.0/24", "documentation (TEST-NET-1)"},
		{"192.88.99.0/24", "reserved (the former 6to4 relay anycast)"},
		{"192.168.0.0/16", "private (RFC 1918)"},
		{"198.18.0.0/15", "benchmarking (198.18.0.0/15)"},
		{"198.51.100.0/24", "documentation (TEST-NET-2)"},
		{"203.0.113.0/24", "documentation (TEST-NET-3)"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved (240.0.0.0/4)"},
		{"255.255.255.255/32", "broadcast"},
		{"::/128", "the unspecified address"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible IPv6 (deprecated; hides an IPv4 address)"},
		{"::ffff:0:0:0/96", "IPv4-translated IPv6 (hides an IPv4 address)"},
		{"::/8", "reserved by the IETF (::/8)"},
		{"64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)"},
		{"100::/8", "reserved by the IETF (100::/8)"},
		{"100::/64", "discard-only (100::/64)"},
		{"100:0:0:1::/64", "the dummy prefix (100:0:0:1::/64)"},
		{"200::/7", "reserved by the IETF (200::/7)"},
		{"400::/6", "reserved by the IETF (400::/6)"},
		{"800::/5", "reserved by the IETF (800::/5)"},
		{"1000::/4", "reserved by the IETF (1000::/4)"},
		{"2001::/23", "reserved for IETF protocol assignments"},
		{"2001::/32", "Teredo (hides an IPv4 address)"},
		{"2001:2::/48", "benchmarking (2001:2::/48)"},
		{"2001:db8::/32", "documentation (2001:db8::/32)"},
		{"2002::/16", "6to4 (hides an IPv4 address)"},
		{"3fff::/20", "documentation (3fff::/20)"},
		{"4000::/3", "reserved by the IETF (4000::/3)"},
		{"5f00::/16", "reserved for SRv6 (5f00::/16)"},
		{"6000::/3", "reserved by the IETF (6000::/3)"},
		{"8000::/3", "reserved by the IETF (8000::/3)"},
		{"a000::/3", "reserved by the IETF (a000::/3)"},
		{"c000::/3", "reserved by the IETF (c000::/3)"},
		{"e000::/4", "reserved by the IETF (e000::/4)"},
		{"f000::/5", "reserved by the IETF (f000::/5)"},
		{"f800::/6", "reserved by the IETF (f800::/6)"},
		{"fc00::/7", "unique local (fc00::/7)"},
		{"fe00::/9", "reserved by the IETF (fe00::/9)"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local (deprecated)"},
		{"ff00::/8", "multicast"},
	}
	out := make([]refusedRange, len(list))
	for i, r := range list {
		out[i] = refusedRange{prefix: netip.MustParsePrefix(r.cidr), reason: r.reason}
	}
	return out
}()

var (
	mapped = netip.MustParsePrefix("::ffff:0:0/96")
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
)

// addressProblem says why errand would not connect to a ("loopback", "the
// NAT64 form of 127.0.0.1, which is loopback"), or "" when it would.
// allowed (ERRAND_WEBHOOK_ALLOW_CIDRS) wins over every refused range.
func addressProblem(a netip.Addr, allowed []netip.Prefix) string {
	a = a.WithZone("")
	if contains(allowed, a) {
		return ""
	}
	var v4 netip.Addr
	var form string
	switch {
	case a.Is6() && mapped.Contains(a):
		v4, form = a.Unmap(), "IPv4-mapped"
	case a.Is6() && nat64.Contains(a):
		b := a.As16()
		v4, form = netip.AddrFrom4([4]byte(b[12:])), "NAT64"
	}
	if v4.IsValid() {
		if contains(allowed, v4) {
			return ""
		}
		if r := refusedReason(v4); r != "" {
			return fmt.Sprintf("the %s form of %s, which is %s", form, v4, r)
		}
		return ""
	}
	return refusedReason(a)
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func refusedReason(a netip.Addr) string {
	best := -1
	var reason string
	for _, r := range refusedRanges {
		if r.prefix.Contains(a) && r.prefix.Bits() > best {
			best, reason = r.prefix.Bits(), r.reason
		}
	}
	return reason
}

// parseAllowed reads ERRAND_WEBHOOK_ALLOW_CIDRS: comma-separated ranges or
// single addresses.
func parseAllowed(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not a range such as 127.0.0.0/8 or an address such as ::1", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// literalIPv4 reads a host written as an IPv4 address in any notation the C
// library's inet_aton accepts (so getaddrinfo, curl and browsers too): one
// to four parts, each decimal, octal (a leading 0) or hex (0x), the last
// filling the remaining bytes: 127.1, 0x7f.1, 0177.0.0.1 and 2130706433 are
// all 127.0.0.1. ok is false when the host is not written as a number (its
// last label is not numeric); err is set when it is, but is no address.
func literalIPv4(host string) (addr netip.Addr, ok bool, err error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	parts := strings.Split(host, ".")
	if !numericLabel(parts[len(parts)-1]) {
		return netip.Addr{}, false, nil
	}
	if len(parts) > 4 {
		return netip.Addr{}, true, fmt.Errorf("has %d parts", len(parts))
	}
	var total uint64
	for i, p := range parts {
		v, err := parseInetPart(p)
		if err != nil {
			return netip.Addr{}, true, err
		}
		if i < len(parts)-1 {
			if v.Cmp(big.NewInt(255)) > 0 {
				return netip.Addr{}, true, fmt.Errorf("part %s is over 255", p)
			}
			total |= v.Uint64() << (8 * (3 - i))
			continue
		}
		limit := new(big.Int).Lsh(big.NewInt(1), uint(8*(5-len(parts))))
		if v.Cmp(limit) >= 0 {
			return netip.Addr{}, true, fmt.Errorf("part %s is too large", p)
		}
		total |= v.Uint64()
	}
	return netip.AddrFrom4([4]byte{byte(total >> 24), byte(total >> 16), byte(total >> 8), byte(total)}), true, nil
}

func numericLabel(s string) bool {
	if strings.HasPrefix(s, "0x") {
		return strings.Trim(s[2:], "0123456789abcdef") == ""
	}
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func parseInetPart(p string) (*big.Int, error) {
	v := new(big.Int)
	var ok bool
	switch {
	case strings.HasPrefix(p, "0x"):
		if p == "0x" {
			return v, nil
		}
		_, ok = v.SetString(p[2:], 16)
	case strings.HasPrefix(p, "0"):
		_, ok = v.SetString(p, 8)
	default:
		_, ok = v.SetString(p, 10)
	}
	if !ok {
		return nil, fmt.Errorf("part %q is not a number", p)
	}
	return v, nil
}

// RefusedError is a URL or address errand will not connect to.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// checkURL refuses what the URL's text shows (the SQL contract's rules, for
// rows that did not come through it): a URL that does not parse, a scheme
// other than http(s), a user, a host with an empty label, a literal
// address in a refused range, in any notation, or localhost.
func checkURL(raw string, allowed []netip.Prefix) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error carries the whole URL, which may hold the customer's
		// token, and the reason goes to errand.webhook_attempts.error; what
		// it wraps says what is wrong ("invalid URL escape \"%zz\"").
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &RefusedError{Reason: fmt.Sprintf("url does not parse: %v (update the endpoint's url)", err)}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &RefusedError{Reason: fmt.Sprintf("url scheme %q: only http and https", u.Scheme)}
	}
	if u.User != nil {
		return nil, &RefusedError{Reason: "url carries a user or password"}
	}
	host := u.Hostname()
	if host == "" {
		return nil, &RefusedError{Reason: "url has no host"}
	}
	if !strings.Contains(host, ":") && (strings.HasPrefix(host, ".") || strings.Contains(host, "..")) {
		// No name DNS can look up: every delivery would fail.
		return nil, &RefusedError{Reason: fmt.Sprintf("host %q has an empty label (a dot at its start or two dots in a row), which no name can have", host)}
	}
	var addr netip.Addr
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	switch {
	case name == "localhost" || strings.HasSuffix(name, ".localhost"):
		addr = netip.MustParseAddr("127.0.0.1")
	case strings.Contains(host, ":"):
		if addr, err = netip.ParseAddr(host); err != nil {
			return nil, &RefusedError{Reason: fmt.Sprintf("host [%s] is not a valid IPv6 address", host)}
		}
		if addr.Zone() != "" {
			return nil, &RefusedError{Reason: fmt.Sprintf("host [%s] carries an IPv6 zone", host)}
		}
	default:
		a, numeric, err := literalIPv4(host)
		if err != nil {
			return nil, &RefusedError{Reason: fmt.Sprintf("host %s is written as a number but is not a valid IPv4 address (%v)", host, err)}
		}
		if numeric {
			addr = a
		}
	}
	if addr.IsValid() {
		if p := addressProblem(addr, allowed); p != "" {
			shown := host
			if addr.Is4() && addr.String() != name && name != "localhost" && !strings.HasSuffix(name, ".localhost") {
				shown = fmt.Sprintf("%s (the IPv4 address %s written another way)", host, addr)
			}
			return nil, &RefusedError{Reason: fmt.Sprintf("host %s is %s: errand does not connect there (ERRAND_WEBHOOK_ALLOW_CIDRS lists exceptions)", shown, p)}
		}
	}
	return u, nil
}

// control is the dialer's Control hook: it sees the address about to be
// dialled, after DNS, and refuses it when errand must not connect there.
func control(allowed []netip.Prefix) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &RefusedError{Reason: fmt.Sprintf("cannot read the address %q being dialled", address)}
		}
		if p := addressProblem(ap.Addr(), allowed); p != "" {
			return &RefusedError{Reason: fmt.Sprintf("address %s is %s: errand does not connect there (ERRAND_WEBHOOK_ALLOW_CIDRS lists exceptions)", ap.Addr(), p)}
		}
		return nil
	}
}

// newTransport is the transport of every delivery: no proxy from the
// environment (a proxy would dial for us, past the check), the address
// check on every dial, a connect timeout, and enough idle connections per
// host to reuse them all. Many endpoints share a host (every customer of one
// integration platform, every endpoint of one customer), so the host's
// share is not one endpoint's concurrency but every webhook worker's: with
// 10 idle connections kept per host, 50 workers delivering to one host
// dialled a new connection for most requests and closed it after (8% of the
// benchmark's CPU). Idle connections are only as many as were in use at
// once, so the bound costs nothing while it is not reached. resolver looks
// names up (nil: net.DefaultResolver); tests point names where they want.
func newTransport(allowed []netip.Prefix, connectTimeout time.Duration, resolver *net.Resolver) *http.Transport {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second, Control: control(allowed), Resolver: resolver}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   idleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   connectTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// idleConnsPerHost bounds the idle connections kept per host: more than the
// webhooks queue's workers (50 by default) ever use at once.
const idleConnsPerHost = 256

// refused reports whether err is (or wraps) a refusal.
func refused(err error) (*RefusedError, bool) {
	var r *RefusedError
	ok := errors.As(err, &r)
	return r, ok
}
