package replicate

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
)

const flowName = "primary-to-dr"

// env is a source and a target cluster with the clients a flow uses, plus
// a producer on the source and admins for the test.
type env struct {
	ctx context.Context

	srcClient, tgtClient *kgo.Client // the replicator's
	producer             *kgo.Client // writes test records to the source
	srcAdmin, tgtAdmin   *kadm.Client
	store                *progress.Store
	metrics              *metrics.Metrics
}

func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func newClient(t *testing.T, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	src, tgt := newCluster(t), newCluster(t)
	e := &env{
		ctx: ctx,
		// As the flow builds them.
		srcClient: newClient(t, src,
			kgo.FetchMaxWait(100*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())),
		tgtClient: newClient(t, tgt,
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.RequiredAcks(kgo.AllISRAcks())),
		producer: newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())),
		metrics:  metrics.New(),
	}
	e.srcAdmin = kadm.NewClient(newClient(t, src))
	e.tgtAdmin = kadm.NewClient(newClient(t, tgt))
	e.store = progress.NewStore(e.tgtClient, policy.ProgressTopic(flowName))
	if err := e.store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) createTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	if _, err := adm.CreateTopic(e.ctx, partitions, -1, configs, topic); err != nil {
		t.Fatalf("creating %q: %v", topic, err)
	}
}

func (e *env) replicator() *Replicator {
	return New(Options{
		Flow:             flowName,
		Source:           e.srcClient,
		Target:           e.tgtClient,
		Progress:         e.store,
		ProgressInterval: 20 * time.Millisecond,
		// A refused record is tried again soon, so tests see the retry.
		RefusedRetryInterval: 2 * time.Second,
		Metrics:              e.metrics,
		Logger:               slog.New(slog.DiscardHandler),
	})
}

// run runs r until the returned stop is called; stop waits for Run to
// return.
func (e *env) run(t *testing.T, r *Replicator) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() {
		defer wg.Done()
		runErr = r.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			if runErr != nil {
				t.Errorf("Run: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// produce writes recs to the source, in order, each to its partition.
func (e *env) produce(t *testing.T, topic string, recs ...*kgo.Record) {
	t.Helper()
	for _, r := range recs {
		r.Topic = topic
	}
	if err := e.producer.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing to %q: %v", topic, err)
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// records returns n records per partition spread over partitions, with
// null and empty keys and values, duplicate headers and old timestamps.
func records(partitions int32, n int, tag string) []*kgo.Record {
	base := time.UnixMilli(1_600_000_000_000)
	var out []*kgo.Record
	for i := range n {
		for p := range partitions {
			r := &kgo.Record{
				Partition: p,
				Key:       fmt.Appendf(nil, "%s-k-%d-%d", tag, p, i),
				Value:     fmt.Appendf(nil, "%s-v-%d-%d", tag, p, i),
				Timestamp: base.Add(time.Duration(i) * time.Minute),
			}
			switch i % 5 {
			case 1:
				r.Key, r.Value = nil, nil
			case 2:
				r.Key, r.Value = []byte{}, []byte{}
			case 3:
				r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("1")}, {Key: "n"}}
			}
			out = append(out, r)
		}
	}
	return out
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		out[o.Partition] = o.Offset
	})
	return out
}

func assignments(topic, target string, partitions int32) []Assignment {
	var as []Assignment
	for p := range partitions {
		as = append(as, Assignment{
			Source:      progress.Partition{Topic: topic, Partition: p},
			TargetTopic: target,
			Start:       progress.Position{SourceNext: 0, TargetNext: -1},
		})
	}
	return as
}

