package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/test/kafkatest"
)

// TestTargetBrokerKilledExactlyOnce restarts the target broker of an
// exactly-once flow twice while records keep arriving on the source, once
// stopped (SIGTERM) and once killed (SIGKILL, the open transactions and
// unflushed writes lost): a read_committed consumer of the target then
// sees every source record exactly once, in source order, each copy equal
// to its source record. A run in which the broker completed a transaction
// without its markers (a Kafka 4.x coordinator finding its partitions
// without a leader: see markersSkipped and docs/exactly-once.md) is
// skipped.
func TestTargetBrokerKilledExactlyOnce(t *testing.T) {
	t.Parallel()
	testTargetBrokerKilledExactlyOnce(t, startFaultPair(t))
}

// TestTargetBrokerKilledExactlyOnceKafka3 is TestTargetBrokerKilledExactlyOnce
// with both clusters on the Kafka 3.x release.
func TestTargetBrokerKilledExactlyOnceKafka3(t *testing.T) {
	t.Parallel()
	testTargetBrokerKilledExactlyOnce(t, startFaultPairOn(t, kafkatest.RequireLibs3(t)))
}

func testTargetBrokerKilledExactlyOnce(t *testing.T, fp *faultPair) {
	const (
		flow       = "restart-eos"
		topic      = "restart-eos"
		partitions = 3
	)
	createTopic(t, fp.srcCl, topic, partitions, nil)
	httpAddr := freeAddr(t)
	cfg := strings.Replace(fp.config(flow, topic, httpAddr), "    heartbeat_interval: off\n",
		"    heartbeat_interval: off\n    exactly_once: true\n", 1)
	k := startKmirror(t, writeConfig(t, cfg), httpAddr, "--log-level", "debug")
	waitReady(t, k)
	prod := startSeqProducer(t, fp.srcCl, topic, partitions)
	defer prod.stop()

	for _, kill := range []bool{false, true} {
		n0 := sum(endOffsets(t, fp.dstCl, topic))
		waitFor(t, time.Minute, "records flowing before the outage", func() (bool, string) {
			n := sum(endOffsets(t, fp.dstCl, topic))
			return n >= n0+300, fmt.Sprintf("target end offsets sum %d, had %d", n, n0)
		})
		if kill {
			fp.dst.Kill()
		} else {
			fp.dst.Stop()
		}
		if skipped := markersSkipped(t, fp.dst.LogPath()); skipped != "" {
			// Kafka 4.x: a transaction ended while its
			// partitions had no leader (the only broker in controlled
			// shutdown) is completed without its markers; its records
			// stay open on those partitions until a later transaction
			// of the same producer there ends them with its own marker,
			// commit or abort: a client can name them, not end them.
			t.Skipf("the target broker completed a transaction without writing its markers, finding its partitions without a leader (a Kafka 4.x coordinator behaviour); kmirror then waits for ever, or copies again, see docs/exactly-once.md:\n%s", skipped)
		}
		// Records go on arriving at the source while the target is down.
		a0 := prod.acked()
		waitFor(t, 30*time.Second, "records produced while the target is down", func() (bool, string) {
			return prod.acked() >= a0+1000, fmt.Sprintf("%d acked", prod.acked()-a0)
		})
		fp.dst.Restart()
	}
	prod.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcRecs := readLog(t, ctx, fp.srcCl, topic)
	want := map[int32]int{}
	for part, recs := range srcRecs {
		want[part] = len(recs)
	}
	var dstRecs map[int32][]*kgo.Record
	waitFor(t, 3*time.Minute, "a read_committed consumer of the target to see at least as many records as the source holds", func() (bool, string) {
		dstRecs = readLog(t, ctx, fp.dstCl, topic)
		got := map[int32]int{}
		enough := true
		for part, n := range want {
			got[part] = len(dstRecs[part])
			enough = enough && got[part] >= n
		}
		return enough, fmt.Sprintf("source %v, target %v", want, got)
	})
	if exactlyOnceReport(t, srcRecs, dstRecs, partitions) {
		_, body, _ := k.get("/metrics")
		c, _ := metricValue(body, fmt.Sprintf(`kmirror_transactions_committed_total{flow=%q}`, flow))
		ab, _ := metricValue(body, fmt.Sprintf(`kmirror_transactions_aborted_total{flow=%q}`, flow))
		n := 0
		for _, v := range want {
			n += v
		}
		t.Logf("target broker stopped and killed: %d source records, each seen once and in order by a read_committed consumer of the target; transactions committed %v, aborted %v",
			n, c, ab)
	}
	k.stop()
}

// markersSkipped returns the target broker's log lines saying that its
// transaction coordinator completed a transaction without writing the
// markers of some of its partitions, taking them for deleted.
func markersSkipped(t *testing.T, logPath string) string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("reading the target broker's log: %v", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "likely deleted already and hence can be skipped") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
