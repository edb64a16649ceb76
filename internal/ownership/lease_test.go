package ownership

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose boot and wall clocks the test moves.
type fakeClock struct {
	mu   sync.Mutex
	boot time.Duration
	wall time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{boot: time.Hour, wall: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *fakeClock) Boottime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot
}

// advance moves the boot clock by boot and the wall clock by wall at once.
func (c *fakeClock) advance(boot, wall time.Duration) {
	c.mu.Lock()
	c.boot += boot
	c.wall = c.wall.Add(wall)
	c.mu.Unlock()
}

func lostNow(l *Lease) bool {
	select {
	case <-l.Lost():
		return true
	default:
		return false
	}
}

// The lease parameters of a 10 s ownership timeout.
const (
	testWindow = 10 * time.Second * 2 / 3
	testSlack  = 10 * time.Second / 20
)

// TestLeaseNormalProgressKeepsIt: clocks that move together, with a
// little drift, and heartbeats renewing the lease keep it valid for many
// windows; without renewals it ends at its expiry and never comes back.
func TestLeaseNormalProgressKeepsIt(t *testing.T) {
	c := newFakeClock()
	l := newLease(c, testSlack, 1, "m1", c.Boottime()+testWindow)
	defer l.end("test over")
	for i := range 600 { // a minute in steps of 100 ms, NTP-like drift of 0.1%
		c.advance(100*time.Millisecond, 100*time.Millisecond+100*time.Microsecond)
		if err := l.Allow(); err != nil {
			t.Fatalf("step %d: %v (%s)", i, err, l.endReason())
		}
		if i%10 == 0 { // a heartbeat every second
			l.renew(c.Boottime() + testWindow)
		}
	}
	l.renew(c.Boottime() + testWindow)
	c.advance(testWindow-time.Millisecond, testWindow-time.Millisecond)
	if err := l.Allow(); err != nil {
		t.Fatalf("just before the expiry: %v", err)
	}
	c.advance(2*time.Millisecond, 2*time.Millisecond)
	if err := l.Allow(); !errors.Is(err, ErrLeaseLost) || !lostNow(l) {
		t.Fatalf("after the expiry: Allow = %v, lost %v", err, lostNow(l))
	}
	l.renew(c.Boottime() + time.Hour)
	if err := l.Allow(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Allow after a late renewal = %v, want ErrLeaseLost", err)
	}
}

// TestLeaseSuspendEndsIt: a system suspended past the expiry (the boot
// clock and the wall clock move on, Go's monotonic clock does not: the
// test takes milliseconds) finds its lease ended at the first look.
func TestLeaseSuspendEndsIt(t *testing.T) {
	c := newFakeClock()
	l := newLease(c, testSlack, 1, "m1", c.Boottime()+testWindow)
	defer l.end("test over")
	c.advance(time.Second, time.Second)
	if err := l.Allow(); err != nil {
		t.Fatalf("before the suspension: %v", err)
	}
	c.advance(30*time.Second, 30*time.Second) // suspended for 30 s
	if err := l.Allow(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("after a suspension past the expiry: Allow = %v, want ErrLeaseLost", err)
	}
	// A renewal from a heartbeat sent before the suspension and answered
	// after it cannot revive it.
	l.renew(c.Boottime() - 30*time.Second + testWindow)
	if err := l.Allow(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("after a renewal: Allow = %v", err)
	}
}

// TestLeaseClockJumpEndsIt: the wall clock jumping against the boot clock
// by more than the slack, either way, ends the lease even before its
// expiry; so does a boot clock that stood still while the wall clock was
// set forward (a VM paused by its hypervisor, its clock set right on
// resume).
func TestLeaseClockJumpEndsIt(t *testing.T) {
	for _, tc := range []struct {
		name       string
		boot, wall time.Duration
		ends       bool
	}{
		{"wall forward", 10 * time.Millisecond, testSlack + 10*time.Millisecond + time.Millisecond, true},
		{"wall back", 10 * time.Millisecond, -testSlack, true},
		{"hypervisor pause", 0, 5 * time.Second, true},
		{"boot clock only (suspension without a wall clock)", 2 * time.Second, 0, true},
		{"within the slack", 10 * time.Millisecond, 10*time.Millisecond + testSlack - time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			l := newLease(c, testSlack, 1, "m1", c.Boottime()+testWindow)
			defer l.end("test over")
			c.advance(tc.boot, tc.wall)
			err := l.Allow()
			if !tc.ends {
				if err != nil {
					t.Fatalf("Allow = %v (%s), want nil", err, l.endReason())
				}
				return
			}
			if !errors.Is(err, ErrLeaseLost) || !lostNow(l) {
				t.Fatalf("Allow = %v, lost %v; want ErrLeaseLost", err, lostNow(l))
			}
			if r := l.endReason(); !strings.Contains(r, "clock jump") {
				t.Fatalf("reason %q, want a clock jump", r)
			}
		})
	}
}

