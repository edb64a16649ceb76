package ownership

import "time"

// Clock reads the clocks a Lease is measured on. A lease's expiry is a
// Boottime reading; every look at the lease also compares how far each
// clock moved since the previous look, and a disagreement beyond the
// lease's slack ends the lease.
type Clock interface {
	// Now reads the wall clock. Only its wall reading is used.
	Now() time.Time
	// Boottime is the time since a fixed point (the boot), including
	// any time the system spent suspended, unlike Go's monotonic clock.
	Boottime() time.Duration
}

// SystemClock returns the machine's clocks: the wall clock, and on Linux
// CLOCK_BOOTTIME, which keeps counting while the system is suspended. On
// other systems Boottime falls back to Go's monotonic clock, which may
// stop during a suspension; there the wall-clock cross-check alone
// notices a suspension (the wall clock moves on, the monotonic clock does
// not).
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time          { return time.Now() }
func (systemClock) Boottime() time.Duration { return boottime() }

// monotonicOrigin is the fixed point of the monotonic fallback of
// boottime, read once when the program starts.
var monotonicOrigin = time.Now()
