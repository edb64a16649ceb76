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
		return l.Await(ctx, 10*time.Second, writer, topic, p, off)
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
		v, src := l.Await(ctx, wait, tc.writer, tc.topic, tc.partition, tc.offset)
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
