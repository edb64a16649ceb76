package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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
	produceTransactions(t, ctx, txp, n, 100, func(i int) *kgo.Record { return record(txnTopic, int32(i)%parts, i) })

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
				w.Write(context.Background(), fd.Topic, fd.Partition, b, nil, func(base int64, err error) {
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

// TestPassThroughFlow runs a flow with pass_through over topics written
// with lz4 (the target's codec: passed through), zstd and uncompressed
// (other codecs: written record by record), lz4 and zstd batches in turn
// in each partition, and lz4 in transactions, half aborted (read read_committed: committed batches passed through, aborted
// ones and markers dropped). Every committed source record is on the
// target, equal and in order; the metrics count what was passed through
// and what fell back, by reason; and a consumer group committed on the
// source in the transactional topic is translated to the target offset of
// the same record.
func TestPassThroughFlow(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const parts, n = int32(2), 4000
	start := time.Now().UnixMilli()
	record := func(topic string, i int) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: int32(i) % parts, Key: fmt.Appendf(nil, "%d", i),
			Value:     bytes.Repeat(fmt.Appendf(nil, "%s-%d,", topic, i), 20),
			Timestamp: time.UnixMilli(start + int64(i)),
			Headers:   []kgo.RecordHeader{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}}}
	}
	codecs := map[string]kgo.CompressionCodec{"pt-lz4": kgo.Lz4Compression(), "pt-zstd": kgo.ZstdCompression(), "pt-none": kgo.NoCompression()}
	for topic, codec := range codecs {
		createTopic(t, p.srcCl, topic, parts, nil)
		prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(5*time.Millisecond))
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, record(topic, i))
		}
		produce(t, prod, recs)
	}
	// Batches of both codecs one after the other in each partition: the
	// lz4 ones passed through, the zstd ones decoded, in source order.
	const mixedTopic = "pt-mixed"
	createTopic(t, p.srcCl, mixedTopic, parts, nil)
	for i := 0; i < n; i += 250 {
		prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(codecs[[]string{"pt-lz4", "pt-zstd"}[i/250%2]]))
		var recs []*kgo.Record
		for j := i; j < i+250; j++ {
			recs = append(recs, record(mixedTopic, j))
		}
		produce(t, prod, recs)
	}
	const txnTopic = "pt-txn"
	createTopic(t, p.srcCl, txnTopic, parts, nil)
	txp := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("pt-test"), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	produceTransactions(t, ctx, txp, n, 200, func(i int) *kgo.Record { return record(txnTopic, i) })
	// A group that read the transactional topic up to committed record
	// 1000 (partition 0) on the source.
	srcTxn := readLog(t, ctx, p.srcCl, txnTopic)
	groupAt := srcTxn[0][250]
	if err := kadm.NewClient(p.srcCl).CommitAllOffsets(ctx, "pt-group", kadm.OffsetsFromRecords(*groupAt)); err != nil {
		t.Fatal(err)
	}

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["pt-.*"]
topic_naming: identity
provenance: off
pass_through: true
sync_interval: 500ms
consumer: {isolation_level: read_committed}
`))
	k := startKmirror(t, cfg, httpAddr)
	topics := []string{"pt-lz4", "pt-zstd", "pt-none", mixedTopic, txnTopic}
	waitFor(t, 3*time.Minute, "every committed record on the target", func() (bool, string) {
		for _, topic := range topics {
			src, dst := endOffsets(t, p.srcCl, topic), endOffsets(t, p.dstCl, topic)
			want := int64(n)
			if topic == txnTopic {
				want = n / 2 // aborted records and markers are not copied
			}
			if got := sum(dst); got < want || len(src) != len(dst) {
				return false, fmt.Sprintf("%s: %d of %d on the target; kmirror: %s", topic, got, want, lastLines(k.output(), 2))
			}
		}
		return true, ""
	})
	for _, topic := range topics {
		src, dst := readLog(t, ctx, p.srcCl, topic), readLog(t, ctx, p.dstCl, topic)
		for part := range parts {
			if len(src[part]) != len(dst[part]) {
				t.Fatalf("%s[%d]: %d records on the target, %d committed on the source", topic, part, len(dst[part]), len(src[part]))
			}
			for i := range src[part] {
				if d := verify.Diff(src[part][i], dst[part][i]); d != "" {
					t.Fatalf("%s[%d] record %d: %s", topic, part, i, d)
				}
			}
		}
	}

	metric := passThroughMetrics(t, k, "pt-")
	for _, topic := range []string{"pt-lz4", mixedTopic, txnTopic} {
		if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_total{flow="e2e",topic=%q}`, topic)); v == 0 {
			t.Errorf("%s: no batch passed through", topic)
		}
	}
	if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_fallback_total{flow="e2e",reason="compression",topic=%q}`, mixedTopic)); v == 0 {
		t.Errorf("%s: no zstd batch written record by record", mixedTopic)
	}
	for _, topic := range []string{"pt-zstd", "pt-none"} {
		if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_total{flow="e2e",topic=%q}`, topic)); v != 0 {
			t.Errorf("%s: %v batches of another codec than the target's passed through", topic, v)
		}
		if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_fallback_total{flow="e2e",reason="compression",topic=%q}`, topic)); v == 0 {
			t.Errorf("%s: no batch counted as written record by record for its codec", topic)
		}
	}

	// The group's offset translates to the copy of the record it points
	// at: the target offset holding the same record.
	var translated int64 = -1
	waitFor(t, time.Minute, "the group's offset on the target", func() (bool, string) {
		offs, err := kadm.NewClient(p.dstCl).FetchOffsets(ctx, "pt-group")
		if err != nil {
			return false, err.Error()
		}
		o, ok := offs.Lookup(txnTopic, 0)
		if !ok || o.At < 0 {
			return false, "not committed yet"
		}
		translated = o.At
		return true, ""
	})
	dstTxn := readLog(t, ctx, p.dstCl, txnTopic)
	var at *kgo.Record
	for _, r := range dstTxn[0] {
		if r.Offset >= translated {
			at = r
			break
		}
	}
	// The group's next record on the source is the one after groupAt:
	// on the target it reads the copy of that record next.
	next := srcTxn[0][251]
	if at == nil || !bytes.Equal(at.Value, next.Value) {
		t.Fatalf("group committed at source offset %d (next record %s at %d); translated to target offset %d, whose next record is %v", groupAt.Offset+1, next.Key, next.Offset, translated, at)
	}
	t.Logf("pass-through: %v batches passed through, group offset %d on the source translated to %d", metric(`kmirror_batches_passthrough_total{flow="e2e",topic="pt-lz4"}`), groupAt.Offset+1, translated)
}

// TestPassThroughSurvivesSIGKILL is TestSurvivesSIGKILL with pass_through
// on and the source written with lz4, the target's codec: kmirror is
// killed mid-stream while a producer writes, and restarted; afterwards the
// target holds every source record, in order, each equal to its source,
// the repeats counted in kmirror_duplicate_records_total; batches were
// passed through before and after the kill.
func TestPassThroughSurvivesSIGKILL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic      = "pt-events"
		partitions = 4
		total      = 200_000
		batchSize  = 2_000
	)
	createTopic(t, p.srcCl, topic, partitions, nil)
	prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerLinger(5*time.Millisecond))
	produced, prodDone := produceNumbered(prod, topic, partitions, total, batchSize)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["pt-events"]
topic_naming: identity
provenance: off
pass_through: true
`))
	first := startKmirror(t, cfg, httpAddr)
	waitFor(t, 2*time.Minute, "a third of the records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= total/3, fmt.Sprintf("target has %d, produced %d", n, produced.Load())
	})
	_, before, err := first.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	first.kill()
	killedAt := sum(endOffsets(t, p.dstCl, topic))
	passedBefore, _ := metricValue(before, `kmirror_batches_passthrough_total{flow="e2e",topic="pt-events"}`)
	t.Logf("SIGKILL with %d records on the target, %d produced, %v batches passed through", killedAt, produced.Load(), passedBefore)

	second := startKmirror(t, cfg, httpAddr)
	if err := <-prodDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	srcEnd := sum(endOffsets(t, p.srcCl, topic))
	waitFor(t, 2*time.Minute, "the target to hold at least every source record", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= srcEnd, fmt.Sprintf("target has %d of %d", n, srcEnd)
	})
	duplicates := copiedWithRepeats(t, p, topic, partitions)
	_, body, err := second.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	reported, _ := metricValue(body, `kmirror_duplicate_records_total{flow="e2e",topic="pt-events"}`)
	passedAfter, _ := metricValue(body, `kmirror_batches_passthrough_total{flow="e2e",topic="pt-events"}`)
	t.Logf("pass-through crash test: %d source records, all on the target in order; %d duplicates, %v reported; batches passed through: %v before the kill, %v after",
		srcEnd, duplicates, reported, passedBefore, passedAfter)
	if int(reported) != duplicates {
		t.Errorf("kmirror_duplicate_records_total = %v, but the target holds %d duplicates", reported, duplicates)
	}
	if passedBefore == 0 || passedAfter == 0 {
		t.Errorf("batches passed through: %v before the kill, %v after; want some in both runs", passedBefore, passedAfter)
	}
	second.stop()
}

