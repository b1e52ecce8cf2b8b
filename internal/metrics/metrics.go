// Package metrics is errand's Prometheus exposition: GET /metrics on the
// daemon's HTTP address, in the text format, through client_golang.
//
// What each replica counts itself (from River's job events and its own
// heartbeat): jobs finished by kind, queue and outcome, how long they ran,
// how long they waited from due to start, heartbeat renewals and fencing.
// What it reads from the database (the backlog per queue, the busiest
// workspaces, who leads): one snapshot at most every RefreshEvery, however
// often and by however many scrapers it is scraped, through store's
// index-friendly queries. Per-workspace figures are only the TopN busiest,
// so label cardinality does not grow with the number of tenants. Kinds add
// their own (jobs.Setup.Metrics).
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
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
	// ReplicaID is this replica's current River client id ("" while no
	// engine runs); errand_leader compares it with River's leader.
	ReplicaID func() string
	// RefreshEvery bounds how often the snapshot is read.
	RefreshEvery time.Duration
	// TopN is how many workspaces errand_workspace_jobs shows.
	TopN   int
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
	if cfg.ReplicaID == nil {
		cfg.ReplicaID = func() string { return "" }
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_jobs_total",
			Help: "Job attempts this replica finished, by kind, queue and outcome: completed, retried (failed, will run again), failed (discarded: no attempts left or a permanent error), cancelled, snoozed.",
		}, []string{"kind", "queue", "outcome"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_job_duration_seconds",
			Help:    "How long a job attempt ran on this replica, by kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "errand_job_wait_seconds",
			Help:    "From a job's due time (its INSERT, or its run_at when later) to the start of the attempt, by queue.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"queue"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_heartbeat_renewals_total",
			Help: "This replica's heartbeat renewals, by result (ok, failed).",
		}, []string{"result"}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_fencing_total",
			Help: "Times this process fenced a replica identity: it lost its lease, cancelled its running jobs and rejoined as a new replica.",
		}),
	}
	for _, r := range []string{"ok", "failed"} {
		m.renewals.WithLabelValues(r)
	}
	m.snap = &snapshotCollector{cfg: cfg}
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

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics when asked for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil, ErrorHandling: promhttp.ContinueOnError})
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

// Events are the River events Watch needs.
var Events = []river.EventKind{
	river.EventKindJobCompleted, river.EventKindJobFailed,
	river.EventKindJobCancelled, river.EventKindJobSnoozed,
}

// Watch counts River's job events from events until it is closed or ctx is
// done. River drops events when the channel is full, so it must keep up: it
// only touches counters.
func (m *Metrics) Watch(ctx context.Context, events <-chan *river.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			m.observe(ev)
		}
	}
}

func (m *Metrics) observe(ev *river.Event) {
	if ev == nil || ev.Job == nil {
		return
	}
	var outcome string
	switch ev.Kind {
	case river.EventKindJobCompleted:
		outcome = "completed"
	case river.EventKindJobCancelled:
		outcome = "cancelled"
	case river.EventKindJobSnoozed:
		outcome = "snoozed"
	case river.EventKindJobFailed:
		outcome = "retried"
		if ev.Job.State == rivertype.JobStateDiscarded {
			outcome = "failed"
		}
	default:
		return
	}
	m.jobs.WithLabelValues(ev.Job.Kind, ev.Job.Queue, outcome).Inc()
	if ev.JobStats != nil {
		m.run.WithLabelValues(ev.Job.Kind).Observe(ev.JobStats.RunDuration.Seconds())
		m.wait.WithLabelValues(ev.Job.Queue).Observe(max(ev.JobStats.QueueWaitDuration, 0).Seconds())
	}
}

// snapshotCollector reads the database figures at most every RefreshEvery
// and serves the last good snapshot in between (and when a read fails).
type snapshotCollector struct {
	cfg Config

	mu      sync.Mutex
	at      time.Time
	last    snapshot
	errors  float64
	fetched bool
}

