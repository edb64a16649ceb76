package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/dr"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/verify"
)

// TestOffsetMapSurvivesRestarts replicates a transactional topic written
// in spaced transactions (every third aborted) and a compacted topic while
// they are written, stopping kmirror with SIGTERM twice and killing it with
// SIGKILL once meanwhile. A group then commits half-way on the source.
// `kmirror offsets translate`, the group synced to the target, a consumer
// of that group on the target, and the offsets `kmirror failover
// --source-unreachable` commits must all land exactly on the first record
// the group has not read, on every partition.
func TestOffsetMapSurvivesRestarts(t *testing.T) {
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	createTopic(t, p.srcCl, "txn", 2, nil)
	createTopic(t, p.srcCl, "compacted", 2, map[string]string{
		"cleanup.policy": "compact", "segment.ms": "200", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
	})
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["txn", "compacted"]
sync_interval: 1s
`))

	// The writer: 36 transactions of 300 records (150 per partition),
	// 300 ms apart, every third aborted; and 100 compacted records over
	// 40 keys with each.
	const txns = 36
	var written atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		txCl := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("e2e-offsetmap"))
		for b := range txns {
			if err := txCl.BeginTransaction(); err != nil {
				writerDone <- err
				return
			}
			for i := range 300 {
				n := b*300 + i
				txCl.Produce(ctx, &kgo.Record{Topic: "txn", Partition: int32(n % 2), Key: fmt.Appendf(nil, "t%d", n), Value: fmt.Appendf(nil, "txn-%d-batch-%d", n, b)}, nil)
			}
			if err := txCl.Flush(ctx); err != nil {
				writerDone <- err
				return
			}
			if err := txCl.EndTransaction(ctx, kgo.TransactionEndTry(b%3 != 2)); err != nil {
				writerDone <- err
				return
			}
			var recs []*kgo.Record
			for i := range 100 {
				n := b*100 + i
				recs = append(recs, &kgo.Record{Topic: "compacted", Partition: int32(n % 2), Key: fmt.Appendf(nil, "key-%d", n%40), Value: fmt.Appendf(nil, "v%d", n)})
			}
			if err := p.srcCl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				writerDone <- err
				return
			}
			written.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
		writerDone <- nil
	}()
	waitWritten := func(n int64) {
		t.Helper()
		waitFor(t, 3*time.Minute, fmt.Sprintf("%d transactions written", n), func() (bool, string) {
			return written.Load() >= n, fmt.Sprintf("%d written", written.Load())
		})
	}
	// replicated waits until the flow copied something more.
	replicatedSome := func(min int64) {
		t.Helper()
		waitFor(t, 2*time.Minute, "records on the target", func() (bool, string) {
			n := sum(endOffsets(t, p.dstCl, "src.txn"))
			return n > min, fmt.Sprintf("%d on the target, want more than %d", n, min)
		})
	}

	k := startKmirror(t, cfgPath, httpAddr)
	waitWritten(6)
	replicatedSome(0)
	k.stop() // SIGTERM 1
	waitWritten(10)
	k = startKmirror(t, cfgPath, httpAddr)
	replicatedSome(sum(endOffsets(t, p.dstCl, "src.txn")))
	waitWritten(16)
	k.kill() // SIGKILL
	waitWritten(19)
	k = startKmirror(t, cfgPath, httpAddr)
	replicatedSome(sum(endOffsets(t, p.dstCl, "src.txn")))
	waitWritten(25)
	k.stop() // SIGTERM 2
	waitWritten(28)
	k = startKmirror(t, cfgPath, httpAddr)
	if err := <-writerDone; err != nil {
		t.Fatalf("writing the source: %v", err)
	}

	// Everything copied: the target holds the source's records (the
	// compacted topic's last record per partition is never compacted).
	topics := []string{"txn", "compacted"}
	waitFor(t, 3*time.Minute, "the flow to catch up", func() (bool, string) {
		for _, topic := range topics {
			s, d := readLog(t, ctx, p.srcCl, topic), readLog(t, ctx, p.dstCl, "src."+topic)
			for part := range int32(2) {
				if len(s[part]) == 0 || len(d[part]) == 0 || verify.Diff(s[part][len(s[part])-1], d[part][len(d[part])-1]) != "" {
					return false, fmt.Sprintf("%s/%d: %d records on the source, %d on the target", topic, part, len(s[part]), len(d[part]))
				}
			}
		}
		return true, ""
	})
	if s, d := readLog(t, ctx, p.srcCl, "txn"), readLog(t, ctx, p.dstCl, "src.txn"); len(s[0])+len(s[1]) != len(d[0])+len(d[1]) {
		t.Errorf("txn: %d committed records on the source, %d on the target", len(s[0])+len(s[1]), len(d[0])+len(d[1]))
	}

	// The group reads half of each partition on the source and commits.
	const group = "billing"
	// About half of each partition, not on a transaction's boundary: the
	// committed offset lies inside a run of the offset map.
	consumed, last := consumeSome(t, ctx, p.src.Bootstrap(), group, topics, func(topic string, rs []*kgo.Record) int64 {
		if topic == "txn" {
			return rs[len(rs)/2-77].Offset // inside a transaction of 150 records per partition
		}
		return rs[len(rs)/2].Offset
	})
	t.Logf("group %s consumed %d records on the source and committed", group, consumed)
	committed, err := kadm.NewClient(p.srcCl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	// The group's next record: the first one written after the last one
	// it read (records carry their write order in their value). On the
	// compacted topic the cleaners of both clusters remove records at
	// different times, so it is looked up on the target.
	next := map[string]map[int32]*kgo.Record{}
	want := map[string]map[int32]int64{}
	for _, topic := range topics {
		next[topic], want[topic] = map[int32]*kgo.Record{}, map[int32]int64{}
		tgt := readLog(t, ctx, p.dstCl, "src."+topic)
		for part := range int32(2) {
			read := last[topic][part]
			if read == nil {
				t.Fatalf("%s/%d: the group read nothing below the chosen offset", topic, part)
			}
			for _, r := range tgt[part] {
				if writeOrder(t, r) > writeOrder(t, read) {
					next[topic][part] = r
					want[topic][part] = r.Offset
					break
				}
			}
			if next[topic][part] == nil {
				t.Fatalf("%s/%d: no record on the target after %q, the last one the group read", topic, part, read.Value)
			}
			o, _ := committed.Lookup(topic, part)
			t.Logf("%s/%d: the group read %q (source offset %d) last and committed %d; the next record on the target is %q at target offset %d",
				topic, part, read.Value, read.Offset, o.At, next[topic][part].Value, want[topic][part])
		}
	}
	check := func(what string, got func(topic string, part int32) (int64, bool)) {
		t.Helper()
		for _, topic := range topics {
			for part, w := range want[topic] {
				g, exact := got(topic, part)
				if g != w || !exact {
					t.Errorf("%s: %s/%d = %d (exact %v), want %d exactly", what, topic, part, g, exact, w)
				} else {
					t.Logf("%s: %s/%d = %d, exact", what, topic, part, g)
				}
			}
		}
	}

	// kmirror offsets translate.
	out, stderr, err := runKmirror(t, time.Minute, "offsets", "translate", "--config", cfgPath, "--flow", "e2e", "--group", group, "--json")
	if err != nil {
		t.Fatalf("offsets translate: %v\n%s%s", err, out, stderr)
	}
	var rows []dr.Translated
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("offsets translate output: %v\n%s", err, out)
	}
	check("offsets translate", func(topic string, part int32) (int64, bool) {
		for _, r := range rows {
			if r.Topic == topic && r.Partition == part {
				return r.TargetOffset, r.Exact
			}
		}
		return -1, false
	})

	// The group synced to the target.
	dstAdm := kadm.NewClient(p.dstCl)
	// Wait (up to 30 s) for the synced offsets to reach the expected ones,
	// then check them, so that a wrong offset is reported as such.
	var synced kadm.OffsetResponses
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		synced, err = dstAdm.FetchOffsets(ctx, group)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("fetching the group's offsets on the target: %v", err)
			}
			continue
		}
		n := 0
		for _, topic := range topics {
			for part, w := range want[topic] {
				if o, ok := synced.Lookup("src."+topic, part); ok && o.At == w {
					n++
				}
			}
		}
		if n == 4 || time.Now().After(deadline) {
			break
		}
	}
	check("synced group offset", func(topic string, part int32) (int64, bool) {
		o, ok := synced.Lookup("src."+topic, part)
		return o.At, ok
	})
	k.stop()

	// A consumer of the group on the target starts on the next record.
	got := consumeAll(t, ctx, p.dst.Bootstrap(), group, []string{"src.txn", "src.compacted"})
	for _, topic := range topics {
		for part, n := range next[topic] {
			list := got["src."+topic][part]
			if len(list) == 0 || verify.Diff(n, list[0]) != "" {
				first := "nothing"
				if len(list) > 0 {
					first = fmt.Sprintf("%q at %d", list[0].Value, list[0].Offset)
				}
				t.Errorf("%s/%d: the group on the target read %s first, want %q", topic, part, first, n.Value)
			} else {
				t.Logf("consumer on the target: %s/%d starts with %q at %d, the group's next record", topic, part, list[0].Value, list[0].Offset)
			}
		}
	}

	// Failover with the source gone commits the checkpointed offsets.
	if _, err := dstAdm.DeleteGroup(ctx, group); err != nil {
		t.Fatalf("deleting the group on the target: %v", err)
	}
	p.src.Kill()
	out, stderr, err = runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--source-unreachable", "--json")
	if err != nil {
		t.Fatalf("failover --source-unreachable: %v\n%s%s", err, out, stderr)
	}
	after, err := dstAdm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	check("offset committed by failover --source-unreachable", func(topic string, part int32) (int64, bool) {
		o, ok := after.Lookup("src."+topic, part)
		return o.At, ok
	})
}

// writeOrder is the number a test record carries in its value: "txn-N-…"
// or "vN".
func writeOrder(t *testing.T, r *kgo.Record) int {
	t.Helper()
	var n int
	v := string(r.Value)
	if strings.HasPrefix(v, "txn-") {
		v = strings.TrimPrefix(v, "txn-")
	} else {
		v = strings.TrimPrefix(v, "v")
	}
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil {
		t.Fatalf("record value %q carries no number: %v", r.Value, err)
	}
	return n
}

// consumeSome consumes, as group, the records of each partition of topics
// below the offset bound gives for the partition's committed records, and
// commits. It returns how many it consumed and the last record of each
// partition.
func consumeSome(t *testing.T, ctx context.Context, bootstrap, group string, topics []string, bound func(topic string, rs []*kgo.Record) int64) (int, map[string]map[int32]*kgo.Record) {
	t.Helper()
	src := newClient(t, bootstrap)
	limit := map[string]map[int32]int64{}
	for _, topic := range topics {
		limit[topic] = map[int32]int64{}
		for part, rs := range readLog(t, ctx, src, topic) {
			limit[topic][part] = bound(topic, rs)
		}
	}
	cl := newClient(t, bootstrap, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Hour))
	defer cl.Close()
	last := map[string]map[int32]*kgo.Record{}
	reached := map[string]map[int32]bool{}
	consumed, parts := 0, 0
	for parts < len(topics)*2 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d records: %v", consumed, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if last[r.Topic] == nil {
				last[r.Topic], reached[r.Topic] = map[int32]*kgo.Record{}, map[int32]bool{}
			}
			if r.Offset >= limit[r.Topic][r.Partition] {
				if !reached[r.Topic][r.Partition] {
					reached[r.Topic][r.Partition] = true
					parts++
				}
				return
			}
			consumed++
			last[r.Topic][r.Partition] = r
			cl.MarkCommitRecords(r)
		})
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	return consumed, last
}

// readLog reads every partition of topic to its end, committed records
// only, without transaction markers.
func readLog(t *testing.T, ctx context.Context, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	out := map[int32][]*kgo.Record{}
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{}, func(r *kgo.Record) bool {
		if !r.Attrs.IsControl() {
			out[r.Partition] = append(out[r.Partition], r)
		}
		return true
	})
	if err != nil {
		t.Fatalf("reading %s: %v", topic, err)
	}
	return out
}
