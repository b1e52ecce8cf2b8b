// Package ping is kind "ping" (queue default), the diagnostic kind: ops
// enqueue one to test the pipeline, benchmarks to measure it.
//
//	INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'ping', '{"sleep_ms": 100}');
package ping

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/errand-dev/errand/jobs"
)

// Name is the kind's name in errand.jobs.
const Name = "ping"

// Args are the args of kind "ping".
type Args struct {
	// SleepMS is how long the job sleeps, 0 to 30000.
	SleepMS int `json:"sleep_ms"`
	// FailTimes makes the first FailTimes attempts fail.
	FailTimes int `json:"fail_times"`
}

// Validate refuses values the job cannot honour.
func (a Args) Validate() error {
	if a.SleepMS < 0 || a.SleepMS > 30000 {
		return fmt.Errorf("sleep_ms must be between 0 and 30000, got %d", a.SleepMS)
	}
	if a.FailTimes < 0 {
		return fmt.Errorf("fail_times must not be negative, got %d", a.FailTimes)
	}
	return nil
}

// ErrFailed is what a ping returns for each attempt fail_times asks to fail.
var ErrFailed = errors.New("ping failed as asked by fail_times")

// Kind is kind "ping": it sleeps sleep_ms, fails its first fail_times
// attempts, then completes.
func Kind() jobs.Kind {
	return jobs.Define(Name, jobs.QueueDefault, func(ctx context.Context, job *jobs.Job, args Args) error {
		if args.SleepMS > 0 {
			t := time.NewTimer(time.Duration(args.SleepMS) * time.Millisecond)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		if job.Attempt <= args.FailTimes {
			return fmt.Errorf("attempt %d of %d: %w", job.Attempt, args.FailTimes, ErrFailed)
		}
		return nil
	}, jobs.WithTimeout(45*time.Second), jobs.WithDescription("diagnostic: sleeps sleep_ms, fails the first fail_times attempts"))
}
