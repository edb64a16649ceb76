package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/policy"
)

// TestRefusesProgressTopicThatDeletes pre-creates a flow's progress topic
// with cleanup.policy=delete, as an operator or an auto-creating tool
// might: retention would delete the flow's stored positions some day and
// a restart would copy again or skip records. kmirror must refuse to run
// the flow, exiting with an error that names the topic, the config, the
// value found and expected, and what to do; nothing is copied.
func TestRefusesProgressTopicThatDeletes(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	createTopic(t, p.srcCl, "events", 1, nil)
	var recs []*kgo.Record
	for i := range 100 {
		recs = append(recs, &kgo.Record{Topic: "events", Value: fmt.Appendf(nil, "%d", i)})
	}
	produce(t, p.srcCl, recs)
	progressTopic := policy.ProgressTopic("e2e")
	createTopic(t, p.dstCl, progressTopic, 1, map[string]string{"cleanup.policy": "delete", "retention.ms": "3600000"})

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["events"]
topic_naming: identity
`))
	k := startKmirror(t, cfg, httpAddr)
	select {
	case <-k.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("kmirror still runs 90 s after start with a progress topic that deletes; target holds %d records of events", sum(endOffsets(t, p.dstCl, "events")))
	}
	out := k.output()
	if code := k.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("kmirror exited with code 0")
	}
	for _, want := range []string{
		fmt.Sprintf("topic %q: cleanup.policy is \"delete\", expected \"compact\"", progressTopic),
		"retention would delete the state kmirror keeps there",
		"kafka-configs.sh --alter --entity-type topics --entity-name " + progressTopic + " --add-config cleanup.policy=compact",
		`flow not started`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kmirror output does not say %q", want)
		}
	}
	if n := sum(endOffsets(t, p.dstCl, "events")); n != 0 {
		t.Errorf("target holds %d records of events; the flow must not have run", n)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	t.Logf("kmirror exited with code %d; last line: %s", k.cmd.ProcessState.ExitCode(), lines[len(lines)-1])
}

// TestGroupSyncLeavesKIP848GroupAlone runs a consumer of the consumer
// group protocol (KIP-848) on the target while kmirror syncs the same
// group's offsets: kmirror must see the group as active, commit nothing
// to it, and report no commit error.
func TestGroupSyncLeavesKIP848GroupAlone(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const group = "orders-app"
	createTopic(t, p.srcCl, "orders", 2, nil)
	createTopic(t, p.dstCl, "orders", 2, nil)
	var recs []*kgo.Record
	for part := range int32(2) {
		for i := range 100 {
			recs = append(recs, &kgo.Record{Topic: "orders", Partition: part, Value: fmt.Appendf(nil, "%d:%d", part, i)})
		}
	}
	produce(t, p.srcCl, recs)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var commit kadm.Offsets
	commit.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 50, LeaderEpoch: -1})
	commit.Add(kadm.Offset{Topic: "orders", Partition: 1, At: 60, LeaderEpoch: -1})
	if err := kadm.NewClient(p.srcCl).CommitAllOffsets(ctx, group, commit); err != nil {
		t.Fatal(err)
	}

	// The application runs on the target with the consumer protocol.
	member := newClient(t, p.dst.Bootstrap(), kgo.ConsumerGroup(group), kgo.ConsumeTopics("orders"),
		kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()), kgo.DisableAutoCommit())
	go func() {
		for ctx.Err() == nil {
			member.PollFetches(ctx)
		}
	}()
	dstAdm := kadm.NewClient(p.dstCl)
	waitFor(t, time.Minute, "the consumer-protocol member to join on the target", func() (bool, string) {
		d, err := dstAdm.DescribeConsumerGroups(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		g := d[group]
		return len(g.Members) == 1, fmt.Sprintf("state %q, %d members, err %v", g.State, len(g.Members), g.Err)
	})

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_naming: identity
sync_interval: 1s
`))
	k := startKmirror(t, cfg, httpAddr)
	waitFor(t, 2*time.Minute, "orders on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "orders"))
		return n == 200, fmt.Sprintf("target holds %d of 200", n)
	})
	var body string
	waitFor(t, time.Minute, "kmirror to report the group active on the target", func() (bool, string) {
		_, b, err := k.get("/metrics")
		if err != nil {
			return false, err.Error()
		}
		body = b
		v, ok := metricValue(b, `kmirror_groups_active_on_target{flow="e2e"}`)
		return ok && v == 1, fmt.Sprintf("kmirror_groups_active_on_target = %v (present %v)", v, ok)
	})
	// A few more passes: still nothing committed, no error.
	time.Sleep(3 * time.Second)
	off, err := dstAdm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	off.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			t.Errorf("kmirror committed %s/%d at %d to a group with a live member on the target", o.Topic, o.Partition, o.At)
		}
	})
	_, body, _ = k.get("/metrics")
	if v, ok := metricValue(body, `kmirror_errors_total{flow="e2e",kind="group_sync"}`); ok && v > 0 {
		t.Errorf("kmirror_errors_total{kind=\"group_sync\"} = %v, want 0", v)
	}
	out := k.output()
	if strings.Contains(out, "group offset sync failed") {
		t.Errorf("kmirror logged a group sync failure")
	}
	if !strings.Contains(out, `msg="group has active members on the target; its offsets there are left alone while it does" flow=e2e group=orders-app`) {
		t.Errorf("kmirror did not log that the group is active")
	}
	t.Logf("consumer-protocol group %q with a live member on the target: kmirror_groups_active_on_target=1, nothing committed, no group sync error", group)
	k.stop()
}
