// Package fair is errand's fetch: River's producer asks it for a queue's next
// jobs, and it answers with errand.fair_fetch_counted, which shares the queue's
// workers among the workspaces that have work by what each is running
// (weighted by plan) and holds each workspace within its concurrency cap,
// across replicas.
//
// River's open-source client takes a driver that may carry its own "pilot"
// (River's interface for the statements around fetching, the hook River
// Pro's concurrency limits plug into). Driver wraps River's pgx driver and
// gives River this package's Pilot, which is River's standard one except for
// JobGetAvailable. Decisions and measurements: docs/fairness.md.
package fair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivershared/baseservice"
	"github.com/riverqueue/river/rivershared/riverpilot"
	"github.com/riverqueue/river/rivershared/uniquestates"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/jobs"
)

// Config is what the fetch needs beyond River's parameters.
type Config struct {
	// DefaultCap is the per-queue concurrency cap of a workspace whose plan
	// sets none (ERRAND_WORKSPACE_CONCURRENCY); 0 is no cap.
	DefaultCap int
	// Candidates is how many workspaces with work one fetch considers; more
	// than that take turns (round robin). 0: 1,000.
	Candidates int
	// CandidatesTTL is how long a list of busy workspaces serves the next
	// fetches (see DefaultCandidatesTTL). 0: the default.
	CandidatesTTL time.Duration
	// WakeAfter is how soon a queue whose fetch a cap held back is woken
	// again if no completion here wakes it first (see DefaultWakeAfter).
	// 0: the default.
	WakeAfter time.Duration
	// WakeAfterMax is how far that wake-up backs off while the fetches it
	// causes start nothing (see DefaultWakeAfterMax). 0: the default; never
	// below WakeAfter.
	WakeAfterMax time.Duration
	// Logger says when a producer's counts cannot be written (nil: not
	// logged).
	Logger *slog.Logger
}

// Driver is River's pgx driver with errand's fetch.
type Driver struct {
	*riverpgxv5.Driver
	pilot *Pilot
}

// NewDriver returns River's driver over pool, fetching fairly.
func NewDriver(pool *pgxpool.Pool, cfg Config) *Driver {
	if cfg.Candidates <= 0 {
		cfg.Candidates = 1000
	}
	if cfg.CandidatesTTL <= 0 {
		cfg.CandidatesTTL = DefaultCandidatesTTL
	}
	if cfg.WakeAfter <= 0 {
		cfg.WakeAfter = DefaultWakeAfter
	}
	if cfg.WakeAfterMax <= 0 {
		cfg.WakeAfterMax = DefaultWakeAfterMax
	}
	cfg.WakeAfterMax = max(cfg.WakeAfterMax, cfg.WakeAfter)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{Driver: riverpgxv5.New(pool), pilot: &Pilot{StandardPilot: &riverpilot.StandardPilot{}, pool: pool, cfg: cfg}}
}

// PluginInit is part of River's driver plugin interface.
func (d *Driver) PluginInit(*baseservice.Archetype) {}

// PluginPilot gives River errand's pilot.
func (d *Driver) PluginPilot() riverpilot.Pilot { return d.pilot }

// Pilot is River's standard pilot with errand's fetch.
type Pilot struct {
	*riverpilot.StandardPilot
	pool *pgxpool.Pool
	cfg  Config

	mu        sync.Mutex
	waking    map[wakeKey]time.Time    // wake-ups on their way, by when they are due
	wakeAfter map[string]time.Duration // per queue: the fallback wake-up's current delay
	held      map[string][]string      // queues whose last fetch here a cap held back: the workspaces it held
	cands     map[string]candidates
	producers map[int64]*producerState // River's producers here, by producer id
}

