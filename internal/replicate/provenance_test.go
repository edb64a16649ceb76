package replicate

import (
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
)

func hdr(kv ...string) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

func TestProvenanceApply(t *testing.T) {
	pv := &Provenance{SourceID: "S", TargetID: "T", Routed: func(origin string) bool { return origin == "R" }}
	for _, tc := range []struct {
		name string
		in   []kgo.RecordHeader
		want []kgo.RecordHeader
		drop string
	}{
		{"no headers: origin is the source", nil, hdr(HeaderProvenance, "S,T"), ""},
		{"other headers kept in order, header last", hdr("a", "1", "b", "2"), hdr("a", "1", "b", "2", HeaderProvenance, "S,T"), ""},
		{"path extended in place", hdr("a", "1", HeaderProvenance, "X,S", "b", "2"), hdr("a", "1", HeaderProvenance, "X,S,T", "b", "2"), ""},
		{"empty header value: origin is the source", hdr(HeaderProvenance, ""), hdr(HeaderProvenance, "S,T"), ""},
		{"header twice: one kept, at the first place", hdr(HeaderProvenance, "X,S", "a", "1", HeaderProvenance, "Y,S"), hdr(HeaderProvenance, "X,S,T", "a", "1"), ""},
		{"source missing from the path: added", hdr(HeaderProvenance, "X"), hdr(HeaderProvenance, "X,S,T"), ""},
		{"target is the origin: loop", hdr(HeaderProvenance, "T,S"), nil, metrics.DropLoop},
		{"target on the way: loop", hdr(HeaderProvenance, "X,T,S"), nil, metrics.DropLoop},
		{"loop before routing", hdr(HeaderProvenance, "R,T,S"), nil, metrics.DropLoop},
		{"origin routed by another flow", hdr(HeaderProvenance, "R,S"), nil, metrics.DropRouted},
		{"origin not routed (or unknown): forwarded", hdr(HeaderProvenance, "U,S"), hdr(HeaderProvenance, "U,S,T"), ""},
		{"duplicate other headers untouched", hdr("h", "1", "h", "1"), hdr("h", "1", "h", "1", HeaderProvenance, "S,T"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]kgo.RecordHeader(nil), tc.in...)
			got, drop := pv.Apply(in)
			if drop != tc.drop || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Apply(%v) = %v, %q; want %v, %q", tc.in, got, drop, tc.want, tc.drop)
			}
			if !reflect.DeepEqual(in, tc.in) {
				t.Errorf("Apply modified its input: %v", in)
			}
			if tc.drop == "" && !pv.Wrote(&kgo.Record{Headers: got}) {
				t.Errorf("Wrote(%v) = false for a record the flow wrote", got)
			}
		})
	}
	for _, h := range [][]kgo.RecordHeader{nil, hdr(HeaderProvenance, "S"), hdr(HeaderProvenance, "X,T"), hdr(HeaderProvenance, "S,T,U")} {
		if pv.Wrote(&kgo.Record{Headers: h}) {
			t.Errorf("Wrote(%v) = true for a record another writer wrote", h)
		}
	}
	// A source without a routed func forwards every origin.
	if _, drop := (&Provenance{SourceID: "S", TargetID: "T"}).Apply(hdr(HeaderProvenance, "R,S")); drop != "" {
		t.Errorf("without Routed: dropped as %q", drop)
	}
}

