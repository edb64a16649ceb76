package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// TestSlowStartResumesFromStoredPositions restarts kmirror while every new
// connection to the target cluster is held 7 s before it answers, so the
// first read of the progress topic is slow. The flow must resume from its
// stored positions: nothing copied twice, nothing skipped, with
// start_from: earliest and with start_from: latest.
func TestSlowStartResumesFromStoredPositions(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	for _, tc := range []struct {
		startFrom string
		topic     string
	}{
		{"earliest", "orders"},
		{"latest", "events"},
	} {
		// Each case slows every connection to its target for a while:
		// each has clusters and a proxy of its own, and they run side by
		// side.
		t.Run("start_from_"+tc.startFrom, func(t *testing.T) {
			t.Parallel()
			proxy, p := startSlowPair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			createTopic(t, p.srcCl, tc.topic, 2, nil)
			seq := 0
			write := func(n int) {
				t.Helper()
				var recs []*kgo.Record
				for range n {
					recs = append(recs, &kgo.Record{Topic: tc.topic, Partition: int32(seq % 2), Key: fmt.Appendf(nil, "k%d", seq), Value: fmt.Appendf(nil, "%s-%d", tc.topic, seq)})
					seq++
				}
				produce(t, p.srcCl, recs)
			}
			if tc.startFrom == "earliest" {
				write(2000) // before the first start: copied
			}
			httpAddr := freeAddr(t)
			cfg := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
flows:
  - name: slow-%s
    source: src
    target: dst
    topics: [%q]
    start_from: %s
http:
  listen: %q
`, p.src.Bootstrap(), proxy.addr(), tc.startFrom, tc.topic, tc.startFrom, httpAddr))
			k := startKmirror(t, cfg, httpAddr)
			// With start_from: latest the flow copies what is written after
			// it positioned itself: write until records arrive.
			waitFor(t, 2*time.Minute, "records on the target", func() (bool, string) {
				write(100)
				n := sum(endOffsets(t, p.dstCl, "src."+tc.topic))
				return n > 0, fmt.Sprintf("%d on the target", n)
			})
			write(500)
			waitFor(t, 2*time.Minute, "the flow to catch up", func() (bool, string) {
				s, d := endOffsets(t, p.srcCl, tc.topic), endOffsets(t, p.dstCl, "src."+tc.topic)
				// Every source record after the first copied one is on the
				// target once: the source's end minus the target's end is
				// what was written before the flow positioned itself.
				tgt := readLog(t, ctx, p.dstCl, "src."+tc.topic)
				for part := range int32(2) {
					if len(tgt[part]) == 0 || string(tgt[part][len(tgt[part])-1].Value) != lastValue(t, ctx, p.srcCl, tc.topic, part) {
						return false, fmt.Sprintf("source %v, target %v", s, d)
					}
				}
				return true, ""
			})
			k.stop()
			before := sum(endOffsets(t, p.dstCl, "src."+tc.topic))
			write(1000) // while stopped: must be copied after the restart

			// Every connection made while kmirror starts, the reads of its
			// progress topic included, waits 7 s.
			proxy.slowFor(40 * time.Second)
			delayedBefore := proxy.delayed.Load()
			k = startKmirror(t, cfg, httpAddr)
			// Records written after the restart end the wait whatever the
			// flow resumed from; the check below says what it did.
			write(10)
			took := waitFor(t, 3*time.Minute, "the flow to catch up after the restart", func() (bool, string) {
				tgt := readLog(t, ctx, p.dstCl, "src."+tc.topic)
				for part := range int32(2) {
					if len(tgt[part]) == 0 || string(tgt[part][len(tgt[part])-1].Value) != lastValue(t, ctx, p.srcCl, tc.topic, part) {
						return false, "not yet"
					}
				}
				return true, ""
			})
			k.stop()
			srcRecs, dstRecs := readLog(t, ctx, p.srcCl, tc.topic), readLog(t, ctx, p.dstCl, "src."+tc.topic)
			var nSrc, nDst int
			for part := range int32(2) {
				s, d := srcRecs[part], dstRecs[part]
				nSrc, nDst = nSrc+len(s), nDst+len(d)
				// The target holds the source's records from the first one
				// copied, each once, in order.
				skip := len(s) - len(d)
				if skip < 0 || (tc.startFrom == "earliest" && skip != 0) {
					t.Errorf("partition %d: %d records on the source, %d on the target", part, len(s), len(d))
					continue
				}
				for i := range d {
					if diff := verify.Diff(s[skip+i], d[i]); diff != "" {
						t.Errorf("partition %d: target record %d differs from source record %d (a record copied twice or skipped): %s", part, i, skip+i, diff)
						break
					}
				}
			}
			t.Logf("start_from %s: restart with %d connections to the target held %s each; resumed in %s: %d records on the target before the restart, %d after; source %d, target %d",
				tc.startFrom, proxy.delayed.Load()-delayedBefore, proxy.delay, took.Round(time.Millisecond), before, nDst, nSrc, nDst)
			if proxy.delayed.Load() == delayedBefore {
				t.Errorf("no connection was delayed: the test did not slow the start-up")
			}
		})
	}
}

// startSlowPair starts a source and a target cluster, the target behind a
// proxy that can hold every new connection 7 s before it answers.
func startSlowPair(t *testing.T) (*tcpProxy, *pair) {
	t.Helper()
	proxy := startProxy(t, 7*time.Second)
	src, dst := startBehindProxy(t, proxy.addr())
	proxy.setBackend(dst.Bootstrap())
	return proxy, &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, proxy.addr())}
}

// startBehindProxy starts a source cluster and a target cluster that
// advertises proxyAddr: clients learn broker addresses from metadata, so
// every connection to the target goes through the proxy once the caller
// points the proxy at it.
func startBehindProxy(t *testing.T, proxyAddr string) (src, dst *kafkatest.Cluster) {
	t.Helper()
	kafkatest.RequireLibs(t) // skips or fails here, not in a goroutine below
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); src = kafkatest.Start(t, kafkatest.Options{Name: "source"}) }()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target", ExtraProps: map[string]string{
		"advertised.listeners": "PLAINTEXT://" + proxyAddr,
	}})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	return src, dst
}

// lastValue is the value of the last record of a partition.
func lastValue(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, part int32) string {
	t.Helper()
	rs := readLog(t, ctx, cl, topic)[part]
	if len(rs) == 0 {
		return ""
	}
	return string(rs[len(rs)-1].Value)
}