// producerState is what one River producer (one queue of this client) has
// at work: the attempts its fetches started whose work has not ended. Each
// fetch passes its counts per workspace to errand.fair_fetch_counted, which adds
// every other replica's (migrations/033_fair_working_counts.sql).
type producerState struct {
	p      *Pilot
	queue  string
	client string

	// fetchMu orders this producer's writes of its row: a fetch (its
	// counts, the statement, and the jobs it started added) and a refresh.
	fetchMu sync.Mutex

	mu       sync.Mutex
	working  map[attempt]string // the workspace of each attempt at work
	byWS     map[string]int32   // attempts at work per workspace
	stale    bool               // work ended since the row was last written
	fetches  int                // fetches so far, to tell whether one came since
	pending  bool               // a refresh on its way
	shutDown bool               // the row is gone for good
	failures int                // refreshes failed in a row
}

// attempt is one attempt of a job, named by the attempted_at its fetch set:
// a job fetched again (retry, snooze, rescue) is a new attempt, counted
// beside an earlier one still at work, whose end does not take it away.
type attempt struct {
	id          int64
	attemptedAt int64 // UnixNano
}

func attemptOf(job *rivertype.JobRow) (attempt, bool) {
	if job.AttemptedAt == nil {
		return attempt{}, false
	}
	return attempt{id: job.ID, attemptedAt: job.AttemptedAt.UnixNano()}, true
}

// noWorkspace is errand.fair_workspace of a job without one (errand's own).
const noWorkspace = "00000000-0000-0000-0000-000000000000"

// refreshAfter is how soon after work ends here, if this producer has not
// fetched since, its row is rewritten from its counts: a producer that stops
// fetching (it is shutting down and draining, its last fetch was not full
// and nothing woke it, or it polls behind a pooler) must not hold its
// workspaces' slots under their caps on the other replicas until its next
// fetch. While it fetches, its fetches rewrite the row and no refresh is
// written.
const refreshAfter = 50 * time.Millisecond

// counts returns the workspaces at work and how many jobs each runs, never
// nil (a nil array would tell the fetch that this caller keeps no counts).
// The caller holds s.mu.
func (s *producerState) countsLocked() (workspaces []string, n []int32) {
	workspaces, n = make([]string, 0, len(s.byWS)), make([]int32, 0, len(s.byWS))
	for ws, c := range s.byWS {
		workspaces = append(workspaces, ws)
		n = append(n, c)
	}
	return workspaces, n
}

// beforeFetch returns the counts a fetch passes (the row it writes will be
// as fresh as they are) and whether the row was stale before it, for
// fetchFailed. The caller holds s.fetchMu.
func (s *producerState) beforeFetch() (workspaces []string, n []int32, wasStale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasStale = s.stale
	s.stale = false
	s.fetches++
	workspaces, n = s.countsLocked()
	return workspaces, n, wasStale
}

func (s *producerState) started(started []*rivertype.JobRow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writtenLocked() // the fetch wrote the row
	for _, j := range started {
		a, ok := attemptOf(j)
		if !ok {
			continue
		}
		if _, dup := s.working[a]; dup {
			continue
		}
		ws := workspaceOf(j)
		s.working[a] = ws
		s.byWS[ws]++
	}
}

// ended forgets job's attempt and reports whether it was at work here.
func (s *producerState) ended(job *rivertype.JobRow) bool {
	a, ok := attemptOf(job)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws, ok := s.working[a]
	if !ok {
		return false
	}
	delete(s.working, a)
	if s.byWS[ws]--; s.byWS[ws] <= 0 {
		delete(s.byWS, ws)
	}
	s.markStaleLocked()
	return true
}

// markStaleLocked notes that the row may count work that has ended, and
// schedules a refresh unless one is on its way. The caller holds s.mu.
func (s *producerState) markStaleLocked() {
	s.stale = true
	if !s.pending && !s.shutDown {
		s.pending = true
		at := s.fetches
		time.AfterFunc(s.refreshDelayLocked(), func() { s.refresh(at) })
	}
}

