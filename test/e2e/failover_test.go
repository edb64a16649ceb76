package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/dr"
	"github.com/kmirror/kmirror/internal/verify"
)

// runKmirror runs a kmirror command to completion and returns its output.
func runKmirror(t *testing.T, timeout time.Duration, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := command(ctx, t, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// sequencer produces records "<n>" with n counting up from start, to
// topic, until stopped.
type sequencer struct {
	next    atomic.Int64
	stop    chan struct{}
	done    chan error
	written []int64
	mu      sync.Mutex
}

func startSequencer(t *testing.T, cl *kgo.Client, topic string, partitions int32, start int64) *sequencer {
	s := &sequencer{stop: make(chan struct{}), done: make(chan error, 1)}
	s.next.Store(start)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for {
			select {
			case <-s.stop:
				s.done <- nil
				return
			default:
			}
			var recs []*kgo.Record
			for i := 0; i < 50; i++ {
				n := s.next.Add(1) - 1
				recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(n % int64(partitions)), Value: []byte(strconv.FormatInt(n, 10))})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				s.done <- err
				return
			}
			s.mu.Lock()
			for _, r := range recs {
				n, _ := strconv.ParseInt(string(r.Value), 10, 64)
				s.written = append(s.written, n)
			}
			s.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return s
}

func (s *sequencer) finish(t *testing.T) []int64 {
	t.Helper()
	written, err := s.end()
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	return written
}

// end stops the producer and returns what it wrote and its error, if any.
func (s *sequencer) end() ([]int64, error) {
	close(s.stop)
	err := <-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written, err
}

// TestPlannedFailover moves a live producer and consumer group from the
// source to the target with `kmirror failover`; across both clusters the
// consumer must see every record exactly once.
func TestPlannedFailover(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic, group = "orders", "shipping"
	createTopic(t, p.srcCl, topic, 3, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_naming: identity
sync_interval: 1s
`))
	k := startKmirror(t, cfgPath, httpAddr)

	seen := map[string]int{}
	prod := startSequencer(t, p.srcCl, topic, 3, 0)
	cons := startGroupReader(t, p.src.Bootstrap(), group, []string{topic}, seen, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	waitFor(t, time.Minute, "the consumer to read on the source", func() (bool, string) {
		return cons.count() > 3000, fmt.Sprintf("%d read", cons.count())
	})

	// Failover: the consumer stops first, so that its group lags; the
	// producer stops; kmirror run stops; then kmirror failover copies the
	// rest and moves the group.
	cons.close(t)
	readOnSource := len(seen)
	time.Sleep(time.Second)
	onSource := prod.finish(t)
	k.stop()
	stdout, stderr, err := runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--timeout", "60s")
	t.Logf("kmirror failover:\n%s%s", stdout, stderr)
	if err != nil {
		t.Fatalf("failover failed: %v", err)
	}
	if !strings.Contains(stdout, "Records not replicated: 0") || !strings.Contains(stdout, group) {
		t.Errorf("failover report lacks the figures: %s", stdout)
	}

	// Clients move to the target: the producer continues there, and the
	// same group resumes there.
	prod2 := startSequencer(t, p.dstCl, topic, 3, int64(len(onSource)))
	time.Sleep(time.Second)
	onTarget := prod2.finish(t)
	cons2 := startGroupReader(t, p.dst.Bootstrap(), group, []string{topic}, seen, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	total := len(onSource) + len(onTarget)
	waitFor(t, time.Minute, "the consumer to read every record", func() (bool, string) {
		return cons2.count() >= total, fmt.Sprintf("%d of %d distinct records read", cons2.count(), total)
	})
	time.Sleep(2 * time.Second) // anything read twice would show up now
	cons2.close(t)

	lost, dups := 0, 0
	for n := 0; n < total; n++ {
		switch c := seen[strconv.Itoa(n)]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("planned failover: %d records produced on the source, %d on the target; the group read %d on the source before failover and %d on the target; lost %d, duplicated %d",
		len(onSource), len(onTarget), readOnSource, len(seen)-readOnSource, lost, dups)
	if lost != 0 || dups != 0 {
		t.Errorf("lost %d, duplicated %d; want 0 and 0", lost, dups)
	}
}

// TestUnplannedFailover kills the source broker mid-stream; the failover
// report's recovery point must name exactly the records missing on the
// target.
func TestUnplannedFailover(t *testing.T) {
	p := startPair(t)
	const topic, group = "events", "audit"
	createTopic(t, p.srcCl, topic, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["events"]
sync_interval: 1s
`))
	k := startKmirror(t, cfgPath, httpAddr)
	seen := map[string]int{}
	cons := startGroupReader(t, p.src.Bootstrap(), group, []string{topic}, seen, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	prod := startSequencer(t, p.srcCl, topic, 2, 0)
	waitFor(t, time.Minute, "records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src."+topic))
		return n > 5000, fmt.Sprintf("%d on the target", n)
	})
	cons.close(t)
	time.Sleep(1500 * time.Millisecond) // a group sync checkpoints the group
	// Replication falls behind (kmirror stops) while the producer goes on,
	// then the source dies with records that never reached the target.
	k.stop()
	time.Sleep(time.Second)
	p.src.Kill()
	close(prod.stop) // its last write hangs on the dead source until the test's cleanup closes the client
	stdout, stderr, err := runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--source-unreachable", "--json")
	if err != nil {
		t.Fatalf("failover --source-unreachable: %v\n%s%s", err, stdout, stderr)
	}
	if text, _, err := runKmirror(t, time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--source-unreachable"); err == nil {
		t.Logf("kmirror failover --source-unreachable:\n%s", text)
	}
	var rep dr.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}

	// Bring the source back to see what really was missing.
	p.src.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, "src."+topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Partitions) != 2 {
		t.Fatalf("report has %d partitions, want 2: %s", len(rep.Partitions), stdout)
	}
	var missing int
	for _, ps := range rep.Partitions {
		src, dst := srcRecs[ps.Partition], dstRecs[ps.Partition]
		// The target holds exactly the source's records before the
		// reported point, and none after it.
		if int64(len(dst)) != ps.Replicated {
			t.Errorf("partition %d: report says replicated up to %d, the target holds %d records", ps.Partition, ps.Replicated, len(dst))
		}
		for i := range dst {
			if i >= len(src) || diffCopy(src[i], dst[i]) != "" {
				t.Fatalf("partition %d: target record %d differs from the source", ps.Partition, i)
			}
		}
		gone := int64(len(src)) - ps.Replicated
		missing += int(gone)
		if gone > 0 {
			last := dst[len(dst)-1].Timestamp.UnixMilli()
			if ps.LastTimestampMs != last {
				t.Errorf("partition %d: report's newest record copied at %d, the target's last record is at %d", ps.Partition, ps.LastTimestampMs, last)
			}
		}
	}
	t.Logf("unplanned failover: recovery point %s; %d records were missing on the target, all after the reported offsets", rep.RecoveryPoint.Format(time.RFC3339Nano), missing)
	if missing == 0 {
		t.Errorf("no record was missing on the target: the test did not exercise a recovery point")
	}
	if len(rep.Groups) != 1 || rep.Groups[0].Group != group || rep.Groups[0].Error != "" {
		t.Errorf("groups in the report = %+v, want %s moved", rep.Groups, group)
	}
	committed, err := kadm.NewClient(p.dstCl).FetchOffsets(ctx, group)
	if err != nil || len(committed.Sorted()) != 2 {
		t.Errorf("target group %s has %d committed partitions (%v), want 2", group, len(committed.Sorted()), err)
	}
}

