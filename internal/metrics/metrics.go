// Package metrics is errand's Prometheus exposition: GET /metrics on the
// daemon's HTTP address, in the text format (or OpenMetrics when asked),
// through client_golang.
//
// What each replica counts itself: jobs finished by kind, queue and outcome,
// how long they ran, how long they waited from due to start (counted in the
// worker goroutine by Plugin's middleware, so none is lost), whether it
// leads (Plugin's hook), heartbeat renewals and fencing. What it reads from
// the database (the backlog per queue, the busiest workspaces): one snapshot
// at most every RefreshEvery, however often and by however many scrapers it
// is scraped, through store's index-friendly queries. Per-workspace figures
// are only the TopN busiest, so label cardinality does not grow with the
// number of tenants. Kinds add their own (jobs.Setup.Metrics). How each
// figure is made: docs/operations.md, "Metrics".
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/store"
)

// Defaults for Config.
const (
	RefreshEveryDefault = 5 * time.Second
	TopNDefault         = 10
)

// Config is where the database figures come from.
type Config struct {
	// DB answers the snapshot queries (the daemon's small pool).
	DB store.DB
	// RefreshEvery bounds how often the snapshot is read.
	RefreshEvery time.Duration
	// TopN is how many workspaces errand_workspace_jobs shows.
	TopN int
	// Queues are the queues this replica serves: each is shown (at 0)
	// even when it has no jobs, so a drained queue reads 0 rather than
	// vanishing from errand_queue_jobs and errand_queue_oldest_due_seconds.
	Queues []string
	Logger *slog.Logger
	// Now is time.Now when nil.
	Now func() time.Time
}

// Metrics is one daemon's registry and its errand collectors.
type Metrics struct {
	reg      *prometheus.Registry
	jobs     *prometheus.CounterVec
	run      *prometheus.HistogramVec
	wait     *prometheus.HistogramVec
	renewals *prometheus.CounterVec
	fences   prometheus.Counter
	snap     *snapshotCollector
	now      func() time.Time
	// leading counts the leader terms River has started in this process and
	// not yet ended (an engine replaced after fencing may end its term after
	// the next one began).
	leading atomic.Int64
}

// New builds the registry: Go runtime and process metrics, errand's own,
// and the database snapshot.
func New(cfg Config) *Metrics {
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = RefreshEveryDefault
	}
	if cfg.TopN <= 0 {
		cfg.TopN = TopNDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		now: cfg.Now,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_jobs_total",
			Help: "Job attempts this replica finished, by kind, queue and outcome: completed, retried (failed, will run again), failed (discarded: no attempts left or a permanent error), cancelled (by an operator while it ran), snoozed.",
		}, []string{"kind", "queue", "outcome"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_job_duration_seconds",
			Help:    "How long a job attempt ran on this replica, by kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_job_wait_seconds",
			Help:    "From an attempt's due time (River's scheduled_at: the INSERT or a later run_at for a first attempt, the retry's or snooze's due time after that) to its start, by queue.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"queue"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_heartbeat_renewals_total",
			Help: "This replica's heartbeat renewals, by result (ok, failed; a renewal that could not connect to the database failed).",
		}, []string{"result"}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_fencing_total",
			Help: "Times this process fenced a replica identity: it lost its lease, cancelled its running jobs and rejoined as a new replica.",
		}),
	}
	for _, r := range []string{"ok", "failed"} {
		m.renewals.WithLabelValues(r)
	}
	m.snap = &snapshotCollector{cfg: cfg, leading: func() bool { return m.leading.Load() > 0 }}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.jobs, m.run, m.wait, m.renewals, m.fences, m.snap,
	)
	return m
}

// Registerer is where kinds register their own metrics.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Gatherer is the registry, for tests.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus text format, or in
// OpenMetrics when the scraper's Accept header asks for it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// Renewed counts a heartbeat renewal (maintenance.HeartbeatConfig.Renewed).
func (m *Metrics) Renewed(ok bool) {
	if ok {
		m.renewals.WithLabelValues("ok").Inc()
	} else {
		m.renewals.WithLabelValues("failed").Inc()
	}
}

// Fenced counts a fencing (maintenance.HeartbeatConfig.Fenced).
func (m *Metrics) Fenced() { m.fences.Inc() }