// A flow with provenance writes only the records its provenance lets
// through, each with the path extended by the target; the dropped ones
// are counted by reason and move the position like transaction markers:
// the position reaches the source's end, the stored offset map equals the
// one in memory, and every source offset, a dropped one included,
// translates exactly to the first record written at or after it.
func TestReplicateProvenance(t *testing.T) {
	e := newEnv(t)
	const src, dst, parts = "events", "events", int32(2)
	e.createTopic(t, e.srcAdmin, src, parts, nil)
	e.createTopic(t, e.tgtAdmin, dst, parts, nil)
	pv := &Provenance{SourceID: "S", TargetID: "T", Routed: func(origin string) bool { return origin == "R" }}
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: 20 * time.Millisecond, Provenance: pv,
		Metrics: e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	r.Add(assignments(src, dst, parts))
	stop := e.run(t, r)

	// Per partition, in runs: local records, records that came from the
	// target (loop), from a routed origin, and from an origin not routed.
	kinds := []struct {
		path string
		drop string
	}{{"", ""}, {"T,S", metrics.DropLoop}, {"R,S", metrics.DropRouted}, {"U,S", ""}, {"X,T,S", metrics.DropLoop}}
	var in []*kgo.Record
	want := map[string]int{}
	for i := range 60 {
		k := kinds[(i/3)%len(kinds)] // runs of 3 of each kind
		for p := range parts {
			rec := &kgo.Record{Partition: p, Key: fmt.Appendf(nil, "%d-%d", p, i), Value: []byte("v"), Headers: hdr("app", "x")}
			if k.path != "" {
				rec.Headers = append(rec.Headers, hdr(HeaderProvenance, k.path)...)
			}
			in = append(in, rec)
			want[k.drop]++
		}
	}
	e.produce(t, src, in[:len(in)/2]...)
	e.produce(t, src, in[len(in)/2:]...)
	ends := endOffsets(t, e.ctx, e.srcAdmin, src)
	waitFor(t, "positions at the source's end", func() bool {
		pos := r.Positions()
		for p := range parts {
			if pos[progress.Partition{Topic: src, Partition: p}].SourceNext != ends[p] {
				return false
			}
		}
		return true
	})

	// Record by record: the target holds the written records in source
	// order with the path extended.
	srcRecs, err := verify.ReadAll(e.ctx, e.producer, src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify.ReadAll(e.ctx, e.tgtClient, dst)
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for p := range parts {
		var exp []*kgo.Record
		for _, s := range srcRecs[p] {
			if out, ok := pv.Copy(s); ok {
				exp = append(exp, out)
			}
		}
		if len(got[p]) != len(exp) {
			t.Fatalf("partition %d: target has %d records, want %d", p, len(got[p]), len(exp))
		}
		for i := range exp {
			if d := verify.Diff(exp[i], got[p][i]); d != "" {
				t.Errorf("partition %d target offset %d: %s", p, i, d)
			}
			if path := Path(got[p][i].Headers); path[len(path)-1] != "T" || path[len(path)-2] != "S" {
				t.Errorf("partition %d target offset %d: path %v does not end with S,T", p, i, path)
			}
		}
		written += len(exp)
	}
	if written != want[""] {
		t.Errorf("%d records written, want %d", written, want[""])
	}
	for reason, c := range map[string]prometheus.Counter{
		metrics.DropLoop:   e.metrics.ProvenanceDropped.WithLabelValues(flowName, src, metrics.DropLoop),
		metrics.DropRouted: e.metrics.ProvenanceDropped.WithLabelValues(flowName, src, metrics.DropRouted),
	} {
		if n := counter(t, c); n != float64(want[reason]) {
			t.Errorf("dropped %s = %v, want %d", reason, n, want[reason])
		}
	}

	// Translation: exact, to the first written record at or after the
	// offset, in memory and from the stored map.
	stop()
	l, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p := range parts {
		id := progress.Partition{Topic: src, Partition: p}
		part := r.lookup(src, p)
		if got, mem := saved(l.Runs[id]), saved(part.omap.Runs()); !reflect.DeepEqual(got, mem) {
			t.Errorf("%s: stored map %+v, want the map in memory %+v", id, got, mem)
		}
		pos := l.Positions[id]
		if pos.SourceNext != ends[p] {
			t.Errorf("%s: stored position %d, want the source end %d", id, pos.SourceNext, ends[p])
		}
		stored := offsets.NewMap(l.Runs[id])
		// tgtAt is, by source offset, the target offset of the first
		// record written at or after it.
		next := pos.TargetNext
		tgtAt := make([]int64, ends[p]+1)
		tgtAt[ends[p]] = next
		ti := len(got[p]) - 1
		for x := ends[p] - 1; x >= 0; x-- {
			if _, ok := pv.Copy(srcRecs[p][x]); ok {
				next = got[p][ti].Offset
				ti--
			}
			tgtAt[x] = next
		}
		for x := int64(0); x <= ends[p]; x++ {
			want := offsets.Result{Target: tgtAt[x], Exact: true}
			if g, _ := r.Translate(src, p, x); g != want {
				t.Errorf("%s: Translate(%d) = %+v, want %+v", id, x, g, want)
			}
			if g := stored.Translate(x, pos.TargetNext); g != want {
				t.Errorf("%s: Translate(%d) with the stored map = %+v, want %+v", id, x, g, want)
			}
		}
		t.Logf("%s: %d runs, position %d/%d", id, len(l.Runs[id]), pos.SourceNext, pos.TargetNext)
	}
}
