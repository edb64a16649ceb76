package replicate

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
)

// A source batch that decompresses past the source client's limit stops
// its partition before it, with one error line and one count; the other
// partition goes on; no record of the batch or after it is written; a
// retry that fails the same way adds nothing; once retention deleted the
// batch, the loss is reported and the partition goes on.
func TestReplicateBatchTooLargeStopsPartition(t *testing.T) {
	e := newEnv(t)
	const limit = 1 << 20
	// The replicator's source client, as the flow builds it with a memory
	// budget.
	e.srcClient = newClient(t, e.srcClient.OptValue(kgo.SeedBrokers).([]string),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MaxDecompressBatchBytes(limit))
	bomber := newClient(t, e.srcClient.OptValue(kgo.SeedBrokers).([]string),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.ProducerBatchMaxBytes(16<<20), kgo.MaxBufferedBytes(64<<20))

	const src, dst = "bombs", "primary.bombs"
	e.createTopic(t, e.srcAdmin, src, 2, nil)
	e.createTopic(t, e.tgtAdmin, dst, 2, nil)
	var logs syncBuffer
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: 20 * time.Millisecond, RefusedRetryInterval: time.Second,
		DeadLetterTopic: "dead-letters", // nothing to write there: the records were never read
		Metrics:         e.metrics, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	r.Add(assignments(src, dst, 2))
	e.run(t, r)
	for i := range 3 {
		e.produce(t, src, small(0, i), small(1, i))
	}
	// 8 MiB of zeros: a few hundred bytes with zstd.
	bomb := &kgo.Record{Topic: src, Partition: 0, Key: []byte("bomb"), Value: make([]byte, 8<<20)}
	if err := bomber.ProduceSync(e.ctx, bomb).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 10; i++ {
		e.produce(t, src, small(0, i), small(1, i))
	}

	const bombAt = 3
	waitFor(t, "partition 0 stopped", func() bool { return len(r.Totals().Stopped) == 1 })
	waitFor(t, "partition 1 copied", func() bool { return endOffsets(t, e.ctx, e.tgtAdmin, dst)[1] == 9 })
	st := r.Totals().Stopped[0]
	if st.Topic != src || st.Partition != 0 || st.Offset != bombAt ||
		!strings.Contains(st.Reason, "offsets 3 to 3 decompresses to more than 1.0 MiB") {
		t.Errorf("Stopped = %+v", st)
	}
	errs := e.metrics.Errors.WithLabelValues(flowName, metrics.ErrDecompressTooLarge)
	if c := counter(t, errs); c != 1 {
		t.Errorf("%s errors = %v, want 1", metrics.ErrDecompressTooLarge, c)
	}
	if g := gauge(t, e.metrics.PartitionsStopped.WithLabelValues(flowName)); g != 1 {
		t.Errorf("kmirror_partitions_stopped = %v, want 1", g)
	}
	// Retries (every second) fail the same way and add nothing.
	time.Sleep(2500 * time.Millisecond)
	if got := endOffsets(t, e.ctx, e.tgtAdmin, dst)[0]; got != bombAt {
		t.Errorf("target partition 0 holds %d records, want the %d before the batch", got, bombAt)
	}
	if c := counter(t, errs); c != 1 {
		t.Errorf("after retries: %s errors = %v, want 1", metrics.ErrDecompressTooLarge, c)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, logs.String())
	}
	line := logs.String()
	for _, want := range []string{"topic=bombs", "partition=0", "offset=3", "limit_bytes=1048576", "decompresses to more than the flow's limit"} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %q:\n%s", want, line)
		}
	}
	if pos := r.Positions(); pos[r.lookup(src, 0).id].SourceNext != bombAt {
		t.Errorf("position of partition 0 = %+v, want %d", pos[r.lookup(src, 0).id], bombAt)
	}

	// Retention deletes the batch: the next retry reads on after it and
	// reports the one record lost.
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: src, Partition: 0, At: bombAt + 1})
	if _, err := e.srcAdmin.DeleteRecords(ctx, offs); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "partition 0 going on", func() bool { return endOffsets(t, e.ctx, e.tgtAdmin, dst)[0] == 9 })
	waitFor(t, "no partition stopped", func() bool { return len(r.Totals().Stopped) == 0 })
	if g := gauge(t, e.metrics.PartitionsStopped.WithLabelValues(flowName)); g != 0 {
		t.Errorf("kmirror_partitions_stopped = %v, want 0", g)
	}
	if c := counter(t, e.metrics.RecordsLost.WithLabelValues(flowName, src)); c != 1 {
		t.Errorf("records lost = %v, want 1", c)
	}
}

// A record larger than the producer's buffer is refused by the client
// before it is sent; the partition stops at it with a reason that says
// so and what to raise.
func TestReplicateRecordLargerThanBuffer(t *testing.T) {
	e := newEnv(t)
	e.tgtClient = newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedBytes(64<<10))
	const src, dst = "big", "primary.big"
	e.createTopic(t, e.srcAdmin, src, 1, nil)
	e.createTopic(t, e.tgtAdmin, dst, 1, nil)
	r := e.replicator()
	r.Add(assignments(src, dst, 1))
	e.run(t, r)
	e.produce(t, src, small(0, 0), &kgo.Record{Partition: 0, Value: make([]byte, 100<<10)}, small(0, 2))
	waitFor(t, "partition stopped", func() bool { return len(r.Totals().Stopped) == 1 })
	st := r.Totals().Stopped[0]
	if st.Offset != 1 || !strings.Contains(st.Reason, "the record (102400 bytes) is larger than the flow's produce buffer (65536 bytes), so kmirror did not send it") {
		t.Errorf("Stopped = %+v", st)
	}
}
