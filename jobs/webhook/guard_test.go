package webhook

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Every notation inet_aton (and so getaddrinfo, curl, browsers) accepts for
// an IPv4 address.
func TestLiteralIPv4ReadsEveryNotation(t *testing.T) {
	cases := []struct {
		host string
		want string // "" : not written as a number
		bad  bool   // written as a number, but no address
	}{
		{host: "127.0.0.1", want: "127.0.0.1"},
		{host: "2130706433", want: "127.0.0.1"},   // one decimal number
		{host: "0177.0.0.1", want: "127.0.0.1"},   // octal part
		{host: "0x7f.0.0.1", want: "127.0.0.1"},   // hex part
		{host: "0X7F.0.0.1", want: "127.0.0.1"},   // hex, upper case
		{host: "0x7f000001", want: "127.0.0.1"},   // one hex number
		{host: "017700000001", want: "127.0.0.1"}, // one octal number
		{host: "127.1", want: "127.0.0.1"},        // shortened: a.b (8.24 bits)
		{host: "127.0.1", want: "127.0.0.1"},      // shortened: a.b.c (8.8.16 bits)
		{host: "0x7f.1", want: "127.0.0.1"},
		{host: "0177.1", want: "127.0.0.1"},
		{host: "127.0.0.1.", want: "127.0.0.1"}, // DNS root dot
		{host: "0", want: "0.0.0.0"},
		{host: "0x", want: "0.0.0.0"},
		{host: "10.1", want: "10.0.0.1"},
		{host: "0xa9fea9fe", want: "169.254.169.254"},
		{host: "2852039166", want: "169.254.169.254"},
		{host: "4294967295", want: "255.255.255.255"},
		{host: "4294967296", bad: true},
		{host: "1.2.3.256", bad: true},
		{host: "256.1.1.1", bad: true},
		{host: "1.2.65536", bad: true},
		{host: "08.1.1.1", bad: true}, // 8 is no octal digit
		{host: "1.2.3.4.5", bad: true},
		{host: "1..2", bad: true},
		{host: "example.123", bad: true},
		{host: "example.com"},
		{host: "1e100.net"},
		{host: "0xdead.beef.com"},
		{host: "localhost"},
	}
	for _, tc := range cases {
		got, numeric, err := literalIPv4(tc.host)
		switch {
		case tc.bad:
			if err == nil {
				t.Errorf("%s: read as %v, want an error", tc.host, got)
			}
		case tc.want == "":
			if numeric || err != nil {
				t.Errorf("%s: numeric %v (%v), want a hostname", tc.host, numeric, err)
			}
		default:
			if err != nil || !numeric || got.String() != tc.want {
				t.Errorf("%s: %v %v %v, want %s", tc.host, got, numeric, err, tc.want)
			}
		}
	}
}