// TestPlannedFailoverRefusesUnreplicatedTopic has a source topic the flow
// matches whose target cannot be created (its name collides with a topic
// on the target); a planned failover must count its records and refuse,
// naming it, rather than report 0 not replicated. Once the cause is fixed,
// the failover succeeds.
func TestPlannedFailoverRefusesUnreplicatedTopic(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const good, bad = "orders", "orders.eu"
	createTopic(t, p.srcCl, good, 2, nil)
	createTopic(t, p.srcCl, bad, 2, nil)
	// Kafka refuses a topic whose name differs from an existing one only
	// by '.' versus '_'.
	createTopic(t, p.dstCl, "orders_eu", 1, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders.*"]
topic_naming: identity
topic_refresh_interval: 1s
`))
	l := newLedger(2)
	k := startKmirror(t, cfgPath, httpAddr)
	l.produce(t, p.srcCl, good, 400)
	l.produce(t, p.srcCl, bad, 300)
	waitFor(t, 2*time.Minute, "orders on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, good))
		return n >= 400, fmt.Sprintf("%d on the target", n)
	})
	k.stop()
	if !strings.Contains(k.output(), "cannot replicate topic") || !strings.Contains(k.output(), "orders.eu") {
		t.Errorf("kmirror run did not log why orders.eu is not replicated")
	}

	res := runKmirrorOnce(t, 4*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--timeout", "2m")
	t.Logf("kmirror failover: exit %d after %s:\n%s%s", res.code, res.elapsed.Round(time.Millisecond), res.stdout, res.stderr)
	if res.timedOut || res.code != 1 {
		t.Fatalf("failover with an unreplicated topic: exit %d (timed out %t), want 1", res.code, res.timedOut)
	}
	if !strings.Contains(res.stderr, "orders.eu (2 partitions, 300 records)") {
		t.Errorf("failover error does not name orders.eu with its 300 records")
	}
	if !strings.Contains(res.stdout, "Records not replicated: 300") {
		t.Errorf("failover report does not count the 300 records of orders.eu")
	}
	// Nothing was recorded: there is no failover to fail back.
	out, errOut, err := runKmirror(t, time.Minute, "failback", "--config", cfgPath, "--flow", "e2e")
	if err == nil || !strings.Contains(errOut, "no failover recorded") {
		t.Errorf("failback after a refused failover: %v\n%s%s", err, out, errOut)
	}

	// The operator removes the colliding topic; the failover now copies
	// orders.eu too and succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(p.dstCl).DeleteTopics(ctx, "orders_eu"); err != nil {
		t.Fatal(err)
	}
	res = runKmirrorOnce(t, 4*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--timeout", "2m")
	t.Logf("kmirror failover after the fix: exit %d:\n%s", res.code, res.stdout)
	if res.code != 0 || !strings.Contains(res.stdout, "Records not replicated: 0") {
		t.Fatalf("failover after the fix: exit %d, want 0 with 0 not replicated\n%s", res.code, res.stderr)
	}
	n1, _ := l.checkExactlyOnce(t, p.dstCl, "target", good)
	n2, _ := l.checkExactlyOnce(t, p.dstCl, "target", bad)
	n := n1 + n2
	t.Logf("after the fix the target holds %d of %d records, each once, in order", n, l.total())
}
