package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// activeActive runs east-to-west and west-to-east with identity names on
// two fake clusters (topic t, one partition): clients of east and west,
// and the flows once started. Group sync passes run only when the test
// asks.
type activeActive struct {
	t          *testing.T
	cfg        *config.Config
	east, west *kgo.Client
	flows      map[string]*Flow
	stops      []func()
}

func startActiveActive(t *testing.T, ctx context.Context, scaleOut bool) *activeActive {
	t.Helper()
	eastC := kfaketest.Cluster(t, kfake.ClusterID("id-east"))
	westC := kfaketest.Cluster(t, kfake.ClusterID("id-west"))
	aa := &activeActive{t: t, flows: map[string]*Flow{},
		east: kfaketest.Client(t, eastC, kgo.RecordPartitioner(kgo.ManualPartitioner())),
		west: kfaketest.Client(t, westC, kgo.RecordPartitioner(kgo.ManualPartitioner()))}
	for _, cl := range []*kgo.Client{aa.east, aa.west} {
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, nil, "t"); err != nil {
			t.Fatal(err)
		}
	}
	var flows string
	for _, f := range [][2]string{{"east", "west"}, {"west", "east"}} {
		flows += fmt.Sprintf(`  - {name: %s-to-%s, source: %s, target: %s, topics: [t], topic_naming: identity,
     topic_refresh_interval: 200ms, progress_interval: 100ms, sync_interval: 10m, heartbeat_interval: off, scale_out: %t}
`, f[0], f[1], f[0], f[1], scaleOut)
	}
	body := fmt.Sprintf("clusters:\n  east: {bootstrap_servers: [%q]}\n  west: {bootstrap_servers: [%q]}\nflows:\n%s",
		eastC.ListenAddrs()[0], westC.ListenAddrs()[0], flows)
	cfg, err := config.Parse("kmirror.yaml", []byte(body), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	aa.cfg = cfg
	return aa
}

// start runs both flows, new objects each time (nothing kept in memory).
func (aa *activeActive) start(ctx context.Context) {
	for _, fc := range aa.cfg.Flows {
		f := New(aa.cfg, fc, metrics.New(), slog.New(slog.DiscardHandler))
		aa.flows[fc.Name] = f
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = f.Run(runCtx) }()
		aa.stops = append(aa.stops, func() { stop(); <-done })
	}
	aa.t.Cleanup(aa.stop)
}

func (aa *activeActive) stop() {
	for _, s := range aa.stops {
		s()
	}
	aa.stops = nil
}

func (aa *activeActive) produce(ctx context.Context, cl *kgo.Client, value string) {
	aa.t.Helper()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte(value)}).FirstErr(); err != nil {
		aa.t.Fatal(err)
	}
}

