// Package outbound is what kinds that call other services over HTTP share
// (email.send with Resend, webhooks with customers' endpoints): a client that
// never follows redirects and keeps each answer for the caller to read, a
// classification of HTTP statuses into what a job should do, and
// Retry-After parsing.
package outbound

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Answer is what a server answered to one request. Status 0 means no answer
// came (see the request's error).
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

type answerKey struct{}

// WithAnswer makes a request sent with ctx through a Client's transport
// record its answer in a. SDKs that turn answers into strings (resend-go
// does, for all but a 429) can then be read exactly.
func WithAnswer(ctx context.Context, a *Answer) context.Context {
	return context.WithValue(ctx, answerKey{}, a)
}

// MaxAnswerBody bounds what is kept of an answer.
const MaxAnswerBody = 1 << 20

// RecordingTransport records the status, headers and body of a request
// whose context carries an *Answer (WithAnswer), and hands the caller an
// unread copy of the body.
type RecordingTransport struct{ Base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (t RecordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	a, ok := req.Context().Value(answerKey{}).(*Answer)
	if !ok {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBody))
	resp.Body.Close()
	if err != nil {
		// The answer was lost on the way: a network error like any other.
		return nil, fmt.Errorf("read answer (%s): %w", resp.Status, err)
	}
	a.Status, a.Header, a.Body = resp.StatusCode, resp.Header, body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// NewClient returns an HTTP client with a RecordingTransport over base (nil:
// a clone of http.DefaultTransport) and the given overall timeout, which
// never follows a redirect: Go would turn a POST into a bodiless GET, and
// that GET's answer would read as success.
func NewClient(base http.RoundTripper, timeout time.Duration) *http.Client {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &http.Client{
		Transport:     RecordingTransport{Base: base},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Class is what an HTTP status means for the job that made the request.
type Class int

const (
	// Success: 2xx.
	Success Class = iota
	// Retry: 5xx, 408, or no answer at all; another attempt may succeed.
	Retry
	// RateLimited: 429; wait (Retry-After) without using an attempt.
	RateLimited
	// Misdirected: 3xx (never followed), 404, 405, 401, 403: the request
	// went to the wrong place or was not allowed; for a provider errand
	// calls with its own key this is the operator's to fix.
	Misdirected
	// Rejected: any other 4xx; this request will never be accepted.
	Rejected
)

// Classify maps a status (0: no answer) to its Class. Callers refine it
// where their service documents more (Resend's 409s).
func Classify(status int) Class {
	switch {
	case status == 0:
		return Retry
	case status >= 200 && status < 300:
		return Success
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status >= 500 || status == http.StatusRequestTimeout:
		return Retry
	case status >= 300 && status < 400, status == http.StatusNotFound, status == http.StatusMethodNotAllowed,
		status == http.StatusUnauthorized, status == http.StatusForbidden:
		return Misdirected
	default:
		return Rejected
	}
}

// Snippet is a body shortened for an error message.
func Snippet(body []byte, max int) string {
	s := strings.TrimSpace(string(body))
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// MaxRetryAfter caps a Retry-After, so a bogus one cannot park jobs for days.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After header: seconds (fractions accepted,
// as some servers send them) or an HTTP date. It returns 0 when absent or
// unreadable, and never more than MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(secs) || secs <= 0 {
			return 0
		}
		d = time.Duration(math.Min(secs, MaxRetryAfter.Seconds()) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}
