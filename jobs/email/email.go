// Package email is kind "email.send" (queue email): it renders a template
// (or takes custom content) and sends it through Resend, once, or captures
// it in errand.emails in capture mode (ERRAND_EMAIL_CAPTURE=true). The kind brings its
// configuration (config.go), its queries (queries.go), its templates
// (templates/), the captured-email pages (page.go) and its reading of
// Resend's answers (resend.go). Decisions: docs/email.md.
package email

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/resend/resend-go/v2"
	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/jobs/outbound"
	"github.com/errand-dev/errand/store"
)

// Args are the args of kind "email.send".
type Args struct {
	// To is one address or an array of 1 to 50, e.g. "Ann <ann@example.com>".
	To Recipients `json:"to" errand:"required"`
	// Template is a directory under templates/, or "custom".
	Template string `json:"template" errand:"required"`
	// Data fills the template (see templates/README.md).
	Data TemplateData `json:"data,omitempty"`
	// Subject, HTML and Text are template "custom"'s content, sent as they
	// are: Subject and at least one of HTML and Text.
	Subject string `json:"subject,omitempty"`
	HTML    string `json:"html,omitempty"`
	Text    string `json:"text,omitempty"`
	// ReplyTo is one address.
	ReplyTo     string       `json:"reply_to,omitempty"`
	Attachments []Attachment `json:"attachments,omitempty"`
	// Tags are Resend's tags; names and values are ASCII letters, digits,
	// underscores and dashes, at most 256 characters.
	Tags map[string]string `json:"tags,omitempty"`
}

// Attachment is a file sent with an email. Its content counts toward
// the args size limit (ERRAND_MAX_ARGS_BYTES).
type Attachment struct {
	Filename      string `json:"filename"`
	ContentBase64 string `json:"content_base64"`
	// ContentType is optional; Resend derives it from the filename.
	ContentType string `json:"content_type,omitempty"`
}

// Recipients is one address or an array of them in JSON.
type Recipients []string

// UnmarshalJSON accepts "a@x.com" as well as ["a@x.com", ...].
func (r *Recipients) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*r = Recipients{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New(`"to" must be an address or an array of addresses`)
	}
	*r = many
	return nil
}

// TemplateData is the data object of an email. Numbers keep their JSON
// spelling (1000000, not 1e+06) when rendered.
type TemplateData map[string]any

// UnmarshalJSON decodes with json.Number for numbers.
func (d *TemplateData) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return errors.New(`"data" must be a JSON object`)
	}
	*d = m
	return nil
}

// Name is the kind's name in errand.jobs.
const Name = "email.send"

const (
	maxRecipients = 50
	// defaultCaptureSender is the sender in capture mode without ERRAND_EMAIL_FROM.
	defaultCaptureSender = "errand <errand@localhost>"
	// emailTimeout bounds one attempt; sendBudget of it is kept for the HTTP
	// request, the rest may be spent waiting for a rate limit slot.
	emailTimeout = 30 * time.Second
	sendBudget   = 15 * time.Second
	// authSnooze is how long emails wait when Resend refuses errand's key
	// (unless Resend says otherwise with Retry-After).
	authSnooze = time.Minute
	// rateLimitName is the errand.rate_limits row all replicas share.
	rateLimitName = "resend"
	// problemName is the /readyz problem this kind reports.
	problemName = "email"
)

// Kind is kind "email.send". Build it once per daemon (errand.Main does):
// its configuration is read when the daemon starts it.
func Kind() jobs.Kind {
	templates, err := loadTemplates(templateFiles, "templates")
	if err != nil {
		// The templates are part of the binary: a broken one is a build
		// defect, which this package's tests catch before release.
		panic(err)
	}
	k := &emailSender{templates: templates, logger: slog.New(slog.DiscardHandler), outcomes: newOutcomes()}
	return jobs.Define(Name, jobs.QueueEmail, k.work,
		jobs.WithTimeout(emailTimeout),
		jobs.WithArgEnum("template", k.templateNames()...),
		jobs.WithStrictArgs(),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(k.setup),
		jobs.WithDescription("transactional email through Resend, sent once; captured in errand.emails instead with ERRAND_EMAIL_CAPTURE=true"))
}