// addressProblem: every refused range, IPv4 hidden in IPv6 in each of its
// forms, the allow list, and public addresses.
func TestAddressProblem(t *testing.T) {
	allowNone := []netip.Prefix(nil)
	cases := []struct {
		addr    string
		allowed []netip.Prefix
		want    string // a part of the reason; "" : allowed
	}{
		{addr: "0.0.0.0", want: "this network"},
		{addr: "0.1.2.3", want: "this network"},
		{addr: "10.20.30.40", want: "private"},
		{addr: "100.64.0.1", want: "carrier-grade NAT"},
		{addr: "100.127.255.254", want: "carrier-grade NAT"},
		{addr: "127.0.0.1", want: "loopback"},
		{addr: "127.255.255.254", want: "loopback"},
		{addr: "169.254.169.254", want: "link-local"},
		{addr: "172.16.0.1", want: "private"},
		{addr: "172.31.255.255", want: "private"},
		{addr: "192.0.0.8", want: "IETF protocol"},
		{addr: "192.0.2.1", want: "documentation"},
		{addr: "192.88.99.1", want: "reserved"},
		{addr: "192.168.0.1", want: "private"},
		{addr: "198.18.0.1", want: "benchmarking"},
		{addr: "198.19.255.255", want: "benchmarking"},
		{addr: "198.51.100.7", want: "documentation"},
		{addr: "203.0.113.9", want: "documentation"},
		{addr: "224.0.0.251", want: "multicast"},
		{addr: "239.255.255.250", want: "multicast"},
		{addr: "240.0.0.1", want: "reserved"},
		{addr: "255.255.255.255", want: "broadcast"},
		{addr: "::", want: "unspecified"},
		{addr: "::1", want: "loopback"},
		{addr: "fc00::1", want: "unique local"},
		{addr: "fd12:3456::1", want: "unique local"},
		{addr: "fe80::1", want: "link-local"},
		{addr: "fec0::1", want: "site-local"},
		{addr: "ff02::1", want: "multicast"},
		{addr: "2001:db8::1", want: "documentation"},
		{addr: "3fff::1", want: "documentation"},
		{addr: "2001:2::1", want: "benchmarking"},
		{addr: "100::1", want: "discard-only"},
		{addr: "100:0:0:1::1", want: "dummy prefix"},
		{addr: "2001:db8:ffff::1", want: "documentation (2001:db8::/32)"},
		{addr: "2001:3::1", want: "IETF protocol assignments"}, // AMT: globally reachable, refused with its /23
		{addr: "2001:20::1", want: "IETF protocol assignments"},
		{addr: "5f00::1", want: "SRv6"},
		{addr: "fe80::1:2", want: "link-local"},
		{addr: "febf:ffff::1", want: "link-local"},
		{addr: "ff0e::1", want: "multicast"},
		// Reserved by the IETF (IANA's IPv6 address space registry): every
		// block outside 2000::/3 that is not named for a purpose.
		{addr: "0:0:0:1::1", want: "reserved by the IETF (::/8)"},
		{addr: "::1:0:0:1", want: "reserved by the IETF (::/8)"}, // just past ::/96, not IPv4-compatible
		{addr: "ff:ffff::1", want: "reserved by the IETF (::/8)"},
		{addr: "101::1", want: "reserved by the IETF (100::/8)"},
		{addr: "200::1", want: "reserved by the IETF (200::/7)"},
		{addr: "400::1", want: "reserved by the IETF (400::/6)"},
		{addr: "800::1", want: "reserved by the IETF (800::/5)"},
		{addr: "1000::1", want: "reserved by the IETF (1000::/4)"},
		{addr: "1fff:ffff::1", want: "reserved by the IETF (1000::/4)"},
		{addr: "4000::1", want: "reserved by the IETF (4000::/3)"},
		{addr: "6000::1", want: "reserved by the IETF (6000::/3)"},
		{addr: "8000::1", want: "reserved by the IETF (8000::/3)"},
		{addr: "a000::1", want: "reserved by the IETF (a000::/3)"},
		{addr: "c000::1", want: "reserved by the IETF (c000::/3)"},
		{addr: "e000::1", want: "reserved by the IETF (e000::/4)"},
		{addr: "f000::1", want: "reserved by the IETF (f000::/5)"},
		{addr: "f800::1", want: "reserved by the IETF (f800::/6)"},
		{addr: "fe00::1", want: "reserved by the IETF (fe00::/9)"},
		// IPv4 hidden in IPv6.
		{addr: "::ffff:127.0.0.1", want: "the IPv4-mapped form of 127.0.0.1, which is loopback"},
		{addr: "::ffff:169.254.169.254", want: "IPv4-mapped form of 169.254.169.254"},
		{addr: "::127.0.0.1", want: "IPv4-compatible"},
		{addr: "::8.8.8.8", want: "IPv4-compatible"},
		{addr: "::ffff:0:7f00:1", want: "IPv4-translated"},
		{addr: "64:ff9b::7f00:1", want: "the NAT64 form of 127.0.0.1, which is loopback"},
		{addr: "64:ff9b::10.0.0.1", want: "NAT64 form of 10.0.0.1"},
		{addr: "64:ff9b:1::1", want: "local-use NAT64"},
		{addr: "2002:7f00:1::1", want: "6to4"},
		{addr: "2002:808:808::1", want: "6to4"},
		{addr: "2001:0:4136:e378:8000:63bf:3fff:fdd2", want: "Teredo"},
		// Public addresses.
		{addr: "8.8.8.8"},
		{addr: "1.1.1.1"},
		{addr: "100.128.0.1"},
		{addr: "172.32.0.1"},
		{addr: "2606:4700:4700::1111"},
		{addr: "2000::1"},
		{addr: "2001:200::1"}, // just past 2001::/23
		{addr: "3ffe::1"},
		{addr: "3fff:1000::1"}, // just past 3fff::/20
		{addr: "::ffff:8.8.8.8"},
		{addr: "64:ff9b::8.8.8.8"}, // NAT64 of a public address, though in ::/8
		// The allow list, and what it does not reach.
		{addr: "127.0.0.1", allowed: mustAllowed(t, "127.0.0.1/32")},
		{addr: "::ffff:127.0.0.1", allowed: mustAllowed(t, "127.0.0.0/8")},
		{addr: "::1", allowed: mustAllowed(t, "::1")},
		{addr: "127.0.0.2", allowed: mustAllowed(t, "127.0.0.1/32"), want: "loopback"},
		{addr: "10.0.0.1", allowed: mustAllowed(t, "127.0.0.0/8,::1/128"), want: "private"},
		{addr: "fe80::1%eth0", allowed: allowNone, want: "link-local"},
	}
	for _, tc := range cases {
		got := addressProblem(netip.MustParseAddr(tc.addr), tc.allowed)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s (allowed %v): %q, want %q", tc.addr, tc.allowed, got, tc.want)
		}
	}
}

