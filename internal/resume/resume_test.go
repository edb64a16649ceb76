package resume

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/replicate"
)

type env struct {
	addrs    []string
	src, tgt *kgo.Client // the same cluster: source topic "src", target topic "tgt"
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := kfaketest.Cluster(t, kfake.SeedTopics(1, "src", "tgt"))
	e := &env{addrs: c.ListenAddrs()}
	e.src, e.tgt = e.client(t), e.client(t)
	return e
}

func (e *env) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rec(topic, v string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte("k" + v), Value: []byte(v), Timestamp: time.UnixMilli(1_700_000_000_000)}
}

// txn writes values to topic "src" in one transaction of cl.
func txn(t *testing.T, ctx context.Context, cl *kgo.Client, commit bool, values ...string) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if err := cl.ProduceSync(ctx, rec("src", v)).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	end := kgo.TryAbort
	if commit {
		end = kgo.TryCommit
	}
	if err := cl.EndTransaction(ctx, end); err != nil {
		t.Fatal(err)
	}
}

func (e *env) write(t *testing.T, ctx context.Context, topic string, values ...string) {
	t.Helper()
	var rs []*kgo.Record
	for _, v := range values {
		rs = append(rs, rec(topic, v))
	}
	if err := e.tgt.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func (e *env) end(t *testing.T, ctx context.Context, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(e.tgt).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ends.Lookup(topic, 0)
	return o.Offset
}

var id = progress.Partition{Topic: "src", Partition: 0}

func TestMatchPassesTransactionMarkersAndAbortedRecords(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	producer := e.client(t, kgo.TransactionalID("txn"), kgo.DefaultProduceTopic("src"))
	// Source offsets: a0 a1 a2 C3 | x4 x5 A6 | b7 b8 b9 C10.
	txn(t, ctx, producer, true, "a0", "a1", "a2")
	txn(t, ctx, producer, false, "x4", "x5")
	txn(t, ctx, producer, true, "b7", "b8", "b9")
	// The previous run copied the committed records.
	e.write(t, ctx, "tgt", "a0", "a1", "a2", "b7", "b8", "b9")

	var pairs []Pair
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, e.end(t, ctx, "tgt"), e.end(t, ctx, "src"), Options{},
		func(p Pair) { pairs = append(pairs, p) })
	if err != nil {
		t.Fatal(err)
	}
	want := []Pair{{0, 0}, {1, 1}, {2, 2}, {7, 3}, {8, 4}, {9, 5}}
	if !slices.Equal(pairs, want) {
		t.Fatalf("pairs = %v, want %v", pairs, want)
	}
	if res.Matched != 6 || res.Markers != 2 || !reflect.DeepEqual(withoutEpoch(t, res.Next), progress.Position{SourceNext: 10, TargetNext: 6}) {
		t.Fatalf("result = %+v, want 6 matched, 2 markers, next {10 6}", res)
	}
}

func TestMatchDoesNotWaitForAnOpenTransaction(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	producer := e.client(t, kgo.TransactionalID("txn"), kgo.DefaultProduceTopic("src"))
	txn(t, ctx, producer, true, "a0", "a1")
	open := e.client(t, kgo.TransactionalID("open"), kgo.DefaultProduceTopic("src"))
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := open.ProduceSync(ctx, rec("src", "o3"), rec("src", "o4")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e.write(t, ctx, "tgt", "a0", "a1")

	start := time.Now()
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, e.end(t, ctx, "tgt"), e.end(t, ctx, "src"), Options{}, func(Pair) {})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != 2 || !reflect.DeepEqual(withoutEpoch(t, res.Next), progress.Position{SourceNext: 2, TargetNext: 2}) {
		t.Fatalf("result = %+v, want 2 matched, next {2 2}", res)
	}
	if took > 10*time.Second {
		t.Fatalf("the comparison took %s with a transaction open", took)
	}
}

func TestMatchStopsAtTheFirstDifference(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	e.write(t, ctx, "src", "a0", "a1", "a2", "a3")
	e.write(t, ctx, "tgt", "a0", "a1", "other", "a3")
	var pairs []Pair
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 4, 4, Options{}, func(p Pair) { pairs = append(pairs, p) })
	if err == nil {
		t.Fatal("no error for a differing record")
	}
	if res.Matched != 2 || len(pairs) != 2 || !reflect.DeepEqual(withoutEpoch(t, res.Next), progress.Position{SourceNext: 2, TargetNext: 2}) {
		t.Fatalf("result = %+v pairs %v, want the 2 records before the difference", res, pairs)
	}
}

