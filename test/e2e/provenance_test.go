package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	offsetmap "github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/verify"
)

// deriver is an application that, like a Kafka Streams topology with its
// default header handling, reads a topic and writes records derived from
// each input to output topics, on the input's partition, with the input's
// headers forwarded as they are (provenance mark included).
type deriver struct {
	in      string
	outs    map[string]string // output topic → value prefix
	skip    func(value string) bool
	cl      *kgo.Client
	mu      sync.Mutex
	derived int
	err     error
	done    chan struct{}
}

// startDeriver starts the application on the cluster at bootstrap; it
// runs until stopped.
func startDeriver(t *testing.T, bootstrap, in string, outs map[string]string, skip func(string) bool) *deriver {
	t.Helper()
	d := &deriver{in: in, outs: outs, skip: skip, done: make(chan struct{}),
		cl: newClient(t, bootstrap, kgo.ConsumeTopics(in), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-d.done })
	go func() {
		defer close(d.done)
		for ctx.Err() == nil {
			fs := d.cl.PollFetches(ctx)
			var out []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				if d.skip(string(r.Value)) {
					return
				}
				for _, topic := range slices.Sorted(maps.Keys(d.outs)) {
					out = append(out, &kgo.Record{Topic: topic, Partition: r.Partition, Key: r.Key,
						Value: append([]byte(d.outs[topic]), r.Value...), Headers: slices.Clone(r.Headers)})
				}
			})
			if len(out) == 0 {
				continue
			}
			err := d.cl.ProduceSync(ctx, out...).FirstErr()
			d.mu.Lock()
			if err != nil && d.err == nil && ctx.Err() == nil {
				d.err = err
			}
			d.derived += len(out) / len(d.outs)
			d.mu.Unlock()
		}
	}()
	return d
}

// count returns how many inputs the application derived records from,
// and its first error.
func (d *deriver) count() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.derived, d.err
}

// holdsOnce checks that topic on node n holds each value of want exactly
// once and nothing else.
func holdsOnce(t *testing.T, n *node, topic string, want []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := verify.ReadAll(ctx, n.cl, topic)
	if err != nil {
		t.Fatalf("reading %s on %s: %v", topic, n.alias, err)
	}
	count := map[string]int{}
	for _, rs := range got {
		for _, r := range rs {
			count[string(r.Value)]++
		}
	}
	var missing, dups, extra []string
	for _, v := range want {
		switch count[v] {
		case 0:
			missing = append(missing, v)
		case 1:
		default:
			dups = append(dups, v)
		}
		delete(count, v)
	}
	for v := range count {
		extra = append(extra, v)
	}
	first := func(vs []string) []string { slices.Sort(vs); return vs[:min(len(vs), 5)] }
	if len(missing)+len(dups)+len(extra) > 0 {
		t.Errorf("%s %s: %d missing %v, %d duplicated %v, %d unexpected %v (of %d expected)",
			n.alias, topic, len(missing), first(missing), len(dups), first(dups), len(extra), first(extra), len(want))
		return
	}
	t.Logf("%s %s: each of the %d records once", n.alias, topic, len(want))
}

// foreignTotal sums kmirror_provenance_foreign_records_total for reason.
func foreignTotal(k *proc, reason string) (float64, error) {
	_, body, err := k.get("/metrics")
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "kmirror_provenance_foreign_records_total{") || !strings.Contains(line, `reason="`+reason+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			total += v
		}
	}
	return total, nil
}