// Plugin goes in River's Config.Plugins. As the outermost worker middleware
// it counts each attempt in the worker goroutine as the attempt ends: unlike
// River's event subscriptions, whose buffer drops events in a burst, nothing
// can be lost. As a HookPeriodicJobsStart it learns that River elected this
// client leader (River starts its maintenance, periodic jobs included, on
// each election) and, when that context ends, that the term is over.
func (m *Metrics) Plugin() rivertype.Plugin { return &plugin{m: m} }

type plugin struct {
	river.PluginDefaults
	m *Metrics
}

// Start implements rivertype.HookPeriodicJobsStart.
func (p *plugin) Start(ctx context.Context, _ *rivertype.HookPeriodicJobsStartParams) error {
	p.m.leading.Add(1)
	context.AfterFunc(ctx, func() { p.m.leading.Add(-1) })
	return nil
}

// Work implements rivertype.WorkerMiddleware.
func (p *plugin) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	start := p.m.now()
	// River's own measure of the wait (JobStatistics.QueueWaitDuration).
	p.m.wait.WithLabelValues(job.Queue).Observe(max(start.Sub(job.ScheduledAt), 0).Seconds())
	// Unless doInner returns, it panicked: River recovers and fails the
	// attempt like an error.
	result := "retried"
	if job.Attempt >= job.MaxAttempts {
		result = "failed"
	}
	defer func() {
		p.m.run.WithLabelValues(job.Kind).Observe(max(p.m.now().Sub(start), 0).Seconds())
		if result != "" {
			p.m.jobs.WithLabelValues(job.Kind, job.Queue, result).Inc()
		}
	}()
	err := doInner(ctx)
	result = outcome(ctx, job, err)
	return err
}

// outcome is what River makes of an attempt that returned err (River's
// jobexecutor.reportResult and reportError, v0.51.2), or "" when River's
// own stop interrupted it: the job goes back to pending, its attempt given
// back, and is not an outcome.
func outcome(ctx context.Context, job *rivertype.JobRow, err error) string {
	if err == nil {
		return "completed"
	}
	cause := context.Cause(ctx)
	if errors.Is(cause, rivertype.ErrJobCancelledRemotely) { // errand jobs cancel, errand.cancel_job
		return "cancelled"
	}
	var snooze *rivertype.JobSnoozeError
	if errors.As(err, &snooze) {
		return "snoozed"
	}
	// River cancels a job's context itself only to cancel it remotely
	// (above) or to stop (the cause is River's internal ErrStop); a timeout
	// is a deadline, not a cancellation.
	if errors.Is(ctx.Err(), context.Canceled) && (errors.Is(err, context.Canceled) || errors.Is(err, cause)) {
		return ""
	}
	var cancel *rivertype.JobCancelError
	if errors.As(err, &cancel) || job.Attempt >= job.MaxAttempts { // jobs.Permanent, or no attempts left
		return "failed"
	}
	return "retried"
}

// snapshotCollector reads the database figures at most every RefreshEvery
// and serves the last good snapshot in between (and when a read fails).
type snapshotCollector struct {
	cfg     Config
	leading func() bool

	mu      sync.Mutex
	tried   time.Time     // the last read, good or not
	readAt  time.Time     // the last good read
	took    time.Duration // how long the last good read took
	last    snapshot
	errors  float64
	hasTry  bool
	fetched bool
}

// readShare bounds the time a replica spends reading the snapshot: the
// next read waits at least readShare times as long as the last good one
// took (and RefreshEvery). At a million pending jobs the two counts take
// about 2 s (docs/operations.md), so they are read every 20 s or so
// instead of every 5, on every replica.
const readShare = 10

// snapshotTimeout bounds one read of the snapshot, which a scrape waits for.
const snapshotTimeout = 3 * time.Second

type snapshot struct {
	queues     []store.QueueBacklog
	workspaces []store.WorkspaceBacklog
}

