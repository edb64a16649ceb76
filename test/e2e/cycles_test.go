package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// ledger remembers every record produced in a test, per topic, in the
// order it was produced: value "<topic>-<n>", partition n % partitions.
type ledger struct {
	partitions int32
	mu         sync.Mutex
	next       map[string]int
	written    map[string][]int
}

func newLedger(partitions int32) *ledger {
	return &ledger{partitions: partitions, next: map[string]int{}, written: map[string][]int{}}
}

// produce writes n new records to topic through cl, in acknowledged
// batches of 100, and records them.
func (l *ledger) produce(t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	for n > 0 {
		batch := min(n, 100)
		l.mu.Lock()
		from := l.next[topic]
		l.next[topic] += batch
		l.mu.Unlock()
		recs := make([]*kgo.Record, batch)
		for i := range recs {
			seq := from + i
			recs[i] = &kgo.Record{Topic: topic, Partition: int32(seq) % l.partitions, Key: []byte(strconv.Itoa(seq)),
				Value: []byte(topic + "-" + strconv.Itoa(seq))}
		}
		produce(t, cl, recs)
		l.mu.Lock()
		for i := range recs {
			l.written[topic] = append(l.written[topic], from+i)
		}
		l.mu.Unlock()
		n -= batch
	}
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, w := range l.written {
		n += len(w)
	}
	return n
}

// want is, for topic, the values every partition must hold, in order.
func (l *ledger) want(topic string) map[int32][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int32][]string{}
	seqs := slices.Clone(l.written[topic])
	slices.Sort(seqs)
	for _, s := range seqs {
		p := int32(s) % l.partitions
		out[p] = append(out[p], topic+"-"+strconv.Itoa(s))
	}
	return out
}

// checkExactlyOnce reads topic on the cluster at bootstrap and checks,
// record by record, that every partition holds exactly the values the
// ledger expects, each once, in the order they were produced. It returns
// the number of records checked and whether all were as expected.
func (l *ledger) checkExactlyOnce(t *testing.T, cl *kgo.Client, cluster, topic string) (int, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := verify.ReadAll(ctx, cl, topic)
	if err != nil {
		t.Fatalf("reading %s on %s: %v", topic, cluster, err)
	}
	want := l.want(topic)
	n, ok := 0, true
	for p := int32(0); p < l.partitions; p++ {
		var values []string
		count := map[string]int{}
		for _, r := range got[p] {
			values = append(values, string(r.Value))
			count[string(r.Value)]++
		}
		n += len(values)
		dups, lost := 0, 0
		for _, c := range count {
			dups += max(c-1, 0)
		}
		for _, v := range want[p] {
			if count[v] == 0 {
				lost++
			}
		}
		if dups > 0 || lost > 0 || len(values) != len(want[p]) {
			t.Errorf("%s %s/%d: %d records, want %d: %d duplicated, %d missing", cluster, topic, p, len(values), len(want[p]), dups, lost)
			ok = false
			continue
		}
		for i := range values {
			if values[i] != want[p][i] {
				t.Errorf("%s %s/%d: offset %d holds %s, want %s (order differs)", cluster, topic, p, i, values[i], want[p][i])
				ok = false
				break
			}
		}
	}
	return n, ok
}

// groupReader is a consumer group member reading topics, committing after
// every poll, counting how often it saw each value.
type groupReader struct {
	cl   *kgo.Client
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]int
	errs []error
}

func startGroupReader(t *testing.T, bootstrap, group string, topics []string, seen map[string]int, opts ...kgo.Opt) *groupReader {
	g := &groupReader{stop: make(chan struct{}), done: make(chan struct{}), seen: seen}
	g.cl = newClient(t, bootstrap, append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...), kgo.DisableAutoCommit()}, opts...)...)
	go func() {
		defer close(g.done)
		ctx := context.Background()
		for {
			select {
			case <-g.stop:
				return
			default:
			}
			pollCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			fs := g.cl.PollFetches(pollCtx)
			cancel()
			g.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { g.seen[string(r.Value)]++ })
			g.mu.Unlock()
			if fs.NumRecords() > 0 {
				if err := g.cl.CommitUncommittedOffsets(ctx); err != nil {
					g.mu.Lock()
					g.errs = append(g.errs, err)
					g.mu.Unlock()
				}
			}
		}
	}()
	return g
}