// emailSender is the state of kind email.send in one daemon.
type emailSender struct {
	logger    *slog.Logger
	problems  *jobs.Problems
	templates map[string]*emailTemplate
	sender    string
	client    *resend.Client // nil: capture mode, or no email workers (see loadConfig)
	// interval spaces requests to Resend across all replicas (ERRAND_RESEND_RPS).
	interval time.Duration
	// plans caches workspaces' plan limits (emails per minute).
	plans jobs.PlanLimitsCache

	// outcomes counts what became of each attempt (errand_emails_total).
	outcomes *prometheus.CounterVec

	mu          sync.Mutex
	lastAuthLog time.Time // the operator error is logged at most once a minute
	captureLog  sync.Once
}

// setup reads the configuration and, in capture mode (ERRAND_EMAIL_CAPTURE=true),
// serves the captured emails at /emails.
func (k *emailSender) setup(ctx context.Context, s *jobs.Setup) error {
	cfg, err := loadConfig(s.Env)
	if err != nil {
		return err
	}
	k.configure(cfg, s.Logger, s.Problems)
	if err := jobs.RegisterMetrics(s.Metrics, k.outcomes); err != nil {
		return err
	}
	// Only capture mode has captured emails to show: a replica without a key
	// that works no email (ERRAND_QUEUES=email=0) serves nothing either.
	if cfg.capture {
		pages := EmailsHandler(s.Store, s.Logger)
		if s.HandleTenantData("GET /emails", pages) {
			s.HandleTenantData("GET /emails/{id}", pages)
		}
	}
	return nil
}

// configure applies cfg; tests call it without a daemon.
func (k *emailSender) configure(cfg config, logger *slog.Logger, problems *jobs.Problems) {
	if logger != nil {
		k.logger = logger
	}
	k.problems = problems
	k.sender = cfg.from
	if cfg.rps > 0 {
		k.interval = time.Duration(float64(time.Second) / cfg.rps)
	}
	if cfg.apiKey == "" {
		if k.sender == "" {
			k.sender = defaultCaptureSender
		}
		return
	}
	k.client = resend.NewCustomClient(outbound.NewClient(nil, sendBudget), cfg.apiKey)
	// resend-go reads RESEND_BASE_URL once, at init, from the process
	// environment; errand's configuration decides instead. The trailing
	// slash keeps a base path (a proxy's /resend) when "emails" is resolved.
	base := cmp.Or(strings.TrimRight(cfg.baseURL, "/"), defaultBaseURL)
	if u, err := url.Parse(base + "/"); err == nil {
		k.client.BaseURL = u
	}
}

// Outcomes of an email attempt, the values of errand_emails_total's label.
const (
	OutcomeSent        = "sent"
	OutcomeCaptured    = "captured"
	OutcomeRateLimited = "rate_limited" // Resend said 429: snoozed, no attempt used
	// The workspace's plan's emails per minute: snoozed, no attempt used.
	OutcomeWorkspaceLimited = "workspace_limited"
	OutcomeOperator         = "operator_problem" // a bad API key or sender: snoozed until fixed
	OutcomeRetry            = "retry"            // a transient failure; tried again
	OutcomeFailed           = "failed"           // failed for good
)

func newOutcomes() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "errand_emails_total",
		Help: "email.send attempts by outcome: sent, captured, rate_limited, workspace_limited, operator_problem, retry, failed.",
	}, []string{"outcome"})
	for _, o := range []string{OutcomeSent, OutcomeCaptured, OutcomeRateLimited, OutcomeWorkspaceLimited, OutcomeOperator, OutcomeRetry, OutcomeFailed} {
		c.WithLabelValues(o)
	}
	return c
}

