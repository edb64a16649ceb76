package batchwrite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Leaders keeps the partition leaders and IDs of target topics, each
// topic's for leaderTTL: writes to many partitions of a topic ask once. A
// write that fails forgets its topic. The zero value is ready to use.
type Leaders struct {
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

// Lookup returns the leader of a partition and its topic's ID.
func (c *Leaders) Lookup(ctx context.Context, cl *kgo.Client, topic string, partition int32) (int32, [16]byte, error) {
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

// Forget drops what is kept of topic.
func (c *Leaders) Forget(topic string) {
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