func mustAllowed(t *testing.T, v string) []netip.Prefix {
	t.Helper()
	p, err := parseAllowed(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Each URL names a refused address in one notation: the URL check refuses
// all of them before anything is dialled, and says which address it is.
func TestCheckURLRefusesLiteralAddressesInEveryNotation(t *testing.T) {
	refusedURLs := []struct{ url, want string }{
		{"http://127.0.0.1/", "host 127.0.0.1 is loopback"},
		{"http://2130706433/", "the IPv4 address 127.0.0.1 written another way) is loopback"},
		{"http://0177.0.0.1/", "127.0.0.1 written another way"},
		{"http://0x7f.0.0.1/", "127.0.0.1 written another way"},
		{"http://0x7f000001:8080/hook", "127.0.0.1 written another way"},
		{"http://017700000001/", "127.0.0.1 written another way"},
		{"http://127.1/", "127.0.0.1 written another way"},
		{"http://127.0.1/", "127.0.0.1 written another way"},
		{"http://0x7f.1/", "127.0.0.1 written another way"},
		{"http://0/", "this network"},
		{"http://2852039166/latest/meta-data/", "169.254.169.254 written another way) is link-local"},
		{"http://0xa9.0xfe.0xa9.0xfe/", "link-local"},
		{"http://10.1/", "10.0.0.1 written another way) is private"},
		{"http://1.2.3.256/", "not a valid IPv4 address"},
		{"http://localhost:8080/", "host localhost is loopback"},
		{"http://LOCALHOST./", "loopback"},
		{"http://api.localhost/", "loopback"},
		{"http://[::1]:8080/", "loopback"},
		{"http://[::]/", "unspecified"},
		{"http://[0:0:0:0:0:0:0:1]/", "loopback"},
		{"http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"},
		{"http://[::ffff:7f00:1]/", "IPv4-mapped form of 127.0.0.1"},
		{"http://[::127.0.0.1]/", "IPv4-compatible"},
		{"http://[::ffff:0:127.0.0.1]/", "IPv4-translated"},
		{"http://[64:ff9b::127.0.0.1]/", "NAT64 form of 127.0.0.1"},
		{"http://[64:ff9b::a9fe:a9fe]/", "NAT64 form of 169.254.169.254"},
		{"http://[2002:7f00:1::]/", "6to4"},
		{"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"},
		{"http://[fd00::1]/", "unique local"},
		{"http://[fe80::1%25eth0]/", "zone"},
		{"http://[ff02::1]/", "multicast"},
		{"http://[0:0:0:1::1]/", "host 0:0:0:1::1 is reserved by the IETF (::/8)"},
		{"http://[1000::1]:8080/", "reserved by the IETF (1000::/4)"},
		{"http://[100:0:0:1::1]/", "dummy prefix"},
		{"ftp://example.com/", "only http and https"},
		{"http://user:pass@example.com/", "user or password"},
	}
	for _, tc := range refusedURLs {
		_, err := checkURL(tc.url, nil)
		r, ok := refused(err)
		if !ok || !strings.Contains(r.Reason, tc.want) {
			t.Errorf("%s: %v, want a refusal saying %q", tc.url, err, tc.want)
		}
	}
	for _, ok := range []string{"https://example.com/hook", "http://8.8.8.8/", "http://[2606:4700::1111]/", "http://[64:ff9b::8.8.8.8]/", "https://1e100.net/"} {
		if _, err := checkURL(ok, nil); err != nil {
			t.Errorf("%s: %v, want it allowed", ok, err)
		}
	}
	if _, err := checkURL("http://127.0.0.1:9/", mustAllowed(t, "127.0.0.1/32")); err != nil {
		t.Errorf("127.0.0.1 with 127.0.0.1/32 allowed: %v", err)
	}
}

// A URL no delivery could send to (one that does not parse, a host with an
// empty label) is refused, saying what is wrong, and the reason (logged in
// errand.webhook_attempts.error) does not repeat the URL, whose path or
// query may hold the customer's token.
func TestCheckURLRefusesWhatNoDeliveryCouldSendWithoutRepeatingTheURL(t *testing.T) {
	for _, tc := range []struct{ name, url, want string }{
		{"a % before two letters in the path", "https://hooks.example.com/in/s3cret/%zz", `url does not parse: invalid URL escape "%zz"`},
		{"a % at the end of the path", "https://hooks.example.com/in/s3cret%", `invalid URL escape "%"`},
		{"a % before two letters in the fragment", "https://hooks.example.com/in?token=s3cret#%zz", `invalid URL escape "%zz"`},
		{"a word after an IPv6 address", "http://[2606:4700::1111]x/in?token=s3cret", `invalid port "x" after host`},
		{"a host that is three dots", "http://.../in?token=s3cret", `host "..." has an empty label`},
		{"a host with two dots in a row", "http://hooks..example.com/in?token=s3cret", `host "hooks..example.com" has an empty label`},
		{"a host starting with a dot", "http://.example.com/in?token=s3cret", "has an empty label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkURL(tc.url, nil)
			r, ok := refused(err)
			if !ok || !strings.Contains(r.Reason, tc.want) {
				t.Fatalf("%v, want a refusal saying %q", err, tc.want)
			}
			if strings.Contains(r.Reason, "s3cret") || strings.Contains(r.Reason, "/in") {
				t.Errorf("the reason %q repeats the URL", r.Reason)
			}
		})
	}
}

// An empty port (http://example.com:/, which RFC 3986 allows and the SQL
// contract accepts) is the scheme's default: a delivery dials port 80 and
// sends the Host header without the colon.
func TestAnEmptyPortIsTheSchemesDefault(t *testing.T) {
	var gotHost atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gotHost.Store(r.Host) }))
	defer srv.Close()
	u, err := checkURL("http://example.com:/hook", nil)
	if err != nil {
		t.Fatalf("checkURL: %v", err)
	}
	// The delivery's transport, dialling the test server whatever the
	// address: the address asked for is what the test checks.
	tr := newTransport(nil, 5*time.Second, nil)
	var dialled atomic.Value
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled.Store(addr)
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	// As post builds its request.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u.String(), strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || dialled.Load() != "example.com:80" || gotHost.Load() != "example.com" {
		t.Errorf("answered %s, dialled %v, Host %v; want 200 from example.com:80 with Host example.com", resp.Status, dialled.Load(), gotHost.Load())
	}
}