// waitEnds waits until t/0 ends at n on both clusters and both flows are
// caught up.
func (aa *activeActive) waitEnds(ctx context.Context, n int64) {
	aa.t.Helper()
	for {
		ok := true
		for _, cl := range []*kgo.Client{aa.east, aa.west} {
			ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "t")
			if e, found := ends.Lookup("t", 0); err != nil || !found || e.Offset != n {
				ok = false
			}
		}
		for _, f := range aa.flows {
			lags, err := f.Lag(ctx)
			if err != nil || len(lags) != 1 || lags[0].Lag != 0 || !f.started.Load() {
				ok = false
			}
			// Stored too: the other flow's group sync reads it.
			cl := aa.west
			if f.cfg.Target == "east" {
				cl = aa.east
			}
			loaded, err := progress.NewStore(cl, policy.ProgressTopic(f.cfg.Name)).Load(ctx)
			if pos, has := loaded.Positions[progress.Partition{Topic: "t"}]; err != nil || !has || pos.SourceNext != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if ctx.Err() != nil {
			aa.t.Fatalf("t/0 did not reach %d records on both clusters", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (aa *activeActive) sync(ctx context.Context, flow string) groupsync.Report {
	aa.t.Helper()
	for {
		rep, err := aa.flows[flow].SyncGroupsNow(ctx)
		if err == nil {
			for _, g := range rep.Groups {
				if g.Err != nil {
					aa.t.Errorf("group sync of %s, group %s: %v", flow, g.Group, g.Err)
				}
			}
			return rep
		}
		if ctx.Err() != nil {
			aa.t.Fatalf("group sync of %s: %v", flow, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func committed(t *testing.T, ctx context.Context, cl *kgo.Client, group string) int64 {
	t.Helper()
	got, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	o, ok := got.Lookup("t", 0)
	if !ok {
		return -1
	}
	return o.At
}

func commit(t *testing.T, ctx context.Context, cl *kgo.Client, group string, at int64) {
	t.Helper()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: "t", Partition: 0, At: at, LeaderEpoch: -1})
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func checkpointOf(t *testing.T, ctx context.Context, cl *kgo.Client, flow, group string) groupsync.Checkpoint {
	t.Helper()
	cps, err := groupsync.NewStore(cl, policy.CheckpointTopic(flow)).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		if c.Group == group {
			return c
		}
	}
	t.Fatalf("no checkpoint of %s by %s", group, flow)
	return groupsync.Checkpoint{}
}

// A record of the target's own producer, written there before the copy of
// what the group read, is not passed: west holds w0@0 and e0's copy @1,
// east e0@0 and w0's copy @1. A group that read e0 (committed 1) has not
// read w0 in any form: on west it resumes at 0, re-reading e0's copy, and
// the checkpoint says it is not exact. A group that read both (2) lands on
// west's end, exactly.
func TestGroupTranslationKeepsTargetRecords(t *testing.T) {
	for _, scaleOut := range []bool{true, false} {
		t.Run(fmt.Sprintf("scale_out %t", scaleOut), func(t *testing.T) { testGroupTranslationKeepsTargetRecords(t, scaleOut) })
	}
}

func testGroupTranslationKeepsTargetRecords(t *testing.T, scaleOut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	aa := startActiveActive(t, ctx, scaleOut)
	// Each written before either flow copies the other.
	aa.produce(ctx, aa.west, "w0")
	aa.produce(ctx, aa.east, "e0")
	aa.start(ctx)
	aa.waitEnds(ctx, 2)

	commit(t, ctx, aa.east, "read-e0", 1)
	commit(t, ctx, aa.east, "read-both", 2)
	aa.sync(ctx, "east-to-west")
	for group, want := range map[string]groupsync.Checkpoint{
		"read-e0":   {SourceOffset: 1, TargetOffset: 0, Exact: false},
		"read-both": {SourceOffset: 2, TargetOffset: 2, Exact: true},
	} {
		c := checkpointOf(t, ctx, aa.west, "east-to-west", group)
		if c.SourceOffset != want.SourceOffset || c.TargetOffset != want.TargetOffset || c.Exact != want.Exact {
			t.Errorf("%s: checkpoint %d → %d exact %t; want %d → %d exact %t", group,
				c.SourceOffset, c.TargetOffset, c.Exact, want.SourceOffset, want.TargetOffset, want.Exact)
		}
		if got := committed(t, ctx, aa.west, group); got != want.TargetOffset {
			t.Errorf("%s committed on west at %d, want %d", group, got, want.TargetOffset)
		}
	}
}

// Group sync does not carry back what it wrote: a group committed on east
// by its consumer, synced to west, is not synced from west back to east
// (a ping-pong that rounded forward, past records the group never read),
// also by flows started again (the state is in Kafka). Once the group's
// consumer commits on west (after a failover), west-to-east carries it to
// east, and east-to-west no longer carries east's offset back.
func TestGroupSyncDoesNotWriteBack(t *testing.T) {
	for _, scaleOut := range []bool{true, false} {
		t.Run(fmt.Sprintf("scale_out %t", scaleOut), func(t *testing.T) { testGroupSyncDoesNotWriteBack(t, scaleOut) })
	}
}

func testGroupSyncDoesNotWriteBack(t *testing.T, scaleOut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	aa := startActiveActive(t, ctx, scaleOut)
	// Each written before either flow copies the other.
	aa.produce(ctx, aa.west, "w0")
	aa.produce(ctx, aa.east, "e0")
	aa.start(ctx)
	aa.waitEnds(ctx, 2)

	commit(t, ctx, aa.east, "g", 1)
	for pass := range 2 {
		if pass == 1 {
			aa.stop()
			aa.start(ctx)
			aa.waitEnds(ctx, 2)
		}
		for range 3 {
			aa.sync(ctx, "east-to-west")
			rep := aa.sync(ctx, "west-to-east")
			for _, g := range rep.Groups {
				if g.Group == "g" && (g.Echoed != 1 || len(g.Checkpoints) != 0 || g.Committed != 0) {
					t.Errorf("west-to-east on g: %d echoed, %d checkpoints, %d committed; want 1, 0, 0", g.Echoed, len(g.Checkpoints), g.Committed)
				}
			}
		}
		if got := committed(t, ctx, aa.east, "g"); got != 1 {
			t.Fatalf("pass %d: g committed on east at %d; its consumer committed 1", pass, got)
		}
		if got := committed(t, ctx, aa.west, "g"); got != 0 {
			t.Fatalf("pass %d: g committed on west at %d, want 0", pass, got)
		}
	}

	// The group moves to west and reads w0 and e0's copy there.
	commit(t, ctx, aa.west, "g", 2)
	for range 3 {
		aa.sync(ctx, "west-to-east")
		rep := aa.sync(ctx, "east-to-west")
		for _, g := range rep.Groups {
			if g.Group == "g" && (g.Echoed != 1 || g.Committed != 0) {
				t.Errorf("east-to-west on g after the move: %d echoed, %d committed; want 1, 0", g.Echoed, g.Committed)
			}
		}
	}
	if got := committed(t, ctx, aa.east, "g"); got != 2 {
		t.Errorf("g committed on east at %d after its consumer committed 2 on west, want 2", got)
	}
	if got := committed(t, ctx, aa.west, "g"); got != 2 {
		t.Errorf("g committed on west at %d, want its consumer's 2", got)
	}
	c := checkpointOf(t, ctx, aa.east, "west-to-east", "g")
	if c.SourceOffset != 2 || c.TargetOffset != 2 || !c.Exact {
		t.Errorf("west-to-east checkpoint of g: %+v, want 2 → 2 exact", c)
	}
}