func (k *emailSender) count(outcome string) {
	if k.outcomes != nil {
		k.outcomes.WithLabelValues(outcome).Inc()
	}
}

// templateNames are the values the SQL contract accepts for "template".
func (k *emailSender) templateNames() []string {
	names := make([]string, 0, len(k.templates)+1)
	for name := range k.templates {
		names = append(names, name)
	}
	slices.Sort(names)
	return append(names, TemplateCustom)
}

// message is an email's args, checked and in the form Resend takes.
type message struct {
	to          []string
	replyTo     string
	tags        []resend.Tag
	attachments []*resend.Attachment
}

// badEmail is an email that cannot be sent as asked: the job fails at once
// and the email's row says why.
type badEmail struct{ err error }

func (b *badEmail) Error() string { return b.err.Error() }
func (b *badEmail) Unwrap() error { return b.err }

func (k *emailSender) work(ctx context.Context, job *jobs.Job, args Args) error {
	msg, err := k.check(args)
	if err != nil {
		return k.fail(ctx, job, args, err)
	}
	if k.client == nil {
		return k.capture(ctx, job, args)
	}
	return k.send(ctx, job, args, msg)
}

// check validates args without the database: every problem at once.
func (k *emailSender) check(a Args) (message, error) {
	var problems []string
	add := func(format string, v ...any) { problems = append(problems, fmt.Sprintf(format, v...)) }
	var m message

	if _, ok := k.templates[a.Template]; !ok && a.Template != TemplateCustom {
		add("unknown template %q (templates: %s)", a.Template, strings.Join(k.templateNames(), ", "))
	}
	switch {
	case len(a.To) == 0:
		add("to: no recipient")
	case len(a.To) > maxRecipients:
		add("to: %d recipients, at most %d", len(a.To), maxRecipients)
	}
	for _, addr := range a.To {
		if err := CheckAddress(addr); err != nil {
			add("to: %v", err)
		}
		m.to = append(m.to, strings.TrimSpace(addr))
	}
	if a.ReplyTo != "" {
		if err := CheckAddress(a.ReplyTo); err != nil {
			add("reply_to: %v", err)
		}
		m.replyTo = strings.TrimSpace(a.ReplyTo)
	}

	if a.Template == TemplateCustom {
		switch {
		case strings.TrimSpace(a.Subject) == "":
			add(`subject is required with template "custom"`)
		default:
			if err := checkSubject(a.Subject); err != nil {
				add("subject %v", err)
			}
		}
		if strings.TrimSpace(a.HTML) == "" && strings.TrimSpace(a.Text) == "" {
			add(`html or text (or both) is required with template "custom"`)
		}
	} else if a.Subject != "" || a.HTML != "" || a.Text != "" {
		add(`subject, html and text are for template "custom" only: template %q renders its own`, a.Template)
	}

	for i, at := range a.Attachments {
		name := fmt.Sprintf("attachments[%d]", i)
		switch {
		case strings.TrimSpace(at.Filename) == "":
			add("%s: filename is required", name)
		case strings.ContainsAny(at.Filename, "/\\") || at.Filename == "." || at.Filename == "..":
			add("%s: filename %q must be a plain file name, without / or \\", name, at.Filename)
		case hasControl(at.Filename):
			add("%s: filename %q has a line break or control character", name, at.Filename)
		default:
			name = fmt.Sprintf("attachments[%d] (%s)", i, at.Filename)
		}
		content, err := base64.StdEncoding.DecodeString(at.ContentBase64)
		switch {
		case at.ContentBase64 == "":
			add("%s: content_base64 is required", name)
		case err != nil:
			add("%s: content_base64 is not valid base64: %v", name, err)
		}
		if at.ContentType != "" {
			if _, _, err := mime.ParseMediaType(at.ContentType); err != nil || hasControl(at.ContentType) {
				add("%s: content_type %q is not a media type such as application/pdf", name, at.ContentType)
			}
		}
		m.attachments = append(m.attachments, &resend.Attachment{Filename: at.Filename, Content: content, ContentType: at.ContentType})
	}

	// Sorted, so the request body is the same bytes on every attempt.
	for _, name := range slices.Sorted(maps.Keys(a.Tags)) {
		value := a.Tags[name]
		if !validTag(name) {
			add("tags: name %q must be 1 to 256 ASCII letters, digits, underscores or dashes", name)
		}
		if !validTag(value) {
			add("tags: value %q of %q must be 1 to 256 ASCII letters, digits, underscores or dashes", value, name)
		}
		m.tags = append(m.tags, resend.Tag{Name: name, Value: value})
	}

	if len(problems) > 0 {
		return m, &badEmail{errors.New(strings.Join(problems, "; "))}
	}
	return m, nil
}

