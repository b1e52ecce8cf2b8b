package webhook

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/jobs/outbound"
	"github.com/errand-dev/errand/store"
)

const (
	// deliverTimeout bounds one attempt: the request (ERRAND_WEBHOOK_TIMEOUT,
	// at most 90 s) and the bookkeeping around it.
	deliverTimeout = 2 * time.Minute
	// slotLease is how long a delivery slot outlives a replica that died
	// holding it (a rescued job takes its own back at once).
	slotLease = deliverTimeout + time.Minute
	// maxResponse is what the attempts log keeps of an answer.
	maxResponse = 4 << 10
	// drainResponse is how much more of an answer is read (and dropped) so
	// the connection can serve the next delivery.
	drainResponse = 64 << 10
	// deliverAttempts is the kind's default (an app's own INSERT; a replay
	// before any replica has published webhook_max_attempts): Svix's
	// schedule has 7 retries. webhook.dispatch and errand.webhook_replay set
	// len(ERRAND_WEBHOOK_RETRY_SCHEDULE)+1 (config.maxAttempts).
	deliverAttempts = 8
)

// DeliverKind is kind "webhook.deliver". Build it once per daemon
// (errand.Main does): its configuration is read when the daemon starts it.
func DeliverKind() jobs.Kind { return deliverKind(nil) }

// deliverKind is DeliverKind looking names up with resolver (nil:
// net.DefaultResolver).
func deliverKind(resolver *net.Resolver) jobs.Kind {
	d := &deliverer{logger: slog.New(slog.DiscardHandler), outcomes: newOutcomes(), resolver: resolver}
	d.waits.waiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "errand_webhook_waiting_deliveries",
		Help: "webhook.deliver jobs of this replica waiting for a slot of their endpoint that this replica hands over or gives back (at most ERRAND_WEBHOOK_HELD_BACK_WAIT each, then snoozed).",
	})
	d.books.book = d.book
	return jobs.Define(DeliverName, jobs.QueueWebhooks, d.work,
		jobs.WithStrictArgs(),
		jobs.WithTimeout(deliverTimeout),
		jobs.WithMaxAttempts(deliverAttempts),
		jobs.WithEnv(envVars()...),
		jobs.WithSetup(d.setup),
		jobs.WithDescription("POSTs one webhook message to one endpoint, signed (Standard Webhooks), retried on a schedule; never to a private address"))
}

// deliverer is the state of kind webhook.deliver in one daemon.
type deliverer struct {
	cfg    config
	client *http.Client
	logger *slog.Logger
	// resolver looks endpoints' names up; nil means net.DefaultResolver
	// (tests point a name where they want, whatever the machine's DNS).
	// Every address it gives is checked as it is dialled.
	resolver *net.Resolver
	// jitter is the randomness of waits; nil means math/rand's (tests
	// inject theirs).
	jitter func() float64
	// books batches the deliveries' bookkeeping.
	books bookkeeper
	// waits holds deliveries that found their endpoint full, waiting for
	// a slot this replica gives back.
	waits slotWaits
	// outcomes counts what became of each attempt
	// (errand_webhook_deliveries_total).
	outcomes *prometheus.CounterVec
	// plans caches workspaces' plan limits (deliveries per second).
	plans jobs.PlanLimitsCache
}

// Outcomes of a delivery attempt, the values of
// errand_webhook_deliveries_total's label.
const (
	OutcomeDelivered = "delivered" // answered 2xx
	OutcomeFailed    = "failed"    // answered another status (or not at all): retried or failed for good
	OutcomeGone      = "gone"      // answered 410: the endpoint is disabled
	OutcomeRefused   = "refused"   // the address is private or reserved: never dialled
	OutcomeHeldBack  = "held_back" // the endpoint's concurrency cap: snoozed, no attempt used
	// The workspace's plan's deliveries per second: snoozed, no attempt used.
	OutcomeWorkspaceLimited = "workspace_limited"
)