func TestMatchFromAStoredPositionPastMoreThanOneFetch(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	// 8 MiB on each side: several fetches of MaxFetchBytes.
	const n = 8 << 10
	pad := string(make([]byte, 1000))
	var vs []string
	for i := range n {
		vs = append(vs, fmt.Sprintf("%d:%s", i, pad))
	}
	e.write(t, ctx, "src", vs...)
	e.write(t, ctx, "tgt", vs[100:]...)
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{SourceNext: 100, TargetNext: 0}, n-100, n, Options{}, func(Pair) {})
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != n-100 || !reflect.DeepEqual(withoutEpoch(t, res.Next), progress.Position{SourceNext: n, TargetNext: n - 100}) {
		t.Fatalf("result = %+v, want %d matched", res, n-100)
	}
}

func TestMatchReportsTargetRecordsWithoutSource(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	e.write(t, ctx, "src", "a0", "a1")
	e.write(t, ctx, "tgt", "a0", "a1", "extra")
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 3, 2, Options{}, func(Pair) {})
	if err == nil || res.Matched != 2 {
		t.Fatalf("result = %+v, err %v; want 2 matched and an error", res, err)
	}
}

// withoutEpoch checks that a position past a match carries the source
// leader epoch (kfake's is 0) and returns it without, for comparisons.
func withoutEpoch(t *testing.T, pos progress.Position) progress.Position {
	t.Helper()
	if pos.SourceNext > 0 && (pos.LeaderEpoch == nil || *pos.LeaderEpoch != 0) {
		t.Errorf("position %+v: leader epoch %v, want 0", pos, pos.LeaderEpoch)
	}
	pos.LeaderEpoch = nil
	return pos
}

// copier is what a flow with provenance pv does with a source record (as
// internal/flow gives it to Match).
func copier(pv *replicate.Provenance, target string) func(*kgo.Record) (*kgo.Record, Kind) {
	return func(in *kgo.Record) (*kgo.Record, Kind) {
		d := pv.Decide(in, target, false)
		if d.Drop != "" {
			return nil, Drop
		}
		out := &kgo.Record{Key: in.Key, Value: in.Value, Headers: d.Headers, Timestamp: in.Timestamp}
		if d.Wait {
			return out, Maybe
		}
		return out, Write
	}
}

// trustAll proves every provenance mark.
type trustAll struct{}

func (trustAll) Check(_, _, _ string, _ int32, offset int64) (provenance.Verdict, int64) {
	return provenance.Copy, offset
}

func (trustAll) Changed() <-chan struct{} { return nil }

func (trustAll) Expire(string, string, int32) {}

// hrec is rec with headers (key, value pairs).
func hrec(topic, v string, kv ...string) *kgo.Record {
	r := rec(topic, v)
	for i := 0; i+1 < len(kv); i += 2 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return r
}

