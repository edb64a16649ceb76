package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// scaleFixture is a pair of clusters with one topic, a steady producer and
// a scale-out flow any number of processes run.
type scaleFixture struct {
	t          *testing.T
	p          *pair
	topic      string
	partitions int32
	produced   atomic.Int64
	stop       func()
	prodErr    error
}

func newScaleFixture(t *testing.T, partitions int32) *scaleFixture {
	p := startPair(t)
	f := &scaleFixture{t: t, p: p, topic: "events", partitions: partitions}
	createTopic(t, p.srcCl, f.topic, partitions, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seq := make([]int, partitions)
		for n := 0; ctx.Err() == nil; n++ {
			recs := make([]*kgo.Record, 24)
			for i := range recs {
				part := (n*len(recs) + i) % int(partitions)
				recs[i] = &kgo.Record{Topic: f.topic, Partition: int32(part), Key: fmt.Appendf(nil, "k%d", seq[part]),
					Value: fmt.Appendf(nil, "%d:%d", part, seq[part])}
				seq[part]++
			}
			pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.srcCl.ProduceSync(pctx, recs...).FirstErr()
			pcancel()
			if err != nil {
				f.prodErr = err
				return
			}
			f.produced.Add(int64(len(recs)))
			time.Sleep(25 * time.Millisecond)
		}
	}()
	f.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(f.stop)
	return f
}

func (f *scaleFixture) start() *proc { return f.startWith(`topics: ["events"]`) }

// startWith starts a process of the flow with extra flow keys (at least
// topics).
func (f *scaleFixture) startWith(keys string) *proc {
	addr := freeAddr(f.t)
	return startKmirror(f.t, writeConfig(f.t, f.p.flowConfig(addr, keys+`
topic_naming: identity
topic_refresh_interval: 500ms
progress_interval: 200ms
scale_out: true
`)), addr)
}

type apiShare struct {
	Instance   string `json:"instance"`
	PID        int    `json:"pid"`
	Partitions []struct {
		T string `json:"t"`
		P int32  `json:"p"`
	} `json:"partitions"`
	Revoking []struct {
		T string `json:"t"`
		P int32  `json:"p"`
	} `json:"revoking"`
	Released bool `json:"released"`
}

// groupView reads what a process says of the flow's group: the members
// and what each owns or hands over, or ok false if it cannot say.
func groupView(pr *proc) (members []apiShare, ok bool) {
	code, body, err := pr.get("/api/flows")
	if err != nil || code != 200 {
		return nil, false
	}
	var flows []struct {
		Owner *struct {
			Holding bool       `json:"holding"`
			Members []apiShare `json:"members"`
		} `json:"owner"`
	}
	if json.Unmarshal([]byte(body), &flows) != nil || len(flows) != 1 || flows[0].Owner == nil || !flows[0].Owner.Holding {
		return nil, false
	}
	return flows[0].Owner.Members, true
}

// owned returns the partitions the process says it may write (those it
// hands over included until it says it released them), or ok false if it
// cannot say.
func owned(pr *proc) (parts []int32, ok bool) {
	members, ok := groupView(pr)
	if !ok {
		return nil, false
	}
	pid := pr.cmd.Process.Pid
	for _, m := range members {
		if m.PID != pid {
			continue
		}
		for _, p := range m.Partitions {
			parts = append(parts, p.P)
		}
		if !m.Released {
			for _, p := range m.Revoking {
				parts = append(parts, p.P)
			}
		}
		return parts, true
	}
	return nil, true
}

// ownership samples every process at once: which processes say they may
// write each partition.
func ownership(procs []*proc) (owners map[int32][]int, answered int) {
	owners = map[int32][]int{}
	res := make([][]int32, len(procs))
	oks := make([]bool, len(procs))
	var wg sync.WaitGroup
	for i, pr := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], oks[i] = owned(pr)
		}()
	}
	wg.Wait()
	for i := range procs {
		if oks[i] {
			answered++
		}
		for _, p := range res[i] {
			owners[p] = append(owners[p], i)
		}
	}
	return owners, answered
}

