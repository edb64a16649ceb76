package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/dr"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/verify"
)

// aaGroupFlow is a flow item of an active-active pair with identity names
// and group sync on (the default), every sync_interval.
func aaGroupFlow(source, target, topic, syncInterval string) string {
	extra := ""
	if syncInterval != "" {
		extra = "  sync_interval: " + syncInterval + "\n"
	}
	return fmt.Sprintf(`- name: %s-to-%s
  source: %s
  target: %s
  topics: [%q]
  topic_naming: identity
  topic_refresh_interval: 500ms
  heartbeat_interval: off
%s`, source, target, source, target, topic, extra)
}

// produceSpread writes count records "<origin>-<seq>" like produceOrigin,
// in batches of 30 a few milliseconds apart, so that the two clusters'
// producers and kmirror's copies interleave in every partition.
func produceSpread(ctx context.Context, n *node, topic string, partitions int32, count int) error {
	for from := 0; from < count; from += 30 {
		var recs []*kgo.Record
		for seq := from; seq < min(from+30, count); seq++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(seq) % partitions, Key: []byte(strconv.Itoa(seq)),
				Value: fmt.Appendf(nil, "%s-%d", n.alias, seq)})
		}
		if err := n.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("producing to %s on %s: %w", topic, n.alias, err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	return nil
}

// consumeSome consumes topic as group on bootstrap until it has processed
// perPartition records of each of its partitions, commits exactly those
// and leaves the group.
func consumeSome(t *testing.T, ctx context.Context, bootstrap, group, topic string, partitions int32, perPartition int) {
	t.Helper()
	cl := newClient(t, bootstrap, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Hour))
	done := map[int32]int{}
	full := 0
	for full < int(partitions) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v of %d records per partition: %v", done, perPartition, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if done[r.Partition] < perPartition {
				done[r.Partition]++
				cl.MarkCommitRecords(r)
				if done[r.Partition] == perPartition {
					full++
				}
			}
		})
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	cl.Close()
}

// waitReplicating waits until the kmirror process replicates partitions
// of each flow (after a restart, once the killed process's members
// expired and the partitions were assigned and resumed).
func waitReplicating(t *testing.T, k *proc, flows ...string) {
	t.Helper()
	waitFor(t, 2*time.Minute, "the flows replicating", func() (bool, string) {
		out := k.output()
		for _, f := range flows {
			if !strings.Contains(out, `msg="replicating assigned partitions" flow=`+f+" ") {
				return false, f + " not replicating yet"
			}
		}
		return true, ""
	})
}

// groupOffsets returns group's committed offsets on topic.
func groupOffsets(t *testing.T, cl *kgo.Client, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetching the offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	got.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// TestActiveActiveGroupFailover runs active-active between a and b with
// producers writing the same topic on both at once; a group consumes on a
// only, part-way, and stops; after a planned failover of a-to-b the group
// reads on b. Across both clusters it must have read every record, by
// content; every record read twice must be a copy of a record of a that b
// holds below the first copy the group had not read on a (re-read because
// the translation was rounded down to reach a record of b's own
// producer), and none when the checkpoint says exact. The same after
// kmirror is killed (SIGKILL) and restarted between the writes and the
// failover.
func TestActiveActiveGroupFailover(t *testing.T) {
	t.Parallel() // no timing assertion
	for _, kill := range []bool{false, true} {
		name := "clean"
		if kill {
			name = "SIGKILL and restart"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testActiveActiveGroupFailover(t, kill)
		})
	}
}