func TestReplicateCopiesEverything(t *testing.T) {
	e := newEnv(t)
	const src, dst, parts = "orders.eu", "primary.orders.eu", int32(3)
	e.createTopic(t, e.srcAdmin, src, parts, nil)
	e.createTopic(t, e.tgtAdmin, dst, parts, nil)
	e.produce(t, src, records(parts, 50, "before")...) // there before the replicator starts

	r := e.replicator()
	r.Add(assignments(src, dst, parts))
	r.Add(assignments(src, dst, parts)) // already replicated: ignored
	for p := range parts {
		if !r.Has(src, p) {
			t.Errorf("Has(%q, %d) = false after Add", src, p)
		}
	}
	if r.Has(src, parts) || r.Has("other", 0) {
		t.Error("Has reports a partition that was never added")
	}
	if got := gauge(t, e.metrics.PartitionsActive.WithLabelValues(flowName)); got != float64(parts) {
		t.Errorf("partitions gauge = %v, want %d", got, parts)
	}
	stop := e.run(t, r)
	e.produce(t, src, records(parts, 50, "during")...) // written while it runs
	const total = 2 * 50 * int64(parts)
	waitFor(t, fmt.Sprintf("%d records replicated", total), func() bool { return r.Totals().Records >= total })
	stop()

	tot := r.Totals()
	if tot.Records != total || tot.Partitions != int(parts) || tot.Failing != 0 {
		t.Errorf("Totals = %+v, want %d records over %d partitions, none failing", tot, total, parts)
	}
	if tot.Bytes <= 0 {
		t.Errorf("Totals.Bytes = %d, want > 0", tot.Bytes)
	}
	if got := counter(t, e.metrics.ReplicatedRecords.WithLabelValues(flowName, src)); got != float64(total) {
		t.Errorf("replicated records metric = %v, want %d", got, total)
	}
	if got := counter(t, e.metrics.Duplicates.WithLabelValues(flowName, src)); got != 0 {
		t.Errorf("duplicates metric = %v, want 0", got)
	}

	rep, err := verify.Compare(e.ctx, e.producer, e.tgtClient, []verify.Pair{{Source: src, Target: dst}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("target differs from source: %+v", rep.Topics)
	}

	srcEnds := endOffsets(t, e.ctx, e.srcAdmin, src)
	tgtEnds := endOffsets(t, e.ctx, e.tgtAdmin, dst)
	want := map[progress.Partition]progress.Position{}
	for p := range parts {
		want[progress.Partition{Topic: src, Partition: p}] = progress.Position{SourceNext: srcEnds[p], TargetNext: tgtEnds[p]}
	}
	got := r.Positions()
	for p, pos := range got {
		pos.Writers = nil // checked in the stored positions below
		got[p] = pos
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Positions() = %v, want the source end offsets %v", got, want)
	}

	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, pos := range loaded.Positions {
		// The offset map of a partition copied without gaps is one run
		// from its first record to its position.
		if runs := loaded.Runs[p]; len(runs) != 1 || runs[0].Source != 0 || runs[0].Target != 0 || runs[0].SourceEnd() != pos.SourceNext {
			t.Errorf("%s: stored offset map %+v is not one run over [0, %d)", p, runs, pos.SourceNext)
		}
		if got, ok := r.Translate(p.Topic, p.Partition, 42); !ok || got.Target != 42 || !got.Exact {
			t.Errorf("%s: Translate(42) = %+v, %v; want exactly 42", p, got, ok)
		}
		if pos.LeaderEpoch == nil || *pos.LeaderEpoch != 0 {
			t.Errorf("%s: stored leader epoch %v, want 0 (kfake's)", p, pos.LeaderEpoch)
		}
		if !pos.Stopped {
			t.Errorf("%s: stored position after Run is not Stopped", p)
		}
		if own, _, _ := e.tgtClient.ProducerID(e.ctx); len(pos.Writers) != 1 || pos.Writers[0].ID != own {
			t.Errorf("%s: stored writers %+v, want the target producer %d", p, pos.Writers, own)
		}
		pos.UpdatedMs = 0
		pos.Run = nil
		pos.LeaderEpoch = nil
		pos.Stopped = false
		pos.Writers = nil
		loaded.Positions[p] = pos
	}
	if !reflect.DeepEqual(loaded.Positions, want) {
		t.Errorf("stored positions after Run = %v, want %v", loaded.Positions, want)
	}
	if got := counter(t, e.metrics.ProgressWrites.WithLabelValues(flowName)); got < float64(parts) {
		t.Errorf("progress writes metric = %v, want at least %d", got, parts)
	}
}

func TestReplicateResumesFromPosition(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 2, nil)
	e.createTopic(t, e.tgtAdmin, dst, 2, nil)
	in := records(2, 10, "x") // 10 per partition
	e.produce(t, src, in...)

	r := e.replicator()
	r.Add([]Assignment{
		{Source: progress.Partition{Topic: src, Partition: 0}, TargetTopic: dst, Start: progress.Position{SourceNext: 0, TargetNext: -1}},
		{Source: progress.Partition{Topic: src, Partition: 1}, TargetTopic: dst, Start: progress.Position{SourceNext: 7, TargetNext: 3}},
	})
	stop := e.run(t, r)
	waitFor(t, "13 records replicated", func() bool { return r.Totals().Records >= 13 })
	stop()

	if got := r.Totals().Records; got != 13 {
		t.Errorf("replicated %d records, want 10 + 3", got)
	}
	got, err := verify.ReadAll(e.ctx, e.tgtClient, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0]) != 10 || len(got[1]) != 3 {
		t.Fatalf("target has %d and %d records, want 10 and 3", len(got[0]), len(got[1]))
	}
	// Source partition 1 offsets 7, 8, 9 are records 7..9 of partition 1.
	for i, rec := range got[1] {
		if d := verify.Diff(in[(7+i)*2+1], rec); d != "" {
			t.Errorf("partition 1 target record %d is not source offset %d: %s", i, 7+i, d)
		}
	}
	pos := r.Positions()[progress.Partition{Topic: src, Partition: 1}]
	if pos.SourceNext != 10 || pos.TargetNext != 3 {
		t.Errorf("partition 1 position = %+v, want source 10, target 3", pos)
	}
}

