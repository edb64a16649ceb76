package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/replicate"
)

// at returns a record at offset off whose content is named by id.
func at(off int64, id string, headers ...kgo.RecordHeader) *kgo.Record {
	return &kgo.Record{Offset: off, Key: []byte("k" + id), Value: []byte("v" + id), Timestamp: ts, Headers: headers}
}

// recs returns records at the given offsets, with ids "0", "1", ...
// in order.
func recs(offs ...int64) []*kgo.Record {
	out := make([]*kgo.Record, len(offs))
	for i, o := range offs {
		out[i] = at(o, fmt.Sprint(i))
	}
	return out
}

func TestComparePartition(t *testing.T) {
	loop := hdr(replicate.HeaderProvenance, []byte("TGT,SRC"))
	dropped := func(r *kgo.Record) bool { return len(r.Headers) > 0 && r.Headers[0].Key == replicate.HeaderProvenance }
	tests := []struct {
		name     string
		plan     Plan
		src, dst []*kgo.Record
		want     Counts
		diffs    []string // substrings of the differences, in order
	}{
		{
			name: "identical, one run",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 5}}, SourceEnd: 5, TargetEnd: 5},
			src:  recs(0, 1, 2, 3, 4), dst: recs(0, 1, 2, 3, 4),
			want: Counts{SourceRecords: 5, Matched: 5},
		},
		{
			// Source offsets 3, 4 aborted, 5 its marker, 8 a commit
			// marker: read_committed returns none of them.
			name: "aborted transaction and markers are gaps of the map",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3, Tail: 3}, {Source: 6, Target: 3, Len: 2, Gap: 3, Tail: 1}, {Source: 9, Target: 5, Len: 1, Gap: 1}}, SourceEnd: 10, TargetEnd: 6},
			src:  recs(0, 1, 2, 6, 7, 9), dst: recs(0, 1, 2, 3, 4, 5),
			want: Counts{SourceRecords: 6, Matched: 6},
		},
		{
			name: "range starting inside the map",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3, Tail: 3}, {Source: 6, Target: 3, Len: 2, Gap: 3}}, SourceStart: 6, SourceEnd: 8, TargetStart: 3, TargetEnd: 5},
			src:  recs(0, 1, 2, 6, 7)[3:], dst: recs(0, 1, 2, 3, 4)[3:],
			want: Counts{SourceRecords: 2, Matched: 2},
		},
		{
			name: "provenance drop is not a difference",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 1}, {Source: 2, Target: 1, Len: 1, Gap: 1}}, SourceEnd: 3, TargetEnd: 2, NotCopied: dropped},
			src:  []*kgo.Record{at(0, "a"), at(1, "loop", loop), at(2, "b")}, dst: []*kgo.Record{at(0, "a"), at(1, "b")},
			want: Counts{SourceRecords: 3, Matched: 2, NotCopied: 1},
		},
		{
			name:  "a record the map passes over without a reason is missing",
			plan:  Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 1}, {Source: 2, Target: 1, Len: 1, Gap: 1}}, SourceEnd: 3, TargetEnd: 2, NotCopied: dropped},
			src:   []*kgo.Record{at(0, "a"), at(1, "plain"), at(2, "b")},
			dst:   []*kgo.Record{at(0, "a"), at(1, "b")},
			want:  Counts{SourceRecords: 3, Matched: 2, Missing: 1},
			diffs: []string{"missing: topic \"t\" partition 0 source offset 1 (target \"p.t\" offset -): not copied"},
		},
		{
			name: "provenance header of the copy is ignored",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 2}}, SourceEnd: 2, TargetEnd: 2},
			src:  recs(0, 1), dst: []*kgo.Record{at(0, "0", hdr(replicate.HeaderProvenance, []byte("SRC,TGT"))), at(1, "1")},
			want: Counts{SourceRecords: 2, Matched: 2},
		},
		{
			name:  "altered value",
			plan:  Plan{Runs: []offsets.Run{{Source: 10, Target: 0, Len: 3}}, SourceStart: 10, SourceEnd: 13, TargetEnd: 3},
			src:   recs(10, 11, 12),
			dst:   []*kgo.Record{at(0, "0"), {Offset: 1, Key: []byte("k1"), Value: []byte("evil"), Timestamp: ts}, at(2, "2")},
			want:  Counts{SourceRecords: 3, Matched: 2, Altered: 1},
			diffs: []string{`altered: topic "t" partition 0 source offset 11 (target "p.t" offset 1): value "v1" != "evil"`},
		},
		{
			name: "deleted below the target's log start",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 4}}, SourceEnd: 4, TargetEnd: 4, TargetLogStart: 2},
			src:  recs(0, 1, 2, 3), dst: recs(0, 1, 2, 3)[2:],
			want:  Counts{SourceRecords: 4, Matched: 2, Missing: 2},
			diffs: []string{"missing: topic \"t\" partition 0 source offset 0 (target \"p.t\" offset 0): deleted from the target", "source offset 1 "},
		},
		{
			name:  "duplicated after the copies",
			plan:  Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 4},
			src:   recs(0, 1, 2),
			dst:   append(recs(0, 1, 2), at(3, "1")),
			want:  Counts{SourceRecords: 3, Matched: 3, Extra: 1, Duplicated: 1},
			diffs: []string{`duplicated: topic "t" partition 0 source offset 1 (target "p.t" offset 3): a second copy of source offset 1`},
		},
		{
			name:  "duplicated between runs (a retried write)",
			plan:  Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 2}, {Source: 2, Target: 3, Len: 1}}, SourceEnd: 3, TargetEnd: 4},
			src:   recs(0, 1, 2),
			dst:   []*kgo.Record{at(0, "0"), at(1, "1"), at(2, "1"), at(3, "2")},
			want:  Counts{SourceRecords: 3, Matched: 3, Extra: 1, Duplicated: 1},
			diffs: []string{"duplicated: topic \"t\" partition 0 source offset 1 (target \"p.t\" offset 2)"},
		},
		{
			name:  "extra",
			plan:  Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 1}}, SourceEnd: 1, TargetEnd: 2},
			src:   recs(0),
			dst:   []*kgo.Record{at(0, "0"), at(1, "new")},
			want:  Counts{SourceRecords: 1, Matched: 1, Extra: 1},
			diffs: []string{"extra: topic \"t\" partition 0 source offset - (target \"p.t\" offset 1)"},
		},
		{
			name: "compacted on the source after the copy",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 3, Compacted: true},
			src:  []*kgo.Record{at(0, "0"), at(2, "2")}, dst: recs(0, 1, 2),
			want: Counts{SourceRecords: 2, Matched: 2, Compacted: 1},
		},
		{
			name: "gone from a topic that is not compacted",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 3},
			src:  []*kgo.Record{at(0, "0"), at(2, "2")}, dst: recs(0, 1, 2),
			want:  Counts{SourceRecords: 2, Matched: 2, Extra: 1},
			diffs: []string{"extra: topic \"t\" partition 0 source offset 1 (target \"p.t\" offset 1): its source record is no longer on the source"},
		},
		{
			name: "compacted on the target",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 3, Compacted: true},
			src:  recs(0, 1, 2), dst: []*kgo.Record{at(0, "0"), at(2, "2")},
			want: Counts{SourceRecords: 3, Matched: 2, Compacted: 1},
		},
		{
			name: "missing in a topic that is not compacted",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 3},
			src:  recs(0, 1, 2), dst: []*kgo.Record{at(0, "0"), at(2, "2")},
			want:  Counts{SourceRecords: 3, Matched: 2, Missing: 1},
			diffs: []string{"missing: topic \"t\" partition 0 source offset 1 (target \"p.t\" offset 1): not on the target"},
		},
		{
			// Source offsets 2..4 lie between runs that do not cover
			// them: paired in order with target offsets 2..3.
			name: "hole of the map paired in order",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 2}, {Source: 5, Target: 4, Len: 1}}, SourceEnd: 6, TargetEnd: 5},
			src:  recs(0, 1, 2, 4, 5), dst: recs(0, 1, 2, 3, 4),
			want: Counts{SourceRecords: 5, Matched: 5},
		},
		{
			name: "copy past the target's end",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 3}}, SourceEnd: 3, TargetEnd: 3},
			src:  recs(0, 1, 2), dst: recs(0, 1),
			want:  Counts{SourceRecords: 3, Matched: 2, Missing: 1},
			diffs: []string{"source offset 2 (target \"p.t\" offset 2): not on the target"},
		},
		{
			name: "foreign target records are not compared",
			plan: Plan{Runs: []offsets.Run{{Source: 0, Target: 0, Len: 1}, {Source: 1, Target: 2, Len: 1}}, SourceEnd: 2, TargetEnd: 3,
				Foreign: func(r *kgo.Record) bool { return string(r.Value) == "vother" }},
			src:  recs(0, 1),
			dst:  []*kgo.Record{at(0, "0"), at(1, "other"), at(2, "1")},
			want: Counts{SourceRecords: 2, Matched: 2, Foreign: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := tc.plan
			plan.Topic, plan.TargetTopic, plan.MaxDifferences = "t", "p.t", 10
			plan.Ignore = []string{replicate.HeaderProvenance}
			var passed int64
			res, err := ComparePartition(context.Background(), &plan, &sliceStream{tc.src}, &sliceStream{tc.dst}, func(n int64) { passed += n })
			if err != nil {
				t.Fatal(err)
			}
			got := res.Counts
			got.Bytes = 0
			if got != tc.want {
				t.Errorf("counts %+v, want %+v; differences %v", got, tc.want, res.Differences)
			}
			if passed != plan.SourceEnd-plan.SourceStart {
				t.Errorf("progress passed %d offsets, want %d", passed, plan.SourceEnd-plan.SourceStart)
			}
			if len(res.Differences) != int(got.Differences()) {
				t.Errorf("%d differences listed, %d counted", len(res.Differences), got.Differences())
			}
			for i, want := range tc.diffs {
				if i >= len(res.Differences) || !strings.Contains(res.Differences[i].String(), want) {
					t.Errorf("difference %d: want one containing %q; got %v", i, want, res.Differences)
				}
			}
		})
	}
}

