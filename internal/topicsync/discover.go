package topicsync

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kafka"
)

// Between two passes, a flow looks for new source topics with Changed: one
// Metadata request for every topic (what a pass starts with), without the
// config descriptions, target listing and ACL work of a pass. A change
// starts a pass at once (SyncNew), so a new topic waits for the next
// check, not for the next refresh.
const (
	// checksPerRefresh is how many checks run per refresh interval.
	checksPerRefresh = 20
	// minCheckInterval is the shortest time between two checks.
	minCheckInterval = 250 * time.Millisecond
	// checkPartitionsPerSecond bounds the partitions the checks list per
	// second: a source with more partitions is checked less often, so
	// that the checks' Metadata answers (about 40 bytes a partition)
	// stay under about 200 KB/s on a big cluster, and a source with
	// more partitions than it lists in a refresh interval is not
	// checked between passes at all.
	checkPartitionsPerSecond = 5_000
)

// CheckInterval returns how long after a check of the source's topic list
// (Changed) the next one runs for a flow whose topic_refresh_interval is
// refresh, when the last listing held partitions partitions: a twentieth
// of refresh, at least minCheckInterval, and one second per
// checkPartitionsPerSecond partitions listed. It returns 0 when that is
// not shorter than refresh: the passes alone then look for new topics.
func CheckInterval(refresh time.Duration, partitions int) time.Duration {
	d := max(refresh/checksPerRefresh, minCheckInterval,
		time.Duration(partitions)*time.Second/checkPartitionsPerSecond)
	if d >= refresh {
		return 0
	}
	return d
}

// listedTopic is what a listing of the source said of a selected topic.
type listedTopic struct {
	partitions int
	id         string
}

// selected returns the topics of the source listing srcTopics that the
// policy selects (not internal, listed without error).
func (s *Syncer) selected(srcTopics kadm.TopicDetails) map[string]listedTopic {
	out := make(map[string]listedTopic)
	for name, d := range srcTopics {
		if d.Err != nil || d.IsInternal || !s.policy.Matches(name) {
			continue
		}
		out[name] = listedTopic{partitions: len(d.Partitions), id: TopicID(d.ID)}
	}
	return out
}

// noteListing keeps the selected topics of a listing of the source, by
// Changed or a pass, and reports whether one of them is new since the
// last listing, has more partitions, or another topic ID. A topic gone is
// no change here: deletions wait for a pass (see WithDeleteTopics).
func (s *Syncer) noteListing(now map[string]listedTopic) (changed bool) {
	for name, t := range now {
		before, ok := s.listed[name]
		if !ok || t.partitions > before.partitions || t.id != before.id {
			changed = true
			break
		}
	}
	s.listed = now
	return changed
}

// Changed lists the source topics, with one Metadata request, and reports
// whether a topic the flow selects appeared, grew or was created again
// (another topic ID) since the last listing, by Changed or a pass. It
// also returns the number of partitions listed, for CheckInterval. A
// topic whose pass failed (it is stuck) is not reported again: the
// passes retry it every refresh interval.
//
// The request goes to a broker every time: kadm answers from the
// client's metadata cache when it is younger than the client's
// MetadataMinAge, which would hide a topic created since. The pass that
// follows a change finds the same answer in the cache.
func (s *Syncer) Changed(ctx context.Context) (changed bool, partitions int, err error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = nil // every topic
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, s.srcCl)
	if err != nil {
		err = s.srcAccess.Denied(kafka.OpDescribe, kafka.ResCluster, "", err)
		return false, 0, fmt.Errorf("listing source topics: %w", err)
	}
	now := make(map[string]listedTopic)
	for _, t := range resp.Topics {
		partitions += len(t.Partitions)
		if t.Topic == nil || t.ErrorCode != 0 || t.IsInternal || !s.policy.Matches(*t.Topic) {
			continue
		}
		now[*t.Topic] = listedTopic{partitions: len(t.Partitions), id: TopicID(t.TopicID)}
	}
	return s.noteListing(now), partitions, nil
}

// listSource lists the source's topics with a Metadata request to a
// broker, as kadm's ListTopics does but never from the client's metadata
// cache: Changed's listings keep that cache young while entries of topics
// deleted since stay in it, so a cached listing would still hold a
// deleted topic and its deletion would not be seen.
func (s *Syncer) listSource(ctx context.Context) (kadm.TopicDetails, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = nil // every topic
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, s.srcCl)
	if err != nil {
		return nil, err
	}
	out := make(kadm.TopicDetails, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		d := kadm.TopicDetail{Topic: *t.Topic, ID: t.TopicID, IsInternal: t.IsInternal,
			Partitions: make(kadm.PartitionDetails, len(t.Partitions)), Err: kerr.ErrorForCode(t.ErrorCode)}
		for _, p := range t.Partitions {
			d.Partitions[p.Partition] = kadm.PartitionDetail{
				Topic: *t.Topic, Partition: p.Partition, Leader: p.Leader, LeaderEpoch: p.LeaderEpoch,
				Replicas: p.Replicas, ISR: p.ISR, OfflineReplicas: p.OfflineReplicas, Err: kerr.ErrorForCode(p.ErrorCode),
			}
		}
		out[*t.Topic] = d
	}
	return out, nil
}
