package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
)

// The line an exactly-once instance logs when the brokers refused its
// transaction because it lost its membership of the flow's group.
const fencedLine = "transaction fenced by the brokers"

// abortedMark starts the value of every record the source producer writes
// in a transaction it aborts: no copy of such a record may ever reach the
// target.
const abortedMark = "ABORTED"

// eosFixture is a pair of clusters with one source topic, a producer
// writing it and an exactly-once scale-out flow any number of processes
// run. The producer keeps what the source's committed records are, per
// partition, so that the test knows when the flow caught up.
type eosFixture struct {
	t          *testing.T
	p          *pair
	topic      string
	partitions int32
	keys       string // the flow's keys

	mu        sync.Mutex
	last      map[int32][]byte // value of the last committed record, per partition
	perPart   map[int32]int    // committed records, per partition
	committed atomic.Int64
	aborted   atomic.Int64 // records written in aborted transactions
	txns      atomic.Int64
	abortTxns atomic.Int64

	cancel  context.CancelFunc
	done    chan struct{}
	prodErr error
}

func newEOSFixture(t *testing.T, partitions int32, keys string) *eosFixture {
	p := startPair(t)
	f := &eosFixture{t: t, p: p, topic: "events", partitions: partitions, keys: keys,
		last: map[int32][]byte{}, perPart: map[int32]int{}}
	createTopic(t, p.srcCl, f.topic, partitions, nil)
	return f
}

// start starts one more process of the flow.
func (f *eosFixture) start() *proc {
	addr := freeAddr(f.t)
	return startKmirror(f.t, writeConfig(f.t, f.p.flowConfig(addr, `topics: ["events"]
topic_naming: identity
topic_refresh_interval: 500ms
progress_interval: 200ms
scale_out: true
exactly_once: true
`+f.keys)), addr)
}

// eosRecord is the source record number seq (over all partitions) of
// transaction txn. Every record has a key, two headers and its own
// timestamp, so that a copy is compared with its record on all of them.
func (f *eosFixture) eosRecord(base time.Time, part int32, seq, partSeq, txn int, aborted bool) *kgo.Record {
	var value []byte
	if aborted {
		value = fmt.Appendf(nil, "%s-p%d-t%d-s%d-%s", abortedMark, part, txn, seq, strings.Repeat("a", 60))
	} else {
		value = fmt.Appendf(nil, "p%d-%07d-t%d-s%d-%s", part, partSeq, txn, seq, strings.Repeat("v", 60))
	}
	return &kgo.Record{
		Topic:     f.topic,
		Partition: part,
		Key:       fmt.Appendf(nil, "k%d", seq),
		Value:     value,
		Headers: []kgo.RecordHeader{
			{Key: "txn", Value: fmt.Appendf(nil, "%d", txn)},
			{Key: "seq", Value: fmt.Appendf(nil, "%d", seq)},
		},
		Timestamp: base.Add(time.Duration(seq) * time.Millisecond),
	}
}

// produceTransactions writes want committed records with a transactional
// producer, perTxn records a transaction spread over every partition,
// aborting every abortEvery-th transaction (its records carry abortedMark),
// paced to take about spread.
func (f *eosFixture) produceTransactions(want, perTxn, abortEvery int, spread time.Duration) {
	t := f.t
	producer := newClient(t, f.p.src.Bootstrap(), kgo.TransactionalID("eos-e2e-source"))
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	committedTxns := (want + perTxn - 1) / perTxn
	totalTxns := committedTxns + committedTxns/(abortEvery-1) + 1
	every := spread / time.Duration(totalTxns)
	// Timestamps in the past: brokers refuse records more than an hour
	// in the future.
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	go func() {
		defer close(f.done)
		began := time.Now()
		seq := 0
		partSeq := make([]int, f.partitions)
		for txn := 0; f.committed.Load() < int64(want); txn++ {
			if ctx.Err() != nil {
				return
			}
			if d := time.Until(began.Add(time.Duration(txn) * every)); d > 0 {
				time.Sleep(d)
			}
			abort := txn%abortEvery == abortEvery-1
			n := min(perTxn, want-int(f.committed.Load()))
			if abort {
				n = perTxn
			}
			if err := producer.BeginTransaction(); err != nil {
				f.prodErr = err
				return
			}
			recs := make([]*kgo.Record, n)
			lastOf := map[int32][]byte{}
			counts := map[int32]int{}
			for i := range recs {
				part := int32(seq % int(f.partitions))
				recs[i] = f.eosRecord(base, part, seq, partSeq[part], txn, abort)
				if !abort {
					partSeq[part]++
					lastOf[part] = recs[i].Value
					counts[part]++
				}
				seq++
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Minute)
			err := producer.ProduceSync(pctx, recs...).FirstErr()
			if err == nil {
				err = producer.EndTransaction(pctx, kgo.TransactionEndTry(!abort))
			}
			pcancel()
			if err != nil {
				f.prodErr = fmt.Errorf("transaction %d: %w", txn, err)
				return
			}
			f.txns.Add(1)
			if abort {
				f.abortTxns.Add(1)
				f.aborted.Add(int64(n))
				continue
			}
			f.mu.Lock()
			for p, v := range lastOf {
				f.last[p] = v
				f.perPart[p] += counts[p]
			}
			f.mu.Unlock()
			f.committed.Add(int64(n))
		}
	}()
	t.Cleanup(func() { cancel(); <-f.done })
}