func newOutcomes() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "errand_webhook_deliveries_total",
		Help: "webhook.deliver attempts by outcome: delivered, failed, gone, refused, held_back, workspace_limited.",
	}, []string{"outcome"})
	for _, o := range []string{OutcomeDelivered, OutcomeFailed, OutcomeGone, OutcomeRefused, OutcomeHeldBack, OutcomeWorkspaceLimited} {
		c.WithLabelValues(o)
	}
	return c
}

// book does a batch of bookkeeping calls, all of one workspace (and pool),
// in one scoped transaction: the finished attempts are logged and their
// slots given back first, then the new deliveries read and their slots
// taken, so a slot given back is free for the deliveries in the same
// transaction. (Two transactions, one for each end, measured 0.51 to 0.96
// times as fast, median 0.66, in 7 pairs: docs/webhooks.md.)
//
// When PostgreSQL refuses the transaction (so nothing of it was done), the
// two ends run again, each on its own, so that neither's failure fails the
// other's deliveries: a log that failed after a successful request would
// send the message again.
func (d *deliverer) book(ctx context.Context, k bookKey, calls []*call[book, delivery]) {
	var done []attemptRow
	var want []wanted
	var logs, loads []*call[book, delivery]
	for _, c := range calls {
		if c.in.done != nil {
			done = append(done, *c.in.done)
			logs = append(logs, c)
		} else {
			want = append(want, *c.in.load)
			loads = append(loads, c)
		}
	}
	out, handed, err := bookDeliveries(ctx, k.store, k.workspaceID, done, want, d.cfg.concurrency, slotLease)
	errDone, errWant := err, err
	var pgErr *pgconn.PgError
	if err != nil && len(done) > 0 && len(want) > 0 && errors.As(err, &pgErr) {
		_, handed, errDone = bookDeliveries(ctx, k.store, k.workspaceID, done, nil, d.cfg.concurrency, slotLease)
		out, _, errWant = bookDeliveries(ctx, k.store, k.workspaceID, nil, want, d.cfg.concurrency, slotLease)
	}
	for i, c := range logs {
		c.err = errDone
		if errDone == nil {
			// slot: the attempt's slot went to its heir, with the
			// endpoint as the hand-over read it.
			if h := handed[i]; h != nil {
				c.out.slot = true
				c.out.url, c.out.secret, c.out.previousSecret = h.url, h.secret, h.previousSecret
			}
		}
	}
	for i, c := range loads {
		c.err = errWant
		if errWant == nil {
			c.out = out[i]
		}
	}
}

// waitForWorkspaceSlot keeps a workspace under its plan's deliveries per
// second (errand.plans), across all replicas: over it, the delivery waits
// (snoozed, no attempt used), never dropped. Checked before the endpoint's
// slot is taken, so a delivery waiting for its workspace holds none.
func (d *deliverer) waitForWorkspaceSlot(ctx context.Context, job *jobs.Job) error {
	snoozed, err := d.plans.WaitForWorkspaceSlot(ctx, job, "webhook",
		func(l jobs.PlanLimits) int { return l.WebhooksPerSecond }, time.Second, workspaceSlotMaxWait)
	if snoozed {
		d.outcomes.WithLabelValues(OutcomeWorkspaceLimited).Inc()
	}
	return err
}

// workspaceSlotMaxWait is how long a delivery sleeps for its workspace's
// next slot before it snoozes instead.
const workspaceSlotMaxWait = 2 * time.Second

func (d *deliverer) setup(ctx context.Context, s *jobs.Setup) error {
	cfg, err := loadConfig(s.Env)
	if err != nil {
		return err
	}
	d.configure(cfg, s.Logger)
	if err := jobs.RegisterMetrics(s.Metrics, d.outcomes, d.waits.waiting); err != nil {
		return err
	}
	if len(cfg.allowed) > 0 {
		s.Logger.Warn("webhooks may reach these private or reserved ranges (ERRAND_WEBHOOK_ALLOW_CIDRS; development and tests only): " + cfg.allowedText())
	}
	return publishSettings(ctx, s.Store, cfg.allowedText(), cfg.maxAttempts())
}