// oneOwnerEach checks a process's view of the group: each of the flow's n
// partitions is listed under exactly one member (owned, or being handed
// over to the member the next generation names). It returns "" or what is
// wrong.
func oneOwnerEach(members []apiShare, n int32) string {
	under := map[int32][]string{}
	for _, m := range members {
		for _, p := range m.Partitions {
			under[p.P] = append(under[p.P], m.Instance)
		}
		for _, p := range m.Revoking {
			under[p.P] = append(under[p.P], m.Instance+" (handing over)")
		}
	}
	var bad []string
	for p := range n {
		if len(under[p]) != 1 {
			bad = append(bad, fmt.Sprintf("partition %d under %v", p, under[p]))
		}
	}
	return strings.Join(bad, "; ")
}

// check reads both topics and returns the duplicates on the target; it
// fails the test on a lost record or a record out of order.
func (f *scaleFixture) check(when string) (records, dups int) {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dst, err := verify.ReadAll(ctx, f.p.dstCl, f.topic)
	if err != nil {
		t.Fatal(err)
	}
	src, err := verify.ReadAll(ctx, f.p.srcCl, f.topic)
	if err != nil {
		t.Fatal(err)
	}
	for part := range f.partitions {
		next := 0 // index of the next source record not yet seen
		for i, r := range dst[part] {
			records++
			if next < len(src[part]) && bytes.Equal(r.Value, src[part][next].Value) {
				next++
				continue
			}
			// A record seen before (written again after a takeover).
			seen := false
			for k := next - 1; k >= 0; k-- {
				if bytes.Equal(r.Value, src[part][k].Value) {
					seen = true
					break
				}
			}
			if !seen {
				t.Fatalf("%s: partition %d, target offset %d: %q is neither the next source record nor an earlier one (lost or out of order)", when, part, i, r.Value)
			}
			dups++
		}
		if next != len(src[part]) {
			t.Fatalf("%s: partition %d: target holds the first %d of %d source records", when, part, next, len(src[part]))
		}
	}
	return records, dups
}

// waitCaughtUp waits until the target holds every source record.
func (f *scaleFixture) waitCaughtUp(timeout time.Duration) {
	f.t.Helper()
	waitFor(f.t, timeout, "the target to hold every source record", func() (bool, string) {
		src := sum(endOffsets(f.t, f.p.srcCl, f.topic))
		dst := sum(endOffsets(f.t, f.p.dstCl, f.topic))
		return dst >= src, fmt.Sprintf("source %d, target %d", src, dst)
	})
}

func describe(owners map[int32][]int) string {
	keys := make([]int, 0, len(owners))
	for p := range owners {
		keys = append(keys, int(p))
	}
	sort.Ints(keys)
	s := ""
	for _, p := range keys {
		s += strconv.Itoa(p) + fmt.Sprint(owners[int32(p)]) + " "
	}
	return s
}

