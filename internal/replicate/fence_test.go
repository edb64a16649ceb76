package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/progress"
)

func TestOneRecordBatchIsValid(t *testing.T) {
	ts := time.UnixMilli(1_700_000_000_123)
	rec := &kgo.Record{Key: []byte("k"), Value: []byte("value"), Timestamp: ts,
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "n"}}}
	raw := oneRecordBatch(42, 7, 9, rec)

	var b kmsg.RecordBatch
	if err := b.ReadFrom(raw); err != nil {
		t.Fatal(err)
	}
	if int(b.Length) != len(raw)-12 {
		t.Errorf("length %d, want %d", b.Length, len(raw)-12)
	}
	if want := int32(crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli))); b.CRC != want {
		t.Errorf("crc %x, want %x", b.CRC, want)
	}
	if b.Magic != 2 || b.Attributes != 0 || b.ProducerID != 42 || b.ProducerEpoch != 7 || b.FirstSequence != 9 ||
		b.NumRecords != 1 || b.LastOffsetDelta != 0 || b.FirstTimestamp != ts.UnixMilli() || b.MaxTimestamp != ts.UnixMilli() {
		t.Errorf("batch header %+v", b)
	}
	var r kmsg.Record
	if err := r.ReadFrom(b.Records); err != nil {
		t.Fatal(err)
	}
	if l, n := binary.Varint(b.Records); int(l) != len(b.Records)-n {
		t.Errorf("record length %d, want %d", l, len(b.Records)-n)
	}
	if string(r.Key) != "k" || string(r.Value) != "value" || r.TimestampDelta64 != 0 || r.OffsetDelta != 0 ||
		len(r.Headers) != 2 || r.Headers[0].Key != "h" || string(r.Headers[0].Value) != "1" || r.Headers[1].Key != "n" || r.Headers[1].Value != nil {
		t.Errorf("record %+v", r)
	}
}