// refreshDelayLocked is refreshAfter, doubled for each refresh that failed
// in a row up to maxRefreshBackoff: a database that refuses the write (an
// outage, a lock held on the row) is not asked every 50 ms, each time
// holding up this producer's fetches for up to 2*refreshTimeout. The caller
// holds s.mu.
func (s *producerState) refreshDelayLocked() time.Duration {
	return min(refreshAfter<<min(s.failures, 10), maxRefreshBackoff)
}

const maxRefreshBackoff = 5 * time.Second

// fetchFailed is a fetch that failed: whatever it wrote (the server may
// have committed before the error reached us), the row may be as stale as
// before it, and never lower than the work at hand. The caller holds
// s.fetchMu.
func (s *producerState) fetchFailed(wasStale bool) {
	if !wasStale {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markStaleLocked()
}

// writtenLocked notes that the row was written (by a fetch or a refresh):
// a run of failed refreshes, if any, is over. The caller holds s.mu.
func (s *producerState) writtenLocked() {
	if s.failures > 0 {
		s.p.cfg.Logger.Info("fair: the counts of a queue are written again", "queue", s.queue, "failed_before", s.failures)
		s.failures = 0
	}
}

// fetchedSinceLocked reports whether a fetch came since fetchesAt and, if
// one did, looks again later (that fetch may have been the last). The
// caller holds s.mu.
func (s *producerState) fetchedSinceLocked(fetchesAt int) bool {
	if s.fetches == fetchesAt {
		return false
	}
	at := s.fetches
	time.AfterFunc(refreshAfter, func() { s.refresh(at) })
	return true
}

// refresh rewrites the row from the counts if work ended since it was last
// written and no fetch came since fetchesAt.
func (s *producerState) refresh(fetchesAt int) {
	// A fetch since: look again later, without waiting behind the next one.
	s.mu.Lock()
	if !s.shutDown && s.stale && s.fetchedSinceLocked(fetchesAt) {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	s.mu.Lock()
	if s.shutDown || !s.stale {
		s.pending = false
		s.mu.Unlock()
		return
	}
	if s.fetchedSinceLocked(fetchesAt) {
		s.mu.Unlock()
		return
	}
	s.pending = false
	s.stale = false
	ws, n := s.countsLocked()
	s.mu.Unlock()
	err := s.writeRow(ws, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.writtenLocked()
		return
	}
	// The row stays as high as it was (it never undercounts): the other
	// replicas hold this one's workspaces back a little more until it is
	// written. Try again later, unless the pool is closed (the replica is
	// being abandoned; store.RescueOrphans drops the row of a replica that
	// is no longer live).
	s.failures++
	if errors.Is(err, puddle.ErrClosedPool) {
		s.shutDown = true
		return
	}
	if s.failures == 1 || s.failures%20 == 0 {
		s.p.cfg.Logger.Warn("fair: could not write the counts of a queue; other replicas may hold its workspaces back until it is written; retrying",
			"queue", s.queue, "failures", s.failures, "retry_in", s.refreshDelayLocked().String(), "error", err.Error())
	}
	s.markStaleLocked()
}

// refreshTimeout bounds a refresh on the server as well as here: a
// statement that outlived its caller could commit after a later fetch or
// the producer's shutdown and write counts older than theirs.
const refreshTimeout = 2 * time.Second

func (s *producerState) writeRow(ws []string, n []int32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*refreshTimeout)
	defer cancel()
	return pgx.BeginFunc(ctx, s.p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setStatementTimeout,
			fmt.Sprint(refreshTimeout.Milliseconds())); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, putWorking, s.queue, s.client, ws, n)
		return err
	})
}

// JobFinish is River's word that the job's executor is done (its completion
// handed to the completer, not yet committed); errand's worker middleware
// usually said so first.
func (s *producerState) JobFinish(job *rivertype.JobRow) { s.p.workEnded(job) }