// TestScaleOutThreeInstances splits a 12-partition flow over three
// processes under traffic, then SIGKILLs one: its partitions are taken over
// and the target ends with every record, in order per partition; the
// records written twice after the kill are counted.
func TestScaleOutThreeInstances(t *testing.T) {
	t.Parallel() // the takeover time is printed, not asserted
	f := newScaleFixture(t, 12)
	procs := []*proc{f.start(), f.start(), f.start()}
	started := time.Now()
	waitFor(t, 90*time.Second, "every instance to own partitions, each partition exactly one", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]int{}
		for _, o := range owners {
			for _, i := range o {
				per[i]++
			}
		}
		if len(owners) != int(f.partitions) || answered != 3 || len(per) != 3 {
			return false, describe(owners)
		}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
		}
		return true, ""
	})
	owners, _ := ownership(procs)
	t.Logf("three instances own 12 partitions 4/4/4 %.1fs after start: %s", time.Since(started).Seconds(), describe(owners))
	var victim []int32
	for p, o := range owners {
		if o[0] == 1 {
			victim = append(victim, p)
		}
	}
	f.waitCaughtUp(time.Minute)

	procs[1].kill()
	killed := time.Now()
	rest := []*proc{procs[0], procs[2]}
	took := waitFor(t, ownershipTimeout+handOverSlack+30*time.Second, "the killed instance's partitions to be owned again", func() (bool, string) {
		owners, _ := ownership(rest)
		for _, p := range victim {
			if len(owners[p]) != 1 {
				return false, describe(owners)
			}
		}
		return len(owners) == int(f.partitions), describe(owners)
	})
	t.Logf("SIGKILL of one instance (%d partitions): taken over %.1fs after the kill (ownership_timeout %s)", len(victim), took.Seconds(), ownershipTimeout)
	waitFor(t, time.Minute, "writes to resume on the taken-over partitions", func() (bool, string) {
		ends := endOffsets(t, f.p.dstCl, f.topic)
		src := endOffsets(t, f.p.srcCl, f.topic)
		for _, p := range victim {
			if ends[p] < src[p]-200 {
				return false, fmt.Sprintf("partition %d: target %d, source %d", p, ends[p], src[p])
			}
		}
		return true, ""
	})
	t.Logf("the taken-over partitions were written again %.1fs after the kill", time.Since(killed).Seconds())
	f.stop()
	if f.prodErr != nil {
		t.Fatalf("producer: %v", f.prodErr)
	}
	f.waitCaughtUp(time.Minute)
	n, dups := f.check("end")
	t.Logf("end: %d records produced, %d on the target, every record present and in order per partition; %d written twice after the SIGKILL",
		f.produced.Load(), n, dups)
	if dups > 2000 {
		t.Errorf("%d duplicates after one SIGKILL", dups)
	}
}