// TestReplicateFencesEarlierWriters: a partition whose stored writers
// include an earlier owner's producer writes its first copy under that
// producer's ID at a higher epoch; the earlier owner's next write to the
// partition is refused by the broker, and the position stores this
// replicator's producer only.
func TestReplicateFencesEarlierWriters(t *testing.T) {
	for _, tc := range []struct {
		name string
		// late is how many records of the earlier owner land after the
		// new owner read the target's end, before its first write.
		late int
	}{
		{"nothing late", 0},
		{"two late", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const src, dst = fenceSrc, fenceDst
			e, in, old := fenceEnv(t)
			// The earlier owner copied the first three, then stalled.
			for _, r := range in[:3+tc.late] {
				c := *r
				c.Topic = dst
				if err := old.ProduceSync(e.ctx, &c).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			pid, epoch, err := old.ProducerID(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			own, ownEpoch, err := e.tgtClient.ProducerID(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			r := e.replicator()
			r.Add([]Assignment{{
				Source: progress.Partition{Topic: src, Partition: 0}, TargetTopic: dst,
				Start: progress.Position{SourceNext: 3, TargetNext: 3, Writers: []progress.Producer{{ID: pid, Epoch: epoch}}},
				Fence: []Fence{{Producer: progress.Producer{ID: pid, Epoch: epoch}}},
				Own:   &progress.Producer{ID: own, Epoch: ownEpoch},
			}})
			stop := e.run(t, r)
			waitFor(t, "the rest copied", func() bool { return r.Totals().Records >= 7 })
			stop()

			// The earlier owner's write still on its way is refused.
			if err := heldWrite(t, e, dst, in[3], pid, epoch, int32(3+tc.late)); !errors.Is(err, kerr.InvalidProducerEpoch) {
				t.Errorf("earlier owner's held write after the fence: %v, want refused (invalid producer epoch)", err)
			}
			got := readValues(t, e, dst)
			var want []string
			for _, r := range in[:3+tc.late] {
				want = append(want, string(r.Value))
			}
			for _, r := range in[3:] {
				want = append(want, string(r.Value))
			}
			if !slices.Equal(got, want) {
				t.Errorf("target holds %q, want %q", got, want)
			}
			if got := counter(t, e.metrics.Duplicates.WithLabelValues(flowName, src)); got != float64(tc.late) {
				t.Errorf("duplicates counted %v, want %d (the earlier owner's records that landed before the fence)", got, tc.late)
			}
			loaded, err := e.store.Load(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			pos := loaded.Positions[progress.Partition{Topic: src, Partition: 0}]
			if len(pos.Writers) != 1 || pos.Writers[0].ID != own {
				t.Errorf("stored writers %+v, want only this replicator's producer %d", pos.Writers, own)
			}
			if pos.SourceNext != 10 || pos.TargetNext != int64(10+tc.late) {
				t.Errorf("stored position %+v, want source 10 target %d", pos, 10+tc.late)
			}
		})
	}
}

// fenceEnv is a one-partition source topic src with ten records (in),
// copied to target topic dst, and the earlier owner's target client.
func fenceEnv(t *testing.T) (e *env, in []*kgo.Record, old *kgo.Client) {
	t.Helper()
	e = newEnv(t)
	e.createTopic(t, e.srcAdmin, fenceSrc, 1, nil)
	e.createTopic(t, e.tgtAdmin, fenceDst, 1, nil)
	in = records(1, 10, "x")
	e.produce(t, fenceSrc, in...)
	old = newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(fenceDst), kgo.RecordRetries(0))
	return e, in, old
}

const fenceSrc, fenceDst = "t", "primary.t"

// readValues reads every record of partition 0 of topic from the target.
func readValues(t *testing.T, e *env, topic string) []string {
	t.Helper()
	cl := newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	end := endOffsets(t, e.ctx, e.tgtAdmin, topic)[0]
	var got []string
	for int64(len(got)) < end {
		fs := cl.PollFetches(e.ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(fmt.Errorf("reading %s: %w", topic, err))
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// TestReplicateConditionalFence: with the earlier producer's epoch and
// last sequence known as the target was compared, the first copy is
// written only if none of its writes landed since. If some did, nothing
// of the new owner is written: the partition is taken out to be compared
// again (ResumeAgain), and added again from there it copies every record
// once.
func TestReplicateConditionalFence(t *testing.T) {
	for _, tc := range []struct {
		name string
		late int // the earlier owner's records landing after the comparison
	}{
		{"nothing landed since", 0},
		{"two landed since", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const src, dst = fenceSrc, fenceDst
			e, in, old := fenceEnv(t)
			write := func(recs []*kgo.Record) error {
				for _, r := range recs {
					c := *r
					c.Topic = dst
					if err := old.ProduceSync(e.ctx, &c).FirstErr(); err != nil {
						return err
					}
				}
				return nil
			}
			if err := write(in[:3]); err != nil {
				t.Fatal(err)
			}
			pid, epoch, err := old.ProducerID(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			// What a broker lists for the producer after n records of it
			// (kfake lists transactional producers only).
			known := func(n int) Fence {
				return Fence{Producer: progress.Producer{ID: pid, Epoch: epoch}, Known: true, Epoch: epoch, LastSequence: int32(n - 1)}
			}
			own, ownEpoch, err := e.tgtClient.ProducerID(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			assign := func(next int64, f Fence) []Assignment {
				return []Assignment{{
					Source: progress.Partition{Topic: src, Partition: 0}, TargetTopic: dst,
					Start: progress.Position{SourceNext: next, TargetNext: next, Writers: []progress.Producer{f.Producer}},
					Fence: []Fence{f},
					Own:   &progress.Producer{ID: own, Epoch: ownEpoch},
				}}
			}
			f := known(3) // as the target's end (3) was listed
			// The late records land in one batch: the conditional write's
			// sequence is then out of order. (A late batch of one record
			// would be taken as its duplicate; real brokers list the
			// producer's last sequence, which shows it: see the e2e test.)
			late := make([]*kgo.Record, tc.late)
			for i, r := range in[3 : 3+tc.late] {
				c := *r
				c.Topic = dst
				late[i] = &c
			}
			if err := old.ProduceSync(e.ctx, late...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			r := e.replicator()
			r.Add(assign(3, f))
			stop := e.run(t, r)
			if tc.late > 0 {
				var again map[progress.Partition]Removed
				waitFor(t, "the partition taken out to be compared again", func() bool {
					if a := r.ResumeAgain(); a != nil {
						again = a
					}
					return again != nil
				})
				got := again[progress.Partition{Topic: src, Partition: 0}]
				if got.Position.SourceNext != 3 || got.Position.TargetNext != 3 || !slices.ContainsFunc(got.Position.Writers, func(w progress.Producer) bool { return w.ID == pid }) {
					t.Errorf("position taken out %+v, want source 3 target 3 with producer %d among the writers", got.Position, pid)
				}
				if r.Has(src, 0) {
					t.Error("partition still replicated after it was taken out")
				}
				if end := endOffsets(t, e.ctx, e.tgtAdmin, dst)[0]; end != int64(3+tc.late) {
					t.Errorf("target end %d after the refused conditional write, want %d (nothing of the new owner)", end, 3+tc.late)
				}
				// The flow compares again: the late records are copies.
				next := int64(3 + tc.late)
				r.Add(assign(next, known(3+tc.late)))
			}
			waitFor(t, "every record copied", func() bool {
				return endOffsets(t, e.ctx, e.tgtAdmin, dst)[0] >= 10 && r.Totals().Records >= int64(7-tc.late)
			})
			stop()
			if err := heldWrite(t, e, dst, in[9], pid, epoch, int32(3+tc.late)); !errors.Is(err, kerr.InvalidProducerEpoch) {
				t.Errorf("earlier owner's held write after the fence: %v, want refused (invalid producer epoch)", err)
			}
			var want []string
			for _, r := range in {
				want = append(want, string(r.Value))
			}
			if got := readValues(t, e, dst); !slices.Equal(got, want) {
				t.Errorf("target holds %q, want every record once, in order: %q", got, want)
			}
			if got := counter(t, e.metrics.Duplicates.WithLabelValues(flowName, src)); got != 0 {
				t.Errorf("duplicates counted %v, want 0", got)
			}
		})
	}
}

// heldWrite sends rec to partition 0 of topic as the earlier owner's
// producer would have (id, epoch, the next sequence seq): a write of it
// held on the way until now.
func heldWrite(t *testing.T, e *env, topic string, rec *kgo.Record, id int64, epoch int16, seq int32) error {
	t.Helper()
	c := *rec
	c.Topic, c.Partition = topic, 0
	var leaders batchwrite.Leaders
	leader, topicID, err := leaders.Lookup(e.ctx, e.tgtClient, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = produceAs(e.ctx, e.tgtClient, leader, topicID, &c, id, epoch, seq)
	return err
}

// TestFenceEpochWithoutTheLeader: a leader that cannot be asked (no READ
// on the topic) leaves the fence epoch above the stored one by the margin
// and a random part, not an error.
func TestFenceEpochWithoutTheLeader(t *testing.T) {
	closed := newClient(t, newCluster(t))
	closed.Close()
	for _, stored := range []int16{0, 5, math.MaxInt16 - 50} {
		seen := map[int16]bool{}
		for range 20 {
			epoch, err := fenceEpoch(context.Background(), closed, progress.Producer{ID: 7, Epoch: stored}, "t", 0)
			if err != nil {
				t.Fatalf("stored epoch %d: %v", stored, err)
			}
			low := int32(stored) + fenceEpochMargin
			if int32(epoch) <= min(low, math.MaxInt16-1) || int32(epoch) > min(low+fenceEpochSpread, math.MaxInt16) {
				t.Errorf("stored epoch %d: fence epoch %d, want in (%d, %d]", stored, epoch, low, low+fenceEpochSpread)
			}
			seen[epoch] = true
		}
		if stored < 100 && len(seen) < 2 {
			t.Errorf("stored epoch %d: 20 fence epochs all %v, want a random part", stored, seen)
		}
	}
}
