// Package demo runs kmirror end to end with no setup: two in-process
// Kafka-protocol clusters (franz-go's kfake), sample traffic, a real flow
// between them through the same runner as `kmirror run`, and a record by
// record verification of the result.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/runner"
	"github.com/kmirror/kmirror/internal/verify"
)

// Options configure a demo run.
type Options struct {
	Records    int    // records to produce in all (half before the flow starts, half while it runs)
	Serve      bool   // keep running after the verification, with light traffic
	HTTPListen string // admin HTTP address; port 0 picks a free one
	Timeout    time.Duration
	Out        io.Writer
	Logger     *slog.Logger
	Version    string
}

// topicSpec is a sample topic on the source cluster.
type topicSpec struct {
	name       string
	partitions int32
	configs    map[string]*string
}

var sampleTopics = []topicSpec{
	{"orders", 6, map[string]*string{"retention.ms": kadm.StringPtr("604800000")}},
	{"payments", 4, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}},
	{"clickstream", 3, nil},
}

// Run runs the demo and returns an error unless every record was verified.
func Run(ctx context.Context, o Options) error {
	out := o.Out
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("primary"))
	if err != nil {
		return fmt.Errorf("starting the embedded source cluster: %w", err)
	}
	defer src.Close()
	dst, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("dr"))
	if err != nil {
		return fmt.Errorf("starting the embedded target cluster: %w", err)
	}
	defer dst.Close()
	fmt.Fprintf(out, "Started two embedded Kafka clusters:\n  primary  %s\n  dr       %s\n\n",
		strings.Join(src.ListenAddrs(), ","), strings.Join(dst.ListenAddrs(), ","))

	srcClient, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer srcClient.Close()
	dstClient, err := kgo.NewClient(kgo.SeedBrokers(dst.ListenAddrs()...))
	if err != nil {
		return err
	}
	defer dstClient.Close()

	adm := kadm.NewClient(srcClient)
	for _, t := range sampleTopics {
		if _, err := adm.CreateTopic(ctx, t.partitions, 1, t.configs, t.name); err != nil {
			return fmt.Errorf("creating sample topic %q: %w", t.name, err)
		}
	}

	gen := newGenerator()
	first := o.Records / 2
	if err := gen.produce(ctx, srcClient, first); err != nil {
		return err
	}
	fmt.Fprintf(out, "Produced %d records into primary (topics %s) before starting the flow.\n",
		first, topicNames())

	cfg, err := config.Parse("demo.yaml", []byte(demoConfig(src.ListenAddrs(), dst.ListenAddrs(), o.HTTPListen)), func(string) (string, bool) { return "", false })
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	r, err := runner.New(cfg, o.Version, o.Logger)
	if err != nil {
		return err
	}
	if err := r.Check(ctx); err != nil {
		r.Close()
		return err
	}
	runCtx, stopFlow := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopFlow(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.Run(runCtx); err != nil {
			o.Logger.Error("flow failed", "err", err)
		}
	}()
	fmt.Fprintf(out, "Started flow primary-to-dr (identity naming). Metrics: http://%s/metrics\n\n", r.HTTPAddr())

	// Live traffic while the flow runs.
	var produced atomic.Int64
	produced.Store(int64(first))
	liveErr := make(chan error, 1)
	go func() {
		liveErr <- gen.produceLive(ctx, srcClient, o.Records-first, &produced)
	}()

	f := r.Flows[0]
	start := time.Now()
	deadline := time.Now().Add(o.Timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	liveDone := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-liveErr:
			if err != nil {
				return err
			}
			liveDone = true
		case <-tick.C:
		}
		st := f.Status()
		copied := sampleReplicated(r)
		fmt.Fprintf(out, "  produced %7d   replicated %7d   lag %6d\n", produced.Load(), copied, st.Totals.Lag)
		if liveDone && copied >= int64(o.Records) && caughtUp(ctx, srcClient, dstClient) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication did not catch up within %s (replicated %d of %d)", o.Timeout, copied, o.Records)
		}
	}
	elapsed := time.Since(start)

	fmt.Fprintf(out, "\nVerifying the dr cluster against primary, record by record...\n")
	pairs := make([]verify.Pair, len(sampleTopics))
	for i, t := range sampleTopics {
		pairs[i] = verify.Pair{Source: t.name, Target: t.name}
	}
	// The copies carry the provenance header the flow adds; every other
	// header is compared.
	rep, err := verify.Compare(ctx, srcClient, dstClient, pairs, replicate.HeaderProvenance)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	for _, t := range rep.Topics {
		status := "OK"
		if !t.OK() {
			status = "MISMATCH"
		}
		fmt.Fprintf(out, "  %-12s source %6d   target %6d   matched %6d   %s\n", t.Source, t.SourceRecords, t.TargetRecords, t.Matched, status)
		for _, m := range t.Mismatches {
			fmt.Fprintf(out, "      %s\n", m)
		}
	}
	total, matched := rep.Records()
	st := f.Status()
	p50, p99 := latencyQuantiles(r)
	hb := waitHeartbeat(ctx, r, 10*time.Second)
	fmt.Fprintf(out, "\nSummary\n")
	fmt.Fprintf(out, "  records produced     %d\n", produced.Load())
	fmt.Fprintf(out, "  records replicated   %d\n", sampleReplicated(r))
	fmt.Fprintf(out, "  records verified     %d of %d (key, value, headers, timestamp, partition, order)\n", matched, total)
	fmt.Fprintf(out, "  lag                  %d records\n", st.Totals.Lag)
	fmt.Fprintf(out, "  latency              p50 <= %s, p99 <= %s (source timestamp to target ack)\n", p50, p99)
	fmt.Fprintf(out, "  time to catch up     %s\n", elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "  heartbeats           %s\n", hb)
	if !rep.OK() || matched != int64(o.Records) {
		return errors.New("verification failed: the dr cluster does not hold exactly the primary's records")
	}
	fmt.Fprintf(out, "\nEvery record verified.\n")

	if !o.Serve {
		return nil
	}
	fmt.Fprintf(out, "\nServing until interrupted (Ctrl-C):\n")
	fmt.Fprintf(out, "  primary bootstrap  %s\n", strings.Join(src.ListenAddrs(), ","))
	fmt.Fprintf(out, "  dr bootstrap       %s\n", strings.Join(dst.ListenAddrs(), ","))
	fmt.Fprintf(out, "  dashboard          http://%s/\n", r.HTTPAddr())
	fmt.Fprintf(out, "  metrics            curl http://%s/metrics\n", r.HTTPAddr())
	fmt.Fprintf(out, "  flow status        curl http://%s/api/flows\n", r.HTTPAddr())
	fmt.Fprintf(out, "  try                kcat -b %s -C -t orders -o -5 -e -f '%%k %%s %%h\\n'\n", dst.ListenAddrs()[0])
	fmt.Fprintf(out, "A record per second keeps flowing into primary.\n")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := gen.produce(ctx, srcClient, 1); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