func (g *groupReader) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// close stops reading and leaves the group; everything read is committed.
func (g *groupReader) close(t *testing.T) {
	t.Helper()
	close(g.stop)
	<-g.done
	g.cl.Close()
	for _, err := range g.errs {
		t.Errorf("commit: %v", err)
	}
}

// TestFailoverFailbackCycles runs two full failover/failback cycles with
// traffic in every phase: producers on the primary, then on DR after the
// failover, on the primary again after the failback, and the same in the
// second cycle, with one consumer group following the clients. A topic
// created between the cycles takes part in the second one. At the end the
// primary and DR each hold every record produced exactly once, in the
// order it was produced, and the group has read every record exactly once.
func TestFailoverFailbackCycles(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const group = "billing"
	const orders, payments = "orders", "payments"
	createTopic(t, p.srcCl, orders, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders", "payments"]
topic_naming: identity
sync_interval: 1s
topic_refresh_interval: 1s
`))
	l := newLedger(2)
	seen := map[string]int{}
	read := func(cluster, bootstrap string, topics []string, atLeast int) {
		t.Helper()
		r := startGroupReader(t, bootstrap, group, topics, seen, kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		waitFor(t, 2*time.Minute, fmt.Sprintf("group %s to have read %d records on %s", group, atLeast, cluster), func() (bool, string) {
			return r.count() >= atLeast, fmt.Sprintf("%d read", r.count())
		})
		r.close(t)
		t.Logf("group %s on %s: %d distinct records read so far of %d produced", group, cluster, len(seen), l.total())
	}
	failover := func(cycle int) {
		t.Helper()
		out, errOut, err := runKmirror(t, 3*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--timeout", "2m")
		t.Logf("cycle %d: kmirror failover:\n%s%s", cycle, out, errOut)
		if err != nil {
			t.Fatalf("cycle %d: failover: %v", cycle, err)
		}
		if !strings.Contains(out, "Records not replicated: 0") {
			t.Errorf("cycle %d: failover report does not say 0 records are left", cycle)
		}
	}
	failback := func(cycle, wantCopied int) {
		t.Helper()
		out, errOut, err := runKmirror(t, 3*time.Minute, "failback", "--config", cfgPath, "--flow", "e2e", "--timeout", "2m")
		t.Logf("cycle %d: kmirror failback:\n%s%s", cycle, out, errOut)
		if err != nil {
			t.Fatalf("cycle %d: failback: %v", cycle, err)
		}
		if want := fmt.Sprintf("Records copied back: %d\n", wantCopied); !strings.Contains(out, want) {
			t.Errorf("cycle %d: failback report does not say %q", cycle, strings.TrimSpace(want))
		}
	}

	// In every phase the group reads everything produced so far, then
	// more records are produced that it has not read when the clients
	// move: it must continue with exactly those on the other cluster.

	// Before the first failover: clients on the primary.
	k := startKmirror(t, cfgPath, httpAddr)
	l.produce(t, p.srcCl, orders, 2000)
	read("primary", p.src.Bootstrap(), []string{orders}, l.total())
	l.produce(t, p.srcCl, orders, 500)
	k.stop()

	// Cycle 1.
	failover(1)
	l.produce(t, p.dstCl, orders, 1000)
	read("DR", p.dst.Bootstrap(), []string{orders}, l.total())
	l.produce(t, p.dstCl, orders, 300)
	failback(1, 1300)

	// Between the cycles: clients on the primary again, and a new topic.
	k = startKmirror(t, cfgPath, httpAddr)
	createTopic(t, p.srcCl, payments, 2, nil)
	both := []string{orders, payments}
	l.produce(t, p.srcCl, orders, 1000)
	l.produce(t, p.srcCl, payments, 1000)
	read("primary", p.src.Bootstrap(), both, l.total())
	l.produce(t, p.srcCl, orders, 200)
	l.produce(t, p.srcCl, payments, 200)
	k.stop()

	// Cycle 2.
	failover(2)
	l.produce(t, p.dstCl, orders, 500)
	l.produce(t, p.dstCl, payments, 500)
	read("DR", p.dst.Bootstrap(), both, l.total())
	l.produce(t, p.dstCl, orders, 100)
	l.produce(t, p.dstCl, payments, 100)
	failback(2, 1200)

	// After the second failback: clients on the primary, the flow copies
	// new records to DR.
	k = startKmirror(t, cfgPath, httpAddr)
	l.produce(t, p.srcCl, orders, 500)
	l.produce(t, p.srcCl, payments, 500)
	total := l.total()
	waitFor(t, 2*time.Minute, "every record on DR", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, orders)) + sum(endOffsets(t, p.dstCl, payments))
		return n >= int64(total), fmt.Sprintf("DR holds %d of %d", n, total)
	})
	read("primary", p.src.Bootstrap(), both, total)
	time.Sleep(2 * time.Second) // anything copied twice would show up now
	k.stop()

	for _, c := range []struct {
		name string
		cl   *kgo.Client
	}{{"primary", p.srcCl}, {"DR", p.dstCl}} {
		n, ok := 0, true
		for _, topic := range both {
			m, tok := l.checkExactlyOnce(t, c.cl, c.name, topic)
			n, ok = n+m, ok && tok
		}
		t.Logf("%s holds %d records of %d produced (orders %d, payments %d); record by record, each exactly once in produce order per partition: %t",
			c.name, n, total, len(l.written[orders]), len(l.written[payments]), ok)
	}
	lost, dups := 0, 0
	for topic, seqs := range l.written {
		for _, s := range seqs {
			switch c := seen[topic+"-"+strconv.Itoa(s)]; {
			case c == 0:
				lost++
			case c > 1:
				dups += c - 1
			}
		}
	}
	t.Logf("two failover/failback cycles: %d records produced; group %s read %d distinct, lost %d, duplicated %d", total, group, len(seen), lost, dups)
	if lost != 0 || dups != 0 {
		t.Errorf("the group lost %d and re-read %d records; want 0 and 0", lost, dups)
	}
}

// TestRunRefusesWhileFailedOver checks that `kmirror run` does not start a
// flow that was failed over and not failed back (exit 2, naming the flow,
// when and what to do), that --force starts it with a warning, and that
// after the failback it starts again without --force.
func TestRunRefusesWhileFailedOver(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic = "orders"
	createTopic(t, p.srcCl, topic, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_naming: identity
`))
	l := newLedger(2)
	k := startKmirror(t, cfgPath, httpAddr)
	l.produce(t, p.srcCl, topic, 500)
	waitFor(t, 2*time.Minute, "records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= 500, fmt.Sprintf("%d on the target", n)
	})
	k.stop()
	out, errOut, err := runKmirror(t, 3*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e")
	if err != nil {
		t.Fatalf("failover: %v\n%s%s", err, out, errOut)
	}

	res := runKmirrorOnce(t, time.Minute, "run", "--config", cfgPath)
	t.Logf("kmirror run after the failover: exit %d after %s, timed out %t:\n%s", res.code, res.elapsed.Round(time.Millisecond), res.timedOut, res.stderr)
	if res.timedOut || res.code != 2 {
		t.Fatalf("kmirror run after a failover: exit %d (timed out %t), want 2", res.code, res.timedOut)
	}
	for _, want := range []string{`flow "e2e"`, "failed over", "kmirror failback", "--force"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("refusal does not say %q", want)
		}
	}

	// --force starts it, with a warning, and it replicates.
	k = startKmirror(t, cfgPath, httpAddr, "--force")
	l.produce(t, p.srcCl, topic, 300)
	waitFor(t, 2*time.Minute, "records on the target with --force", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= 800, fmt.Sprintf("%d on the target", n)
	})
	k.stop()
	if !strings.Contains(k.output(), "failed over and not failed back (--force)") {
		t.Errorf("kmirror run --force logged no warning:\n%s", k.output())
	}
	n, _ := l.checkExactlyOnce(t, p.dstCl, "DR", topic)
	t.Logf("kmirror run --force: the target holds %d records, each once, in order", n)

	// After the failback, run starts without --force.
	out, errOut, err = runKmirror(t, 3*time.Minute, "failback", "--config", cfgPath, "--flow", "e2e")
	if err != nil {
		t.Fatalf("failback: %v\n%s%s", err, out, errOut)
	}
	k = startKmirror(t, cfgPath, httpAddr)
	waitFor(t, time.Minute, "kmirror run to be ready after the failback", func() (bool, string) {
		code, body, err := k.get("/readyz")
		return err == nil && code == 200, fmt.Sprintf("%d %s %v", code, body, err)
	})
	k.stop()
	t.Logf("kmirror run after the failback: started without --force")
}
