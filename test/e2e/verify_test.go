package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify/flowverify"
)

// TestVerify replicates a plain topic, a compacted topic compacted on the
// source before and while it is copied (keys written again, tombstones),
// a topic written in transactions of which some are aborted, a bulk topic
// of 1 KiB records, and three topics the test later damages on the target.
// With kmirror stopped, `kmirror verify` must find the copy equal (exit 0)
// with every readable source record matched. The test then plays a bad
// actor on the target: it deletes the first records of one topic
// (missing), writes a copy of a record again into another (duplicated),
// and writes a third again from scratch with one value changed (altered);
// verify must exit 1 naming each, and still exit 0 for the untouched
// topics.
//
// KMIRROR_VERIFY_GB=1 makes the bulk topic 1,000,000 records of 1 KiB
// (about 1 GB) to measure verify's throughput; the default is 5,000.
func TestVerify(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bulk := 5000
	if os.Getenv("KMIRROR_VERIFY_GB") == "1" {
		bulk = 1_000_000
	}
	createTopic(t, p.srcCl, "plain", 2, nil)
	createTopic(t, p.srcCl, "compacted", 1, map[string]string{
		"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
	})
	createTopic(t, p.srcCl, "txn", 1, nil)
	createTopic(t, p.srcCl, "bulk", 4, nil)
	for _, name := range []string{"gone", "dup", "altered"} {
		createTopic(t, p.srcCl, name, 1, nil)
	}
	ts := time.Now().Add(-time.Hour).Truncate(time.Millisecond) // within the default retention
	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, &kgo.Record{Topic: "plain", Partition: int32(i % 2), Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "plain-%d", i),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "h", Value: nil}}, Timestamp: ts.Add(time.Duration(i) * time.Millisecond)})
	}
	for _, name := range []string{"gone", "dup", "altered"} {
		for i := range 50 {
			recs = append(recs, &kgo.Record{Topic: name, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s-%d", name, i), Timestamp: ts})
		}
	}
	produce(t, p.srcCl, recs)

	// The compacted topic: 20 keys written again and again in small
	// batches (segments roll every 100 ms, the cleaner runs every
	// second), every tenth record a tombstone.
	writeCompacted := func(round int) {
		var recs []*kgo.Record
		for i := range 40 {
			r := &kgo.Record{Topic: "compacted", Key: fmt.Appendf(nil, "key-%d", i%20), Value: fmt.Appendf(nil, "r%d-%d", round, i)}
			if i%10 == 9 {
				r.Value = nil
			}
			recs = append(recs, r)
		}
		produce(t, p.srcCl, recs)
	}
	for round := range 5 {
		writeCompacted(round)
		time.Sleep(150 * time.Millisecond) // lets a segment roll between rounds
	}
	compactedOnSource := func() (bool, string) {
		n, end := countReadable(t, ctx, p.srcCl, "compacted")
		return n < end, fmt.Sprintf("%d records readable of %d offsets", n, end)
	}
	waitFor(t, 2*time.Minute, "the source's cleaner to compact", func() (bool, string) {
		writeCompacted(99) // the cleaner cleans only rolled segments
		return compactedOnSource()
	})

	// Transactions of 20 records, every other one aborted.
	txCl := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("e2e-verify"))
	for b := range 6 {
		if err := txCl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			txCl.Produce(ctx, &kgo.Record{Topic: "txn", Key: fmt.Appendf(nil, "t%d-%d", b, i), Value: fmt.Appendf(nil, "txn-%d-%d", b, i)}, nil)
		}
		if err := txCl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := txCl.EndTransaction(ctx, kgo.TransactionEndTry(b%2 == 0)); err != nil {
			t.Fatal(err)
		}
	}

	// The bulk topic, 1 KiB random values (which compression does not
	// shrink, as much real data).
	rng := rand.NewChaCha8([32]byte{1})
	bulkCl := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchMaxBytes(900<<10)) // under the brokers' message.max.bytes
	start := time.Now()
	for done := 0; done < bulk; {
		n := min(50_000, bulk-done)
		batch := make([]*kgo.Record, n)
		for i := range batch {
			value := make([]byte, 1024)
			_, _ = rng.Read(value)
			batch[i] = &kgo.Record{Topic: "bulk", Partition: int32((done + i) % 4), Key: fmt.Appendf(nil, "b%d", done+i), Value: value}
		}
		produce(t, bulkCl, batch)
		done += n
	}
	t.Logf("bulk topic: %d records of 1 KiB produced in %s", bulk, time.Since(start).Round(time.Millisecond))

	cfgPath := writeConfig(t, p.flowConfig(freeAddr(t), `
topics: ["plain", "compacted", "txn", "bulk", "gone", "dup", "altered"]
progress_interval: 200ms
topic_refresh_interval: 500ms
`))
	k := startKmirror(t, cfgPath, freeAddr(t))
	// Compaction goes on on the source while the flow copies.
	writeCompacted(100)
	start = time.Now()
	store := progress.NewStore(p.dstCl, policy.ProgressTopic("e2e"))
	adm := kadm.NewClient(p.srcCl)
	waitFor(t, 10*time.Minute, "every partition replicated to its end", func() (bool, string) {
		ends, err := adm.ListCommittedOffsets(ctx, "plain", "compacted", "txn", "bulk", "gone", "dup", "altered")
		if err != nil {
			return false, err.Error()
		}
		loaded, err := store.Load(ctx)
		if err != nil {
			return false, err.Error()
		}
		var behind []string
		ends.Each(func(o kadm.ListedOffset) {
			if pos := loaded.Positions[progress.Partition{Topic: o.Topic, Partition: o.Partition}]; pos.SourceNext < o.Offset {
				behind = append(behind, fmt.Sprintf("%s/%d at %d of %d", o.Topic, o.Partition, pos.SourceNext, o.Offset))
			}
		})
		return len(behind) == 0, strings.Join(behind, ", ")
	})
	t.Logf("replicated in %s", time.Since(start).Round(time.Millisecond))
	// While the flow runs: compared up to the stored positions, and said.
	res := runKmirrorOnce(t, 5*time.Minute, "verify", "--config", cfgPath, "--flow", "e2e", "--topics", "plain")
	if res.code != 0 || !strings.Contains(res.stdout, "EQUAL") || !strings.Contains(res.stdout, "did not stop cleanly") ||
		!strings.Contains(res.stdout, "plain  src.plain     2           200             200") {
		t.Errorf("verify while the flow runs: exit %d, want 0 and a note that it runs\n%s%s", res.code, res.stdout, res.stderr)
	}
	k.stop()
	if ok, state := compactedOnSource(); !ok {
		t.Fatalf("the compacted topic was not compacted on the source: %s", state)
	}

	// The intact copy: equal, every readable source record matched.
	var rss int64
	res, rss = runMeasured(t, 10*time.Minute, "verify", "--config", cfgPath, "--flow", "e2e", "--json")
	if res.code != 0 {
		t.Fatalf("verify of the intact copy: exit %d, want 0\n%s%s", res.code, res.stdout, res.stderr)
	}
	var rep flowverify.FlowReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, res.stdout)
	}
	// Source records readable (the compacted topic's cleaner may still
	// remove some while verify reads: they are then counted as compacted
	// on one side).
	want := map[string]int64{"plain": 200, "txn": 60, "bulk": int64(bulk), "gone": 50, "dup": 50, "altered": 50}
	compN, compEnd := countReadable(t, ctx, p.srcCl, "compacted")
	if !rep.Equal || !rep.CleanStop || len(rep.Topics) != len(want)+1 {
		t.Fatalf("verify of the intact copy: equal %v, clean stop %v, %d topics; want true, true, %d\n%s", rep.Equal, rep.CleanStop, len(rep.Topics), len(want)+1, res.stdout)
	}
	for _, tr := range rep.Topics {
		ok := tr.TargetTopic == "src."+tr.Topic && tr.Differences() == 0
		if tr.Topic == "compacted" {
			// Matched, or removed by a cleaner on one side after the copy.
			ok = ok && tr.SourceRecords <= compN && tr.SourceRecords < compEnd && tr.Matched > 0 && tr.Matched+tr.Compacted >= tr.SourceRecords
		} else {
			ok = ok && tr.SourceRecords == want[tr.Topic] && tr.Matched == want[tr.Topic]
		}
		if !ok {
			t.Errorf("topic %s: %+v, want every source record matched (%d readable)", tr.Topic, tr.Counts, want[tr.Topic])
		}
	}
	mb := float64(rep.Totals.Bytes) / 1e6
	secs := float64(rep.ElapsedMs) / 1000
	t.Logf("verify of the intact copy: %d source records (%d matched, %d compacted since on one side), %.1f MB read from both clusters in %.2fs (%.1f MB/s, process %s, peak RSS %d MiB)",
		rep.Totals.SourceRecords, rep.Totals.Matched, rep.Totals.Compacted, mb, secs, mb/max(secs, 0.001), res.elapsed.Round(time.Millisecond), rss>>20)

	// The bad actor.
	dstAdm := kadm.NewClient(p.dstCl)
	// Missing: the first three copies of "gone" deleted.
	if _, err := dstAdm.DeleteRecords(ctx, kadm.Offsets{"src.gone": {0: {Topic: "src.gone", Partition: 0, At: 3}}}); err != nil {
		t.Fatal(err)
	}
	// Duplicated: source offset 4 of "dup" written again to its copy.
	srcDup := readLog(t, ctx, p.srcCl, "dup")[0]
	again := *srcDup[4]
	again.Topic, again.Partition = "src.dup", 0
	produce(t, p.dstCl, []*kgo.Record{&again})
	// Altered: "altered" written again from scratch on the target, with
	// record 7's value changed.
	if _, err := dstAdm.DeleteTopics(ctx, "src.altered"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "src.altered created again", func() (bool, string) {
		_, err := dstAdm.CreateTopic(ctx, 1, 1, nil, "src.altered")
		return err == nil, fmt.Sprint(err)
	})
	var rewrite []*kgo.Record
	for i, r := range readLog(t, ctx, p.srcCl, "altered")[0] {
		c := &kgo.Record{Topic: "src.altered", Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
		if i == 7 {
			c.Value = []byte("forged")
		}
		rewrite = append(rewrite, c)
	}
	produce(t, p.dstCl, rewrite)

	res = runKmirrorOnce(t, 5*time.Minute, "verify", "--config", cfgPath, "--flow", "e2e")
	t.Logf("verify of the damaged copy (exit %d):\n%s", res.code, res.stdout)
	if res.code != 1 {
		t.Fatalf("verify of the damaged copy: exit %d, want 1\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, line := range []string{
		`missing: topic "gone" partition 0 source offset 0 (target "src.gone" offset 0): deleted from the target`,
		`missing: topic "gone" partition 0 source offset 2 (target "src.gone" offset 2)`,
		`duplicated: topic "dup" partition 0 source offset 4 (target "src.dup" offset 50): a second copy of source offset 4`,
		`altered: topic "altered" partition 0 source offset 7 (target "src.altered" offset 7): value "altered-7" != "forged"`,
		"DIFFERENT: 5 records differ",
	} {
		if !strings.Contains(res.stdout, line) {
			t.Errorf("verify output lacks %q", line)
		}
	}
	if !strings.Contains(res.stderr, `records differ; first:`) {
		t.Errorf("verify's error line: %q", res.stderr)
	}
	// The untouched topics are still equal.
	res = runKmirrorOnce(t, 5*time.Minute, "verify", "--config", cfgPath, "--flow", "e2e", "--topics", "plain|compacted|txn")
	if res.code != 0 || !strings.Contains(res.stdout, "EQUAL") {
		t.Errorf("verify --topics plain|compacted|txn: exit %d, want 0\n%s%s", res.code, res.stdout, res.stderr)
	}
	// Errors: an unknown flow, an unreachable cluster.
	if res := runKmirrorOnce(t, time.Minute, "verify", "--config", cfgPath, "--flow", "nope"); res.code != 2 || !strings.Contains(res.stderr, `no flow named "nope"`) {
		t.Errorf("verify --flow nope: exit %d, want 2\n%s", res.code, res.stderr)
	}
	down := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
    dial_timeout: 2s
  dst:
    bootstrap_servers: [%q]
flows:
  - name: e2e
    source: src
    target: dst
`, freeAddr(t), p.dst.Bootstrap()))
	if res := runKmirrorOnce(t, time.Minute, "verify", "--config", down, "--flow", "e2e"); res.code != 2 || !strings.Contains(res.stderr, `"src"`) {
		t.Errorf("verify with the source unreachable: exit %d, want 2\n%s", res.code, res.stderr)
	}
}

// countReadable returns how many records of topic a read_committed
// consumer reads, and the sum of its end offsets.
func countReadable(t *testing.T, ctx context.Context, cl *kgo.Client, topic string) (n, end int64) {
	t.Helper()
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{}, func(r *kgo.Record) bool {
		if !r.Attrs.IsControl() {
			n++
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, sum(endOffsets(t, cl, topic))
}

// runMeasured runs the binary with args like runKmirrorOnce and also
// returns the process's peak resident memory, in bytes.
func runMeasured(t *testing.T, limit time.Duration, args ...string) (runResult, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := command(ctx, t, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := runResult{elapsed: time.Since(start), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.timedOut, res.code = true, -1
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running kmirror: %v", err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // KiB on Linux
	}
	return res, rss
}