func TestReplicateRemove(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, e.srcAdmin, "a", 1, nil)
	e.createTopic(t, e.srcAdmin, "b", 1, nil)
	r := e.replicator()
	r.Add(append(assignments("a", "primary.a", 1), assignments("b", "primary.b", 1)...))
	r.Remove([]string{"a", "missing"})
	if r.Has("a", 0) || !r.Has("b", 0) {
		t.Errorf("after Remove(a): Has(a) = %v, Has(b) = %v", r.Has("a", 0), r.Has("b", 0))
	}
	if got := r.Totals().Partitions; got != 1 {
		t.Errorf("Totals.Partitions = %d, want 1", got)
	}
	if got := gauge(t, e.metrics.TopicsReplicated.WithLabelValues(flowName)); got != 1 {
		t.Errorf("topics gauge = %v, want 1", got)
	}
}

// refusingTarget creates topic src with 2 partitions and its target dst
// with a max.message.bytes that refuses a big record, starts a replicator
// of both partitions, and writes 5 small records to each partition. It
// returns once those are replicated, with a function that writes the big
// record (at source offset 5 of partition 0) followed by n more small
// records per partition.
func refusingTarget(t *testing.T, e *env, src, dst string) (r *Replicator, stop func(), writeBig func(n int)) {
	t.Helper()
	e.createTopic(t, e.srcAdmin, src, 2, nil)
	// kfake, like Kafka, refuses batches larger than max.message.bytes.
	e.createTopic(t, e.tgtAdmin, dst, 2, map[string]*string{"max.message.bytes": kadm.StringPtr("2048")})
	r = e.replicator()
	r.Add(assignments(src, dst, 2))
	stop = e.run(t, r)
	for i := range 5 {
		e.produce(t, src, small(0, i), small(1, i))
	}
	waitFor(t, "the first 10 records", func() bool { return r.Totals().Records >= 10 })
	big := make([]byte, 8000) // random, so that compression cannot shrink it
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	return r, stop, func(n int) {
		e.produce(t, src, &kgo.Record{Partition: 0, Key: []byte("big"), Value: big})
		for i := 6; i < 6+n; i++ {
			e.produce(t, src, small(0, i), small(1, i))
		}
	}
}

func small(p int32, i int) *kgo.Record {
	return &kgo.Record{Partition: p, Key: fmt.Appendf(nil, "k%d-%d", p, i), Value: fmt.Appendf(nil, "v%d-%d", p, i)}
}

// bigOffset is the source offset of the record the target refuses, in
// partition 0.
const bigOffset = 5

