package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

type topicSpec struct {
	name       string
	partitions int32
	configs    map[string]string
	compacted  bool
}

// sampleRecords makes n records for topic spread over its partitions, with
// every shape a replicator must keep intact: null keys, null values, empty
// values, empty keys, duplicate header keys, empty header values, and
// timestamps from a year ago.
func sampleRecords(rng *rand.Rand, spec topicSpec, n int) []*kgo.Record {
	now := time.Now()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		r := &kgo.Record{
			Topic:     spec.name,
			Partition: int32(i % int(spec.partitions)),
			Key:       fmt.Appendf(nil, "key-%d", rng.IntN(20000)),
			Value:     fmt.Appendf(nil, `{"topic":%q,"seq":%d,"payload":"%s"}`, spec.name, i, strings.Repeat("x", rng.IntN(200))),
			Timestamp: now.Add(-time.Duration(n-i) * time.Millisecond).Truncate(time.Millisecond),
		}
		switch i % 13 {
		case 1:
			if !spec.compacted { // compacted topics refuse records without a key
				r.Key = nil
			}
		case 2:
			r.Value = nil
		case 3:
			r.Value = []byte{}
		case 4:
			r.Key = []byte{}
		}
		switch i % 5 {
		case 1:
			r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte("1")}}
		case 2:
			r.Headers = []kgo.RecordHeader{{Key: "dup", Value: []byte("first")}, {Key: "other", Value: []byte{}}, {Key: "dup", Value: []byte("second")}}
		case 3:
			r.Headers = []kgo.RecordHeader{{Key: "empty", Value: []byte{}}, {Key: "nil", Value: nil}}
		}
		if i%7 == 0 {
			r.Timestamp = now.AddDate(-1, 0, 0).Add(time.Duration(i) * time.Millisecond).Truncate(time.Millisecond)
		}
		recs[i] = r
	}
	return recs
}

