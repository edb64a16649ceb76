package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/verify"
)

// committedRecords reads every partition of topic to its end,
// read_committed, without transaction markers.
func committedRecords(t *testing.T, ctx context.Context, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	out := map[int32][]*kgo.Record{}
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{}, func(r *kgo.Record) bool {
		if !r.Attrs.IsControl() {
			out[r.Partition] = append(out[r.Partition], r)
		}
		return true
	})
	if err != nil {
		t.Fatalf("reading %s: %v", topic, err)
	}
	return out
}

// sameRecords fails unless the target partitions hold exactly the source
// partitions' records, in order: nothing lost, nothing twice.
func sameRecords(t *testing.T, topic string, src, dst map[int32][]*kgo.Record, partitions int32) {
	t.Helper()
	for part := range partitions {
		s, d := src[part], dst[part]
		n := min(len(s), len(d))
		for i := range n {
			if diff := verify.Diff(s[i], d[i]); diff != "" {
				t.Fatalf("%s/%d record %d (source offset %d, target offset %d): %s", topic, part, i, s[i].Offset, d[i].Offset, diff)
			}
		}
		if len(s) != len(d) {
			t.Fatalf("%s/%d: the source holds %d committed records, the target %d (%d duplicates or lost)", topic, part, len(s), len(d), len(d)-len(s))
		}
	}
}

// TestSurvivesSIGKILLTransactional is TestSurvivesSIGKILL with a
// transactional producer writing the source, every third transaction
// aborted: after the restart the target holds every committed record once,
// in order. Transaction markers and aborted records have no copy on the
// target; the restarted flow must pass over them when it compares what the
// target already holds.
func TestSurvivesSIGKILLTransactional(t *testing.T) {
	p := startPair(t)
	const (
		topic      = "txevents"
		partitions = 4
		txns       = 240
		perTxn     = 400
	)
	createTopic(t, p.srcCl, topic, partitions, nil)
	producer := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("e2e-crash"), kgo.DefaultProduceTopic(topic))

	var committed atomic.Int64
	prodDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		seq := 0
		for n := range txns {
			if err := producer.BeginTransaction(); err != nil {
				prodDone <- err
				return
			}
			recs := make([]*kgo.Record, perTxn)
			for i := range recs {
				part := i % partitions
				recs[i] = &kgo.Record{Topic: topic, Partition: int32(part), Key: fmt.Appendf(nil, "k%d", seq),
					Value: fmt.Appendf(nil, "%d:%d:%d:%s", part, n, seq, strings.Repeat("v", 100))}
				seq++
			}
			if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				prodDone <- err
				return
			}
			commit := n%3 != 2
			if err := producer.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				prodDone <- err
				return
			}
			if commit {
				committed.Add(perTxn)
			}
			time.Sleep(50 * time.Millisecond)
		}
		prodDone <- nil
	}()

	httpAddr := freeAddr(t)
	// Progress is stored every 2 s, so the target holds records past the
	// stored position when kmirror is killed.
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["txevents"]
topic_naming: identity
progress_interval: 2s
`))
	first := startKmirror(t, cfg, httpAddr)
	waitFor(t, 3*time.Minute, "a third of the committed records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= txns*perTxn*2/3/3, fmt.Sprintf("target has %d, %d committed", n, committed.Load())
	})
	first.kill()
	t.Logf("SIGKILL with %d records on the target, %d committed on the source", sum(endOffsets(t, p.dstCl, topic)), committed.Load())

	second := startKmirror(t, cfg, httpAddr)
	if err := <-prodDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	want := committed.Load()
	waitFor(t, 3*time.Minute, "the target to hold every committed record", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= want, fmt.Sprintf("target has %d of %d", n, want)
	})
	// A moment more: whatever was going to be written twice is written.
	time.Sleep(3 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcRecs := committedRecords(t, ctx, p.srcCl, topic)
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	_, body, err := second.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	duplicates := sum(endOffsets(t, p.dstCl, topic)) - want
	reported, _ := metricValue(body, `kmirror_duplicate_records_total{flow="e2e",topic="txevents"}`)
	skipped, _ := metricValue(body, `kmirror_resume_skipped_records_total{flow="e2e",topic="txevents"}`)
	t.Logf("transactional crash test: %d committed source records (%d transactions, every third aborted); target holds %d: %d duplicates; kmirror reported %v duplicates and skipped %v records it found already written",
		want, txns, want+duplicates, duplicates, reported, skipped)
	sameRecords(t, topic, srcRecs, dstRecs, partitions)
	if reported != 0 {
		t.Errorf("kmirror_duplicate_records_total = %v, want 0", reported)
	}
	if skipped == 0 {
		t.Errorf("kmirror_resume_skipped_records_total = 0: the restart found nothing past the stored position, so the test did not exercise the comparison")
	}
	second.stop()
}