func topicNames() string {
	names := make([]string, len(sampleTopics))
	for i, t := range sampleTopics {
		names[i] = t.name
	}
	return strings.Join(names, ", ")
}

func demoConfig(src, dst []string, listen string) string {
	return fmt.Sprintf(`clusters:
  primary:
    bootstrap_servers: [%s]
  dr:
    bootstrap_servers: [%s]
flows:
  - name: primary-to-dr
    source: primary
    target: dr
    topics: [".*"]
    topic_naming: identity
    topic_refresh_interval: 1s
http:
  listen: %q
log:
  level: warn
`, quoteAll(src), quoteAll(dst), listen)
}

func quoteAll(addrs []string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

// caughtUp reports whether every sample topic's end offsets match on both
// clusters.
func caughtUp(ctx context.Context, src, dst *kgo.Client) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names := topicNamesList()
	se, err1 := kadm.NewClient(src).ListEndOffsets(ctx, names...)
	de, err2 := kadm.NewClient(dst).ListEndOffsets(ctx, names...)
	if err1 != nil || err2 != nil || se.Error() != nil || de.Error() != nil {
		return false
	}
	equal := true
	se.Each(func(o kadm.ListedOffset) {
		d, ok := de.Lookup(o.Topic, o.Partition)
		if !ok || d.Offset != o.Offset {
			equal = false
		}
	})
	return equal
}

func topicNamesList() []string {
	names := make([]string, len(sampleTopics))
	for i, t := range sampleTopics {
		names[i] = t.name
	}
	return names
}

