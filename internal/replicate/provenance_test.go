package replicate

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/verify"
)

func hdr(kv ...string) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

// prover is a Prover whose verdicts the test sets: by partition, else
// def.
type prover struct {
	mu       sync.Mutex
	def      provenance.Verdict
	verdicts map[int32]provenance.Verdict
	changed  chan struct{}
}

func newProver(def provenance.Verdict) *prover {
	return &prover{def: def, verdicts: map[int32]provenance.Verdict{}, changed: make(chan struct{})}
}

func (p *prover) Check(writer, _, _ string, partition int32, offset int64) (provenance.Verdict, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if writer == "nobody" {
		return provenance.NotCopy, -1
	}
	if v, ok := p.verdicts[partition]; ok {
		return v, offset
	}
	return p.def, offset
}

func (p *prover) Expire(string, string, int32) {}

func (p *prover) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// set sets the verdict of partition and wakes the waiters.
func (p *prover) set(partition int32, v provenance.Verdict) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.verdicts[partition] = v
	close(p.changed)
	p.changed = make(chan struct{})
}

func mark(writer, path string) string { return "2;" + writer + ";" + path }

func TestProvenanceDecide(t *testing.T) {
	pv := &Provenance{Flow: "s-to-t", SourceID: "S", TargetID: "T", Routed: func(origin string) bool { return origin == "R" },
		Ledger: newProver(provenance.Copy), Legacy: func(prev string) []string {
			if prev == "Z" {
				return nil // no flow of the configuration from Z into S
			}
			return []string{"old"}
		}}
	own := mark("s-to-t", "S,T")
	for _, tc := range []struct {
		name    string
		in      []kgo.RecordHeader
		want    []kgo.RecordHeader
		drop    string
		foreign bool
	}{
		{"no headers: origin is the source", nil, hdr(HeaderProvenance, own), "", false},
		{"other headers kept in order, mark last", hdr("a", "1", "b", "2"), hdr("a", "1", "b", "2", HeaderProvenance, own), "", false},
		{"proven copy: path extended in place", hdr("a", "1", HeaderProvenance, mark("x-to-s", "X,S"), "b", "2"), hdr("a", "1", HeaderProvenance, mark("s-to-t", "X,S,T"), "b", "2"), "", false},
		{"empty header value: origin is the source", hdr(HeaderProvenance, ""), hdr(HeaderProvenance, own), "", false},
		{"mark twice: one kept, at the first place", hdr(HeaderProvenance, mark("x-to-s", "X,S"), "a", "1", HeaderProvenance, "Y,S"), hdr(HeaderProvenance, mark("s-to-t", "X,S,T"), "a", "1"), "", false},
		{"proven copy from the target: loop", hdr(HeaderProvenance, mark("t-to-s", "T,S")), nil, metrics.DropLoop, false},
		{"target on the way: loop", hdr(HeaderProvenance, mark("x-to-s", "X,T,S")), nil, metrics.DropLoop, false},
		{"loop before routing", hdr(HeaderProvenance, mark("x-to-s", "R,T,S")), nil, metrics.DropLoop, false},
		{"origin routed by another flow", hdr(HeaderProvenance, mark("r-to-s", "R,S")), nil, metrics.DropRouted, false},
		{"origin not routed (or unknown): forwarded", hdr(HeaderProvenance, mark("u-to-s", "U,S")), hdr(HeaderProvenance, mark("s-to-t", "U,S,T")), "", false},
		{"duplicate other headers untouched", hdr("h", "1", "h", "1"), hdr("h", "1", "h", "1", HeaderProvenance, own), "", false},
		{"forged: the named flow did not write it", hdr("a", "1", HeaderProvenance, mark("nobody", "T,S")), hdr("a", "1", HeaderProvenance, own), "", true},
		{"a copy on the source names the source last", hdr(HeaderProvenance, mark("x-to-y", "T,X")), hdr(HeaderProvenance, own), "", true},
		{"junk value: foreign", hdr(HeaderProvenance, "2;;"), hdr(HeaderProvenance, own), "", true},
		{"older format, proven by a flow of the configuration", hdr(HeaderProvenance, "T,S"), nil, metrics.DropLoop, false},
		{"older format, no flow from there", hdr(HeaderProvenance, "Z,S"), hdr(HeaderProvenance, own), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &kgo.Record{Topic: "orders", Headers: append([]kgo.RecordHeader(nil), tc.in...)}
			d := pv.Decide(in, "orders", false)
			if d.Drop != tc.drop || d.Foreign != tc.foreign || d.Wait || !reflect.DeepEqual(d.Headers, tc.want) {
				t.Errorf("Decide(%v) = %+v; want headers %v, drop %q, foreign %v", tc.in, d, tc.want, tc.drop, tc.foreign)
			}
			if !reflect.DeepEqual(in.Headers, tc.in) {
				t.Errorf("Decide modified its input: %v", in.Headers)
			}
			if tc.drop == "" && !pv.Wrote(&kgo.Record{Headers: d.Headers}) {
				t.Errorf("Wrote(%v) = false for a record the flow wrote", d.Headers)
			}
		})
	}
	for _, h := range [][]kgo.RecordHeader{nil, hdr(HeaderProvenance, "S"), hdr(HeaderProvenance, "X,T"), hdr(HeaderProvenance, mark("other", "S,T")),
		hdr(HeaderProvenance, mark("s-to-t", "X,T"))} {
		if pv.Wrote(&kgo.Record{Headers: h}) {
			t.Errorf("Wrote(%v) = true for a record another writer wrote", h)
		}
	}
	// A renaming flow names the source topic in its marks.
	d := pv.Decide(&kgo.Record{Topic: "orders"}, "s.orders", false)
	if m, ok := provenance.Parse(d.Headers[0].Value); !ok || m.SourceTopic != "orders" {
		t.Errorf("mark of a renamed topic = %q, want source topic orders", d.Headers[0].Value)
	}
	// Without a routed func every origin is forwarded.
	if d := (&Provenance{Flow: "f", SourceID: "S", TargetID: "T", Ledger: newProver(provenance.Copy)}).Decide(&kgo.Record{Headers: hdr(HeaderProvenance, mark("r-to-s", "R,S"))}, "", false); d.Drop != "" {
		t.Errorf("without Routed: dropped as %q", d.Drop)
	}
	// Without a ledger no mark is proven.
	if d := (&Provenance{Flow: "f", SourceID: "S", TargetID: "T"}).Decide(&kgo.Record{Headers: hdr(HeaderProvenance, mark("t-to-s", "T,S"))}, "", false); d.Drop != "" || !d.Foreign {
		t.Errorf("without a ledger: %+v, want written as foreign", d)
	}
	// Unknown waits, unless no longer waited for.
	wait := &Provenance{Flow: "f", SourceID: "S", TargetID: "T", Ledger: newProver(provenance.Unknown)}
	rec := &kgo.Record{Headers: hdr(HeaderProvenance, mark("t-to-s", "T,S"))}
	if d := wait.Decide(rec, "", false); !d.Wait {
		t.Errorf("unknown: %+v, want Wait", d)
	}
	if d := wait.Decide(rec, "", true); d.Wait || !d.Foreign || d.Drop != "" {
		t.Errorf("unknown, not waited for: %+v, want written as foreign", d)
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
	pv := &Provenance{Flow: "s-to-t", SourceID: "S", TargetID: "T", Routed: func(origin string) bool { return origin == "R" },
		Ledger: newProver(provenance.Copy), Legacy: func(string) []string { return []string{"old"} }}
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
			if d := pv.Decide(s, dst, false); d.Drop == "" {
				exp = append(exp, &kgo.Record{Key: s.Key, Value: s.Value, Headers: d.Headers, Timestamp: s.Timestamp})
			}
		}
		if len(got[p]) != len(exp) {
			t.Fatalf("partition %d: target has %d records, want %d", p, len(got[p]), len(exp))
		}
		for i := range exp {
			if d := verify.Diff(exp[i], got[p][i]); d != "" {
				t.Errorf("partition %d target offset %d: %s", p, i, d)
			}
			if !pv.Wrote(got[p][i]) {
				t.Errorf("partition %d target offset %d: mark %v is not the flow's", p, i, got[p][i].Headers)
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
			if pv.Decide(srcRecs[p][x], dst, false).Drop == "" {
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

// A record whose mark can be neither proven nor disproven yet holds its
// partition: nothing after it is written until the ledger decides, and
// then it is dropped (a proven copy of a target record) or written (not a
// copy). A mark still undecided after ProofWait is written as foreign,
// counted as unproven. Other partitions go on meanwhile.
func TestReplicateHoldsUndecidedMark(t *testing.T) {
	e := newEnv(t)
	const topic, parts = "held", int32(3)
	e.createTopic(t, e.srcAdmin, topic, parts, nil)
	e.createTopic(t, e.tgtAdmin, topic, parts, nil)
	pr := newProver(provenance.Unknown)
	pv := &Provenance{Flow: "s-to-t", SourceID: "S", TargetID: "T", Ledger: pr}
	const wait = 1500 * time.Millisecond
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: 20 * time.Millisecond, Provenance: pv, ProofWait: wait,
		Metrics: e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	r.Add(assignments(topic, topic, parts))
	defer e.run(t, r)()

	// Each partition: r0 (no mark), r1 (a mark naming t-to-s), r2 (no mark).
	var in []*kgo.Record
	for p := range parts {
		for i, m := range []string{"", mark("t-to-s", "T,S"), ""} {
			rec := &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%d-%d", p, i)}
			if m != "" {
				rec.Headers = hdr(HeaderProvenance, m)
			}
			in = append(in, rec)
		}
	}
	produced := time.Now()
	e.produce(t, topic, in...)
	values := func(p int32) []string {
		got, err := verify.ReadAll(e.ctx, e.tgtClient, topic)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range got[p] {
			out = append(out, string(r.Value))
		}
		return out
	}
	waitFor(t, "the first record of each partition written", func() bool {
		for p := range parts {
			if len(values(p)) != 1 {
				return false
			}
		}
		return true
	})
	time.Sleep(200 * time.Millisecond) // what would follow if nothing held
	for p := range parts {
		if got := values(p); !reflect.DeepEqual(got, []string{fmt.Sprintf("%d-0", p)}) {
			t.Fatalf("partition %d while its mark is undecided: target holds %v, want only r0", p, got)
		}
	}
	// Partition 0: proven a copy from the target (a loop): dropped.
	// Partition 1: not a copy: written, as foreign. Partition 2: never
	// decided: written after the wait, as unproven.
	pr.set(0, provenance.Copy)
	waitFor(t, "partition 0 past its copy", func() bool { return reflect.DeepEqual(values(0), []string{"0-0", "0-2"}) })
	pr.set(1, provenance.NotCopy)
	waitFor(t, "partition 1 wrote its record", func() bool { return reflect.DeepEqual(values(1), []string{"1-0", "1-1", "1-2"}) })
	waitFor(t, "partition 2 wrote its record after the wait", func() bool { return reflect.DeepEqual(values(2), []string{"2-0", "2-1", "2-2"}) })
	if took := time.Since(produced); took < wait {
		t.Errorf("undecided mark written after %s, want about %s", took, wait)
	}
	if n := counter(t, e.metrics.ProvenanceDropped.WithLabelValues(flowName, topic, metrics.DropLoop)); n != 1 {
		t.Errorf("loop drops = %v, want 1", n)
	}
	if n := counter(t, e.metrics.ProvenanceForeign.WithLabelValues(flowName, topic, metrics.ForeignNotCopy)); n != 1 {
		t.Errorf("foreign (not a copy) = %v, want 1", n)
	}
	if n := counter(t, e.metrics.ProvenanceForeign.WithLabelValues(flowName, topic, metrics.ForeignUnproven)); n != 1 {
		t.Errorf("foreign (unproven) = %v, want 1", n)
	}
}

// A flow with provenance stores, for a partition it has no write in
// flight to, the target's end offset as IdleEnd, so that records of the
// target's own producers past its position are known not to be its copies
// without waiting for its next write.
func TestReplicateStoresIdleEnd(t *testing.T) {
	e := newEnv(t)
	const topic = "idle"
	e.createTopic(t, e.srcAdmin, topic, 1, nil)
	e.createTopic(t, e.tgtAdmin, topic, 1, nil)
	pv := &Provenance{Flow: "s-to-t", SourceID: "S", TargetID: "T", Ledger: newProver(provenance.NotCopy)}
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: 20 * time.Millisecond, Provenance: pv,
		Metrics: e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	r.Add(assignments(topic, topic, 1))
	defer e.run(t, r)()
	e.produce(t, topic, &kgo.Record{Value: []byte("s0")}, &kgo.Record{Value: []byte("s1")})
	id := progress.Partition{Topic: topic}
	waitFor(t, "the copies", func() bool { return r.Positions()[id].TargetNext == 2 })
	// The target's own producer writes three records after the copies.
	for _, v := range []string{"t0", "t1", "t2"} {
		if err := e.tgtClient.ProduceSync(e.ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "IdleEnd 5 stored", func() bool {
		l, err := e.store.Load(e.ctx)
		return err == nil && l.Positions[id].IdleEnd == 5 && l.Positions[id].TargetNext == 2
	})
	// In memory, before anything is stored: the copies are proven, the
	// local records past the position are not known yet.
	for _, tc := range []struct {
		off  int64
		want provenance.Verdict
		src  int64
	}{{0, provenance.Copy, 0}, {1, provenance.Copy, 1}, {3, provenance.Unknown, -1}} {
		if v, src := r.Proof(topic, topic, 0, tc.off); v != tc.want || src != tc.src {
			t.Errorf("Proof(%d) = %v, %d; want %v, %d", tc.off, v, src, tc.want, tc.src)
		}
	}
	if v, _ := r.Proof("other", topic, 0, 0); v != provenance.Unknown {
		t.Errorf("Proof of another target topic = %v, want unknown", v)
	}
	// The next copy lands after them; IdleEnd stays behind the position.
	e.produce(t, topic, &kgo.Record{Value: []byte("s2")})
	waitFor(t, "the next copy at 5", func() bool { return r.Positions()[id].TargetNext == 6 })
	for _, tc := range []struct {
		off  int64
		want provenance.Verdict
		src  int64
	}{{3, provenance.NotCopy, -1}, {5, provenance.Copy, 2}, {6, provenance.Unknown, -1}} {
		if v, src := r.Proof(topic, topic, 0, tc.off); v != tc.want || src != tc.src {
			t.Errorf("after the next copy: Proof(%d) = %v, %d; want %v, %d", tc.off, v, src, tc.want, tc.src)
		}
	}
}

// A copy refused as too large names the size of the provenance header it
// carries, which its source record has not.
func TestRefusalNamesHeaderSize(t *testing.T) {
	base := kerr.MessageTooLarge
	mark := mark("a-to-b", "MkU3OEVBNTcwNTJENDM2Qg,q1Sh-9_ISia_zwGINzRvyQ")
	err := withHeaderNote(base, &kgo.Record{Headers: hdr("x", "1", HeaderProvenance, mark)})
	if !errors.Is(err, base) || !strings.Contains(err.Error(), "carries a 74-byte provenance header") {
		t.Errorf("refusal = %v", err)
	}
	if err := withHeaderNote(base, &kgo.Record{}); err != base {
		t.Errorf("refusal without a header = %v, want the target's error alone", err)
	}
}