// A record the target refuses stops its partition: the position does not
// move past it, the error is counted, and once the cause is fixed every
// record arrives, in order, none skipped. Other partitions keep flowing;
// their traffic also keeps the poll loop turning (see
// TestReplicateRetriesWithoutNewSourceRecords for a quiet flow).
func TestReplicateRefusedRecordIsNotSkipped(t *testing.T) {
	e := newEnv(t)
	const src, dst = "big", "primary.big"
	r, stop, writeBig := refusingTarget(t, e, src, dst)
	p0 := progress.Partition{Topic: src, Partition: 0}
	p1 := progress.Partition{Topic: src, Partition: 1}

	// Steady traffic on partition 1.
	trafficDone := make(chan struct{})
	var traffic sync.WaitGroup
	traffic.Add(1)
	go func() {
		defer traffic.Done()
		for i := 100; ; i++ {
			select {
			case <-trafficDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rec := small(1, i)
			rec.Topic = src
			if err := e.producer.ProduceSync(e.ctx, rec).FirstErr(); err != nil {
				t.Errorf("producing background traffic: %v", err)
				return
			}
		}
	}()
	stopTraffic := sync.OnceFunc(func() { close(trafficDone); traffic.Wait() })
	t.Cleanup(stopTraffic)

	writeBig(5)
	tooLarge := e.metrics.Errors.WithLabelValues(flowName, metrics.ErrRecordTooLarge)
	// Wait for the first failure and one failed retry, checking all along
	// that the position never passes the refused record.
	waitFor(t, "a failed retry of the refused record", func() bool {
		if pos := r.Positions()[p0]; pos.SourceNext > bigOffset {
			t.Fatalf("partition 0 position %d moved past the refused record at offset %d", pos.SourceNext, bigOffset)
		}
		return counter(t, tooLarge) >= 2
	})
	if pos := r.Positions()[p0]; pos.SourceNext != bigOffset {
		t.Errorf("partition 0 position = %d while failing, want %d (every record before the refused one is acknowledged)", pos.SourceNext, bigOffset)
	}
	if got := r.Totals().Failing; got > 1 {
		t.Errorf("Totals.Failing = %d, want at most 1", got)
	}
	if got := r.Totals().Stopped; len(got) != 1 || got[0].Topic != src || got[0].Partition != 0 || got[0].Offset != bigOffset || got[0].Reason == "" {
		t.Errorf("Totals.Stopped = %+v, want partition 0 stopped at offset %d with a reason", got, bigOffset)
	}
	if got := gauge(t, e.metrics.PartitionsStopped.WithLabelValues(flowName)); got != 1 {
		t.Errorf("partitions stopped gauge = %v, want 1", got)
	}
	if got := counter(t, e.metrics.Retried.WithLabelValues(flowName, src)); got < 2 {
		t.Errorf("retried records metric = %v, want at least 2", got)
	}
	// Partition 1 is not held up by partition 0.
	waitFor(t, "partition 1 to pass its first 11 records", func() bool { return r.Positions()[p1].SourceNext > 11 })
	if loaded, err := e.store.Load(e.ctx); err != nil {
		t.Fatal(err)
	} else if pos := loaded.Positions[p0]; pos.SourceNext > bigOffset {
		t.Errorf("stored position %d of partition 0 passed the refused record", pos.SourceNext)
	}

	// Fix the cause.
	rs, err := e.tgtAdmin.AlterTopicConfigs(e.ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("1048588")}}, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.On(dst, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "partition 0 to catch up", func() bool { return r.Positions()[p0].SourceNext == 11 })
	stopTraffic()
	srcEnds := endOffsets(t, e.ctx, e.srcAdmin, src)
	waitFor(t, "partition 1 to catch up", func() bool { return r.Positions()[p1].SourceNext == srcEnds[1] })
	stop()

	total := srcEnds[0] + srcEnds[1]
	if got := r.Totals(); got.Records != total || got.Failing != 0 {
		t.Errorf("Totals = %+v, want %d records (each counted once) and none failing", got, total)
	}
	srcRecs, err := verify.ReadAll(e.ctx, e.producer, src)
	if err != nil {
		t.Fatal(err)
	}
	tgtRecs, err := verify.ReadAll(e.ctx, e.tgtClient, dst)
	if err != nil {
		t.Fatal(err)
	}
	// No record written after the refused one reaches the target before
	// it: the target holds exactly the source's records, in order, none
	// twice.
	dups := counter(t, e.metrics.Duplicates.WithLabelValues(flowName, src))
	t.Logf("records written again after the rewind: %v", dups)
	for p := range int32(2) {
		s, d := srcRecs[p], tgtRecs[p]
		if len(d) != len(s) {
			t.Errorf("partition %d: target holds %d records, source %d", p, len(d), len(s))
		}
		for i := range min(len(s), len(d)) {
			if diff := verify.Diff(s[i], d[i]); diff != "" {
				t.Errorf("partition %d, target offset %d: %s", p, i, diff)
				break
			}
		}
	}
	if dups != 0 {
		t.Errorf("duplicates metric = %v, want 0", dups)
	}
	if got := gauge(t, e.metrics.PartitionsStopped.WithLabelValues(flowName)); got != 0 {
		t.Errorf("partitions stopped gauge = %v after the fix, want 0", got)
	}
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[p0]; pos.SourceNext != 11 {
		t.Errorf("stored position of partition 0 = %d, want 11", pos.SourceNext)
	}
}

