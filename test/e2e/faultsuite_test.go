package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// The fault suite runs a steady producer on the source and breaks things
// while kmirror copies it: kmirror killed, the target broker restarted,
// the network to either cluster cut, source partition leaders moved. Each
// case ends with the target holding every source record, by content and in
// order per partition; duplicates are counted, printed and compared with
// kmirror_duplicate_records_total.

// faultPair is a source and a target cluster, each behind its own TCP
// proxy: kmirror reaches them through the proxies (both brokers advertise
// their proxy's address), the test's clients go around them.
type faultPair struct {
	*pair
	srcProxy, dstProxy *tcpProxy
}

func startFaultPair(t *testing.T) *faultPair {
	t.Helper()
	kafkatest.RequireLibs(t)
	return startFaultPairOn(t, "")
}

// startFaultPairOn is startFaultPair with both clusters run from the Kafka
// jars in libs ("": the pinned release).
func startFaultPairOn(t *testing.T, libs string) *faultPair {
	t.Helper()
	sp, dp := startProxy(t, 0), startProxy(t, 0)
	advertise := func(p *tcpProxy) map[string]string {
		return map[string]string{"advertised.listeners": "PLAINTEXT://" + p.addr()}
	}
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{Name: "source", Libs: libs, ExtraProps: advertise(sp)})
	}()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target", Libs: libs, ExtraProps: advertise(dp)})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	sp.setBackend(src.Bootstrap())
	dp.setBackend(dst.Bootstrap())
	return &faultPair{
		pair: &pair{
			src: src, dst: dst,
			srcCl: newClient(t, src.Bootstrap(), sp.direct()),
			dstCl: newClient(t, dst.Bootstrap(), dp.direct()),
		},
		srcProxy: sp, dstProxy: dp,
	}
}

// config is a one-flow config copying topic under its own name through
// the proxies.
func (fp *faultPair) config(flow, topic, httpAddr string) string {
	return faultConfig(flow, topic, httpAddr, []string{fp.srcProxy.addr()}, fp.dstProxy.addr())
}