// configure applies cfg; tests call it without a daemon.
func (d *deliverer) configure(cfg config, logger *slog.Logger) {
	d.cfg = cfg
	if logger != nil {
		d.logger = logger
	}
	d.client = outbound.NewClient(newTransport(cfg.allowed, cfg.connectTimeout, d.resolver), cfg.timeout)
}

func (d *deliverer) work(ctx context.Context, job *jobs.Job, args DeliverArgs) error {
	if err := d.waitForWorkspaceSlot(ctx, job); err != nil {
		return err
	}
	// A delivery that finds its endpoint full first waits here for a slot
	// this replica gives back, for at most ERRAND_WEBHOOK_HELD_BACK_WAIT
	// (slotWaits), then snoozes.
	waitUntil := time.Now().Add(d.cfg.heldBackWait)
	if dl, ok := ctx.Deadline(); ok && dl.Add(-d.cfg.timeout-time.Second).Before(waitUntil) {
		// The request keeps its whole ERRAND_WEBHOOK_TIMEOUT before the
		// attempt's deadline.
		waitUntil = dl.Add(-d.cfg.timeout - time.Second)
	}
	want := &wanted{jobID: job.ID, attempt: job.Attempt, messageID: args.MessageID, endpointID: args.EndpointID}
	del, err := d.books.do(book{store: job.Store(), workspaceID: job.WorkspaceID, load: want})
	for err == nil && del.found && del.enabled && !del.slot {
		left := time.Until(waitUntil)
		if left <= 0 {
			break
		}
		r, ep := d.waits.wait(ctx, args.EndpointID, d.cfg.concurrency, left, job.ID, job.Attempt)
		if r == waitHanded && ctx.Err() != nil {
			// Handed a slot after this attempt was cancelled (shutdown):
			// give it back, and snooze below, no attempt used.
			d.giveBack(ctx, job, args.EndpointID)
			break
		}
		if r == waitHanded {
			// A finished delivery's slot, moved to this job in the
			// transaction that logged it: send the message loaded, to the
			// endpoint as that transaction read it (its URL or secret may
			// have changed while this one waited).
			del.slot = true
			del.url, del.secret, del.previousSecret = ep.url, ep.secret, ep.previousSecret
			break
		}
		if r != waitFreed || ctx.Err() != nil {
			break
		}
		want.again = true
		del, err = d.books.do(book{store: job.Store(), workspaceID: job.WorkspaceID, load: want})
	}
	switch {
	case errors.Is(err, store.ErrWorkspaceNotFound):
		return jobs.Permanent(err)
	case err != nil:
		return err
	case !del.found:
		return jobs.Permanent(fmt.Errorf("webhook message %s or endpoint %s does not exist in workspace %s", args.MessageID, args.EndpointID, job.WorkspaceID))
	case !del.enabled:
		return jobs.Permanent(fmt.Errorf("webhook endpoint %s is disabled: %s", args.EndpointID, cmp.Or(del.disabledReason, "disabled by the app")))
	case !del.slot:
		// Held back by the endpoint's cap: wait without using an attempt
		// until a slot the endpoint gives back wakes it, or, when no wake-up
		// comes, for longer each time, so a backlog for a slow endpoint does
		// not poll.
		// (Its load noted it in errand.webhook_held_back.)
		d.outcomes.WithLabelValues(OutcomeHeldBack).Inc()
		return river.JobSnooze(d.heldBackWait(del.snoozes))
	}

	a := attemptRow{workspaceID: job.WorkspaceID, messageID: args.MessageID, endpointID: args.EndpointID, jobID: job.ID, attempt: job.Attempt}
	res := d.post(ctx, args.MessageID, del)
	a.status, a.latency, a.response, a.err = res.status, res.latency, res.response, res.reason
	if res.status >= 200 && res.status < 300 {
		// Logged (in a batch), then completed by River (in another): a
		// replica lost between the two delivers the message again
		// (at-least-once), which CompleteInWorkspace would not prevent
		// either, the request being outside the database.
		// The slot goes to a delivery of this replica waiting for the
		// endpoint, if any, in the same transaction (slotWaits).
		heir := d.waits.claim(args.EndpointID)
		if heir != nil {
			a.heirJobID, a.heirAttempt = heir.jobID, heir.attempt
		}
		out, err := d.books.do(book{store: job.Store(), workspaceID: job.WorkspaceID, done: &a})
		switch {
		case heir != nil && err == nil && out.slot:
			heir.got <- handoff{r: waitHanded, ep: endpointNow{url: out.url, secret: out.secret, previousSecret: out.previousSecret}}
		case heir != nil:
			// Not handed over (this attempt's lease had gone, or the log
			// failed): the heir asks for a slot itself. (A log whose commit
			// is in doubt may have handed it one: a job holding a lease
			// takes it back, webhook_take_slots.)
			heir.got <- handoff{r: waitFreed}
		case err == nil:
			// Given back with no one waiting when it was logged: one that
			// began waiting since asks again.
			d.waits.freed(args.EndpointID)
		}
		if err == nil {
			d.outcomes.WithLabelValues(OutcomeDelivered).Inc()
		}
		if errors.Is(err, store.ErrWorkspaceNotFound) {
			return jobs.Permanent(err)
		}
		return err
	}

	gone := res.status == http.StatusGone
	switch {
	case gone:
		d.outcomes.WithLabelValues(OutcomeGone).Inc()
	case res.refused:
		d.outcomes.WithLabelValues(OutcomeRefused).Inc()
	default:
		d.outcomes.WithLabelValues(OutcomeFailed).Inc()
	}
	goneReason := fmt.Sprintf("the endpoint answered 410 Gone at %s", time.Now().UTC().Format(time.RFC3339))
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var disabled bool
	var reason string
	err = job.InWorkspace(bctx, func(tx pgx.Tx) error {
		var err error
		disabled, reason, err = recordFailure(bctx, tx, a, gone, goneReason, d.cfg.disableAfter, durationText(d.cfg.disableAfter))
		return err
	})
	if err != nil {
		d.logger.Warn("could not record a webhook attempt", slog.Int64("job_id", job.ID), slog.String("error", err.Error()))
	} else {
		d.waits.freed(args.EndpointID)
	}
	failure := fmt.Errorf("webhook endpoint %s: %s (attempt %d of %d)", args.EndpointID, res.reason, job.Attempt, min(job.MaxAttempts, d.cfg.maxAttempts()))
	switch {
	case disabled:
		return jobs.Permanent(fmt.Errorf("%w; the endpoint is now disabled: %s", failure, reason))
	case gone:
		// Someone else disabled it first: the 410 still ends this delivery.
		return jobs.Permanent(failure)
	case job.Attempt > len(d.cfg.schedule):
		return jobs.Permanent(fmt.Errorf("%w; no retries left", failure))
	}
	return jobs.RetryAfter(failure, max(d.retryWait(job.Attempt), res.retryAfter))
}

