package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/progress"
)

// Fencing the writers of an earlier owner (at-least-once mode).
//
// An idempotent producer's writes to a partition carry its producer ID,
// an epoch and a sequence; a broker refuses a write whose epoch is below
// the newest it appended for that producer ID on that partition. A
// partition's new owner, when its last owner did not stop cleanly, writes
// its first copy of the partition under each of the earlier owner's
// producer IDs (progress.Position.Writers) with a higher epoch and
// sequence 0, one record each: from then on the broker refuses every
// write of theirs still on its way to that partition (held by a stalled
// network, retried by a paused process), instead of appending it after
// the new owner's copies. The epoch is raised on that partition only; the
// earlier owner's process stopped using the producer ID (it crashed, or
// its run ended with its lease).
//
// What remains: a write of the earlier owner that lands between the new
// owner's settle and its first write precedes that write on the target;
// the fence write's offset shows it, and the records between are counted
// as duplicates and logged.

// fenceEpochMargin is how far above an earlier owner's stored epoch the
// fence goes: its client raises the epoch itself, by one, after some
// write errors, and may have done so since its last stored position.
const fenceEpochMargin = 100

// fenceTimeout bounds the requests of one fence write.
const fenceTimeout = 30 * time.Second

// errFenceUnanswered fails a fence write the broker did not answer for its
// partition.
var errFenceUnanswered = errors.New("the target did not answer the fence write for the partition")

// nextFence returns the earlier owner's producer the next record of p
// fences (and the records of the partition handed to the producer before
// it), or false if no fence is left to write.
func (p *partition) nextFence() (progress.Producer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fencing >= len(p.fences) {
		return progress.Producer{}, false
	}
	f := p.fences[p.fencing]
	p.fencing++
	return f, true
}

// fenceDone ends the fence write of f: fenced, it leaves the partition's
// fences and its stored writers.
func (p *partition) fenceDone(f progress.Producer, fenced bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fencing--
	if !fenced {
		return
	}
	same := func(w progress.Producer) bool { return w.ID == f.ID }
	p.fences = slices.DeleteFunc(p.fences, same)
	p.acked.Writers = slices.DeleteFunc(p.acked.Writers, same)
}

// noteWriter adds the producer that wrote an acknowledged copy to the
// partition's writers (its epoch is raised in place), keeping the newest
// maxWriters. Called with p.mu held.
func (p *partition) noteWriter(id int64, epoch int16) {
	if n := len(p.acked.Writers); n > 0 && p.acked.Writers[n-1].ID == id && p.acked.Writers[n-1].Epoch >= epoch {
		return
	}
	for i, w := range p.acked.Writers {
		if w.ID == id {
			p.acked.Writers[i].Epoch = max(w.Epoch, epoch)
			return
		}
	}
	p.acked.Writers = append(p.acked.Writers, progress.Producer{ID: id, Epoch: epoch})
	if n := len(p.acked.Writers); n > maxWriters {
		p.acked.Writers = slices.Delete(p.acked.Writers, 0, n-maxWriters)
	}
}

// maxWriters bounds the producers stored with a position.
const maxWriters = 8

// fenceWrite writes out, the copy of source offset src, as the fence of
// producer f, once the records of the partition handed to the producer
// before it were answered (after), and answers it with done as the
// producer would.
func (r *Replicator) fenceWrite(ctx context.Context, p *partition, f progress.Producer, after int64, out *kgo.Record, done func(*kgo.Record, error)) {
	if !p.mayFollow(after) {
		p.fenceDone(f, false)
		done(out, errOrderGate)
		return
	}
	p.mu.Lock()
	expect := p.acked.TargetNext
	p.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, fenceTimeout)
	defer cancel()
	base, epoch, err := fenceProduce(fctx, r.opts.Target, f, out)
	if err != nil {
		p.fenceDone(f, false)
		done(out, fmt.Errorf("fencing producer %d of an earlier owner of the partition: %w", f.ID, err))
		return
	}
	p.fenceDone(f, true)
	r.opts.Logger.Info("earlier owner's producer fenced on the target partition: the broker refuses its writes still on their way",
		"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
		"producer_id", f.ID, "fence_epoch", epoch, "offset", base)
	if late := base - expect; expect >= 0 && late > 0 {
		if r.opts.Provenance == nil {
			// Only this flow writes the target partition: they are copies
			// of records this instance copies again.
			p.duplicates.Add(float64(late))
			r.opts.Logger.Warn("records of an earlier owner reached the target after this instance took the partition over, before its first write; counted as duplicates",
				"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
				"records", late, "from", expect, "to", base)
		} else {
			r.opts.Logger.Warn("records reached the target after this instance took the partition over, before its first write: other writers' or an earlier owner's (then duplicates)",
				"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
				"records", late, "from", expect, "to", base)
		}
	}
	out.Offset, out.ProducerID, out.ProducerEpoch = base, -1, -1
	done(out, nil)
}

