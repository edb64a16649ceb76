package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/test/kafkatest"
)

// TestSourceTruncated truncates a source partition below kmirror's copied
// position by an unclean leader election, while kmirror runs: broker 3
// (follower) is stopped, records are written to broker 2 (leader) alone
// and copied, broker 2 is stopped, broker 3 comes back and is elected
// uncleanly, new records are written to it at the offsets the lost ones
// had, and broker 2 comes back and truncates. The target must hold every
// record copied before the truncation followed by every record written
// after it, record by record; the truncation is one log line and one count
// in kmirror_source_truncations_total, not one error per record; and a
// group's offset among the new records translates to the new records'
// copies. It does so once while kmirror runs, and once while it is stopped
// (SIGTERM before the election, started again after it): the stored
// position's leader epoch tells the restarted consumer its position is
// past what the source still holds in that epoch.
func TestSourceTruncated(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	for _, whileStopped := range []bool{false, true} {
		name := "while running"
		if whileStopped {
			name = "while stopped"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each case has clusters of its own
			testSourceTruncated(t, whileStopped)
		})
	}
}

func testSourceTruncated(t *testing.T, whileStopped bool) {
	p := startPairSourceBrokers(t, 3)
	const topic, target = "t", "src.t"
	createUncleanTopic(t, p.srcCl, topic, []int32{2, 3})

	const before, lost, after = 300, 200, 400
	produce(t, p.srcCl, batch(topic, 1, "old", 0, before))

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
    topics: [%q]
    topic_refresh_interval: 1s
    progress_interval: 500ms
    heartbeat_interval: off
http:
  listen: %q
`, strings.Join(p.src.Bootstraps(), `", "`), p.dst.Bootstrap(), topic, httpAddr))
	k := startKmirror(t, cfg, httpAddr)
	waitTargetEnd(t, p, target, before)

	// Broker 3 stops: the records written now are on broker 2 only.
	p.src.StopBroker(3)
	waitISR(t, p.srcCl, topic, []int32{2})
	produce(t, p.srcCl, batch(topic, 1, "lost", 0, lost))
	waitTargetEnd(t, p, target, before+lost)
	if whileStopped {
		k.stop() // SIGTERM: the final position and its leader epoch are stored
	}

	// Broker 2 stops; broker 3, without the last records, becomes leader.
	p.src.StopBroker(2)
	p.src.StartBroker(3)
	electUnclean(t, p.srcCl, topic, 3)
	// A client of its own: the one that wrote to broker 2 has producer
	// state broker 3 never saw.
	w := newClient(t, p.src.Bootstrap())
	produce(t, w, batch(topic, 1, "new", 0, after))
	// Broker 2 comes back and truncates its log to broker 3's.
	p.src.StartBroker(2)
	if whileStopped {
		k = startKmirror(t, cfg, httpAddr)
	}

	// The source now holds old-0.. followed by new-0..: the lost records
	// are gone and their offsets reused.
	wantSrc := append(values("old", before), values("new", after)...)
	checkValues(t, "source "+topic, readTo(t, p.src.Bootstrap(), topic, map[int32]int64{0: before + after})[0], 0, wantSrc)

	// The target holds what was copied before the truncation, then the
	// records written after it.
	waitTargetEnd(t, p, target, before+lost+after)
	want := append(append(values("old", before), values("lost", lost)...), values("new", after)...)
	checkValues(t, "target "+target, readTo(t, p.dst.Bootstrap(), target, map[int32]int64{0: before + lost + after})[0], 0, want)

	series := fmt.Sprintf(`kmirror_source_truncations_total{flow="e2e",topic=%q}`, topic)
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(body, series); !ok || v != 1 {
		t.Errorf("%s = %v (found %t), want 1", series, v, ok)
	}
	var truncLines, errLines []string
	for _, l := range strings.Split(k.output(), "\n") {
		if strings.Contains(l, "source partition truncated") {
			truncLines = append(truncLines, l)
		}
		if strings.Contains(l, "level=ERROR") {
			errLines = append(errLines, l)
		}
	}
	if len(truncLines) != 1 || !strings.Contains(truncLines[0], fmt.Sprintf("from=%d position=%d", before, before+lost)) {
		t.Errorf("want one truncation line with from=%d position=%d, got %d:\n%s", before, before+lost, len(truncLines), strings.Join(truncLines, "\n"))
	}
	// The source partition was leaderless for a while, so fetch errors
	// are logged too (at most one every 10 s); one error per record
	// would be hundreds.
	if len(errLines) > 20 {
		t.Errorf("%d ERROR lines for %d records written after the truncation:\n%s", len(errLines), after, strings.Join(errLines, "\n"))
	}

	// A group that read half of the new records resumes on the target at
	// the copy of the first one it did not read.
	commitOffset(t, p.srcCl, "g", topic, 0, before+after/2)
	wantTarget := int64(before + lost + after/2)
	waitFor(t, 2*time.Minute, "offset translation of group g", func() (bool, string) {
		out, errOut, err := runKmirror(t, time.Minute, "offsets", "translate", "--config", cfg, "--flow", "e2e", "--group", "g", "--json")
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, errOut)
		}
		var rows []struct {
			TargetOffset int64 `json:"target_offset"`
			Exact        bool  `json:"exact"`
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			return false, out
		}
		return len(rows) == 1 && rows[0].TargetOffset == wantTarget && rows[0].Exact, out
	})
	t.Logf("source truncated from offset %d (position %d): target holds %d old + %d lost + %d new records in order; %s 1; %d ERROR lines in all; group at source %d translates to target %d",
		before, before+lost, before, lost, after, series, len(errLines), before+after/2, wantTarget)
}

// TestTargetDataLoss makes a target partition lose records kmirror had
// copied, by an unclean leader election on the target: broker 3 (follower)
// is stopped, records are copied to broker 2 (leader) alone, broker 2 is
// stopped and broker 3, without them, is elected. The records written to
// the source next are copied after what broker 3 holds. The loss is one
// count in kmirror_target_data_loss_total and one ERROR line, and a log
// line names the source offsets whose copies are gone.
func TestTargetDataLoss(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	kafkatest.RequireLibs(t)
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{Name: "source"})
	}()
	// The group that holds the flow lives on every broker, so that it
	// survives the brokers stopped below.
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target", Brokers: 3,
		ExtraProps: map[string]string{"offsets.topic.replication.factor": "3"}})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}
	const topic, target = "t", "src.t"
	createTopic(t, p.srcCl, topic, 1, nil)
	createUncleanTopic(t, p.dstCl, target, []int32{2, 3})

	const before, lost, after = 300, 200, 400
	produce(t, p.srcCl, batch(topic, 1, "old", 0, before))
	httpAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: ["%s"]
flows:
  - name: e2e
    source: src
    target: dst
    topics: [%q]
    topic_refresh_interval: 1s
    replication_factor: 3
    heartbeat_interval: off
http:
  listen: %q
`, p.src.Bootstrap(), strings.Join(dst.Bootstraps(), `", "`), topic, httpAddr))
	k := startKmirror(t, cfg, httpAddr)
	waitTargetEnd(t, p, target, before)

	// Broker 3 stops: the records copied now are on broker 2 only.
	dst.StopBroker(3)
	waitISR(t, p.dstCl, target, []int32{2})
	produce(t, p.srcCl, batch(topic, 1, "lost", 0, lost))
	waitTargetEnd(t, p, target, before+lost)

	// Broker 2 stops; broker 3 becomes leader without the last copies.
	dst.StopBroker(2)
	dst.StartBroker(3)
	electUnclean(t, p.dstCl, target, 3)
	produce(t, p.srcCl, batch(topic, 1, "new", 0, after))
	waitTargetEnd(t, p, target, before+after)
	dst.StartBroker(2)

	want := append(values("old", before), values("new", after)...)
	checkValues(t, "target "+target, readTo(t, dst.Bootstrap(), target, map[int32]int64{0: before + after})[0], 0, want)

	// Every record's acknowledgement was handled, so both reports of the
	// loss (the producer's, the offsets going back) were made.
	copied := fmt.Sprintf(`kmirror_replicated_records_total{flow="e2e",topic=%q}`, topic)
	series := fmt.Sprintf(`kmirror_target_data_loss_total{flow="e2e",topic=%q}`, topic)
	var body string
	waitFor(t, time.Minute, copied+" "+strconv.Itoa(before+lost+after), func() (bool, string) {
		var err error
		if _, body, err = k.get("/metrics"); err != nil {
			return false, err.Error()
		}
		n, _ := metricValue(body, copied)
		return n >= before+lost+after, fmt.Sprint(n)
	})
	if v, ok := metricValue(body, series); !ok || v != 1 {
		t.Errorf("%s = %v (found %t), want 1", series, v, ok)
	}
	var lossErrs, rangeLines []string
	for _, l := range strings.Split(k.output(), "\n") {
		if !strings.Contains(l, "target partition lost records") {
			continue
		}
		if strings.Contains(l, "level=ERROR") {
			lossErrs = append(lossErrs, l)
		}
		if strings.Contains(l, fmt.Sprintf("from=%d to=%d", before, before+lost)) {
			rangeLines = append(rangeLines, l)
		}
	}
	if len(lossErrs) != 1 {
		t.Errorf("%d ERROR lines on the target's loss, want 1:\n%s", len(lossErrs), strings.Join(lossErrs, "\n"))
	}
	if len(rangeLines) != 1 {
		t.Errorf("want one line naming the lost source range from=%d to=%d, got %d", before, before+lost, len(rangeLines))
	}
	t.Logf("target lost the copies of source offsets %d..%d: target holds %d old + %d new records in order; %s 1; log:\n%s",
		before, before+lost-1, before, after, series, strings.Join(append(lossErrs, rangeLines...), "\n"))
}