// With provenance, the target copies carry the path extended by the
// target, the records the flow drops have no copy, and records other
// writers put into the target partition are not the flow's: the match
// passes over both and compares every copy with its header.
func TestMatchWithProvenance(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const ph = replicate.HeaderProvenance
	pv := &replicate.Provenance{Flow: "f", SourceID: "S", TargetID: "T", Routed: func(o string) bool { return o == "R" },
		Ledger: trustAll{}, Legacy: func(string) []string { return []string{"old"} }}
	// Source offsets: s0 | s1 from T (loop) | s2 from R (routed) | s3 | s4 from U.
	src := []*kgo.Record{hrec("src", "s0", "a", "1"), hrec("src", "s1", ph, "T,S"), hrec("src", "s2", ph, "R,S"),
		hrec("src", "s3"), hrec("src", "s4", "a", "2", ph, "U,S", "b", "3")}
	// The target partition: the copies, a local record and one another
	// flow wrote between them.
	tgt := []*kgo.Record{hrec("tgt", "s0", "a", "1", ph, "2;f;S,T;src"), hrec("tgt", "local"), hrec("tgt", "s3", ph, "2;f;S,T;src"),
		hrec("tgt", "s2", ph, "2;r-to-t;R,T"), hrec("tgt", "s4", "a", "2", ph, "2;f;U,S,T;src", "b", "3")}
	if err := e.tgt.ProduceSync(ctx, src...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.tgt.ProduceSync(ctx, tgt...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	o := Options{Copy: copier(pv, "tgt"), Ours: pv.Wrote}

	var pairs []Pair
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 5, 5, o, func(p Pair) { pairs = append(pairs, p) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []Pair{{0, 0}, {3, 2}, {4, 4}}; !slices.Equal(pairs, want) {
		t.Fatalf("pairs = %v, want %v", pairs, want)
	}
	if res.Matched != 3 || res.Dropped != 2 || res.Others != 2 || !reflect.DeepEqual(withoutEpoch(t, res.Next), progress.Position{SourceNext: 5, TargetNext: 5}) {
		t.Fatalf("result = %+v, want 3 matched, 2 dropped, 2 others, next {5 5}", res)
	}

	// Without the options, the header added to the copy is a difference.
	res, err = Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 5, 5, Options{}, func(Pair) {})
	if err == nil || res.Matched != 0 {
		t.Fatalf("without provenance options: result %+v, err %v; want no match and an error", res, err)
	}
}

// A copy whose path is the flow's but whose other headers differ ends
// the match: only the provenance header is rewritten.
func TestMatchWithProvenanceStopsAtADifferentHeader(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const ph = replicate.HeaderProvenance
	pv := &replicate.Provenance{Flow: "f", SourceID: "S", TargetID: "T"}
	if err := e.tgt.ProduceSync(ctx, hrec("src", "s0", "a", "1"), hrec("src", "s1", "a", "1")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.tgt.ProduceSync(ctx, hrec("tgt", "s0", "a", "1", ph, "2;f;S,T;src"), hrec("tgt", "s1", ph, "2;f;S,T;src", "a", "1")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 2, 2, Options{Copy: copier(pv, "tgt"), Ours: pv.Wrote}, func(Pair) {})
	if err == nil || res.Matched != 1 || res.Next.SourceNext != 1 {
		t.Fatalf("result %+v, err %v; want 1 matched (header order differs at the second) and an error", res, err)
	}
}

// unknownAll proves and disproves nothing.
type unknownAll struct{}

func (unknownAll) Check(_, _, _ string, _ int32, _ int64) (provenance.Verdict, int64) {
	return provenance.Unknown, -1
}

func (unknownAll) Changed() <-chan struct{} { return nil }

func (unknownAll) Expire(string, string, int32) {}

// At a restart the marks of source records may not be decidable yet (the
// flows that wrote them restart too): the previous run decided them, in
// source order, so a record whose copy is the next target record of the
// flow was written, and one whose copy is not was dropped.
func TestMatchUndecidedMarks(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const ph = replicate.HeaderProvenance
	pv := &replicate.Provenance{Flow: "f", SourceID: "S", TargetID: "T", Ledger: unknownAll{}}
	// Source: s0 with a mark the previous run disproved (written), s1 with
	// a mark it proved a loop (dropped), s2 produced on the source.
	src := []*kgo.Record{hrec("src", "s0", ph, "2;t-to-s;T,S"), hrec("src", "s1", ph, "2;t-to-s;T,S"), hrec("src", "s2")}
	tgt := []*kgo.Record{hrec("tgt", "s0", ph, "2;f;S,T;src"), hrec("tgt", "local"), hrec("tgt", "s2", ph, "2;f;S,T;src")}
	if err := e.tgt.ProduceSync(ctx, src...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.tgt.ProduceSync(ctx, tgt...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var pairs []Pair
	res, err := Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{}, 3, 3, Options{Copy: copier(pv, "tgt"), Ours: pv.Wrote}, func(p Pair) { pairs = append(pairs, p) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []Pair{{0, 0}, {2, 2}}; !slices.Equal(pairs, want) || res.Dropped != 1 || res.Others != 1 {
		t.Fatalf("pairs %v, result %+v; want %v, 1 dropped, 1 other", pairs, res, want)
	}
	// An undecided record the previous run did not reach: nothing later
	// matches, so the position stays before it.
	if err := e.tgt.ProduceSync(ctx, hrec("src", "s3", ph, "2;t-to-s;T,S"), hrec("src", "s4")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := e.tgt.ProduceSync(ctx, hrec("tgt", "other", ph, "2;f;S,T;src")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	res, err = Match(ctx, e.src, e.tgt, id, "tgt", progress.Position{SourceNext: 3, TargetNext: 3}, 4, 5, Options{Copy: copier(pv, "tgt"), Ours: pv.Wrote}, func(Pair) {})
	if err == nil || res.Matched != 0 || res.Next.SourceNext != 3 {
		t.Fatalf("result %+v, err %v; want no match, the position kept at 3", res, err)
	}
}