// fenceProduce writes rec as the first record of producer f's next epoch
// on its target partition, above both f's stored epoch (plus the margin)
// and the epoch the partition's leader last appended for f, and returns
// its offset and the epoch written.
func fenceProduce(ctx context.Context, cl *kgo.Client, f progress.Producer, rec *kgo.Record) (int64, int16, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(rec.Topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return -1, 0, fmt.Errorf("reading the partition's leader: %w", err)
	}
	leader, topicID := int32(-1), [16]byte{}
	for _, t := range mresp.Topics {
		if t.Topic == nil || *t.Topic != rec.Topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return -1, 0, fmt.Errorf("reading the partition's leader: %w", err)
		}
		topicID = t.TopicID
		for _, tp := range t.Partitions {
			if tp.Partition == rec.Partition {
				if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
					return -1, 0, fmt.Errorf("reading the partition's leader: %w", err)
				}
				leader = tp.Leader
			}
		}
	}
	if leader < 0 {
		return -1, 0, fmt.Errorf("reading the partition's leader: %w", kerr.LeaderNotAvailable)
	}
	epoch, err := fenceEpoch(ctx, cl, f, rec.Topic, rec.Partition)
	if err != nil {
		return -1, 0, err
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, int32(fenceTimeout/time.Millisecond)
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = rec.Topic, topicID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = rec.Partition
	rp.Records = fenceBatch(f.ID, epoch, rec)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err != nil {
		return -1, 0, err
	}
	for _, t := range resp.Topics {
		for _, tp := range t.Partitions {
			if tp.Partition != rec.Partition {
				continue
			}
			if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
				return -1, 0, err
			}
			return tp.BaseOffset, epoch, nil
		}
	}
	return -1, 0, errFenceUnanswered
}

// fenceEpoch is the epoch a fence of f writes with on the partition: above
// f's stored epoch by fenceEpochMargin, and above the epoch the
// partition's leader knows for f (an earlier fence of it).
func fenceEpoch(ctx context.Context, cl *kgo.Client, f progress.Producer, topic string, partition int32) (int16, error) {
	epoch := int32(f.Epoch) + fenceEpochMargin
	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{partition}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("describing the partition's producers: %w", err)
	}
	for _, t := range resp.Topics {
		for _, tp := range t.Partitions {
			if tp.Partition != partition {
				continue
			}
			if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
				return 0, fmt.Errorf("describing the partition's producers: %w", err)
			}
			for _, ap := range tp.ActiveProducers {
				if ap.ProducerID == f.ID {
					epoch = max(epoch, int32(ap.ProducerEpoch)+1)
				}
			}
		}
	}
	if epoch > math.MaxInt16 {
		// Fenced at the highest epoch already, or its epoch this close
		// to it: nothing can go above it.
		return 0, fmt.Errorf("producer %d is at epoch %d on the partition: no higher epoch to fence it with", f.ID, epoch-1)
	}
	return int16(epoch), nil
}

// fenceBatch is a record batch (magic 2, uncompressed) of the one record
// rec, as written by producer id at epoch with sequence 0.
func fenceBatch(id int64, epoch int16, rec *kgo.Record) []byte {
	r := kmsg.Record{Key: rec.Key, Value: rec.Value}
	for _, h := range rec.Headers {
		r.Headers = append(r.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
	}
	body := r.AppendTo(nil)         // with Length 0, one byte
	r.Length = int32(len(body) - 1) // everything after the length
	records := r.AppendTo(nil)
	ts := rec.Timestamp.UnixMilli()
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		FirstTimestamp:       ts,
		MaxTimestamp:         ts,
		ProducerID:           id,
		ProducerEpoch:        epoch,
		FirstSequence:        0,
		NumRecords:           1,
		Records:              records,
	}
	out := b.AppendTo(nil)
	// Length counts what follows it; the CRC (Castagnoli) covers what
	// follows it, from the attributes on.
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}
