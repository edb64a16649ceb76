package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// TestReleaseRacingProgressWriteKeepsStopped starts a progress write right
// after Release stored a partition's clean stop and before the partition
// left the data plane: the position stored last for the released
// partition is still its clean stop (Stopped), not the racing write's.
func TestReleaseRacingProgressWriteKeepsStopped(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 1, nil)
	e.createTopic(t, e.tgtAdmin, dst, 1, nil)
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: time.Hour, // the test writes progress itself
		Metrics:          e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	e.run(t, r)
	p0 := progress.Partition{Topic: src, Partition: 0}
	r.Add([]Assignment{{Source: p0, TargetTopic: dst, Start: progress.Position{SourceNext: 7, TargetNext: 7}}})
	if err := r.writeProgress(e.ctx); err != nil {
		t.Fatal(err)
	}
	racing := make(chan error, 1)
	releaseStoredHook = func() {
		releaseStoredHook = nil
		go func() { racing <- r.writeProgress(e.ctx) }()
		// Long enough for the racing write to store whatever it finds.
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { releaseStoredHook = nil })
	if err := r.Release(e.ctx, []progress.Partition{p0}); err != nil {
		t.Fatal(err)
	}
	if err := <-racing; err != nil {
		t.Fatal(err)
	}
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[p0]; pos.SourceNext != 7 || !pos.Stopped {
		t.Errorf("released partition's last stored position = %+v, want 7, Stopped", pos)
	}
}

// gatedDialer stands in for the lease: once ended is set, nothing more is
// written to the target, on new or open connections.
func gatedDialer(ended *atomic.Bool) func(ctx context.Context, network, host string) (net.Conn, error) {
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		if ended.Load() {
			return nil, errors.New("lease ended")
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		return gatedConn{Conn: c, ended: ended}, nil
	}
}

type gatedConn struct {
	net.Conn
	ended *atomic.Bool
}

func (c gatedConn) Write(b []byte) (int, error) {
	if c.ended.Load() {
		return 0, errors.New("lease ended")
	}
	return c.Conn.Write(b)
}

// TestReleaseStalledAtTheTarget revokes a partition while its produce
// request is stalled at the target. Release does not drain and says so;
// once the lease ended, Abandon does not report the partition free while
// the stalled write is unanswered; it returns once the target answered
// it. A new owner that starts then, from where the target ends (as the
// resume comparison finds it), writes after every record of the old owner:
// the target holds each source record once, in order.
func TestReleaseStalledAtTheTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const src, dst, n = "t", "primary.t", 10
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	var stalling atomic.Bool
	wake := make(chan struct{})
	var wakeOnce sync.Once
	open := func() { wakeOnce.Do(func() { close(wake) }) }
	t.Cleanup(open)
	var stalled atomic.Int64
	tgt.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		if !stalling.Load() {
			return nil, nil, false
		}
		// Every produce stalls (newer requests name topics by ID only).
		stalled.Add(1)
		tgt.SleepControl(func() { <-wake })
		return nil, nil, false
	})
	srcAddrs := newCluster(t)
	e := &env{
		ctx:      ctx,
		producer: newClient(t, srcAddrs, kgo.RecordPartitioner(kgo.ManualPartitioner())),
		metrics:  metrics.New(),
	}
	e.srcAdmin = kadm.NewClient(newClient(t, srcAddrs))
	e.tgtAdmin = kadm.NewClient(newClient(t, tgt.ListenAddrs()))
	e.createTopic(t, e.srcAdmin, src, 1, nil)
	e.createTopic(t, e.tgtAdmin, dst, 1, nil)
	var ended atomic.Bool
	oldTgt := newClient(t, tgt.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.Dialer(gatedDialer(&ended)))
	store := progress.NewStore(oldTgt, policy.ProgressTopic(flowName))
	stalling.Store(false)
	if err := store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	stalling.Store(true)
	rec := func(i int) *kgo.Record {
		v := fmt.Appendf(nil, "b%d", i)
		return &kgo.Record{Partition: 0, Key: v, Value: v}
	}
	for i := range n {
		e.produce(t, src, rec(i))
	}

	// The old owner: its writes of b0..b9 stall at the target.
	old := New(Options{
		Flow: flowName, Source: newClient(t, srcAddrs, kgo.FetchMaxWait(100*time.Millisecond)),
		Target: oldTgt, Progress: store, ProgressInterval: 20 * time.Millisecond,
		Metrics: e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	old.Add(assignments(src, dst, 1))
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = old.Run(runCtx) }() // its final store is refused: the lease ended
	defer func() { stopRun(); <-runDone }()
	waitFor(t, "the old owner's write stalled at the target", func() bool { return stalled.Load() > 0 })

	p0 := progress.Partition{Topic: src, Partition: 0}
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = old.Release(rctx, []progress.Partition{p0})
	rcancel()
	if !errors.Is(err, ErrNotDrained) {
		t.Fatalf("Release with a write stalled at the target = %v, want ErrNotDrained", err)
	}
	ended.Store(true) // the flow ends its lease
	abandoned := make(chan error, 1)
	go func() { abandoned <- old.Abandon(ctx, []progress.Partition{p0}) }()
	select {
	case err := <-abandoned:
		t.Fatalf("Abandon returned (%v) while the old owner's write is stalled at the target", err)
	case <-time.After(500 * time.Millisecond):
	}
	stalling.Store(false)
	open() // the stalled write lands
	select {
	case err := <-abandoned:
		if err != nil {
			t.Fatalf("Abandon: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Abandon did not return after the target answered the stalled write")
	}

	// The new owner starts where the target ends.
	end := endOffsets(t, ctx, e.tgtAdmin, dst)[0]
	newTgt := newClient(t, tgt.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()))
	successor := New(Options{
		Flow: flowName, Source: newClient(t, srcAddrs, kgo.FetchMaxWait(100*time.Millisecond)),
		Target: newTgt, Progress: progress.NewStore(newTgt, policy.ProgressTopic(flowName)), ProgressInterval: 20 * time.Millisecond,
		Metrics: metrics.New(), Logger: slog.New(slog.DiscardHandler),
	})
	successor.Add([]Assignment{{Source: p0, TargetTopic: dst, Start: progress.Position{SourceNext: end, TargetNext: end}}})
	e.run(t, successor)
	for i := n; i < 2*n; i++ {
		e.produce(t, src, rec(i))
	}
	waitFor(t, "the new owner copied the rest", func() bool { return endOffsets(t, ctx, e.tgtAdmin, dst)[0] >= 2*n })
	time.Sleep(300 * time.Millisecond) // anything of the old owner still on its way lands
	cl := newClient(t, tgt.ListenAddrs(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{dst: {0: kgo.NewOffset().AtStart()}}))
	var got []string
	for len(got) < 2*n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if end := endOffsets(t, ctx, e.tgtAdmin, dst)[0]; end != 2*n {
		t.Errorf("target holds %d records, want %d (%v)", end, 2*n, got)
	}
	for i, v := range got {
		if want := fmt.Sprintf("b%d", i); v != want {
			t.Fatalf("target record %d is %s, want %s: %v", i, v, want, got)
		}
	}
}
