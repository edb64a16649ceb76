package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// eosProduceTxns writes n transactions of per records to topic (round robin
// over partitions) with a transactional producer, aborting every
// abortEvery-th; values are "c:<txn>:<i>" when committed and
// "aborted:<txn>:<i>" when aborted. It returns the committed values by
// partition, in order.
func eosProduceTxns(t *testing.T, bootstrap, topic, txnID string, partitions int32, first, n, per, abortEvery int) map[int32][]string {
	t.Helper()
	cl := newClient(t, bootstrap, kgo.TransactionalID(txnID), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	committed := map[int32][]string{}
	for x := first; x < first+n; x++ {
		abort := abortEvery > 0 && x%abortEvery == abortEvery-1
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for i := range per {
			part := int32((x*per + i) % int(partitions))
			v := fmt.Sprintf("c:%d:%d", x, i)
			if abort {
				v = fmt.Sprintf("aborted:%d:%d", x, i)
			} else {
				committed[part] = append(committed[part], v)
			}
			recs = append(recs, &kgo.Record{Topic: topic, Partition: part, Key: []byte(v), Value: []byte(v)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(!abort)); err != nil {
			t.Fatal(err)
		}
	}
	return committed
}

// eosReadCommitted reads every committed record of topic's partitions
// read_committed, until each partition holds want[p] records or timeout.
func eosReadCommitted(t *testing.T, bootstrap, topic string, partitions int32, want map[int32]int, timeout time.Duration) map[int32][]string {
	t.Helper()
	got := map[int32][]string{}
	offs := map[int32]kgo.Offset{}
	for p := range partitions {
		offs[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, bootstrap, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}))
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for p := range partitions {
			if len(got[p]) < want[p] {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			// One more short poll: anything past want is a duplicate.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], string(r.Value)) })
			cancel()
			return got
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], string(r.Value)) })
		cancel()
	}
}

// eosExact fails the test unless got holds exactly the records of want,
// in order, on each of the partitions.
func eosExact(t *testing.T, got, want map[int32][]string, partitions int32) {
	t.Helper()
	for part := range partitions {
		if strings.Join(got[part], ",") != strings.Join(want[part], ",") {
			t.Fatalf("partition %d: got %d records, want %d\ngot  %.300v\nwant %.300v",
				part, len(got[part]), len(want[part]), got[part], want[part])
		}
	}
}

// eosCounts is how many records of want each partition holds.
func eosCounts(want map[int32][]string) map[int32]int {
	m := map[int32]int{}
	for p, v := range want {
		m[p] = len(v)
	}
	return m
}

func TestExactlyOnceBasicRestart(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	const parts = 3
	createTopic(t, p.srcCl, "eos", parts, nil)
	want := eosProduceTxns(t, p.src.Bootstrap(), "eos", "basic-1", parts, 0, 40, 50, 4)
	addr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(addr, "exactly_once: true\ntopics: [eos]\nownership_timeout: 6s"))
	k := startKmirror(t, cfg, addr)
	counts := func() map[int32]int { return eosCounts(want) }
	got := eosReadCommitted(t, p.dst.Bootstrap(), "src.eos", parts, counts(), 90*time.Second)
	check := func() {
		t.Helper()
		eosExact(t, got, want, parts)
	}
	check()
	// Killed while it copies a stream: its last transaction is open.
	done := make(chan map[int32][]string, 1)
	go func() { done <- eosProduceTxns(t, p.src.Bootstrap(), "eos", "basic-2", parts, 40, 200, 50, 3) }()
	waitFor(t, 60*time.Second, "part of the second stream on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src.eos"))
		return n > int64(len(want[0])*parts+2000), fmt.Sprintf("%d target offsets", n)
	})
	k.kill()
	more := <-done
	for part, v := range more {
		want[part] = append(want[part], v...)
	}
	k = startKmirror(t, cfg, addr)
	got = eosReadCommitted(t, p.dst.Bootstrap(), "src.eos", parts, counts(), 120*time.Second)
	check()
	for _, l := range strings.Split(k.output(), "\n") {
		if strings.Contains(l, "transaction") {
			t.Log(l)
		}
	}
	if !strings.Contains(k.output(), "flow started") {
		t.Fatalf("no start in log:\n%s", k.output())
	}
}
