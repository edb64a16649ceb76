package flowverify

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
)

// TestVerifyFlow builds on kfake what a flow leaves behind: a source
// partition with plain records, an aborted and a committed transaction
// (markers included), its copy on the target and the offset map in the
// progress topic; then breaks the target step by step.
var ts = time.UnixMilli(1_700_000_000_000)

func TestVerifyFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srcC, dstC := kfaketest.Cluster(t), kfaketest.Cluster(t)
	src := kfaketest.Client(t, srcC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	dst := kfaketest.Client(t, dstC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	txn := kfaketest.Client(t, srcC, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("verify-test"))
	for _, c := range []*kgo.Client{src, dst} {
		if _, err := kadm.NewClient(c).CreateTopic(ctx, 1, -1, nil, "orders"); err != nil && !strings.Contains(err.Error(), "EXISTS") {
			t.Fatal(err)
		}
	}
	if _, err := kadm.NewClient(dst).CreateTopic(ctx, 1, -1, nil, "src.orders"); err != nil {
		t.Fatal(err)
	}
	rec := func(topic, id string) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: []byte("k" + id), Value: []byte("v" + id), Timestamp: ts}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Source: 0-2 plain, 3-4 aborted + marker 5, 6-7 committed + marker
	// 8, 9 plain.
	must(src.ProduceSync(ctx, rec("orders", "0"), rec("orders", "1"), rec("orders", "2")).FirstErr())
	for i, commit := range []bool{false, true} {
		must(txn.BeginTransaction())
		must(txn.ProduceSync(ctx, rec("orders", fmt.Sprintf("t%d-0", i)), rec("orders", fmt.Sprintf("t%d-1", i))).FirstErr())
		must(txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
	}
	must(src.ProduceSync(ctx, rec("orders", "9")).FirstErr())
	ends, err := kadm.NewClient(src).ListEndOffsets(ctx, "orders")
	must(err)
	if e, _ := ends.Lookup("orders", 0); e.Offset != 10 {
		t.Fatalf("source end offset %d, want 10", e.Offset)
	}
	// The copy, as the flow writes it, and its offset map.
	must(dst.ProduceSync(ctx, rec("src.orders", "0"), rec("src.orders", "1"), rec("src.orders", "2"),
		rec("src.orders", "t1-0"), rec("src.orders", "t1-1"), rec("src.orders", "9")).FirstErr())
	store := progress.NewStore(dst, policy.ProgressTopic("src-to-dst"))
	must(store.Ensure(ctx, -1))
	must(store.Write(ctx, []progress.Entry{{
		Partition: progress.Partition{Topic: "orders", Partition: 0},
		Position:  progress.Position{SourceNext: 10, TargetNext: 6, Stopped: true},
		Runs: []offsets.Run{
			{Source: 0, Target: 0, Len: 3, Tail: 3},
			{Source: 6, Target: 3, Len: 2, Gap: 3, Tail: 1},
			{Source: 9, Target: 5, Len: 1, Gap: 1},
		},
	}}))

	cfg, err := config.Parse("kmirror.yaml", []byte(fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
flows:
  - source: src
    target: dst
`, srcC.ListenAddrs()[0], dstC.ListenAddrs()[0])), nil)
	must(err)
	verifyNow := func(o Options) *FlowReport {
		t.Helper()
		rep, err := VerifyFlow(ctx, cfg, cfg.Flows[0], o)
		must(err)
		return rep
	}

	rep := verifyNow(Options{})
	if !rep.Equal || rep.Totals.SourceRecords != 6 || rep.Totals.Matched != 6 || !rep.CleanStop {
		t.Fatalf("intact copy: equal %v, clean stop %v, totals %+v, differences %v", rep.Equal, rep.CleanStop, rep.Totals, rep.Differences)
	}
	if len(rep.Topics) != 1 || rep.Topics[0].TargetTopic != "src.orders" || rep.Topics[0].Partitions != 1 {
		t.Errorf("topics %+v, want orders -> src.orders", rep.Topics)
	}
	// Only the records from source offset 6 on.
	if rep := verifyNow(Options{FromOffset: 6}); !rep.Equal || rep.Totals.SourceRecords != 3 || rep.Totals.Matched != 3 {
		t.Errorf("--from-offset 6: equal %v, totals %+v", rep.Equal, rep.Totals)
	}
	if _, err := VerifyFlow(ctx, cfg, cfg.Flows[0], Options{Topics: regexp.MustCompile("^nope$")}); err == nil {
		t.Error("a --topics regex matching nothing verified")
	}

	// A record the flow did not write, after it stopped.
	must(dst.ProduceSync(ctx, rec("src.orders", "t1-0")).FirstErr())
	rep = verifyNow(Options{})
	if rep.Equal || rep.Totals.Duplicated != 1 || rep.Totals.Matched != 6 || len(rep.Differences) != 1 {
		t.Fatalf("duplicated record: equal %v, totals %+v, differences %v", rep.Equal, rep.Totals, rep.Differences)
	}
	d := rep.Differences[0]
	if d.Kind != verify.KindDuplicated || d.SourceOffset != 6 || d.TargetOffset != 6 || d.Topic != "orders" {
		t.Errorf("difference %+v, want source offset 6 duplicated at target offset 6", d)
	}

	// The target's first records deleted.
	_, err = kadm.NewClient(dst).DeleteRecords(ctx, kadm.Offsets{"src.orders": {0: {Topic: "src.orders", Partition: 0, At: 2}}})
	must(err)
	rep = verifyNow(Options{})
	if rep.Equal || rep.Totals.Missing != 2 || rep.Differences[0].Kind != verify.KindMissing || rep.Differences[0].SourceOffset != 0 {
		t.Fatalf("deleted records: equal %v, totals %+v, differences %v", rep.Equal, rep.Totals, rep.Differences)
	}
}

// TestVerifyFlowProvenance checks a flow with provenance (identity
// naming): a source record whose path already holds the target is not
// copied by design, and a record the target's own producers wrote between
// the copies is not the flow's: neither is a difference. A source record
// the map passes over that the flow would have copied is missing.
func TestVerifyFlowProvenance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srcC, dstC := kfaketest.Cluster(t), kfaketest.Cluster(t)
	src := kfaketest.Client(t, srcC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	dst := kfaketest.Client(t, dstC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	id := func(cl *kgo.Client) string {
		m, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		must(err)
		return m.Cluster
	}
	srcID, dstID := id(src), id(dst)
	for _, c := range []*kgo.Client{src, dst} {
		_, err := kadm.NewClient(c).CreateTopic(ctx, 1, -1, nil, "orders")
		must(err)
	}
	rec := func(v string, path string) *kgo.Record {
		r := &kgo.Record{Topic: "orders", Value: []byte(v), Timestamp: ts}
		if path != "" {
			r.Headers = []kgo.RecordHeader{{Key: "kmirror.provenance", Value: []byte(path)}}
		}
		return r
	}
	// Source: 0 and 2 produced there, 1 copied there from the target by
	// flow dst-to-src (a loop), 3 produced there.
	back := "2;dst-to-src;" + dstID + "," + srcID
	must(src.ProduceSync(ctx, rec("a", ""), rec("loop", back), rec("b", ""), rec("c", "")).FirstErr())
	// dst-to-src's progress on the source proves offset 1 its copy (of
	// the target's offset 1), and that it wrote nothing else up to 5.
	reverse := progress.NewStore(src, policy.ProgressTopic("dst-to-src"))
	must(reverse.Ensure(ctx, -1))
	must(reverse.Write(ctx, []progress.Entry{{
		Partition: progress.Partition{Topic: "orders", Partition: 0},
		Position:  progress.Position{SourceNext: 2, TargetNext: 5},
		Runs:      []offsets.Run{{Source: 1, Target: 1, Len: 1}},
	}}))
	// Target: the copies of 0 and 2 with their path, a record of the
	// target's own producers between them.
	copyPath := srcID + "," + dstID
	must(dst.ProduceSync(ctx, rec("a", copyPath), rec("local", ""), rec("b", copyPath)).FirstErr())
	store := progress.NewStore(dst, policy.ProgressTopic("src-to-dst"))
	must(store.Ensure(ctx, -1))
	write := func(runs ...offsets.Run) {
		must(store.Write(ctx, []progress.Entry{{
			Partition: progress.Partition{Topic: "orders", Partition: 0},
			Position:  progress.Position{SourceNext: 3, TargetNext: 3, Stopped: true},
			Runs:      runs,
		}}))
	}
	write(offsets.Run{Source: 0, Target: 0, Len: 1, Tail: 1}, offsets.Run{Source: 2, Target: 2, Len: 1, Gap: 1})
	cfg, err := config.Parse("kmirror.yaml", []byte(fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
flows:
  - source: src
    target: dst
    topic_naming: identity
`, srcC.ListenAddrs()[0], dstC.ListenAddrs()[0])), nil)
	must(err)
	if !cfg.Flows[0].UsesProvenance() {
		t.Fatal("identity naming without provenance")
	}
	rep, err := VerifyFlow(ctx, cfg, cfg.Flows[0], Options{})
	must(err)
	want := verify.Counts{SourceRecords: 3, Matched: 2, NotCopied: 1, Foreign: 1}
	got := rep.Totals
	got.Bytes = 0
	if !rep.Equal || got != want {
		t.Fatalf("equal %v, totals %+v, want %+v; differences %v", rep.Equal, got, want, rep.Differences)
	}
	// Source offset 3 ("c", produced on the source) lies in the stored
	// range without a run: the flow would have copied it.
	write(offsets.Run{Source: 0, Target: 0, Len: 1, Tail: 1}, offsets.Run{Source: 2, Target: 2, Len: 1, Gap: 1, Tail: 1})
	must(store.Write(ctx, []progress.Entry{{Partition: progress.Partition{Topic: "orders", Partition: 0}, Position: progress.Position{SourceNext: 4, TargetNext: 3}}}))
	rep, err = VerifyFlow(ctx, cfg, cfg.Flows[0], Options{})
	must(err)
	if rep.Equal || rep.Totals.Missing != 1 || len(rep.Differences) != 1 || rep.Differences[0].SourceOffset != 3 || rep.Differences[0].Kind != verify.KindMissing {
		t.Fatalf("record passed over: equal %v, totals %+v, differences %v", rep.Equal, rep.Totals, rep.Differences)
	}
	// A record whose mark names dst-to-src, which did not write it (a
	// forwarded or forged header), is not a copy: missing if the flow
	// passed over it.
	must(src.ProduceSync(ctx, rec("forged", back)).FirstErr())
	write(offsets.Run{Source: 0, Target: 0, Len: 1, Tail: 1}, offsets.Run{Source: 2, Target: 2, Len: 1, Gap: 1, Tail: 3})
	must(store.Write(ctx, []progress.Entry{{Partition: progress.Partition{Topic: "orders", Partition: 0}, Position: progress.Position{SourceNext: 5, TargetNext: 3}}}))
	rep, err = VerifyFlow(ctx, cfg, cfg.Flows[0], Options{})
	must(err)
	if rep.Equal || rep.Totals.Missing != 2 || rep.Totals.NotCopied != 1 || len(rep.Differences) != 2 || rep.Differences[1].SourceOffset != 4 || rep.Differences[1].Kind != verify.KindMissing {
		t.Fatalf("forged mark: equal %v, totals %+v, differences %v; want offsets 3 and 4 missing, 1 not copied", rep.Equal, rep.Totals, rep.Differences)
	}
}