// TestPassThroughCompactedAndDeleted copies, with pass_through, a
// compacted source topic after its cleaner ran (batches with holes in
// their offsets, which a broker takes only record by record), and a topic
// whose records, from the flow's position to the middle of a later batch,
// were deleted (DeleteRecords) while kmirror was stopped: the target holds
// every record the source still has, in order; the compacted batches fell
// back with reason compacted, no hole counted as lost; exactly the deleted
// records past the position counted as lost.
func TestPassThroughCompactedAndDeleted(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const compacted, trimmed = "ptc-compacted", "ptc-trimmed"
	createTopic(t, p.srcCl, compacted, 1, map[string]string{
		"cleanup.policy": "compact", "segment.ms": "200", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
	})
	createTopic(t, p.srcCl, trimmed, 1, nil)
	prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerLinger(5*time.Millisecond))
	// 20 keys written again and again, in batches of 50, so that the
	// cleaner leaves batches with a few records each.
	for round := range 12 {
		var recs []*kgo.Record
		for i := range 50 {
			recs = append(recs, &kgo.Record{Topic: compacted, Key: fmt.Appendf(nil, "k%d", i%20), Value: fmt.Appendf(nil, "r%d-%d", round, i)})
		}
		produce(t, prod, recs)
		time.Sleep(250 * time.Millisecond) // the next round rolls a segment
	}
	waitFor(t, 2*time.Minute, "the source's cleaner to compact the topic", func() (bool, string) {
		n := len(readLog(t, ctx, p.srcCl, compacted)[0])
		return n < 400, fmt.Sprintf("%d of 600 records left", n)
	})
	// The trimmed topic, in batches of 100.
	writeTrimmed := func(from int) {
		for b := from; b < from+1000; b += 100 {
			var recs []*kgo.Record
			for i := b; i < b+100; i++ {
				// Values lz4 makes smaller: the producer writes a batch
				// uncompressed when compressing does not pay.
				recs = append(recs, &kgo.Record{Topic: trimmed, Key: fmt.Appendf(nil, "%d", i), Value: bytes.Repeat(fmt.Appendf(nil, "t%d,", i), 20)})
			}
			produce(t, prod, recs)
		}
	}
	writeTrimmed(0)
	srcBefore := readLog(t, ctx, p.srcCl, compacted)[0]

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["ptc-.*"]
topic_naming: identity
provenance: off
pass_through: true
`))
	k := startKmirror(t, cfg, httpAddr)
	compactedCopied := func() (bool, string) {
		// The last record of a compacted partition stays.
		src, dst := readLog(t, ctx, p.srcCl, compacted)[0], readLog(t, ctx, p.dstCl, compacted)[0]
		if len(dst) == 0 || !bytes.Equal(dst[len(dst)-1].Value, src[len(src)-1].Value) {
			return false, fmt.Sprintf("%s: %d records on the target", compacted, len(dst))
		}
		return true, ""
	}
	waitFor(t, 2*time.Minute, "the trimmed topic's first 1000 records and the compacted topic on the target", func() (bool, string) {
		if got := sum(endOffsets(t, p.dstCl, trimmed)); got != 1000 {
			return false, fmt.Sprintf("%s: %d of 1000", trimmed, got)
		}
		return compactedCopied()
	})
	metric := passThroughMetrics(t, k, "ptc-")
	if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_fallback_total{flow="e2e",reason="compacted",topic=%q}`, compacted)); v == 0 {
		t.Errorf("%s: no batch written record by record for its holes", compacted)
	}
	if v := metric(fmt.Sprintf(`kmirror_records_lost_total{flow="e2e",topic=%q}`, compacted)); v != 0 {
		t.Errorf("%s: %v records counted as lost; compaction's holes are no loss", compacted, v)
	}
	k.stop()
	writeTrimmed(1000)
	del, err := kadm.NewClient(p.srcCl).DeleteRecords(ctx, kadm.Offsets{trimmed: {0: {Topic: trimmed, Partition: 0, At: 1450}}})
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	k = startKmirror(t, cfg, httpAddr)
	waitFor(t, 2*time.Minute, "every remaining record on the target", func() (bool, string) {
		if got := len(readLog(t, ctx, p.dstCl, trimmed)[0]); got < 1000+550 {
			return false, fmt.Sprintf("%s: %d of %d; kmirror: %s", trimmed, got, 1000+550, lastLines(k.output(), 2))
		}
		return compactedCopied()
	})
	src, dst := readLog(t, ctx, p.srcCl, trimmed)[0], readLog(t, ctx, p.dstCl, trimmed)[0][1000:] // past the copies of the records since deleted
	if len(src) != len(dst) {
		t.Fatalf("%s: %d records on the target, %d on the source", trimmed, len(dst), len(src))
	}
	for i := range src {
		if d := verify.Diff(src[i], dst[i]); d != "" {
			t.Fatalf("%s record %d: %s", trimmed, i, d)
		}
	}
	// The cleaner may still run while the copy is made: the copy holds, in
	// order, every record the source holds now and only records it held
	// before kmirror started.
	dstC, srcAfter := readLog(t, ctx, p.dstCl, compacted)[0], readLog(t, ctx, p.srcCl, compacted)[0]
	if !subsequence(srcAfter, dstC) || !subsequence(dstC, srcBefore) {
		t.Fatalf("%s: the copy (%d records) is not between the source after (%d) and before (%d) the copy", compacted, len(dstC), len(srcAfter), len(srcBefore))
	}
	metric = passThroughMetrics(t, k, "ptc-")
	if v := metric(fmt.Sprintf(`kmirror_records_lost_total{flow="e2e",topic=%q}`, trimmed)); v != 450 {
		t.Errorf("%s: %v records counted as lost, want the 450 deleted past the position (1000 to 1449)", trimmed, v)
	}
	if v := metric(fmt.Sprintf(`kmirror_batches_passthrough_total{flow="e2e",topic=%q}`, trimmed)); v == 0 {
		t.Errorf("%s: no batch passed through after the deleted records", trimmed)
	}
	t.Logf("compacted: %d records copied; trimmed: 450 lost as deleted, %v batches passed through after them", len(dstC), metric(fmt.Sprintf(`kmirror_batches_passthrough_total{flow="e2e",topic=%q}`, trimmed)))
}

