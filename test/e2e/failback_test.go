package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFailback fails over, writes on the target, fails back, and checks
// that only the records written on the target after the failover reach the
// old source, that the consumer group continues on the source without loss
// or duplicate, and that the flow then resumes without copying anything
// twice.
func TestFailback(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic, group = "orders", "fulfil"
	createTopic(t, p.srcCl, topic, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
topic_naming: identity
sync_interval: 1s
`))
	produceSeq := func(cl *kgo.Client, from, n int) {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Partition: int32((from + i) % 2), Value: []byte(strconv.Itoa(from + i))}
		}
		produce(t, cl, recs)
	}
	seen := map[string]int{}
	readUntil := func(bootstrap string, total int) {
		r := startGroupReader(t, bootstrap, group, []string{topic}, seen, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		waitFor(t, time.Minute, fmt.Sprintf("the group to have read %d records", total), func() (bool, string) {
			return r.count() >= total, fmt.Sprintf("%d read", r.count())
		})
		r.close(t)
		reads := 0
		for _, c := range seen {
			reads += c
		}
		t.Logf("group %s on %s: %d distinct records read so far, %d reads", group, bootstrap, len(seen), reads)
	}

	// Normal operation on the source.
	k := startKmirror(t, cfgPath, httpAddr)
	produceSeq(p.srcCl, 0, 2000)
	readUntil(p.src.Bootstrap(), 1500)
	k.stop()

	// Failover; clients work on the target.
	out, errOut, err := runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e")
	t.Logf("kmirror failover:\n%s%s", out, errOut)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	produceSeq(p.dstCl, 2000, 500)
	readUntil(p.dst.Bootstrap(), 2500)
	produceSeq(p.dstCl, 2500, 500) // not read on the target: the group lags there

	// Failback.
	out, errOut, err = runKmirror(t, 2*time.Minute, "failback", "--config", cfgPath, "--flow", "e2e")
	t.Logf("kmirror failback:\n%s%s", out, errOut)
	if err != nil {
		t.Fatalf("failback: %v", err)
	}
	if !strings.Contains(out, "Records copied back: 1000") {
		t.Errorf("failback report does not say 1000 records were copied back")
	}

	// The old source holds its 2000 records and the 1000 written on the
	// target, each once.
	checkSeq(t, p.src.Bootstrap(), topic, 3000)

	// The group continues on the source with exactly the 500 records it
	// had not read on the target.
	readUntil(p.src.Bootstrap(), 3000)

	// The flow resumes after the copied-back records: new records on the
	// source reach the target, nothing is copied twice.
	k2 := startKmirror(t, cfgPath, httpAddr)
	produceSeq(p.srcCl, 3000, 500)
	waitFor(t, time.Minute, "new records on the target", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, topic))
		return n >= 3500, fmt.Sprintf("target has %d", n)
	})
	time.Sleep(2 * time.Second) // anything copied twice would show up now
	k2.stop()
	checkSeq(t, p.dst.Bootstrap(), topic, 3500)
	readUntil(p.src.Bootstrap(), 3500)

	lost, dups := 0, 0
	var dupSample []int
	for n := 0; n < 3500; n++ {
		switch c := seen[strconv.Itoa(n)]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
			if len(dupSample) < 10 {
				dupSample = append(dupSample, n)
			}
		}
	}
	if dups > 0 {
		t.Logf("records read more than once, first ones: %v", dupSample)
	}
	t.Logf("failback: the group read across source → target → source; lost %d, duplicated %d", lost, dups)
	if lost != 0 || dups != 0 {
		t.Errorf("the group lost %d and re-read %d records; want 0 and 0", lost, dups)
	}
}

// checkSeq checks that topic holds exactly the values 0..n-1, each once.
func checkSeq(t *testing.T, bootstrap, topic string, n int) {
	t.Helper()
	count := map[string]int{}
	total := 0
	for _, rs := range readCommitted(t, t.Context(), bootstrap, topic) {
		for _, r := range rs {
			count[string(r.Value)]++
			total++
		}
	}
	if total != n {
		t.Errorf("%s holds %d records, want %d", topic, total, n)
	}
	for i := 0; i < n; i++ {
		if c := count[strconv.Itoa(i)]; c != 1 {
			t.Errorf("%s: record %d appears %d times", topic, i, c)
			return
		}
	}
}
