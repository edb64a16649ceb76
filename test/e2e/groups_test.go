package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// TestGroupOffsetsTranslateExactly replicates a plain topic, a compacted
// topic after compaction and a topic with aborted transactions; a consumer
// group reads part-way on the source and commits; after a sync a consumer
// of the same group on the target must get, on every partition, exactly
// the first record the group had not consumed on the source, and then
// exactly the rest: no duplicate, none missing.
func TestGroupOffsetsTranslateExactly(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	createTopic(t, p.srcCl, "plain", 2, nil)
	createTopic(t, p.srcCl, "compacted", 2, map[string]string{
		"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
	})
	createTopic(t, p.srcCl, "txn", 2, nil)

	// plain: 20,000 records.
	var recs []*kgo.Record
	for i := 0; i < 20_000; i++ {
		recs = append(recs, &kgo.Record{Topic: "plain", Partition: int32(i % 2), Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "plain-%d", i)})
	}
	produce(t, p.srcCl, recs)

	// compacted: 15,000 records over 300 keys, in batches so that segments
	// roll and the cleaner removes overwritten records.
	for b := 0; b < 30; b++ {
		recs = recs[:0]
		for i := 0; i < 500; i++ {
			n := b*500 + i
			recs = append(recs, &kgo.Record{Topic: "compacted", Partition: int32(n % 2), Key: fmt.Appendf(nil, "key-%d", n%300), Value: fmt.Appendf(nil, "v%d", n)})
		}
		produce(t, p.srcCl, recs)
		time.Sleep(120 * time.Millisecond)
	}
	// One more record per partition rolls the last full segment.
	time.Sleep(200 * time.Millisecond)
	produce(t, p.srcCl, []*kgo.Record{{Topic: "compacted", Partition: 0, Key: []byte("roll"), Value: []byte("r")}, {Topic: "compacted", Partition: 1, Key: []byte("roll"), Value: []byte("r")}})

	// txn: 15,000 records in transactions of 500, every third aborted.
	txCl := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("e2e-txn"))
	for b := 0; b < 30; b++ {
		if err := txCl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 500; i++ {
			n := b*500 + i
			txCl.Produce(ctx, &kgo.Record{Topic: "txn", Partition: int32(n % 2), Key: fmt.Appendf(nil, "t%d", n), Value: fmt.Appendf(nil, "txn-%d-batch-%d", n, b)}, nil)
		}
		if err := txCl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := txCl.EndTransaction(ctx, kgo.TransactionEndTry(b%3 != 2)); err != nil {
			t.Fatal(err)
		}
	}

	// Wait for the cleaner: fewer records than offsets in the compacted topic.
	waitFor(t, 90*time.Second, "compaction of the compacted topic", func() (bool, string) {
		rs, err := verify.ReadAll(ctx, p.srcCl, "compacted")
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, r := range rs {
			n += len(r)
		}
		ends := sum(endOffsets(t, p.srcCl, "compacted"))
		return int64(n) < ends/2, fmt.Sprintf("%d records for %d offsets", n, ends)
	})

	// A consumer group reads part-way on the source (read_committed) and
	// commits.
	topics := []string{"plain", "compacted", "txn"}
	const group = "billing"
	consumed := consumePartway(t, ctx, p.src.Bootstrap(), group, topics)
	t.Logf("group %s consumed %d records on the source and committed", group, consumed)
	committed, err := kadm.NewClient(p.srcCl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}

	// The record the group would read next on the source, per partition.
	next := map[string]map[int32]*kgo.Record{}
	remaining := map[string]map[int32]int{}
	for _, topic := range topics {
		rs := readCommitted(t, ctx, p.src.Bootstrap(), topic)
		next[topic], remaining[topic] = map[int32]*kgo.Record{}, map[int32]int{}
		for part, list := range rs {
			at := int64(0)
			if o, ok := committed.Lookup(topic, part); ok && o.At >= 0 {
				at = o.At
			}
			for i, r := range list {
				if r.Offset >= at {
					next[topic][part] = r
					remaining[topic][part] = len(list) - i
					break
				}
			}
		}
	}

	for _, topic := range topics {
		if len(next[topic]) != 2 {
			t.Fatalf("%s: the group has %d partitions left to read on the source, want 2 (remaining %v)", topic, len(next[topic]), remaining[topic])
		}
	}
	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["plain", "compacted", "txn"]