// TestMeshDerivedAndForgedRecords runs a full mesh a <-> b <-> c with
// identity names while an application on b derives a record from every
// record of orders it reads (records of a, of c and of b itself) and
// writes it to orders and to derived with the input's headers forwarded,
// provenance mark included, as Kafka Streams does by default. A producer
// on a writes records with forged marks naming the flow from b (in the
// current format and in the older one). Afterwards every cluster holds
// every record, derived and forged ones included, exactly once, and
// nothing moves for 30 s: a mark proves a copy only where the flow it
// names wrote that very offset.
func TestMeshDerivedAndForgedRecords(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	nodes := startNodes(t, "a", "b", "c")
	const parts, perOrigin, forged = int32(3), 300, 40
	for _, n := range nodes {
		createTopic(t, n.cl, "orders", parts, nil)
		createTopic(t, n.cl, "derived", parts, nil)
	}
	var flows strings.Builder
	for _, f := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "a"}, {"b", "c"}, {"c", "a"}, {"c", "b"}} {
		flows.WriteString(identityFlow(f[0], f[1], "orders|derived"))
	}
	addr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, topologyConfig(nodes, addr, flows.String())), addr)
	waitReady(t, k)

	app := startDeriver(t, nodes["b"].c.Bootstrap(), "orders", map[string]string{"orders": "d-", "derived": "x-"},
		func(v string) bool { return strings.HasPrefix(v, "d-") })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make(chan error, 3)
	for _, a := range []string{"a", "b", "c"} {
		go func() { errs <- produceOrigin(ctx, nodes[a], "orders", parts, perOrigin) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Forged on a: marks naming b-to-a, which did not write them.
	a, b := nodes["a"], nodes["b"]
	var fake []*kgo.Record
	for i := range forged {
		mark := provenance.Mark{Writer: "b-to-a", Path: []string{b.id, a.id}}.Encode()
		if i%2 == 1 {
			mark = []byte(b.id + "," + a.id) // the older format
		}
		fake = append(fake, &kgo.Record{Topic: "orders", Partition: int32(i) % parts, Value: fmt.Appendf(nil, "forged-%d", i),
			Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte("a")}, {Key: provenance.Header, Value: mark}}})
	}
	produce(t, a.cl, fake)

	// The inputs the application sees on b: every record of the three
	// origins and the forged ones.
	var inputs []string
	for _, o := range []string{"a", "b", "c"} {
		for seq := range perOrigin {
			inputs = append(inputs, fmt.Sprintf("%s-%d", o, seq))
		}
	}
	for i := range forged {
		inputs = append(inputs, fmt.Sprintf("forged-%d", i))
	}
	waitFor(t, 2*time.Minute, "the application to derive from every input", func() (bool, string) {
		n, err := app.count()
		if err != nil {
			t.Fatalf("application on b: %v", err)
		}
		return n >= len(inputs), fmt.Sprintf("%d of %d", n, len(inputs))
	})
	var wantOrders, wantDerived []string
	for _, v := range inputs {
		wantOrders = append(wantOrders, v, "d-"+v)
		wantDerived = append(wantDerived, "x-"+v)
	}
	start := time.Now()
	waitFor(t, 3*time.Minute, "every record on every cluster", func() (bool, string) {
		done, state := true, ""
		for _, at := range []string{"a", "b", "c"} {
			o, d := sum(endOffsets(t, nodes[at].cl, "orders")), sum(endOffsets(t, nodes[at].cl, "derived"))
			done = done && o >= int64(len(wantOrders)) && d >= int64(len(wantDerived))
			state += fmt.Sprintf("%s: orders %d derived %d; ", at, o, d)
		}
		return done, state
	})
	t.Logf("derived: %d inputs derived on b; every cluster holds them %s after the application finished", len(inputs), time.Since(start).Round(time.Millisecond))

	ends := map[string][2]map[int32]int64{}
	for at, n := range nodes {
		ends[at] = [2]map[int32]int64{endOffsets(t, n.cl, "orders"), endOffsets(t, n.cl, "derived")}
	}
	for quiet := time.Now(); time.Since(quiet) < 30*time.Second; time.Sleep(time.Second) {
		for at, n := range nodes {
			o, d := endOffsets(t, n.cl, "orders"), endOffsets(t, n.cl, "derived")
			if len(o) == int(parts) && len(d) == int(parts) && (!maps.Equal(o, ends[at][0]) || !maps.Equal(d, ends[at][1])) {
				t.Fatalf("%s moved after the writers stopped: orders %v → %v, derived %v → %v", at, ends[at][0], o, ends[at][1], d)
			}
		}
	}
	t.Log("derived: end offsets unchanged for 30 s on every cluster")
	for _, at := range []string{"a", "b", "c"} {
		holdsOnce(t, nodes[at], "orders", wantOrders)
		holdsOnce(t, nodes[at], "derived", wantDerived)
	}
	notCopy, _ := foreignTotal(k, "not_a_copy")
	unproven, _ := foreignTotal(k, "unproven")
	t.Logf("derived: records with a mark that proved no copy: %v disproven, %v unproven in time", notCopy, unproven)
	// Each record derived from a marked input (of a, of c, forged),
	// in orders and in derived, leaves b by two flows with a forwarded
	// mark; each forged record leaves a by two flows.
	if want := float64(2*2*(2*perOrigin+forged) + 2*forged); notCopy+unproven != want {
		t.Errorf("foreign records counted %v, want %v", notCopy+unproven, want)
	}
}

