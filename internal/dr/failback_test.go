package dr

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// TestSeedReverseStartsEachCycleAtItsFailover checks that the copy-back
// state of one failover is never reused for the next: a second failback
// starts at the second failover's target ends with an empty offset map,
// while a failback of the same failover, interrupted, resumes.
func TestSeedReverseStartsEachCycleAtItsFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := kfaketest.Cluster(t)
	// The old source: "orders" with 2 partitions, 5 and 7 records.
	src, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := kadm.NewClient(src).CreateTopic(ctx, 2, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	produce := func(p int32, n int) {
		t.Helper()
		for range n {
			if err := src.ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: p, Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(0, 5)
	produce(1, 7)

	e := &Env{Logger: slog.New(slog.DiscardHandler), Flow: &config.Flow{Name: "a-to-b", Source: "a", Target: "b", TopicNaming: policy.NamingIdentity}}
	rev := progress.NewStore(src, policy.ProgressTopic("a-to-b-failback"))
	p0, p1 := progress.Partition{Topic: "orders", Partition: 0}, progress.Partition{Topic: "orders", Partition: 1}
	load := func() progress.Loaded {
		t.Helper()
		l, err := rev.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	// Cycle 1: seeded at the target's ends at failover 1.
	f1 := &progress.Failover{AtMs: 1000, TargetEnds: map[string]map[int32]int64{"orders": {0: 100, 1: 200}}}
	if err := e.seedReverse(ctx, rev, src, f1); err != nil {
		t.Fatal(err)
	}
	l := load()
	if got, want := l.Positions[p0].SourceNext, int64(100); got != want {
		t.Errorf("cycle 1: partition 0 starts at %d, want %d", got, want)
	}
	if got, want := l.Positions[p1].TargetNext, int64(7); got != want {
		t.Errorf("cycle 1: partition 1 writes at %d on the source, want %d", got, want)
	}
	// The copy back advances and maps records.
	run := offsets.Run{Source: 100, Target: 5, Len: 30, LastMs: 1}
	if err := rev.Write(ctx, []progress.Entry{
		{Partition: p0, Position: progress.Position{SourceNext: 130, TargetNext: 35}, Runs: []offsets.Run{run}},
		{Partition: p1, Position: progress.Position{SourceNext: 250, TargetNext: 57, Run: &offsets.Run{Source: 200, Target: 7, Len: 50, LastMs: 1}}},
	}); err != nil {
		t.Fatal(err)
	}

	// The same failback interrupted and run again resumes where it was.
	if err := e.seedReverse(ctx, rev, src, f1); err != nil {
		t.Fatal(err)
	}
	if l := load(); l.Positions[p0].SourceNext != 130 || len(l.Runs[p0]) != 1 {
		t.Errorf("resuming cycle 1: partition 0 at %d with %d runs, want 130 with 1", l.Positions[p0].SourceNext, len(l.Runs[p0]))
	}

	// Cycle 2: records written on the source in between; the reverse
	// flow starts at failover 2's target ends and writes after the
	// source's end, with none of cycle 1's state.
	produce(0, 3)
	f2 := &progress.Failover{AtMs: 2000, TargetEnds: map[string]map[int32]int64{"orders": {0: 400, 1: 500}}}
	if err := e.seedReverse(ctx, rev, src, f2); err != nil {
		t.Fatal(err)
	}
	l = load()
	want := map[progress.Partition]progress.Position{
		p0: {SourceNext: 400, TargetNext: 8},
		p1: {SourceNext: 500, TargetNext: 7},
	}
	for id, w := range want {
		got := l.Positions[id]
		if got.SourceNext != w.SourceNext || got.TargetNext != w.TargetNext || got.Run != nil {
			t.Errorf("cycle 2: %s at %+v, want source %d target %d, no run", id, got, w.SourceNext, w.TargetNext)
		}
		if len(l.Runs[id]) != 0 {
			t.Errorf("cycle 2: %s keeps cycle 1's offset map %+v", id, l.Runs[id])
		}
	}
	if l.Failover == nil || !reflect.DeepEqual(*l.Failover, *f2) {
		t.Errorf("cycle 2: reverse state belongs to failover %+v, want %+v", l.Failover, f2)
	}
	if u := l.Unclean(nil); len(u) != 0 || !l.Started {
		t.Errorf("cycle 2: started %t, not stopped cleanly %v; want started, every seeded position Stopped", l.Started, u)
	}
}
