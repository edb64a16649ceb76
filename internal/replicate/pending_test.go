package replicate

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

func TestPendingList(t *testing.T) {
	ts := time.UnixMilli(1000)
	offsets := func(l *pendingList) []int64 {
		var out []int64
		for _, e := range l.q[l.head:] {
			out = append(out, e.offset)
		}
		return out
	}
	tests := []struct {
		name string
		ops  func(l *pendingList)
		want []int64
	}{
		{"in order", func(l *pendingList) {
			for o := range int64(4) {
				l.push(o, ts, 1)
			}
		}, []int64{0, 1, 2, 3}},
		{"trimmed below the position", func(l *pendingList) {
			for o := range int64(4) {
				l.push(o, ts, 1)
			}
			l.trim(2)
		}, []int64{2, 3}},
		{"rewind drops the entries from the retried offset", func(l *pendingList) {
			for o := range int64(5) {
				l.push(o, ts, 1)
			}
			l.trim(1)
			l.push(2, ts, 1)
		}, []int64{1, 2}},
		{"rewind below every entry", func(l *pendingList) {
			l.push(5, ts, 1)
			l.push(6, ts, 1)
			l.push(3, ts, 1)
		}, []int64{3}},
		{"all acknowledged", func(l *pendingList) {
			l.push(0, ts, 1)
			l.trim(7)
			l.push(9, ts, 1)
		}, []int64{9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l pendingList
			tc.ops(&l)
			got := offsets(&l)
			if len(got) != len(tc.want) {
				t.Fatalf("entries %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("entries %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestPendingWhileTargetStalls holds the target's answers to the data
// plane's writes: the records fetched are pending with the timestamp of
// the oldest; once the target answers, nothing is.
func TestPendingWhileTargetStalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const src, dst, parts, n = "orders", "primary.orders", int32(2), 10
	tgt, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tgt.Close)
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(open)
	tgt.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tgt.KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == dst {
				tgt.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	srcAddrs := newCluster(t)
	e := &env{
		ctx: ctx,
		srcClient: newClient(t, srcAddrs, kgo.FetchMaxWait(100*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())),
		tgtClient: newClient(t, tgt.ListenAddrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.RequiredAcks(kgo.AllISRAcks())),
		producer: newClient(t, srcAddrs, kgo.RecordPartitioner(kgo.ManualPartitioner())),
		metrics:  metrics.New(),
	}
	e.srcAdmin = kadm.NewClient(newClient(t, srcAddrs))
	e.tgtAdmin = kadm.NewClient(newClient(t, tgt.ListenAddrs()))
	e.store = progress.NewStore(e.tgtClient, policy.ProgressTopic(flowName))
	if err := e.store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	e.createTopic(t, e.srcAdmin, src, parts, nil)
	e.createTopic(t, e.tgtAdmin, dst, parts, nil)
	recs := records(parts, n, "rp")
	e.produce(t, src, recs...)
	wantBytes := map[int32]int64{}
	for _, r := range recs {
		size := int64(len(r.Key) + len(r.Value))
		for _, h := range r.Headers {
			size += int64(len(h.Key) + len(h.Value))
		}
		wantBytes[r.Partition] += size
	}

	r := e.replicator()
	r.Add(assignments(src, dst, parts))
	e.run(t, r)
	waitFor(t, "every record fetched and pending", func() bool {
		var fetched int64
		for _, p := range r.Pending() {
			fetched += p.Fetched
		}
		return fetched == int64(parts)*n
	})
	oldest := time.UnixMilli(1_600_000_000_000) // records' first timestamp
	got := r.Pending()
	if len(got) != int(parts) {
		t.Fatalf("Pending = %+v, want %d partitions", got, parts)
	}
	for i, p := range got {
		want := PartitionPending{Partition: progress.Partition{Topic: src, Partition: int32(i)},
			Records: n, Fetched: n, FetchedBytes: wantBytes[int32(i)], Oldest: oldest}
		if p.Partition != want.Partition || p.Records != want.Records || p.Fetched != want.Fetched ||
			p.FetchedBytes != want.FetchedBytes || !p.Oldest.Equal(want.Oldest) {
			t.Errorf("stalled: Pending[%d] = %+v, want %+v", i, p, want)
		}
	}
	if tot := r.Totals(); tot.Records != 0 {
		t.Fatalf("%d records acknowledged while the target stalls", tot.Records)
	}

	open()
	waitFor(t, "every record acknowledged", func() bool { return r.Totals().Records == int64(parts)*n })
	for _, p := range r.Pending() {
		if p.Records != 0 || p.Fetched != 0 || p.FetchedBytes != 0 || !p.Oldest.IsZero() {
			t.Errorf("caught up: Pending = %+v, want nothing pending", p)
		}
	}
}
