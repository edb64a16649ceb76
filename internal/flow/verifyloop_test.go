package flow

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/internal/verify/flowverify"
)

// TestAudit replicates a topic on kfake with the flow itself, then audits
// it as continuous verification does: an intact range has no difference;
// a record written straight to the target, and copies deleted from it
// (DeleteRecords), are found in the next audit's range and counted.
func TestAudit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srcC, dstC := kfaketest.Cluster(t), kfaketest.Cluster(t)
	src := kfaketest.Client(t, srcC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	dst := kfaketest.Client(t, dstC, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := kadm.NewClient(src).CreateTopic(ctx, 2, -1, nil, "orders")
	must(err)
	cfg, err := config.Parse("kmirror.yaml", []byte(fmt.Sprintf(`clusters:
  src: {bootstrap_servers: [%q]}
  dst: {bootstrap_servers: [%q]}
flows:
  - source: src
    target: dst
    topics: [orders]
    topic_refresh_interval: 200ms
    progress_interval: 100ms
    verify_interval: 1h
    heartbeat_interval: off
`, srcC.ListenAddrs()[0], dstC.ListenAddrs()[0])), func(string) (string, bool) { return "", false })
	must(err)
	fc := cfg.Flows[0]
	if fc.VerifyInterval != time.Hour {
		t.Fatalf("verify_interval = %v, want 1h", fc.VerifyInterval)
	}
	m := metrics.New()
	f := New(cfg, fc, m, slog.New(slog.DiscardHandler))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()
	defer func() { stop(); <-done }()

	next := 0
	produce := func(cl *kgo.Client, topic string, partition int32, n int) {
		t.Helper()
		for range n {
			must(cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: partition, Key: []byte(fmt.Sprint(next)), Value: []byte(fmt.Sprint("v", next))}).FirstErr())
			next++
		}
	}
	// replicated waits until the stored positions reach the source ends.
	store := progress.NewStore(dst, policy.ProgressTopic(fc.Name))
	replicated := func() {
		t.Helper()
		for {
			ends, err := kadm.NewClient(src).ListEndOffsets(ctx, "orders")
			must(err)
			loaded, err := store.Load(ctx)
			if err == nil {
				ok := true
				ends.Each(func(o kadm.ListedOffset) {
					pos, has := loaded.Positions[progress.Partition{Topic: "orders", Partition: o.Partition}]
					ok = ok && has && pos.SourceNext >= o.Offset
				})
				if ok {
					return
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("not replicated before the deadline: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r := &run{Flow: f}
	a := r.newAuditor(flowverify.Env{Flow: fc, Clusters: cfg.Clusters, Graph: cfg.Topology(), Source: src, Target: dst})
	counter := func(kind string) float64 { return value(t, m.VerifyMismatches.WithLabelValues(fc.Name, kind)) }
	for _, kind := range metrics.VerifyKinds() {
		if got := counter(kind); got != 0 {
			t.Fatalf("mismatches{kind=%q} = %v before any audit, want 0", kind, got)
		}
	}
	audit := func(wantRecords int64) *flowverify.FlowReport {
		t.Helper()
		start := time.Now()
		rep, err := a.audit(ctx)
		must(err)
		if rep.Totals.SourceRecords != wantRecords {
			t.Fatalf("audit compared %d records, want %d (totals %+v)", rep.Totals.SourceRecords, wantRecords, rep.Totals)
		}
		t.Logf("audit: %d records compared in %v, totals %+v", rep.Totals.SourceRecords, time.Since(start), rep.Totals)
		return rep
	}

	// An intact copy.
	produce(src, "orders", 0, 30)
	produce(src, "orders", 1, 20)
	replicated()
	if rep := audit(50); !rep.Equal {
		t.Fatalf("intact copy differs: %v", rep.Differences)
	}
	if got := value(t, m.VerifyRecords.WithLabelValues(fc.Name)); got != 50 {
		t.Errorf("records compared = %v, want 50", got)
	}
	// Nothing new: the next audit compares nothing.
	audit(0)
	// More than the window: only the newest records are compared.
	a.maxRecs = 3
	produce(src, "orders", 0, 10)
	replicated()
	if rep := audit(3); !rep.Equal || details(rep, "orders", 0).SourceStart != 37 {
		t.Fatalf("window of 3 over source offsets 30-39: %+v", details(rep, "orders", 0))
	}
	a.maxRecs = verifyMaxRecords

	// A record written straight to the target between two copies.
	produce(dst, "src.orders", 0, 1)
	produce(src, "orders", 0, 5)
	replicated()
	rep := audit(5)
	if rep.Totals.Extra != 1 || rep.Totals.Duplicated != 0 || rep.Totals.Matched != 5 || counter("extra") != 1 {
		t.Fatalf("extra record: totals %+v, differences %v, extra counter %v", rep.Totals, rep.Differences, counter("extra"))
	}

	// Copies deleted from the target (DeleteRecords up to its end).
	produce(src, "orders", 1, 4)
	replicated()
	ends, err := kadm.NewClient(dst).ListEndOffsets(ctx, "src.orders")
	must(err)
	end, _ := ends.Lookup("src.orders", 1)
	_, err = kadm.NewClient(dst).DeleteRecords(ctx, kadm.Offsets{"src.orders": {1: {Topic: "src.orders", Partition: 1, At: end.Offset}}})
	must(err)
	var logged strings.Builder
	a.logger = slog.New(slog.NewTextHandler(&logged, nil))
	rep = audit(4)
	if lines := strings.Count(logged.String(), "level=ERROR"); lines != 1 || !strings.Contains(logged.String(), "topic=orders partition=1 target_topic=src.orders kind=missing source_offset=20") {
		t.Errorf("want one ERROR line naming orders/1 source offset 20, got %d:\n%s", lines, logged.String())
	}
	if rep.Totals.Missing != 4 || counter("missing") != 4 || counter("extra") != 1 || counter("altered") != 0 {
		t.Fatalf("deleted copies: totals %+v, differences %v, missing counter %v", rep.Totals, rep.Differences, counter("missing"))
	}
	if d := rep.Differences[0]; d.Topic != "orders" || d.Partition != 1 || d.SourceOffset != 20 {
		t.Errorf("first difference %+v, want orders/1 source offset 20", d)
	}
	if got := value(t, m.VerifyRuns.WithLabelValues(fc.Name)); got != 5 {
		t.Errorf("runs = %v, want 5", got)
	}
	if got := value(t, m.VerifyLastSuccess.WithLabelValues(fc.Name)); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success %v, not recent", got)
	}
}

// value reads a counter's or a gauge's value.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// details returns the result of one partition of rep.
func details(rep *flowverify.FlowReport, topic string, partition int32) verify.PartitionResult {
	for _, t := range rep.Topics {
		for _, d := range t.Details {
			if t.Topic == topic && d.Partition == partition {
				return d
			}
		}
	}
	return verify.PartitionResult{Partition: -1}
}
