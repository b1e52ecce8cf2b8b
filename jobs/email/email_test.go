package email

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/jobs/outbound"
	"github.com/resend/resend-go/v2"
)

func testSender(t *testing.T, c config) *emailSender {
	t.Helper()
	templates, err := loadTemplates(templateFiles, "templates")
	if err != nil {
		t.Fatal(err)
	}
	k := &emailSender{templates: templates}
	k.configure(c, nil, nil)
	return k
}

func TestEmailTemplatesLoadAndArePublishedAsTheTemplateEnum(t *testing.T) {
	templates, err := loadTemplates(templateFiles, "templates")
	if err != nil {
		t.Fatal(err)
	}
	needs := map[string][]string{}
	for name, tmpl := range templates {
		needs[name] = tmpl.needs
	}
	want := map[string][]string{"invite": {"invite_url"}, "password_reset": {"reset_url"}}
	for name, fields := range want {
		if !slices.Equal(needs[name], fields) {
			t.Errorf("template %s needs %v, want %v", name, needs[name], fields)
		}
	}

	k := Kind()
	if k.Name != "email.send" || k.Queue != jobs.QueueEmail || k.Timeout != 30*time.Second || k.MaxAttempts != 25 {
		t.Errorf("kind %s queue %s timeout %s max attempts %d", k.Name, k.Queue, k.Timeout, k.MaxAttempts)
	}
	if !slices.Equal(k.RequiredArgs, []string{"to", "template"}) {
		t.Errorf("required args %v", k.RequiredArgs)
	}
	// The enum is the template directories, sorted, then custom: compared
	// with the directory as read from disk, not a list written here, so a
	// new template needs no change to this test.
	got := k.Info().ArgEnums["template"]
	if want := TemplateDirectories(t); !slices.Equal(got, want) {
		t.Errorf("template enum %v, want the template directories and custom: %v", got, want)
	}
	if len(got) == 0 || got[len(got)-1] != TemplateCustom {
		t.Errorf("template enum %v does not end with %s", got, TemplateCustom)
	} else if dirs := got[:len(got)-1]; !slices.IsSorted(dirs) || slices.Contains(dirs, TemplateCustom) || len(slices.Compact(slices.Clone(dirs))) != len(dirs) {
		t.Errorf("template enum %v: want the directories sorted, each once, then %s once", got, TemplateCustom)
	}
	// Templates other kinds or the README rely on.
	for _, name := range []string{"invite", "password_reset", "invoice_receipt"} {
		if !slices.Contains(got, name) {
			t.Errorf("template enum %v lacks %s", got, name)
		}
		if templates[name] == nil {
			t.Errorf("template %s did not load", name)
		}
	}
	if len(templates) != len(got)-1 {
		t.Errorf("%d templates loaded, %d in the enum besides custom", len(templates), len(got)-1)
	}
}

// TemplateDirectories is what email.send should accept as "template", read
// from disk rather than from the package: the directories under templates/
// in name order (os.ReadDir sorts), then custom. Names starting with "." or
// "_" are left out, as //go:embed leaves them out. For this package's tests
// and, exported by this test file, send_test.go's.
func TemplateDirectories(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !strings.HasPrefix(e.Name(), "_") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		t.Fatal("no template directory under templates/")
	}
	return append(names, TemplateCustom)
}

func TestEmailTemplateDirectoriesMustBeComplete(t *testing.T) {
	cases := map[string]fstest.MapFS{
		"a template without its plain-text body": {
			"t/welcome/subject.txt": {Data: []byte("Hi")},
			"t/welcome/body.html":   {Data: []byte("<p>Hi</p>")},
		},
		"a template called custom": {
			"t/custom/subject.txt": {Data: []byte("Hi")},
			"t/custom/body.html":   {Data: []byte("<p>Hi</p>")},
			"t/custom/body.txt":    {Data: []byte("Hi")},
		},
		"a template that does not parse": {
			"t/welcome/subject.txt": {Data: []byte("Hi {{.Workspace.Name")},
			"t/welcome/body.html":   {Data: []byte("<p>Hi</p>")},
			"t/welcome/body.txt":    {Data: []byte("Hi")},
		},
	}
	for name, fsys := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := loadTemplates(fsys, "t"); err == nil {
				t.Error("loaded")
			}
		})
	}
}

