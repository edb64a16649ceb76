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

// TestSurvivesSIGKILL kills the kmirror process mid-stream while a producer
// keeps writing, restarts it, and checks that the target ends with every
// source record, in order, counting the duplicates the restart caused.
func TestSurvivesSIGKILL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic      = "events"
		partitions = 4
		total      = 200_000
		batch      = 2_000
	)
	createTopic(t, p.srcCl, topic, partitions, nil)

	// The producer writes "<partition>:<seq>" values, in batches, all along.
	produced, prodDone := produceNumbered(p.srcCl, topic, partitions, total, batch)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["events"]
topic_naming: identity
`))
	first := startKmirror(t, cfg, httpAddr)
	waitFor(t, 2*time.Minute, "a third of the records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= total/3, fmt.Sprintf("target has %d, produced %d", n, produced.Load())
	})
	first.kill()
	killedAt := sum(endOffsets(t, p.dstCl, topic))
	t.Logf("SIGKILL with %d records on the target, %d produced", killedAt, produced.Load())

	second := startKmirror(t, cfg, httpAddr)
	if err := <-prodDone; err != nil {
		t.Fatalf("producer: %v", err)
	}
	srcEnd := sum(endOffsets(t, p.srcCl, topic))
	if srcEnd != total {
		t.Fatalf("source has %d records, want %d", srcEnd, total)
	}
	waitFor(t, 2*time.Minute, "the target to hold at least every source record", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= srcEnd, fmt.Sprintf("target has %d of %d", n, srcEnd)
	})

	duplicates := copiedWithRepeats(t, p, topic, partitions)
	_, body, err := second.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	reported, _ := metricValue(body, `kmirror_duplicate_records_total{flow="e2e",topic="events"}`)
	skipped, _ := metricValue(body, `kmirror_resume_skipped_records_total{flow="e2e",topic="events"}`)
	t.Logf("crash test: %d source records, all on the target in order; %d duplicates seen after SIGKILL; kmirror reported %v duplicates and %v records it found already written and did not write again",
		srcEnd, duplicates, reported, skipped)
	if int(reported) != duplicates {
		t.Errorf("kmirror_duplicate_records_total = %v, but the target holds %d duplicates", reported, duplicates)
	}
	second.stop()
}

// produceNumbered writes total records to topic in the background, in
// acknowledged batches of batch records 20 ms apart, record i to
// partition i % partitions with the value "<partition>:<seq>:vvv…" (seq
// counting per partition); produced counts what was acknowledged, and
// done receives the outcome.
func produceNumbered(cl *kgo.Client, topic string, partitions int32, total, batch int) (produced *atomic.Int64, done <-chan error) {
	produced = new(atomic.Int64)
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		seq := make([]int, partitions)
		for n := 0; n < total; n += batch {
			recs := make([]*kgo.Record, batch)
			for i := range recs {
				part := int32(n+i) % partitions
				recs[i] = &kgo.Record{Topic: topic, Partition: part, Key: fmt.Appendf(nil, "k%d", n+i),
					Value: fmt.Appendf(nil, "%d:%d:%s", part, seq[part], strings.Repeat("v", 100))}
				seq[part]++
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				result <- err
				return
			}
			produced.Add(int64(batch))
			time.Sleep(20 * time.Millisecond)
		}
		result <- nil
	}()
	return produced, result
}

// copiedWithRepeats compares a copy with its source partition by
// partition: the target must be the source sequence in which a run of
// records may appear again (right after a restart point), each record
// equal to its source but for the provenance header. It returns the
// repeats.
func copiedWithRepeats(t *testing.T, p *pair, topic string, partitions int32) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	duplicates := 0
	for part := range partitions {
		src, dst := srcRecs[part], dstRecs[part]
		// Dropping repeats (first occurrence wins) must give the source
		// sequence exactly.
		seen := map[string]bool{}
		var unique []*kgo.Record
		for _, r := range dst {
			if seen[string(r.Value)] {
				duplicates++
				continue
			}
			seen[string(r.Value)] = true
			unique = append(unique, r)
		}
		if len(unique) != len(src) {
			t.Fatalf("partition %d: target has %d distinct records, source %d: records lost", part, len(unique), len(src))
		}
		for i := range src {
			if d := diffCopy(src[i], unique[i]); d != "" {
				t.Fatalf("partition %d record %d: %s", part, i, d)
			}
		}
	}
	return duplicates
}

// TestSurvivesSIGKILLAtFirstWrites kills kmirror as soon as the first
// copies reach the target, before a progress write could record them: the
// start position of every partition is stored before its first copy is
// written, so the restart finds the copies and does not write them again.
func TestSurvivesSIGKILLAtFirstWrites(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic, partitions, perPartition = "early", 4, 5_000
	createTopic(t, p.srcCl, topic, partitions, nil)
	var recs []*kgo.Record
	for i := range partitions * perPartition {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: fmt.Appendf(nil, "%d", i)})
	}
	produce(t, p.srcCl, recs)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["early"]
progress_interval: 1m
`))
	first := startKmirror(t, cfg, httpAddr)
	target := "src." + topic
	waitFor(t, time.Minute, "the first copies on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, target))
		return n > 0, fmt.Sprintf("target has %d", n)
	})
	first.kill()
	killedAt := sum(endOffsets(t, p.dstCl, target))
	t.Logf("SIGKILL with %d records on the target, no progress stored but the start positions (progress_interval 1m)", killedAt)

	second := startKmirror(t, cfg, httpAddr)
	var skipped float64
	waitFor(t, time.Minute, "the restart to find the copies already written", func() (bool, string) {
		_, body, err := second.get("/metrics")
		if err != nil {
			return false, err.Error()
		}
		v, _ := metricValue(body, `kmirror_resume_skipped_records_total{flow="e2e",topic="early"}`)
		skipped = v
		return int64(v) >= killedAt, fmt.Sprintf("skipped %v of %d", v, killedAt)
	})
	waitFor(t, time.Minute, "every record on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, target))
		return n >= partitions*perPartition, fmt.Sprintf("target has %d of %d", n, partitions*perPartition)
	})
	_, body, err := second.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	dups, _ := metricValue(body, `kmirror_duplicate_records_total{flow="e2e",topic="early"}`)
	t.Logf("restart skipped %v records already written; %v duplicates reported", skipped, dups)
	second.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	for part := range int32(partitions) {
		if len(dstRecs[part]) != len(srcRecs[part]) {
			t.Errorf("partition %d: target has %d records, source %d (duplicates or loss)", part, len(dstRecs[part]), len(srcRecs[part]))
			continue
		}
		for i := range srcRecs[part] {
			if d := diffCopy(srcRecs[part][i], dstRecs[part][i]); d != "" {
				t.Fatalf("partition %d record %d: %s", part, i, d)
			}
		}
	}
}
