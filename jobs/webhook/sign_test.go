package webhook

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The specification's published test vector (its libraries' tests share it).
func TestSignMatchesTheSpecificationsTestVector(t *testing.T) {
	key, err := decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
}

// The specification's reference verifier, independent of sign, accepts
// both signatures of a rotation, each secret on its own, and refuses a
// body changed by one byte.
func TestSignaturesVerifyWithTheReferenceLibrary(t *testing.T) {
	oldSecret, newSecret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_z5mqlvo2afQsrtVxPYQnxIp4qVK6i3mFIXscoi6C1FU="
	oldKey, _ := decodeSecret(oldSecret)
	newKey, _ := decodeSecret(newSecret)
	body := []byte(`{"type":"invoice.paid","timestamp":"2026-11-26T10:00:00.000000Z","data":{"id":"in_1"}}`)
	now := time.Now()
	h := http.Header{}
	h.Set("webhook-id", "5b0a4f0e-8f1e-4a53-9d5b-0c7b8f0a9e11")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", signatures([][]byte{newKey, oldKey}, "5b0a4f0e-8f1e-4a53-9d5b-0c7b8f0a9e11", now, body))
	if n := len(strings.Fields(h.Get("webhook-signature"))); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	for _, secret := range []string{oldSecret, newSecret} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, h); err != nil {
			t.Errorf("secret %s: %v", secret, err)
		}
		tampered := append([]byte{}, body...)
		tampered[len(tampered)-2] = 'X'
		if err := wh.Verify(tampered, h); err == nil {
			t.Errorf("secret %s accepts a changed body", secret)
		}
	}
}

func TestDecodeSecretRefusesWhatIsNotAStandardSecret(t *testing.T) {
	for name, secret := range map[string]string{
		"no prefix":             "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"not base64":            "whsec_not*base64",
		"too short (3 bytes)":   "whsec_YWJj",
		"too long (65 bytes)":   "whsec_" + strings.Repeat("QUFB", 21) + "QUE=",
		"the asymmetric prefix": "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	} {
		if _, err := decodeSecret(secret); err == nil {
			t.Errorf("%s: %q accepted", name, secret)
		}
	}
}

func TestMessageBodyIsCompactAndKeepsThePayload(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	got, err := messageBody("invoice.paid", []byte(`{"amount": 1000000, "note": "<b>&</b>", "n": 1e3}`), at)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"invoice.paid","timestamp":"2026-11-26T09:00:00.123456Z","data":{"amount":1000000,"note":"<b>&</b>","n":1e3}}`
	if string(got) != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
}
