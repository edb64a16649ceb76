package groupsync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/logread"
)

// Checkpoint is a consumer group's committed source offset on one
// partition and the target offset it translates to.
type Checkpoint struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"` // source topic
	Partition int32  `json:"partition"`
	// TopicID is the source topic's Kafka topic ID when the checkpoint
	// was taken, or empty if unknown: a checkpoint of a topic since
	// deleted and created again under the same name has another ID.
	TopicID string `json:"topic_id,omitempty"`
	// TargetTopic is the topic's name on the target.
	TargetTopic  string `json:"target_topic"`
	SourceOffset int64  `json:"source_offset"`
	TargetOffset int64  `json:"target_offset"`
	// Exact is false when the offset was rounded down (outside the offset
	// map's window), so the group re-reads rather than skip.
	Exact    bool   `json:"exact"`
	Metadata string `json:"metadata,omitempty"`
	// UpdatedMs is when the checkpoint was taken, in Unix milliseconds.
	UpdatedMs int64 `json:"updated_ms"`
}

// key identifies a checkpoint: one group on one source partition.
type key struct {
	Group     string `json:"g"`
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
}

func (c Checkpoint) key() key { return key{c.Group, c.Topic, c.Partition} }

// Store keeps checkpoints in a compacted topic of the target cluster, so
// they outlive the source.
type Store struct {
	client *kgo.Client
	admin  *kadm.Client
	topic  string
	access kafka.Access
}

// WithAccess sets who kmirror is on the store's cluster, named in errors
// about missing ACLs, and returns s.
func (s *Store) WithAccess(a kafka.Access) *Store {
	s.access = a
	return s
}

// NewStore returns a checkpoint store over topic on the cluster of client.
func NewStore(client *kgo.Client, topic string) *Store {
	return &Store{client: client, admin: kadm.NewClient(client), topic: topic}
}

// Topic is the checkpoint topic's name.
func (s *Store) Topic() string { return s.topic }

// Ensure creates the checkpoint topic unless it exists.
func (s *Store) Ensure(ctx context.Context, replicationFactor int) error {
	if err := kafka.EnsureCompactedTopic(ctx, s.admin, s.topic, replicationFactor, nil); err != nil {
		return fmt.Errorf("checkpoint topic on the target: %w", s.access.Name(err))
	}
	return nil
}

// Write stores checkpoints and returns once the target acknowledged them.
func (s *Store) Write(ctx context.Context, cps []Checkpoint) error {
	if len(cps) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(cps))
	for i, c := range cps {
		k, err := json.Marshal(c.key())
		if err != nil {
			return err
		}
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		recs[i] = &kgo.Record{Topic: s.topic, Key: k, Value: v}
	}
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("writing checkpoints to %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}

// Load reads the newest checkpoint of every group and partition, sorted by
// group, topic and partition, reading the topic to the end offset it has
// when the read begins. A missing topic holds none; a read that fails
// returns an error, never part of the checkpoints.
func (s *Store) Load(ctx context.Context) ([]Checkpoint, error) {
	latest := map[key]Checkpoint{}
	err := logread.ReadTopic(ctx, s.client, s.topic, logread.Options{}, func(r *kgo.Record) bool {
		if r.Attrs.IsControl() {
			return true
		}
		var k key
		if json.Unmarshal(r.Key, &k) != nil {
			return true
		}
		var c Checkpoint
		if r.Value == nil {
			delete(latest, k)
		} else if json.Unmarshal(r.Value, &c) == nil {
			latest[k] = c
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint topic %q: %w", s.topic, s.access.Denied(kafka.OpRead, kafka.ResTopic, s.topic, err))
	}
	out := make([]Checkpoint, 0, len(latest))
	for _, c := range latest {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Checkpoint) int {
		if a.Group != b.Group {
			return cmpString(a.Group, b.Group)
		}
		if a.Topic != b.Topic {
			return cmpString(a.Topic, b.Topic)
		}
		return int(a.Partition - b.Partition)
	})
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
