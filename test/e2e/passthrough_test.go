package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	kbatch "github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batchfetch"
	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/verify"
)

// TestBatchForwardingOnRealKafka fetches source partitions as record
// batches and writes them to a target as they are (batchfetch and
// batchwrite): topics written uncompressed and with gzip, snappy, lz4 and
// zstd, and a topic written in transactions, half of them aborted, read
// read_committed. The target's brokers take every batch as kmirror
// stamped it; a read_committed consumer of the target reads every
// committed source record, key, value, headers and timestamp, in order,
// none of an aborted transaction; each batch lands at the offset that
// follows the records forwarded before it; the batches keep their codec.
func TestBatchForwardingOnRealKafka(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const parts, n = int32(2), 3000
	codecs := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	// Timestamps a millisecond apart from now on (older ones would be
	// past the topics' retention).
	start := time.Now().UnixMilli()
	record := func(topic string, part int32, i int) *kgo.Record {
		r := &kgo.Record{Topic: topic, Partition: part, Key: fmt.Appendf(nil, "%s-%d", topic, i),
			Value:     bytes.Repeat(fmt.Appendf(nil, "%d,", i), 30),
			Timestamp: time.UnixMilli(start + int64(i)),
			Headers:   []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "a", Value: nil}}}
		if i%97 == 0 {
			r.Value = nil
		}
		return r
	}
	var topics []string
	for name, codec := range codecs {
		topic := "fwd-" + name
		topics = append(topics, topic)
		createTopic(t, p.srcCl, topic, parts, nil)
		createTopic(t, p.dstCl, topic, parts, nil)
		prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(5*time.Millisecond))
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, record(topic, int32(i)%parts, i))
		}
		produce(t, prod, recs)
	}
	// Transactions of 100 records, every other one aborted.
	const txnTopic = "fwd-txn"
	topics = append(topics, txnTopic)
	createTopic(t, p.srcCl, txnTopic, parts, nil)
	createTopic(t, p.dstCl, txnTopic, parts, nil)
	txp := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("fwd-test"), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	for from := 0; from < n; from += 100 {
		if err := txp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for i := from; i < from+100; i++ {
			recs = append(recs, record(txnTopic, int32(i)%parts, i))
		}
		if err := txp.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := kgo.TryCommit
		if from/100%2 == 1 {
			commit = kgo.TryAbort
		}
		if err := txp.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}

	f := batchfetch.New(batchfetch.Options{Client: p.srcCl, ReadCommitted: true, MaxPartitionBytes: 256 << 10})
	defer f.Close()
	w := batchwrite.New(batchwrite.Options{Client: p.dstCl})
	defer w.Close()
	add := map[string]map[int32]int64{}
	ends := map[string]map[int32]int64{}
	for _, topic := range topics {
		add[topic] = map[int32]int64{0: 0, 1: 0}
		ends[topic] = endOffsets(t, p.srcCl, topic)
	}
	f.Add(add)

	type key struct {
		topic string
		part  int32
	}
	var mu sync.Mutex
	var failures []string
	written := map[key]int64{} // records forwarded, answered
	queued := map[key]int64{}  // records forwarded, queued
	codecSeen := map[key]map[kbatch.Codec]bool{}
	next := map[key]int64{}
	var forwarded, dropped int
	for {
		done := true
		for topic, es := range ends {
			for part, e := range es {
				done = done && next[key{topic, part}] >= e
			}
		}
		if done {
			break
		}
		fs := f.Poll(ctx)
		if ctx.Err() != nil {
			t.Fatalf("fetched up to %v of %v", next, ends)
		}
		for _, fd := range fs {
			if fd.Err != nil {
				t.Fatalf("fetch: %v (high watermark %d, log start %d, last stable %d)", fd.Err, fd.HighWatermark, fd.LogStartOffset, fd.LastStableOffset)
			}
			k := key{fd.Topic, fd.Partition}
			aborted := kbatch.NewAborted(fd.Aborted)
			for _, b := range fd.Batches {
				next[k] = b.NextOffset()
				verdict, reason := kbatch.Plan(b, kbatch.Target{AnyCodec: true}, aborted)
				switch verdict {
				case kbatch.Drop:
					dropped++
					continue
				case kbatch.Decode:
					t.Fatalf("%s[%d] batch at %d not forwardable: %s", fd.Topic, fd.Partition, b.BaseOffset(), reason)
				}
				forwarded++
				if codecSeen[k] == nil {
					codecSeen[k] = map[kbatch.Codec]bool{}
				}
				codecSeen[k][b.Codec()] = true
				want, records := queued[k], int64(b.NumRecords())
				queued[k] += records
				// The caller gives b up: it holds the fetch response's
				// bytes, which nothing else reads.
				w.Write(fd.Topic, fd.Partition, b, nil, func(base int64, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil || base != want {
						failures = append(failures, fmt.Sprintf("%s[%d]: batch for target offset %d landed at %d: %v", k.topic, k.part, want, base, err))
					}
					written[k] += records
				})
			}
		}
	}
	waitFor(t, time.Minute, "every forwarded batch answered", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for k, q := range queued {
			if written[k] != q {
				return false, fmt.Sprintf("%s[%d]: %d of %d records answered", k.topic, k.part, written[k], q)
			}
		}
		return true, ""
	})
	mu.Lock()
	for _, f := range failures {
		t.Error(f)
	}
	mu.Unlock()
	t.Logf("%d batches forwarded, %d dropped (markers and aborted)", forwarded, dropped)

	for _, topic := range topics {
		src, dst := readLog(t, ctx, p.srcCl, topic), readLog(t, ctx, p.dstCl, topic) // read_committed
		total := 0
		for part := range parts {
			s, d := src[part], dst[part]
			if len(s) != len(d) {
				t.Fatalf("%s[%d]: %d records on the target, %d committed on the source", topic, part, len(d), len(s))
			}
			for i := range s {
				if diff := verify.Diff(s[i], d[i]); diff != "" {
					t.Fatalf("%s[%d] record %d (source offset %d): %s", topic, part, i, s[i].Offset, diff)
				}
			}
			total += len(s)
		}
		want := n
		if topic == txnTopic {
			want = n / 2
		}
		if total != want {
			t.Fatalf("%s: %d records, want %d", topic, total, want)
		}
		name := topic[len("fwd-"):]
		if c, ok := kbatch.ParseCodec(name); ok {
			for part := range parts {
				if seen := codecSeen[key{topic, part}]; len(seen) != 1 || !seen[c] {
					t.Fatalf("%s[%d]: forwarded batches of codecs %v, want only %v", topic, part, seen, c)
				}
			}
		}
	}
}