// sampleReplicated is how many records of the sample topics the flow
// copied (kmirror_replicated_records_total without the heartbeats).
func sampleReplicated(r *runner.Runner) int64 {
	var n float64
	for _, m := range series(r, "kmirror_replicated_records_total") {
		for _, l := range m.GetLabel() {
			if l.GetName() == "topic" && slices.Contains(topicNamesList(), l.GetValue()) {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int64(n)
}

// waitHeartbeat waits up to limit for the flow's heartbeats to arrive on
// the dr cluster, and describes them (the demo has one flow).
func waitHeartbeat(ctx context.Context, r *runner.Runner, limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		var age, latency float64
		seen := false
		for _, m := range series(r, "kmirror_heartbeat_latency_seconds") {
			latency, seen = m.GetGauge().GetValue(), true
		}
		for _, m := range series(r, "kmirror_heartbeat_age_seconds") {
			age = m.GetGauge().GetValue()
		}
		if seen {
			return fmt.Sprintf("written to dr's %q every second once primary answered, newest seen %.1fs ago (took %s)",
				config.DefaultHeartbeatTopic, age, time.Duration(latency*float64(time.Second)).Round(time.Millisecond))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Sprintf("none seen on dr within %s", limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// series returns the series of the metric called name.
func series(r *runner.Runner, name string) []*dto.Metric {
	mfs, err := r.Metrics.Registry.Gather()
	if err != nil {
		return nil
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// latencyQuantiles estimates p50 and p99 from the latency histogram's
// buckets, as their upper bounds.
func latencyQuantiles(r *runner.Runner) (string, string) {
	mfs, err := r.Metrics.Registry.Gather()
	if err != nil {
		return "?", "?"
	}
	for _, mf := range mfs {
		if mf.GetName() != "kmirror_replication_latency_seconds" || len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		return quantile(h, 0.50), quantile(h, 0.99)
	}
	return "?", "?"
}

func quantile(h *dto.Histogram, q float64) string {
	n := float64(h.GetSampleCount())
	if n == 0 {
		return "?"
	}
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= q*n {
			if math.IsInf(b.GetUpperBound(), 1) {
				break
			}
			return (time.Duration(b.GetUpperBound() * float64(time.Second))).Round(time.Millisecond).String()
		}
	}
	return "+Inf"
}

// generator makes sample records of every shape a replicator must keep:
// null and empty keys and values, duplicate and empty headers, old
// timestamps.
type generator struct {
	rng *rand.Rand
	n   int
}

func newGenerator() *generator {
	return &generator{rng: rand.New(rand.NewPCG(1, 2))}
}

func (g *generator) next() *kgo.Record {
	g.n++
	i := g.n
	t := sampleTopics[i%len(sampleTopics)]
	r := &kgo.Record{
		Topic:     t.name,
		Partition: int32(g.rng.IntN(int(t.partitions))),
		Key:       fmt.Appendf(nil, "key-%d", g.rng.IntN(5000)),
		Value:     fmt.Appendf(nil, `{"id":%d,"amount":%d,"currency":"EUR","note":"sample event %d"}`, i, g.rng.IntN(100000), i),
		Timestamp: time.Now(),
		Headers:   []kgo.RecordHeader{{Key: "source", Value: []byte("demo")}},
	}
	switch {
	case i%10 == 0:
		r.Key = nil
	case i%15 == 0:
		r.Value = nil // a tombstone
	case i%20 == 0:
		r.Value = []byte{}
	}
	if i%7 == 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "trace", Value: []byte("a")}, kgo.RecordHeader{Key: "trace", Value: []byte("b")}, kgo.RecordHeader{Key: "empty", Value: []byte{}})
	}
	if i%500 == 0 {
		r.Timestamp = time.Now().AddDate(-1, 0, 0)
	}
	return r
}

func (g *generator) produce(ctx context.Context, cl *kgo.Client, n int) error {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = g.next()
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("producing sample records: %w", err)
	}
	return nil
}

// produceLive produces n records in small batches over about two seconds.
func (g *generator) produceLive(ctx context.Context, cl *kgo.Client, n int, produced *atomic.Int64) error {
	const batches = 20
	for b := 0; b < batches && n > 0; b++ {
		size := n / (batches - b)
		if err := g.produce(ctx, cl, size); err != nil {
			return err
		}
		produced.Add(int64(size))
		n -= size
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