// TestReplicatesRecordsExactly copies 120,000 records of every shape over
// three topics and checks the target record by record, the created topics'
// shape and configs, a topic created while running, and the metrics.
func TestReplicatesRecordsExactly(t *testing.T) {
	p := startPair(t)
	specs := []topicSpec{
		{name: "orders", partitions: 6, configs: map[string]string{"retention.ms": "-1", "max.message.bytes": "2097152"}},
		{name: "payments", partitions: 4, configs: map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.3"}, compacted: true},
		{name: "clicks", partitions: 5, configs: map[string]string{"retention.ms": "-1", "compression.type": "lz4"}},
	}
	rng := rand.New(rand.NewPCG(7, 11))
	const perTopic = 40_000
	for _, s := range specs {
		createTopic(t, p.srcCl, s.name, s.partitions, s.configs)
	}
	// Half before kmirror starts, half while it runs.
	var pending [][]*kgo.Record
	for _, s := range specs {
		recs := sampleRecords(rng, s, perTopic)
		produce(t, p.srcCl, recs[:perTopic/2])
		pending = append(pending, recs[perTopic/2:])
	}
	// Also a topic the flow must not copy.
	createTopic(t, p.srcCl, "audit", 1, nil)
	produce(t, p.srcCl, []*kgo.Record{{Topic: "audit", Value: []byte("secret")}})

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders", "payments", "clicks", "late.*", "audit"]
topics_exclude: ["audit"]
topic_naming: prefix
`))
	k := startKmirror(t, cfg, httpAddr)
	for _, recs := range pending {
		produce(t, p.srcCl, recs)
	}

	for _, s := range specs {
		target := "src." + s.name
		waitFor(t, 3*time.Minute, "target topic "+target+" to catch up", func() (bool, string) {
			se, de := endOffsets(t, p.srcCl, s.name), endOffsets(t, p.dstCl, target)
			return sum(de) == sum(se) && len(de) == len(se), fmt.Sprintf("source %v target %v", se, de)
		})
	}

	// Record by record, partition by partition.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pairs := make([]verify.Pair, len(specs))
	for i, s := range specs {
		pairs[i] = verify.Pair{Source: s.name, Target: "src." + s.name}
	}
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, pairs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Topics {
		t.Logf("%s -> %s: source %d, target %d, matched %d", tr.Source, tr.Target, tr.SourceRecords, tr.TargetRecords, tr.Matched)
		if !tr.OK() || tr.SourceRecords != perTopic {
			t.Errorf("%s: target differs from source: %v", tr.Source, tr.Mismatches)
		}
	}
	checkFieldShapes(t, ctx, p, "src.orders")

	// Shape and explicit configs of the created topics.
	adm := kadm.NewClient(p.dstCl)
	details, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		d, ok := details["src."+s.name]
		if !ok {
			t.Fatalf("target topic src.%s missing", s.name)
		}
		if got := int32(len(d.Partitions)); got != s.partitions {
			t.Errorf("src.%s has %d partitions, want %d", s.name, got, s.partitions)
		}
		rcs, err := adm.DescribeTopicConfigs(ctx, "src."+s.name)
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range s.configs {
			c, err := rcs.On("src."+s.name, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			for _, cc := range c.Configs {
				if cc.Key == key {
					got = cc.MaybeValue()
				}
			}
			if got != want {
				t.Errorf("src.%s config %s = %q, want %q", s.name, key, got, want)
			}
		}
	}
	if _, ok := details["src.audit"]; ok {
		t.Errorf("excluded topic audit was replicated")
	}

	// A topic created while the flow runs is replicated within 10 s.
	createTopic(t, p.srcCl, "late.arrival", 3, nil)
	created := time.Now()
	produce(t, p.srcCl, []*kgo.Record{{Topic: "late.arrival", Partition: 2, Key: []byte("k"), Value: []byte("v")}})
	waitFor(t, 10*time.Second-time.Since(created), "new topic late.arrival to reach the target", func() (bool, string) {
		de := endOffsets(t, p.dstCl, "src.late.arrival")
		return de[2] == 1, fmt.Sprintf("target end offsets %v", de)
	})
	t.Logf("new topic replicated %s after its creation", time.Since(created).Round(time.Millisecond))

	// The named metrics are exported with non-zero values.
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{
		`kmirror_replicated_records_total{flow="e2e",topic="orders"}`,
		`kmirror_replicated_bytes_total{flow="e2e",topic="orders"}`,
		`kmirror_replication_latency_seconds_count{flow="e2e"}`,
		`kmirror_partition_lag_records{flow="e2e",partition="0",topic="orders"}`,
	} {
		v, ok := metricValue(body, m)
		if !ok {
			t.Errorf("metric %s missing from /metrics", m)
			continue
		}
		if v == 0 && !strings.HasPrefix(m, "kmirror_partition_lag") {
			t.Errorf("metric %s is 0", m)
		}
	}
	if v, _ := metricValue(body, `kmirror_replicated_records_total{flow="e2e",topic="orders"}`); v != perTopic {
		t.Errorf("kmirror_replicated_records_total for orders = %v, want %d", v, perTopic)
	}
	code, _, err := k.get("/readyz")
	if err != nil || code != 200 {
		t.Errorf("/readyz = %d, %v; want 200", code, err)
	}
	k.stop()
}

// checkFieldShapes makes sure the special shapes really reached the target,
// so the record comparison cannot pass on data that lacks them.
func checkFieldShapes(t *testing.T, ctx context.Context, p *pair, topic string) {
	t.Helper()
	recs, err := verify.ReadAll(ctx, p.dstCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	var nullKey, nullValue, emptyValue, dupHeaders, emptyHeader, oldTS int
	yearAgo := time.Now().AddDate(0, -11, 0)
	for _, rs := range recs {
		for _, r := range rs {
			if r.Key == nil {
				nullKey++
			}
			if r.Value == nil {
				nullValue++
			}
			if r.Value != nil && len(r.Value) == 0 {
				emptyValue++
			}
			seen := map[string]bool{}
			for _, h := range r.Headers {
				if seen[h.Key] {
					dupHeaders++
				}
				seen[h.Key] = true
				if len(h.Value) == 0 {
					emptyHeader++
				}
			}
			if r.Timestamp.Before(yearAgo) {
				oldTS++
			}
		}
	}
	t.Logf("%s: null keys %d, null values %d, empty values %d, duplicate headers %d, empty header values %d, year-old timestamps %d",
		topic, nullKey, nullValue, emptyValue, dupHeaders, emptyHeader, oldTS)
	for name, n := range map[string]int{"null keys": nullKey, "null values": nullValue, "empty values": emptyValue,
		"duplicate headers": dupHeaders, "empty header values": emptyHeader, "year-old timestamps": oldTS} {
		if n == 0 {
			t.Errorf("%s: no records with %s on the target", topic, name)
		}
	}
}

// metricValue finds the sample named exactly series in a Prometheus text
// exposition.
func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			if _, err := fmt.Sscan(strings.TrimPrefix(line, series+" "), &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}