// CheckAddress parses one address with net/mail, refusing anything that
// could smuggle a header in. Kinds that enqueue email.send (invoice.render's
// receipt) check their addresses with it, so they refuse what it would.
func CheckAddress(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return fmt.Errorf("%q has a line break", s)
	}
	if hasControl(s) {
		return fmt.Errorf("%q has a control character", s)
	}
	if strings.TrimSpace(s) == "" {
		return errors.New("empty address")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return fmt.Errorf("%q is not an email address (%v)", s, err)
	}
	// ParseAddress decodes RFC 2047 names: a line break can hide in one.
	if hasControl(addr.Name) {
		return fmt.Errorf("%q has a control character in its name", s)
	}
	return nil
}

// checkSubject is the one check of a subject, given or rendered: one line,
// no control characters (a line break would let a header in).
func checkSubject(s string) error {
	switch {
	case strings.ContainsAny(s, "\r\n"):
		return errors.New("has a line break: a subject is one line")
	case hasControl(s):
		return errors.New("has a control character")
	}
	return nil
}

// hasControl finds C0 and C1 controls and Unicode line separators.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == '\u2028' || r == '\u2029'
	})
}

// validTag follows Resend's rule for tag names and values.
func validTag(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// renderInTx returns the job's email as it must be sent: the rendering stored
// by an earlier attempt when there is one (so a retry sends the same bytes
// even if the template, the workspace's name or the sender changed since),
// else a fresh one. Nothing is written.
func (k *emailSender) renderInTx(ctx context.Context, tx pgx.Tx, job *jobs.Job, args Args) (Email, error) {
	e, found, err := emailForJob(ctx, tx, job.WorkspaceID, job.ID)
	if err != nil {
		return e, err
	}
	if found && e.Rendered() {
		return e, nil
	}
	e = Email{
		WorkspaceID: job.WorkspaceID,
		JobID:       job.ID,
		Recipients:  trimmed(args.To),
		Template:    args.Template,
		Sender:      k.sender,
		ReplyTo:     strings.TrimSpace(args.ReplyTo),
	}
	var r rendering
	if args.Template == TemplateCustom {
		r = rendering{Subject: args.Subject, HTML: args.HTML, Text: args.Text}
	} else {
		ws, err := store.CurrentWorkspace(ctx, tx)
		if err != nil {
			return e, err
		}
		r, err = k.templates[args.Template].render(ws.Name, ws.Slug, args.Data)
		if err != nil {
			return e, &badEmail{err}
		}
	}
	e.Subject, e.HTML, e.Text = r.Subject, r.HTML, r.Text
	return e, nil
}

func trimmed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.TrimSpace(v)
	}
	return out
}

// capture stores the rendered email as captured, in the transaction that
// completes the job.
func (k *emailSender) capture(ctx context.Context, job *jobs.Job, args Args) error {
	k.captureLog.Do(func() {
		k.logger.Info("ERRAND_EMAIL_CAPTURE=true: emails are captured in errand.emails, nothing leaves this machine; " +
			"see them at GET /emails on ERRAND_HTTP_ADDR, or: SELECT id, recipients, subject, status, created_at FROM errand.emails ORDER BY id DESC LIMIT 20")
	})
	err := job.CompleteInWorkspace(ctx, func(tx pgx.Tx) error {
		e, err := k.renderInTx(ctx, tx, job, args)
		if err != nil {
			return err
		}
		e.Status = StatusCaptured
		_, err = saveEmail(ctx, tx, e)
		return err
	})
	var bad *badEmail
	if errors.As(err, &bad) {
		return k.fail(ctx, job, args, bad)
	}
	if err == nil {
		k.count(OutcomeCaptured)
	}
	return err
}

