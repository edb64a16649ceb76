package provenance

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

func progressTopic(flow string) string { return "__kmirror." + flow + ".progress" }

// The ledger proves a record a copy exactly when the flow its mark names
// stored a run over its offset, disproves it once the flow's stored
// position passed the offset without one, and waits otherwise; it follows
// the flow's progress as it is written, runs deleted by retention
// included.
func TestLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kfaketest.Cluster(t)
	writerCl := kfaketest.Client(t, c)
	store := progress.NewStore(writerCl, progressTopic("a-to-b"))
	if err := store.Ensure(ctx, -1); err != nil {
		t.Fatal(err)
	}
	orders := progress.Partition{Topic: "orders", Partition: 1}
	write := func(pos progress.Position, runs, dropped []offsets.Run) {
		t.Helper()
		if err := store.Write(ctx, []progress.Entry{{Partition: orders, Position: pos, Runs: runs, Dropped: dropped}}); err != nil {
			t.Fatal(err)
		}
	}
	// a-to-b copied source 100..104 to target 10..14 and 105..106 to
	// 20..21; the target's own producers wrote 15..19.
	write(progress.Position{SourceNext: 107, TargetNext: 22},
		[]offsets.Run{{Source: 100, Target: 10, Len: 5}, {Source: 105, Target: 20, Len: 2}}, nil)

	l := NewLedger(LedgerOptions{Client: kfaketest.Client(t, c, kgo.FetchIsolationLevel(kgo.ReadCommitted())), ProgressTopic: progressTopic})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); l.Run(runCtx) }()
	defer func() { stop(); <-done }()

	await := func(writer, topic string, p int32, off int64) (Verdict, int64) {
		return l.Await(ctx, 10*time.Second, writer, topic, topic, p, off)
	}
	for _, tc := range []struct {
		writer, topic string
		partition     int32
		offset        int64
		want          Verdict
		src           int64
	}{
		{"a-to-b", "orders", 1, 10, Copy, 100},
		{"a-to-b", "orders", 1, 14, Copy, 104},
		{"a-to-b", "orders", 1, 15, NotCopy, -1}, // the target's own record
		{"a-to-b", "orders", 1, 19, NotCopy, -1},
		{"a-to-b", "orders", 1, 21, Copy, 106},
		{"a-to-b", "orders", 1, 9, NotCopy, -1},
		{"a-to-b", "orders", 0, 10, Unknown, -1},   // no progress of that partition
		{"a-to-b", "payments", 1, 10, Unknown, -1}, // nor of that topic
		{"a-to-b", "orders", 1, 22, Unknown, -1},   // past the stored position
		{"c-to-b", "orders", 1, 10, NotCopy, -1},   // no such flow stores progress here
		{"bad/name", "orders", 1, 10, NotCopy, -1}, // names no flow at all
	} {
		wait := 10 * time.Second
		if tc.want == Unknown {
			wait = 300 * time.Millisecond
		}
		v, src := l.Await(ctx, wait, tc.writer, tc.topic, tc.topic, tc.partition, tc.offset)
		if v != tc.want || src != tc.src {
			t.Errorf("%s %s/%d@%d = %v, %d; want %v, %d", tc.writer, tc.topic, tc.partition, tc.offset, v, src, tc.want, tc.src)
		}
	}

	// The flow goes on: the run grows, a new one starts, the oldest is
	// deleted by retention.
	write(progress.Position{SourceNext: 110, TargetNext: 30},
		[]offsets.Run{{Source: 105, Target: 20, Len: 3}, {Source: 108, Target: 28, Len: 2}}, []offsets.Run{{Source: 100, Target: 10, Len: 5}})
	for _, tc := range []struct {
		offset int64
		want   Verdict
	}{{22, Copy}, {29, Copy}, {25, NotCopy}, {10, NotCopy}} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			v, _ := await("a-to-b", "orders", 1, tc.offset)
			if v == tc.want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the flow went on: offset %d = %v, want %v", tc.offset, v, tc.want)
			}
			select {
			case <-l.Changed():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// A writer that stopped cleanly, or was failed over, writes nothing past
// where it stopped: records there are not its copies, without a wait. A
// wait that ran out makes the partition stale until the writer's
// progress moves.
func TestLedgerStoppedAndFailedOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kfaketest.Cluster(t)
	writerCl := kfaketest.Client(t, c)
	store := progress.NewStore(writerCl, progressTopic("a-to-b"))
	if err := store.Ensure(ctx, -1); err != nil {
		t.Fatal(err)
	}
	p0, p1 := progress.Partition{Topic: "orders", Partition: 0}, progress.Partition{Topic: "orders", Partition: 1}
	if err := store.Write(ctx, []progress.Entry{
		{Partition: p0, Position: progress.Position{SourceNext: 5, TargetNext: 5, Stopped: true}, Runs: []offsets.Run{{Source: 0, Target: 0, Len: 5}}},
		{Partition: p1, Position: progress.Position{SourceNext: 5, TargetNext: 5}, Runs: []offsets.Run{{Source: 0, Target: 0, Len: 5}}},
	}); err != nil {
		t.Fatal(err)
	}
	l := NewLedger(LedgerOptions{Client: kfaketest.Client(t, c, kgo.FetchIsolationLevel(kgo.ReadCommitted())), ProgressTopic: progressTopic})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); l.Run(runCtx) }()
	defer func() { stop(); <-done }()
	check := func(p int32, off int64, wait time.Duration) Verdict {
		v, _ := l.Await(ctx, wait, "a-to-b", "orders", "orders", p, off)
		return v
	}
	if v := check(0, 4, 10*time.Second); v != Copy {
		t.Fatalf("offset 4 = %v, want copy", v)
	}
	if v := check(0, 9, time.Second); v != NotCopy {
		t.Errorf("past a clean stop: %v, want not a copy", v)
	}
	if v := check(1, 9, 300*time.Millisecond); v != Unknown {
		t.Errorf("past a running writer's position: %v, want unknown", v)
	}
	l.Expire("a-to-b", "orders", 1)
	if v := check(1, 9, 0); v != Stale {
		t.Errorf("after the wait expired: %v, want stale", v)
	}
	// Failed over at target offset 7 of partition 1; the position moves
	// too (stale no more).
	if err := store.PutFailover(ctx, progress.Failover{AtMs: 1, TargetEnds: map[string]map[int32]int64{"orders": {1: 7}}}); err != nil {
		t.Fatal(err)
	}
	if v := check(1, 8, 10*time.Second); v != NotCopy {
		t.Errorf("past the failover's end: %v, want not a copy", v)
	}
	if v := check(1, 6, 0); v != Stale {
		t.Errorf("before the failover's end, expired: %v, want stale", v)
	}
	if err := store.Write(ctx, []progress.Entry{{Partition: p1, Position: progress.Position{SourceNext: 6, TargetNext: 6}, Runs: []offsets.Run{{Source: 0, Target: 0, Len: 6}}}}); err != nil {
		t.Fatal(err)
	}
	if v := check(1, 5, 10*time.Second); v != Copy {
		t.Errorf("after the writer went on: %v, want copy", v)
	}
	if v := check(1, 6, 0); v != Unknown {
		t.Errorf("after the writer went on: %v, want unknown (stale no more)", v)
	}
	if err := store.ClearFailover(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for check(1, 8, 0) != Unknown {
		if time.Now().After(deadline) {
			t.Fatal("failover cleared: offset 8 still not unknown")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type liveWriter map[int64]Verdict

func (lw liveWriter) Proof(_, _ string, _ int32, offset int64) (Verdict, int64) {
	if v, ok := lw[offset]; ok && v == Copy {
		return v, offset + 100
	} else if ok {
		return v, -1
	}
	return Unknown, -1
}

// A writer running in the same process answers from memory before
// anything is stored; what it does not know falls back to the store.
func TestLedgerLiveWriter(t *testing.T) {
	c := kfaketest.Cluster(t)
	l := NewLedger(LedgerOptions{Client: kfaketest.Client(t, c), ProgressTopic: progressTopic,
		Live: func(w string) LiveWriter {
			if w == "a-to-b" {
				return liveWriter{1: Copy, 2: NotCopy}
			}
			return nil
		}})
	for _, tc := range []struct {
		writer string
		off    int64
		want   Verdict
		src    int64
	}{{"a-to-b", 1, Copy, 101}, {"a-to-b", 2, NotCopy, -1}, {"a-to-b", 3, Unknown, -1}, {"c-to-b", 1, Unknown, -1}} {
		if v, src := l.Check(tc.writer, "orders", "orders", 0, tc.off); v != tc.want || src != tc.src {
			t.Errorf("Check(%s, %d) = %v, %d; want %v, %d", tc.writer, tc.off, v, src, tc.want, tc.src)
		}
	}
}

func TestMark(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mark
		ok   bool
	}{
		{"2;a-to-b;A,B", Mark{Writer: "a-to-b", Path: []string{"A", "B"}}, true},
		{"2;a-to-b;A,C,B;orders", Mark{Writer: "a-to-b", Path: []string{"A", "C", "B"}, SourceTopic: "orders"}, true},
		{"A,B", Mark{Path: []string{"A", "B"}, Legacy: true}, true},
		{"", Mark{}, false},
		{"2;;A,B", Mark{}, false},
		{"2;f;", Mark{}, false},
		{"2;f;A,,B", Mark{}, false},
		{"2;f;A;", Mark{}, false},
		{"2;f;A;t;x", Mark{}, false},
		{"A;B", Mark{}, false},
	} {
		got, ok := Parse([]byte(tc.in))
		if ok != tc.ok || (ok && (got.Writer != tc.want.Writer || got.SourceTopic != tc.want.SourceTopic || got.Legacy != tc.want.Legacy || len(got.Path) != len(tc.want.Path))) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
			continue
		}
		if ok && !got.Legacy {
			if enc := string(got.Encode()); enc != tc.in {
				t.Errorf("Encode(Parse(%q)) = %q", tc.in, enc)
			}
			if n := len(Header) + len(tc.in); n > MaxHeaderBytes(len(got.Path)) {
				t.Errorf("%q: %d bytes, over MaxHeaderBytes %d", tc.in, n, MaxHeaderBytes(len(got.Path)))
			}
		}
	}
}
