package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"riverqueue.com/riverui"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// UIPrefix is where River's dashboard is served.
const UIPrefix = "/ui"

// mountUI serves River's dashboard (riverui's embeddable handler) at /ui/
// when ERRAND_UI_PASSWORD is set, and only behind basic auth: it shows
// every workspace's jobs and their args. It works through its own River
// client, one that works no queue, on the pages' pool, so it never takes the
// connections jobs or crash recovery need, and it outlives the engine's
// client when that is replaced after fencing.
func mountUI(ctx context.Context, mux *http.ServeMux, web *store.Store, cfg config.Config, logger *slog.Logger) error {
	if cfg.UIPassword == "" {
		return nil
	}
	client, err := river.NewClient(riverpgxv5.New(web.Pool()), &river.Config{Schema: migrations.Schema, Logger: QuietLogger(logger)})
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	h, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints[pgx.Tx](client, nil),
		Logger:    QuietLogger(logger),
		Prefix:    UIPrefix,
	})
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	mux.Handle(UIPrefix+"/", basicAuth(cfg.UIUser, cfg.UIPassword, h, time.Now))
	logger.Info("River's dashboard is on (ERRAND_UI_PASSWORD): "+UIPrefix+"/ behind basic auth", slog.String("user", cfg.UIUser))
	return nil
}

// uiCookie carries a browser's login to the dashboard's own requests (its
// scripts and API calls): a browser sends basic auth credentials given in
// the page's URL only with that page, and after a 401 challenge only once it
// has asked its user. Its value is the time of the login and an HMAC of it
// keyed by the password, so it works on every replica, stops working when
// the password changes, and expires uiSessionTTL after the login: a copied
// cookie is not a login for ever.
const uiCookie = "errand_ui"

// uiSessionTTL is how long a dashboard login lasts; then the browser asks
// for the password again.
const uiSessionTTL = 12 * time.Hour

// uiClockSkew is how far in the future a login's time may be: replicas'
// clocks differ a little.
const uiClockSkew = time.Minute

// basicAuth lets through only requests with the user and password (or the
// unexpired cookie a successful login sets), compared in constant time (over
// fixed-length digests, so not even the lengths leak). now is the clock
// (time.Now in the daemon).
func basicAuth(user, password string, next http.Handler, now func() time.Time) http.Handler {
	wantUser, wantPassword := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	session := func(issued int64) string {
		mac := hmac.New(sha256.New, []byte(password))
		mac.Write([]byte("errand ui session\x00" + user + "\x00" + strconv.FormatInt(issued, 10)))
		return strconv.FormatInt(issued, 10) + "." + hex.EncodeToString(mac.Sum(nil))
	}
	validSession := func(value string) bool {
		at, _, ok := strings.Cut(value, ".")
		issued, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil || !hmac.Equal([]byte(value), []byte(session(issued))) {
			return false
		}
		age := now().Sub(time.Unix(issued, 0))
		return age < uiSessionTTL && age > -uiClockSkew
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(uiCookie); err == nil && validSession(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		u, p, ok := r.BasicAuth()
		gotUser, gotPassword := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passwordOK := subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:])
		if !ok || userOK&passwordOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="errand", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		// Behind a proxy that ends TLS the request comes in plain: the
		// proxy's X-Forwarded-Proto says what the browser used, so that the
		// cookie is Secure and the reload below stays on https.
		// (A chain of proxies lists one per hop; the first is the browser's.)
		proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
		secure := r.TLS != nil || strings.EqualFold(strings.TrimSpace(proto), "https")
		http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: session(now().Unix()), Path: UIPrefix + "/",
			MaxAge: int(uiSessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure})
		if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
			// A page opened as http://user:password@host/ui/... would resolve
			// the dashboard's own fetches against a URL with credentials,
			// which browsers refuse: reload it without them, on the cookie.
			scheme := "http"
			if secure {
				scheme = "https"
			}
			http.Redirect(w, r, scheme+"://"+r.Host+r.URL.RequestURI(), http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}