// TestScaleUpDownUnderTraffic goes from one instance to three and back to
// one with SIGTERM under traffic: nothing is lost or written twice, no
// partition is ever written by two instances at a sample of /api/flows,
// and in every instance's view of the group every partition has exactly
// one owner at every sample.
func TestScaleUpDownUnderTraffic(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	f := newScaleFixture(t, 12)
	procs := []*proc{f.start()}
	var mu sync.Mutex
	live := func() []*proc {
		mu.Lock()
		defer mu.Unlock()
		return append([]*proc(nil), procs...)
	}
	// The sampler, from the moment one instance owns every partition:
	// no partition may be written by two instances (what each says of
	// itself), and in every instance's view of the group each partition
	// has exactly one owner.
	samplerCtx, stopSampler := context.WithCancel(context.Background())
	var samples, overlaps, views, badViews atomic.Int64
	var sampleWG sync.WaitGroup
	var overlapSeen, badViewSeen atomic.Value
	sample := func() {
		ps := live()
		owners, _ := ownership(ps)
		samples.Add(1)
		for _, o := range owners {
			if len(o) > 1 {
				overlaps.Add(1)
				overlapSeen.Store(describe(owners))
				break
			}
		}
		for i, pr := range ps {
			members, ok := groupView(pr)
			if !ok {
				continue
			}
			views.Add(1)
			if bad := oneOwnerEach(members, f.partitions); bad != "" {
				badViews.Add(1)
				badViewSeen.Store(fmt.Sprintf("instance %d: %s", i, bad))
			}
		}
	}
	allOwnedBy := func(n int) func() (bool, string) {
		return func() (bool, string) {
			ps := live()
			owners, answered := ownership(ps)
			per := map[int]int{}
			for _, o := range owners {
				for _, i := range o {
					per[i]++
				}
			}
			return len(owners) == int(f.partitions) && answered == len(ps) && len(per) == n, describe(owners)
		}
	}
	waitFor(t, 90*time.Second, "one instance to own all 12 partitions", allOwnedBy(1))
	sampleWG.Add(1)
	go func() {
		defer sampleWG.Done()
		for samplerCtx.Err() == nil {
			sample()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	f.waitCaughtUp(time.Minute)

	mu.Lock()
	procs = append(procs, f.start(), f.start())
	mu.Unlock()
	took := waitFor(t, 90*time.Second, "three instances to share the partitions", allOwnedBy(3))
	t.Logf("scale up 1 → 3: partitions spread over three instances %.1fs after the start of two more", took.Seconds())
	f.waitCaughtUp(time.Minute)

	for _, i := range []int{0, 1} {
		down := time.Now()
		mu.Lock()
		victim := procs[0]
		procs = procs[1:]
		mu.Unlock()
		victim.stop()
		stopped := time.Since(down)
		took := waitFor(t, 60*time.Second, "the remaining instances to own every partition", allOwnedBy(2-i))
		t.Logf("scale down by SIGTERM: the instance exited %.1fs after SIGTERM; every partition owned again %.1fs after SIGTERM",
			stopped.Seconds(), stopped.Seconds()+took.Seconds())
	}
	f.stop()
	if f.prodErr != nil {
		t.Fatalf("producer: %v", f.prodErr)
	}
	f.waitCaughtUp(time.Minute)
	stopSampler()
	sampleWG.Wait()
	n, dups := f.check("end")
	t.Logf("end: %d records produced, %d on the target, %d written twice; %d ownership samples, %d with a partition written by two instances; %d views of the group, %d without exactly one owner for each partition",
		f.produced.Load(), n, dups, samples.Load(), overlaps.Load(), views.Load(), badViews.Load())
	if dups != 0 {
		t.Errorf("%d records written twice across clean hand-overs, want 0", dups)
	}
	if overlaps.Load() != 0 {
		t.Errorf("a partition was owned by two instances at once: %v", overlapSeen.Load())
	}
	if badViews.Load() != 0 {
		t.Errorf("%d views of the group had a partition without exactly one owner, for example %v", badViews.Load(), badViewSeen.Load())
	}
	if views.Load() < samples.Load() {
		t.Errorf("only %d views of the group in %d samples", views.Load(), samples.Load())
	}
}

// isElected reports whether the process says it runs the flow-wide work,
// or ok false if it cannot say.
func isElected(pr *proc) (elected, ok bool) {
	code, body, err := pr.get("/api/flows")
	if err != nil || code != 200 {
		return false, false
	}
	var flows []struct {
		Owner *struct {
			Holding bool `json:"holding"`
			Elected bool `json:"elected"`
		} `json:"owner"`
	}
	if json.Unmarshal([]byte(body), &flows) != nil || len(flows) != 1 || flows[0].Owner == nil {
		return false, false
	}
	return flows[0].Owner.Holding && flows[0].Owner.Elected, true
}

// electedIndex waits until every process owns partitions, each partition
// exactly one, and exactly one process is elected; it returns its index.
func (f *scaleFixture) electedIndex(procs []*proc) int {
	f.t.Helper()
	which := -1
	waitFor(f.t, 90*time.Second, "every instance to own partitions and one to be elected", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]int{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]]++
		}
		if len(owners) != int(f.partitions) || answered != len(procs) || len(per) != len(procs) {
			return false, describe(owners)
		}
		which = -1
		for i, pr := range procs {
			if e, _ := isElected(pr); e {
				if which >= 0 {
					return false, "two instances elected"
				}
				which = i
			}
		}
		return which >= 0, describe(owners) + "; no instance elected"
	})
	return which
}