// ProducerInit starts counting what a producer has at work.
func (p *Pilot) ProducerInit(ctx context.Context, exec riverdriver.Executor, params *riverpilot.ProducerInitParams) (int64, riverpilot.ProducerState, error) {
	id, _, err := p.StandardPilot.ProducerInit(ctx, exec, params)
	if err != nil {
		return 0, nil, err
	}
	s := &producerState{p: p, queue: params.Queue, client: params.ClientID,
		working: make(map[attempt]string), byWS: make(map[string]int32)}
	p.mu.Lock()
	if p.producers == nil {
		p.producers = make(map[int64]*producerState)
	}
	p.producers[id] = s
	p.mu.Unlock()
	return id, s, nil
}

// ProducerShutdown removes the producer's counts from the database: River
// calls it once the producer's jobs are done (and again if it fails).
func (p *Pilot) ProducerShutdown(ctx context.Context, exec riverdriver.Executor, params *riverpilot.ProducerShutdownParams) error {
	p.mu.Lock()
	s := p.producers[params.ProducerID]
	p.mu.Unlock()
	if s != nil {
		s.fetchMu.Lock()
		s.mu.Lock()
		s.shutDown = true // no refresh writes the row again
		s.mu.Unlock()
		// River calls this as the client stops, often with a context at
		// or near its deadline: the delete gets a few seconds of its own,
		// so that a clean stop leaves no counts behind (and logs no error).
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := exec.Exec(delCtx, deleteWorking, s.queue, s.client)
		cancel()
		s.fetchMu.Unlock()
		if err != nil {
			return fmt.Errorf("forget the counts of queue %s: %w", s.queue, err)
		}
		p.mu.Lock()
		delete(p.producers, params.ProducerID)
		p.mu.Unlock()
	}
	return p.StandardPilot.ProducerShutdown(ctx, exec, params)
}

// candidates are the workspaces a fetch found with work in a queue.
type candidates struct {
	list []string
	at   time.Time
}

// Finding the workspaces with work costs an index probe per workspace.
// With many of them, one list serves the fetches of the next
// DefaultCandidatesTTL; a fetch that the list cannot fill looks again at once (in
// the same statement), so a workspace that starts enqueuing waits at most
// that long for its first turn while others are busy, and never while
// workers would be idle. Short lists are found afresh every fetch.
const (
	DefaultCandidatesTTL = 20 * time.Millisecond
	candidatesToCache    = 8
)

func (p *Pilot) cachedCandidates(queue string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cands[queue]
	if !ok || time.Since(c.at) > p.cfg.CandidatesTTL {
		return nil
	}
	return c.list
}

// keepCandidates keeps the list a fetch used; fresh when the fetch was given
// none (it found them itself).
func (p *Pilot) keepCandidates(queue string, list []string, fresh bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(list) < candidatesToCache {
		delete(p.cands, queue)
		return
	}
	if c, ok := p.cands[queue]; ok && !fresh && slices.Equal(c.list, list) {
		return // the cached list came back unchanged: keep its age
	}
	if p.cands == nil {
		p.cands = make(map[string]candidates)
	}
	p.cands[queue] = candidates{list: list, at: time.Now()}
}

// DefaultWakeAfter is how long after a fetch that a cap held back the
// queue is woken to fetch again, at the latest. River's producer fetches
// again as soon as a worker frees only when its last fetch was full; a
// capped workspace's next job can start only once one of its running jobs
// has ended, which the producer is not told about. So the pilot wakes the
// queue (on every replica, through River's own insert notification) as
// soon as a job of a held-back workspace ends here (Driver.Middleware) and
// as soon as its completer has committed jobs of a held-back queue
// (JobSetStateIfRunningMany), and in any case this long after the fetch,
// until a fetch finds nothing held back: jobs that ended on another
// replica, or were completed inside an app's transaction, are seen by
// then. While the fetches it causes start nothing (the held-back
// workspaces' jobs are long, and nothing else waits), the delay doubles up
// to DefaultWakeAfterMax: each wake-up makes every replica fetch, so at a
// fixed 20 ms one workspace at its cap made each replica fetch about 50
// times a second, and every replica's wake-ups every replica's fetches
// (about 200 fetches a second with two replicas, a review measured),
// each queued on the queue's fetch lock. A fetch that starts a job, or
// holds nothing back, sets it back to WakeAfter; a job of a held-back
// workspace ending here or River's completer committing one still wakes
// the queue at once.
const DefaultWakeAfter = 20 * time.Millisecond