// TestLeaseTimerEndsIt: nobody asks the lease, yet its timer ends it
// within about the slack of a clock jump or of its expiry passing on the
// boot clock (a suspension), and the OnEnd hooks the gate aborts its
// connections with run.
func TestLeaseTimerEndsIt(t *testing.T) {
	for _, tc := range []struct {
		name       string
		boot, wall time.Duration
	}{
		{"wall clock jump", 0, time.Minute},
		{"suspended past the expiry", 2 * time.Hour, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClock()
			slack := 20 * time.Millisecond
			l := newLease(c, slack, 1, "m1", c.Boottime()+time.Hour)
			defer l.end("test over")
			hooked := make(chan struct{})
			l.OnEnd(func() { close(hooked) })
			c.advance(tc.boot, tc.wall)
			select {
			case <-l.Lost():
			case <-time.After(5 * time.Second):
				t.Fatal("the lease's timer did not end it")
			}
			select {
			case <-hooked:
			default:
				t.Fatal("Lost closed before the hooks ran")
			}
		})
	}
}

// TestLeaseExpiresOnItsTimer: with real clocks and no renewal, the lease
// ends by itself at its expiry and never comes back.
func TestLeaseExpiresOnItsTimer(t *testing.T) {
	c := SystemClock()
	l := newLease(c, 50*time.Millisecond, 1, "m1", c.Boottime()+100*time.Millisecond)
	if err := l.Allow(); err != nil {
		t.Fatalf("fresh lease: %v", err)
	}
	l.renew(c.Boottime() + 200*time.Millisecond)
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("lease not lost after its expiry")
	}
	if err := l.Allow(); err != ErrLeaseLost {
		t.Fatalf("Allow after expiry = %v, want ErrLeaseLost", err)
	}
	l.renew(c.Boottime() + time.Hour)
	if err := l.Allow(); err != ErrLeaseLost {
		t.Fatalf("Allow after a late renewal = %v, want ErrLeaseLost", err)
	}
}

// TestLeaseOnEnd: hooks run once, before Lost is closed; a removed hook
// does not run; a hook added after the end runs at once.
func TestLeaseOnEnd(t *testing.T) {
	c := newFakeClock()
	l := newLease(c, testSlack, 1, "m1", c.Boottime()+testWindow)
	var calls, removed int
	var lostBefore bool
	l.OnEnd(func() { calls++; lostBefore = lostNow(l) })
	l.OnEnd(func() { removed++ })()
	l.end("test")
	l.end("again")
	if l.Allow() == nil || calls != 1 || removed != 0 || lostBefore || !lostNow(l) {
		t.Fatalf("calls %d, removed hook calls %d, Lost closed before the hook %v, after %v", calls, removed, lostBefore, lostNow(l))
	}
	late := false
	l.OnEnd(func() { late = true })
	if !late {
		t.Fatal("a hook added after the end did not run")
	}
}

// TestSystemClockBoottime: the boot clock moves with the monotonic clock
// while the system is not suspended.
func TestSystemClockBoottime(t *testing.T) {
	c := SystemClock()
	b0, m0 := c.Boottime(), time.Now()
	time.Sleep(20 * time.Millisecond)
	db, dm := c.Boottime()-b0, time.Since(m0)
	if db < 20*time.Millisecond || db-dm > 5*time.Millisecond || dm-db > 5*time.Millisecond {
		t.Fatalf("boot clock moved %s while the monotonic clock moved %s", db, dm)
	}
}