// A refused write is retried after its backoff (500ms the first time) even
// when no new source record arrives: the package documents that a failed
// partition is rewound "after a backoff", and a quiet flow must not leave
// a record behind until the source happens to receive more data.
func TestReplicateRetriesWithoutNewSourceRecords(t *testing.T) {
	e := newEnv(t)
	const src, dst = "quiet", "primary.quiet"
	r, _, writeBig := refusingTarget(t, e, src, dst)
	p0 := progress.Partition{Topic: src, Partition: 0}
	writeBig(0) // the big record is the last one the source receives
	tooLarge := e.metrics.Errors.WithLabelValues(flowName, metrics.ErrRecordTooLarge)
	waitFor(t, "the first refusal", func() bool { return counter(t, tooLarge) >= 1 })

	// Nothing more is written to the source. Fix the cause; the retry due
	// 500ms after the failure must deliver the big record.
	rs, err := e.tgtAdmin.AlterTopicConfigs(e.ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("1048588")}}, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.On(dst, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for r.Positions()[p0].SourceNext != bigOffset+1 {
		if time.Now().After(deadline) {
			t.Fatalf("partition 0 still at position %d 3s after a refused write (backoff 500ms) with no new source records; "+
				"the failed partition is only retried when a poll returns, and the poll waits for new source data", r.Positions()[p0].SourceNext)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{0, 500 * time.Millisecond},
		{1, 500 * time.Millisecond},
		{2, time.Second},
		{3, 2 * time.Second},
		{7, 30 * time.Second},
		{100, 30 * time.Second},
	}
	for _, tc := range tests {
		if got := writeBackoff(tc.failures); got != tc.want {
			t.Errorf("writeBackoff(%d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

func TestReplicateStoresStartBeforeFirstWrite(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 2, nil)
	e.createTopic(t, e.tgtAdmin, dst, 2, nil)
	e.produce(t, src, records(2, 10, "x")...)
	add := func(r *Replicator) {
		r.Add([]Assignment{
			// Stored already: read at once.
			{Source: progress.Partition{Topic: src, Partition: 0}, TargetTopic: dst, Start: progress.Position{SourceNext: 0, TargetNext: 0}},
			// Not stored: read once its start is.
			{Source: progress.Partition{Topic: src, Partition: 1}, TargetTopic: dst, Start: progress.Position{SourceNext: 0, TargetNext: 0}, StoreFirst: true},
		})
	}

	// Progress cannot be stored (its client is closed): partition 1 is
	// never read.
	closed := newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string))
	closed.Close()
	r := e.replicator()
	r.opts.Progress = progress.NewStore(closed, policy.ProgressTopic(flowName))
	add(r)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	waitFor(t, "partition 0 copied", func() bool { return r.Totals().Records >= 10 })
	time.Sleep(300 * time.Millisecond) // partition 1 would be copied in this time
	if got := r.Totals().Records; got != 10 {
		t.Errorf("%d records copied while the start position could not be stored, want only partition 0's 10", got)
	}
	cancel()
	<-done

	// With progress stored, partition 1 starts at once, even with a long
	// progress interval. (The source client goes on with partition 0
	// where it was.)
	r = e.replicator()
	r.opts.ProgressInterval = time.Hour
	add(r)
	stop := e.run(t, r)
	waitFor(t, "partition 1 copied", func() bool { return endOffsets(t, e.ctx, e.tgtAdmin, dst)[1] == 10 })
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[progress.Partition{Topic: src, Partition: 1}]; pos.SourceNext != 0 || pos.TargetNext != 0 {
		t.Errorf("stored start of partition 1 = %+v, want source 0 target 0", pos)
	}
	stop()
	if ends := endOffsets(t, e.ctx, e.tgtAdmin, dst); ends[0] != 10 || ends[1] != 10 {
		t.Errorf("target ends = %v, want 10 and 10", ends)
	}
}

// TestReplicateStoppedStartStoredFirst: a partition whose stored position
// is Stopped (its last owner stopped cleanly) is not read until the
// position is stored again, not Stopped; while it runs its stored
// position stays not Stopped, and Run's last store marks it Stopped.
func TestReplicateStoppedStartStoredFirst(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 1, nil)
	e.createTopic(t, e.tgtAdmin, dst, 1, nil)
	e.produce(t, src, records(1, 10, "x")...)
	id := progress.Partition{Topic: src, Partition: 0}
	// No StoreFirst: the Stopped start alone holds the reading.
	as := []Assignment{{Source: id, TargetTopic: dst, Start: progress.Position{SourceNext: 0, TargetNext: 0, Stopped: true}}}

	// Progress cannot be stored: nothing is read, nothing written.
	closed := newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string))
	closed.Close()
	r := e.replicator()
	r.opts.Progress = progress.NewStore(closed, policy.ProgressTopic(flowName))
	r.Add(as)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	time.Sleep(300 * time.Millisecond) // the partition would be copied in this time
	if got, end := r.Totals().Records, endOffsets(t, e.ctx, e.tgtAdmin, dst)[0]; got != 0 || end != 0 {
		t.Errorf("%d records copied (target end %d) while the Stopped position could not be stored again, want none", got, end)
	}
	cancel()
	<-done

	r = e.replicator()
	r.opts.ProgressInterval = time.Hour // only the store before reading, and the last one
	r.Add(as)
	began := time.Now()
	stop := e.run(t, r)
	waitFor(t, "partition copied", func() bool { return endOffsets(t, e.ctx, e.tgtAdmin, dst)[0] == 10 })
	// Start-up costs one progress write (of one entry), no more.
	if got := counter(t, e.metrics.ProgressWrites.WithLabelValues(flowName)); got != 1 {
		t.Errorf("progress entries written before the partition was copied = %v, want 1", got)
	}
	t.Logf("a Stopped partition copied %s after Run started (one progress write first)", time.Since(began).Round(time.Millisecond))
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[id]; pos.Stopped || pos.SourceNext != 0 {
		t.Errorf("stored position while running = %+v, want the start, not Stopped", pos)
	}
	stop()
	if loaded, err = e.store.Load(e.ctx); err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[id]; !pos.Stopped || pos.SourceNext != 10 || pos.TargetNext != 10 {
		t.Errorf("stored position after Run = %+v, want 10/10 Stopped", pos)
	}
}

// TestReplicateReleaseStoresStopped: a released partition's position is
// stored Stopped; a partition still replicated is not.
func TestReplicateReleaseStoresStopped(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 2, nil)
	e.createTopic(t, e.tgtAdmin, dst, 2, nil)
	e.produce(t, src, records(2, 10, "x")...)
	r := e.replicator()
	r.Add(assignments(src, dst, 2))
	stop := e.run(t, r)
	defer stop()
	waitFor(t, "both partitions copied", func() bool { return r.Totals().Records >= 20 })
	p0, p1 := progress.Partition{Topic: src, Partition: 0}, progress.Partition{Topic: src, Partition: 1}
	if err := r.Release(e.ctx, []progress.Partition{p0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "partition 1's position stored", func() bool {
		l, err := e.store.Load(e.ctx)
		return err == nil && l.Positions[p1].SourceNext == 10
	})
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[p0]; !pos.Stopped || pos.SourceNext != 10 {
		t.Errorf("released partition's stored position = %+v, want 10, Stopped", pos)
	}
	if pos := loaded.Positions[p1]; pos.Stopped {
		t.Errorf("replicated partition's stored position = %+v, want not Stopped", pos)
	}
}
