package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/internal/maintenance"
	"github.com/errand-dev/errand/internal/metrics"
	"github.com/errand-dev/errand/internal/tracing"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/schedules"
	"github.com/errand-dev/errand/store"
)

// engine is one replica identity: a River client, the pool its jobs use
// (every connection tagged with the replica id, which the completion guard
// in the database checks), and the heartbeat that keeps its lease.
type engine struct {
	id        string
	store     *store.Store
	client    *river.Client[pgx.Tx]
	heartbeat *maintenance.Heartbeat
	stopBeat  context.CancelFunc
	beatDone  chan struct{}
}

func startEngine(ctx context.Context, cfg config.Config, reg *jobs.Registry, table *schedules.Table, logger *slog.Logger, pollOnly, guard bool,
	onStart func(*rivertype.JobRow), t rescueTiming, m *metrics.Metrics, tr *tracing.Tracing) (*engine, error) {
	id := clientID()
	// Setup must not hang on a database that swallows packets; the client
	// itself runs on ctx.
	setupCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	session := map[string]string{"application_name": "errand " + id}
	if guard {
		session["errand.replica_id"] = id
		// The guard lets River's stuck-job rescuer (which runs on these
		// connections when this replica leads) through for jobs attempted
		// longer ago than this.
		session["errand.stuck_after"] = strconv.FormatFloat(rescueStuckJobsAfter(reg).Seconds(), 'f', -1, 64)
	}
	st, err := store.Open(setupCtx, cfg.DatabaseURL, store.Options{MaxConns: int32(cfg.DBMaxConns), Session: session})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	hb := maintenance.NewHeartbeat(maintenance.HeartbeatConfig{
		ID: id, Hostname: host, PID: os.Getpid(),
		ConnConfig: st.Pool().Config().ConnConfig.Copy(),
		Interval:   t.interval, FenceAfter: t.fenceAfter, Lease: t.lease,
		Logger:  logger.With(slog.String("replica", id)),
		Renewed: m.Renewed, OnFence: m.Fenced,
	})
	// Registered before the first fetch, so every job it runs has a known,
	// heartbeating owner.
	conn, err := st.Pool().Acquire(setupCtx)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("register replica: %w", err)
	}
	err = hb.Register(setupCtx, conn.Conn())
	conn.Release()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("register replica: %w", err)
	}
	// River's leader rebuilds its table's indexes daily; migration 036
	// dropped two of them (a team may create them again), and River warns
	// every day about each one it is told of and cannot find.
	reindex, err := store.ExistingIndexes(setupCtx, st.Pool(), migrations.Schema, river.ReindexerIndexNamesDefault())
	if err != nil {
		st.Close()
		return nil, err
	}
	client, err := newRiverClient(st, id, cfg, reg, table, logger, pollOnly, onStart, tr, m, reindex)
	if err != nil {
		st.Close()
		return nil, err
	}
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	e := &engine{id: id, store: st, client: client, heartbeat: hb, stopBeat: stopBeat, beatDone: make(chan struct{})}
	go func() {
		defer close(e.beatDone)
		hb.Run(beatCtx)
	}()
	// River's client runs on its own context: cancelling ctx (SIGTERM) starts
	// our graceful shutdown instead of River's abrupt one.
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		stopBeat()
		<-e.beatDone
		st.Close()
		return nil, fmt.Errorf("start river client: %w", err)
	}
	return e, nil
}

// shutdown stops fetching, lets running jobs finish within timeout, then
// cancels the rest: a cancelled job goes back to pending with its attempt
// given back (River's soft-stop path), so nothing is lost or burned. If the
// replica fences itself meanwhile, the jobs are cancelled at once. Only a
// client that really stopped retires its replica; otherwise its jobs wait for
// the lease like a crashed replica's.
func (e *engine) shutdown(timeout time.Duration, logger *slog.Logger) error {
	logger.Info("shutting down: letting running jobs finish", slog.Duration("timeout", timeout))
	softCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-e.heartbeat.Fenced():
			cancel()
		case <-softCtx.Done():
		}
	}()
	err := e.client.Stop(softCtx)
	if err == nil {
		e.close(true)
		logger.Info("shut down cleanly")
		return nil
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		e.close(false)
		return fmt.Errorf("stop: %w", err)
	}
	logger.Warn("cancelling running jobs; they return to pending without losing an attempt")
	hardCtx, cancelHard := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelHard()
	if err := e.client.StopAndCancel(hardCtx); err != nil {
		e.close(false)
		return fmt.Errorf("stop and cancel: %w", err)
	}
	e.close(true)
	logger.Info("shut down after cancelling running jobs")
	return nil
}

// abandon gives up this replica identity after fencing: running jobs are
// cancelled at once, and whatever River cannot write back any more is left to
// the rescuers, whose completions the database guard then protects.
func (e *engine) abandon(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.client.StopAndCancel(ctx); err != nil {
		logger.Warn("abandoned replica did not stop cleanly", slog.String("replica", e.id), slog.String("error", err.Error()))
	}
	e.close(false)
}

// close stops the heartbeat (retiring the replica when retire is set and it
// has not fenced) and closes the pool, without waiting forever for
// connections a stuck job still holds.
func (e *engine) close(retire bool) {
	if !retire {
		e.heartbeat.Abandon()
	}
	e.stopBeat()
	<-e.beatDone
	closed := make(chan struct{})
	go func() {
		e.store.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
	}
}