// TestFailbackCopiesDerivedRecords fails over to the DR cluster, where an
// application derives records from the replicated ones with their headers
// forwarded (provenance mark included) and producers write records of
// their own; the failback copies every one of them back to the primary,
// once: a forwarded mark does not make a derived record a copy.
func TestFailbackCopiesDerivedRecords(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic, n, local = "orders", 600, 100
	createTopic(t, p.srcCl, topic, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_naming: identity
`))
	seq := func(prefix string, from, count int) []*kgo.Record {
		recs := make([]*kgo.Record, count)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Partition: int32((from + i) % 2), Value: fmt.Appendf(nil, "%s%d", prefix, from+i)}
		}
		return recs
	}
	k := startKmirror(t, cfgPath, httpAddr)
	produce(t, p.srcCl, seq("p-", 0, n))
	waitFor(t, time.Minute, "the records on the DR cluster", func() (bool, string) {
		c := sum(endOffsets(t, p.dstCl, topic))
		return c >= n, fmt.Sprintf("%d", c)
	})
	k.stop()
	out, errOut, err := runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e")
	t.Logf("kmirror failover:\n%s%s", out, errOut)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}

	// On the DR cluster: local records, and an application deriving from
	// every record of orders with the headers forwarded.
	produce(t, p.dstCl, seq("l-", 0, local))
	app := startDeriver(t, p.dst.Bootstrap(), topic, map[string]string{topic: "d-"}, func(v string) bool { return strings.HasPrefix(v, "d-") })
	waitFor(t, time.Minute, "the application to derive from every record", func() (bool, string) {
		c, err := app.count()
		if err != nil {
			t.Fatalf("application: %v", err)
		}
		return c >= n+local, fmt.Sprintf("%d of %d", c, n+local)
	})
	marked := 0
	for _, rs := range readCommitted(t, t.Context(), p.dst.Bootstrap(), topic) {
		for _, r := range rs {
			if strings.HasPrefix(string(r.Value), "d-p-") && markPath(r.Headers) != nil {
				marked++
			}
		}
	}
	if marked != n {
		t.Fatalf("%d derived records carry the forwarded mark, want %d", marked, n)
	}

	out, errOut, err = runKmirror(t, 2*time.Minute, "failback", "--config", cfgPath, "--flow", "e2e")
	t.Logf("kmirror failback:\n%s%s", out, errOut)
	if err != nil {
		t.Fatalf("failback: %v", err)
	}
	back := local + n + local // local records, and one derived from each record
	if !strings.Contains(out, fmt.Sprintf("Records copied back: %d", back)) {
		t.Errorf("failback report does not say %d records were copied back", back)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("p-%d", i), fmt.Sprintf("d-p-%d", i))
	}
	for i := range local {
		want = append(want, fmt.Sprintf("l-%d", i), fmt.Sprintf("d-l-%d", i))
	}
	holdsOnce(t, &node{alias: "primary", cl: p.srcCl}, topic, want)
}

// TestVerifyReportsForgedRecordNotCopied forces what an older kmirror did
// with a record whose forged mark named the target (the flow passed over
// it as a loop) and checks that `kmirror verify` no longer hides it: the
// record is not a proven copy, so it is missing from the target, and
// verify exits 1 naming it.
func TestVerifyReportsForgedRecordNotCopied(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic = "audit"
	createTopic(t, p.srcCl, topic, 1, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["audit"]
topic_naming: identity
`))
	k := startKmirror(t, cfgPath, httpAddr)
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "r-%d", i)})
	}
	produce(t, p.srcCl, recs)
	waitFor(t, time.Minute, "the records on the target", func() (bool, string) {
		c := sum(endOffsets(t, p.dstCl, topic))
		return c >= 20, fmt.Sprintf("%d", c)
	})
	k.stop()

	// A record whose mark names a flow from the target that does not
	// exist, and the older format's bare path from the target.
	srcID, dstID := clusterIDOf(t, p.srcCl), clusterIDOf(t, p.dstCl)
	produce(t, p.srcCl, []*kgo.Record{
		{Topic: topic, Value: []byte("forged-new"), Headers: []kgo.RecordHeader{{Key: provenance.Header, Value: provenance.Mark{Writer: "target-to-source", Path: []string{dstID, srcID}}.Encode()}}},
		{Topic: topic, Value: []byte("forged-old"), Headers: []kgo.RecordHeader{{Key: provenance.Header, Value: []byte(dstID + "," + srcID)}}},
	})
	// What an older kmirror stored after dropping them as loops: the
	// position past them, the last run covering them.
	store := progress.NewStore(p.dstCl, policy.ProgressTopic("e2e"))
	loaded, err := store.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	id := progress.Partition{Topic: topic, Partition: 0}
	pos, runs := loaded.Positions[id], loaded.Runs[id]
	if pos.SourceNext != 20 || len(runs) == 0 {
		t.Fatalf("stored position %+v, %d runs; want 20 and runs", pos, len(runs))
	}
	last := runs[len(runs)-1]
	last.Tail += 2
	pos.SourceNext, pos.Stopped = 22, true
	if err := store.Write(t.Context(), []progress.Entry{{Partition: id, Position: pos, Runs: []offsetmap.Run{last.Unsaved()}}}); err != nil {
		t.Fatal(err)
	}

	res := runKmirrorOnce(t, 2*time.Minute, "verify", "--config", cfgPath, "--flow", "e2e")
	t.Logf("verify (exit %d):\n%s%s", res.code, res.stdout, res.stderr)
	if res.code != 1 {
		t.Fatalf("verify: exit %d, want 1", res.code)
	}
	for _, off := range []int{20, 21} {
		if want := fmt.Sprintf(`missing: topic "audit" partition 0 source offset %d`, off); !strings.Contains(res.stdout, want) {
			t.Errorf("verify does not say %q", want)
		}
	}
}

// clusterIDOf returns the cluster ID of the cluster cl is connected to.
func clusterIDOf(t *testing.T, cl *kgo.Client) string {
	t.Helper()
	m, err := kadm.NewClient(cl).BrokerMetadata(t.Context())
	if err != nil || m.Cluster == "" {
		t.Fatalf("cluster ID: %q, %v", m.Cluster, err)
	}
	return m.Cluster
}