// send sends the email through Resend and records what happened.
func (k *emailSender) send(ctx context.Context, job *jobs.Job, args Args, msg message) error {
	var e Email
	err := job.InWorkspace(ctx, func(tx pgx.Tx) error {
		var err error
		if e, err = k.renderInTx(ctx, tx, job, args); err != nil {
			return err
		}
		e.Status = StatusQueued
		e, err = saveEmail(ctx, tx, e)
		return err
	})
	var bad *badEmail
	if errors.As(err, &bad) {
		return k.fail(ctx, job, args, bad)
	}
	if err != nil {
		return err
	}

	instanceID, err := k.instance(ctx, job.Store())
	if err != nil {
		return err
	}
	if err := k.waitForWorkspaceSlot(ctx, job); err != nil {
		return err
	}
	if err := k.waitForSlot(ctx, job.Store()); err != nil {
		return err
	}

	req := &resend.SendEmailRequest{
		From:        e.Sender,
		To:          msg.to,
		Subject:     e.Subject,
		Html:        e.HTML,
		Text:        e.Text,
		ReplyTo:     msg.replyTo,
		Tags:        msg.tags,
		Attachments: msg.attachments,
	}
	answer := &outbound.Answer{}
	_, sendErr := k.client.Emails.SendWithOptions(outbound.WithAnswer(ctx, answer), req,
		&resend.SendEmailOptions{IdempotencyKey: IdempotencyKey(instanceID, job.ID)})
	res := classify(answer, sendErr)
	if res.outcome != outcomeOperator && answer.Status != 0 {
		// Resend took the key and the endpoint: whatever refused this email,
		// the operator's problem (if any) is fixed.
		k.problems.Clear(problemName)
	}

	switch res.outcome {
	case outcomeSent:
		// Resend has it: record it even if the attempt's time just ran out.
		rctx, cancel := bookkeeping(ctx)
		defer cancel()
		err := job.CompleteInWorkspace(rctx, func(tx pgx.Tx) error {
			_, err := saveEmail(rctx, tx, Email{
				WorkspaceID: job.WorkspaceID, JobID: job.ID, Template: args.Template,
				Status: StatusSent, ProviderMessageID: res.messageID,
			})
			return err
		})
		if err != nil {
			// Resend has it; the retry sends the same key and body, and
			// Resend answers with the first send's id instead of sending again.
			return fmt.Errorf("sent (Resend id %s) but not recorded: %w", res.messageID, err)
		}
		k.problems.Clear(problemName)
		k.count(OutcomeSent)
		return nil
	case outcomeRateLimited:
		k.count(OutcomeRateLimited)
		k.note(ctx, job, args, res.reason)
		return river.JobSnooze(cmp.Or(res.retryAfter, time.Second))
	case outcomeOperator:
		k.count(OutcomeOperator)
		k.problems.Set(problemName, res.reason)
		k.logOperatorProblem(res.reason)
		k.note(ctx, job, args, res.reason)
		return river.JobSnooze(cmp.Or(res.retryAfter, authSnooze))
	case outcomePermanent:
		return k.fail(ctx, job, args, errors.New(res.reason))
	default:
		if job.Attempt >= job.MaxAttempts {
			// River discards the job now: the email failed for good.
			k.count(OutcomeFailed)
			k.record(ctx, job, args, StatusFailed, res.reason)
			return errors.New(res.reason)
		}
		k.count(OutcomeRetry)
		k.note(ctx, job, args, res.reason)
		if res.retryAfter > 0 {
			return jobs.RetryAfter(errors.New(res.reason), res.retryAfter)
		}
		return errors.New(res.reason)
	}
}