// subsequence reports whether the records of sub appear in seq in the
// same order, each equal to its match (key, value, headers, timestamp).
func subsequence(sub, seq []*kgo.Record) bool {
	j := 0
	for _, r := range seq {
		if j < len(sub) && verify.Diff(sub[j], r) == "" {
			j++
		}
	}
	return j == len(sub)
}

// produceTransactions writes records 0 to n-1 of record with the
// transactional client cl, per records a transaction, committing the
// first, aborting the second, and so on.
func produceTransactions(t *testing.T, ctx context.Context, cl *kgo.Client, n, per int, record func(i int) *kgo.Record) {
	t.Helper()
	for from := 0; from < n; from += per {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for i := from; i < min(from+per, n); i++ {
			recs = append(recs, record(i))
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := kgo.TryCommit
		if from/per%2 == 1 {
			commit = kgo.TryAbort
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
}

// passThroughMetrics reads kmirror's metrics once, logs its pass-through
// counters of the topics named with prefix, and returns a lookup of a
// series (0 if absent).
func passThroughMetrics(t *testing.T, k *proc, prefix string) func(series string) float64 {
	t.Helper()
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, "passthrough") && strings.Contains(l, `topic="`+prefix) && !strings.HasPrefix(l, "#") {
			t.Log(l)
		}
	}
	return func(series string) float64 {
		v, _ := metricValue(body, series)
		return v
	}
}
