package flow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
)

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// abandonWatch watches the target producer: Replicator.Abandon is the only
// caller of its AbortBufferedRecords here, which logs that the producer is
// aborting; it records whether the lease had ended by then, and counts the
// records failed as aborted.
type abandonWatch struct {
	lease      atomic.Pointer[ownership.Lease]
	seq        *atomic.Int64
	abortingAt atomic.Int64 // step at which the producer started aborting, 0 if never
	leaseValid atomic.Bool  // the lease was still valid then
	aborted    atomic.Int64
}

func (w *abandonWatch) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (w *abandonWatch) Log(_ kgo.LogLevel, msg string, _ ...any) {
	if !strings.HasPrefix(msg, "producer state set to aborting") {
		return
	}
	if w.abortingAt.CompareAndSwap(0, w.seq.Add(1)) {
		l := w.lease.Load()
		w.leaseValid.Store(l != nil && l.Allow() == nil)
	}
}

func (w *abandonWatch) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if errors.Is(err, kgo.ErrAborting) {
		w.aborted.Add(1)
	}
}

// releaseEnv is a flow's run under a real ownership lease against kfake
// clusters, wired as runMember wires it: the target clients are gated by
// the lease, one source partition src/0 is replicated to dst/0.
type releaseEnv struct {
	ctx     context.Context
	tgt     *kfake.Cluster
	lease   *ownership.Lease
	run     *run
	watch   *abandonWatch
	seq     atomic.Int64 // orders the events the tests watch
	logs    *syncBuffer
	srcProd *kgo.Client
	tgtAdm  *kadm.Client
	store   *progress.Store

	stalling atomic.Bool
	stalled  atomic.Int64 // produce requests held at the target
	wake     func()       // answers the held requests
}

const (
	releaseSrcTopic = "src"
	releaseDstTopic = "dst"
)

