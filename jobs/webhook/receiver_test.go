package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand/errandtest"
)

// The README's receiver snippet ("Verifying on the receiving side"), byte
// for byte: TestTheREADMEShowsTheTestedVerify finds it there.

// secret is the endpoint's "whsec_…"; body the raw request body, unparsed;
// now the time it arrived.
func verify(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(sent, 0)).Abs() > 5*time.Minute {
		return errors.New("webhook-timestamp missing or more than 5 minutes off")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return errors.New("no valid signature")
}

// The README shows verify as this file has it, doc comment included, as a
// Go block of its own: a change to either fails here.
func TestTheREADMEShowsTheTestedVerify(t *testing.T) {
	src, err := os.ReadFile("receiver_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "receiver_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var snippet []byte
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "verify" && fd.Doc != nil {
			snippet = src[fset.Position(fd.Doc.Pos()).Offset:fset.Position(fd.End()).Offset]
		}
	}
	if snippet == nil {
		t.Fatal("no documented func verify in receiver_test.go")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := append(append([]byte("```go\n"), snippet...), "\n```\n"...)
	if !bytes.Contains(readme, block) {
		t.Errorf("README.md has no Go block that is receiver_test.go's verify:\n%s", snippet)
	}
}

// The specification's published test vector (its libraries' tests share
// it) verifies at the time it was signed; each thing a forger or a broken
// proxy might change is refused.
func TestVerifyAcceptsTheSpecificationsTestVector(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = "1614265330"
		sig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
		body   = `{"test": 2432232314}`
	)
	signedAt := time.Unix(1614265330, 0)
	header := func(id, ts, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sig)
		return h
	}
	if err := verify(secret, header(id, ts, sig), []byte(body), signedAt); err != nil {
		t.Fatalf("the specification's test vector: %v", err)
	}
	// Several signatures, the valid one among them (as the specification's
	// libraries test it).
	several := "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= " + sig
	if err := verify(secret, header(id, ts, several), []byte(body), signedAt.Add(4*time.Minute)); err != nil {
		t.Errorf("the vector among other signatures, 4 minutes later: %v", err)
	}
	for _, tc := range []struct {
		name, secret, id, ts, sig, body string
		now                             time.Time
	}{
		{name: "the body changed by one byte", body: `{"test": 2432232315}`},
		{name: "the body re-encoded", body: `{"test":2432232314}`},
		{name: "another message's id", id: "msg_p5jXN8AQM9LWM0D4loKWxJel"},
		{name: "another secret", secret: "whsec_z5mqlvo2afQsrtVxPYQnxIp4qVK6i3mFIXscoi6C1FU="},
		{name: "a secret that is not base64", secret: "whsec_not*base64"},
		{name: "the timestamp moved by a second", ts: "1614265331"},
		{name: "no timestamp", ts: "-"},
		{name: "no signature", sig: "-"},
		{name: "the signature under v2", sig: "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
		{name: "replayed 6 minutes later", now: signedAt.Add(6 * time.Minute)},
		{name: "signed 6 minutes in the future", now: signedAt.Add(-6 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			or := func(v, def string) string {
				switch v {
				case "":
					return def
				case "-":
					return ""
				}
				return v
			}
			now := tc.now
			if now.IsZero() {
				now = signedAt
			}
			if err := verify(or(tc.secret, secret), header(or(tc.id, id), or(tc.ts, ts), or(tc.sig, sig)), []byte(or(tc.body, body)), now); err == nil {
				t.Error("verified")
			}
		})
	}
}

// A real delivery during a secret rotation carries two signatures: verify
// accepts it with the old secret (a receiver not yet updated) and with the
// new one, and refuses it with any other, or with its body changed.
func TestVerifyAcceptsARealDeliverySignedDuringARotation(t *testing.T) {
	t.Parallel()
	rot := newRotated(t)
	rc, pool, ws, oldSecret, newSecret := rot.rc, rot.pool, rot.ws, rot.oldSecret, rot.newSecret

	msg, _ := dispatch(t, pool, ws, `{"event_type": "invoice.paid", "payload": {"invoice": "in_1"}}`)
	errandtest.WaitJob(t, pool, deliveries(t, pool, msg)[0], 30*time.Second, "completed")
	r := rc.received()[0]
	if n := len(strings.Fields(r.header.Get("webhook-signature"))); n != 2 {
		t.Fatalf("%d signatures during the rotation, want 2: %s", n, r.header.Get("webhook-signature"))
	}
	for name, secret := range map[string]string{"old": oldSecret, "new": newSecret} {
		if err := verify(secret, r.header, r.body, r.at); err != nil {
			t.Errorf("the %s secret: %v", name, err)
		}
	}
	if err := verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", r.header, r.body, r.at); err == nil {
		t.Error("verified with a secret the endpoint never had")
	}
	changed := bytes.Replace(r.body, []byte("in_1"), []byte("in_2"), 1)
	if err := verify(newSecret, r.header, changed, r.at); err == nil {
		t.Error("verified a changed body")
	}
}
