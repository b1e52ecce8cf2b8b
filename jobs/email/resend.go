package email

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/errand-dev/errand/jobs/outbound"
)

// resend-go turns every answer but a 429 into a plain string, so the kind
// reads the answer itself through outbound's recording transport and decides
// here what Resend's answer means.

// outcome is what to do about one send.
type outcome int

const (
	outcomeSent        outcome = iota // 2xx
	outcomeRetry                      // 5xx, 408, 409 concurrent request, network error, timeout
	outcomeRateLimited                // 429: wait without using an attempt
	outcomeOperator                   // 401, 403, 404, 405: the operator must fix errand's setup; wait
	outcomePermanent                  // 400, 422, 409 other, other 4xx: this email cannot be sent
)

type sendResult struct {
	outcome   outcome
	messageID string // outcomeSent
	// reason says what happened, with Resend's own message when it gave one.
	reason string
	// retryAfter is Resend's Retry-After, 0 when absent.
	retryAfter time.Duration
}

// resendError is Resend's error body.
type resendError struct {
	StatusCode int    `json:"statusCode"`
	Name       string `json:"name"`
	Message    string `json:"message"`
}

// classify decides from an answer (status 0: none came, netErr says why).
func classify(a *outbound.Answer, netErr error) sendResult {
	if a.Status == 0 {
		if netErr == nil {
			netErr = fmt.Errorf("no answer")
		}
		return sendResult{outcome: outcomeRetry, reason: "send to Resend: " + netErr.Error()}
	}
	if a.Status >= 200 && a.Status < 300 {
		var ok struct {
			ID string `json:"id"`
		}
		// A 2xx is sent even if its body is odd: sending again would not help.
		_ = json.Unmarshal(a.Body, &ok)
		return sendResult{outcome: outcomeSent, messageID: ok.ID}
	}
	var re resendError
	_ = json.Unmarshal(a.Body, &re)
	msg := re.Message
	if msg == "" {
		msg = outbound.Snippet(a.Body, 300)
	}
	status := fmt.Sprintf("%d %s", a.Status, http.StatusText(a.Status))
	reason := "Resend answered " + status
	if re.Name != "" {
		reason += " " + re.Name
	}
	if msg != "" {
		reason += ": " + msg
	}
	r := sendResult{reason: reason, retryAfter: outbound.ParseRetryAfter(a.Header.Get("Retry-After"), time.Now())}
	switch class := outbound.Classify(a.Status); {
	case class == outbound.RateLimited:
		r.outcome = outcomeRateLimited
	case class == outbound.Retry:
		r.outcome = outcomeRetry
	case a.Status == http.StatusUnauthorized:
		r.outcome = outcomeOperator
		r.reason = "Resend rejected the API key (" + status + "): " + msg + "; emails wait and go out once RESEND_API_KEY is fixed"
	case a.Status == http.StatusForbidden:
		r.outcome = outcomeOperator
		r.reason = "Resend refused to send (" + status + "): " + msg + "; emails wait until the key's permissions or the sending domain (ERRAND_EMAIL_FROM) are fixed"
	case class == outbound.Misdirected:
		r.outcome = outcomeOperator
		r.reason = "Resend's endpoint answered " + status + ": " + msg + "; check RESEND_BASE_URL (https, no redirect); emails wait until it is fixed"
	case a.Status == http.StatusConflict && re.Name == "concurrent_idempotent_requests":
		r.outcome = outcomeRetry
	default:
		// 400, 422 (a bad address, a bad attachment), 409 invalid_idempotent_request
		// (the key was used with another body) and the rest of 4xx.
		r.outcome = outcomePermanent
	}
	return r
}
