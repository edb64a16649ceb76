package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestScaleOutCrashRestart kills one of three instances with SIGKILL and
// starts its replacement two seconds later, as a container restart after
// an out-of-memory kill does: the replacement joins while the killed
// member is still in the group, and the rebalance waits until the killed
// member's session expires. The survivors keep their leases through it
// (they heartbeat while their JoinGroup waits) and keep writing their
// partitions; every record reaches the target once, in order per
// partition.
//
// A replacement that joins within about a second of the kill can still
// make the survivors' leases lapse just before the rebalance ends (their
// lease may not outlast the rebalance timeout counted from their last
// calm heartbeat); that pause, about a second and a half in trials, is
// documented in docs/scaling.md.
func TestScaleOutCrashRestart(t *testing.T) {
	f := newScaleFixture(t, 12)
	// With a group name of its own (ownership_group), as a target whose
	// ACLs allow kmirror only groups of a given prefix needs.
	start := func() *proc { return f.startWith(`topics: ["events"]` + "\nownership_group: kmirror-events-owners") }
	procs := []*proc{start(), start(), start()}
	waitFor(t, 90*time.Second, "three instances to share the partitions", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]bool{}
		for _, o := range owners {
			for _, i := range o {
				per[i] = true
			}
		}
		return len(owners) == int(f.partitions) && answered == 3 && len(per) == 3, describe(owners)
	})
	f.waitCaughtUp(time.Minute)
	groups, err := kadm.NewClient(f.p.dstCl).DescribeGroups(context.Background(), "kmirror-events-owners", "__kmirror.e2e.owners")
	if err != nil {
		t.Fatal(err)
	}
	if g := groups["kmirror-events-owners"]; len(g.Members) != 3 {
		t.Errorf("group kmirror-events-owners on the target: %d members (%v), want the 3 instances", len(g.Members), g.Err)
	}
	if g := groups["__kmirror.e2e.owners"]; len(g.Members) != 0 {
		t.Errorf("the default ownership group has %d members, want none with ownership_group set", len(g.Members))
	}
	owners, _ := ownership(procs)
	var survivorParts []int32
	for p, o := range owners {
		if o[0] != 1 {
			survivorParts = append(survivorParts, p)
		}
	}

	// Watch the survivors' partitions on the target: the longest time
	// one of them did not grow while the source did.
	var mu sync.Mutex
	longest := time.Duration(0)
	stopWatch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := map[int32]int64{}
		since := map[int32]time.Time{}
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ends := endOffsets(t, f.p.dstCl, f.topic)
			now := time.Now()
			for _, p := range survivorParts {
				if ends[p] != last[p] || since[p].IsZero() {
					last[p], since[p] = ends[p], now
					continue
				}
				mu.Lock()
				longest = max(longest, now.Sub(since[p]))
				mu.Unlock()
			}
		}
	}()

	procs[1].kill()
	killed := time.Now()
	time.Sleep(restartDelay)
	procs[1] = start()
	waitFor(t, ownershipTimeout+handOverSlack+30*time.Second, "three instances to share the partitions again", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]bool{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]] = true
		}
		return len(owners) == int(f.partitions) && answered == 3 && len(per) == 3, describe(owners)
	})
	t.Logf("SIGKILL of one instance, restarted %s later: three instances share the partitions again %.1fs after the kill", restartDelay, time.Since(killed).Seconds())
	f.waitCaughtUp(time.Minute)
	close(stopWatch)
	wg.Wait()
	lost := 0
	for _, pr := range []*proc{procs[0], procs[2]} {
		lost += strings.Count(pr.output(), "this instance lost the flow")
	}
	mu.Lock()
	pause := longest
	mu.Unlock()
	t.Logf("the survivors' partitions paused at most %.1fs; the survivors lost their lease %d times", pause.Seconds(), lost)
	if lost != 0 {
		t.Errorf("the survivors lost their lease %d times while the killed instance's replacement joined, want 0", lost)
	}
	if pause > ownershipTimeout/2 {
		t.Errorf("the survivors' partitions paused %s, want them written through the rebalance", pause)
	}
	f.stop()
	if f.prodErr != nil {
		t.Fatalf("producer: %v", f.prodErr)
	}
	f.waitCaughtUp(time.Minute)
	n, dups := f.check("end")
	t.Logf("end: %d records produced, %d on the target, every record present and in order per partition; %d written twice", f.produced.Load(), n, dups)
}

// restartDelay is how long after the kill the replacement starts: the
// restart of a container takes a second or more.
const restartDelay = 2 * time.Second
