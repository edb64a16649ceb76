//go:build !linux

package ownership

import "time"

// boottime falls back to Go's monotonic clock, which may not count time
// spent suspended; the lease's wall-clock cross-check then notices a
// suspension longer than its slack.
func boottime() time.Duration { return time.Since(monotonicOrigin) }
