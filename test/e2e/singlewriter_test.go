package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// ownershipTimeout is the documented default of ownership_timeout, which
// the test leaves unset.
const ownershipTimeout = 10 * time.Second

// handOverSlack is what the documentation allows on top of
// ownership_timeout for a successor to write after the holder died: a
// heartbeat interval, the rejoin, reading the progress and checking the
// target after an unclean stop.
const handOverSlack = 10 * time.Second

// TestSingleWriter runs several `kmirror run` processes on the same flow
// with scale_out: false (one copies the whole flow, the others are warm
// standbys) under steady traffic: only one writes at a time, the others wait and
// say who holds the flow, and each way the holder goes (SIGKILL, SIGTERM,
// SIGSTOP then SIGCONT) hands the flow over without losing, repeating or
// reordering a record.
func TestSingleWriter(t *testing.T) {
	p := startPair(t)
	const (
		topic      = "events"
		partitions = 3
	)
	createTopic(t, p.srcCl, topic, partitions, nil)

	// A steady producer: "<partition>:<seq>" values, a small batch every
	// 20 ms, until the test stops it.
	var produced atomic.Int64
	prodCtx, stopProducing := context.WithCancel(context.Background())
	var prodWG sync.WaitGroup
	var prodErr error
	prodWG.Add(1)
	go func() {
		defer prodWG.Done()
		seq := make([]int, partitions)
		for n := 0; prodCtx.Err() == nil; n++ {
			recs := make([]*kgo.Record, 30)
			for i := range recs {
				part := (n*len(recs) + i) % partitions
				recs[i] = &kgo.Record{Topic: topic, Partition: int32(part), Key: fmt.Appendf(nil, "k%d", seq[part]),
					Value: fmt.Appendf(nil, "%d:%d:%s", part, seq[part], strings.Repeat("v", 50))}
				seq[part]++
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.srcCl.ProduceSync(ctx, recs...).FirstErr()
			cancel()
			if err != nil {
				prodErr = err
				return
			}
			produced.Add(int64(len(recs)))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer stopProducing()

	// Every process gets its own HTTP address; the flow is the same.
	start := func() *proc {
		addr := freeAddr(t)
		return startKmirror(t, writeConfig(t, p.flowConfig(addr, `
topics: ["events"]
topic_naming: identity
scale_out: false
`)), addr)
	}
	targetTotal := func() int64 { return sum(endOffsets(t, p.dstCl, topic)) }
	// checkTarget compares what the target holds so far with the source,
	// record by record: it must be the source's first records, each once,
	// in order.
	checkTarget := func(when string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// The target first: the source only grows meanwhile.
		dst, err := verify.ReadAll(ctx, p.dstCl, topic)
		if err != nil {
			t.Fatal(err)
		}
		src, err := verify.ReadAll(ctx, p.srcCl, topic)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for part := int32(0); part < partitions; part++ {
			if len(dst[part]) > len(src[part]) {
				t.Errorf("%s: partition %d: target holds %d records, source %d: records written twice", when, part, len(dst[part]), len(src[part]))
			}
			for i, r := range dst[part] {
				if i >= len(src[part]) {
					break
				}
				if d := diffCopy(src[part][i], r); d != "" {
					t.Fatalf("%s: partition %d, target offset %d: %s (a record repeated, lost or out of order)", when, part, i, d)
				}
			}
			n += len(dst[part])
		}
		if t.Failed() {
			t.FailNow()
		}
		return n
	}
	owner := func(pr *proc) (float64, bool) {
		_, body, err := pr.get("/metrics")
		if err != nil {
			return 0, false
		}
		return metricValue(body, `kmirror_flow_owner{flow="e2e"}`)
	}
	waitOwner := func(pr *proc, timeout time.Duration, what string) time.Duration {
		t.Helper()
		return waitFor(t, timeout, what, func() (bool, string) {
			v, ok := owner(pr)
			return ok && v == 1, fmt.Sprintf("kmirror_flow_owner=%v (present %t)", v, ok)
		})
	}
	// waitWrites waits until the target grows past n records.
	waitWrites := func(n int64, timeout time.Duration, what string) time.Duration {
		t.Helper()
		return waitFor(t, timeout, what, func() (bool, string) {
			got := targetTotal()
			return got > n, fmt.Sprintf("target has %d records, %d before", got, n)
		})
	}

	// Two processes on the same flow for 30 s.
	a := start()
	waitWrites(0, 2*time.Minute, "the first records on the target")
	b := start()
	aPid := a.cmd.Process.Pid
	time.Sleep(30 * time.Second) // both run under traffic
	n := checkTarget("after 30 s of two processes")
	waitFor(t, time.Minute, "the second process to log who holds the flow", func() (bool, string) {
		return strings.Contains(b.output(), "the flow is held by another instance") &&
			strings.Contains(b.output(), fmt.Sprintf("holder_pid=%d", aPid)), b.output()
	})
	if n := strings.Count(b.output(), "the flow is held by another instance"); n != 1 {
		t.Errorf("the waiting process logged who holds the flow %d times, want once", n)
	}
	if v, ok := owner(a); !ok || v != 1 {
		t.Errorf("kmirror_flow_owner of the holder = %v (present %t), want 1", v, ok)
	}
	if v, ok := owner(b); !ok || v != 0 {
		t.Errorf("kmirror_flow_owner of the waiting process = %v (present %t), want 0", v, ok)
	}
	code, body, err := b.get("/readyz")
	if want := fmt.Sprintf("another instance holds the flow (%s:%d", hostname(t), aPid); err != nil || code != 503 || !strings.Contains(body, want) {
		t.Errorf("/readyz of the waiting process: %d %q %v, want 503 naming %q", code, body, err, want)
	}
	_, body, err = b.get("/api/flows")
	if err != nil {
		t.Fatal(err)
	}
	var flows []struct {
		Owner *struct {
			Holding bool
			Holder  *struct{ PID int }
		}
	}
	if err := json.Unmarshal([]byte(body), &flows); err != nil || len(flows) != 1 || flows[0].Owner == nil ||
		flows[0].Owner.Holding || flows[0].Owner.Holder == nil || flows[0].Owner.Holder.PID != aPid {
		t.Errorf("/api/flows of the waiting process: %s (err %v), want owner.holding false and holder pid %d", body, err, aPid)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("two processes, 30 s: %d records produced, %d on the target, each once and in order; the second logged: holder pid %d", produced.Load(), n, aPid)

	// SIGKILL the holder: the waiting one takes over after the session
	// timeout.
	c := start() // waits behind b for the SIGTERM step
	a.kill()
	killedAt := time.Now()
	before := targetTotal()
	waitOwner(b, ownershipTimeout+handOverSlack+30*time.Second, "the second process to hold the flow after SIGKILL")
	tHeld := time.Since(killedAt)
	waitWrites(before, 2*time.Minute, "the second process to write")
	tWrite := time.Since(killedAt)
	t.Logf("SIGKILL hand-over: the second process held the flow %.1fs and wrote %.1fs after the kill (ownership_timeout %s)",
		tHeld.Seconds(), tWrite.Seconds(), ownershipTimeout)
	if tWrite > ownershipTimeout+handOverSlack {
		t.Errorf("SIGKILL hand-over took %s, documented at most %s", tWrite, ownershipTimeout+handOverSlack)
	}
	checkTarget("after the SIGKILL hand-over")

	// SIGTERM the holder: it leaves the group and the next one takes over
	// at once.
	if v, _ := owner(c); v != 0 {
		t.Errorf("kmirror_flow_owner of the third process = %v while the second holds, want 0", v)
	}
	stoppedAt := time.Now()
	b.stop()
	tStop := time.Since(stoppedAt)
	before = targetTotal()
	waitOwner(c, time.Minute, "the third process to hold the flow after SIGTERM")
	waitWrites(before, time.Minute, "the third process to write")
	t.Logf("SIGTERM hand-over: the holder exited %.1fs after SIGTERM; the next wrote %.1fs after SIGTERM", tStop.Seconds(), time.Since(stoppedAt).Seconds())
	if d := time.Since(stoppedAt); d > tStop+handOverSlack {
		t.Errorf("SIGTERM hand-over took %s after the holder exited, want at most %s", d-tStop, handOverSlack)
	}
	checkTarget("after the SIGTERM hand-over")

	// SIGSTOP the holder (a paused process, a long GC or a frozen VM): the
	// next takes over; SIGCONT the old holder, which must not write.
	d := start()
	waitFor(t, time.Minute, "the fourth process to wait", func() (bool, string) {
		return strings.Contains(d.output(), "the flow is held by another instance"), d.output()
	})
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	before = targetTotal()
	waitOwner(d, ownershipTimeout+handOverSlack+30*time.Second, "the fourth process to hold the flow after SIGSTOP")
	waitWrites(before, time.Minute, "the fourth process to write")
	t.Logf("SIGSTOP hand-over: the fourth process wrote %.1fs after the pause", time.Since(pausedAt).Seconds())
	waitFor(t, time.Minute, "the successor to write on", func() (bool, string) {
		return time.Since(pausedAt) > ownershipTimeout+5*time.Second, ""
	})
	if err := c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the resumed process to notice it lost the flow", func() (bool, string) {
		return strings.Contains(c.output(), "lost the flow") || strings.Contains(c.output(), "assigned to another instance"), c.output()
	})
	time.Sleep(5 * time.Second) // traffic while the resumed process winds down

	// Stop the traffic; the target must end equal to the source.
	stopProducing()
	prodWG.Wait()
	if prodErr != nil {
		t.Fatalf("producer: %v", prodErr)
	}
	srcEnd := sum(endOffsets(t, p.srcCl, topic))
	waitFor(t, 2*time.Minute, "the target to catch up", func() (bool, string) {
		n := targetTotal()
		return n >= srcEnd, fmt.Sprintf("target has %d of %d", n, srcEnd)
	})
	time.Sleep(2 * time.Second) // anything written late shows as a surplus
	n = checkTarget("at the end")
	if int64(n) != srcEnd {
		t.Fatalf("target holds %d records, source %d", n, srcEnd)
	}
	t.Logf("end: %d source records, the target holds each once, in order, on every partition; the resumed process wrote nothing", srcEnd)
	d.stop()
	c.stop()
}

// hostname is this machine's name, as kmirror names its instances.
func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
