package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/verify"
)

// explicitConfigs returns the configs set explicitly on topic, or nil if
// they cannot be described (the topic does not exist yet).
func explicitConfigs(t *testing.T, cl *kgo.Client, topic string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return nil
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			out[c.Key] = c.MaybeValue()
		}
	}
	return out
}

func alterConfigs(t *testing.T, cl *kgo.Client, topic string, ops ...kadm.AlterConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, ops, topic)
	if err == nil {
		_, err = rs.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("altering %q configs: %v", topic, err)
	}
}

func partitionRecords(topic string, partitions []int32, n int, tag string) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{
			Topic:     topic,
			Partition: partitions[i%len(partitions)],
			Key:       fmt.Appendf(nil, "%s-%d", tag, i),
			Value:     fmt.Appendf(nil, `{"tag":%q,"seq":%d}`, tag, i),
			Headers:   []kgo.RecordHeader{{Key: "tag", Value: []byte(tag)}},
		}
	}
	return recs
}

// TestTopicConfigSync checks, with the default topic_refresh_interval
// (5 s), that config changes on a source topic (a changed key, a deleted
// key) reach the target within 10 s, that topic_config_overrides win over
// the source and that excluded keys never reach the target; then that
// partitions added to the source are added to the target and their
// records copied exactly.
func TestTopicConfigSync(t *testing.T) {
	p := startPair(t)
	createTopic(t, p.srcCl, "orders", 3, map[string]string{
		"retention.ms":           "3600000",
		"cleanup.policy":         "delete",
		"max.compaction.lag.ms":  "86400000",
		"max.message.bytes":      "1000000",    // overridden on the target
		"message.timestamp.type": "CreateTime", // excluded by default
	})
	produce(t, p.srcCl, partitionRecords("orders", []int32{0, 1, 2}, 300, "before"))

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_config_overrides: {max.message.bytes: "2000000"}
`)), httpAddr)

	want := map[string]string{
		"retention.ms":          "3600000",
		"cleanup.policy":        "delete",
		"max.compaction.lag.ms": "86400000",
		"max.message.bytes":     "2000000",
	}
	waitFor(t, 90*time.Second, "src.orders created with the source's configs and the override", func() (bool, string) {
		got := explicitConfigs(t, p.dstCl, "src.orders")
		return maps.Equal(got, want), fmt.Sprintf("target configs %v", got)
	})

	// Change a key, delete a key, set an excluded key, and change the
	// overridden key on the source.
	alterConfigs(t, p.srcCl, "orders",
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")},
		kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "max.compaction.lag.ms"},
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "unclean.leader.election.enable", Value: kadm.StringPtr("true")},
		kadm.AlterConfig{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("1500000")},
	)
	changed := time.Now()
	want = map[string]string{
		"retention.ms":      "7200000",
		"cleanup.policy":    "delete",
		"max.message.bytes": "2000000",
	}
	waitFor(t, 10*time.Second, "the config changes on src.orders", func() (bool, string) {
		got := explicitConfigs(t, p.dstCl, "src.orders")
		return maps.Equal(got, want), fmt.Sprintf("target configs %v", got)
	})
	took := time.Since(changed)
	if took > 10*time.Second {
		t.Errorf("config changes reached the target after %s, want within 10s", took)
	}
	t.Logf("config changes (retention.ms changed, max.compaction.lag.ms deleted) on the target %s after the change on the source", took.Round(time.Millisecond))

	// Grow the source from 3 to 5 partitions and write to every one.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := kadm.NewClient(p.srcCl).UpdatePartitions(ctx, 5, "orders")
	if err == nil {
		err = rs.Error()
	}
	if err != nil {
		t.Fatalf("growing orders to 5 partitions: %v", err)
	}
	grown := time.Now()
	// The test's producer learns of the new partitions first.
	waitFor(t, 10*time.Second, "the producer to see 5 partitions of orders", func() (bool, string) {
		p.srcCl.ForceMetadataRefresh()
		leader, _, err := p.srcCl.PartitionLeader("orders", 4)
		return leader >= 0, fmt.Sprintf("leader of orders-4: %d, %v", leader, err)
	})
	produce(t, p.srcCl, partitionRecords("orders", []int32{3, 4, 0, 1, 2}, 250, "after"))
	waitFor(t, 60*time.Second, "src.orders to grow to 5 partitions and catch up", func() (bool, string) {
		se, de := endOffsets(t, p.srcCl, "orders"), endOffsets(t, p.dstCl, "src.orders")
		return len(se) == 5 && len(de) == 5 && maps.Equal(se, de), fmt.Sprintf("source %v target %v", se, de)
	})
	t.Logf("new partitions grown on the target and their records copied %s after the source grew", time.Since(grown).Round(time.Millisecond))

	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, []verify.Pair{{Source: "orders", Target: "src.orders"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Topics[0]
	t.Logf("orders -> src.orders: source %d, target %d, matched %d", tr.SourceRecords, tr.TargetRecords, tr.Matched)
	if !tr.OK() || tr.SourceRecords != 550 || tr.Matched != 550 {
		t.Errorf("target differs from source: %v", tr.Mismatches)
	}
	ends := endOffsets(t, p.dstCl, "src.orders")
	if ends[3] != 50 || ends[4] != 50 {
		t.Errorf("target end offsets %v, want 50 records in each new partition", ends)
	}

	// After all these passes: the excluded keys never reached the target,
	// the override stayed, and the config was changed exactly once.
	if got := explicitConfigs(t, p.dstCl, "src.orders"); !maps.Equal(got, want) {
		t.Errorf("target configs at the end = %v, want %v", got, want)
	}
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(body, `kmirror_topic_config_updates_total{flow="e2e"}`); v != 1 {
		t.Errorf("kmirror_topic_config_updates_total = %v, want 1", v)
	}
	if v, ok := metricValue(body, `kmirror_errors_total{flow="e2e",kind="config_sync"}`); ok && v != 0 {
		t.Errorf("kmirror_errors_total{kind=config_sync} = %v, want 0", v)
	}
	if n := strings.Count(k.output(), "updated target topic configs"); n != 1 {
		t.Errorf("%d config update log lines, want 1", n)
	}
	k.stop()
}

// TestDeleteTopics deletes a source topic replicated by two flows of one
// kmirror: the flow with delete_topics: true deletes its target topic, the
// flow with the default keeps it.
func TestDeleteTopics(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	createTopic(t, p.srcCl, "doomed", 2, nil)
	createTopic(t, p.srcCl, "stays", 1, nil)
	produce(t, p.srcCl, partitionRecords("doomed", []int32{0, 1}, 20, "d"))

	httpAddr := freeAddr(t)
	cfg := fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
flows:
  - name: deleting
    source: src
    target: dst
    topic_prefix: del.
    delete_topics: true
  - name: keeping
    source: src
    target: dst
    topic_prefix: keep.
http:
  listen: %q
`, p.src.Bootstrap(), p.dst.Bootstrap(), httpAddr)
	k := startKmirror(t, writeConfig(t, cfg), httpAddr)
	for _, target := range []string{"del.doomed", "keep.doomed"} {
		waitFor(t, 90*time.Second, target+" to catch up", func() (bool, string) {
			de := endOffsets(t, p.dstCl, target)
			return sum(de) == 20, fmt.Sprintf("target end offsets %v", de)
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(p.srcCl)
	if rs, err := adm.DeleteTopics(ctx, "doomed"); err != nil || rs.Error() != nil {
		t.Fatalf("deleting doomed: %v %v", err, rs.Error())
	}
	deleted := time.Now()
	dstAdm := kadm.NewClient(p.dstCl)
	exists := func(topic string) (bool, string) {
		tds, err := dstAdm.ListTopics(ctx)
		if err != nil {
			return false, err.Error()
		}
		_, ok := tds[topic]
		return ok, fmt.Sprintf("target topics %v", tds.Names())
	}
	waitFor(t, 30*time.Second, "del.doomed to be deleted", func() (bool, string) {
		ok, state := exists("del.doomed")
		return !ok, state
	})
	t.Logf("target topic deleted %s after its source topic (default topic_refresh_interval 5s, two passes)", time.Since(deleted).Round(time.Millisecond))

	// The keeping flow passes as often: through one more of its passes
	// (the default interval, 5 s, and a margin), its copy and the copies
	// of the other source topic stay.
	window := time.Now().Add(6 * time.Second)
	for time.Now().Before(window) {
		for _, topic := range []string{"keep.doomed", "del.stays", "keep.stays"} {
			if ok, state := exists(topic); !ok {
				t.Fatalf("%s was deleted; %s", topic, state)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(body, `kmirror_topics_deleted_total{flow="deleting"}`); v != 1 {
		t.Errorf("kmirror_topics_deleted_total{flow=deleting} = %v, want 1", v)
	}
	if v, _ := metricValue(body, `kmirror_topics_deleted_total{flow="keeping"}`); v != 0 {
		t.Errorf("kmirror_topics_deleted_total{flow=keeping} = %v, want 0", v)
	}
	if n := strings.Count(k.output(), "deleted target topic because its source topic was deleted"); n != 1 {
		t.Errorf("%d deletion log lines, want 1", n)
	}
	k.stop()
}
