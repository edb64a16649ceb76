package replicate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// txnEnv is env with a transactional target producer and a lease of an
// ownership group on the target.
type txnEnv struct {
	*env
	txnTarget *kgo.Client
	lease     *ownership.Lease
	logs      *syncBuffer
	group     string
}

func newTxnEnv(t *testing.T) *txnEnv {
	t.Helper()
	e := newEnv(t)
	seeds := e.tgtClient.OptValue(kgo.SeedBrokers).([]string)
	te := &txnEnv{env: e, logs: &syncBuffer{}, group: policy.InternalPrefix + "." + flowName + ".owners"}
	te.txnTarget = newClient(t, seeds,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID("txn-test"),
		kgo.TransactionTimeout(10*time.Second))
	member := ownership.Join(ownership.Options{
		Client: newClient(t, seeds), Group: te.group, Timeout: 6 * time.Second,
		Self: ownership.Self(time.Now()), Logger: slog.New(slog.DiscardHandler),
	})
	t.Cleanup(member.Leave)
	lease, err := member.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	te.lease = lease
	return te
}

// replicator returns an exactly-once replicator whose fencing commits
// carry what member returns.
func (te *txnEnv) replicator(member func() (string, int32, bool)) *Replicator {
	return New(Options{
		Flow:     flowName,
		Source:   te.srcClient,
		Target:   te.txnTarget,
		Progress: te.store.WithClient(te.txnTarget),
		Transactions: &Transactions{
			ID: "txn-test", Group: te.group, Member: member,
			Interval: 20 * time.Millisecond, MaxBytes: 1 << 20,
		},
		Metrics: te.metrics,
		Logger:  slog.New(slog.NewTextHandler(te.logs, nil)),
	})
}

// committedValues reads topic read_committed for up to wait and returns
// the values read, by partition.
func committedValues(t *testing.T, seeds []string, topic string, partitions int32, want int, wait time.Duration) map[int32][]string {
	t.Helper()
	offs := map[int32]kgo.Offset{}
	for p := range partitions {
		offs[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, seeds, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}), kgo.FetchMaxWait(50*time.Millisecond))
	got := map[int32][]string{}
	n := 0
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && (want < 0 || n < want) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], string(r.Value))
			n++
		})
		cancel()
	}
	return got
}

func TestTransactionsCommitRecordsWithTheirPositions(t *testing.T) {
	te := newTxnEnv(t)
	const src, dst, parts = "orders", "primary.orders", int32(3)
	te.createTopic(t, te.srcAdmin, src, parts, nil)
	te.createTopic(t, te.tgtAdmin, dst, parts, nil)
	recs := records(parts, 100, "eos")
	te.produce(t, src, recs...)

	r := te.replicator(func() (string, int32, bool) {
		id, gen := te.lease.Member()
		return id, gen, te.lease.Allow() == nil
	})
	r.Add(assignments(src, dst, parts))
	stop := te.run(t, r)
	seeds := te.tgtClient.OptValue(kgo.SeedBrokers).([]string)
	got := committedValues(t, seeds, dst, parts, len(recs), 20*time.Second)
	stop()
	for p := range parts {
		var want []string
		for _, rec := range recs {
			if rec.Partition == p {
				want = append(want, string(rec.Value))
			}
		}
		if strings.Join(got[p], "|") != strings.Join(want, "|") {
			t.Fatalf("partition %d: read_committed target holds %d records, want %d in source order", p, len(got[p]), len(want))
		}
	}
	loaded, err := te.store.Stable().Load(te.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p := range parts {
		pos := loaded.Positions[assignments(src, dst, parts)[p].Source]
		if pos.SourceNext != 100 || pos.TargetNext != 100 || !pos.Stopped {
			t.Fatalf("partition %d: committed position %+v, want source and target next 100, stopped", p, pos)
		}
	}
	if n := counter(t, te.metrics.TransactionsCommitted.WithLabelValues(flowName)); n < 1 {
		t.Fatalf("%v transactions committed", n)
	}
	if strings.Contains(te.logs.String(), "transaction") {
		t.Fatalf("unexpected transaction log lines:\n%s", te.logs)
	}
}

// TestTransactionOfStaleGenerationIsFenced plays a writer whose
// partitions moved to a newer generation of the group (a paused instance
// resuming): the group coordinator refuses its fencing commit, so its
// transaction is aborted and no record of it is visible to read_committed
// consumers, and it says so once.
func TestTransactionOfStaleGenerationIsFenced(t *testing.T) {
	te := newTxnEnv(t)
	const src, dst, parts = "orders", "primary.orders", int32(2)
	te.createTopic(t, te.srcAdmin, src, parts, nil)
	te.createTopic(t, te.tgtAdmin, dst, parts, nil)
	te.produce(t, src, records(parts, 50, "zombie")...)

	r := te.replicator(func() (string, int32, bool) {
		id, gen := te.lease.Member()
		return id, gen - 1, false // a generation the group has left
	})
	r.Add(assignments(src, dst, parts))
	ctx, cancel := context.WithTimeout(te.ctx, 20*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if !errors.Is(err, ErrTransactionAborted) {
		t.Fatalf("Run returned %v, want an aborted transaction", err)
	}
	seeds := te.tgtClient.OptValue(kgo.SeedBrokers).([]string)
	if got := committedValues(t, seeds, dst, parts, -1, 2*time.Second); len(got) != 0 {
		t.Fatalf("records of the fenced transaction are visible: %v", got)
	}
	logs := te.logs.String()
	if n := strings.Count(logs, "transaction fenced by the brokers"); n != 1 {
		t.Fatalf("%d fenced lines, want 1:\n%s", n, logs)
	}
	if n := counter(t, te.metrics.Errors.WithLabelValues(flowName, metrics.ErrFenced)); n != 1 {
		t.Fatalf("fenced errors %v, want 1", n)
	}
	loaded, err := te.store.Stable().Load(te.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Positions) != 0 {
		t.Fatalf("positions of the fenced transaction were stored: %v", loaded.Positions)
	}
}

// TestReleaseDuringStuckCommitIsBounded releases a partition of an
// exactly-once replicator while a commit holds the transaction (waiting
// for writes the target does not answer, played by holding its lock):
// the release returns ErrNotDrained within its deadline instead of
// waiting for the commit, so the instance gives up its lease in time.
func TestReleaseDuringStuckCommitIsBounded(t *testing.T) {
	te := newTxnEnv(t)
	const src, dst, parts = "orders", "primary.orders", int32(2)
	te.createTopic(t, te.srcAdmin, src, parts, nil)
	te.createTopic(t, te.tgtAdmin, dst, parts, nil)
	r := te.replicator(func() (string, int32, bool) {
		id, gen := te.lease.Member()
		return id, gen, te.lease.Allow() == nil
	})
	r.Add(assignments(src, dst, parts))

	r.txn.mu.Lock() // a commit in progress
	ctx, cancel := context.WithTimeout(te.ctx, 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Release(ctx, []progress.Partition{assignments(src, dst, parts)[0].Source}) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotDrained) {
			t.Errorf("Release returned %v, want ErrNotDrained", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Release still waits for the commit 5 s after its 300 ms deadline")
	}
	r.txn.mu.Unlock()
	// The lock the release asked for is let go once it is had.
	if !r.txn.lock(te.ctx) {
		t.Fatal("the transaction lock was not let go")
	}
	r.txn.mu.Unlock()
}
