package flow

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

// TestResumeCoversTheMarkerBeforeTheFirstMatchedRecord resumes from a
// position stored just before a transaction marker, with the target
// holding the next transaction's records: the run the matched records make
// covers the marker, so a group committed on it translates exactly.
func TestResumeCoversTheMarkerBeforeTheFirstMatchedRecord(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src", "tgt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts := time.UnixMilli(1_700_000_000_000)
	rec := func(topic, v string) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: []byte(v), Value: []byte(v), Timestamp: ts}
	}
	// Source: a0..a4 (0-4), marker (5), b0..b2 (6-8), marker (9).
	producer := client(kgo.TransactionalID("txn"))
	for _, batch := range [][]string{{"a0", "a1", "a2", "a3", "a4"}, {"b0", "b1", "b2"}} {
		if err := producer.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range batch {
			if err := producer.ProduceSync(ctx, rec("src", v)).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	// Target: every record copied (0-7); the progress stored stops at a4.
	tgt := client()
	for _, v := range []string{"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"} {
		if err := tgt.ProduceSync(ctx, rec("tgt", v)).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	tgtEnds, err := kadm.NewClient(tgt).ListEndOffsets(ctx, "tgt")
	if err != nil {
		t.Fatal(err)
	}

	r := &run{Flow: &Flow{cfg: &config.Flow{Name: "f"}, metrics: metrics.New(), logger: slog.New(slog.DiscardHandler)}, src: client(), tgt: tgt}
	omap := offsets.NewMap([]offsets.Run{{Source: 0, Target: 0, Len: 5}})
	pos := r.resume(ctx, resumePoint{
		id: progress.Partition{Topic: "src", Partition: 0}, target: "tgt",
		pos: progress.Position{SourceNext: 5, TargetNext: 5}, sourceStart: 0, sourceEnd: 10,
	}, tgtEnds, omap)

	if pos.SourceNext != 9 || pos.TargetNext != 8 {
		t.Errorf("resumed at source %d, target %d; want 9, 8", pos.SourceNext, pos.TargetNext)
	}
	for _, tc := range []struct {
		src  int64
		want offsets.Result
	}{
		{4, offsets.Result{Target: 4, Exact: true}},
		{5, offsets.Result{Target: 5, Exact: true}}, // the marker: b0 is next
		{6, offsets.Result{Target: 5, Exact: true}},
		{8, offsets.Result{Target: 7, Exact: true}},
	} {
		if got := omap.Translate(tc.src, pos.TargetNext); got != tc.want {
			t.Errorf("Translate(%d) = %+v, want %+v (runs %+v)", tc.src, got, tc.want, omap.Runs())
		}
	}
}

// TestResumePastDeletedSourceRecords resumes from a position below the
// source's log start offset: the target records past the position are
// copies of deleted source records the previous run wrote after its last
// progress write. They are counted as copied (the loss reported after is
// only what the target lacks), and copies of records from the log start on
// are compared as usual.
func TestResumePastDeletedSourceRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		name       string
		onTarget   []int // the source records the target holds, in order
		wantSource int64
		wantTarget int64
	}{
		{"nothing past the position", []int{0, 1, 2}, 3, 3},
		{"some deleted records copied", []int{0, 1, 2, 3, 4}, 5, 5},
		{"every deleted record copied", []int{0, 1, 2, 3, 4, 5}, 6, 6},
		{"copied past the log start", []int{0, 1, 2, 3, 4, 5, 6, 7}, 8, 8},
		// The previous run met the deletion at s5 itself and went on
		// from the log start.
		{"went on from the log start", []int{0, 1, 2, 3, 4, 6, 7}, 8, 7},
		{"went on from the log start at once", []int{0, 1, 2, 6}, 7, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src", "tgt"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			rec := func(topic string, i int) *kgo.Record {
				v := []byte{'s', byte('0' + i)}
				return &kgo.Record{Topic: topic, Key: v, Value: v, Timestamp: ts}
			}
			var recs []*kgo.Record
			for i := range 10 {
				recs = append(recs, rec("src", i))
			}
			for _, i := range tc.onTarget {
				recs = append(recs, rec("tgt", i))
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			tgtEnds, err := kadm.NewClient(cl).ListEndOffsets(ctx, "tgt")
			if err != nil {
				t.Fatal(err)
			}
			r := &run{Flow: &Flow{cfg: &config.Flow{Name: "f"}, metrics: metrics.New(), logger: slog.New(slog.DiscardHandler)}, src: cl, tgt: cl}
			omap := offsets.NewMap([]offsets.Run{{Source: 0, Target: 0, Len: 3}})
			// Stored at s3; the source deleted s0..s5 (log start 6).
			pos := r.resume(ctx, resumePoint{
				id: progress.Partition{Topic: "src", Partition: 0}, target: "tgt",
				pos: progress.Position{SourceNext: 3, TargetNext: 3}, sourceStart: 6, sourceEnd: 10,
			}, tgtEnds, omap)
			if pos.SourceNext != tc.wantSource || pos.TargetNext != tc.wantTarget {
				t.Fatalf("resumed at source %d, target %d; want %d, %d", pos.SourceNext, pos.TargetNext, tc.wantSource, tc.wantTarget)
			}
			if tc.wantSource > 3 {
				last := tc.wantSource - 1
				if got := omap.Translate(last, pos.TargetNext); got != (offsets.Result{Target: tc.wantTarget - 1, Exact: true}) {
					t.Errorf("Translate(%d) = %+v, want target %d exactly (runs %+v)", last, got, tc.wantTarget-1, omap.Runs())
				}
			}
		})
	}
}
