package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/errand-dev/errand/store"
)

// noisy measures what one noisy workspace does to the others (issue 14):
// small workspaces' pings wait from their INSERT to their start (read from
// the database's own timestamps), once with nothing else to do and once
// behind one workspace's flood of the same pings; and the flood's own rate
// against the same pings run alone.
//
// With --flood-sleep-ms the flood's jobs work that long instead (slow jobs,
// or jobs waiting in their worker over a rate limit), and the bench also
// reports how many of the flood's jobs were running when the small
// workspaces' jobs started (the median and the most): sharing job starts let
// a slow flood gather the workers as they freed, sharing what each workspace
// runs holds it to its share while the others have work (docs/fairness.md).
type noisyFlags struct {
	flood        int
	small        int
	each         int
	sleepMS      int
	floodSleepMS int // -1: sleepMS
}

func parseNoisyFlags(args []string, out io.Writer) (noisyFlags, error) {
	var f noisyFlags
	fs := flag.NewFlagSet("errand bench noisy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&f.flood, "flood", 20000, "pings the noisy workspace enqueues at once")
	fs.IntVar(&f.small, "small", 10, "small workspaces")
	fs.IntVar(&f.each, "each", 10, "pings each small workspace enqueues")
	fs.IntVar(&f.sleepMS, "sleep-ms", 20, "how long each ping works")
	fs.IntVar(&f.floodSleepMS, "flood-sleep-ms", -1, "how long each of the flood's pings works (default: --sleep-ms)")
	if err := parseBenchFlags(fs, args); err != nil {
		return f, err
	}
	switch {
	case f.flood < 1:
		return f, fmt.Errorf("%w: errand bench noisy: --flood must be positive, got %d", ErrUsage, f.flood)
	case f.small < 1 || f.small > 1000:
		return f, fmt.Errorf("%w: errand bench noisy: --small must be 1 to 1000, got %d", ErrUsage, f.small)
	case f.each < 1:
		return f, fmt.Errorf("%w: errand bench noisy: --each must be positive, got %d", ErrUsage, f.each)
	case f.sleepMS < 0 || f.sleepMS > 30000:
		return f, fmt.Errorf("%w: errand bench noisy: --sleep-ms must be 0 to 30000, got %d", ErrUsage, f.sleepMS)
	case f.floodSleepMS < -1 || f.floodSleepMS > 30000:
		return f, fmt.Errorf("%w: errand bench noisy: --flood-sleep-ms must be 0 to 30000, got %d", ErrUsage, f.floodSleepMS)
	}
	return f, nil
}

func runNoisy(ctx context.Context, b *bench, args []string) error {
	f, err := parseNoisyFlags(args, b.stdout)
	if err != nil {
		return helpIsNoError(err)
	}
	return b.inWorkspace(ctx, func(st *store.Store, ws string) (string, error) { return b.noisy(ctx, st, ws, f) })
}

func (b *bench) noisy(ctx context.Context, st *store.Store, flood string, f noisyFlags) (result string, err error) {
	small, err := b.scaleCreateWorkspaces(ctx, st, flood, f.small)
	defer func() {
		if cerr := b.scaleCleanup(ctx, st, small); err == nil {
			err = cerr
		}
	}()
	if err != nil {
		return "", err
	}
	cfg := b.cfg
	cfg.HTTPAddr = "127.0.0.1:0" // as throughput's: two benches may run at once
	d, err := b.startDaemon(ctx, cfg, func(*rivertype.JobRow) {})
	if err != nil {
		return "", err
	}
	defer func() {
		if serr := d.stop(); err == nil {
			err = serr
		}
	}()

	// 1. The small workspaces alone.
	idle, err := b.noisySmall(ctx, st, small, f)
	if err != nil {
		return "", err
	}
	b.printf("%d small workspaces × %d pings, nothing else running: p95 wait %.1f ms", f.small, f.each, idle)
	if _, err := st.Exec(ctx, scaleDeleteJobs, small); err != nil {
		return "", err
	}

	// 2. The flood alone: the single-tenant rate.
	alone, err := b.noisyFlood(ctx, st, flood, f, "alone")
	if err != nil {
		return "", err
	}

	// 3. The flood, and the small workspaces' pings just after it.
	if _, err := st.Exec(ctx, noisyInsertFlood, flood, f.flood, f.floodSleep()); err != nil {
		return "", fmt.Errorf("enqueue the flood: %w", err)
	}
	flooded, err := b.noisySmall(ctx, st, small, f)
	if err != nil {
		return "", err
	}
	b.printf("the same behind %d pings of one workspace: p95 wait %.1f ms (%.2f× the unflooded)", f.flood, flooded, flooded/max(idle, 0.001))
	var median float64
	var most int64
	if f.floodSleepMS >= 0 {
		if err := st.QueryRow(ctx, noisyFloodRunning, flood, small).Scan(&median, &most); err != nil {
			return "", err
		}
		b.printf("the flood's %d ms pings running when a small workspace's ping started: median %.1f, most %d", f.floodSleepMS, median, most)
	}
	shared, err := b.noisyFloodRate(ctx, st, flood, f, "beside the small workspaces")
	if err != nil {
		return "", err
	}
	if f.floodSleepMS >= 0 {
		return fmt.Sprintf("RESULT mode=noisy flood=%d small=%d each=%d sleep_ms=%d flood_sleep_ms=%d small_p95_ms_idle=%.1f small_p95_ms_flooded=%.1f wait_ratio=%.2f flood_running_median=%.1f flood_running_most=%d flood_jobs_per_s=%.0f single_tenant_jobs_per_s=%.0f flood_ratio=%.3f",
			f.flood, f.small, f.each, f.sleepMS, f.floodSleepMS, idle, flooded, flooded/max(idle, 0.001), median, most, shared, alone, shared/alone), nil
	}
	return fmt.Sprintf("RESULT mode=noisy flood=%d small=%d each=%d sleep_ms=%d small_p95_ms_idle=%.1f small_p95_ms_flooded=%.1f wait_ratio=%.2f flood_jobs_per_s=%.0f single_tenant_jobs_per_s=%.0f flood_ratio=%.3f",
		f.flood, f.small, f.each, f.sleepMS, idle, flooded, flooded/max(idle, 0.001), shared, alone, shared/alone), nil
}

// noisySmall enqueues the small workspaces' pings and returns their p95 wait
// once all have completed.
func (b *bench) noisySmall(ctx context.Context, st *store.Store, small []string, f noisyFlags) (float64, error) {
	if _, err := st.Exec(ctx, noisyInsertSmall, small, f.each, f.sleepMS); err != nil {
		return 0, fmt.Errorf("enqueue the small workspaces' pings: %w", err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var left int64
		var p95 float64
		if err := st.QueryRow(ctx, noisyWaits, small).Scan(&left, &p95); err != nil {
			return 0, err
		}
		if left == 0 {
			return p95, nil
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the small workspaces' pings did not finish within 30 minutes")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// noisyFlood enqueues the flood, waits for it and returns its rate.
func (b *bench) noisyFlood(ctx context.Context, st *store.Store, flood string, f noisyFlags, what string) (float64, error) {
	if _, err := st.Exec(ctx, noisyInsertFlood, flood, f.flood, f.floodSleep()); err != nil {
		return 0, fmt.Errorf("enqueue the flood: %w", err)
	}
	return b.noisyFloodRate(ctx, st, flood, f, what)
}

// noisyFloodRate waits for the flood to finish, returns its rate and
// deletes its jobs.
func (b *bench) noisyFloodRate(ctx context.Context, st *store.Store, flood string, f noisyFlags, what string) (float64, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var left, n int64
		var seconds float64
		if err := st.QueryRow(ctx, noisyRate, flood).Scan(&left, &n, &seconds); err != nil {
			return 0, err
		}
		if left == 0 {
			rate := float64(n) / max(seconds, 0.001)
			b.printf("flood %s: %d pings in %.2f s, %.0f jobs/s", what, n, seconds, rate)
			if _, err := b.clearJobs(ctx, st, flood); err != nil {
				return 0, err
			}
			return rate, nil
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the flood did not finish within 30 minutes")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// floodSleep is how long each of the flood's pings works.
func (f noisyFlags) floodSleep() int {
	if f.floodSleepMS < 0 {
		return f.sleepMS
	}
	return f.floodSleepMS
}
