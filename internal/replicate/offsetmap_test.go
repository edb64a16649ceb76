package replicate

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

// The offset map loaded after a stop equals the map the replicator held,
// across transaction markers, aborted transactions, a refused write and
// its rewind, retention trims and restarts; and translating with the
// loaded map gives what translating with the map in memory gave, each
// exact answer being the true one.
func TestStoredOffsetMapEqualsMemory(t *testing.T) {
	e := newEnv(t)
	const src, dst, parts = "payments", "primary.payments", int32(2)
	e.createTopic(t, e.srcAdmin, src, parts, nil)
	e.createTopic(t, e.tgtAdmin, dst, parts, map[string]*string{"max.message.bytes": kadm.StringPtr("2048")})
	seeds := e.producer.OptValue(kgo.SeedBrokers).([]string)
	txn := newClient(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("offsetmap-test"))
	nTxn := 0
	// writeTxns writes n transactions of size records per partition;
	// every third is aborted.
	writeTxns := func(n, size int) {
		t.Helper()
		for range n {
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			for i := range size {
				for p := range parts {
					txn.Produce(e.ctx, &kgo.Record{Topic: src, Partition: p, Key: fmt.Appendf(nil, "t%d-%d-%d", nTxn, p, i), Value: []byte("v")}, nil)
				}
			}
			if err := txn.Flush(e.ctx); err != nil {
				t.Fatal(err)
			}
			commit := kgo.TransactionEndTry(nTxn%3 != 2)
			if err := txn.EndTransaction(e.ctx, commit); err != nil {
				t.Fatal(err)
			}
			nTxn++
		}
	}
	readCommitted := newClient(t, seeds, kgo.FetchMaxWait(100*time.Millisecond), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	newReplicator := func(maxRuns int) *Replicator {
		return New(Options{
			Flow: flowName, Source: readCommitted, Target: e.tgtClient, Progress: e.store,
			ProgressInterval: 20 * time.Millisecond, OffsetMapMaxRuns: maxRuns,
			Metrics: e.metrics, Logger: slog.New(slog.DiscardHandler),
		})
	}
	caughtUp := func(r *Replicator) {
		t.Helper()
		ends := endOffsets(t, e.ctx, e.srcAdmin, src)
		waitFor(t, "replication to reach the source end", func() bool {
			pos := r.Positions()
			for p := range parts {
				if pos[progress.Partition{Topic: src, Partition: p}].SourceNext != ends[p] {
					return false
				}
			}
			return true
		})
	}
	// compare stops r and checks the stored map against the one r held.
	compare := func(round string, r *Replicator, stop func()) progress.Loaded {
		t.Helper()
		stop()
		l, err := e.store.Load(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for p := range parts {
			id := progress.Partition{Topic: src, Partition: p}
			part := r.lookup(src, p)
			mem := saved(part.omap.Runs())
			if got := saved(l.Runs[id]); !reflect.DeepEqual(got, mem) {
				t.Errorf("%s: %s: stored map\n%+v\nwant the map in memory\n%+v", round, id, got, mem)
			}
			pos := l.Positions[id]
			if pos.SourceNext != part.acked.SourceNext || pos.TargetNext != part.acked.TargetNext {
				t.Errorf("%s: %s: stored position %+v, want %+v", round, id, pos, part.acked)
			}
			stored := offsets.NewMap(l.Runs[id])
			for x := int64(0); x <= pos.SourceNext+1; x++ {
				want, _ := r.Translate(src, p, x)
				got := stored.Translate(x, pos.TargetNext)
				if runs := stored.Runs(); len(runs) > 0 && x < runs[0].From() && !got.Exact && !want.Exact && got.Target <= want.Target {
					continue // before the window retention kept: both round down
				}
				if got != want {
					t.Errorf("%s: %s: Translate(%d) with the stored map = %+v, in memory %+v", round, id, x, got, want)
				}
			}
			t.Logf("%s: %s: %d runs, position %d/%d", round, id, len(mem), pos.SourceNext, pos.TargetNext)
		}
		return l
	}
	resume := func(l progress.Loaded, maxRuns int) *Replicator {
		r := newReplicator(maxRuns)
		var as []Assignment
		for p := range parts {
			id := progress.Partition{Topic: src, Partition: p}
			as = append(as, Assignment{Source: id, TargetTopic: dst, Start: l.Positions[id], Runs: l.Runs[id]})
		}
		r.Add(as)
		return r
	}

	// Round 1: transactions with aborts, then a write the target refuses
	// (partition 0 rewinds once the cause is fixed).
	r := newReplicator(0)
	r.Add(assignments(src, dst, parts))
	stop := e.run(t, r)
	writeTxns(4, 3)
	caughtUp(r)
	big := make([]byte, 8000)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	e.produce(t, src, &kgo.Record{Partition: 0, Key: []byte("big"), Value: big}, small(1, 0))
	writeTxns(2, 2)
	waitFor(t, "the refused write", func() bool { return r.Totals().Failing > 0 })
	if _, err := e.tgtAdmin.AlterTopicConfigs(e.ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("1048588")}}, dst); err != nil {
		t.Fatal(err)
	}
	caughtUp(r)
	l := compare("round 1", r, stop)

	// Round 2: restart; the position ends past a commit marker with no
	// run after it (the trailing coverage is stored with the newest run).
	r = resume(l, 0)
	stop = e.run(t, r)
	writeTxns(3, 2)
	caughtUp(r)
	l = compare("round 2", r, stop)

	// Round 3: restart with retention keeping 4 runs per partition.
	r = resume(l, 4)
	stop = e.run(t, r)
	writeTxns(3, 1)
	caughtUp(r)
	l = compare("round 3", r, stop)
	for p := range parts {
		if n := len(l.Runs[progress.Partition{Topic: src, Partition: p}]); n != 4 {
			t.Errorf("partition %d: %d runs stored after the trim, want 4", p, n)
		}
	}

	// Every exact translation is the true one: the target offset of the
	// first copied record at or after the source offset.
	for p := range parts {
		id := progress.Partition{Topic: src, Partition: p}
		truth := trueTranslation(t, e, readCommitted, src, dst, p)
		pos := l.Positions[id]
		stored := offsets.NewMap(l.Runs[id])
		exact := 0
		for x := int64(0); x <= pos.SourceNext; x++ {
			got := stored.Translate(x, pos.TargetNext)
			if got.Exact {
				exact++
				if got.Target != truth(x) {
					t.Errorf("%s: Translate(%d) = %+v exact, true answer %d", id, x, got, truth(x))
				}
			} else if got.Target > truth(x) {
				t.Errorf("%s: Translate(%d) = %+v rounds up past the true answer %d", id, x, got, truth(x))
			}
		}
		t.Logf("%s: %d of %d source offsets translate exactly", id, exact, pos.SourceNext+1)
	}
}

