package replicate

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batchfetch"
	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
)

// TestReplicatePassesBatchesThrough runs a replicator with Forward over
// lz4 batches (the target's codec: passed through) and zstd ones (decoded
// and written record by record), interleaved in each partition: every
// record is copied in order, each partition's offset map is one run, the
// batch writer's producer is stored as a writer of every partition, and
// the metrics count both kinds of batch.
func TestReplicatePassesBatchesThrough(t *testing.T) {
	e := newEnv(t)
	const src, dst, parts = "t", "t", int32(2)
	e.createTopic(t, e.srcAdmin, src, parts, nil)
	e.createTopic(t, e.tgtAdmin, dst, parts, nil)
	seeds := e.srcClient.OptValue(kgo.SeedBrokers).([]string)
	lz4 := newClient(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	zstd := newClient(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	for i := range 6 {
		cl := lz4
		if i%2 == 1 {
			cl = zstd
		}
		recs := records(parts, 40, fmt.Sprintf("b%d", i))
		for _, r := range recs {
			r.Topic = src
		}
		if err := cl.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	prod, err := batchwrite.InitProducer(e.ctx, e.tgtClient, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fetcher := batchfetch.New(batchfetch.Options{Client: e.srcClient, MaxWait: 100 * time.Millisecond})
	writer := batchwrite.New(batchwrite.Options{Client: e.tgtClient, Producer: &prod})
	defer fetcher.Close()
	defer writer.Close()
	opts := e.replicator().opts
	opts.Forward = &Forward{Fetcher: fetcher, Writer: writer, Producer: progress.Producer{ID: prod.ID, Epoch: prod.Epoch},
		Target: batch.Target{Codec: batch.CodecLz4}}
	r := New(opts)
	r.Add(assignments(src, dst, parts))
	stop := e.run(t, r)
	const total = 6 * 40 * int64(parts)
	waitFor(t, fmt.Sprintf("%d records replicated", total), func() bool { return r.Totals().Records >= total })
	stop()

	rep, err := verify.Compare(e.ctx, e.producer, e.tgtClient, []verify.Pair{{Source: src, Target: dst}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("target differs from source: %+v", rep.Topics)
	}
	passed := counter(t, e.metrics.BatchesPassedThrough.WithLabelValues(flowName, src))
	fellBack := counter(t, e.metrics.BatchesFallback.WithLabelValues(flowName, src, batch.ReasonCompression))
	if passed < float64(3*parts) || fellBack < float64(3*parts) {
		t.Errorf("batches passed through %v, decoded for their codec %v; want at least %d each", passed, fellBack, 3*parts)
	}
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, pos := range loaded.Positions {
		if runs := loaded.Runs[p]; len(runs) != 1 || runs[0].SourceEnd() != pos.SourceNext || runs[0].Len != 6*40 {
			t.Errorf("%s: stored offset map %+v, want one run of 240 records up to %d", p, runs, pos.SourceNext)
		}
		found := false
		for _, w := range pos.Writers {
			found = found || w.ID == prod.ID
		}
		if !found {
			t.Errorf("%s: stored writers %+v lack the batch writer's producer %d", p, pos.Writers, prod.ID)
		}
	}
}