// startPairSourceBrokers starts a source of n brokers (node 1 also the
// controller) and a one-node target.
func startPairSourceBrokers(t *testing.T, n int) *pair {
	t.Helper()
	kafkatest.RequireLibs(t)
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{Name: "source", Brokers: n})
	}()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target"})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	return &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}
}

// createUncleanTopic creates a one-partition topic on the given replicas
// (the first one leads) that allows unclean leader election and accepts
// writes with one replica in sync.
func createUncleanTopic(t *testing.T, cl *kgo.Client, topic string, replicas []int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
	ra.Partition, ra.Replicas = 0, replicas
	rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	for k, v := range map[string]string{"unclean.leader.election.enable": "true", "min.insync.replicas": "1"} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, cl)
	if err == nil && resp.Topics[0].ErrorCode != 0 {
		err = fmt.Errorf("error code %d: %v", resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage)
	}
	if err != nil {
		t.Fatalf("creating %s on brokers %v: %v", topic, replicas, err)
	}
	waitISR(t, cl, topic, replicas)
}

// partitionState returns the leader and ISR of partition 0 of topic.
func partitionState(cl *kgo.Client, topic string) (int32, []int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return -1, nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return -1, nil, fmt.Errorf("topic %s not listed: %v", topic, td.Err)
	}
	pd, ok := td.Partitions[0]
	if !ok {
		return -1, nil, fmt.Errorf("topic %s has no partition 0", topic)
	}
	return pd.Leader, pd.ISR, nil
}