var (
	descQueueJobs = prometheus.NewDesc("errand_queue_jobs",
		"Jobs in a queue by status: pending (waiting, also for a later run_at or held), due (pending, due now and not held), startable (due jobs a worker may start now: within their workspace's concurrency cap), held (held by a paused workspace), processing. Read from the database, all replicas together.",
		[]string{"queue", "status"}, nil)
	descQueueOldest = prometheus.NewDesc("errand_queue_oldest_due_seconds",
		"How long the longest-waiting due job of a queue has waited since its run_at (0 when none is due), those a workspace's concurrency cap holds back included.",
		[]string{"queue"}, nil)
	descQueueOldestStartable = prometheus.NewDesc("errand_queue_oldest_startable_seconds",
		"How long the longest-waiting job of a queue that a worker may start now (due, within its workspace's concurrency cap) has waited since its run_at (0 when none).",
		[]string{"queue"}, nil)
	descWorkspaceJobs = prometheus.NewDesc("errand_workspace_jobs",
		"Pending and processing jobs of the workspaces with the most pending jobs (a bounded top N, all queues).",
		[]string{"workspace", "status"}, nil)
	descLeader = prometheus.NewDesc("errand_leader",
		"1 when this replica is River's elected leader (it runs maintenance and the schedules), else 0; known without the database.",
		nil, nil)
	descSnapshotAge = prometheus.NewDesc("errand_metrics_snapshot_age_seconds",
		"Time since the database figures served were read: it keeps growing while reads fail (absent until a read succeeds).",
		nil, nil)
	descSnapshotErrors = prometheus.NewDesc("errand_metrics_snapshot_errors_total",
		"Failed reads of the database figures; the previous figures are served meanwhile.",
		nil, nil)
)

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueJobs, descQueueOldest, descQueueOldestStartable, descWorkspaceJobs, descLeader, descSnapshotAge, descSnapshotErrors} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	leader := 0.0
	if c.leading() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	s, age, errs, ok := c.get()
	ch <- prometheus.MustNewConstMetric(descSnapshotErrors, prometheus.CounterValue, errs)
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(descSnapshotAge, prometheus.GaugeValue, age.Seconds())
	for _, q := range withIdle(s.queues, c.cfg.Queues) {
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Pending), q.Queue, "pending")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Due), q.Queue, "due")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Processing), q.Queue, "processing")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Held), q.Queue, "held")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Startable), q.Queue, "startable")
		ch <- prometheus.MustNewConstMetric(descQueueOldest, prometheus.GaugeValue, q.OldestDue.Seconds(), q.Queue)
		ch <- prometheus.MustNewConstMetric(descQueueOldestStartable, prometheus.GaugeValue, q.OldestStartable.Seconds(), q.Queue)
	}
	for _, w := range s.workspaces {
		ch <- prometheus.MustNewConstMetric(descWorkspaceJobs, prometheus.GaugeValue, float64(w.Pending), w.WorkspaceID, "pending")
		ch <- prometheus.MustNewConstMetric(descWorkspaceJobs, prometheus.GaugeValue, float64(w.Processing), w.WorkspaceID, "processing")
	}
}

// withIdle is queues with a zero backlog added for each of served that has
// no row (nothing pending or processing), in queue order.
func withIdle(queues []store.QueueBacklog, served []string) []store.QueueBacklog {
	out := slices.Clone(queues)
	for _, name := range served {
		if !slices.ContainsFunc(queues, func(q store.QueueBacklog) bool { return q.Queue == name }) {
			out = append(out, store.QueueBacklog{Queue: name})
		}
	}
	slices.SortFunc(out, func(a, b store.QueueBacklog) int { return strings.Compare(a.Queue, b.Queue) })
	return out
}

// get returns the last good snapshot and its age, reading first when the
// last read (good or not) is older than RefreshEvery, or than readShare
// times the last good read's duration when that is longer: a database that
// fails is asked again at the next interval, not at every scrape, and a
// large backlog is not counted more than a tenth of the time. Concurrent
// scrapes wait for one read.
func (c *snapshotCollector) get() (snapshot, time.Duration, float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if !c.hasTry || now.Sub(c.tried) >= max(c.cfg.RefreshEvery, readShare*c.took) {
		c.tried, c.hasTry = now, true
		start := time.Now() // the read's own duration, whatever clock the figures' age follows
		s, err := c.read()
		if err != nil {
			c.errors++
			c.cfg.Logger.Warn("metrics: cannot read the queue figures; serving the previous ones", slog.String("error", err.Error()))
		} else {
			c.last, c.readAt, c.fetched, c.took = s, now, true, time.Since(start)
		}
	}
	return c.last, now.Sub(c.readAt), c.errors, c.fetched
}

func (c *snapshotCollector) read() (snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	var s snapshot
	var err error
	if s.queues, err = store.PendingByQueue(ctx, c.cfg.DB); err != nil {
		return s, err
	}
	if s.workspaces, err = store.PendingByWorkspace(ctx, c.cfg.DB, c.cfg.TopN); err != nil {
		return s, err
	}
	return s, nil
}