type snapshot struct {
	queues     []store.QueueBacklog
	workspaces []store.WorkspaceBacklog
	leader     string
}

var (
	descQueueJobs = prometheus.NewDesc("errand_queue_jobs",
		"Jobs in a queue by status: pending (waiting, also for a later run_at or held), due (pending, due now and not held), held (held by a paused workspace), processing. Read from the database, all replicas together.",
		[]string{"queue", "status"}, nil)
	descQueueOldest = prometheus.NewDesc("errand_queue_oldest_due_seconds",
		"How long the longest-waiting due job of a queue has waited since its run_at (0 when none is due).",
		[]string{"queue"}, nil)
	descWorkspaceJobs = prometheus.NewDesc("errand_workspace_jobs",
		"Pending and processing jobs of the workspaces with the most pending jobs (a bounded top N, all queues).",
		[]string{"workspace", "status"}, nil)
	descLeader = prometheus.NewDesc("errand_leader",
		"1 when this replica is River's elected leader (it runs maintenance and the schedules), else 0.",
		nil, nil)
	descSnapshotAge = prometheus.NewDesc("errand_metrics_snapshot_age_seconds",
		"Age of the database figures served (they are read at most every few seconds).",
		nil, nil)
	descSnapshotErrors = prometheus.NewDesc("errand_metrics_snapshot_errors_total",
		"Failed reads of the database figures; the previous figures are served meanwhile.",
		nil, nil)
)

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueJobs, descQueueOldest, descWorkspaceJobs, descLeader, descSnapshotAge, descSnapshotErrors} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s, age, errs, ok := c.get()
	ch <- prometheus.MustNewConstMetric(descSnapshotErrors, prometheus.CounterValue, errs)
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(descSnapshotAge, prometheus.GaugeValue, age.Seconds())
	for _, q := range s.queues {
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Pending), q.Queue, "pending")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Due), q.Queue, "due")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Processing), q.Queue, "processing")
		ch <- prometheus.MustNewConstMetric(descQueueJobs, prometheus.GaugeValue, float64(q.Held), q.Queue, "held")
		ch <- prometheus.MustNewConstMetric(descQueueOldest, prometheus.GaugeValue, q.OldestDue.Seconds(), q.Queue)
	}
	for _, w := range s.workspaces {
		ch <- prometheus.MustNewConstMetric(descWorkspaceJobs, prometheus.GaugeValue, float64(w.Pending), w.WorkspaceID, "pending")
		ch <- prometheus.MustNewConstMetric(descWorkspaceJobs, prometheus.GaugeValue, float64(w.Processing), w.WorkspaceID, "processing")
	}
	leader := 0.0
	if id := c.cfg.ReplicaID(); id != "" && id == s.leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
}

// get returns the snapshot, reading it first when it is older than
// RefreshEvery; concurrent scrapes wait for one read.
func (c *snapshotCollector) get() (snapshot, time.Duration, float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if !c.fetched || now.Sub(c.at) >= c.cfg.RefreshEvery {
		s, err := c.read()
		if err != nil {
			c.errors++
			c.cfg.Logger.Warn("metrics: cannot read the queue figures; serving the previous ones", slog.String("error", err.Error()))
			// Try again at the next interval, not at every scrape.
			c.at = now
		} else {
			c.last, c.at, c.fetched = s, now, true
		}
	}
	return c.last, now.Sub(c.at), c.errors, c.fetched
}

func (c *snapshotCollector) read() (snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var s snapshot
	var err error
	if s.queues, err = store.PendingByQueue(ctx, c.cfg.DB); err != nil {
		return s, err
	}
	if s.workspaces, err = store.PendingByWorkspace(ctx, c.cfg.DB, c.cfg.TopN); err != nil {
		return s, err
	}
	if s.leader, err = store.Leader(ctx, c.cfg.DB); err != nil {
		return s, err
	}
	return s, nil
}
