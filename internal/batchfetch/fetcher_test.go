package batchfetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batch/batchtest"
	"github.com/kmirror/kmirror/internal/kfaketest"
)

// produce writes n records "<tag><i>" to each of the topic's partitions,
// in batches of per, compressed with codec.
func produce(t *testing.T, cl *kgo.Client, topic string, partitions int32, n, per int, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for from := 0; from < n; from += per {
		var recs []*kgo.Record
		for i := from; i < min(from+per, n); i++ {
			for p := range partitions {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "%s%d", tag, i),
					Value: bytes.Repeat(fmt.Appendf(nil, "%s%d-", tag, i), 10), Headers: []kgo.RecordHeader{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}})
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// fetchAll polls f until every partition's batches reach end, and returns
// them per partition.
func fetchAll(t *testing.T, f *Fetcher, end map[int32]int64) map[int32][]batch.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[int32][]batch.Batch{}
	next := map[int32]int64{}
	for {
		done := true
		for p, e := range end {
			done = done && next[p] >= e
		}
		if done {
			return got
		}
		fs := f.Poll(ctx)
		if ctx.Err() != nil {
			t.Fatalf("fetched up to %v of %v", next, end)
		}
		for _, fd := range fs {
			if fd.Err != nil {
				t.Fatalf("fetch error: %v", fd.Err)
			}
			for _, b := range fd.Batches {
				if err := b.CheckCRC(); err != nil {
					t.Fatal(err)
				}
				if b.BaseOffset() > next[fd.Partition] && next[fd.Partition] != 0 {
					t.Fatalf("partition %d: batch at %d after %d (a gap)", fd.Partition, b.BaseOffset(), next[fd.Partition])
				}
				got[fd.Partition] = append(got[fd.Partition], b)
				next[fd.Partition] = b.NextOffset()
			}
		}
	}
}

// records decodes batches.
func records(t *testing.T, bs []batch.Batch) []*kgo.Record {
	var out []*kgo.Record
	for _, b := range bs {
		out = append(out, batchtest.Decode(t, b)...)
	}
	return out
}

// TestFetcherReturnsBatches fetches two lz4 partitions whole, then seeks
// one back into the middle of a batch and fetches it again from there.
func TestFetcherReturnsBatches(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(2, "t"))
	cl := kfaketest.Client(t, c, kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl, "t", 2, 300, 50, "a")

	f := New(Options{Client: kfaketest.Client(t, c), MaxPartitionBytes: 4 << 10})
	defer f.Close()
	f.Add(map[string]map[int32]int64{"t": {0: 0, 1: 0}})
	got := fetchAll(t, f, map[int32]int64{0: 300, 1: 300})
	for p := range int32(2) {
		recs := records(t, got[p])
		if len(recs) != 300 {
			t.Fatalf("partition %d: %d records, want 300", p, len(recs))
		}
		for i, r := range recs {
			if r.Offset != int64(i) || string(r.Key) != fmt.Sprintf("a%d", i) {
				t.Fatalf("partition %d record %d: %s at %d", p, i, r.Key, r.Offset)
			}
		}
		if got[p][0].Codec() != batch.CodecLz4 {
			t.Fatalf("partition %d: codec %v, want lz4", p, got[p][0].Codec())
		}
	}

	f.Seek("t", 1, 75)
	again := fetchAll(t, f, map[int32]int64{1: 300})
	if first := again[1][0]; first.BaseOffset() > 75 || first.LastOffset() < 75 {
		t.Fatalf("after a seek to 75 the first batch holds %d-%d", first.BaseOffset(), first.LastOffset())
	}
}

// TestFetcherPauseResume pauses a partition: nothing of it is returned
// until it resumes, while the other goes on.
func TestFetcherPauseResume(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(2, "t"))
	cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl, "t", 2, 10, 10, "a")
	f := New(Options{Client: kfaketest.Client(t, c)})
	defer f.Close()
	f.Add(map[string]map[int32]int64{"t": {0: 0, 1: 0}})
	f.Pause("t", 1)
	fetchAll(t, f, map[int32]int64{0: 10})
	produce(t, cl, "t", 2, 10, 10, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, fd := range f.Poll(ctx) {
			if fd.Partition == 1 {
				t.Fatal("a paused partition was fetched")
			}
		}
	}
	f.Resume("t", 1)
	if got := records(t, fetchAll(t, f, map[int32]int64{1: 20})[1]); len(got) != 20 {
		t.Fatalf("resumed partition: %d records, want 20", len(got))
	}
}

// TestFetcherOutOfRange asks for an offset past a partition's end: the
// fetch returns the broker's error for that partition and pauses it,
// until a seek to a valid offset fetches it again.
func TestFetcherOutOfRange(t *testing.T) {
	c := kfaketest.Cluster(t, kfake.SeedTopics(1, "t"))
	cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl, "t", 1, 10, 10, "a")
	f := New(Options{Client: kfaketest.Client(t, c), MaxWait: 50 * time.Millisecond})
	defer f.Close()
	f.Add(map[string]map[int32]int64{"t": {0: 1000}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got Fetched
	for got.Err == nil {
		fs := f.Poll(ctx)
		if ctx.Err() != nil {
			t.Fatal("no error for an offset past the end")
		}
		for _, fd := range fs {
			got = fd
		}
	}
	if !errors.Is(got.Err, kerr.OffsetOutOfRange) || got.Offset != 1000 {
		t.Fatalf("fetch at 1000: %+v, want OFFSET_OUT_OF_RANGE", got)
	}
	f.Seek("t", 0, 0)
	if recs := records(t, fetchAll(t, f, map[int32]int64{0: 10})[0]); len(recs) != 10 {
		t.Fatalf("after the seek: %d records, want 10", len(recs))
	}
}
