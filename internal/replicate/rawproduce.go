package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Requests to a target partition's leader made as a given producer (a
// producer ID, epoch and sequence of the caller's choosing), which kgo's
// producer does not make: a record batch built here, its length and CRC
// computed, sent as a ProduceRequest to the partition's leader; and what
// the leader knows of a producer (DescribeProducers).

// rawProduceTimeout is how long the leader may hold a raw write for
// acks=all.
const rawProduceTimeout = 30 * time.Second

// errUnanswered fails a raw write the broker did not answer for its
// partition.
var errUnanswered = errors.New("the target did not answer the write for the partition")

// produceAs writes rec alone to its partition's leader as producer id at
// epoch with sequence seq, and returns its offset.
func produceAs(ctx context.Context, cl *kgo.Client, leader int32, topicID [16]byte, rec *kgo.Record, id int64, epoch int16, seq int32) (int64, error) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, int32(rawProduceTimeout/time.Millisecond)
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = rec.Topic, topicID
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = rec.Partition
	rp.Records = oneRecordBatch(id, epoch, seq, rec)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err != nil {
		return -1, err
	}
	for _, t := range resp.Topics {
		for _, tp := range t.Partitions {
			if tp.Partition != rec.Partition {
				continue
			}
			if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
				return -1, err
			}
			return tp.BaseOffset, nil
		}
	}
	return -1, errUnanswered
}

// describeProducer returns the epoch and last sequence the partition's
// leader knows for producer id, and whether it knows it.
func describeProducer(ctx context.Context, cl *kgo.Client, topic string, partition int32, id int64) (int16, int32, bool, error) {
	req := kmsg.NewPtrDescribeProducersRequest()
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{partition}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, 0, false, fmt.Errorf("describing the partition's producers: %w", err)
	}
	for _, t := range resp.Topics {
		for _, tp := range t.Partitions {
			if tp.Partition != partition {
				continue
			}
			if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
				return 0, 0, false, fmt.Errorf("describing the partition's producers: %w", err)
			}
			for _, ap := range tp.ActiveProducers {
				if ap.ProducerID == id {
					return int16(ap.ProducerEpoch), ap.LastSequence, true, nil
				}
			}
		}
	}
	return 0, 0, false, nil
}

// oneRecordBatch is a record batch (magic 2, uncompressed) of the one record
// rec, as written by producer id at epoch with sequence seq.
func oneRecordBatch(id int64, epoch int16, seq int32, rec *kgo.Record) []byte {
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
		FirstSequence:        seq,
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
