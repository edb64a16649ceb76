package flow

import (
	"context"
	"fmt"
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
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// TestTargetBehindStoredPositionCopiesOnlyTheLostRange: a stored target
// position past the target partition's end, with the same topic IDs, is
// target data loss of that partition, not a re-created topic: that
// partition starts again at the first source record whose copy is gone,
// the other partitions of the topic keep their positions, and the loss
// is counted.
func TestTargetBehindStoredPositionCopiesOnlyTheLostRange(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "src", "tgt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := client()
	// Source: 10 records in each partition. Target: every copy in
	// partitions 0 and 2, only the first 6 in partition 1 (4 lost).
	for p := range int32(3) {
		for i := range 10 {
			v := fmt.Appendf(nil, "%d-%d", p, i)
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "src", Partition: p, Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if p == 1 && i >= 6 {
				continue
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "tgt", Partition: p, Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, "src", "tgt")
	if err != nil {
		t.Fatal(err)
	}
	srcID, tgtID := topicsync.TopicID(md.Topics["src"].ID), topicsync.TopicID(md.Topics["tgt"].ID)
	store := progress.NewStore(cl, "__kmirror.f.progress")
	if err := store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	loaded := progress.Loaded{Positions: map[progress.Partition]progress.Position{}, Runs: map[progress.Partition][]offsets.Run{}}
	for p := range int32(3) {
		id := progress.Partition{Topic: "src", Partition: p}
		loaded.Positions[id] = progress.Position{SourceNext: 10, TargetNext: 10, TopicID: srcID}
		loaded.Runs[id] = []offsets.Run{{Source: 0, Target: 0, Len: 10}}
	}
	m := metrics.New()
	f := &Flow{cfg: &config.Flow{Name: "f"}, metrics: m, logger: slog.New(slog.DiscardHandler)}
	r := &run{
		Flow: f, src: client(), tgt: client(), meta: cl,
		srcAdmin: adm, tgtAdmin: adm, store: store, loaded: loaded,
		repl:      replicate.New(replicate.Options{Flow: "f", Metrics: m, Logger: f.logger}),
		targetIDs: map[string]string{"tgt": tgtID}, stuckTopics: map[string]bool{},
	}
	topics := []topicsync.Topic{{Source: "src", Target: "tgt", Partitions: 3, SourceID: srcID, TargetID: tgtID}}
	ends, err := adm.ListEndOffsets(ctx, "src")
	if err != nil {
		t.Fatal(err)
	}
	stuck := newStuckSet()
	as := r.assignments(ctx, topics, ends, false, stuck)
	if len(as) != 3 {
		t.Fatalf("%d assignments, want 3 (stuck: %+v)", len(as), stuck.byTopic)
	}
	want := map[int32][2]int64{0: {10, 10}, 1: {6, 6}, 2: {10, 10}}
	for _, a := range as {
		w := want[a.Source.Partition]
		if a.Start.SourceNext != w[0] || a.Start.TargetNext != w[1] {
			t.Errorf("partition %d starts at source %d, target %d; want %d, %d",
				a.Source.Partition, a.Start.SourceNext, a.Start.TargetNext, w[0], w[1])
		}
	}
	stored, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := stored.Positions[progress.Partition{Topic: "src", Partition: 1}]; pos.SourceNext != 6 || pos.TargetNext != 6 {
		t.Errorf("partition 1's stored position = %+v, want 6/6", pos)
	}
	if got := value(t, m.TargetDataLoss.WithLabelValues("f", "src")); got != 1 {
		t.Errorf("target data loss counted %v times, want 1", got)
	}
	if got := value(t, m.TopicsRecreated.WithLabelValues("f", sideTarget, "tgt")); got != 0 {
		t.Errorf("target topic counted as re-created %v times, want 0", got)
	}
}
