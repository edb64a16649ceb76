package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
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

// leaderCache keeps the partition leaders and IDs of target topics for
// fence writes, for leaderTTL: a takeover of many partitions asks once per
// topic. A fence write that fails forgets its topic.
type leaderCache struct {
	mu     sync.Mutex // held while a topic is looked up
	topics map[string]topicLeaders
}

// topicLeaders are a topic's ID and its partitions' leaders, as read at.
type topicLeaders struct {
	at      time.Time
	id      [16]byte
	leaders map[int32]int32
}

const leaderTTL = 5 * time.Second

// lookup returns the leader of a target partition and its topic's ID.
func (c *leaderCache) lookup(ctx context.Context, cl *kgo.Client, topic string, partition int32) (int32, [16]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if tl, ok := c.topics[topic]; ok && time.Since(tl.at) < leaderTTL {
		if leader, ok := tl.leaders[partition]; ok {
			return leader, tl.id, nil
		}
	}
	tl, err := readLeaders(ctx, cl, topic)
	if err != nil {
		return -1, [16]byte{}, fmt.Errorf("reading the partition's leader: %w", err)
	}
	if c.topics == nil {
		c.topics = map[string]topicLeaders{}
	}
	c.topics[topic] = tl
	leader, ok := tl.leaders[partition]
	if !ok {
		return -1, [16]byte{}, fmt.Errorf("reading the partition's leader: %w", kerr.LeaderNotAvailable)
	}
	return leader, tl.id, nil
}

// forget drops what is kept of topic.
func (c *leaderCache) forget(topic string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.topics, topic)
}

// readLeaders reads the ID of topic and the leaders of its partitions
// that have one.
func readLeaders(ctx context.Context, cl *kgo.Client, topic string) (topicLeaders, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	resp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return topicLeaders{}, err
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return topicLeaders{}, err
		}
		tl := topicLeaders{at: time.Now(), id: t.TopicID, leaders: map[int32]int32{}}
		for _, tp := range t.Partitions {
			if tp.ErrorCode == 0 && tp.Leader >= 0 {
				tl.leaders[tp.Partition] = tp.Leader
			}
		}
		return tl, nil
	}
	return topicLeaders{}, kerr.UnknownTopicOrPartition
}

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
