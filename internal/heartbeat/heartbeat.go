// Package heartbeat writes a flow's heartbeats and watches them arrive on
// its target.
//
// Every heartbeat interval a flow writes one small record to a topic
// ("heartbeats" by default, as MirrorMaker 2 does): the key is the flow's
// name, the value the JSON document Record, and the record's timestamp
// the time in it. Where it goes is the flow's heartbeat_location:
//
//   - target (the default, as MirrorMaker 2's heartbeat connector): the
//     flow first asks its source cluster for its metadata, through the
//     client the flow reads the source with, and writes the heartbeat to
//     the target only if the source answered, stamped with the time the
//     question was sent. The source is only read, so kmirror needs no
//     write permission there, and the heartbeats still stop when the
//     source, kmirror or the target does.
//   - source: the flow writes the heartbeat to its source and replicates
//     that topic like data, so the copies arriving on the target measure
//     the data path end to end (source cluster, kmirror, target cluster)
//     even when no data flows; kmirror then needs WRITE (and CREATE) on
//     the source's heartbeat topic.
//
// A Watcher tails the topic on the target and keeps the age of the newest
// heartbeat seen and its latency.
package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
)

// Record is the value of a heartbeat record, as JSON:
//
//	{"flow":"primary-to-dr","source":"primary","target":"dr","ts_ms":1767225600000}
//
// Flow is the flow's name (also the record key), Source and Target the
// aliases of its clusters, and TsMs the time the heartbeat was written to
// the source, or, written to the target, the time the flow asked the
// source before writing it, in Unix milliseconds (also the record's
// timestamp).
type Record struct {
	Flow   string `json:"flow"`
	Source string `json:"source"`
	Target string `json:"target"`
	TsMs   int64  `json:"ts_ms"`
}

// Time is when the heartbeat was written.
func (h Record) Time() time.Time { return time.UnixMilli(h.TsMs) }

// Encode returns the Kafka record of heartbeat h for topic, on partition 0.
func Encode(topic string, h Record) *kgo.Record {
	v, _ := json.Marshal(h) // strings and an integer: never fails
	return &kgo.Record{Topic: topic, Partition: 0, Key: []byte(h.Flow), Value: v, Timestamp: h.Time()}
}

// Decode parses a heartbeat record. Records that are not heartbeats (no
// JSON object, no flow or time, or a key other than the flow) are an
// error: other writers may share the topic.
func Decode(r *kgo.Record) (Record, error) {
	var h Record
	if err := json.Unmarshal(r.Value, &h); err != nil {
		return Record{}, fmt.Errorf("not a heartbeat: %w", err)
	}
	if h.Flow == "" || h.TsMs <= 0 {
		return Record{}, errors.New("not a heartbeat: no flow or ts_ms")
	}
	if string(r.Key) != h.Flow {
		return Record{}, fmt.Errorf("not a heartbeat: key %q is not the flow %q", r.Key, h.Flow)
	}
	return h, nil
}

// TopicConfigs are the configs kmirror creates a heartbeat topic with, as
// MirrorMaker 2 does its heartbeats topic: heartbeats are only useful for
// a while, so retention deletes them after a day.
var TopicConfigs = map[string]string{
	"cleanup.policy": "delete",
	"retention.ms":   strconv.Itoa(int((24 * time.Hour).Milliseconds())),
}

// EnsureTopic creates topic with one partition, the cluster's default
// replication factor and TopicConfigs, unless it exists. An existing topic
// is used as it is.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	configs := map[string]*string{}
	for k, v := range TopicConfigs {
		configs[k] = kadm.StringPtr(v)
	}
	resp, err := adm.CreateTopic(ctx, 1, -1, configs, topic)
	if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
		return nil
	}
	msg := ""
	if resp.ErrMessage != "" {
		msg = " (" + resp.ErrMessage + ")"
	}
	return fmt.Errorf("creating heartbeat topic %q: %w%s", topic, kafka.Denied(kafka.OpCreate, kafka.ResTopic, topic, err), msg)
}

// ProducerOpts are the client options of a heartbeat writer: one record at
// a time to partition 0, acknowledged by every in-sync replica. Heartbeats
// need no idempotence (a duplicate is harmless), which spares the
// IDEMPOTENT_WRITE permission on the cluster written to.
func ProducerOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// ConsumerOpts are the client options of a Watcher of topic: it reads
// every partition from the end, without a consumer group, and notices the
// topic within a second or two of its creation.
func ConsumerOpts(topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.MetadataMinAge(time.Second),
		kgo.MetadataMaxAge(10 * time.Second),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.FetchMaxBytes(1 << 20),
	}
}
