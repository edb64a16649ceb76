package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// sameRecords fails unless the target partitions hold exactly the source
// partitions' records, in order: nothing lost, nothing twice.
func sameRecords(t *testing.T, topic string, src, dst map[int32][]*kgo.Record, partitions int32) {
	t.Helper()
	for part := range partitions {
		s, d := src[part], dst[part]
		n := min(len(s), len(d))
		for i := range n {
			if diff := diffCopy(s[i], d[i]); diff != "" {
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
	t.Parallel() // no timing assertion: runs beside the other parallel tests
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
	srcRecs := readLog(t, ctx, p.srcCl, topic)
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

// TestOpenTransactionDoesNotDelayResume restarts kmirror after a crash
// while a source transaction is open on every partition of a topic: the
// restarted flow compares what the target already holds only up to the
// source's last stable offset, so the open transaction does not hold up
// its start (reading past it would wait for the transaction to end). The
// time from the restart to the first record copied is printed.
func TestOpenTransactionDoesNotDelayResume(t *testing.T) {
	p := startPair(t)
	const (
		topic      = "txopen"
		partitions = 4
	)
	createTopic(t, p.srcCl, topic, partitions, nil)
	createTopic(t, p.srcCl, "plain", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	txn := func(cl *kgo.Client, from, n int, end bool) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for i := from; i < from+n; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: fmt.Appendf(nil, "%d", i)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if end {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
	}
	committer := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("committer"))
	for i := range 3 {
		txn(committer, i*100, 100, true)
	}
	produce(t, p.srcCl, []*kgo.Record{{Topic: "plain", Value: []byte("before")}})

	httpAddr := freeAddr(t)
	// Progress is stored once a minute (and at a clean stop): when
	// kmirror is killed, the target holds records past the stored
	// positions, which the restarted flow compares with the source.
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["txopen", "plain"]
topic_naming: identity
progress_interval: 1m
`))
	first := startKmirror(t, cfg, httpAddr)
	waitFor(t, 2*time.Minute, "the first committed records on the target", func() (bool, string) {
		n, m := sum(endOffsets(t, p.dstCl, topic)), sum(endOffsets(t, p.dstCl, "plain"))
		return n == 300 && m == 1, fmt.Sprintf("target has %d of 300 and %d of 1", n, m)
	})
	first.stop()
	second := startKmirror(t, cfg, httpAddr)
	for i := 3; i < 5; i++ {
		txn(committer, i*100, 100, true)
	}
	waitFor(t, 2*time.Minute, "the committed records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n == 500, fmt.Sprintf("target has %d of 500", n)
	})
	second.kill()

	// A transaction opens on every partition and stays open over the restart.
	open := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("open"), kgo.TransactionTimeout(4*time.Minute))
	txn(open, 1000, 40, false)
	produce(t, p.srcCl, []*kgo.Record{{Topic: "plain", Value: []byte("after")}})

	third := startKmirror(t, cfg, httpAddr)
	startup := waitFor(t, 3*time.Minute, "the first record copied after the restart", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "plain"))
		return n >= 2, fmt.Sprintf("target plain has %d of 2", n)
	})
	t.Logf("restart with a source transaction open on %d partitions: first record copied %s after start", partitions, startup.Round(10*time.Millisecond))

	if err := open.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the committed transaction on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= 540, fmt.Sprintf("target has %d of 540", n)
	})
	time.Sleep(2 * time.Second)
	srcRecs := readLog(t, ctx, p.srcCl, topic)
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, topic, srcRecs, dstRecs, partitions)
	if n := sum(endOffsets(t, p.dstCl, "plain")); n != 2 {
		t.Errorf("target plain holds %d records, want 2", n)
	}
	_, body, err := third.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	skipped, _ := metricValue(body, `kmirror_resume_skipped_records_total{flow="e2e",topic="txopen"}`)
	duplicates, _ := metricValue(body, `kmirror_duplicate_records_total{flow="e2e",topic="txopen"}`)
	t.Logf("resume skipped %v records the target already held, %v duplicates", skipped, duplicates)
	if skipped == 0 {
		t.Errorf("kmirror_resume_skipped_records_total = 0: the restart compared nothing, so the test did not exercise the comparison")
	}
	if startup > 20*time.Second {
		t.Errorf("the first record was copied %s after the restart; an open transaction must not hold up the start", startup)
	}
	third.stop()
}
