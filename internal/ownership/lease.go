package ownership

import (
	"fmt"
	"sync"
	"time"
)

// Lease is the right to write a flow's data and progress. It ends when
// its holder stops heartbeating in time, is removed from the group, is
// assigned away or leaves, or when its clocks disagree; an ended lease
// never becomes valid again.
//
// Its expiry is a reading of the boot clock (Clock.Boottime), which,
// unlike Go's monotonic clock, keeps counting while the system is
// suspended: a holder suspended past its expiry finds the lease ended
// when it resumes. Every look at the lease (Allow, a renewal, and a timer
// at least every slack) also measures how far the boot clock and the wall
// clock moved since the previous look. If they disagree by more than the
// slack, one of them jumped (a VM paused by its hypervisor whose clock was
// set right on resume, a suspension where the boot clock is the monotonic
// fallback, a wall clock stepped by hand or by NTP), the expiry can no
// longer be trusted, and the lease ends.
type Lease struct {
	clock Clock
	slack time.Duration

	mu         sync.Mutex
	expiry     time.Duration // a Boottime reading
	boot       time.Duration // the boot clock at the previous look
	wall       time.Time     // the wall clock at the previous look
	generation int32
	memberID   string // the holder's member ID in generation
	ended      bool
	reason     string
	lost       chan struct{}
	timer      *time.Timer // looks at the lease at least every slack
	hooks      map[uint64]func()
	nextHook   uint64
}

// newLease returns a lease of member memberID in generation gen that ends at expiry on
// clock's boot clock, whose clocks may disagree by up to slack between
// two looks.
func newLease(clock Clock, slack time.Duration, gen int32, memberID string, expiry time.Duration) *Lease {
	l := &Lease{clock: clock, slack: slack, expiry: expiry, generation: gen, memberID: memberID,
		lost: make(chan struct{}), hooks: map[uint64]func(){}}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.boot, l.wall = l.read()
	l.timer = time.AfterFunc(l.nextLookLocked(), l.check)
	return l
}

// read reads both clocks, the wall clock without Go's monotonic reading.
func (l *Lease) read() (time.Duration, time.Time) {
	boot := l.clock.Boottime()
	return boot, l.clock.Now().Round(0)
}

// lookLocked reads the clocks and returns why the lease must end, or ""
// while it is valid.
func (l *Lease) lookLocked() string {
	boot, wall := l.read()
	dBoot, dWall := boot-l.boot, wall.Sub(l.wall)
	l.boot, l.wall = boot, wall
	if skew := dWall - dBoot; dBoot < 0 || skew > l.slack || skew < -l.slack {
		return fmt.Sprintf("clock jump: the wall clock moved %s while the boot clock moved %s (slack %s)", dWall, dBoot, l.slack)
	}
	if boot >= l.expiry {
		return "no heartbeat accepted in time"
	}
	return ""
}

// nextLookLocked is when the timer looks again: at the expiry, and at
// least every slack so that a clock jump ends the lease soon.
func (l *Lease) nextLookLocked() time.Duration {
	return max(min(l.expiry-l.boot, l.slack), 0)
}

// check is the timer's look.
func (l *Lease) check() {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	if reason := l.lookLocked(); reason != "" {
		hooks := l.endLocked(reason)
		l.mu.Unlock()
		l.finish(hooks)
		return
	}
	l.timer.Reset(l.nextLookLocked())
	l.mu.Unlock()
}

// Allow returns nil while the lease is valid, else ErrLeaseLost. Every
// write of the holder to the target asks it first.
func (l *Lease) Allow() error {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return ErrLeaseLost
	}
	reason := l.lookLocked()
	if reason == "" {
		l.mu.Unlock()
		return nil
	}
	hooks := l.endLocked(reason)
	l.mu.Unlock()
	l.finish(hooks)
	return ErrLeaseLost
}

// Lost is closed when the lease has ended, after the functions given to
// OnEnd returned.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// OnEnd calls f once when the lease ends, before Lost is closed, or at
// once if it has ended; remove forgets f. The target clients abort their
// connections with it. f must not wait for the lease.
func (l *Lease) OnEnd(f func()) (remove func()) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		f()
		return func() {}
	}
	id := l.nextHook
	l.nextHook++
	l.hooks[id] = f
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.hooks, id)
		l.mu.Unlock()
	}
}

// Generation is the group generation the lease was last confirmed in.
func (l *Lease) Generation() int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.generation
}

// endReason says why the lease ended, or "" if it did not.
func (l *Lease) endReason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reason
}

// Member returns the member ID and the group generation the lease was
// last confirmed in, whether or not it is still valid: what an offset
// commit of the holder carries, so that the group coordinator, not this
// process, decides whether the holder is still a member of the current
// generation (exactly-once fencing).
func (l *Lease) Member() (memberID string, generation int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.memberID, l.generation
}

func (l *Lease) setGeneration(gen int32, memberID string) {
	l.mu.Lock()
	l.generation, l.memberID = gen, memberID
	l.mu.Unlock()
}

// renew moves the expiry of a valid lease to expiry (a Boottime
// reading) if that is later.
func (l *Lease) renew(expiry time.Duration) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	if reason := l.lookLocked(); reason != "" {
		hooks := l.endLocked(reason)
		l.mu.Unlock()
		l.finish(hooks)
		return
	}
	if expiry > l.expiry {
		l.expiry = expiry
	}
	l.mu.Unlock()
}

// End ends the lease now (a release that did not drain): every write it
// gates is refused from then on, its hooks run and Lost is closed. The
// member stops claiming its partitions at its next look at the lease.
func (l *Lease) End() { l.end("ended by its holder") }

func (l *Lease) end(reason string) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	hooks := l.endLocked(reason)
	l.mu.Unlock()
	l.finish(hooks)
}

// endLocked marks the lease ended and returns the hooks finish runs.
func (l *Lease) endLocked(reason string) []func() {
	l.ended, l.reason = true, reason
	l.timer.Stop()
	hooks := make([]func(), 0, len(l.hooks))
	for _, f := range l.hooks {
		hooks = append(hooks, f)
	}
	l.hooks = nil
	return hooks
}

// finish runs the hooks of a lease that just ended, then closes Lost.
func (l *Lease) finish(hooks []func()) {
	for _, f := range hooks {
		f()
	}
	close(l.lost)
}