// IdempotencyKey is the Idempotency-Key of a job's send: the same on every
// attempt and replica, and unique across databases.
func IdempotencyKey(instanceID string, jobID int64) string {
	return fmt.Sprintf("errand-%s-%d", instanceID, jobID)
}

// instance reads the database's instance id on every send (sends are rate
// limited, so this costs nothing worth saving): a database restored in place
// under running replicas gets its new id at once.
func (k *emailSender) instance(ctx context.Context, st *store.Store) (string, error) {
	return store.InstanceID(ctx, st)
}

// waitForSlot keeps errand under ERRAND_RESEND_RPS across all replicas: it
// reserves the next request slot in the database and sleeps until it. A slot
// further away than this attempt can wait is not taken; the job snoozes
// (keeping its attempt) and tries again when slots are near.
func (k *emailSender) waitForSlot(ctx context.Context, st *store.Store) error {
	if k.interval <= 0 {
		return nil
	}
	return jobs.WaitForSlot(ctx, st, rateLimitName, k.interval, k.maxWait(ctx))
}

// maxWait is how long an attempt may wait for a rate limit's slot and still
// send within its deadline.
func (k *emailSender) maxWait(ctx context.Context) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		return max(time.Until(deadline)-sendBudget, 0)
	}
	return 10 * time.Second
}

// waitForWorkspaceSlot keeps a workspace under its plan's emails per minute
// (errand.plans), across all replicas: over it, the email waits (snoozed,
// no attempt used), never dropped.
func (k *emailSender) waitForWorkspaceSlot(ctx context.Context, job *jobs.Job) error {
	snoozed, err := k.plans.WaitForWorkspaceSlot(ctx, job, "email",
		func(l jobs.PlanLimits) int { return l.EmailsPerMinute }, time.Minute, k.maxWait(ctx))
	if snoozed {
		k.count(OutcomeWorkspaceLimited)
	}
	return err
}

func (k *emailSender) logOperatorProblem(reason string) {
	k.mu.Lock()
	now := time.Now()
	due := now.Sub(k.lastAuthLog) >= time.Minute
	if due {
		k.lastAuthLog = now
	}
	k.mu.Unlock()
	if due {
		k.logger.Error("emails are waiting: "+reason, slog.String("problem", problemName))
	}
}

// bookkeeping gives the writes that record a failure their own time, so
// they happen even when the attempt's context is done (a timeout).
func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// note records why the latest attempt did not send; the email stays queued.
func (k *emailSender) note(ctx context.Context, job *jobs.Job, args Args, reason string) {
	k.record(ctx, job, args, StatusQueued, reason)
}

// fail records the email as failed with cause, in its own transaction, and
// fails the job at once.
func (k *emailSender) fail(ctx context.Context, job *jobs.Job, args Args, cause error) error {
	var bad *badEmail
	if errors.As(cause, &bad) {
		cause = bad.err
	}
	k.count(OutcomeFailed)
	k.record(ctx, job, args, StatusFailed, cause.Error())
	return jobs.Permanent(cause)
}

// record writes the email's status and reason in its own transaction, with
// its own time, so it happens even when the attempt's context is done.
func (k *emailSender) record(ctx context.Context, job *jobs.Job, args Args, status, reason string) {
	ctx, cancel := bookkeeping(ctx)
	defer cancel()
	err := job.InWorkspace(ctx, func(tx pgx.Tx) error {
		_, err := saveEmail(ctx, tx, Email{
			WorkspaceID: job.WorkspaceID, JobID: job.ID, Recipients: trimmed(args.To), Template: args.Template,
			Status: status, Error: reason,
		})
		return err
	})
	if err != nil {
		k.logger.Warn("could not record an email's status", slog.Int64("job_id", job.ID), slog.String("status", status), slog.String("error", err.Error()))
	}
}