// produceSteady writes batches of plain (not transactional) records to
// every partition until stopProducer is called.
func (f *eosFixture) produceSteady(batch int, pause time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	go func() {
		defer close(f.done)
		seq := 0
		partSeq := make([]int, f.partitions)
		for n := 0; ctx.Err() == nil; n++ {
			recs := make([]*kgo.Record, batch)
			lastOf := map[int32][]byte{}
			counts := map[int32]int{}
			for i := range recs {
				part := int32(seq % int(f.partitions))
				recs[i] = f.eosRecord(base, part, seq, partSeq[part], n, false)
				partSeq[part]++
				lastOf[part] = recs[i].Value
				counts[part]++
				seq++
			}
			pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
			err := f.p.srcCl.ProduceSync(pctx, recs...).FirstErr()
			pcancel()
			if err != nil {
				f.prodErr = err
				return
			}
			f.mu.Lock()
			for p, v := range lastOf {
				f.last[p] = v
				f.perPart[p] += counts[p]
			}
			f.mu.Unlock()
			f.committed.Add(int64(batch))
			time.Sleep(pause)
		}
	}()
	f.t.Cleanup(func() { cancel(); <-f.done })
}

// stopProducer stops the producer and waits for it; a producer error
// fails the test.
func (f *eosFixture) stopProducer() {
	f.t.Helper()
	f.cancel()
	<-f.done
	if f.prodErr != nil {
		f.t.Fatalf("source producer: %v", f.prodErr)
	}
}

// lastCommittedRecord returns the last committed record (not a
// transaction marker) of a partition as a read_committed consumer sees it,
// and the partition's last stable offset; nil if it holds none.
func lastCommittedRecord(ctx context.Context, cl *kgo.Client, topic string, part int32) (*kgo.Record, int64, error) {
	adm := kadm.NewClient(cl)
	lsos, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, -1, err
	}
	lso, ok := lsos.Lookup(topic, part)
	if !ok || lso.Err != nil {
		return nil, -1, fmt.Errorf("last stable offset of %s/%d: %v", topic, part, lso.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, -1, err
	}
	start, _ := starts.Lookup(topic, part)
	for window := int64(2000); ; window *= 8 {
		from := max(start.Offset, lso.Offset-window)
		var last *kgo.Record
		err := logread.Read(ctx, cl, logread.Range{Topic: topic, Partition: part, From: from, End: lso.Offset}, logread.Options{}, func(r *kgo.Record) bool {
			if !r.Attrs.IsControl() {
				last = r
			}
			return true
		})
		if err != nil {
			return nil, lso.Offset, err
		}
		if last != nil || from == start.Offset {
			return last, lso.Offset, nil
		}
	}
}

// waitCaughtUp waits until, on every partition, the last record a
// read_committed consumer of the target sees is the copy of the last
// committed source record, and the target's last stable offsets stayed
// the same for a second (nothing more is being written).
func (f *eosFixture) waitCaughtUp(timeout time.Duration) time.Duration {
	t := f.t
	t.Helper()
	f.mu.Lock()
	want := map[int32][]byte{}
	for p, v := range f.last {
		want[p] = v
	}
	f.mu.Unlock()
	var stableSince time.Time
	var prev map[int32]int64
	return waitFor(t, timeout, "the target to hold the copy of the last committed source record of every partition, and nothing more written", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		lsos := map[int32]int64{}
		var behind []string
		for part := range f.partitions {
			r, lso, err := lastCommittedRecord(ctx, f.p.dstCl, f.topic, part)
			if err != nil {
				return false, err.Error()
			}
			lsos[part] = lso
			if r == nil || !bytes.Equal(r.Value, want[part]) {
				var got []byte
				if r != nil {
					got = r.Value
				}
				behind = append(behind, fmt.Sprintf("partition %d: last committed copy %.20q (last stable offset %d), want %.20q", part, got, lso, want[part]))
			}
		}
		if len(behind) > 0 {
			prev = nil
			return false, strings.Join(behind, "; ")
		}
		same := prev != nil
		for p, o := range lsos {
			if prev[p] != o {
				same = false
			}
		}
		if !same {
			prev, stableSince = lsos, time.Now()
		}
		return time.Since(stableSince) >= time.Second, fmt.Sprintf("caught up; last stable offsets %v not settled yet", lsos)
	})
}