func faultConfig(flow, topic, httpAddr string, src []string, dst string) string {
	return fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: ["%s"]
  dst:
    bootstrap_servers: [%q]
flows:
  - name: %s
    source: src
    target: dst
    topics: [%q]
    topic_naming: identity
    topic_refresh_interval: 1s
    ownership_timeout: 6s
    heartbeat_interval: off
http:
  listen: %q
`, strings.Join(src, `", "`), dst, flow, topic, httpAddr)
}

// TestFaultSuite runs the faults that need a single-broker source side by
// side (each waits most of its time: on the producer, on outages of tens
// of seconds), each on a pair of clusters of its own, as one restarts its
// target broker and another cuts its proxies. The suite itself is not
// parallel: nothing else runs beside it.
func TestFaultSuite(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *faultPair)
	}{
		{"SIGKILL_5_times", testKilledFiveTimes},
		{"target_broker_restarted", testTargetRestarted},
		{"network_cut", testNetworkCut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, startFaultPair(t))
		})
	}
}

// faultSeed returns the seed of the random kill moments:
// KMIRROR_FAULT_SEED if set, else the clock.
func faultSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("KMIRROR_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KMIRROR_FAULT_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// testKilledFiveTimes kills kmirror with SIGKILL five times at random
// moments while a producer writes 200,000 records over four partitions,
// restarting it each time.
func testKilledFiveTimes(t *testing.T, fp *faultPair) {
	const (
		flow       = "kill5"
		topic      = "kill5"
		partitions = 4
		total      = 200_000
		batch      = 1_000
		kills      = 5
		// The producer holds the last records back until every kill is
		// done, so that each one happens mid-stream.
		hold = total - 20_000
		// Each kill comes a random time, up to maxDelay, after the
		// process held the flow: while it compares the target with the
		// source on resume, or while it copies.
		maxDelay = 5 * time.Second
	)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d (KMIRROR_FAULT_SEED=%d repeats these kill moments)", seed, seed)
	createTopic(t, fp.srcCl, topic, partitions, nil)

	var produced atomic.Int64
	release := make(chan struct{})
	prodErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		tick := time.NewTicker(250 * time.Millisecond) // 4,000 records/s
		defer tick.Stop()
		seq := make([]int, partitions)
		for n := 0; n < total; n += batch {
			if n == hold {
				select {
				case <-release:
				case <-ctx.Done():
					prodErr <- ctx.Err()
					return
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				prodErr <- ctx.Err()
				return
			}
			recs := make([]*kgo.Record, batch)
			for i := range recs {
				part := (n + i) % partitions
				recs[i] = &kgo.Record{Topic: topic, Partition: int32(part), Key: fmt.Appendf(nil, "k%d", n+i),
					Value: fmt.Appendf(nil, "%d:%d:%s", part, seq[part], strings.Repeat("v", 100))}
				seq[part]++
			}
			if err := fp.srcCl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				prodErr <- err
				return
			}
			produced.Add(batch)
		}
		prodErr <- nil
	}()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, fp.config(flow, topic, httpAddr))
	ownerSeries := fmt.Sprintf(`kmirror_flow_owner{flow=%q}`, flow)
	dupSeries := fmt.Sprintf(`kmirror_duplicate_records_total{flow=%q,topic=%q}`, flow, topic)
	skipSeries := fmt.Sprintf(`kmirror_resume_skipped_records_total{flow=%q,topic=%q}`, flow, topic)
	var dupReported, skipReported float64
	scrape := func(k *proc) {
		if _, body, err := k.get("/metrics"); err == nil {
			d, _ := outageMetric(body, dupSeries)
			s, _ := outageMetric(body, skipSeries)
			dupReported += d
			skipReported += s
		}
	}

	k := startKmirror(t, cfg, httpAddr)
	for i := 1; i <= kills; i++ {
		started := time.Now()
		atStart := sum(endOffsets(t, fp.dstCl, topic))
		delay := time.Duration(rng.Int64N(int64(maxDelay)))
		var held, wrote time.Duration
		var written int64
		for {
			select {
			case <-k.done:
				t.Fatalf("kmirror exited by itself before kill %d", i)
			default:
			}
			now := time.Since(started)
			if held == 0 {
				if _, body, err := k.get("/metrics"); err == nil {
					if v, ok := outageMetric(body, ownerSeries); ok && v == 1 {
						held = now
					}
				}
			}
			written = sum(endOffsets(t, fp.dstCl, topic)) - atStart
			if wrote == 0 && written > 0 {
				wrote = now
			}
			if held > 0 && now >= held+delay {
				break
			}
			if now > 2*time.Minute {
				t.Fatalf("kmirror did not hold the flow within 2m of start %d", i)
			}
			time.Sleep(100 * time.Millisecond)
		}
		scrape(k)
		n := produced.Load()
		k.kill()
		wroteAgain := "wrote nothing yet"
		if wrote > 0 {
			wroteAgain = fmt.Sprintf("first write after %s", wrote.Round(time.Millisecond))
		}
		t.Logf("kill %d: SIGKILL %s after start (held the flow after %s, then %s at random; %s; %d records written by this run); %d produced, stream running: %t",
			i, time.Since(started).Round(time.Millisecond), held.Round(time.Millisecond), delay.Round(time.Millisecond), wroteAgain, written, n, n < total)
		if n >= total {
			t.Errorf("kill %d came after the stream ended", i)
		}
		k = startKmirror(t, cfg, httpAddr)
	}
	close(release)
	restarted := time.Now()
	atStart := sum(endOffsets(t, fp.dstCl, topic))
	resumed := waitFor(t, 2*time.Minute, "the last run to write", func() (bool, string) {
		n := sum(endOffsets(t, fp.dstCl, topic))
		return n > atStart, fmt.Sprintf("target %d", n)
	})
	if err := <-prodErr; err != nil {
		t.Fatalf("producer: %v", err)
	}
	waitDelivered(t, k, fp.pair, topic, 3*time.Minute)
	took := time.Since(restarted)
	scrape(k)
	records, dups := checkDelivered(t, fp.pair, topic)
	t.Logf("SIGKILL x%d (seed %d): %d source records, every one on the target in order; %d duplicates on the target; kmirror counted %v duplicates and skipped %v records it found already written; last run wrote %s after start, caught up %s after start",
		kills, seed, records, dups, dupReported, skipReported, resumed.Round(time.Millisecond), took.Round(time.Millisecond))
	if float64(dups) != dupReported {
		t.Errorf("the target holds %d duplicates, kmirror_duplicate_records_total summed over the runs says %v", dups, dupReported)
	}
	k.stop()
}

// testTargetRestarted restarts the target broker under a running flow,
// first cleanly (SIGTERM), then after a crash (SIGKILL).
func testTargetRestarted(t *testing.T, fp *faultPair) {
	const (
		flow       = "restart"
		topic      = "restart"
		partitions = 3
	)
	createTopic(t, fp.srcCl, topic, partitions, nil)
	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, fp.config(flow, topic, httpAddr)), httpAddr)
	waitReady(t, k)
	prod := startSeqProducer(t, fp.srcCl, topic, partitions)
	defer prod.stop()

	for _, kill := range []bool{false, true} {
		how := "Stop (SIGTERM) + Restart"
		if kill {
			how = "Kill (SIGKILL) + Restart"
		}
		o := startOutage(t, k, flow, "dst", "target", fp.pair, topic)
		if kill {
			fp.dst.Kill()
		} else {
			fp.dst.Stop()
		}
		o.waitDown()
		// Records go on arriving at the source while the target is down.
		n0 := prod.acked()
		waitFor(t, 30*time.Second, "records produced while the target is down", func() (bool, string) {
			return prod.acked() >= n0+1000, fmt.Sprintf("%d acked", prod.acked()-n0)
		})
		fp.dst.Restart()
		o.restored(how)
	}
	prod.stop()
	waitDelivered(t, k, fp.pair, topic, 2*time.Minute)
	checkDeliveredMetric(t, k, fp.pair, flow, topic, "target broker restarted twice")
	k.stop()
}

// testNetworkCut cuts kmirror's connections to the source, then to the
// target, for 30 s each, while the producer keeps writing to the source.
func testNetworkCut(t *testing.T, fp *faultPair) {
	const (
		flow       = "cut"
		topic      = "cut"
		partitions = 3
		cutFor     = 30 * time.Second
	)
	createTopic(t, fp.srcCl, topic, partitions, nil)
	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, fp.config(flow, topic, httpAddr)), httpAddr)
	waitReady(t, k)
	prod := startSeqProducer(t, fp.srcCl, topic, partitions)
	defer prod.stop()

	for _, side := range []struct {
		alias, role string
		proxy       *tcpProxy
	}{
		{"src", "source", fp.srcProxy},
		{"dst", "target", fp.dstProxy},
	} {
		o := startOutage(t, k, flow, side.alias, side.role, fp.pair, topic)
		side.proxy.cut()
		o.waitDown()
		// /readyz stays 503 for the whole cut.
		for time.Since(o.began) < cutFor {
			if code, body, err := k.get("/readyz"); err != nil || code != 503 {
				t.Errorf("%s cut for %s: /readyz answered %d %q (%v), want 503", side.role, time.Since(o.began).Round(time.Second), code, body, err)
			}
			time.Sleep(time.Second)
		}
		side.proxy.restore()
		o.restored(fmt.Sprintf("%s connection cut for %s (%d connections refused)", side.role, cutFor, side.proxy.refused.Load()))
	}
	prod.stop()
	waitDelivered(t, k, fp.pair, topic, 2*time.Minute)
	checkDeliveredMetric(t, k, fp.pair, flow, topic, "source and target connections cut for 30 s each")
	k.stop()
}

// TestFaultLeaderMove moves the leadership of every source partition from
// one broker to the other and back while a producer writes and kmirror
// copies.
func TestFaultLeaderMove(t *testing.T) {
	const (
		flow       = "leaders"
		topic      = "leaders"
		partitions = 4
	)
	p := startPairSourceBrokers(t, 2)
	// Every partition has both brokers as replicas; half are led by
	// broker 1, half by broker 2.
	replicas := map[int32][]int32{}
	for i := range int32(partitions) {
		replicas[i] = []int32{1 + i%2, 2 - i%2}
	}
	createTopicReplicas(t, p.srcCl, topic, replicas)

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, faultConfig(flow, topic, httpAddr, p.src.Bootstraps(), p.dst.Bootstrap())), httpAddr)
	waitReady(t, k)
	prod := startSeqProducer(t, p.srcCl, topic, partitions)
	defer prod.stop()

	adm := kadm.NewClient(p.srcCl)
	for round := 1; round <= 2; round++ {
		base := sum(endOffsets(t, p.dstCl, topic))
		waitFor(t, time.Minute, "records flowing", func() (bool, string) {
			n := sum(endOffsets(t, p.dstCl, topic))
			return n >= base+500, fmt.Sprintf("target %d, had %d", n, base)
		})
		mark := len(k.output())
		// Swap the replicas of every partition, so the other broker is
		// preferred, and elect it.
		var req kadm.AlterPartitionAssignmentsReq
		for part, rs := range replicas {
			rs = []int32{rs[1], rs[0]}
			replicas[part] = rs
			req.Assign(topic, part, rs)
		}
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := adm.AlterPartitionAssignments(ctx, req)
		cancel()
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatalf("reassigning %s: %v", topic, err)
		}
		waitFor(t, time.Minute, "the new preferred replicas to lead", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			set := kadm.TopicsSet{}
			for part := range replicas {
				set.Add(topic, part)
			}
			_, _ = adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, set)
			leaders, err := partitionLeaders(ctx, adm, topic)
			if err != nil {
				return false, err.Error()
			}
			for part, rs := range replicas {
				if leaders[part] != rs[0] {
					return false, fmt.Sprintf("leaders %v, want %v", leaders, replicas)
				}
			}
			return true, ""
		})
		moved := time.Now()
		ends := allEndOffsets(t, p.srcCl, topic, partitions)
		recovered := waitFor(t, 2*time.Minute, "the target to hold what the source held when the leaders moved", func() (bool, string) {
			d := endOffsets(t, p.dstCl, topic)
			return atLeast(d, ends), fmt.Sprintf("source %v, target %v", ends, d)
		})
		lines := logLinesSince(k, mark)
		noisy := levelLines(lines, "WARN", "ERROR")
		t.Logf("leader move %d: leaders moved in %s; the target held every record the source had then %s later; kmirror logged %d lines, %d at WARN or ERROR",
			round, moved.Sub(began).Round(time.Millisecond), recovered.Round(time.Millisecond), len(lines), len(noisy))
		for _, l := range noisy {
			t.Logf("  %s", l)
		}
		if len(noisy) > 0 {
			t.Errorf("a leader move is routine, but kmirror logged %d lines at WARN or ERROR", len(noisy))
		}
	}
	prod.stop()
	waitDelivered(t, k, p, topic, 2*time.Minute)
	checkDeliveredMetric(t, k, p, flow, topic, "source leaders moved twice")
	k.stop()
}

// createTopicReplicas creates topic with the given replicas per partition
// (the first one preferred leader) and waits until they are all in sync.
func createTopicReplicas(t *testing.T, cl *kgo.Client, topic string, replicas map[int32][]int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	for part, rs := range replicas {
		ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		ra.Partition, ra.Replicas = part, rs
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, cl)
	if err == nil && resp.Topics[0].ErrorCode != 0 {
		err = fmt.Errorf("error code %d: %v", resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage)
	}
	if err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
	adm := kadm.NewClient(cl)
	waitFor(t, time.Minute, topic+" in sync on every replica", func() (bool, string) {
		md, err := adm.Metadata(ctx, topic)
		if err != nil {
			return false, err.Error()
		}
		td := md.Topics[topic]
		if td.Err != nil || len(td.Partitions) != len(replicas) {
			return false, fmt.Sprintf("%v, %d partitions", td.Err, len(td.Partitions))
		}
		for part, pd := range td.Partitions {
			if len(pd.ISR) != len(replicas[part]) || pd.Leader != replicas[part][0] {
				return false, fmt.Sprintf("partition %d leader %d ISR %v", part, pd.Leader, pd.ISR)
			}
		}
		return true, ""
	})
}

// partitionLeaders returns the leader of every partition of topic.
func partitionLeaders(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int32, error) {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	td := md.Topics[topic]
	if td.Err != nil {
		return nil, td.Err
	}
	out := map[int32]int32{}
	for part, pd := range td.Partitions {
		out[part] = pd.Leader
	}
	return out, nil
}

// outage follows one cluster outage as kmirror sees it: /readyz, the
// cluster_up gauge, the cluster_unreachable error count and the log.
type outage struct {
	t           *testing.T
	k           *proc
	p           *pair
	flow, topic string
	alias, role string
	upSeries    string
	errSeries   string
	errsBefore  float64
	mark        int // length of kmirror's output when the outage began
	began       time.Time
}

// startOutage notes the state before a cluster goes away; the caller
// breaks it right after.
func startOutage(t *testing.T, k *proc, flow, alias, role string, p *pair, topic string) *outage {
	t.Helper()
	o := &outage{t: t, k: k, p: p, flow: flow, topic: topic, alias: alias, role: role,
		upSeries:  fmt.Sprintf(`kmirror_cluster_up{cluster=%q,flow=%q}`, alias, flow),
		errSeries: fmt.Sprintf(`kmirror_errors_total{flow=%q,kind="cluster_unreachable"}`, flow),
	}
	base := sum(endOffsets(t, p.dstCl, topic))
	waitFor(t, time.Minute, "records flowing before the outage", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= base+300, fmt.Sprintf("target %d, had %d", n, base)
	})
	_, body, _ := k.get("/metrics")
	o.errsBefore, _ = outageMetric(body, o.errSeries)
	o.mark = len(k.output())
	o.began = time.Now()
	return o
}

// waitDown waits until kmirror reports the cluster down: /readyz 503
// naming it, kmirror_cluster_up 0 and a new cluster_unreachable error.
func (o *outage) waitDown() {
	o.t.Helper()
	waitFor(o.t, 20*time.Second, "/readyz 503 with "+o.role+"_up=false", func() (bool, string) {
		code, body, err := o.k.get("/readyz")
		return code == 503 && strings.Contains(body, o.role+"_up=false"), fmt.Sprintf("%d %q %v", code, body, err)
	})
	_, body, _ := o.k.get("/readyz")
	o.t.Logf("%s down: /readyz 503 after %s: %q", o.role, time.Since(o.began).Round(time.Millisecond), strings.TrimSpace(body))
	waitFor(o.t, 20*time.Second, o.upSeries+" 0 and a new cluster_unreachable error", func() (bool, string) {
		_, body, err := o.k.get("/metrics")
		up, okUp := outageMetric(body, o.upSeries)
		errs, _ := outageMetric(body, o.errSeries)
		return okUp && up == 0 && errs > o.errsBefore, fmt.Sprintf("up=%v (present %t) errors=%v (before %v) err=%v", up, okUp, errs, o.errsBefore, err)
	})
}

// restored waits until, after the cluster came back, the target holds
// every record the source held then and kmirror is ready again; it prints
// the figures and checks the log: one line for the cluster going away, one
// for it coming back, and no flood.
func (o *outage) restored(what string) {
	o.t.Helper()
	back := time.Now()
	ends := allEndOffsets(o.t, o.p.srcCl, o.topic, 0)
	recovered := waitFor(o.t, 2*time.Minute, "the target to hold what the source held when the cluster came back", func() (bool, string) {
		d := endOffsets(o.t, o.p.dstCl, o.topic)
		return atLeast(d, ends), fmt.Sprintf("source %v, target %v", ends, d)
	})
	waitFor(o.t, time.Minute, "/readyz 200 and "+o.upSeries+" 1", func() (bool, string) {
		code, body, err := o.k.get("/readyz")
		_, metrics, _ := o.k.get("/metrics")
		up, _ := outageMetric(metrics, o.upSeries)
		return code == 200 && up == 1, fmt.Sprintf("%d %q %v; up=%v", code, body, err, up)
	})
	ready := time.Since(back)
	_, body, _ := o.k.get("/metrics")
	errs, _ := outageMetric(body, o.errSeries)
	lines := logLinesSince(o.k, o.mark)
	down := matching(lines, "level=ERROR", `msg="cluster unreachable; retrying"`, "cluster="+o.alias)
	// The way back is one "cluster reachable" line; when the target was
	// away longer than the flow's lease (two thirds of ownership_timeout),
	// the flow also held and started again ("flow started").
	up := matching(lines, "level=INFO", `msg="cluster reachable"`, "cluster="+o.alias)
	o.t.Logf("%s: down %s; the target held every record the source had at the restore %s after it, ready again %s after it; kmirror logged %d lines (%d at WARN or ERROR), %s counted %v health checks that failed",
		what, back.Sub(o.began).Round(time.Millisecond), recovered.Round(time.Millisecond), ready.Round(time.Millisecond),
		len(lines), len(levelLines(lines, "WARN", "ERROR")), o.errSeries, errs-o.errsBefore)
	for _, l := range lines {
		o.t.Logf("  %s", l)
	}
	if len(down) != 1 {
		o.t.Errorf("%d %q lines for cluster %s, want exactly 1", len(down), "cluster unreachable; retrying", o.alias)
	}
	if len(up) != 1 {
		o.t.Errorf("%d %q lines for cluster %s, want exactly 1", len(up), "cluster reachable", o.alias)
	}
	if n, most := len(levelLines(lines, "WARN", "ERROR")), maxOutageLines+len(ends); n > most {
		o.t.Errorf("%d lines at WARN or ERROR during one outage, want at most %d", n, most)
	}
}

// maxOutageLines bounds the lines at WARN or ERROR kmirror may log for one
// outage, besides one per partition: one for the cluster, one per failure
// streak of each part of the flow (topic sync, group sync, progress, the
// status record, the ownership heartbeat), and the three of losing the
// flow (the lease ended, the data plane stopped with writes unconfirmed,
// waiting to hold it again), not one per retry. Which of them an outage
// shows depends on what each part was doing when the cluster went.
const maxOutageLines = 9

// logLinesSince returns kmirror's output lines after the first mark bytes.
func logLinesSince(k *proc, mark int) []string {
	out := k.output()
	if mark > len(out) {
		mark = len(out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out[mark:]), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// matching returns the lines containing every one of subs.
func matching(lines []string, subs ...string) []string {
	var out []string
	for _, l := range lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// levelLines returns the lines logged at one of levels.
func levelLines(lines []string, levels ...string) []string {
	var out []string
	for _, l := range lines {
		for _, lv := range levels {
			if strings.Contains(l, "level="+lv+" ") {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// allEndOffsets returns the end offset of every partition of topic,
// asking again while the answer is incomplete (a leader just moved);
// partitions 0 means as many as the first complete answer lists.
func allEndOffsets(t *testing.T, cl *kgo.Client, topic string, partitions int) map[int32]int64 {
	t.Helper()
	var ends map[int32]int64
	waitFor(t, 30*time.Second, "the end offsets of "+topic, func() (bool, string) {
		ends = endOffsets(t, cl, topic)
		return len(ends) > 0 && (partitions == 0 || len(ends) == partitions), fmt.Sprintf("%v", ends)
	})
	return ends
}

// atLeast reports whether every partition of want is in got with an end
// offset at least as high.
func atLeast(got, want map[int32]int64) bool {
	if len(want) == 0 {
		return false
	}
	for part, n := range want {
		if got[part] < n {
			return false
		}
	}
	return true
}

func waitReady(t *testing.T, k *proc) {
	t.Helper()
	waitFor(t, time.Minute, "kmirror to be ready", func() (bool, string) {
		select {
		case <-k.done:
			t.Fatalf("kmirror exited:\n%s", k.output())
		default:
		}
		code, body, err := k.get("/readyz")
		return code == 200, fmt.Sprintf("%d %q %v", code, body, err)
	})
}

// waitDelivered waits until kmirror has copied every record of topic (it
// reports no lag and no failing partition) and every target partition
// holds at least as many records as its source partition.
func waitDelivered(t *testing.T, k *proc, p *pair, topic string, timeout time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, timeout, "the target to catch up", func() (bool, string) {
		se, de := endOffsets(t, p.srcCl, topic), endOffsets(t, p.dstCl, topic)
		st, err := flowTotals(k)
		if err != nil {
			return false, err.Error()
		}
		return st.Lag == 0 && st.Failing == 0 && atLeast(de, se), fmt.Sprintf("source %v target %v kmirror %+v", se, de, st)
	})
}

// checkDeliveredMetric checks the target against the source (see
// checkDelivered) and the duplicates against kmirror's count.
func checkDeliveredMetric(t *testing.T, k *proc, p *pair, flow, topic, what string) {
	t.Helper()
	records, dups := checkDelivered(t, p, topic)
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	reported, _ := outageMetric(body, fmt.Sprintf(`kmirror_duplicate_records_total{flow=%q,topic=%q}`, flow, topic))
	retried, _ := outageMetric(body, fmt.Sprintf(`kmirror_retried_records_total{flow=%q,topic=%q}`, flow, topic))
	t.Logf("%s: %d source records, every one on the target in order; %d duplicates on the target; kmirror counted %v duplicates and %v retried records",
		what, records, dups, reported, retried)
	if float64(dups) != reported {
		t.Errorf("the target holds %d duplicates, kmirror_duplicate_records_total says %v", dups, reported)
	}
}

// checkDelivered compares topic on the target with the source, partition
// by partition. Every source record must be on the target, identical (key,
// value, headers, timestamp) and in source order. A target record may
// repeat one already copied (written again after a fault); those are
// counted as duplicates. Values are unique within a source partition.
func checkDelivered(t *testing.T, p *pair, topic string) (records, dups int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	parts := make([]int32, 0, len(srcRecs))
	for part := range srcRecs {
		parts = append(parts, part)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, part := range parts {
		src, dst := srcRecs[part], dstRecs[part]
		records += len(src)
		index := make(map[string]int, len(src))
		for i, r := range src {
			index[string(r.Value)] = i
		}
		next, partDups := 0, 0
		for _, r := range dst {
			i, ok := index[string(r.Value)]
			switch {
			case !ok:
				t.Fatalf("partition %d: target offset %d holds a record the source does not have: %.40q", part, r.Offset, r.Value)
			case diffCopy(src[i], r) != "":
				t.Fatalf("partition %d: target offset %d differs from source offset %d: %s", part, r.Offset, src[i].Offset, diffCopy(src[i], r))
			case i == next:
				next++
			case i < next:
				partDups++
			default:
				t.Fatalf("partition %d: target offset %d is source offset %d, but source offset %d is not on the target before it: records lost or reordered",
					part, r.Offset, src[i].Offset, src[next].Offset)
			}
		}
		if next != len(src) {
			t.Fatalf("partition %d: only the first %d of %d source records are on the target", part, next, len(src))
		}
		if partDups > 0 {
			t.Logf("partition %d: %d duplicates", part, partDups)
		}
		dups += partDups
	}
	return records, dups
}