// The dialer checks the address it is about to connect to, after DNS: a
// hostname that resolves to loopback is refused as surely as a literal, and
// nothing reaches the listener. The name is the test's own (its own DNS
// server says where it points), so this runs end to end on any machine.
func TestDialerRefusesAHostnameThatResolvesToLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	resolver := LocalResolver(t, func(name string) []netip.Addr {
		if name == "loopback.test" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		}
		return nil
	})
	hook := "http://loopback.test:" + port + "/hook"
	if _, err := checkURL(hook, nil); err != nil {
		t.Fatalf("the URL check refuses %s by its text: %v", hook, err)
	}

	client := &http.Client{Transport: newTransport(nil, 5*time.Second, resolver), Timeout: 10 * time.Second}
	resp, err := client.Post(hook, "application/json", strings.NewReader("{}"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("a POST to loopback.test went through")
	}
	r, ok := refused(err)
	if !ok || r.Reason != "address 127.0.0.1 is loopback: errand does not connect there (ERRAND_WEBHOOK_ALLOW_CIDRS lists exceptions)" {
		t.Fatalf("error %v, want the dialer's refusal of 127.0.0.1", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the receiver got %d requests", n)
	}

	// Allowed, the same request arrives: the name resolved, and the
	// refusal was the guard's.
	allowed := &http.Client{Transport: newTransport(mustAllowed(t, "127.0.0.0/8,::1/128"), 5*time.Second, resolver), Timeout: 10 * time.Second}
	resp, err = allowed.Post(hook, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("allowed: %v", err)
	}
	resp.Body.Close()
	if n := hits.Load(); n != 1 {
		t.Errorf("the receiver got %d requests, want 1", n)
	}

	// The hook itself, on the addresses a resolver hands the dialer.
	d := &net.Dialer{Timeout: 5 * time.Second, Control: control(nil)}
	for _, host := range []string{"127.0.0.1", "::ffff:127.0.0.1", "::1"} {
		conn, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, port))
		if err == nil {
			conn.Close()
			t.Errorf("dialled %s", host)
			continue
		}
		// ::1 may have no socket here at all; the IPv4 forms must meet the guard.
		if _, ok := refused(err); !ok && host != "::1" {
			t.Errorf("%s: %v, want a refusal", host, err)
		}
	}
}

func TestParseAllowed(t *testing.T) {
	got, err := parseAllowed(" 127.0.0.1/8, ::1 ,10.0.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if s := (config{allowed: got}).allowedText(); s != "127.0.0.0/8,::1/128,10.0.0.7/32" {
		t.Errorf("allowed %s", s)
	}
	for _, bad := range []string{"127.0.0.0/33", "loopback", "fe80::1%eth0", "10.0.0.0/8;"} {
		if _, err := parseAllowed(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
