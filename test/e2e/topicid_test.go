package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTopicRecreated deletes and re-creates a replicated source topic under
// the same name, first while kmirror runs and then while it is stopped, and
// finally deletes its target topic while kmirror runs. Each time the new
// topic must be copied from its beginning, record by record, without any
// stored position or offset map of the old topic applied to it, and the
// event must be counted in kmirror_topic_recreated_total.
func TestTopicRecreated(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic      = "rc"
		target     = "src.rc"
		partitions = 2
		oldN       = 5000 // records of the first topic
		new1N      = 300  // of the topic re-created while kmirror runs
		new2N      = 200  // of the topic re-created while kmirror is stopped
		afterN     = 50   // written after the target topic was deleted
	)
	createTopic(t, p.srcCl, topic, partitions, nil)
	produce(t, p.srcCl, batch(topic, partitions, "old", 0, oldN))

	httpAddr := freeAddr(t)
	// A refresh interval long enough that deleting and re-creating the
	// topic fits between two topic sync passes.
	cfg := writeConfig(t, p.flowConfig(httpAddr, `topics: ["rc"]
topic_refresh_interval: 3s`))
	k := startKmirror(t, cfg, httpAddr)
	waitTargetEnd(t, p, target, oldN)

	// 1. Deleted and re-created while kmirror runs.
	recreateTopic(t, p.srcCl, topic, partitions)
	produce(t, p.srcCl, batch(topic, partitions, "new1", 0, new1N))
	waitTargetEnd(t, p, target, oldN+new1N)
	checkTail(t, p, topic, target, oldN)
	checkRecreatedMetric(t, k, "source", topic, 1)

	// 2. Deleted and re-created while kmirror is stopped; the new topic has
	// fewer records than the stored position of the old one.
	k.stop()
	recreateTopic(t, p.srcCl, topic, partitions)
	produce(t, p.srcCl, batch(topic, partitions, "new2", 0, new2N))
	k = startKmirror(t, cfg, httpAddr)
	waitTargetEnd(t, p, target, oldN+new1N+new2N)
	checkTail(t, p, topic, target, oldN+new1N)
	checkRecreatedMetric(t, k, "source", topic, 1)
	if n := strings.Count(k.output(), "source topic was deleted and created again"); n != 1 {
		t.Errorf("kmirror logged the re-created source topic %d times, want once", n)
	}

	// 3. The target topic is deleted while kmirror runs: it is created
	// again and refilled from the source's beginning.
	deleteTopic(t, p.dstCl, target)
	produce(t, p.srcCl, batch(topic, partitions, "after", new2N, afterN))
	waitTargetEnd(t, p, target, new2N+afterN)
	checkTail(t, p, topic, target, 0)
	checkRecreatedMetric(t, k, "target", target, 1)

	// Nothing more arrives later (no stale write of the old topics).
	time.Sleep(4 * time.Second) // two data-plane polls and a topic sync pass, to see nothing extra land
	if got, want := sum(endOffsets(t, p.dstCl, target)), int64(new2N+afterN); got != want {
		t.Errorf("target %s holds %d records at the end, want %d", target, got, want)
	}
	t.Logf("old topic %d records; re-created while running: %d copied after them; re-created while stopped: %d copied after those; target deleted: refilled with all %d records of the source",
		oldN, new1N, new2N, new2N+afterN)
}

// batch returns n records for topic spread round-robin over its partitions,
// keyed and valued "<tag>-<i>" from first on.
func batch(topic string, partitions int32, tag string, first, n int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range n {
		v := fmt.Sprintf("%s-%d", tag, first+i)
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i) % partitions, Key: []byte(v), Value: []byte(v)}
	}
	return recs
}

func deleteTopic(t *testing.T, cl *kgo.Client, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopic(ctx, topic); err != nil {
		t.Fatalf("deleting topic %q: %v", topic, err)
	}
	waitFor(t, 30*time.Second, "topic "+topic+" gone", func() (bool, string) {
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		return !td.Has(topic), "still listed"
	})
	cl.PurgeTopicsFromClient(topic)
}

// recreateTopic deletes topic and creates it again at once, with a new
// topic ID.
func recreateTopic(t *testing.T, cl *kgo.Client, topic string, partitions int32) {
	t.Helper()
	deleteTopic(t, cl, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	// The controller may still be removing the old topic's partitions.
	waitFor(t, 30*time.Second, "re-creating topic "+topic, func() (bool, string) {
		_, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// waitTargetEnd waits until the target topic's partitions sum to n records.
func waitTargetEnd(t *testing.T, p *pair, target string, n int64) {
	t.Helper()
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d records in %s", n, target), func() (bool, string) {
		ends := endOffsets(t, p.dstCl, target)
		return sum(ends) == n, fmt.Sprintf("ends %v", ends)
	})
}

// checkTail checks that each target partition, from offset skip/partitions
// on, holds exactly the source partition's records, in order.
func checkTail(t *testing.T, p *pair, source, target string, skip int64) {
	t.Helper()
	src := readTo(t, p.src.Bootstrap(), source, endOffsets(t, p.srcCl, source))
	dst := readTo(t, p.dst.Bootstrap(), target, endOffsets(t, p.dstCl, target))
	for part, srcRecs := range src {
		tail := dst[part]
		from := int(skip) / len(src)
		if from > len(tail) {
			t.Errorf("partition %d: target holds %d records, want more than %d", part, len(tail), from)
			continue
		}
		tail = tail[from:]
		if len(tail) != len(srcRecs) {
			t.Errorf("partition %d: target holds %d records after offset %d, source %d", part, len(tail), from, len(srcRecs))
		}
		for i := range min(len(tail), len(srcRecs)) {
			if string(tail[i].Key) != string(srcRecs[i].Key) || string(tail[i].Value) != string(srcRecs[i].Value) {
				t.Errorf("partition %d: target record %d is %q, source record %d is %q", part, tail[i].Offset, tail[i].Value, srcRecs[i].Offset, srcRecs[i].Value)
				break
			}
		}
	}
}

// readTo reads topic from its start to the given end offsets.
func readTo(t *testing.T, bootstrap, topic string, ends map[int32]int64) map[int32][]*kgo.Record {
	t.Helper()
	parts := map[int32]kgo.Offset{}
	for p := range ends {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, bootstrap, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	defer cl.Close()
	out := map[int32][]*kgo.Record{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := func() bool {
		for p, end := range ends {
			if n := len(out[p]); end > 0 && (n == 0 || out[p][n-1].Offset < end-1) {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s to %v: %v", topic, ends, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < ends[r.Partition] {
				out[r.Partition] = append(out[r.Partition], r)
			}
		})
	}
	return out
}

// checkRecreatedMetric checks kmirror_topic_recreated_total of the process.
func checkRecreatedMetric(t *testing.T, k *proc, cluster, topic string, want float64) {
	t.Helper()
	series := fmt.Sprintf(`kmirror_topic_recreated_total{cluster=%q,flow="e2e",topic=%q}`, cluster, topic)
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	got, _ := metricValue(body, series)
	if got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
	t.Logf("%s %v", series, got)
}
