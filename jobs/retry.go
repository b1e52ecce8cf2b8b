package jobs

import (
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river/rivertype"
)

// RetryPolicy is exponential backoff with jitter: attempt n waits a random
// time between half and all of Base·2^(n-1), capped at Max. Jitter spreads a
// burst of failures (an outage of a provider) so retries don't arrive as a
// burst again.
type RetryPolicy struct {
	Base time.Duration // 0 means 1s
	Max  time.Duration // 0 means 1h
	// Now and Rand are injected by tests; nil means the real clock and source.
	Now  func() time.Time
	Rand func() float64
}

// NextRetry implements river.ClientRetryPolicy.
func (p *RetryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	return now().Add(p.Delay(job.Attempt))
}

// Delay is the wait after the given (1-based) failed attempt.
func (p *RetryPolicy) Delay(attempt int) time.Duration {
	base, ceiling := p.Base, p.Max
	if base <= 0 {
		base = time.Second
	}
	if ceiling <= 0 {
		ceiling = time.Hour
	}
	d := base
	// Doubling by steps (not a shift) so a large attempt count can't overflow.
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}