// readUncommitted reads every partition of topic to its end with a
// read_uncommitted consumer: records of aborted transactions included,
// transaction markers left out.
func readUncommitted(t *testing.T, ctx context.Context, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	out := map[int32][]*kgo.Record{}
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{ReadUncommitted: true}, func(r *kgo.Record) bool {
		if !r.Attrs.IsControl() {
			out[r.Partition] = append(out[r.Partition], r)
		}
		return true
	})
	if err != nil {
		t.Fatalf("reading %s read_uncommitted: %v", topic, err)
	}
	return out
}

// exactlyOnceReport compares what a read_committed consumer sees on the
// source and on the target: the target must hold every committed source
// record exactly once, in the source's order per partition, equal in key,
// value, headers and timestamp, and no record of an aborted transaction.
// Every kind of difference is reported with offsets (a few examples of
// each). It returns whether the target is exact.
func exactlyOnceReport(t *testing.T, src, dst map[int32][]*kgo.Record, partitions int32) bool {
	t.Helper()
	ok := true
	const examples = 5
	for part := range partitions {
		s, d := src[part], dst[part]
		index := make(map[string]int, len(s))
		for i, r := range s {
			index[string(r.Value)] = i
		}
		seenAt := make(map[int]int64, len(s)) // source index -> target offset of its first copy
		var dups, aborted, unknown, outOfOrder, differ []string
		nDups, nAborted, nUnknown, nOutOfOrder, nDiffer := 0, 0, 0, 0, 0
		next := 0 // the source index the next target record should copy
		for _, r := range d {
			if bytes.HasPrefix(r.Value, []byte(abortedMark)) {
				nAborted++
				if len(aborted) < examples {
					aborted = append(aborted, fmt.Sprintf("target offset %d: %.40q", r.Offset, r.Value))
				}
				continue
			}
			i, known := index[string(r.Value)]
			if !known {
				nUnknown++
				if len(unknown) < examples {
					unknown = append(unknown, fmt.Sprintf("target offset %d: %.40q", r.Offset, r.Value))
				}
				continue
			}
			if first, seen := seenAt[i]; seen {
				nDups++
				if len(dups) < examples {
					dups = append(dups, fmt.Sprintf("source offset %d (%.24q) at target offsets %d and %d", s[i].Offset, s[i].Value, first, r.Offset))
				}
				continue
			}
			seenAt[i] = r.Offset
			if i != next {
				nOutOfOrder++
				if len(outOfOrder) < examples {
					outOfOrder = append(outOfOrder, fmt.Sprintf("target offset %d holds source record %d (offset %d) where source record %d was due", r.Offset, i, s[i].Offset, next))
				}
			}
			next = i + 1
			if diff := diffCopy(s[i], r); diff != "" {
				nDiffer++
				if len(differ) < examples {
					differ = append(differ, fmt.Sprintf("source offset %d, target offset %d: %s", s[i].Offset, r.Offset, diff))
				}
			}
		}
		var missing []string
		nMissing := 0
		for i, r := range s {
			if _, seen := seenAt[i]; !seen {
				nMissing++
				if len(missing) < examples {
					missing = append(missing, fmt.Sprintf("source offset %d (%.24q)", r.Offset, r.Value))
				}
			}
		}
		report := func(n int, what string, ex []string) {
			if n > 0 {
				ok = false
				t.Errorf("%s/%d: %d %s, for example: %s", "events", part, n, what, strings.Join(ex, "; "))
			}
		}
		report(nDups, "committed source records seen twice on the target (read_committed)", dups)
		report(nMissing, "committed source records missing on the target", missing)
		report(nAborted, "records of aborted source transactions visible on the target (read_committed)", aborted)
		report(nUnknown, "records on the target that are no committed source record", unknown)
		report(nOutOfOrder, "records out of the source's order", outOfOrder)
		report(nDiffer, "copies that differ from their source record", differ)
	}
	return ok
}

// at returns the index of the first record at or after offset o.
func at(recs []*kgo.Record, o int64) int {
	return sort.Search(len(recs), func(i int) bool { return recs[i].Offset >= o })
}

// consumeFirst consumes, as group, the first n[p] committed records of
// every partition p of topic read_committed, and commits the offset after
// the last one it consumed.
func consumeFirst(ctx context.Context, bootstrap, group, topic string, n map[int32]int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Hour))
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := map[int32]int{}
	consumed, want := 0, 0
	for _, k := range n {
		want += k
	}
	for consumed < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("group %s consumed %d of %d records: %w", group, consumed, want, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if seen[r.Partition] < n[r.Partition] {
				seen[r.Partition]++
				consumed++
				cl.MarkCommitRecords(r)
			}
		})
	}
	return cl.CommitMarkedOffsets(ctx)
}

