// Package retry holds the small pieces every retrying loop of kmirror
// shares: the exponential backoff, a sleep that ends with its context, a
// wait for a condition with a deadline, and a throttle that keeps a
// repeating failure to one log line per interval.
package retry

import (
	"context"
	"time"
)

// Backoff is an exponential delay: Base after the first failure, doubled
// after each further one, never more than Max.
type Backoff struct {
	Base, Max time.Duration
}

// Delay is the wait after the given number of consecutive failures (1 for
// the first).
func (b Backoff) Delay(failures int) time.Duration {
	d := b.Base
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Sleep waits for d, or until ctx ends; it reports whether the whole wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Until calls cond every interval until it returns true, ctx ends or
// timeout passes; it reports whether cond became true.
func Until(ctx context.Context, interval, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if left := time.Until(deadline); left <= 0 || !Sleep(ctx, min(interval, left)) {
			return cond()
		}
	}
}

// Throttle lets an event through at most once per interval; a loop that
// fails on every pass uses it to log the failure once, not a flood. The
// zero value of a Throttle with Every set lets the first event through.
// It is not safe for concurrent use.
type Throttle struct {
	Every time.Duration
	last  time.Time
}

// Allow reports whether the event may pass now, and if so starts a new
// interval.
func (t *Throttle) Allow() bool {
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.Every {
		return false
	}
	t.last = now
	return true
}