// DefaultWakeAfterMax is as far as the fallback wake-up backs off: the
// default of River's own poll interval (ERRAND_FETCH_POLL_INTERVAL), which
// would make the producer fetch by then anyway. (A longer poll interval
// does not lengthen it.)
const DefaultWakeAfterMax = time.Second

// nextWakeAfter is the fallback wake-up's delay after a fetch of queue that
// a cap held back: WakeAfter after a fetch that started jobs, else twice the
// last delay, at most WakeAfterMax.
func (p *Pilot) nextWakeAfter(queue string, startedAny bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.wakeAfter[queue]
	if startedAny || d == 0 {
		d = p.cfg.WakeAfter
	} else {
		d = min(2*d, p.cfg.WakeAfterMax)
	}
	if p.wakeAfter == nil {
		p.wakeAfter = make(map[string]time.Duration)
	}
	p.wakeAfter[queue] = d
	return d
}

// wake sends River's insert notification for queue after the delay (0: at
// once), at most one on its way per queue and kind of delay unless the new
// one is due sooner.
func (p *Pilot) wake(queue string, after time.Duration) {
	key := wakeKey{queue: queue, delayed: after > 0}
	due := time.Now().Add(after)
	p.mu.Lock()
	if pending, ok := p.waking[key]; ok && !due.Before(pending) {
		p.mu.Unlock()
		return
	}
	if p.waking == nil {
		p.waking = make(map[wakeKey]time.Time)
	}
	p.waking[key] = due
	p.mu.Unlock()
	time.AfterFunc(after, func() {
		// Forgotten before it is sent: a fetch this wake-up causes may ask
		// for the next one, which must not be dropped as already on its way.
		// (Unless a sooner one replaced it, still on its way.)
		p.mu.Lock()
		if p.waking[key].Equal(due) {
			delete(p.waking, key)
		}
		p.mu.Unlock()
		p.notify(queue)
	})
}

type wakeKey struct {
	queue   string
	delayed bool
}

// notify sends River's insert notification for queue: every replica's
// producer of that queue fetches.
func (p *Pilot) notify(queue string) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	// A closed pool (the daemon stopping) is no loss: nobody fetches.
	_, _ = p.pool.Exec(ctx, notifyQueue, queue)
}

// Middleware is River worker middleware that tells the pilot when a job's
// work has ended. Put it first in River's Config.Middleware, so that it
// wraps the job and errand's other middleware (River's own resumable-step
// middleware, which only edits the job's metadata in memory, is outside
// it). River's completer commits finished jobs in batches
// (at once from 100 of them, else every 250 ms), and River tells the pilot
// a job is done (ProducerState.JobFinish) only after handing it to the
// completer, from its producer's loop; the middleware tells it as the work
// returns, so that a capped workspace's next job may start at once (one
// capped at 2 with 20 ms jobs started about two per completer batch when
// finished jobs still counted: migrations/024_fair_ended_work.sql).
func (d *Driver) Middleware() rivertype.Middleware { return &endedMiddleware{p: d.pilot} }

type endedMiddleware struct{ p *Pilot }

func (*endedMiddleware) IsMiddleware() bool { return true }

// Work runs the job and then notes that its attempt's work has ended, also
// when it panicked.
func (m *endedMiddleware) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	defer m.p.workEnded(job)
	return doInner(ctx)
}

