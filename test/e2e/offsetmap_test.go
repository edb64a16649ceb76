package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/dr"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/verify"
)

// TestOffsetMapSurvivesRestarts replicates a transactional topic written
// in spaced transactions (every third aborted) and a compacted topic while
// they are written, stopping kmirror with SIGTERM twice and killing it with
// SIGKILL once meanwhile. Once everything is copied kmirror is restarted
// again, so its whole offset map comes from the progress topic. Two groups
// then commit half-way on the source: inside a committed transaction, right
// after a commit marker (followed by a committed and by an aborted
// transaction), and on records of the compacted topic.
// `kmirror offsets translate`, the groups synced to the target, consumers
// of those groups on the target, and the offsets `kmirror failover
// --source-unreachable` commits must all land exactly on the first record
// each group has not read, on every partition.
func TestOffsetMapSurvivesRestarts(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	createTopic(t, p.srcCl, "txn", 2, nil)
	createTopic(t, p.srcCl, "compacted", 2, map[string]string{
		"cleanup.policy": "compact", "segment.ms": "200", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
	})
	httpAddr := freeAddr(t)
	// Progress is written several times between two transactions (the
	// default interval, set here so the test does not depend on it).
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["txn", "compacted"]
sync_interval: 1s
progress_interval: 200ms
`))

	// The writer: 36 transactions of 300 records (150 per partition),
	// 400 ms apart, every third aborted; and, after each, 100 records on
	// the compacted topic: 96 over 40 keys written again and again, and 4
	// of keys written once, which no cleaner ever removes.
	const txns = 36
	var written atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		txCl := newClient(t, p.src.Bootstrap(), kgo.TransactionalID("e2e-offsetmap"))
		for b := range txns {
			if err := txCl.BeginTransaction(); err != nil {
				writerDone <- err
				return
			}
			for i := range 300 {
				n := b*300 + i
				txCl.Produce(ctx, &kgo.Record{Topic: "txn", Partition: int32(n % 2), Key: fmt.Appendf(nil, "t%d", n), Value: fmt.Appendf(nil, "txn-%d-batch-%d", n, b)}, nil)
			}
			if err := txCl.Flush(ctx); err != nil {
				writerDone <- err
				return
			}
			if err := txCl.EndTransaction(ctx, kgo.TransactionEndTry(b%3 != 2)); err != nil {
				writerDone <- err
				return
			}
			var recs []*kgo.Record
			for i := range 100 {
				n := b*100 + i
				key := fmt.Appendf(nil, "key-%d", n%40)
				if i >= 96 {
					key = fmt.Appendf(nil, "once-%d-batch-%d", n, b)
				}
				recs = append(recs, &kgo.Record{Topic: "compacted", Partition: int32(n % 2), Key: key, Value: fmt.Appendf(nil, "v%d", n)})
			}
			if err := p.srcCl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				writerDone <- err
				return
			}
			written.Add(1)
			time.Sleep(400 * time.Millisecond)
		}
		writerDone <- nil
	}()
	waitWritten := func(n int64) {
		t.Helper()
		waitFor(t, 3*time.Minute, fmt.Sprintf("%d transactions written", n), func() (bool, string) {
			return written.Load() >= n, fmt.Sprintf("%d written", written.Load())
		})
	}
	// replicatedSome waits until the flow copied more than min records.
	replicatedSome := func(min int64) {
		t.Helper()
		waitFor(t, 2*time.Minute, "records on the target", func() (bool, string) {
			n := sum(endOffsets(t, p.dstCl, "src.txn"))
			return n > min, fmt.Sprintf("%d on the target, want more than %d", n, min)
		})
	}

	// The groups commit in transactions 15, 16 and 18, copied while
	// kmirror ran without a break from transaction 7 to 22.
	k := startKmirror(t, cfgPath, httpAddr)
	waitWritten(5)
	replicatedSome(0)
	k.stop() // SIGTERM 1
	waitWritten(7)
	k = startKmirror(t, cfgPath, httpAddr)
	replicatedSome(sum(endOffsets(t, p.dstCl, "src.txn")))
	waitWritten(22)
	k.kill() // SIGKILL
	waitWritten(24)
	k = startKmirror(t, cfgPath, httpAddr)
	replicatedSome(sum(endOffsets(t, p.dstCl, "src.txn")))
	waitWritten(29)
	k.stop() // SIGTERM 2
	waitWritten(31)
	k = startKmirror(t, cfgPath, httpAddr)
	if err := <-writerDone; err != nil {
		t.Fatalf("writing the source: %v", err)
	}

	// Everything copied: the target holds the source's records (the
	// compacted topic's last record per partition is never compacted).
	topics := []string{"txn", "compacted"}
	waitFor(t, 3*time.Minute, "the flow to catch up", func() (bool, string) {
		for _, topic := range topics {
			s, d := readLog(t, ctx, p.srcCl, topic), readLog(t, ctx, p.dstCl, "src."+topic)
			for part := range int32(2) {
				if len(s[part]) == 0 || len(d[part]) == 0 || verify.Diff(s[part][len(s[part])-1], d[part][len(d[part])-1]) != "" {
					return false, fmt.Sprintf("%s/%d: %d records on the source, %d on the target", topic, part, len(s[part]), len(d[part]))
				}
			}
		}
		return true, ""
	})
	srcLog := map[string]map[int32][]*kgo.Record{}
	for _, topic := range topics {
		srcLog[topic] = readLog(t, ctx, p.srcCl, topic)
	}
	if d := readLog(t, ctx, p.dstCl, "src.txn"); len(srcLog["txn"][0])+len(srcLog["txn"][1]) != len(d[0])+len(d[1]) {
		t.Errorf("txn: %d committed records on the source, %d on the target", len(srcLog["txn"][0])+len(srcLog["txn"][1]), len(d[0])+len(d[1]))
	}
	// Once more, so that the whole offset map is the one stored.
	k.stop() // SIGTERM 3
	k = startKmirror(t, cfgPath, httpAddr)

	// The groups commit on the source. Transaction 15 and 16 are
	// committed, 17 aborted.
	txn := func(part int32, batch int) (first, last int64) {
		t.Helper()
		first, last = -1, -1
		for _, r := range srcLog["txn"][part] {
			if strings.HasSuffix(string(r.Value), fmt.Sprintf("-batch-%d", batch)) {
				if first < 0 {
					first = r.Offset
				}
				last = r.Offset
			}
		}
		if first < 0 {
			t.Fatalf("txn/%d: no committed record of transaction %d on the source", part, batch)
		}
		return first, last
	}
	once := func(part int32, batch int) int64 {
		t.Helper()
		for _, r := range srcLog["compacted"][part] {
			if strings.HasSuffix(string(r.Key), fmt.Sprintf("-batch-%d", batch)) {
				return r.Offset
			}
		}
		t.Fatalf("compacted/%d: no record written once in batch %d on the source", part, batch)
		return -1
	}
	first15, _ := txn(0, 15)
	_, last15 := txn(1, 15)
	_, last16 := txn(0, 16)
	first16, _ := txn(1, 16)
	commits := map[string]map[string]map[int32]int64{
		"billing": {
			"txn": {
				0: first15 + 73, // inside transaction 15
				1: last15 + 2,   // right after its commit marker: transaction 16's first record
			},
			"compacted": {0: once(0, 15), 1: once(1, 15)},
		},
		"audit": {
			"txn": {
				0: last16 + 2,   // right after transaction 16's commit marker: aborted records
				1: first16 + 41, // inside transaction 16
			},
			"compacted": {0: once(0, 16), 1: once(1, 16)},
		},
	}
	groups := []string{"billing", "audit"}
	srcAdm, dstAdm := kadm.NewClient(p.srcCl), kadm.NewClient(p.dstCl)
	// The next record each group reads on the source, and the target
	// offset of its copy.
	next := map[string]map[string]map[int32]*kgo.Record{}
	want := map[string]map[string]map[int32]int64{}
	tgtLog := map[string]map[int32][]*kgo.Record{}
	for _, topic := range topics {
		tgtLog[topic] = readLog(t, ctx, p.dstCl, "src."+topic)
	}
	for _, g := range groups {
		var offs kadm.Offsets
		next[g], want[g] = map[string]map[int32]*kgo.Record{}, map[string]map[int32]int64{}
		for _, topic := range topics {
			next[g][topic], want[g][topic] = map[int32]*kgo.Record{}, map[int32]int64{}
			for part, at := range commits[g][topic] {
				offs.Add(kadm.Offset{Topic: topic, Partition: part, At: at, LeaderEpoch: -1})
				for _, r := range srcLog[topic][part] {
					if r.Offset >= at {
						next[g][topic][part] = r
						break
					}
				}
				n := next[g][topic][part]
				if n == nil {
					t.Fatalf("%s/%d: no record at or after %d on the source", topic, part, at)
				}
				want[g][topic][part] = -1
				for _, r := range tgtLog[topic][part] {
					if verify.Diff(n, r) == "" {
						want[g][topic][part] = r.Offset
						break
					}
				}
				if want[g][topic][part] < 0 {
					t.Fatalf("%s/%d: no copy of %q (source offset %d) on the target", topic, part, n.Value, n.Offset)
				}
				t.Logf("group %s commits %s/%d at %d on the source (of %d records); next record %q at source offset %d, its copy at target offset %d (of %d)",
					g, topic, part, at, len(srcLog[topic][part]), n.Value, n.Offset, want[g][topic][part], len(tgtLog[topic][part]))
			}
		}
		if err := srcAdm.CommitAllOffsets(ctx, g, offs); err != nil {
			t.Fatalf("committing the offsets of group %s on the source: %v", g, err)
		}
	}
	// check compares the offsets got gives with the expected ones; got
	// returns -1 for an offset not committed, and whether it is marked
	// exact (always for committed offsets).
	check := func(what, g string, got func(topic string, part int32) (int64, bool)) {
		t.Helper()
		for _, topic := range topics {
			for part, w := range want[g][topic] {
				o, exact := got(topic, part)
				note := ""
				if !exact {
					note = " (marked not exact)"
				}
				switch {
				case o > w:
					t.Errorf("%s: group %s %s/%d = %d%s, want %d exactly: a consumer there skips %d records", what, g, topic, part, o, note, w, o-w)
				case o != w || !exact:
					t.Errorf("%s: group %s %s/%d = %d%s, want %d exactly", what, g, topic, part, o, note, w)
				default:
					t.Logf("%s: group %s %s/%d = %d, exact", what, g, topic, part, o)
				}
			}
		}
	}
	committedAt := func(offs kadm.OffsetResponses) func(topic string, part int32) (int64, bool) {
		return func(topic string, part int32) (int64, bool) {
			if o, ok := offs.Lookup("src."+topic, part); ok && o.Err == nil {
				return o.At, true
			}
			return -1, true
		}
	}

	// kmirror offsets translate.
	for _, g := range groups {
		out, stderr, err := runKmirror(t, time.Minute, "offsets", "translate", "--config", cfgPath, "--flow", "e2e", "--group", g, "--json")
		if err != nil {
			t.Fatalf("offsets translate: %v\n%s%s", err, out, stderr)
		}
		var rows []dr.Translated
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("offsets translate output: %v\n%s", err, out)
		}
		check("offsets translate", g, func(topic string, part int32) (int64, bool) {
			for _, r := range rows {
				if r.Topic == topic && r.Partition == part {
					return r.TargetOffset, r.Exact
				}
			}
			return -1, false
		})
	}

	// The groups synced to the target: wait (up to a minute) for the
	// synced offsets to reach the expected ones, then check them, so that
	// a wrong offset is reported as such.
	synced := map[string]kadm.OffsetResponses{}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		n := 0
		for _, g := range groups {
			o, err := dstAdm.FetchOffsets(ctx, g)
			if err != nil {
				continue
			}
			synced[g] = o
			for _, topic := range topics {
				for part, w := range want[g][topic] {
					if got, ok := o.Lookup("src."+topic, part); ok && got.At == w {
						n++
					}
				}
			}
		}
		if n == 8 || time.Now().After(deadline) {
			break
		}
	}
	for _, g := range groups {
		check("synced group offset", g, committedAt(synced[g]))
	}
	k.stop()

	// A consumer of each group on the target starts on the next record.
	for _, g := range groups {
		got := consumeAll(t, ctx, p.dst.Bootstrap(), g, []string{"src.txn", "src.compacted"})
		for _, topic := range topics {
			for part, n := range next[g][topic] {
				list := got["src."+topic][part]
				if len(list) == 0 || verify.Diff(n, list[0]) != "" {
					first := "nothing"
					if len(list) > 0 {
						first = fmt.Sprintf("%q at %d", list[0].Value, list[0].Offset)
					}
					t.Errorf("group %s on the target: %s/%d read %s first, want %q", g, topic, part, first, n.Value)
				} else {
					t.Logf("consumer of group %s on the target: %s/%d starts with %q at %d, the group's next record", g, topic, part, list[0].Value, list[0].Offset)
				}
			}
		}
	}

	// Failover with the source gone commits the checkpointed offsets.
	for _, g := range groups {
		if _, err := dstAdm.DeleteGroup(ctx, g); err != nil {
			t.Fatalf("deleting group %s on the target: %v", g, err)
		}
	}
	p.src.Kill()
	out, stderr, err := runKmirror(t, 2*time.Minute, "failover", "--config", cfgPath, "--flow", "e2e", "--source-unreachable", "--json")
	if err != nil {
		t.Fatalf("failover --source-unreachable: %v\n%s%s", err, out, stderr)
	}
	for _, g := range groups {
		after, err := dstAdm.FetchOffsets(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		check("offset committed by failover --source-unreachable", g, committedAt(after))
	}
}

// readLog reads every partition of topic to its end, committed records
// only, without transaction markers.
func readLog(t *testing.T, ctx context.Context, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	out := map[int32][]*kgo.Record{}
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{}, func(r *kgo.Record) bool {
		if !r.Attrs.IsControl() {
			out[r.Partition] = append(out[r.Partition], r)
		}
		return true
	})
	if err != nil {
		t.Fatalf("reading %s: %v", topic, err)
	}
	return out
}