func testActiveActiveGroupFailover(t *testing.T, kill bool) {
	nodes := startNodes(t, "a", "b")
	const topic, parts, perOrigin, group = "orders", int32(3), 3000, "billing"
	for _, n := range nodes {
		createTopic(t, n.cl, topic, parts, nil)
	}
	addr := freeAddr(t)
	cfg := writeConfig(t, topologyConfig(nodes, addr, aaGroupFlow("a", "b", topic, "1s")+aaGroupFlow("b", "a", topic, "1s")))
	k := startKmirror(t, cfg, addr)
	waitReady(t, k)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	for _, a := range []string{"a", "b"} {
		go func() { errs <- produceSpread(ctx, nodes[a], topic, parts, perOrigin) }()
	}
	// The group reads on a while both producers write and kmirror
	// copies, and stops part-way.
	waitFor(t, 2*time.Minute, "records on a", func() (bool, string) {
		n := sum(endOffsets(t, nodes["a"].cl, topic))
		return n >= perOrigin/2, fmt.Sprintf("a=%d", n)
	})
	consumeSome(t, ctx, nodes["a"].c.Bootstrap(), group, topic, parts, perOrigin/2/int(parts))
	onA := groupOffsets(t, nodes["a"].cl, group, topic)
	t.Logf("the group committed on a at %v", onA)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	const total = 2 * perOrigin
	waitFor(t, 3*time.Minute, "every record on both clusters", func() (bool, string) {
		na, nb := sum(endOffsets(t, nodes["a"].cl, topic)), sum(endOffsets(t, nodes["b"].cl, topic))
		return na >= total && nb >= total, fmt.Sprintf("a=%d b=%d of %d", na, nb, total)
	})
	if kill {
		k.kill()
		k = startKmirror(t, cfg, addr)
		waitReady(t, k)
		waitReplicating(t, k, "a-to-b", "b-to-a")
		t.Log("kmirror killed (SIGKILL) and started again")
	}
	waitFor(t, time.Minute, "the group synced to b", func() (bool, string) {
		onB := groupOffsets(t, nodes["b"].cl, group, topic)
		return len(onB) == int(parts), fmt.Sprintf("on b: %v", onB)
	})
	k.stop()

	stdout, stderr, err := runKmirror(t, 3*time.Minute, "failover", "--config", cfg, "--flow", "a-to-b", "--timeout", "2m")
	t.Logf("kmirror failover:\n%s%s", stdout, stderr)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	if now := groupOffsets(t, nodes["a"].cl, group, topic); !maps.Equal(now, onA) {
		t.Fatalf("the failover moved the group on a: %v, its consumer committed %v", now, onA)
	}
	onB := groupOffsets(t, nodes["b"].cl, group, topic)
	cps, err := groupsync.NewStore(nodes["b"].cl, policy.CheckpointTopic("a-to-b")).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exact := map[int32]bool{}
	for _, c := range cps {
		if c.Group == group && c.Topic == topic {
			exact[c.Partition] = c.Exact
			if c.SourceOffset != onA[c.Partition] || c.TargetOffset != onB[c.Partition] {
				t.Errorf("partition %d: checkpoint %d → %d, but the group is at %d on a and %d on b",
					c.Partition, c.SourceOffset, c.TargetOffset, onA[c.Partition], onB[c.Partition])
			}
		}
	}

	// kmirror offsets translate applies the same rule.
	out, errOut, err := runKmirror(t, time.Minute, "offsets", "translate", "--config", cfg, "--flow", "a-to-b", "--group", group, "--json")
	if err != nil {
		t.Fatalf("offsets translate: %v\n%s%s", err, out, errOut)
	}
	var rows []dr.Translated
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("offsets translate output: %v\n%s", err, out)
	}
	if len(rows) != int(parts) {
		t.Errorf("offsets translate: %d partitions, want %d: %s", len(rows), parts, out)
	}
	for _, r := range rows {
		if r.SourceOffset != onA[r.Partition] || r.TargetOffset != onB[r.Partition] || r.Exact != exact[r.Partition] {
			t.Errorf("offsets translate, partition %d: %d → %d exact %t; the failover committed %d → %d exact %t",
				r.Partition, r.SourceOffset, r.TargetOffset, r.Exact, onA[r.Partition], onB[r.Partition], exact[r.Partition])
		}
	}

	// What the group read on a: every record below its committed offsets.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer rcancel()
	logA, err := verify.ReadAll(rctx, nodes["a"].cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	logB, err := verify.ReadAll(rctx, nodes["b"].cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	readA := map[string]bool{}
	for p, rs := range logA {
		for _, r := range rs {
			if r.Offset < onA[p] {
				readA[string(r.Value)] = true
			}
		}
	}
	// What it reads on b, as a consumer of the group.
	gotB := consumeAll(t, rctx, nodes["b"].c.Bootstrap(), group, []string{topic})[topic]
	readB := map[string]int{}
	dups, rounded, localOfB := 0, 0, 0
	for p := range parts {
		// The first copy of a record of a on b that the group had not
		// read on a: the translation rounds down only to reach records
		// of b's own producer before it.
		firstUnread := int64(-1)
		for _, r := range logB[p] {
			if v := string(r.Value); r.Offset >= onB[p] && strings.HasPrefix(v, "a-") && !readA[v] {
				firstUnread = r.Offset
				break
			}
		}
		if len(gotB[p]) > 0 && gotB[p][0].Offset != onB[p] {
			t.Errorf("partition %d: the group started on b at %d, committed %d", p, gotB[p][0].Offset, onB[p])
		}
		pdups := 0
		for _, r := range gotB[p] {
			v := string(r.Value)
			readB[v]++
			if readB[v] > 1 {
				t.Errorf("partition %d: %q read twice on b", p, v)
			}
			if !readA[v] {
				if strings.HasPrefix(v, "b-") && r.Offset < firstUnread {
					localOfB++
				}
				continue
			}
			pdups++
			if !strings.HasPrefix(v, "a-") || (firstUnread >= 0 && r.Offset >= firstUnread) {
				t.Errorf("partition %d offset %d: %q read on a and again on b, not a copy re-read because of rounding down (first unread copy of a at %d)",
					p, r.Offset, v, firstUnread)
			}
		}
		if pdups > 0 && exact[p] {
			t.Errorf("partition %d: %d records re-read on b, but the checkpoint says exact", p, pdups)
		}
		if pdups > 0 {
			rounded++
		}
		dups += pdups
	}
	missing := 0
	for _, origin := range []string{"a", "b"} {
		for seq := range perOrigin {
			if v := fmt.Sprintf("%s-%d", origin, seq); !readA[v] && readB[v] == 0 {
				if missing++; missing <= 5 {
					t.Errorf("%s was read neither on a nor on b", v)
				}
			}
		}
	}
	nB := 0
	for _, rs := range gotB {
		nB += len(rs)
	}
	t.Logf("the group read %d records on a (committed %v) and %d on b after failover (committed %v, exact %v): %d missing, %d re-read on %d partitions (copies of a's records below the first one unread, rounded down to reach %d records of b's producer)",
		len(readA), onA, nB, onB, exact, missing, dups, rounded, localOfB)
	if missing > 0 {
		t.Fatalf("%d records never read", missing)
	}
}

// TestActiveActiveGroupSyncStaysPut runs active-active between a and b
// with group sync at its defaults; a group commits on a and stops. For
// 60 s after, with no consumer running and producers still writing on
// both clusters, its committed offsets on a stay exactly what its consumer
// committed, and its checkpoints on b are those offsets.
func TestActiveActiveGroupSyncStaysPut(t *testing.T) {
	t.Parallel() // an observation window, no timing assertion
	nodes := startNodes(t, "a", "b")
	const topic, parts, group = "orders", int32(3), "reports"
	for _, n := range nodes {
		createTopic(t, n.cl, topic, parts, nil)
	}
	addr := freeAddr(t)
	cfg := writeConfig(t, topologyConfig(nodes, addr, aaGroupFlow("a", "b", topic, "")+aaGroupFlow("b", "a", topic, "")))
	k := startKmirror(t, cfg, addr)
	waitReady(t, k)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	for _, a := range []string{"a", "b"} {
		go func() { errs <- produceSpread(ctx, nodes[a], topic, parts, 3000) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "every record on both clusters", func() (bool, string) {
		na, nb := sum(endOffsets(t, nodes["a"].cl, topic)), sum(endOffsets(t, nodes["b"].cl, topic))
		return na >= 6000 && nb >= 6000, fmt.Sprintf("a=%d b=%d", na, nb)
	})
	consumeSome(t, ctx, nodes["a"].c.Bootstrap(), group, topic, parts, 1000)
	onA := groupOffsets(t, nodes["a"].cl, group, topic)
	t.Logf("the group's consumer committed on a: %v (ends %v)", onA, endOffsets(t, nodes["a"].cl, topic))

	// Producers keep writing on both clusters, slowly, while we watch.
	wctx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			for _, n := range nodes {
				_ = n.cl.ProduceSync(wctx, &kgo.Record{Topic: topic, Partition: int32(i) % parts,
					Value: fmt.Appendf(nil, "%s-late-%d", n.alias, i)}).FirstErr()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	waitFor(t, time.Minute, "the group synced to b", func() (bool, string) {
		onB := groupOffsets(t, nodes["b"].cl, group, topic)
		return len(onB) == int(parts), fmt.Sprintf("on b: %v", onB)
	})
	start := time.Now()
	for time.Since(start) < 60*time.Second {
		if now := groupOffsets(t, nodes["a"].cl, group, topic); !maps.Equal(now, onA) {
			t.Fatalf("%s after the consumer stopped, the group's offsets on a moved to %v; its consumer committed %v",
				time.Since(start).Round(time.Second), now, onA)
		}
		time.Sleep(time.Second)
	}
	stopWrites()
	onB := groupOffsets(t, nodes["b"].cl, group, topic)
	for _, flow := range []string{"a-to-b", "b-to-a"} {
		at := nodes["b"]
		if flow == "b-to-a" {
			at = nodes["a"]
		}
		cps, err := groupsync.NewStore(at.cl, policy.CheckpointTopic(flow)).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cps {
			if c.Group != group {
				continue
			}
			t.Logf("%s checkpoint: partition %d, %d → %d, exact %t", flow, c.Partition, c.SourceOffset, c.TargetOffset, c.Exact)
			if flow == "b-to-a" {
				t.Errorf("b-to-a translated the group back from b, where only kmirror committed it: %+v", c)
			} else if c.SourceOffset != onA[c.Partition] {
				t.Errorf("a-to-b checkpoint of partition %d from %d, the consumer committed %d", c.Partition, c.SourceOffset, onA[c.Partition])
			}
		}
	}
	t.Logf("for 60 s the group stayed on a at %v, as its consumer committed; on b it is at %v", onA, onB)
	k.stop()
}
