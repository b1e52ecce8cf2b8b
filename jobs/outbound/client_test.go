package outbound

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClassifyStatuses(t *testing.T) {
	cases := map[int]Class{
		0: Retry, 200: Success, 202: Success, 204: Success,
		301: Misdirected, 302: Misdirected, 307: Misdirected,
		400: Rejected, 401: Misdirected, 403: Misdirected, 404: Misdirected, 405: Misdirected,
		408: Retry, 409: Rejected, 410: Rejected, 413: Rejected, 422: Rejected, 429: RateLimited,
		500: Retry, 502: Retry, 503: Retry, 504: Retry,
	}
	for status, want := range cases {
		if got := Classify(status); got != want {
			t.Errorf("Classify(%d) = %d, want %d", status, got, want)
		}
	}
}

// The client never follows a redirect (Go would turn the POST into a
// bodiless GET), and records the answer while the caller can still read it.
func TestClientRecordsTheAnswerAndNeverFollowsRedirects(t *testing.T) {
	var followed bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed = true
			return
		}
		w.Header().Set("Location", "/elsewhere")
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusFound)
		_, _ = w.Write([]byte("moved"))
	}))
	defer srv.Close()
	a := &Answer{}
	req, _ := http.NewRequestWithContext(WithAnswer(t.Context(), a), http.MethodPost, srv.URL+"/send", strings.NewReader("{}"))
	resp, err := NewClient(nil, 0).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 16)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if followed || resp.StatusCode != http.StatusFound {
		t.Errorf("status %d, followed %v: want the 302 itself", resp.StatusCode, followed)
	}
	if a.Status != http.StatusFound || a.Header.Get("Retry-After") != "2" || string(a.Body) != "moved" || string(body[:n]) != "moved" {
		t.Errorf("answer %+v, caller read %q", a, body[:n])
	}
	if Snippet([]byte(strings.Repeat("x", 10)), 4) != "xxxx…" {
		t.Error("Snippet does not shorten")
	}
}
