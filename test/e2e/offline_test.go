package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/test/kafkatest"
)

// TestOfflineSourcePartition stops the source broker that leads every
// partition of topic a: topic b, led by the other broker, must keep
// replicating, also across a kmirror restart while a is offline, and a must
// be reported stuck (in /readyz, which stays 200, and in
// kmirror_topic_stuck). When the broker returns, a catches up exactly.
func TestOfflineSourcePartition(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{Name: "source", Brokers: 2})
	}()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target"})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}

	const partitions = 2
	// a lives on broker 2 only, b on broker 1 (also the controller).
	createTopicOn(t, p, "a", partitions, 2)
	createTopicOn(t, p, "b", partitions, 1)
	counts := map[string]int{}
	add := func(topic string, n int) {
		produce(t, p.srcCl, batch(topic, partitions, topic, counts[topic], n))
		counts[topic] += n
	}
	add("a", 1000)
	add("b", 1000)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: ["%s"]
  dst:
    bootstrap_servers: [%q]
flows:
  - name: e2e
    source: src
    target: dst
    topics: ["a", "b"]
    topic_refresh_interval: 1s
    heartbeat_interval: off
http:
  listen: %q
`, strings.Join(src.Bootstraps(), `", "`), dst.Bootstrap(), httpAddr))
	k := startKmirror(t, cfg, httpAddr)
	waitTargetEnd(t, p, "src.a", int64(counts["a"]))
	waitTargetEnd(t, p, "src.b", int64(counts["b"]))

	src.StopBroker(2)
	stoppedAt := time.Now()
	add("b", 500)
	took := waitFor(t, 3*time.Minute, "b replicating with a offline", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src.b"))
		return n == int64(counts["b"]), fmt.Sprintf("src.b holds %d", n)
	})
	t.Logf("broker 2 stopped: 500 new records of b copied in %v", took.Round(time.Millisecond))
	checkStuck(t, k, "a")

	// A restart while a is offline.
	k.stop()
	k = startKmirror(t, cfg, httpAddr)
	add("b", 500)
	took = waitFor(t, 3*time.Minute, "b replicating after a restart with a offline", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src.b"))
		return n == int64(counts["b"]), fmt.Sprintf("src.b holds %d", n)
	})
	t.Logf("kmirror restarted with broker 2 stopped: 500 new records of b copied in %v", took.Round(time.Millisecond))
	checkStuck(t, k, "a")

	src.StartBroker(2)
	t.Logf("broker 2 was stopped for %v", time.Since(stoppedAt).Round(time.Second))
	add("a", 300)
	took = waitFor(t, 3*time.Minute, "a catching up", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src.a"))
		return n == int64(counts["a"]), fmt.Sprintf("src.a holds %d", n)
	})
	t.Logf("broker 2 back: a caught up to %d records in %v", counts["a"], took.Round(time.Millisecond))
	checkTail(t, p, "a", "src.a", 0)
	checkTail(t, p, "b", "src.b", 0)
	waitFor(t, time.Minute, "a no longer stuck", func() (bool, string) {
		code, body, err := k.get("/readyz")
		_, metrics, _ := k.get("/metrics")
		return err == nil && code == 200 && !strings.Contains(body, "stuck") && !strings.Contains(metrics, `kmirror_topic_stuck{flow="e2e",topic="a"}`),
			fmt.Sprintf("readyz %d %q", code, body)
	})
	t.Logf("target: src.a %d records, src.b %d records, equal to the source record by record", counts["a"], counts["b"])
}

// createTopicOn creates topic on the source with every partition's only
// replica on broker.
func createTopicOn(t *testing.T, p *pair, topic string, partitions int32, broker int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	for i := range partitions {
		ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		ra.Partition, ra.Replicas = i, []int32{broker}
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, p.srcCl)
	if err == nil && resp.Topics[0].ErrorCode != 0 {
		err = fmt.Errorf("error code %d: %v", resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage)
	}
	if err != nil {
		t.Fatalf("creating %s on broker %d: %v", topic, broker, err)
	}
	waitFor(t, 30*time.Second, topic+" ready", func() (bool, string) {
		ends := endOffsets(t, p.srcCl, topic)
		return len(ends) == int(partitions), fmt.Sprintf("%v", ends)
	})
}

// checkStuck waits until the process reports topic stuck: /readyz stays
// 200 and names it, and kmirror_topic_stuck is 1.
func checkStuck(t *testing.T, k *proc, topic string) {
	t.Helper()
	series := fmt.Sprintf(`kmirror_topic_stuck{flow="e2e",topic=%q}`, topic)
	var body string
	waitFor(t, time.Minute, topic+" reported stuck", func() (bool, string) {
		var code int
		var err error
		code, body, err = k.get("/readyz")
		if err != nil {
			return false, err.Error()
		}
		_, metrics, _ := k.get("/metrics")
		v, _ := metricValue(metrics, series)
		return code == 200 && strings.Contains(body, "stuck: flow e2e: topic "+topic) && v == 1,
			fmt.Sprintf("readyz %d %q, %s %v", code, body, series, v)
	})
	t.Logf("/readyz 200: %q; %s 1", strings.TrimSpace(body), series)
}
