package daemon

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A dashboard login's cookie lasts uiSessionTTL: a copied cookie is not a
// login for ever. One with a changed time, or made for another password,
// is no login at all.
func TestDashboardSessionExpires(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	h := basicAuth("errand", "correct horse battery staple", ok, func() time.Time { return now })
	get := func(cookie *http.Cookie, user, password string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/ui/api/jobs", nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	login := get(nil, "errand", "correct horse battery staple")
	cookies := login.Result().Cookies()
	if login.Code != http.StatusOK || len(cookies) != 1 || cookies[0].MaxAge != int(uiSessionTTL/time.Second) {
		t.Fatalf("login: %d, cookies %+v; want 200 and one cookie for %s", login.Code, cookies, uiSessionTTL)
	}
	session := &http.Cookie{Name: uiCookie, Value: cookies[0].Value}
	issued, mac, _ := strings.Cut(session.Value, ".")

	otherPassword := basicAuth("errand", "another long password", ok, func() time.Time { return now })
	req := httptest.NewRequest(http.MethodGet, "/ui/api/jobs", nil)
	req.AddCookie(session)
	rec := httptest.NewRecorder()
	otherPassword.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("the cookie after the password changed: %d, want 401", rec.Code)
	}

	for _, c := range []struct {
		name   string
		later  time.Duration
		cookie *http.Cookie
		want   int
	}{
		{"the cookie an hour later", time.Hour, session, http.StatusOK},
		{"the cookie just before it expires", uiSessionTTL - time.Second, session, http.StatusOK},
		{"the cookie when it expires", uiSessionTTL, session, http.StatusUnauthorized},
		{"the cookie a day later", 24 * time.Hour, session, http.StatusUnauthorized},
		{"the cookie with its time moved a day on", 24 * time.Hour,
			&http.Cookie{Name: uiCookie, Value: strconv.FormatInt(now.Add(24*time.Hour).Unix(), 10) + "." + mac}, http.StatusUnauthorized},
		{"the cookie with its time moved an hour into the future", 0,
			&http.Cookie{Name: uiCookie, Value: strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + "." + mac}, http.StatusUnauthorized},
		{"the cookie without its time", time.Hour, &http.Cookie{Name: uiCookie, Value: mac}, http.StatusUnauthorized},
		{"the cookie's time alone", time.Hour, &http.Cookie{Name: uiCookie, Value: issued + "."}, http.StatusUnauthorized},
	} {
		now = time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC).Add(c.later)
		if got := get(c.cookie, "", "").Code; got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// After it expired, the password logs in again.
	if got := get(nil, "errand", "correct horse battery staple").Code; got != http.StatusOK {
		t.Errorf("logging in again a day later: %d, want 200", got)
	}
}