// TestScaleOutElectedInstanceKilled SIGKILLs the instance that runs the
// flow-wide work: another one is elected, and topic sync and consumer
// group offset sync go on (a topic created and a group commit made on the
// source after the kill reach the target).
func TestScaleOutElectedInstanceKilled(t *testing.T) {
	t.Parallel() // the failover time is printed, not asserted
	f := newScaleFixture(t, 6)
	keys := `topics: ["events", "late-.*"]
sync_interval: 1s
ownership_timeout: 6s`
	procs := []*proc{f.startWith(keys), f.startWith(keys)}
	started := time.Now()
	e := f.electedIndex(procs)
	t.Logf("two instances own 6 partitions 3/3, instance %d elected, %.1fs after start", e, time.Since(started).Seconds())
	f.waitCaughtUp(time.Minute)

	procs[e].kill()
	killed := time.Now()
	survivor := procs[1-e]
	took := waitFor(t, 60*time.Second, "the surviving instance to be elected", func() (bool, string) {
		el, ok := isElected(survivor)
		return el, fmt.Sprintf("elected %v (answered %v)", el, ok)
	})
	t.Logf("SIGKILL of the elected instance: another instance elected %.1fs after the kill (ownership_timeout 6s)", took.Seconds())
	waitFor(t, 30*time.Second, "the survivor to own every partition", func() (bool, string) {
		owners, _ := ownership([]*proc{survivor})
		return len(owners) == int(f.partitions), describe(owners)
	})
	t.Logf("the survivor owns all 6 partitions %.1fs after the kill", time.Since(killed).Seconds())

	// (a) Topic sync goes on: a topic created now is created and copied.
	createTopic(t, f.p.srcCl, "late-1", 2, nil)
	created := time.Now()
	var recs []*kgo.Record
	for i := range 100 {
		recs = append(recs, &kgo.Record{Topic: "late-1", Partition: int32(i % 2), Value: fmt.Appendf(nil, "late-%d", i)})
	}
	produce(t, f.p.srcCl, recs)
	waitFor(t, 60*time.Second, "late-1 to be created on the target and copied", func() (bool, string) {
		ends := endOffsets(t, f.p.dstCl, "late-1")
		return len(ends) == 2 && sum(ends) == 100, fmt.Sprintf("target late-1: %v", ends)
	})
	t.Logf("topic late-1 created on the source after the failover: on the target with its 100 records %.1fs later", time.Since(created).Seconds())

	// (b) Group offset sync goes on: a commit made now on the source is
	// translated to the target.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const group = "after-failover"
	srcEnds := endOffsets(t, f.p.srcCl, f.topic)
	want := kadm.Offsets{}
	for p, end := range srcEnds {
		want.Add(kadm.Offset{Topic: f.topic, Partition: p, At: end / 2, LeaderEpoch: -1})
	}
	want.Add(kadm.Offset{Topic: "late-1", Partition: 0, At: 30, LeaderEpoch: -1})
	want.Add(kadm.Offset{Topic: "late-1", Partition: 1, At: 20, LeaderEpoch: -1})
	if _, err := kadm.NewClient(f.p.srcCl).CommitOffsets(ctx, group, want); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	dstAdm := kadm.NewClient(f.p.dstCl)
	waitFor(t, 60*time.Second, "the group's offsets translated on the target", func() (bool, string) {
		got, err := dstAdm.FetchOffsets(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		n, state := 0, ""
		want.Each(func(o kadm.Offset) {
			r, ok := got.Lookup(o.Topic, o.Partition)
			// Identity naming, and the target partitions hold the source
			// records from offset 0 without gaps (checked below), so the
			// translation is the same offset.
			if ok && r.Err == nil && r.At == o.At {
				n++
			} else {
				state += fmt.Sprintf("%s/%d: want %d, have %d; ", o.Topic, o.Partition, o.At, r.At)
			}
		})
		return n == 8, state
	})
	t.Logf("group %s committed on the source after the failover: translated on the target (8 partitions, exact) %.1fs later",
		group, time.Since(committed).Seconds())

	f.stop()
	if f.prodErr != nil {
		t.Fatalf("producer: %v", f.prodErr)
	}
	f.waitCaughtUp(time.Minute)
	n, dups := f.check("end")
	t.Logf("end: %d records produced, %d on the target, in order per partition; %d written twice after the SIGKILL", f.produced.Load(), n, dups)
	if dups != 0 {
		t.Errorf("%d records written twice after the SIGKILL of the elected instance; the group translation above assumed none", dups)
	}
}

// TestScaleOutZombieFenced pauses one of three instances (SIGSTOP) under
// steady traffic until the others took its partitions over and wrote them,
// then resumes it (SIGCONT): it must write nothing under its old lease (no
// record on the target twice or out of order) and log that it lost the
// lease, then rejoin.
func TestScaleOutZombieFenced(t *testing.T) {
	t.Parallel() // the takeover time is printed, not asserted
	f := newScaleFixture(t, 6)
	keys := `topics: ["events"]
ownership_timeout: 6s`
	procs := []*proc{f.startWith(keys), f.startWith(keys), f.startWith(keys)}
	e := f.electedIndex(procs)
	z := (e + 1) % 3 // the zombie: one that is not elected
	zombie := procs[z]
	var rest []*proc
	for i, pr := range procs {
		if i != z {
			rest = append(rest, pr)
		}
	}
	zparts, _ := owned(zombie)
	f.waitCaughtUp(time.Minute)

	pid := zombie.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	took := waitFor(t, 60*time.Second, "the paused instance's partitions to be owned by the others", func() (bool, string) {
		owners, _ := ownership(rest)
		return len(owners) == int(f.partitions), describe(owners)
	})
	t.Logf("SIGSTOP of instance %d (partitions %v): the others own them %.1fs later (ownership_timeout 6s)", z, zparts, took.Seconds())
	waitFor(t, 60*time.Second, "writes to resume on the paused instance's partitions", func() (bool, string) {
		dst, src := endOffsets(t, f.p.dstCl, f.topic), endOffsets(t, f.p.srcCl, f.topic)
		for _, p := range zparts {
			if dst[p] < src[p]-100 {
				return false, fmt.Sprintf("partition %d: target %d, source %d", p, dst[p], src[p])
			}
		}
		return true, ""
	})
	before := sum(endOffsets(t, f.p.dstCl, f.topic))
	t.Logf("the others wrote the taken-over partitions %.1fs after SIGSTOP (target holds %d records)", time.Since(stopped).Seconds(), before)

	resume()
	cont := time.Now()
	waitFor(t, 30*time.Second, "the resumed instance to log that it lost its lease", func() (bool, string) {
		return strings.Contains(zombie.output(), "this instance lost the flow; writes stopped"), "not logged yet"
	})
	t.Logf("the resumed instance logged that it lost the flow %.1fs after SIGCONT", time.Since(cont).Seconds())
	took = waitFor(t, 60*time.Second, "the resumed instance to own partitions again", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]int{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]]++
		}
		return answered == 3 && len(per) == 3 && len(owners) == int(f.partitions), describe(owners)
	})
	t.Logf("the resumed instance rejoined and owns partitions again %.1fs after SIGCONT", took.Seconds())

	f.stop()
	if f.prodErr != nil {
		t.Fatalf("producer: %v", f.prodErr)
	}
	f.waitCaughtUp(time.Minute)
	n, dups := f.check("end")
	var lines []string
	for _, l := range strings.Split(zombie.output(), "\n") {
		if strings.Contains(l, "lost the flow") || strings.Contains(l, "writes stopped") || strings.Contains(l, "lease") {
			lines = append(lines, l)
		}
	}
	t.Logf("end: %d records produced, %d on the target, every record present and in order per partition, %d written twice; the resumed instance's log:\n%s",
		f.produced.Load(), n, dups, strings.Join(lines, "\n"))
	if dups != 0 {
		t.Errorf("%d records written twice after the paused instance resumed, want 0", dups)
	}
}