func (p *Pilot) workEnded(job *rivertype.JobRow) {
	p.mu.Lock()
	var was bool
	for _, s := range p.producers {
		if s.queue == job.Queue && s.ended(job) {
			was = true
		}
	}
	held := p.held[job.Queue]
	p.mu.Unlock()
	if was && len(held) > 0 && slices.Contains(held, workspaceOf(job)) {
		// Its slot under its workspace's cap is free now, and the last
		// fetch held that workspace's jobs back: River's producer, whose
		// last fetch the cap cut short, would not fetch again before
		// WakeAfter. (Other workspaces' jobs ending free no slot a held
		// job could take.)
		p.wake(job.Queue, 0)
	}
}

// workspaceOf is the job's workspace as errand.fair_workspace spells it.
func workspaceOf(job *rivertype.JobRow) string {
	if ws := jobs.WorkspaceOf(job); ws != "" {
		return ws
	}
	return noWorkspace
}

// fetchTimeout bounds one fetch, as River bounds its own (its
// HotOperationTimeout).
const fetchTimeout = 10 * time.Second

// JobGetAvailable locks and starts up to params.MaxToLock jobs of
// params.Queue, chosen by errand.fair_fetch_counted.
func (p *Pilot) JobGetAvailable(ctx context.Context, _ riverdriver.Executor, state riverpilot.ProducerState, params *riverdriver.JobGetAvailableParams) (res *riverdriver.JobGetAvailableResult, err error) {
	res = &riverdriver.JobGetAvailableResult{}
	if params.MaxToLock <= 0 {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	// One round trip, one connection: the fetch, then the workspaces a cap
	// held back (a session setting the fetch leaves).
	cached := p.cachedCandidates(params.Queue)
	// What this producer has at work (nil without our state: the fetch
	// counts River's running jobs instead). Its row is written by this fetch
	// and by refreshes, one at a time.
	var workingWS []string
	var workingN []int32
	ps, _ := state.(*producerState)
	if ps != nil {
		ps.fetchMu.Lock()
		defer ps.fetchMu.Unlock()
		var wasStale bool
		workingWS, workingN, wasStale = ps.beforeFetch()
		defer func() {
			if err != nil {
				ps.fetchFailed(wasStale)
			}
		}()
	}
	batch := &pgx.Batch{}
	batch.Queue(fetchJobs,
		params.Queue, params.MaxToLock, params.ClientID, params.MaxAttemptedBy, params.Now, params.Kind,
		p.cfg.DefaultCap, p.cfg.Candidates, cached, workingWS, workingN)
	batch.Queue(fetchLeft)
	br := p.pool.SendBatch(ctx, batch)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("fair fetch of queue %s: %w", params.Queue, err)
	}
	for rows.Next() {
		job, decodeErr, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("fair fetch of queue %s: %w", params.Queue, err)
		}
		res.Jobs = append(res.Jobs, job)
		if decodeErr != nil {
			if res.DecodeErrors == nil {
				res.DecodeErrors = make(map[int64]error)
			}
			res.DecodeErrors[job.ID] = decodeErr
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fair fetch of queue %s: %w", params.Queue, err)
	}
	var held []string
	var cands []string
	if err := br.QueryRow().Scan(&held, &cands); err != nil {
		return nil, fmt.Errorf("fair fetch of queue %s: %w", params.Queue, err)
	}
	if ps != nil {
		ps.started(res.Jobs)
	}
	p.keepCandidates(params.Queue, cands, cached == nil)
	if len(res.Jobs) >= params.MaxToLock {
		held = nil // a full fetch: River's producer fetches again as workers free
	}
	p.setHeld(params.Queue, held)
	if len(held) > 0 {
		p.wake(params.Queue, p.nextWakeAfter(params.Queue, len(res.Jobs) > 0))
	}
	return res, nil
}

