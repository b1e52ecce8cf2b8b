package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// resend-go turns every answer but a 429 into a plain string, so errand
// reads the answer itself: recordingTransport keeps the status, headers and
// body of the request whose context carries an *httpAnswer, and hands the
// client an unread copy of the body.

type httpAnswerKey struct{}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

func withHTTPAnswer(ctx context.Context, a *httpAnswer) context.Context {
	return context.WithValue(ctx, httpAnswerKey{}, a)
}

type recordingTransport struct{ base http.RoundTripper }

// maxAnswerBody bounds what is kept of an answer; Resend's are small JSON.
const maxAnswerBody = 1 << 20

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	a, ok := req.Context().Value(httpAnswerKey{}).(*httpAnswer)
	if !ok {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBody))
	resp.Body.Close()
	if err != nil {
		// The answer was lost on the way: a network error like any other.
		return nil, fmt.Errorf("read answer (%s): %w", resp.Status, err)
	}
	a.status, a.header, a.body = resp.StatusCode, resp.Header, body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

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
func classify(a *httpAnswer, netErr error) sendResult {
	if a.status == 0 {
		if netErr == nil {
			netErr = fmt.Errorf("no answer")
		}
		return sendResult{outcome: outcomeRetry, reason: "send to Resend: " + netErr.Error()}
	}
	if a.status >= 200 && a.status < 300 {
		var ok struct {
			ID string `json:"id"`
		}
		// A 2xx is sent even if its body is odd: sending again would not help.
		_ = json.Unmarshal(a.body, &ok)
		return sendResult{outcome: outcomeSent, messageID: ok.ID}
	}
	var re resendError
	_ = json.Unmarshal(a.body, &re)
	msg := re.Message
	if msg == "" {
		msg = strings.TrimSpace(string(a.body))
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
	}
	status := fmt.Sprintf("%d %s", a.status, http.StatusText(a.status))
	reason := "Resend answered " + status
	if re.Name != "" {
		reason += " " + re.Name
	}
	if msg != "" {
		reason += ": " + msg
	}
	r := sendResult{reason: reason, retryAfter: parseRetryAfter(a.header.Get("Retry-After"), time.Now())}
	switch {
	case a.status == http.StatusTooManyRequests:
		r.outcome = outcomeRateLimited
	case a.status == http.StatusUnauthorized:
		r.outcome = outcomeOperator
		r.reason = "Resend rejected the API key (" + status + "): " + msg + "; emails wait and go out once RESEND_API_KEY is fixed"
	case a.status == http.StatusForbidden:
		r.outcome = outcomeOperator
		r.reason = "Resend refused to send (" + status + "): " + msg + "; emails wait until the key's permissions or the sending domain (ERRAND_EMAIL_FROM) are fixed"
	case a.status == http.StatusNotFound || a.status == http.StatusMethodNotAllowed || (a.status >= 300 && a.status < 400):
		r.outcome = outcomeOperator
		r.reason = "Resend's endpoint answered " + status + ": " + msg + "; check RESEND_BASE_URL (https, no redirect); emails wait until it is fixed"
	case a.status == http.StatusConflict && re.Name == "concurrent_idempotent_requests":
		r.outcome = outcomeRetry
	case a.status >= 500 || a.status == http.StatusRequestTimeout:
		r.outcome = outcomeRetry
	default:
		// 400, 422 (a bad address, a bad attachment), 409 invalid_idempotent_request
		// (the key was used with another body) and the rest of 4xx.
		r.outcome = outcomePermanent
	}
	return r
}

// maxRetryAfter caps a Retry-After, so a bogus one cannot park emails for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads seconds (fractions accepted, as some servers send
// them) or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(secs) || secs <= 0 {
			return 0
		}
		d = time.Duration(math.Min(secs, maxRetryAfter.Seconds()) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
