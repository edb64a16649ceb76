//go:build linux

package ownership

import (
	"time"

	"golang.org/x/sys/unix"
)

// boottime reads CLOCK_BOOTTIME, which counts time spent suspended.
func boottime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// Kernels older than 2.6.39 only; the monotonic fallback of
		// other systems, with the same wall-clock cross-check.
		return time.Since(monotonicOrigin)
	}
	return time.Duration(ts.Nano())
}
