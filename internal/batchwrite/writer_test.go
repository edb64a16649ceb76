package batchwrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batch/batchtest"
	"github.com/kmirror/kmirror/internal/kfaketest"
)

// answer is what a batch's done callback reported.
type answer struct {
	seq  int // the order the batch was queued in, for its partition
	base int64
	err  error
}

// answers collects the callbacks of the batches of each partition.
type answers struct {
	mu  sync.Mutex
	got map[int32][]answer
	n   int
}

func (a *answers) callback(partition int32, seq int) func(int64, error) {
	return func(base int64, err error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.got == nil {
			a.got = map[int32][]answer{}
		}
		a.got[partition] = append(a.got[partition], answer{seq, base, err})
		a.n++
	}
}

func (a *answers) wait(t *testing.T, n int) map[int32][]answer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a.mu.Lock()
		if a.n >= n {
			defer a.mu.Unlock()
			return a.got
		}
		got := a.n
		a.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d batches answered", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWriterCopiesBatches writes batches of every codec to three
// partitions and reads them back: each batch is answered once, in order,
// at consecutive offsets, and every record reads as the source's.
func TestWriterCopiesBatches(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(3, "t"))
	cl := kfaketest.Client(t, c)
	w := New(Options{Client: cl, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	defer w.Close()

	var a answers
	var want [3][]*kgo.Record
	const perPartition = 10
	for p := range int32(3) {
		for i := range perPartition {
			s := batchtest.Spec{Codec: int8(i % 5), Records: 1 + i*7, Tag: fmt.Sprintf("p%d-b%d-", p, i)}
			raw := batchtest.Build(t, s)
			want[p] = append(want[p], batchtest.Decode(t, raw)...)
			bs, _, err := batch.Split(raw)
			if err != nil || len(bs) != 1 {
				t.Fatalf("split: %d batches, %v", len(bs), err)
			}
			w.Write(context.Background(), "t", p, bs[0], nil, a.callback(p, i))
		}
	}
	got := a.wait(t, 3*perPartition)
	for p := range int32(3) {
		next := int64(0)
		for i, ans := range got[p] {
			if ans.err != nil || ans.seq != i || ans.base != next {
				t.Fatalf("partition %d, answer %d: batch %d at %d (%v), want batch %d at %d", p, i, ans.seq, ans.base, ans.err, i, next)
			}
			next += int64(1 + i*7)
		}
	}
	prod, ok := w.Producer("t", 0)
	if !ok || prod.ID < 0 {
		t.Fatalf("producer of t[0]: %+v, %v", prod, ok)
	}

	rd := kfaketest.Client(t, c, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	read := [3][]*kgo.Record{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for n := 0; n < len(want[0])+len(want[1])+len(want[2]); {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d records: %v", n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read[r.Partition] = append(read[r.Partition], r)
			n++
		})
	}
	for p := range 3 {
		for i, w := range want[p] {
			g := read[p][i]
			if g.Offset != int64(i) || !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) ||
				!g.Timestamp.Equal(w.Timestamp) || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) {
				t.Fatalf("partition %d record %d: got %s/%s at %d, want %s/%s", p, i, g.Key, g.Value, g.Offset, w.Key, w.Value)
			}
		}
	}
}

// TestWriterFailsWhatFollowsAFailure has the target refuse one batch (too
// large for the topic): it fails with the broker's error, the batches
// queued behind it fail unsent, and the partition takes batches again
// afterwards, at the offsets that follow what was written.
func TestWriterFailsWhatFollowsAFailure(t *testing.T) {
	c := kfaketest.Cluster(t)
	cl := kfaketest.Client(t, c)
	adm := kfaketest.Client(t, c)
	createTopic(t, adm, "t", map[string]*string{"max.message.bytes": kgoStr("4000")})
	w := New(Options{Client: cl})
	defer w.Close()

	var a answers
	small := func(tag string) batch.Batch {
		bs, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 2, Tag: tag}))
		return bs[0]
	}
	big, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 200, Tag: "big"}))
	w.Write(context.Background(), "t", 0, small("a"), nil, a.callback(0, 0))
	w.Write(context.Background(), "t", 0, big[0], nil, a.callback(0, 1))
	w.Write(context.Background(), "t", 0, small("b"), nil, a.callback(0, 2))
	w.Write(context.Background(), "t", 0, small("c"), nil, a.callback(0, 3))
	got := a.wait(t, 4)[0]
	if got[0].err != nil || got[0].base != 0 {
		t.Fatalf("first batch: %+v", got[0])
	}
	if !errors.Is(got[1].err, kerr.MessageTooLarge) {
		t.Fatalf("large batch: %+v, want MessageTooLarge", got[1])
	}
	for _, g := range got[2:] {
		if !errors.Is(g.err, ErrBehindFailed) {
			t.Fatalf("batch behind the failure: %+v, want ErrBehindFailed", g)
		}
	}
	var b answers
	w.Write(context.Background(), "t", 0, small("d"), nil, b.callback(0, 0))
	if g := b.wait(t, 1)[0][0]; g.err != nil || g.base != 2 {
		t.Fatalf("batch after the failure: %+v, want offset 2", g)
	}
}