// trueTranslation reads both partitions and returns, for a source offset,
// the target offset of the last copy of the first committed source record
// at or after it (or the target's end).
func trueTranslation(t *testing.T, e *env, seedsFrom *kgo.Client, src, dst string, p int32) func(int64) int64 {
	t.Helper()
	read := func(cl *kgo.Client, topic string) []*kgo.Record {
		end := endOffsets(t, e.ctx, kadm.NewClient(cl), topic)[p]
		var out []*kgo.Record
		err := logread.Read(e.ctx, cl, logread.Range{Topic: topic, Partition: p, From: 0, End: end}, logread.Options{}, func(r *kgo.Record) bool {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	srcRecs, tgtRecs := read(seedsFrom, src), read(e.tgtClient, dst)
	// The last target copy of each source key (keys are unique): a
	// rewind writes records again, and the map points at the copies
	// written by the rewind.
	last := map[string]int64{}
	for _, r := range tgtRecs {
		last[string(r.Key)] = r.Offset
	}
	tgtEnd := int64(len(tgtRecs))
	if len(tgtRecs) > 0 {
		tgtEnd = tgtRecs[len(tgtRecs)-1].Offset + 1
	}
	return func(x int64) int64 {
		for _, r := range srcRecs {
			if r.Offset >= x {
				return last[string(r.Key)]
			}
		}
		return tgtEnd
	}
}

// saved returns runs without their unsaved marks, for comparisons.
func saved(runs []offsets.Run) []offsets.Run {
	out := make([]offsets.Run, len(runs))
	for i, r := range runs {
		out[i] = r.Saved()
	}
	return out
}
