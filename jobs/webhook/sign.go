package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Signing follows the Standard Webhooks specification
// (https://www.standardwebhooks.com): HMAC-SHA256 of "id.timestamp.body",
// keyed by the base64-decoded secret (after its "whsec_" prefix), sent as
// "v1,<base64>"; several signatures are space-separated.

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// decodeSecret returns the key of a "whsec_<base64>" secret.
func decodeSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, errors.New(`signing secret does not start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("signing secret is not base64 after whsec_")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, errors.New("signing secret is not 24 to 64 bytes")
	}
	return key, nil
}

// sign is one "v1,<signature>" of a message.
func sign(key []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts.Unix(), 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// signatures is the webhook-signature header: one signature per key (the
// current secret first, then the previous one during a rotation).
func signatures(keys [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(keys))
	for i, k := range keys {
		sigs[i] = sign(k, id, ts, body)
	}
	return strings.Join(sigs, " ")
}