sync_interval: 1s
`))
	k := startKmirror(t, cfg, httpAddr)
	for _, topic := range topics {
		waitFor(t, 2*time.Minute, topic+" to be replicated", func() (bool, string) {
			s, d := readCommittedCount(t, ctx, p.src.Bootstrap(), topic), readCommittedCount(t, ctx, p.dst.Bootstrap(), "src."+topic)
			return s == d, fmt.Sprintf("source %d visible records, target %d", s, d)
		})
	}
	// After a sync interval the target group holds translated offsets.
	dstAdm := kadm.NewClient(p.dstCl)
	waitFor(t, 30*time.Second, "group offsets on the target", func() (bool, string) {
		off, err := dstAdm.FetchOffsets(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		n := 0
		committed.Each(func(o kadm.OffsetResponse) {
			if _, ok := off.Lookup("src."+o.Topic, o.Partition); ok {
				n++
			}
		})
		return n == len(committed.Sorted()), fmt.Sprintf("%d of %d partitions committed", n, len(committed.Sorted()))
	})
	time.Sleep(2 * time.Second) // one more sync interval: offsets settled
	k.stop()

	if off, err := dstAdm.FetchOffsets(ctx, group); err == nil {
		committed.Each(func(o kadm.OffsetResponse) {
			tgt, _ := off.Lookup("src."+o.Topic, o.Partition)
			t.Logf("group %s: source %s/%d committed %d -> target %d", group, o.Topic, o.Partition, o.At, tgt.At)
		})
	}
	// The same group on the target continues exactly where it stopped.
	got := consumeAll(t, ctx, p.dst.Bootstrap(), group, []string{"src.plain", "src.compacted", "src.txn"})
	checked := 0
	for _, topic := range topics {
		for part, want := range next[topic] {
			list := got["src."+topic][part]
			if len(list) == 0 {
				t.Errorf("%s/%d: the target group got nothing; want %q first", topic, part, want.Value)
				continue
			}
			if d := verify.Diff(want, list[0]); d != "" {
				t.Errorf("%s/%d: first record on the target is not the first unconsumed one on the source: %s", topic, part, d)
			}
			if len(list) != remaining[topic][part] {
				t.Errorf("%s/%d: the target group got %d records, the source group had %d left", topic, part, len(list), remaining[topic][part])
			}
			checked++
		}
	}
	if checked != 6 {
		t.Errorf("checked %d partitions, want 6", checked)
	}
	t.Logf("checked %d partitions: the target group resumed on exactly the next record, with exactly the remaining records", checked)
}

// consumePartway consumes every partition of topics as group, up to the
// middle of each partition's records, and commits what it consumed.
func consumePartway(t *testing.T, ctx context.Context, bootstrap, group string, topics []string) int {
	t.Helper()
	total := map[string]map[int32]int{}
	for _, topic := range topics {
		total[topic] = map[int32]int{}
		for part, rs := range readCommitted(t, ctx, bootstrap, topic) {
			total[topic][part] = len(rs)
		}
	}
	cl := newClient(t, bootstrap, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Hour))
	defer cl.Close()
	seen := map[string]map[int32]int{}
	consumed, want := 0, 0
	for _, ps := range total {
		for _, n := range ps {
			want += n / 2
		}
	}
	for consumed < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records: %v", consumed, want, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if seen[r.Topic] == nil {
				seen[r.Topic] = map[int32]int{}
			}
			if seen[r.Topic][r.Partition] < total[r.Topic][r.Partition]/2 {
				seen[r.Topic][r.Partition]++
				consumed++
				cl.MarkCommitRecords(r)
			}
		})
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	return consumed
}

// consumeAll consumes as group until it has been idle for 3 s.
func consumeAll(t *testing.T, ctx context.Context, bootstrap, group string, topics []string) map[string]map[int32][]*kgo.Record {
	t.Helper()
	cl := newClient(t, bootstrap, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit())
	defer cl.Close()
	out := map[string]map[int32][]*kgo.Record{}
	for {
		pollCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if fs.NumRecords() == 0 && pollCtx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) {
			if out[r.Topic] == nil {
				out[r.Topic] = map[int32][]*kgo.Record{}
			}
			out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], r)
		})
	}
}

// readCommitted reads topic from the start as a read_committed consumer
// until idle.
func readCommitted(t *testing.T, ctx context.Context, bootstrap, topic string) map[int32][]*kgo.Record {
	t.Helper()
	cl := newClient(t, bootstrap, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	out := map[int32][]*kgo.Record{}
	for {
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if fs.NumRecords() == 0 && pollCtx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) { out[r.Partition] = append(out[r.Partition], r) })
	}
}

func readCommittedCount(t *testing.T, ctx context.Context, bootstrap, topic string) int {
	n := 0
	for _, rs := range readCommitted(t, ctx, bootstrap, topic) {
		n += len(rs)
	}
	return n
}
