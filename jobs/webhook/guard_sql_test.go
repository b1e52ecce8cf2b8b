package webhook

import (
	"context"
	"net/netip"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/testdb"
)

// The SQL contract (errand.webhook_refused_ranges, webhook_url_problem) and
// the Go guard refuse the same things: one list in each language, kept
// equal here.
func TestSQLAndGoRefuseTheSameAddresses(t *testing.T) {
	ctx := context.Background()
	pool := testdb.Pool(t, testdb.NewDatabase(t, true))

	rows, err := pool.Query(ctx, `SELECT range::text, reason FROM errand.webhook_refused_ranges`)
	if err != nil {
		t.Fatal(err)
	}
	type rr struct{ Range, Reason string }
	sqlRanges, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rr])
	if err != nil {
		t.Fatal(err)
	}
	inSQL := map[string]string{}
	for _, r := range sqlRanges {
		inSQL[netip.MustParsePrefix(r.Range).String()] = r.Reason
	}
	for _, r := range refusedRanges {
		if reason, ok := inSQL[r.prefix.String()]; !ok || reason != r.reason {
			t.Errorf("range %s (%s): in SQL as %q", r.prefix, r.reason, reason)
		}
		delete(inSQL, r.prefix.String())
	}
	for p, reason := range inSQL {
		t.Errorf("range %s (%s) is refused in SQL only", p, reason)
	}

	urls := []string{
		"https://example.com/hook", "http://8.8.8.8:8080/", "http://[2606:4700::1111]/", "http://[64:ff9b::8.8.8.8]/",
		"http://[::ffff:8.8.8.8]/", "https://1e100.net/",
		"http://127.0.0.1/", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://0x7f000001/",
		"http://017700000001/", "http://127.1/", "http://127.0.1/", "http://0x7f.1/", "http://0/", "http://10.1/",
		"http://2852039166/", "http://1.2.3.256/", "http://08.1.1.1/", "http://4294967296/", "http://localhost/",
		"http://api.localhost./", "http://[::1]/", "http://[::]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
		"http://[::127.0.0.1]/", "http://[::ffff:0:127.0.0.1]/", "http://[64:ff9b::7f00:1]/", "http://[64:ff9b:1::1]/",
		"http://[2002:7f00:1::]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "http://[fd00::1]/", "http://[fe80::1]/",
		"http://[ff02::1]/", "http://[2001:db8::1]/", "http://100.64.0.1/", "http://169.254.169.254/", "http://172.16.0.1/",
		"http://192.168.1.1/", "http://198.18.0.1/", "http://203.0.113.1/", "http://224.0.0.1/", "http://240.0.0.1/",
		"http://255.255.255.255/", "ftp://example.com/", "http://u:p@example.com/",
		// IPv6 reserved by the IETF (migration 057), and what is next to it.
		"http://[0:0:0:1::1]/", "http://[::1:0:0:1]/", "http://[100:0:0:1::1]/", "http://[101::1]/", "http://[1000::1]/",
		"http://[4000::1]/", "http://[5f00::1]/", "http://[c000::1]/", "http://[fe00::1]/", "http://[2000::1]/",
		"http://[2001:200::1]/", "http://[3fff:1000::1]/", "http://[64:ff9b::808:808]/",
		// What url.Parse refuses, which every delivery would (migration 052).
		"https://example.com/%zz", "https://example.com/#%zz", "https://example.com/%", "https://example.com/a%2",
		"https://example.com/hook?token=s3cret#top%", "http://[2606:4700::1111]x/", "http://example.com:8080:90/",
		// Hosts with an empty label, which no DNS lookup finds.
		"http://.../", "http://a..b/", "http://.example.com/", "http://./", "http://example.com../", "http://.localhost/",
		// Accepted by both: an empty port is the scheme's default; escapes
		// of two hex digits; one trailing dot.
		"http://example.com:/", "http://[2606:4700::1111]:/", "https://example.com/%41%e2%82%AC?q=%20#%2F", "http://example.com./",
		"http://127.0.0.1:/",
	}
	for _, allow := range []string{"", "127.0.0.0/8,::1/128"} {
		allowed := mustAllowed(t, allow)
		if _, err := pool.Exec(ctx, `INSERT INTO errand.settings (name, value) VALUES ('webhook_allow_cidrs', $1)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, (config{allowed: allowed}).allowedText()); err != nil {
			t.Fatal(err)
		}
		for _, u := range urls {
			var sqlProblem *string
			if err := pool.QueryRow(ctx, `SELECT errand.webhook_url_problem($1)`, u).Scan(&sqlProblem); err != nil {
				t.Fatal(err)
			}
			_, goErr := checkURL(u, allowed)
			if (sqlProblem != nil) != (goErr != nil) {
				t.Errorf("allowed %q, %s: SQL says %v, Go says %v", allow, u, deref(sqlProblem), goErr)
			}
		}
	}

	// Refused at INSERT only: a % that starts no escape in the query is
	// sent as it is by Go, so an endpoint stored before migration 052 keeps
	// being delivered to; RFC 3986 allows it nowhere.
	for _, u := range []string{"https://example.com/hook?discount=50%", "https://example.com/hook?a=%zz#top"} {
		var sqlProblem *string
		if err := pool.QueryRow(ctx, `SELECT errand.webhook_url_problem($1)`, u).Scan(&sqlProblem); err != nil {
			t.Fatal(err)
		}
		if _, goErr := checkURL(u, nil); sqlProblem == nil || goErr != nil {
			t.Errorf("%s: SQL says %v, Go says %v; want it refused by SQL only", u, deref(sqlProblem), goErr)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<ok>"
	}
	return *s
}