// giveBack gives back a slot this job holds and will not use (waking a
// delivery held back for the endpoint, in this replica or through the
// database). A failure leaves the lease to expire.
func (d *deliverer) giveBack(ctx context.Context, job *jobs.Job, endpointID string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := job.InWorkspace(bctx, func(tx pgx.Tx) error {
		return giveBackSlot(bctx, tx, endpointID, job.ID, job.Attempt, false)
	}); err != nil {
		d.logger.Warn("could not give back a webhook slot", slog.Int64("job_id", job.ID), slog.String("error", err.Error()))
		return
	}
	d.waits.freed(endpointID)
}

// result is what one POST came to.
type result struct {
	status     int // 0: no answer
	latency    time.Duration
	response   string // the first 4 KB of the answer, as valid UTF-8
	reason     string // why it failed; "" on success
	retryAfter time.Duration
	refused    bool // the address was refused, never dialled
}

// post sends the message, signed with the endpoint's secrets, and reads the
// answer (a bounded amount of it).
func (d *deliverer) post(ctx context.Context, messageID string, del delivery) result {
	u, err := checkURL(del.url, d.cfg.allowed)
	if err != nil {
		return result{reason: "refused: " + err.Error(), refused: true}
	}
	var keys [][]byte
	for _, s := range []string{del.secret, del.previousSecret} {
		if s == "" {
			continue
		}
		key, err := decodeSecret(s)
		if err != nil {
			return result{reason: err.Error()}
		}
		keys = append(keys, key)
	}
	now := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(del.body))
	if err != nil {
		return result{reason: "build request: " + err.Error()}
	}
	// The specification's lower-case names, sent as they are.
	req.Header["webhook-id"] = []string{messageID}
	req.Header["webhook-timestamp"] = []string{strconv.FormatInt(now.Unix(), 10)}
	req.Header["webhook-signature"] = []string{signatures(keys, messageID, now, del.body)}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := d.client.Do(req)
	latency := time.Since(now)
	if err != nil {
		_, isRefused := refused(err)
		return result{latency: latency, reason: d.networkReason(err), refused: isRefused}
	}
	// The status decides; an answer whose body breaks off is still that
	// answer.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	_, _ = io.CopyN(io.Discard, resp.Body, drainResponse)
	resp.Body.Close()
	latency = time.Since(now)
	r := result{status: resp.StatusCode, latency: latency, response: cleanText(body)}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		r.reason = "answered " + resp.Status
		if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
			r.reason += fmt.Sprintf(" to %s (redirects are not followed: update the endpoint's url)", strconvQuote(loc, 200))
		}
		r.retryAfter = outbound.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return r
}