func (p *Pilot) setHeld(queue string, held []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(held) == 0 {
		delete(p.held, queue)
		delete(p.wakeAfter, queue) // the next held-back fetch starts again at WakeAfter
		return
	}
	if p.held == nil {
		p.held = make(map[string][]string)
	}
	p.held[queue] = held
}

// JobSetStateIfRunningMany is River's (its completer's statement), and then
// wakes every queue whose last fetch here a cap held back and that had jobs
// among those just finished: they freed room under their workspaces' caps,
// and River's producer, whose last fetch was not full, would not fetch
// again before a poll or the pilot's WakeAfter. Only when River completes
// on its own connection, where the completion is committed when this
// returns; inside an app's transaction (JobCompleteTx) a notification now
// would come before the commit, and WakeAfter covers it.
func (p *Pilot) JobSetStateIfRunningMany(ctx context.Context, exec riverdriver.Executor, params *riverdriver.JobSetStateIfRunningManyParams) ([]*rivertype.JobRow, error) {
	rows, err := p.StandardPilot.JobSetStateIfRunningMany(ctx, exec, params)
	if err != nil {
		return rows, err
	}
	if _, inTx := exec.(riverdriver.ExecutorTx); inTx {
		return rows, nil
	}
	var wake []string
	p.mu.Lock()
	if len(p.held) == 0 { // the common case: no cap holds anything back here
		p.mu.Unlock()
		return rows, nil
	}
	for _, r := range rows {
		if len(p.held[r.Queue]) > 0 && r.State != rivertype.JobStateRunning && !slices.Contains(wake, r.Queue) {
			wake = append(wake, r.Queue)
		}
	}
	p.mu.Unlock()
	if len(wake) > 0 {
		// The jobs are completed whether or not this is sent; WakeAfter is
		// the fallback.
		_ = exec.Exec(ctx, notifyQueues, wake)
	}
	return rows, nil
}

// scanJob decodes one river_job row as River's driver does: a row whose
// errors cannot be decoded is still returned, with decodeErr, so that River
// can fail that job alone.
func scanJob(rows pgx.Rows) (job *rivertype.JobRow, decodeErr, err error) {
	var (
		attempt, maxAttempts, priority int16
		attemptedAt, finalizedAt       *time.Time
		errs                           [][]byte
		state                          string
		uniqueStates                   pgtype.Bits
	)
	job = &rivertype.JobRow{}
	if err := rows.Scan(&job.ID, &job.EncodedArgs, &attempt, &attemptedAt, &job.AttemptedBy, &job.CreatedAt,
		&errs, &finalizedAt, &job.Kind, &maxAttempts, &job.Metadata, &priority, &job.Queue, &state,
		&job.ScheduledAt, &job.Tags, &job.UniqueKey, &uniqueStates); err != nil {
		return nil, nil, err
	}
	job.Attempt = max(int(attempt), 0)
	job.MaxAttempts = max(int(maxAttempts), 0)
	job.Priority = max(int(priority), 0)
	job.State = rivertype.JobState(state)
	job.CreatedAt = job.CreatedAt.UTC()
	job.ScheduledAt = job.ScheduledAt.UTC()
	if attemptedAt != nil {
		t := attemptedAt.UTC()
		job.AttemptedAt = &t
	}
	if finalizedAt != nil {
		t := finalizedAt.UTC()
		job.FinalizedAt = &t
	}
	job.Errors = make([]rivertype.AttemptError, len(errs))
	for i, raw := range errs {
		if err := riverdriver.UnmarshalAttemptError(raw, &job.Errors[i]); err != nil {
			decodeErr = fmt.Errorf("error unmarshaling `errors`: %w", err)
			job.Errors = nil
			break
		}
	}
	if uniqueStates.Valid && len(uniqueStates.Bytes) > 0 {
		job.UniqueStates = uniquestates.UniqueBitmaskToStates(uniqueStates.Bytes[0])
	}
	return job, decodeErr, nil
}

var _ rivertype.WorkerMiddleware = (*endedMiddleware)(nil)
