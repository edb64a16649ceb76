package replicate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/progress"
)

func TestFenceBatchIsOneValidRecord(t *testing.T) {
	ts := time.UnixMilli(1_700_000_000_123)
	rec := &kgo.Record{Key: []byte("k"), Value: []byte("value"), Timestamp: ts,
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}, {Key: "n"}}}
	raw := fenceBatch(42, 7, rec)

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
	if b.Magic != 2 || b.Attributes != 0 || b.ProducerID != 42 || b.ProducerEpoch != 7 || b.FirstSequence != 0 ||
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
			e := newEnv(t)
			const src, dst = "t", "primary.t"
			e.createTopic(t, e.srcAdmin, src, 1, nil)
			e.createTopic(t, e.tgtAdmin, dst, 1, nil)
			in := records(1, 10, "x")
			e.produce(t, src, in...)

			// The earlier owner copied the first three, then stalled.
			old := newClient(t, e.tgtClient.OptValue(kgo.SeedBrokers).([]string),
				kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(dst), kgo.RecordRetries(2))
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
				Fence: []progress.Producer{{ID: pid, Epoch: epoch}},
				Own:   &progress.Producer{ID: own, Epoch: ownEpoch},
			}})
			stop := e.run(t, r)
			waitFor(t, "the rest copied", func() bool { return r.Totals().Records >= 7 })
			stop()

			// The earlier owner's write still on its way is refused.
			c := *in[3]
			c.Topic = dst
			err = old.ProduceSync(e.ctx, &c).FirstErr()
			if !errors.Is(err, kerr.InvalidProducerEpoch) && !errors.Is(err, kgo.ErrRecordRetries) {
				t.Errorf("earlier owner's write after the fence: %v, want refused (invalid producer epoch)", err)
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
