package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/status"
	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// node is one cluster of a topology test: its alias, a client and its
// cluster ID.
type node struct {
	alias string
	c     *kafkatest.Cluster
	cl    *kgo.Client
	id    string
}

// startNodes starts one cluster per alias, all at once.
func startNodes(t *testing.T, aliases ...string) map[string]*node {
	t.Helper()
	kafkatest.RequireLibs(t)
	start := time.Now()
	out := map[string]*node{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range aliases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := kafkatest.Start(t, kafkatest.Options{Name: a})
			mu.Lock()
			out[a] = &node{alias: a, c: c}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() || len(out) != len(aliases) {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range out {
		n.cl = newClient(t, n.c.Bootstrap())
		m, err := kadm.NewClient(n.cl).BrokerMetadata(ctx)
		if err != nil || m.Cluster == "" {
			t.Fatalf("cluster ID of %s: %q, %v", n.alias, m.Cluster, err)
		}
		n.id = m.Cluster
	}
	t.Logf("%d clusters started in %s", len(aliases), time.Since(start).Round(time.Millisecond))
	return out
}

// topologyConfig is a config with the nodes as clusters and the given
// flows (YAML list items, unindented).
func topologyConfig(nodes map[string]*node, httpAddr, flows string) string {
	var b strings.Builder
	b.WriteString("clusters:\n")
	for _, a := range slices.Sorted(maps.Keys(nodes)) {
		fmt.Fprintf(&b, "  %s:\n    bootstrap_servers: [%q]\n", a, nodes[a].c.Bootstrap())
	}
	b.WriteString("flows:\n")
	b.WriteString(indent(flows, "  "))
	fmt.Fprintf(&b, "http:\n  listen: %q\n", httpAddr)
	return b.String()
}

// identityFlow is a flow item from source to target over topic with
// identity naming, provenance at its default.
func identityFlow(source, target, topic string) string {
	return fmt.Sprintf(`- name: %s-to-%s
  source: %s
  target: %s
  topics: [%q]
  topic_naming: identity
  topic_refresh_interval: 500ms
  sync_group_offsets: false
`, source, target, source, target, topic)
}

// produceOrigin writes n records "<origin>-<seq>" (key seq, partition
// seq % partitions, header origin) to topic on the node, in acknowledged
// batches of 100.
func produceOrigin(ctx context.Context, n *node, topic string, partitions int32, count int) error {
	for from := 0; from < count; from += 100 {
		var recs []*kgo.Record
		for seq := from; seq < min(from+100, count); seq++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(seq) % partitions, Key: []byte(strconv.Itoa(seq)),
				Value: fmt.Appendf(nil, "%s-%d", n.alias, seq), Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte(n.alias)}}})
		}
		if err := n.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("producing to %s on %s: %w", topic, n.alias, err)
		}
	}
	return nil
}

