package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PingArgs are the args of kind "ping", the diagnostic kind ops use to test
// the pipeline and benchmarks use to measure it.
type PingArgs struct {
	// SleepMS is how long the job sleeps, 0 to 30000.
	SleepMS int `json:"sleep_ms"`
	// FailTimes makes the first FailTimes attempts fail.
	FailTimes int `json:"fail_times"`
}

// Validate refuses values the job cannot honour.
func (a PingArgs) Validate() error {
	if a.SleepMS < 0 || a.SleepMS > 30000 {
		return fmt.Errorf("sleep_ms must be between 0 and 30000, got %d", a.SleepMS)
	}
	if a.FailTimes < 0 {
		return fmt.Errorf("fail_times must not be negative, got %d", a.FailTimes)
	}
	return nil
}

// ErrPingFailed is what a ping returns for each attempt fail_times asks to fail.
var ErrPingFailed = errors.New("ping failed as asked by fail_times")

// Ping is kind "ping" (queue default): sleeps sleep_ms, fails its first
// fail_times attempts, then completes.
func Ping() Kind {
	return Define("ping", QueueDefault, func(ctx context.Context, job *Job, args PingArgs) error {
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
			return fmt.Errorf("attempt %d of %d: %w", job.Attempt, args.FailTimes, ErrPingFailed)
		}
		return nil
	}, WithTimeout(45*time.Second), WithDescription("diagnostic: sleeps sleep_ms, fails the first fail_times attempts"))
}