func newReleaseEnv(t *testing.T) *releaseEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e := &releaseEnv{ctx: ctx, logs: &syncBuffer{}}
	e.watch = &abandonWatch{seq: &e.seq}
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, releaseSrcTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	e.tgt, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, releaseDstTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.tgt.Close) // also wakes a request still held
	wake := make(chan struct{})
	var once sync.Once
	e.wake = func() { once.Do(func() { close(wake) }) }
	t.Cleanup(e.wake)
	e.tgt.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.tgt.KeepControl()
		if !e.stalling.Load() {
			return nil, nil, false
		}
		e.stalled.Add(1)
		e.tgt.SleepControl(func() { <-wake })
		return nil, nil, false
	})
	newClient := func(seeds []string, opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	e.srcProd = newClient(src.ListenAddrs())
	e.tgtAdm = kadm.NewClient(newClient(e.tgt.ListenAddrs()))

	// The lease: this process alone in the flow's ownership group.
	discard := slog.New(slog.DiscardHandler)
	member := ownership.Join(ownership.Options{
		Client: newClient(e.tgt.ListenAddrs()), Group: "owners", Timeout: 6 * time.Second,
		Self: ownership.Self(time.Now()), Logger: discard,
	})
	t.Cleanup(member.Leave)
	e.lease, err = member.Wait(ctx)
	if err != nil {
		t.Fatalf("waiting for the lease: %v", err)
	}
	e.watch.lease.Store(e.lease)

	target := &config.Cluster{Alias: "dst", BootstrapServers: e.tgt.ListenAddrs(), ClientID: "kmirror",
		DialTimeout: 5 * time.Second, RequestTimeout: 10 * time.Second}
	gated := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kafka.NewGatedClient(target, discard, e.lease, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	tgt := gated(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.WithHooks(e.watch), kgo.WithLogger(e.watch))
	meta := gated(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))
	e.store = progress.NewStore(meta, policy.ProgressTopic("f"))
	if err := e.store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	m := metrics.New()
	repl := replicate.New(replicate.Options{
		Flow: "f", Source: newClient(src.ListenAddrs(), kgo.FetchMaxWait(100*time.Millisecond)), Target: tgt,
		Progress: e.store, ProgressInterval: 50 * time.Millisecond, Metrics: m, Logger: logger,
	})
	// releaseWait is a third of it (500 ms); Abandon may wait until a
	// twentieth before half of it from the start of the release.
	fc := &config.Flow{Name: "f", OwnershipTimeout: 1500 * time.Millisecond}
	e.run = &run{Flow: &Flow{cfg: fc, target: target, metrics: m, logger: logger}, tgt: tgt, meta: meta, store: e.store, repl: repl}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = repl.Run(runCtx) }()
	t.Cleanup(func() {
		// As the flow does once its lease ended: the clients would retry
		// their refused writes for ever.
		e.wake()
		stop()
		for {
			tgt.UnsafeAbortBufferedRecords()
			meta.UnsafeAbortBufferedRecords()
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	repl.Add([]replicate.Assignment{{
		Source:      progress.Partition{Topic: releaseSrcTopic, Partition: 0},
		TargetTopic: releaseDstTopic,
		Start:       progress.Position{SourceNext: 0, TargetNext: -1},
	}})
	return e
}

func (e *releaseEnv) produce(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		v := fmt.Appendf(nil, "r%d", i)
		if err := e.srcProd.ProduceSync(e.ctx, &kgo.Record{Topic: releaseSrcTopic, Partition: 0, Key: v, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *releaseEnv) targetEnd(t *testing.T) int64 {
	t.Helper()
	ends, err := e.tgtAdm.ListEndOffsets(e.ctx, releaseDstTopic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ends.Lookup(releaseDstTopic, 0)
	return o.Offset
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// release revokes src/0 as the member loop does.
func (e *releaseEnv) release() bool {
	own := &ownedSet{set: map[progress.Partition]bool{{Topic: releaseSrcTopic, Partition: 0}: true}}
	return e.run.release(e.ctx, e.lease, own, []ownership.Partition{{Topic: releaseSrcTopic, Partition: 0}})
}

// TestReleaseNotDrainedEndsTheLeaseBeforeAbandon revokes a partition whose
// write is held at the target: Release cannot drain it, so release ends
// the lease before it calls Abandon (every record Abandon fails is failed
// under the ended lease: nothing of it can be sent again), and reports
// that the partition may not be handed over yet.
func TestReleaseNotDrainedEndsTheLeaseBeforeAbandon(t *testing.T) {
	e := newReleaseEnv(t)
	e.produce(t, 0, 5)
	waitUntil(t, "the first records copied", func() bool { return e.targetEnd(t) == 5 })

	e.stalling.Store(true)
	e.produce(t, 5, 10)
	waitUntil(t, "a write held at the target", func() bool { return e.stalled.Load() > 0 })
	// Records behind the held write wait in the producer's buffer.
	e.produce(t, 10, 15)

	var endedAt atomic.Int64
	e.lease.OnEnd(func() { endedAt.Store(e.seq.Add(1)) })
	start := time.Now()
	ok := e.release()
	returnedAt := e.seq.Add(1)
	took := time.Since(start)

	if ok {
		t.Fatal("release with a write held at the target = true, want false (not to be handed over yet)")
	}
	if e.lease.Allow() == nil {
		t.Fatal("the lease is still valid after a release that did not drain")
	}
	abandonAt := e.watch.abortingAt.Load()
	switch {
	case endedAt.Load() == 0:
		t.Fatal("the lease did not end")
	case abandonAt == 0:
		t.Fatalf("Abandon was not called: the target producer never aborted its buffered records; log:\n%s", e.logs.String())
	case e.watch.leaseValid.Load() || abandonAt < endedAt.Load():
		t.Fatalf("Abandon aborted the producer's records (step %d) before the lease ended (step %d)", abandonAt, endedAt.Load())
	case abandonAt > returnedAt:
		t.Fatalf("Abandon ran (step %d) after release returned (step %d)", abandonAt, returnedAt)
	}
	if !strings.Contains(e.logs.String(), "gives up its lease") {
		t.Errorf("release did not log that it gives up the lease; log:\n%s", e.logs.String())
	}
	// Release waits releaseWait; Abandon at most until a twentieth of the
	// ownership timeout before half of it.
	if limit := e.run.cfg.OwnershipTimeout/2 + time.Second; took > limit {
		t.Errorf("release took %s, want at most about %s", took, limit)
	}
	if e.run.repl.Has(releaseSrcTopic, 0) {
		t.Error("the released partition is still replicated")
	}
	t.Logf("release returned false after %s: the lease ended at step %d, Abandon aborted the producer at step %d, release returned at step %d",
		took.Round(time.Millisecond), endedAt.Load(), abandonAt, returnedAt)
}

// TestReleaseDrainedKeepsTheLease revokes a partition whose writes were
// all answered: release stores its position, marked stopped, keeps the
// lease and reports that it may be handed over.
func TestReleaseDrainedKeepsTheLease(t *testing.T) {
	e := newReleaseEnv(t)
	e.produce(t, 0, 10)
	waitUntil(t, "every record copied", func() bool { return e.targetEnd(t) == 10 })

	if !e.release() {
		t.Fatalf("release with every write answered = false, want true; log:\n%s", e.logs.String())
	}
	if err := e.lease.Allow(); err != nil {
		t.Fatalf("the lease ended after a release that drained: %v", err)
	}
	if e.watch.abortingAt.Load() != 0 || e.watch.aborted.Load() != 0 {
		t.Errorf("a release that drained aborted the producer (%d records failed)", e.watch.aborted.Load())
	}
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pos := loaded.Positions[progress.Partition{Topic: releaseSrcTopic, Partition: 0}]
	if pos.SourceNext != 10 || pos.TargetNext != 10 || !pos.Stopped {
		t.Errorf("stored position after the release = %+v, want source 10, target 10, stopped", pos)
	}
	if e.run.repl.Has(releaseSrcTopic, 0) {
		t.Error("the released partition is still replicated")
	}
}