// checkOnce reads topic on node n and checks that it holds every record
// produced at each origin (counts[origin] records) exactly once, on the
// partition it was produced to, in the order of its origin, with the
// provenance header route(origin) gives (nil: no header, a record of n
// itself). It returns the number of records read.
func checkOnce(t *testing.T, nodes map[string]*node, n *node, topic string, partitions int32, counts map[string]int, route func(origin string) []string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := verify.ReadAll(ctx, n.cl, topic)
	if err != nil {
		t.Fatalf("reading %s on %s: %v", topic, n.alias, err)
	}
	seen := map[string]int{}
	total, bad := 0, 0
	report := func(format string, args ...any) {
		if bad++; bad <= 5 {
			t.Errorf("%s %s: "+format, append([]any{n.alias, topic}, args...)...)
		}
	}
	for p := range partitions {
		last := map[string]int{} // origin → last seq seen on p
		for _, r := range got[p] {
			total++
			v := string(r.Value)
			seen[v]++
			origin, s, ok := strings.Cut(v, "-")
			seq, err := strconv.Atoi(s)
			if !ok || err != nil || counts[origin] == 0 {
				report("partition %d offset %d: unexpected record %q", p, r.Offset, v)
				continue
			}
			if int32(seq)%partitions != p {
				report("partition %d offset %d: %q belongs to partition %d", p, r.Offset, v, int32(seq)%partitions)
			}
			if prev, ok := last[origin]; ok && seq <= prev {
				report("partition %d offset %d: %q after %s-%d (order of its origin lost)", p, r.Offset, v, origin, prev)
			}
			last[origin] = seq
			var want []string
			for _, a := range route(origin) {
				want = append(want, nodes[a].id)
			}
			if path := markPath(r.Headers); !slices.Equal(path, want) {
				report("partition %d offset %d: %q has provenance %v, want %v (route %v)", p, r.Offset, v, path, want, route(origin))
			}
			if len(r.Headers) == 0 || r.Headers[0].Key != "origin" || string(r.Headers[0].Value) != origin {
				report("partition %d offset %d: %q lost its own header first: %v", p, r.Offset, v, r.Headers)
			}
		}
	}
	for origin, c := range counts {
		missing, dups := 0, 0
		for seq := range c {
			switch k := seen[fmt.Sprintf("%s-%d", origin, seq)]; {
			case k == 0:
				missing++
			case k > 1:
				dups += k - 1
			}
		}
		if missing > 0 || dups > 0 {
			t.Errorf("%s %s: records of %s: %d missing, %d duplicated", n.alias, topic, origin, missing, dups)
		}
	}
	return total
}