func TestInviteRendersTheWorkspaceNameAndTheLink(t *testing.T) {
	k := testSender(t, config{})
	r, err := k.templates["invite"].render("Acme & Co", "acme", map[string]any{"invite_url": "https://app.test/invite?t=a&b=c"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Subject != "You've been invited to Acme & Co" {
		t.Errorf("subject %q", r.Subject)
	}
	for _, want := range []string{"Acme &amp; Co", `href="https://app.test/invite?t=a&amp;b=c"`, "<title>You've been invited to Acme &amp; Co</title>"} {
		if !strings.Contains(r.HTML, want) {
			t.Errorf("html lacks %q:\n%s", want, r.HTML)
		}
	}
	if !strings.Contains(r.Text, "join Acme & Co.") || !strings.Contains(r.Text, "\nhttps://app.test/invite?t=a&b=c\n") {
		t.Errorf("text:\n%s", r.Text)
	}

	// The optional inviter name, and the same bytes every time.
	data := map[string]any{"invite_url": "https://app.test/i", "inviter_name": "Ann"}
	first, err := k.templates["invite"].render("Acme", "acme", data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first.Text, "Ann has invited you to join Acme.") {
		t.Errorf("text with inviter_name:\n%s", first.Text)
	}
	for range 3 {
		again, _ := k.templates["invite"].render("Acme", "acme", data)
		if again != first {
			t.Fatal("rendering is not deterministic")
		}
	}
}

func TestPasswordResetRendersTheLink(t *testing.T) {
	k := testSender(t, config{})
	r, err := k.templates["password_reset"].render("Acme", "acme", map[string]any{"reset_url": "https://app.test/reset/xyz", "expires_in": json.Number("30")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Subject != "Reset your Acme password" || !strings.Contains(r.HTML, `href="https://app.test/reset/xyz"`) ||
		!strings.Contains(r.Text, "https://app.test/reset/xyz") || !strings.Contains(r.Text, "expires in 30.") {
		t.Errorf("got %+v", r)
	}
}

func TestTemplateDataErrorsNameTheField(t *testing.T) {
	k := testSender(t, config{})
	cases := []struct {
		name, template, workspace string
		data                      map[string]any
		want                      string
	}{
		{"invite without invite_url", "invite", "Acme", map[string]any{"other": 1}, `template "invite" needs data.invite_url`},
		{"invite without any data", "invite", "Acme", nil, `template "invite" needs data.invite_url`},
		{"invite_url set to null", "invite", "Acme", map[string]any{"invite_url": nil}, "needs data.invite_url"},
		{"invite_url left blank", "invite", "Acme", map[string]any{"invite_url": "  "}, "needs data.invite_url"},
		{"password_reset without reset_url", "password_reset", "Acme", map[string]any{"invite_url": "x"}, `template "password_reset" needs data.reset_url`},
		{"a workspace name that would inject a header", "invite", "Acme\r\nBcc: all@x.test", map[string]any{"invite_url": "x"}, "has a line break"},
		{"a workspace name with a Unicode line separator", "invite", "Acme\u2028Bcc: all@x.test", map[string]any{"invite_url": "x"}, "has a control character"},
		{"a workspace name with a control character", "invite", "Acme\x1b[2J", map[string]any{"invite_url": "x"}, "has a control character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.templates[tc.template].render(tc.workspace, "acme", tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEmailCheckRefusesBadArgs(t *testing.T) {
	k := testSender(t, config{})
	many := make(Recipients, 51)
	for i := range many {
		many[i] = "u@example.com"
	}
	custom := func(f func(a *Args)) Args {
		a := Args{To: Recipients{"ann@example.com"}, Template: "custom", Subject: "Hi", Text: "Hello"}
		f(&a)
		return a
	}
	cases := []struct {
		name string
		args Args
		want string
	}{
		{"an address without a domain", custom(func(a *Args) { a.To = Recipients{"ann"} }), `to: "ann" is not an email address`},
		{"two addresses in one string", custom(func(a *Args) { a.To = Recipients{"a@x.test, b@x.test"} }), "is not an email address"},
		{"an empty recipient list", custom(func(a *Args) { a.To = Recipients{} }), "to: no recipient"},
		{"an empty address", custom(func(a *Args) { a.To = Recipients{""} }), "to: empty address"},
		{"51 recipients", custom(func(a *Args) { a.To = many }), "to: 51 recipients, at most 50"},
		{"a display name with a newline", custom(func(a *Args) { a.To = Recipients{"Ann\r\nBcc: x@evil.test <ann@example.com>"} }), "has a line break"},
		{"a bad reply_to", custom(func(a *Args) { a.ReplyTo = "support at acme" }), `reply_to: "support at acme" is not an email address`},
		{"an unknown template", custom(func(a *Args) { a.Template = "no_such_template" }), `unknown template "no_such_template" (templates: ` + strings.Join(TemplateDirectories(t), ", ") + ")"},
		{"custom without a subject", custom(func(a *Args) { a.Subject = "" }), `subject is required with template "custom"`},
		{"a newline in the subject", custom(func(a *Args) { a.Subject = "Hi\nBcc: x@evil.test" }), "subject has a line break"},
		{"custom without html or text", custom(func(a *Args) { a.Text = "" }), "html or text (or both) is required"},
		{"a subject with a template that renders its own", Args{To: Recipients{"a@x.test"}, Template: "invite", Subject: "Hi"}, `for template "custom" only`},
		{"an attachment without a filename", custom(func(a *Args) { a.Attachments = []Attachment{{ContentBase64: "aGk="}} }), "attachments[0]: filename is required"},
		{"an attachment filename with a path", custom(func(a *Args) {
			a.Attachments = []Attachment{{Filename: "../etc/passwd", ContentBase64: "aGk="}}
		}), "must be a plain file name"},
		{"an attachment filename with a newline", custom(func(a *Args) {
			a.Attachments = []Attachment{{Filename: "a\r\nb.pdf", ContentBase64: "aGk="}}
		}), "line break or control character"},
		{"attachment content that is not base64", custom(func(a *Args) {
			a.Attachments = []Attachment{{Filename: "a.pdf", ContentBase64: "not base64!"}}
		}), "attachments[0] (a.pdf): content_base64 is not valid base64"},
		{"an attachment without content", custom(func(a *Args) { a.Attachments = []Attachment{{Filename: "a.pdf"}} }), "content_base64 is required"},
		{"a bad attachment content type", custom(func(a *Args) {
			a.Attachments = []Attachment{{Filename: "a.pdf", ContentBase64: "aGk=", ContentType: "pdf\r\nX: y"}}
		}), "is not a media type"},
		{"a tag name with a space", custom(func(a *Args) { a.Tags = map[string]string{"user id": "1"} }), `tags: name "user id"`},
		{"a tag value with a dot", custom(func(a *Args) { a.Tags = map[string]string{"plan": "pro.yearly"} }), `tags: value "pro.yearly" of "plan"`},
		{"a tag value over 256 characters", custom(func(a *Args) { a.Tags = map[string]string{"k": strings.Repeat("v", 257)} }), "tags: value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.check(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}

	t.Run("every problem at once", func(t *testing.T) {
		_, err := k.check(custom(func(a *Args) { a.To = Recipients{"x"}; a.Subject = "" }))
		if err == nil || !strings.Contains(err.Error(), "to: ") || !strings.Contains(err.Error(), "subject is required") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("good args, tags sorted", func(t *testing.T) {
		m, err := k.check(Args{
			To: Recipients{" Ann <ann@example.com>", "bob@example.com"}, Template: "invite", ReplyTo: "help@acme.test",
			Tags:        map[string]string{"zeta": "1", "alpha": "a-b_c", "Mid": "x"},
			Attachments: []Attachment{{Filename: "r.pdf", ContentBase64: "aGk=", ContentType: "application/pdf"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(m.to, []string{"Ann <ann@example.com>", "bob@example.com"}) {
			t.Errorf("to %q", m.to)
		}
		wantTags := []resend.Tag{{Name: "Mid", Value: "x"}, {Name: "alpha", Value: "a-b_c"}, {Name: "zeta", Value: "1"}}
		if !slices.Equal(m.tags, wantTags) {
			t.Errorf("tags %v, want %v", m.tags, wantTags)
		}
		if string(m.attachments[0].Content) != "hi" {
			t.Errorf("attachment %q", m.attachments[0].Content)
		}
	})
}

func TestEmailArgsDecoding(t *testing.T) {
	var a Args
	if err := json.Unmarshal([]byte(`{"to": "a@x.test", "template": "invite", "data": {"n": 1000000}, "future": true}`), &a); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.To, Recipients{"a@x.test"}) || a.Data["n"] != json.Number("1000000") {
		t.Errorf("got %+v", a)
	}
	if err := json.Unmarshal([]byte(`{"to": ["a@x.test", "b@x.test"]}`), &a); err != nil || len(a.To) != 2 {
		t.Errorf("array: %v %v", a.To, err)
	}
	for _, bad := range []string{`{"to": 5}`, `{"to": [1]}`, `{"data": [1]}`} {
		if err := json.Unmarshal([]byte(bad), &Args{}); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func TestClassifyResendAnswers(t *testing.T) {
	body := func(name, msg string) []byte {
		b, _ := json.Marshal(resendError{Name: name, Message: msg})
		return b
	}
	cases := []struct {
		name       string
		status     int
		header     http.Header
		body       []byte
		want       outcome
		reason     string
		retryAfter time.Duration
	}{
		{"accepted", 200, nil, []byte(`{"id":"em_1"}`), outcomeSent, "", 0},
		{"rate limited, with Retry-After", 429, http.Header{"Retry-After": {"3"}}, body("rate_limit_exceeded", "Too many requests"), outcomeRateLimited, "Too many requests", 3 * time.Second},
		{"server error", 500, nil, body("internal_server_error", "boom"), outcomeRetry, "Resend answered 500 Internal Server Error internal_server_error: boom", 0},
		{"unavailable, with Retry-After", 503, http.Header{"Retry-After": {"7"}}, []byte("upstream down"), outcomeRetry, "upstream down", 7 * time.Second},
		{"a concurrent request with the same key", 409, nil, body("concurrent_idempotent_requests", "in progress"), outcomeRetry, "in progress", 0},
		{"the key reused with another body", 409, nil, body("invalid_idempotent_request", "Same idempotency key used with a different request payload"), outcomePermanent, "different request payload", 0},
		{"a validation error", 422, nil, body("validation_error", "Invalid `to` field."), outcomePermanent, "Resend answered 422 Unprocessable Entity validation_error: Invalid `to` field.", 0},
		{"a bad request", 400, nil, body("invalid_attachment", "Attachment must have content"), outcomePermanent, "Attachment must have content", 0},
		{"a bad key", 401, nil, body("missing_api_key", "Missing API key"), outcomeOperator, "Resend rejected the API key (401 Unauthorized): Missing API key", 0},
		{"an unverified domain", 403, nil, body("invalid_from_address", "The acme.test domain is not verified"), outcomeOperator, "domain is not verified", 0},
		{"a wrong base URL", 404, nil, []byte("404 page not found"), outcomeOperator, "check RESEND_BASE_URL", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			r := classify(&outbound.Answer{Status: tc.status, Header: h, Body: tc.body}, nil)
			if r.outcome != tc.want || !strings.Contains(r.reason, tc.reason) || r.retryAfter != tc.retryAfter {
				t.Errorf("got %+v, want outcome %d reason containing %q retry after %s", r, tc.want, tc.reason, tc.retryAfter)
			}
		})
	}
	if r := classify(&outbound.Answer{}, io.ErrUnexpectedEOF); r.outcome != outcomeRetry || !strings.Contains(r.reason, "unexpected EOF") {
		t.Errorf("network error: %+v", r)
	}
	if r := classify(&outbound.Answer{Status: 200, Header: http.Header{}, Body: []byte(`{"id":"em_1"}`)}, nil); r.messageID != "em_1" {
		t.Errorf("message id %q", r.messageID)
	}
}

// The transport records Resend's answer and still lets resend-go read it;
// the client goes to errand's base URL (path kept) with the idempotency key.
func TestRecordingTransportAndBaseURL(t *testing.T) {
	var gotPath, gotKey string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotKey = r.URL.Path, r.Header.Get("Idempotency-Key")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(422)
		_, _ = w.Write([]byte(`{"statusCode":422,"name":"validation_error","message":"Invalid to"}`))
	}))
	defer srv.Close()
	k := testSender(t, config{apiKey: "re_x", baseURL: srv.URL + "/proxy/resend", from: "a@x.test"})
	a := &outbound.Answer{}
	_, err := k.client.Emails.SendWithOptions(outbound.WithAnswer(t.Context(), a), &resend.SendEmailRequest{From: "a@x.test", To: []string{"b@x.test"}, Subject: "s", Text: "t"},
		&resend.SendEmailOptions{IdempotencyKey: IdempotencyKey("inst", 42)})
	if err == nil || !strings.Contains(err.Error(), "Invalid to") {
		t.Errorf("resend-go error %v: the body must still reach it", err)
	}
	if a.Status != 422 || a.Header.Get("Retry-After") != "1" || !strings.Contains(string(a.Body), "validation_error") {
		t.Errorf("answer %+v", a)
	}
	if gotPath != "/proxy/resend/emails" || gotKey != "errand-inst-42" {
		t.Errorf("path %q key %q", gotPath, gotKey)
	}
}
