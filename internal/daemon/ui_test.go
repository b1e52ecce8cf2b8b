package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

const uiPassword = "correct horse battery staple"

func uiGet(t *testing.T, addr, path, user, password string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || password != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// Without ERRAND_UI_PASSWORD there is no dashboard at all.
func TestDashboardIsOffWithoutAPassword(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	d := errandtest.StartDaemon(t, url, nil)
	if resp := uiGet(t, d.Addr, "/ui/", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/ without a password configured: %s, want 404", resp.Status)
	}
}

// With a password, every path under /ui/ (the page and its API) asks for
// it, and only the right user and password get through.
func TestDashboardIsNeverServedUnauthenticated(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_UI_PASSWORD": uiPassword})
	// A made-up session cookie is no login either.
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.Addr+"/ui/api/jobs?state=available&limit=20", nil)
	req.AddCookie(&http.Cookie{Name: "errand_ui", Value: strings.Repeat("0", 64)})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged session cookie: %s, want 401", resp.Status)
	}
	for _, path := range []string{"/ui/", "/ui/jobs", "/ui/api/jobs?state=available&limit=20"} {
		for _, tc := range []struct {
			name, user, password string
			want                 int
		}{
			{"no credentials", "", "", http.StatusUnauthorized},
			{"a wrong password", "errand", uiPassword + "!", http.StatusUnauthorized},
			{"a wrong user", "admin", uiPassword, http.StatusUnauthorized},
			{"an empty password", "errand", "", http.StatusUnauthorized},
			{"the right ones", "errand", uiPassword, http.StatusOK},
		} {
			resp := uiGet(t, d.Addr, path, tc.user, tc.password)
			if resp.StatusCode != tc.want {
				t.Errorf("%s with %s: %s, want %d", path, tc.name, resp.Status, tc.want)
			}
			if tc.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s with %s: no Basic challenge", path, tc.name)
			}
		}
	}
}

func TestDashboardRefusesABadConfiguration(t *testing.T) {
	for _, tc := range []struct{ name, variable, value, want string }{
		{"a short password", "ERRAND_UI_PASSWORD", "hunter2", "ERRAND_UI_PASSWORD"},
		{"a user with a colon", "ERRAND_UI_USER", "ops:team", "cannot hold a colon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := errand.Main(context.Background(), []string{"run"},
				errandtest.Env(map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", tc.variable: tc.value}), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s=%q: %v, want an error saying %q", tc.variable, tc.value, err, tc.want)
			}
			if err != nil && tc.variable == "ERRAND_UI_PASSWORD" && strings.Contains(err.Error()+out.String(), tc.value) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// chromium is the headless browser of Debian's chromium package; .ci/run
// installs it, so in CI its absence fails the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH (.ci/run installs Debian's chromium)")
	}
	t.Skip("no chromium on PATH: apt-get install chromium to run the browser test")
	return ""
}

// A real browser logs in and sees a job that was enqueued with SQL: the
// dashboard's page, its JavaScript and its API all work behind the password.
// ERRAND_UI_SCREENSHOT=<path> also saves a screenshot (docs/dashboard.png).
func TestDashboardShowsAJobEnqueuedBySQLInABrowser(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	url, pool := errandtest.MigratedDB(t)
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_UI_PASSWORD": uiPassword})
	ws := errandtest.NewWorkspace(t, pool, "acme")
	var id int64
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.jobs (workspace_id, kind, args, run_at)
		VALUES ($1, 'ping', '{"sleep_ms": 4321}', now() + interval '1 day') RETURNING id`, ws).Scan(&id); err != nil {
		t.Fatal(err)
	}
	page := fmt.Sprintf("http://errand:%s@%s/ui/jobs/%d", strings.ReplaceAll(uiPassword, " ", "%20"), d.Addr, id)
	run := func(extra ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=20000", "--window-size=1280,900"}, extra...)
		cmd := exec.CommandContext(ctx, browser, append(args, "--enable-logging=stderr", page)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || t.Failed() {
			t.Fatalf("%s: %v\n%s", browser, err, consoleLines(stderr.String()))
		}
		return out
	}
	// The job page renders client-side from the API: its kind, its args and
	// its state are in the DOM only if the browser got past the password.
	dom := string(run("--dump-dom"))
	for _, want := range []string{"ping", "4321", "scheduled"} {
		if !strings.Contains(strings.ToLower(dom), want) {
			t.Errorf("the job page lacks %q:\n%.3000s", want, dom)
		}
	}
	if t.Failed() {
		return
	}
	shot := os.Getenv("ERRAND_UI_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	run("--screenshot=" + shot)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("screenshot %s: %v (%d bytes)", shot, err, len(png))
	}
}

// consoleLines keeps the page's console messages of chromium's log.
func consoleLines(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "CONSOLE") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// Behind a proxy that ends TLS (as the README asks beyond a private
// network), the login's reload stays on https and its cookie is Secure: the
// proxy's X-Forwarded-Proto says what the browser used. Before, the reload
// went to http:// on the proxy's TLS port and the cookie could travel in
// the clear.
func TestDashboardLoginBehindATLSProxyStaysOnHTTPS(t *testing.T) {
	t.Parallel()
	url, _ := errandtest.MigratedDB(t)
	d := errandtest.StartDaemon(t, url, map[string]string{"ERRAND_UI_PASSWORD": uiPassword})
	target, err := neturl.Parse("http://" + d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewTLSServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.SetXForwarded()
		pr.Out.Host = pr.In.Host
	}})
	defer proxy.Close()
	client := proxy.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequest(http.MethodGet, proxy.URL+"/ui/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("errand", uiPassword)
	req.Header.Set("Accept", "text/html")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != proxy.URL+"/ui/" {
		t.Errorf("login through the TLS proxy: %s to %q, want 303 to %q", resp.Status, resp.Header.Get("Location"), proxy.URL+"/ui/")
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || !cookies[0].Secure || !cookies[0].HttpOnly {
		t.Errorf("session cookie through the TLS proxy: %v, want one, Secure and HttpOnly", cookies)
	}
}