// TestWriterCloseFailsQueued closes the writer with batches queued for a
// topic that does not exist: each is answered with ErrClosed or the
// lookup's failure, none left unanswered.
func TestWriterCloseFailsQueued(t *testing.T) {
	c := kfaketest.Cluster(t)
	cl := kfaketest.Client(t, c)
	w := New(Options{Client: cl, Timeout: time.Second})
	var a answers
	for i := range 5 {
		bs, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 1}))
		w.Write(context.Background(), "missing", 0, bs[0], nil, a.callback(0, i))
	}
	time.Sleep(100 * time.Millisecond) // let it try
	w.Close()
	got := a.wait(t, 5)[0]
	for _, g := range got {
		if g.err == nil {
			t.Fatalf("a batch to a missing topic succeeded: %+v", g)
		}
	}
	var after answers
	bs, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 1}))
	w.Write(context.Background(), "missing", 0, bs[0], nil, after.callback(0, 0))
	if g := after.wait(t, 1)[0][0]; !errors.Is(g.err, ErrClosed) {
		t.Fatalf("write after Close: %+v, want ErrClosed", g)
	}
}

func kgoStr(s string) *string { return &s }

func createTopic(t *testing.T, cl *kgo.Client, topic string, configs map[string]*string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, configs, topic); err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

// TestWriterGateAndGivenProducer writes as a producer given in Options,
// behind a gate: a batch waits while its gate says wait, is sent once it
// says send, and fails unsent, with what is queued behind it, when it
// says fail. The records read back carry the given producer's ID.
func TestWriterGateAndGivenProducer(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(1, "t"))
	cl := kfaketest.Client(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, epoch, err := initProducerID(ctx, cl, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	w := New(Options{Client: cl, Producer: &batch.Producer{ID: id, Epoch: epoch}})
	defer w.Close()
	one := func(tag string) batch.Batch {
		bs, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 3, Tag: tag}))
		return bs[0]
	}
	var open atomic.Bool
	var a answers
	w.Write(context.Background(), "t", 0, one("a"), func() (bool, bool) { return open.Load(), false }, a.callback(0, 0))
	time.Sleep(200 * time.Millisecond) // several ticks of the writer
	a.mu.Lock()
	early := a.n
	a.mu.Unlock()
	if early != 0 {
		t.Fatal("a batch whose gate said wait was sent")
	}
	open.Store(true)
	if g := a.wait(t, 1)[0][0]; g.err != nil || g.base != 0 {
		t.Fatalf("gated batch: %+v", g)
	}
	if p, ok := w.Producer("t", 0); !ok || p.ID != id || p.Epoch != epoch {
		t.Fatalf("producer %+v, want %d/%d", p, id, epoch)
	}
	var b answers
	w.Write(context.Background(), "t", 0, one("b"), func() (bool, bool) { return false, true }, b.callback(0, 0))
	w.Write(context.Background(), "t", 0, one("c"), nil, b.callback(0, 1))
	for _, g := range b.wait(t, 2)[0] {
		if !errors.Is(g.err, ErrBehindFailed) {
			t.Fatalf("behind a failing gate: %+v, want ErrBehindFailed", g)
		}
	}
	var c2 answers
	w.Write(context.Background(), "t", 0, one("d"), nil, c2.callback(0, 0))
	if g := c2.wait(t, 1)[0][0]; g.err != nil || g.base != 3 {
		t.Fatalf("after the failed gate: %+v, want offset 3", g)
	}
	rd := kfaketest.Client(t, c, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for n := 0; n < 6; {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of 6 records", n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if r.ProducerID != id {
				t.Fatalf("record at %d written by producer %d, want %d", r.Offset, r.ProducerID, id)
			}
		})
	}
}

// TestWriterHoldsBackWhenFull has a batch wait at its gate while it fills
// the writer's buffer: the next Write waits, and gives up with the
// context's error when it ends; once the first is answered, a Write
// goes through at once.
func TestWriterHoldsBackWhenFull(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(1, "t"))
	cl := kfaketest.Client(t, c)
	one := func(tag string) batch.Batch {
		bs, _, _ := batch.Split(batchtest.Build(t, batchtest.Spec{Records: 3, Tag: tag}))
		return bs[0]
	}
	first := one("a")
	w := New(Options{Client: cl, MaxBufferedBytes: int64(len(first))})
	defer w.Close()
	var open atomic.Bool
	var a answers
	w.Write(context.Background(), "t", 0, first, func() (bool, bool) { return open.Load(), false }, a.callback(0, 0))

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var b answers
	start := time.Now()
	w.Write(ctx, "t", 0, one("b"), nil, b.callback(0, 0))
	if g := b.wait(t, 1)[0][0]; !errors.Is(g.err, context.DeadlineExceeded) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("Write with a full buffer: %+v after %s, want it to wait until the context ended", g, time.Since(start))
	}
	open.Store(true)
	a.wait(t, 1)
	var c2 answers
	w.Write(context.Background(), "t", 0, one("c"), nil, c2.callback(0, 0))
	if g := c2.wait(t, 1)[0][0]; g.err != nil || g.base != 3 {
		t.Fatalf("Write once the buffer emptied: %+v, want offset 3", g)
	}
}