// networkReason says why no answer came, without repeating the URL (Go's
// errors carry it, and a customer's URL may hold a token), and names the
// timeout that ran out.
func (d *deliverer) networkReason(err error) string {
	if r, ok := refused(err); ok {
		return "refused: " + r.Reason
	}
	if connectTimedOut(err) {
		return fmt.Sprintf("could not connect within %s (ERRAND_WEBHOOK_CONNECT_TIMEOUT)", d.cfg.connectTimeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("no answer within %s (ERRAND_WEBHOOK_TIMEOUT)", d.cfg.timeout)
		}
		err = ue.Err
	}
	return "no answer: " + err.Error()
}

// connectTimedOut reports whether the dialer's or the TLS handshake's
// timeout (both ERRAND_WEBHOOK_CONNECT_TIMEOUT) ended the request. When the
// request's own timeout ends it first, net/http says so instead.
func connectTimedOut(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Timeout() {
		return true
	}
	// net/http's TLS handshake timeout has no exported type.
	return strings.Contains(err.Error(), "net/http: TLS handshake timeout")
}

// retryWait is the wait after failed attempt n (1-based): the schedule's
// n-th entry (the last one beyond it), ±10%.
func (d *deliverer) retryWait(attempt int) time.Duration {
	s := d.cfg.schedule
	if len(s) == 0 {
		return time.Second
	}
	w := s[min(max(attempt, 1), len(s))-1]
	r := rand.Float64
	if d.jitter != nil {
		r = d.jitter
	}
	return time.Duration(float64(w) * (0.9 + 0.2*r()))
}

// heldBackWait is the snooze of a delivery held back for the snoozes-th
// time before: ERRAND_WEBHOOK_HELD_BACK_WAIT doubling, up to 30 times it,
// ±20% so the held-back do not come back together.
func (d *deliverer) heldBackWait(snoozes int) time.Duration {
	base := d.cfg.heldBackWait
	if base <= 0 {
		base = time.Second
	}
	w := min(base<<min(max(snoozes, 0), 5), 30*base)
	r := rand.Float64
	if d.jitter != nil {
		r = d.jitter
	}
	return time.Duration(float64(w) * (0.8 + 0.4*r()))
}

// cleanText makes an answer storable as text: valid UTF-8, no NUL.
func cleanText(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "")
}

func strconvQuote(s string, limit int) string {
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return strconv.Quote(s)
}

// durationText writes d as ERRAND_WEBHOOK_DISABLE_AFTER would say it.
func durationText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