// groupTranslation checks the target group offset of one partition
// against both logs (read_committed, records only): the group committed
// srcAt on the source; the copy of the first committed source record at
// or after srcAt must be the first committed target record at or after
// the translated offset, and the copy of the record before it must lie
// before the translated offset, so that a consumer of the target group
// neither skips nor re-reads a record. When a record lies at srcAt itself
// the translation must be exactly the offset of its copy. It returns ""
// or what is wrong.
func groupTranslation(src, dst []*kgo.Record, srcAt, dstAt int64) string {
	i := at(src, srcAt)
	copyOf := func(r *kgo.Record) int {
		for k, c := range dst {
			if bytes.Equal(c.Value, r.Value) {
				return k
			}
		}
		return -1
	}
	if i == len(src) {
		if len(dst) > 0 && dstAt <= dst[len(dst)-1].Offset {
			return fmt.Sprintf("source offset %d is past every committed record, but target offset %d is not past the last copy (%d)", srcAt, dstAt, dst[len(dst)-1].Offset)
		}
		return ""
	}
	k := copyOf(src[i])
	if k < 0 {
		return fmt.Sprintf("the record at source offset %d has no copy on the target", src[i].Offset)
	}
	if src[i].Offset == srcAt && dstAt != dst[k].Offset {
		return fmt.Sprintf("source offset %d holds a record whose copy is at target offset %d; translated to %d", srcAt, dst[k].Offset, dstAt)
	}
	if j := at(dst, dstAt); j != k {
		return fmt.Sprintf("source offset %d: next record is source offset %d, copied at target offset %d; the translated offset %d makes a consumer read target offset %d next",
			srcAt, src[i].Offset, dst[k].Offset, dstAt, func() int64 {
				if j < len(dst) {
					return dst[j].Offset
				}
				return -1
			}())
	}
	return ""
}

