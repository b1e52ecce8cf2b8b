package email

import (
	"cmp"
	"errors"
	htmltemplate "html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/store"
)

// emailsPageLimit is how many emails GET /emails lists (the latest, across
// workspaces).
const emailsPageLimit = 100

// EmailsHandler serves GET /emails (the latest emails of every workspace) and
// GET /emails/{id} (one email; ?workspace=<id> skips the search), for looking
// at captured emails in development. It reads each workspace's emails in a
// transaction scoped to it, listed through store.ForEachWorkspace, the one
// explicit path across workspaces.
//
// Bodies are shown only for captured emails: a sent email's links (a
// password reset) may still work. The page has no authentication: keep
// ERRAND_HTTP_ADDR private.
func EmailsHandler(st *store.Store, logger *slog.Logger) http.Handler {
	pages := htmltemplate.Must(htmltemplate.New("emails").Parse(emailsPageHTML))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /emails", func(w http.ResponseWriter, r *http.Request) {
		type row struct {
			Email
			WorkspaceName string
		}
		var rows []row
		err := store.ForEachWorkspace(r.Context(), st, func(id string) error {
			return st.InWorkspace(r.Context(), id, func(tx pgx.Tx) error {
				emails, err := recentEmails(r.Context(), tx, emailsPageLimit)
				if err != nil || len(emails) == 0 {
					return err
				}
				ws, err := store.CurrentWorkspace(r.Context(), tx)
				if err != nil {
					return err
				}
				for _, e := range emails {
					rows = append(rows, row{e, ws.Name})
				}
				return nil
			})
		})
		if err != nil {
			pageError(w, logger, err)
			return
		}
		slices.SortFunc(rows, func(a, b row) int {
			return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.ID, a.ID))
		})
		rows = rows[:min(len(rows), emailsPageLimit)]
		render(w, pages, "list", rows)
	})
	mux.HandleFunc("GET /emails/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "no such email", http.StatusNotFound)
			return
		}
		var found struct {
			Email
			WorkspaceName string
		}
		errFound := errors.New("found")
		look := func(wsID string) error {
			return st.InWorkspace(r.Context(), wsID, func(tx pgx.Tx) error {
				e, ok, err := emailByID(r.Context(), tx, id)
				if err != nil || !ok {
					return err
				}
				ws, err := store.CurrentWorkspace(r.Context(), tx)
				if err != nil {
					return err
				}
				found.Email, found.WorkspaceName = e, ws.Name
				return errFound
			})
		}
		if ws := r.URL.Query().Get("workspace"); ws != "" {
			err = look(ws)
		} else {
			err = store.ForEachWorkspace(r.Context(), st, look)
		}
		switch {
		case errors.Is(err, errFound):
		case err == nil, errors.Is(err, store.ErrWorkspaceNotFound):
			http.Error(w, "no such email", http.StatusNotFound)
			return
		default:
			pageError(w, logger, err)
			return
		}
		render(w, pages, "show", found)
	})
	return mux
}

func render(w http.ResponseWriter, t *htmltemplate.Template, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The email body is shown in a sandboxed iframe (no scripts, no forms, an
	// origin of its own); the page itself runs no script either.
	w.Header().Set("Content-Security-Policy", "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_ = t.ExecuteTemplate(w, name, data)
}

// pageError logs what went wrong and tells the (unauthenticated) caller only
// that it did.
func pageError(w http.ResponseWriter, logger *slog.Logger, err error) {
	logger.Warn("emails page: could not read emails", slog.String("error", err.Error()))
	http.Error(w, "could not read emails (see errand's log)", http.StatusInternalServerError)
}

const emailsPageHTML = `
{{define "head"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.}} · errand</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #1a1a1a; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
.status-failed { color: #b00020; } .status-captured { color: #0b6e4f; }
iframe { width: 100%; height: 60vh; border: 1px solid #ccc; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 1em; }
dt { font-weight: bold; } dd { margin: 0 0 .5em 0; }
</style></head><body>{{end}}

{{define "list"}}{{template "head" "Emails"}}
<h1>Emails</h1>
<p>The latest {{len .}} emails of every workspace, newest first. In capture mode (ERRAND_EMAIL_CAPTURE=true) emails are stored here instead of sent.</p>
<table>
<tr><th>id</th><th>created</th><th>workspace</th><th>status</th><th>to</th><th>subject</th><th>template</th><th>error</th></tr>
{{range .}}<tr>
<td><a href="/emails/{{.ID}}?workspace={{.WorkspaceID}}">{{.ID}}</a></td>
<td>{{.CreatedAt.UTC.Format "2006-01-02 15:04:05"}}</td>
<td>{{.WorkspaceName}}</td>
<td class="status-{{.Status}}">{{.Status}}</td>
<td>{{range $i, $to := .Recipients}}{{if $i}}, {{end}}{{$to}}{{end}}</td>
<td><a href="/emails/{{.ID}}?workspace={{.WorkspaceID}}">{{or .Subject "(not rendered)"}}</a></td>
<td>{{.Template}}</td>
<td>{{.Error}}</td>
</tr>{{else}}<tr><td colspan="8">No emails yet.</td></tr>{{end}}
</table></body></html>{{end}}

{{define "show"}}{{template "head" (or .Subject "Email")}}
<p><a href="/emails">← all emails</a></p>
<h1>{{or .Subject "(not rendered)"}}</h1>
<dl>
<dt>status</dt><dd class="status-{{.Status}}">{{.Status}}{{if .ProviderMessageID}} (Resend id {{.ProviderMessageID}}){{end}}</dd>
{{if .Error}}<dt>error</dt><dd>{{.Error}}</dd>{{end}}
<dt>workspace</dt><dd>{{.WorkspaceName}} ({{.WorkspaceID}})</dd>
<dt>from</dt><dd>{{.Sender}}</dd>
<dt>to</dt><dd>{{range $i, $to := .Recipients}}{{if $i}}, {{end}}{{$to}}{{end}}</dd>
{{if .ReplyTo}}<dt>reply to</dt><dd>{{.ReplyTo}}</dd>{{end}}
<dt>template</dt><dd>{{.Template}}</dd>
<dt>job</dt><dd>{{.JobID}}</dd>
<dt>created</dt><dd>{{.CreatedAt.UTC.Format "2006-01-02 15:04:05 MST"}}</dd>
{{if not .SentAt.IsZero}}<dt>{{.Status}} at</dt><dd>{{.SentAt.UTC.Format "2006-01-02 15:04:05 MST"}}</dd>{{end}}
</dl>
{{if eq .Status "captured"}}
{{if .HTML}}<h2>HTML</h2>
<iframe sandbox="" srcdoc="{{.HTML}}" title="HTML body"></iframe>{{end}}
{{if .Text}}<h2>Text</h2>
<pre>{{.Text}}</pre>{{end}}
{{else}}
<p>Bodies are shown for captured emails only: a sent email's links (a password reset) may still work.</p>
{{end}}
</body></html>{{end}}
`
