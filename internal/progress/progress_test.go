package progress

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/offsets"
)

// newCluster starts an in-process cluster and returns a client to it; both
// are closed when the test ends.
func newCluster(t *testing.T) *kgo.Client {
	t.Helper()
	return kfaketest.New(t)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEnsureCreatesCompactedSinglePartitionTopic(t *testing.T) {
	ctx := testContext(t)
	cl := newCluster(t)
	s := NewStore(cl, "__kmirror.a-to-b.progress")
	if s.Topic() != "__kmirror.a-to-b.progress" {
		t.Fatalf("Topic() = %q", s.Topic())
	}
	for i := range 2 { // idempotent: the second call finds the topic
		if err := s.Ensure(ctx, 0); err != nil {
			t.Fatalf("Ensure #%d: %v", i+1, err)
		}
	}
	adm := kadm.NewClient(cl)
	tds, err := adm.ListTopics(ctx, s.Topic())
	if err != nil {
		t.Fatal(err)
	}
	td, ok := tds[s.Topic()]
	if !ok || td.Err != nil {
		t.Fatalf("progress topic not listed: %+v", td)
	}
	if n := len(td.Partitions); n != 1 {
		t.Errorf("progress topic has %d partitions, want 1", n)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, s.Topic())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(s.Topic(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	if got["cleanup.policy"] != "compact" {
		t.Errorf("cleanup.policy = %q, want compact", got["cleanup.policy"])
	}
	if got["min.compaction.lag.ms"] != "60000" {
		t.Errorf("min.compaction.lag.ms = %q, want 60000", got["min.compaction.lag.ms"])
	}
}

func TestLoadEmpty(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.empty.progress")
	if err := s.Ensure(ctx, 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Positions) != 0 || l.Started {
		t.Errorf("Load of an empty topic = %+v, want no positions and not started", l)
	}
	if l.Positions == nil {
		t.Error("Load returned a nil Positions map")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Load of an empty topic took %v", d)
	}
}

func TestWriteLoadNewestPerPartition(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.flow.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	dotted := Partition{Topic: "orders.eu.v1", Partition: 0}
	dotted3 := Partition{Topic: "orders.eu.v1", Partition: 3}
	plain := Partition{Topic: "payments", Partition: 1}
	slashy := Partition{Topic: "a/b", Partition: 12} // the key is split at the last "/"
	writes := [][]Entry{
		{
			{Partition: dotted, Position: Position{SourceNext: 1, TargetNext: 1}},
			{Partition: plain, Position: Position{SourceNext: 5, TargetNext: -1}},
		},
		{
			{Partition: dotted, Position: Position{SourceNext: 10, TargetNext: 12}},
			{Partition: dotted3, Position: Position{SourceNext: 7, TargetNext: 7}},
		},
		nil, // writing nothing is a no-op
		{
			{Partition: dotted, Position: Position{SourceNext: 20, TargetNext: 22}},
			{Partition: slashy, Position: Position{SourceNext: 3, TargetNext: 3}},
		},
	}
	before := time.Now().UnixMilli()
	for i, w := range writes {
		if err := s.Write(ctx, w); err != nil {
			t.Fatalf("Write #%d: %v", i+1, err)
		}
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Started {
		t.Error("Started is true before MarkStarted")
	}
	want := map[Partition]Position{
		dotted:  {SourceNext: 20, TargetNext: 22},
		dotted3: {SourceNext: 7, TargetNext: 7},
		plain:   {SourceNext: 5, TargetNext: -1},
		slashy:  {SourceNext: 3, TargetNext: 3},
	}
	got := map[Partition]Position{}
	for p, pos := range l.Positions {
		if pos.UpdatedMs < before || pos.UpdatedMs > time.Now().UnixMilli() {
			t.Errorf("%s: UpdatedMs %d not set to the time of the write", p, pos.UpdatedMs)
		}
		pos.UpdatedMs = 0
		got[p] = pos
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load positions:\n got %v\nwant %v", got, want)
	}
}

func TestMarkStarted(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.started.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	p := Partition{Topic: "t", Partition: 0}
	if err := s.Write(ctx, []Entry{{Partition: p, Position: Position{SourceNext: 4, TargetNext: 4}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkStarted(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Started {
		t.Error("Started = false after MarkStarted")
	}
	if len(l.Positions) != 1 || l.Positions[p].SourceNext != 4 {
		t.Errorf("positions = %v, want only %s at 4 (the started marker is not a position)", l.Positions, p)
	}

	// The marker alone is enough.
	s2 := NewStore(s.client, "__kmirror.started-only.progress")
	if err := s2.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := s2.MarkStarted(ctx); err != nil {
		t.Fatal(err)
	}
	l, err = s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Started || len(l.Positions) != 0 {
		t.Errorf("Load after MarkStarted only = %+v, want started with no positions", l)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		key  string
		want Partition
		ok   bool
	}{
		{"orders/0", Partition{"orders", 0}, true},
		{"orders.eu/17", Partition{"orders.eu", 17}, true},
		{"a/b/2", Partition{"a/b", 2}, true},
		{"flow-started", Partition{}, false},
		{"/3", Partition{}, false},
		{"orders/", Partition{}, false},
		{"orders/x", Partition{}, false},
		{"orders/99999999999", Partition{}, false},
	}
	for _, tc := range tests {
		got, ok := parseKey(tc.key)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseKey(%q) = %v, %v; want %v, %v", tc.key, got, ok, tc.want, tc.ok)
		}
		if ok && got.String() != tc.key {
			t.Errorf("Partition %v String() = %q, want %q", got, got.String(), tc.key)
		}
	}
}

func TestOffsetMapRoundTrip(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.runs.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	p := Partition{Topic: "orders.eu", Partition: 2}
	r1 := offsets.Run{Source: 0, Target: 0, Len: 5, LastMs: 1}
	r2 := offsets.Run{Source: 10, Target: 5, Len: 3, LastMs: 2}
	r3 := offsets.Run{Source: 20, Target: 8, Len: 1, LastMs: 3}
	writes := [][]Entry{
		{{Partition: p, Position: Position{SourceNext: 13, TargetNext: 8}, Runs: []offsets.Run{r1, r2}}},
		// r3 new; retention dropped r1.
		{{Partition: p, Position: Position{SourceNext: 21, TargetNext: 9}, Runs: []offsets.Run{r3}, Dropped: []offsets.Run{r1}}},
		// The position moves past a marker without a new run: the
		// stored runs stay.
		{{Partition: p, Position: Position{SourceNext: 22, TargetNext: 9}}},
	}
	for _, w := range writes {
		if err := s.Write(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []offsets.Run{r2, r3}; !reflect.DeepEqual(l.Runs[p], want) {
		t.Errorf("runs = %+v, want %+v", l.Runs[p], want)
	}
	if got := l.Positions[p]; got.SourceNext != 22 || got.TargetNext != 9 || got.Run != nil {
		t.Errorf("position = %+v", got)
	}
}

func TestLoadOlderFormat(t *testing.T) {
	// Older versions stored the newest run inside the position record
	// only: it is loaded, and marked to be stored as a record of its own.
	ctx := testContext(t)
	cl := newCluster(t)
	s := NewStore(cl, "__kmirror.old.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	rec := func(k, v string) *kgo.Record {
		return &kgo.Record{Topic: s.Topic(), Key: []byte(k), Value: []byte(v)}
	}
	if err := cl.ProduceSync(ctx,
		rec("orders/0/0", `{"s":0,"t":0,"n":5,"ms":1}`),
		rec("orders/0/9", `{"s":9,"t":5,"n":2,"ms":2}`), // an older copy of the newest run
		rec("orders/0", `{"source_next":40,"target_next":20,"updated_ms":3,"run":{"s":9,"t":5,"n":15,"ms":3}}`),
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := Partition{Topic: "orders", Partition: 0}
	want := []offsets.Run{{Source: 0, Target: 0, Len: 5, LastMs: 1}, {Source: 9, Target: 5, Len: 15, LastMs: 3}}
	got := l.Runs[p]
	if len(got) != 2 || got[0] != want[0] || got[1].Saved() != want[1] {
		t.Fatalf("runs = %+v, want %+v", got, want)
	}
	changed, _ := offsets.NewMap(got).TakeChanged()
	if len(changed) != 1 || changed[0].Source != 9 {
		t.Errorf("runs to store again = %+v, want the run of the position", changed)
	}
}

func TestStoppedRoundTripAndUnclean(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.stopped.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	a0, a1, b0 := Partition{Topic: "a"}, Partition{Topic: "a", Partition: 1}, Partition{Topic: "b"}
	if err := s.Write(ctx, []Entry{
		{Partition: a0, Position: Position{SourceNext: 5, TargetNext: 5, Stopped: true}},
		{Partition: a1, Position: Position{SourceNext: 6, TargetNext: 6}},
		{Partition: b0, Position: Position{SourceNext: 7, TargetNext: 7, Stopped: true}},
	}); err != nil {
		t.Fatal(err)
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Positions[a0].Stopped || l.Positions[a1].Stopped || !l.Positions[b0].Stopped {
		t.Errorf("loaded %+v, want a/0 and b/0 Stopped, a/1 not", l.Positions)
	}
	if got := l.Unclean(nil); !reflect.DeepEqual(got, []Partition{a1}) {
		t.Errorf("Unclean(nil) = %v, want [a/1]", got)
	}
	if got := l.Unclean(InTopics("b")); len(got) != 0 {
		t.Errorf("Unclean(b) = %v, want none: a/1 is of another topic", got)
	}
	// The owner resumes a/0: its next store clears Stopped.
	if err := s.Write(ctx, []Entry{{Partition: a0, Position: Position{SourceNext: 5, TargetNext: 5}}}); err != nil {
		t.Fatal(err)
	}
	if l, err = s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.Unclean(InTopics("a", "b")); !reflect.DeepEqual(got, []Partition{a0, a1}) {
		t.Errorf("Unclean(a, b) = %v, want [a/0 a/1]", got)
	}
}

// TestLoadOlderCleanStopFlag: a flow stopped cleanly by an older version
// (flow-wide flag "1") has its positions stored before the flag read as
// Stopped; one stored after it, or any under "0", is not.
func TestLoadOlderCleanStopFlag(t *testing.T) {
	ctx := testContext(t)
	s := NewStore(newCluster(t), "__kmirror.oldflag.progress")
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	a0, a1 := Partition{Topic: "a"}, Partition{Topic: "a", Partition: 1}
	write := func(p Partition) {
		t.Helper()
		if err := s.Write(ctx, []Entry{{Partition: p, Position: Position{SourceNext: 1, TargetNext: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	flag := func(v string) {
		t.Helper()
		if err := s.put(ctx, cleanStopKey, v); err != nil {
			t.Fatal(err)
		}
	}
	unclean := func() []Partition {
		t.Helper()
		l, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l.Unclean(nil)
	}
	flag("0") // an older version ran
	write(a0)
	write(a1)
	if got := unclean(); len(got) != 2 {
		t.Errorf("running under the old flag: unclean %v, want both", got)
	}
	flag("1") // and stopped cleanly
	if got := unclean(); len(got) != 0 {
		t.Errorf("stopped cleanly under the old flag: unclean %v, want none", got)
	}
	write(a1) // a newer version resumed a/1 and was killed
	if got := unclean(); !reflect.DeepEqual(got, []Partition{a1}) {
		t.Errorf("after a newer version stored a/1: unclean %v, want [a/1]", got)
	}
}