// problems counts the distinct warning and error messages in a process's
// log, for the test's output.
func problems(pr *proc) string {
	counts := map[string]int{}
	for _, l := range strings.Split(pr.output(), "\n") {
		i := strings.Index(l, "level=WARN msg=")
		if i < 0 {
			i = strings.Index(l, "level=ERROR msg=")
		}
		if i < 0 {
			continue
		}
		msg := l[i:]
		if j := strings.Index(msg, "\" "); j > 0 {
			msg = msg[:j+1]
		}
		// With the start of its error: the kinds of failure differ.
		if k := strings.Index(l, " err="); k > 0 {
			e := l[k+1:]
			if len(e) > 160 {
				e = e[:160] + "…"
			}
			msg += " " + e
		}
		counts[msg]++
	}
	var out []string
	for m, n := range counts {
		out = append(out, fmt.Sprintf("%dx %s", n, m))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// txnCounts says how many target transactions a process committed and
// aborted, from its metrics.
func txnCounts(pr *proc) string {
	_, body, err := pr.get("/metrics")
	if err != nil {
		return "no metrics: " + err.Error()
	}
	c, okc := metricValue(body, `kmirror_transactions_committed_total{flow="e2e"}`)
	a, oka := metricValue(body, `kmirror_transactions_aborted_total{flow="e2e"}`)
	if !okc && !oka {
		return "no transaction metrics"
	}
	return fmt.Sprintf("%v/%v", c, a)
}

// TestExactlyOnceChaos copies 200,000 records, written on the source in
// transactions of which every 7th is aborted, with an exactly-once
// scale-out flow run by three processes, while instances are killed with
// SIGKILL at random moments and restarted, one more is started and one is
// stopped with SIGTERM. A read_committed consumer of the target then sees
// every committed source record exactly once, in order, equal in key,
// value, headers and timestamp, and no aborted record; a consumer group
// that read part of every partition on the source and committed during
// the chaos has its offsets translated exactly on the target.
func TestExactlyOnceChaos(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("random seed %d", seed)
	const (
		partitions = 6
		total      = 200_000
		perTxn     = 480
		abortEvery = 7
		group      = "billing"
	)
	f := newEOSFixture(t, partitions, `ownership_timeout: 6s
sync_interval: 1s
`)
	var live []*proc
	for range 3 {
		live = append(live, f.start())
	}
	waitFor(t, 90*time.Second, "three instances to own the 6 partitions, each exactly one", func() (bool, string) {
		owners, answered := ownership(live)
		per := map[int]bool{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]] = true
		}
		return answered == 3 && len(per) == 3 && len(owners) == partitions, describe(owners)
	})
	began := time.Now()
	f.produceTransactions(total, perTxn, abortEvery, 70*time.Second)

	// A consumer group reads the first 12,000 records of every partition
	// on the source (of about 33,333) and commits, as soon as they are
	// there: during the chaos.
	type groupResult struct {
		at  time.Time
		err error
	}
	groupDone := make(chan groupResult, 1)
	go func() {
		const first = 12_000
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		for {
			f.mu.Lock()
			ready := len(f.perPart) == partitions
			for _, n := range f.perPart {
				ready = ready && n >= first
			}
			f.mu.Unlock()
			if ready {
				break
			}
			if ctx.Err() != nil {
				groupDone <- groupResult{err: ctx.Err()}
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		n := map[int32]int{}
		for p := range int32(partitions) {
			n[p] = first
		}
		err := consumeFirst(ctx, f.p.src.Bootstrap(), group, f.topic, n)
		groupDone <- groupResult{at: time.Now(), err: err}
	}()

	// The chaos: at least 5 SIGKILLs of a random instance at random
	// moments, each restarted, a scale up and a scale down, in a random
	// order; each event 3 to 9 s after the previous one.
	events := []string{"kill", "kill", "kill", "kill", "kill", "kill", "up", "down"}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	// The scale down comes after the scale up, so at least three
	// instances are left running at any time.
	up, down := -1, -1
	for i, e := range events {
		switch e {
		case "up":
			up = i
		case "down":
			down = i
		}
	}
	if down < up {
		events[up], events[down] = events[down], events[up]
	}
	kills := 0
	var chaos []string
	for _, e := range events {
		time.Sleep(time.Duration(3000+rng.IntN(6000)) * time.Millisecond)
		when := time.Since(began).Round(100 * time.Millisecond)
		switch e {
		case "kill":
			i := rng.IntN(len(live))
			live[i].kill()
			kills++
			// Restarted at once or after up to 2 s.
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			live[i] = f.start()
			chaos = append(chaos, fmt.Sprintf("%s: SIGKILL of instance %d and restart (%d committed source records so far)", when, i, f.committed.Load()))
		case "up":
			live = append(live, f.start())
			chaos = append(chaos, fmt.Sprintf("%s: scale up to %d instances (%d committed source records so far)", when, len(live), f.committed.Load()))
		case "down":
			i := rng.IntN(len(live))
			live[i].stop()
			live = append(live[:i], live[i+1:]...)
			chaos = append(chaos, fmt.Sprintf("%s: SIGTERM of instance %d, scale down to %d instances (%d committed source records so far)", when, i, len(live), f.committed.Load()))
		}
	}
	t.Logf("chaos:\n%s", strings.Join(chaos, "\n"))
	<-f.done
	if f.prodErr != nil {
		t.Fatalf("source producer: %v", f.prodErr)
	}
	t.Logf("source: %d committed records, %d records in %d aborted transactions (%d transactions), written in %.1fs",
		f.committed.Load(), f.aborted.Load(), f.abortTxns.Load(), f.txns.Load(), time.Since(began).Seconds())
	if kills < 5 {
		t.Fatalf("only %d SIGKILLs", kills)
	}

	// The group's commit on the source is made during the chaos (below);
	// its translation is checked at the end.
	r := <-groupDone
	if r.err != nil {
		t.Fatalf("group %s on the source: %v", group, r.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcGroup, err := kadm.NewClient(f.p.srcCl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	groupAt := r.at
	t.Logf("group %s committed on the source %.1fs after the first source transaction, in the middle of the chaos", group, groupAt.Sub(began).Seconds())

	took := f.waitCaughtUp(3 * time.Minute)
	t.Logf("the target caught up %.1fs after the last source transaction", took.Seconds())

	srcRecs := readLog(t, ctx, f.p.srcCl, f.topic)
	dstRecs := readLog(t, ctx, f.p.dstCl, f.topic)
	n := 0
	for _, rs := range srcRecs {
		n += len(rs)
	}
	if n != total {
		t.Fatalf("the source holds %d committed records, want %d", n, total)
	}
	exact := exactlyOnceReport(t, srcRecs, dstRecs, partitions)
	m := 0
	for _, rs := range dstRecs {
		m += len(rs)
	}
	t.Logf("read_committed: %d committed records on the source, %d on the target; exactly once, in order and equal: %v", n, m, exact)

	// Not even an aborted transaction of the flow may hold a copy of an
	// aborted source record: the source is read read_committed.
	raw := readUncommitted(t, ctx, f.p.dstCl, f.topic)
	rawN, rawAborted := 0, 0
	for _, rs := range raw {
		for _, r := range rs {
			rawN++
			if bytes.HasPrefix(r.Value, []byte(abortedMark)) {
				if rawAborted < 5 {
					t.Errorf("events/%d: target offset %d holds a copy of an aborted source record (read_uncommitted): %.40q", r.Partition, r.Offset, r.Value)
				}
				rawAborted++
			}
		}
	}
	t.Logf("read_uncommitted: the target holds %d records, %d of them in transactions of the flow that were aborted; %d copies of aborted source records", rawN, rawN-m, rawAborted)

	// The group's offsets are translated exactly.
	dstAdm := kadm.NewClient(f.p.dstCl)
	var last string
	checkFrom := time.Now()
	deadline := checkFrom.Add(90 * time.Second)
	for {
		got, err := dstAdm.FetchOffsets(ctx, group)
		var bad []string
		good := 0
		if err != nil {
			bad = append(bad, err.Error())
		}
		srcGroup.Each(func(o kadm.OffsetResponse) {
			if o.Topic != f.topic {
				return
			}
			r, ok := got.Lookup(f.topic, o.Partition)
			if !ok || r.Err != nil || r.At < 0 {
				bad = append(bad, fmt.Sprintf("partition %d: source %d, no target offset", o.Partition, o.At))
				return
			}
			if why := groupTranslation(srcRecs[o.Partition], dstRecs[o.Partition], o.At, r.At); why != "" {
				bad = append(bad, fmt.Sprintf("partition %d: source %d, target %d: %s", o.Partition, o.At, r.At, why))
				return
			}
			good++
		})
		if good == partitions && len(bad) == 0 {
			var lines []string
			srcGroup.Each(func(o kadm.OffsetResponse) {
				r, _ := got.Lookup(f.topic, o.Partition)
				lines = append(lines, fmt.Sprintf("%d: %d -> %d", o.Partition, o.At, r.At))
			})
			sort.Strings(lines)
			t.Logf("group %s translated exactly on all %d partitions (source -> target offset: %s); checked from when the flow caught up, %.1fs after the commit on the source, exact %.1fs after the check began",
				group, good, strings.Join(lines, ", "), checkFrom.Sub(groupAt).Seconds(), time.Since(checkFrom).Seconds())
			break
		}
		last = strings.Join(bad, "; ")
		if time.Now().After(deadline) {
			t.Errorf("group %s: offsets not translated exactly %s after the commit on the source: %s", group, time.Since(groupAt).Round(time.Second), last)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	var fenced []string
	for i, pr := range live {
		for _, l := range strings.Split(pr.output(), "\n") {
			if strings.Contains(l, fencedLine) {
				fenced = append(fenced, fmt.Sprintf("instance %d: %s", i, l))
			}
		}
	}
	var txns []string
	for i, pr := range live {
		txns = append(txns, fmt.Sprintf("instance %d: %s", i, txnCounts(pr)))
	}
	t.Logf("%d lines %q in the logs of the running instances; transactions committed/aborted since their start: %s", len(fenced), fencedLine, strings.Join(txns, ", "))
	for i, pr := range live {
		t.Logf("instance %d warnings and errors: %s", i, problems(pr))
	}
	for _, pr := range live {
		pr.stop()
	}
	t.Logf("test took %.1fs", time.Since(began).Seconds())
}

// txnOf describes the target transaction of the process with PID pid
// (kmirror's transactional IDs end with ":<pid>"), or ok false if the
// coordinator lists none.
func txnOf(ctx context.Context, cl *kgo.Client, pid int) (kadm.DescribedTransaction, bool) {
	ds, err := kadm.NewClient(cl).DescribeTransactions(ctx)
	if err != nil {
		return kadm.DescribedTransaction{}, false
	}
	for id, d := range ds {
		if strings.HasPrefix(id, "__kmirror.e2e.txn.") && strings.HasSuffix(id, fmt.Sprintf(":%d", pid)) {
			return d, true
		}
	}
	return kadm.DescribedTransaction{}, false
}

func describeTxn(d kadm.DescribedTransaction, ok bool) string {
	if !ok {
		return "no transaction listed"
	}
	return fmt.Sprintf("%s %s (producer %d epoch %d, timeout %dms, partitions %v)", d.TxnID, d.State, d.ProducerID, d.ProducerEpoch, d.TimeoutMillis, d.Topics.Sorted())
}

// TestExactlyOnceZombie pauses (SIGSTOP) one of two instances of an
// exactly-once flow while it writes (a transaction with records on the
// replicated topic open), for longer than ownership_timeout, three times,
// and resumes it (SIGCONT):
//
//   - the moment the group coordinator dropped it from the flow's
//     ownership group: its transaction is still open and its producer not
//     fenced; the commit of its offset to the group, with a generation
//     that is gone, is refused (KIP-447);
//   - as soon as the other instance owns all partitions;
//   - only once its open transaction was aborted (by the other instance
//     fencing its producer, or by the brokers at the transaction timeout)
//     and the other instance wrote its partitions.
//
// Each time the resumed instance logs once that its transaction was
// fenced by the brokers and rejoins, and in the end a read_committed
// consumer of the target sees every source record exactly once, in order.
func TestExactlyOnceZombie(t *testing.T) {
	t.Parallel()
	const partitions = 6
	f := newEOSFixture(t, partitions, `ownership_timeout: 6s
`)
	f.produceSteady(60, 10*time.Millisecond)
	procs := []*proc{f.start(), f.start()}
	bothOwn := func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]bool{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]] = true
		}
		return answered == 2 && len(per) == 2 && len(owners) == partitions, describe(owners)
	}
	waitFor(t, 90*time.Second, "two instances to own the 6 partitions, each exactly one", bothOwn)
	// The zombie: an instance that is not elected.
	z := 0
	if e, _ := isElected(procs[0]); e {
		z = 1
	}
	zombie, survivor := procs[z], procs[1-z]
	pid := zombie.cmd.Process.Pid
	paused := false
	defer func() {
		if paused {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// pause pauses the zombie while a transaction of it with records on
	// the replicated topic is open, waits until the other instance owns
	// every partition (and, if aborted, until the brokers aborted the
	// open transaction and the other instance wrote the paused one's
	// partitions), resumes it and checks what it logs and that it
	// rejoins.
	const (
		resumeDropped = iota // when the group coordinator dropped it
		resumeOwned          // when the other instance owns every partition
		resumeAborted        // when its transaction was aborted and the other instance wrote
	)
	adm := kadm.NewClient(f.p.dstCl)
	pause := func(phase string, when int) {
		zparts, _ := owned(zombie)
		ends := endOffsets(t, f.p.dstCl, f.topic)
		waitFor(t, 60*time.Second, phase+": the instance to be writing its partitions", func() (bool, string) {
			now := endOffsets(t, f.p.dstCl, f.topic)
			for _, p := range zparts {
				if now[p] <= ends[p] {
					return false, fmt.Sprintf("partition %d: target end %d", p, now[p])
				}
			}
			return len(zparts) > 0, fmt.Sprintf("owns %v", zparts)
		})
		logFrom := len(zombie.output())
		// Stopped at a moment its transaction is open with records: if
		// the coordinator says otherwise a moment after the stop, it is
		// resumed at once and stopped again a little later.
		var atStopTxn kadm.DescribedTransaction
		tries := 0
		for {
			tries++
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			paused = true
			time.Sleep(300 * time.Millisecond) // an EndTxn sent before the stop is answered meanwhile
			d, ok := txnOf(ctx, f.p.dstCl, pid)
			if ok && d.State == "Ongoing" && len(d.Topics[f.topic]) > 0 {
				atStopTxn = d
				break
			}
			if tries == 30 {
				t.Fatalf("%s: in 30 tries the paused instance never had a transaction open with records; last: %s", phase, describeTxn(d, ok))
			}
			_ = syscall.Kill(pid, syscall.SIGCONT)
			paused = false
			time.Sleep(time.Duration(50+tries*37%200) * time.Millisecond)
		}
		stopped := time.Now().Add(-300 * time.Millisecond)
		t.Logf("%s: SIGSTOP of instance %d (partitions %v) with its transaction open (try %d): %s", phase, z, zparts, tries, describeTxn(atStopTxn, true))
		atStop := endOffsets(t, f.p.dstCl, f.topic)
		if when == resumeDropped {
			// Resumed the moment the coordinator removed it from the
			// group, before the other instance rejoined and took its
			// partitions: its transaction is still open and its producer
			// not fenced, so only the generation of its offset commit can
			// stop it.
			waitFor(t, 60*time.Second, phase+": the group coordinator to drop the paused instance", func() (bool, string) {
				gs, err := adm.DescribeGroups(ctx, "__kmirror.e2e.owners")
				if err != nil {
					return false, err.Error()
				}
				g := gs["__kmirror.e2e.owners"]
				return g.Err == nil && len(g.Members) == 1, fmt.Sprintf("%s, %d members (err %v)", g.State, len(g.Members), g.Err)
			})
			t.Logf("%s: the group coordinator dropped the paused instance %.1fs after SIGSTOP (ownership_timeout 6s)", phase, time.Since(stopped).Seconds())
		} else {
			took := waitFor(t, 60*time.Second, phase+": the other instance to own all 6 partitions", func() (bool, string) {
				owners, _ := ownership([]*proc{survivor})
				return len(owners) == partitions, describe(owners)
			})
			t.Logf("%s: the other instance owns every partition %.1fs after SIGSTOP (ownership_timeout 6s)", phase, took.Seconds()+0.3)
		}
		if when == resumeAborted {
			waitFor(t, 90*time.Second, phase+": the paused instance's transaction to be aborted", func() (bool, string) {
				d, ok := txnOf(ctx, f.p.dstCl, pid)
				return ok && (d.State == "CompleteAbort" || d.ProducerEpoch != atStopTxn.ProducerEpoch), describeTxn(d, ok)
			})
			d, ok := txnOf(ctx, f.p.dstCl, pid)
			t.Logf("%s: the paused instance's transaction was aborted (its producer fenced) %.1fs after SIGSTOP: %s", phase, time.Since(stopped).Seconds(), describeTxn(d, ok))
			waitFor(t, 90*time.Second, phase+": the other instance to write the paused instance's partitions", func() (bool, string) {
				now := endOffsets(t, f.p.dstCl, f.topic)
				for _, p := range zparts {
					if now[p] <= atStop[p]+100 {
						return false, fmt.Sprintf("partition %d: target end %d, %d at SIGSTOP", p, now[p], atStop[p])
					}
				}
				return true, ""
			})
			t.Logf("%s: the taken-over partitions were written %.1fs after SIGSTOP", phase, time.Since(stopped).Seconds())
		}
		atCont, okCont := txnOf(ctx, f.p.dstCl, pid)
		_ = syscall.Kill(pid, syscall.SIGCONT)
		paused = false
		cont := time.Now()
		t.Logf("%s: SIGCONT %.1fs after SIGSTOP; its transaction then: %s", phase, cont.Sub(stopped).Seconds(), describeTxn(atCont, okCont))
		since := func() string { return zombie.output()[logFrom:] }
		// Both polled together, neither fatal: the records on the target
		// are checked either way.
		var fencedAfter, rejoinedAfter time.Duration
		var state string
		for time.Since(cont) < 60*time.Second && (fencedAfter == 0 || rejoinedAfter == 0) {
			if fencedAfter == 0 && strings.Contains(since(), fencedLine) {
				fencedAfter = time.Since(cont)
			}
			// Counted once it said it stopped writing (lost the flow,
			// fenced, or aborted): until then it may still show the
			// ownership it had before the pause.
			out := since()
			if rejoinedAfter == 0 && (strings.Contains(out, fencedLine) || strings.Contains(out, "lost the flow") || strings.Contains(out, "transaction aborted")) {
				var ok bool
				if ok, state = bothOwn(); ok {
					rejoinedAfter = time.Since(cont)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if fencedAfter > 0 {
			t.Logf("%s: the resumed instance logged %q %.1fs after SIGCONT", phase, fencedLine, fencedAfter.Seconds())
		} else {
			t.Errorf("%s: the resumed instance did not log %q within 60s of SIGCONT", phase, fencedLine)
		}
		if rejoinedAfter > 0 {
			t.Logf("%s: the resumed instance owns partitions again %.1fs after SIGCONT", phase, rejoinedAfter.Seconds())
		} else {
			t.Errorf("%s: the resumed instance did not own partitions again within 60s of SIGCONT (or never said it stopped writing); ownership: %s", phase, state)
		}
		var lines []string
		for _, l := range strings.Split(since(), "\n") {
			if strings.Contains(l, fencedLine) || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		n := strings.Count(since(), fencedLine)
		t.Logf("%s: after SIGSTOP the resumed instance logged %q %d times; its warnings and errors:\n%s", phase, fencedLine, n, strings.Join(lines, "\n"))
		if n < 1 || n > 3 {
			t.Errorf("%s: the resumed instance logged %q %d times after one fencing, want 1 (at most 3)", phase, fencedLine, n)
		}
	}
	pause("resumed when dropped from the group", resumeDropped)
	pause("resumed at the take-over", resumeOwned)
	pause("resumed after its transaction was aborted", resumeAborted)

	// A few more seconds of traffic with both instances, then the end.
	more := f.committed.Load() + 3000
	waitFor(t, 60*time.Second, "3000 more source records", func() (bool, string) {
		return f.committed.Load() >= more, fmt.Sprintf("%d", f.committed.Load())
	})
	f.stopProducer()
	took := f.waitCaughtUp(2 * time.Minute)
	t.Logf("the target caught up %.1fs after the producer stopped", took.Seconds())

	srcRecs := readLog(t, ctx, f.p.srcCl, f.topic)
	dstRecs := readLog(t, ctx, f.p.dstCl, f.topic)
	exact := exactlyOnceReport(t, srcRecs, dstRecs, partitions)
	n, m := 0, 0
	for p := range int32(partitions) {
		n, m = n+len(srcRecs[p]), m+len(dstRecs[p])
	}
	raw := readUncommitted(t, ctx, f.p.dstCl, f.topic)
	rawN := 0
	for _, rs := range raw {
		rawN += len(rs)
	}
	t.Logf("read_committed: %d source records, %d on the target; exactly once, in order and equal: %v; read_uncommitted the target holds %d records, %d in aborted transactions of the flow",
		n, m, exact, rawN, rawN-m)
	// The instance that was never paused may see a commit refused while
	// the group rebalances when the other one rejoins: said, not failed.
	t.Logf("the instance that was never paused logged %q %d times; transactions committed/aborted: resumed instance %s, other instance %s",
		fencedLine, strings.Count(survivor.output(), fencedLine), txnCounts(zombie), txnCounts(survivor))
	t.Logf("warnings and errors of the instance that was never paused: %s", problems(survivor))
	for _, pr := range procs {
		pr.stop()
	}
}