func TestComparePartitionKeepsFewDifferences(t *testing.T) {
	plan := Plan{Topic: "t", TargetTopic: "t", Runs: []offsets.Run{{Source: 0, Target: 0, Len: 100}}, SourceEnd: 100, TargetEnd: 100, MaxDifferences: 3}
	var src []*kgo.Record
	for i := range int64(100) {
		src = append(src, at(i, fmt.Sprint(i)))
	}
	res, err := ComparePartition(context.Background(), &plan, &sliceStream{src}, &sliceStream{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Missing != 100 || len(res.Differences) != 3 {
		t.Errorf("missing %d, %d differences kept; want 100, 3", res.Missing, len(res.Differences))
	}
}

func TestDuplicateWindow(t *testing.T) {
	// Two equal records compared far apart, then a third copy after
	// more than the window: the first copy's eviction must not forget
	// the second.
	n := int64(dupWindow + 10)
	var src, dst []*kgo.Record
	for i := range n {
		id := fmt.Sprint(i)
		if i == 0 || i == dupWindow-5 {
			id = "same"
		}
		src = append(src, at(i, id))
		dst = append(dst, at(i, id))
	}
	dst = append(dst, at(n, "same"))
	plan := Plan{Topic: "t", TargetTopic: "t", Runs: []offsets.Run{{Source: 0, Target: 0, Len: n}}, SourceEnd: n, TargetEnd: n + 1, MaxDifferences: 5}
	res, err := ComparePartition(context.Background(), &plan, &sliceStream{src}, &sliceStream{dst}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicated != 1 || res.Differences[0].SourceOffset != dupWindow-5 {
		t.Errorf("duplicated %d, differences %v; want the copy of source offset %d", res.Duplicated, res.Differences, dupWindow-5)
	}
}