// waitISR waits until partition 0 of topic has exactly the given ISR,
// led by its first broker.
func waitISR(t *testing.T, cl *kgo.Client, topic string, isr []int32) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%s ISR %v", topic, isr), func() (bool, string) {
		leader, got, err := partitionState(cl, topic)
		if err != nil {
			return false, err.Error()
		}
		state := fmt.Sprintf("leader %d ISR %v", leader, got)
		if leader != isr[0] || len(got) != len(isr) {
			return false, state
		}
		for _, b := range isr {
			if !containsInt32(got, b) {
				return false, state
			}
		}
		return true, state
	})
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// electUnclean elects broker leader of partition 0 of topic, which is not
// in sync: an unclean leader election.
func electUnclean(t *testing.T, cl *kgo.Client, topic string, leader int32) {
	t.Helper()
	adm := kadm.NewClient(cl)
	waitFor(t, 2*time.Minute, fmt.Sprintf("broker %d elected leader of %s uncleanly", leader, topic), func() (bool, string) {
		cur, isr, err := partitionState(cl, topic)
		if err == nil && cur == leader {
			return true, ""
		}
		state := fmt.Sprintf("leader %d ISR %v (%v)", cur, isr, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := adm.ElectLeaders(ctx, kadm.ElectLiveReplica, kadm.TopicsSet{topic: {0: {}}})
		if err != nil {
			return false, state + "; electing: " + err.Error()
		}
		for _, ps := range res {
			for _, r := range ps {
				if r.Err != nil {
					state += fmt.Sprintf("; electing: %v %s", r.Err, r.ErrMessage)
				}
			}
		}
		return false, state
	})
}

// values returns "<tag>-0" .. "<tag>-(n-1)".
func values(tag string, n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = fmt.Sprintf("%s-%d", tag, i)
	}
	return out
}

// checkValues checks that recs, from offset first on, have the values
// want, in order.
func checkValues(t *testing.T, what string, recs []*kgo.Record, first int64, want []string) {
	t.Helper()
	if len(recs) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(recs), len(want))
	}
	for i := range min(len(recs), len(want)) {
		if recs[i].Offset != first+int64(i) || string(recs[i].Value) != want[i] {
			t.Errorf("%s: record %d is %q at offset %d, want %q at offset %d", what, i, recs[i].Value, recs[i].Offset, want[i], first+int64(i))
			return
		}
	}
}

// commitOffset commits offset for group on topic's partition.
func commitOffset(t *testing.T, cl *kgo.Client, group, topic string, partition int32, offset int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: partition, At: offset, LeaderEpoch: -1})
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("committing %s at %s/%d:%d: %v", group, topic, partition, offset, err)
	}
}