// droppedTotal sums kmirror_provenance_dropped_records_total over the
// flows for reason.
func droppedTotal(k *proc, topic, reason string) (float64, error) {
	_, body, err := k.get("/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "kmirror_provenance_dropped_records_total{") || !strings.Contains(line, `reason="`+reason+`"`) ||
			!strings.Contains(line, `topic="`+topic+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum, nil
}

// TestMeshExactlyOnce runs a full mesh of three clusters (six identity
// flows with provenance, one kmirror) while producers write to the same
// topic on all three at once: afterwards every cluster holds every record
// exactly once, in the order of its origin, carrying the provenance of the
// one direct hop that brought it; nothing moves in the 30 s after the
// producers stopped (no loop); and each record was dropped by exactly
// four flows: twice as a loop, twice as routed by another flow. A line
// (a <-> b <-> c, no a <-> c) on a second topic, in a second kmirror,
// brings the records of a to c through b, once.
func TestMeshExactlyOnce(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	nodes := startNodes(t, "a", "b", "c")
	const topic, line, parts, perOrigin = "events", "line", int32(3), 1500
	for _, n := range nodes {
		createTopic(t, n.cl, topic, parts, nil)
		createTopic(t, n.cl, line, parts, nil)
	}
	var mesh, chain strings.Builder
	for _, f := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "a"}, {"b", "c"}, {"c", "a"}, {"c", "b"}} {
		mesh.WriteString(identityFlow(f[0], f[1], topic))
		if f != [2]string{"a", "c"} && f != [2]string{"c", "a"} {
			// Its own heartbeat topic: the mesh's flows copy "heartbeats"
			// between the same clusters.
			chain.WriteString(strings.Replace(identityFlow(f[0], f[1], line), "name: ", "name: line-", 1) + "  heartbeat_topic: line-heartbeats\n")
		}
	}
	meshAddr, lineAddr := freeAddr(t), freeAddr(t)
	meshCfg := writeConfig(t, topologyConfig(nodes, meshAddr, mesh.String()))
	k := startKmirror(t, meshCfg, meshAddr)
	kl := startKmirror(t, writeConfig(t, topologyConfig(nodes, lineAddr, chain.String())), lineAddr)
	waitReady(t, k)
	waitReady(t, kl)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make(chan error, 4)
	for _, a := range []string{"a", "b", "c"} {
		go func() { errs <- produceOrigin(ctx, nodes[a], topic, parts, perOrigin) }()
	}
	go func() { errs <- produceOrigin(ctx, nodes["a"], line, parts, perOrigin/3) }()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	produced := time.Since(start)
	const n = 3 * perOrigin
	took := waitFor(t, 3*time.Minute, fmt.Sprintf("%d records of %s on every cluster", n, topic), func() (bool, string) {
		done, state := true, ""
		for _, a := range []string{"a", "b", "c"} {
			c := sum(endOffsets(t, nodes[a].cl, topic))
			done = done && c >= n
			state += fmt.Sprintf("%s=%d ", a, c)
		}
		return done, state
	})
	t.Logf("mesh: %d records produced on 3 clusters in %s; on every cluster %s later", n, produced.Round(time.Millisecond), took.Round(time.Millisecond))
	lineN := int64(perOrigin / 3)
	waitFor(t, 2*time.Minute, "the line's records on c", func() (bool, string) {
		c := sum(endOffsets(t, nodes["c"].cl, line))
		return c >= lineN, fmt.Sprintf("%d on c", c)
	})

	// The drop counters reach 2N each: every record is read by four
	// flows that do not write it.
	want := float64(2 * n)
	waitFor(t, time.Minute, "the drop counters to reach 2N each", func() (bool, string) {
		loop, err1 := droppedTotal(k, topic, "loop")
		routed, err2 := droppedTotal(k, topic, "routed")
		return err1 == nil && err2 == nil && loop >= want && routed >= want, fmt.Sprintf("loop %v routed %v (%v %v)", loop, routed, err1, err2)
	})

	// Nothing moves for 30 s: no record goes round.
	ends := map[string]map[int32]int64{}
	for a, nd := range nodes {
		ends[a] = endOffsets(t, nd.cl, topic)
	}
	for quiet := time.Now(); time.Since(quiet) < 30*time.Second; time.Sleep(time.Second) {
		for a, nd := range nodes {
			if now := endOffsets(t, nd.cl, topic); len(now) == int(parts) && !maps.Equal(now, ends[a]) {
				t.Fatalf("%s %s moved after the producers stopped: %v, then %v", a, topic, ends[a], now)
			}
		}
	}
	loop, _ := droppedTotal(k, topic, "loop")
	routed, _ := droppedTotal(k, topic, "routed")
	t.Logf("mesh: end offsets unchanged for 30 s; dropped as loop %v, as routed %v (N = %d)", loop, routed, n)
	if loop != want || routed != want {
		t.Errorf("dropped as loop %v and as routed %v, want %v each (2N)", loop, routed, want)
	}

	counts := map[string]int{"a": perOrigin, "b": perOrigin, "c": perOrigin}
	for _, at := range []string{"a", "b", "c"} {
		got := checkOnce(t, nodes, nodes[at], topic, parts, counts, func(origin string) []string {
			if origin == at {
				return nil // written there by its producer: no header
			}
			return []string{origin, at} // one direct hop
		})
		t.Logf("mesh: %s holds %d records of %s, each once, with its provenance", at, got, topic)
	}
	lineCounts := map[string]int{"a": perOrigin / 3}
	lineRoutes := map[string][]string{"a": nil, "b": {"a", "b"}, "c": {"a", "b", "c"}}
	for _, at := range []string{"a", "b", "c"} {
		got := checkOnce(t, nodes, nodes[at], line, parts, lineCounts, func(string) []string { return lineRoutes[at] })
		t.Logf("line: %s holds %d records of a, each once, provenance %v", at, got, lineRoutes[at])
	}
	checkMeshStatus(t, meshCfg)

	lineLoop, _ := droppedTotal(kl, line, "loop")
	lineRouted, _ := droppedTotal(kl, line, "routed")
	t.Logf("line: dropped as loop %v, as routed %v", lineLoop, lineRouted)
	// b->a drops a's records coming back, and c->b those of the end of the line.
	if lineLoop != float64(2*lineN) || lineRouted != 0 {
		t.Errorf("line: dropped as loop %v, as routed %v; want %d and 0", lineLoop, lineRouted, 2*lineN)
	}
}

// TestFanOutAndAggregation runs a fan-out (a -> b, a -> c) and an
// aggregation (a -> c, b -> c) with prefix naming: b holds a.x, c holds
// a.x and b.y, each the source's records, record by record, once; and no
// copy of a copy (b.a.x) is made.
func TestFanOutAndAggregation(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	nodes := startNodes(t, "a", "b", "c")
	const parts, count = int32(2), 600
	createTopic(t, nodes["a"].cl, "x", parts, nil)
	createTopic(t, nodes["b"].cl, "y", parts, nil)
	flow := func(source, target, topic string) string {
		return fmt.Sprintf(`- name: %s-to-%s
  source: %s
  target: %s
  topics: [%q]
  topic_refresh_interval: 500ms
  sync_group_offsets: false
`, source, target, source, target, topic)
	}
	addr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, topologyConfig(nodes, addr, flow("a", "b", "x")+flow("a", "c", "x")+flow("b", "c", "y"))), addr)
	waitReady(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := produceOrigin(ctx, nodes["a"], "x", parts, count); err != nil {
		t.Fatal(err)
	}
	if err := produceOrigin(ctx, nodes["b"], "y", parts, count); err != nil {
		t.Fatal(err)
	}
	type copyOf struct{ from, topic, at, replica string }
	copies := []copyOf{{"a", "x", "b", "a.x"}, {"a", "x", "c", "a.x"}, {"b", "y", "c", "b.y"}}
	for _, c := range copies {
		took := waitFor(t, 2*time.Minute, fmt.Sprintf("%s on %s", c.replica, c.at), func() (bool, string) {
			got := sum(endOffsets(t, nodes[c.at].cl, c.replica))
			return got >= count, fmt.Sprintf("%d records", got)
		})
		t.Logf("%s on %s: %d records after %s", c.replica, c.at, count, took.Round(time.Millisecond))
	}
	k.stop()
	for _, c := range copies {
		rep, err := verify.Compare(ctx, nodes[c.from].cl, nodes[c.at].cl, []verify.Pair{{Source: c.topic, Target: c.replica}})
		if err != nil {
			t.Fatal(err)
		}
		tr := rep.Topics[0]
		if !tr.OK() {
			t.Errorf("%s on %s against %s on %s: %d source, %d target, %d matched: %v",
				c.replica, c.at, c.topic, c.from, tr.SourceRecords, tr.TargetRecords, tr.Matched, tr.Mismatches)
		}
		t.Logf("%s on %s: %d of %d records match %s on %s, record by record (headers untouched)", c.replica, c.at, tr.Matched, tr.SourceRecords, c.topic, c.from)
	}
	for at, want := range map[string][]string{"b": {"a.x"}, "c": {"a.x", "b.y"}} {
		topics, err := kadm.NewClient(nodes[at].cl).ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, name := range topics.Names() {
			if strings.HasSuffix(name, ".x") || strings.HasSuffix(name, ".y") {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("copies on %s: %v, want %v", at, got, want)
		}
	}
}

// TestLoopingConfigRejected: kmirror run refuses a configuration whose
// flows would copy records in a loop (identity a <-> b, provenance off on
// one flow) or collide (two identity flows into c, one without
// provenance): exit code 2 at start, an error naming the flows and the
// file and line, and no topic created on any cluster.
func TestLoopingConfigRejected(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	nodes := startNodes(t, "a", "c")
	createTopic(t, nodes["a"].cl, "events", 1, nil)
	dead := freeAddr(t) // cluster b of the collision: never dialled
	for _, tc := range []struct {
		name   string
		flows  string
		extra  string // more clusters
		names  []string
		lineOf string // the item whose line the error names
	}{
		{
			name:   "cycle",
			flows:  identityFlow("a", "c", "events") + identityFlow("c", "a", "events") + "  provenance: off\n",
			names:  []string{`"a-to-c"`, `"c-to-a"`, "c -> a -> c", "provenance off"},
			lineOf: "- name: c-to-a",
		},
		{
			name:   "collision",
			flows:  identityFlow("a", "c", "events") + "  provenance: off\n" + identityFlow("b", "c", "events"),
			extra:  fmt.Sprintf("  b:\n    bootstrap_servers: [%q]\n", dead),
			names:  []string{`"a-to-c"`, `"b-to-c"`, "collide"},
			lineOf: "- name: b-to-c",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := topologyConfig(nodes, freeAddr(t), tc.flows)
			body = strings.Replace(body, "flows:\n", tc.extra+"flows:\n", 1)
			path := writeConfig(t, body)
			lineNo := 0
			for i, l := range strings.Split(body, "\n") {
				if strings.TrimSpace(l) == tc.lineOf {
					lineNo = i + 1
				}
			}
			res := runKmirrorOnce(t, time.Minute, "run", "--config", path)
			out := res.stdout + res.stderr
			t.Logf("%s: exit %d in %s: %s", tc.name, res.code, res.elapsed.Round(time.Millisecond), strings.TrimSpace(out))
			if res.code != 2 {
				t.Errorf("exit code %d, want 2", res.code)
			}
			for _, want := range append([]string{fmt.Sprintf("kmirror.yaml:%d:", lineNo)}, tc.names...) {
				if !strings.Contains(out, want) {
					t.Errorf("error does not say %q:\n%s", want, out)
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for a, want := range map[string][]string{"a": {"events"}, "c": nil} {
		topics, err := kadm.NewClient(nodes[a].cl).ListTopicsWithInternal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, name := range topics.Names() {
			if !strings.HasPrefix(name, "__consumer_offsets") && !strings.HasPrefix(name, "__transaction_state") {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("topics on %s after the refused runs: %v, want %v", a, got, want)
		}
	}
}

// checkMeshStatus runs kmirror status against the running mesh: every flow
// running, lag 0 and a fresh heartbeat, in the table and in --json; the
// routes name the one direct hop between each two clusters.
func checkMeshStatus(t *testing.T, cfg string) {
	t.Helper()
	var rep status.Report
	var text runResult
	waitFor(t, time.Minute, "kmirror status to show every flow running, lag 0, a fresh heartbeat", func() (bool, string) {
		text = runKmirrorOnce(t, time.Minute, "status", "--config", cfg)
		js := runKmirrorOnce(t, time.Minute, "status", "--config", cfg, "--json")
		rep = status.Report{}
		dec := json.NewDecoder(strings.NewReader(js.stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			return false, fmt.Sprintf("--json does not parse: %v\n%s%s", err, js.stdout, js.stderr)
		}
		if text.code != 0 || js.code != 0 || len(rep.Flows) != 6 {
			return false, fmt.Sprintf("exit %d and %d, %d flows:\n%s%s", text.code, js.code, len(rep.Flows), text.stdout, text.stderr)
		}
		for _, f := range rep.Flows {
			if f.State != status.StateRunning || f.LagRecords == nil || *f.LagRecords != 0 ||
				f.Heartbeat == nil || f.Heartbeat.AgeSeconds == nil || *f.Heartbeat.AgeSeconds > 5 {
				return false, fmt.Sprintf("flow %s not running with lag 0 and a fresh heartbeat:\n%s", f.Name, js.stdout)
			}
			if !strings.Contains(text.stdout, f.Name) {
				return false, fmt.Sprintf("the table does not name flow %s:\n%s", f.Name, text.stdout)
			}
		}
		return true, ""
	})
	for _, r := range rep.Routes {
		if len(r.Hops) != 2 {
			t.Errorf("route %+v: a full mesh has one direct hop between any two clusters", r)
		}
	}
	t.Logf("mesh: kmirror status (%s): 6 flows running, lag 0, heartbeats fresh; %d routes\n%s", text.elapsed.Round(time.Millisecond), len(rep.Routes), text.stdout)
}
