package aclsync

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/policy"
)

// StateTopic is the name of the compacted topic, on the target cluster,
// that records the ACLs flow created there.
func StateTopic(flow string) string {
	return policy.InternalPrefix + "." + flow + ".acls"
}

// Store records, in a compacted topic of the target, the target ACLs a
// flow created: one record per ACL, keyed by the ACL, written before the
// ACL is created; a tombstone once it is deleted or gone. Only ACLs
// recorded here are ever deleted by the flow, so the record must outlive
// the process: a source ACL removed while kmirror is down is removed from
// the target at the first pass after the restart.
type Store struct {
	client *kgo.Client
	admin  *kadm.Client
	topic  string
	access kafka.Access
}

// NewStore returns a store over topic on the cluster of client, which
// must be able to produce to partition 0 of it (a manual partitioner or
// the default one).
func NewStore(client *kgo.Client, topic string) *Store {
	return &Store{client: client, admin: kadm.NewClient(client), topic: topic}
}

// WithAccess sets who kmirror is on the store's cluster, named in errors
// about missing ACLs, and returns s.
func (s *Store) WithAccess(a kafka.Access) *Store {
	s.access = a
	return s
}

// Topic is the state topic's name.
func (s *Store) Topic() string { return s.topic }

// Ensure creates the state topic unless it exists.
func (s *Store) Ensure(ctx context.Context, replicationFactor int) error {
	if err := kafka.EnsureCompactedTopic(ctx, s.admin, s.topic, replicationFactor, nil); err != nil {
		return fmt.Errorf("ACL state topic on the target: %w", s.access.Name(err))
	}
	return nil
}

// record is the value of a created ACL's record.
type record struct {
	CreatedMs int64 `json:"created_ms"`
}

// Load returns the ACLs recorded as created. A missing topic holds none;
// a read that fails returns an error, never part of the record.
func (s *Store) Load(ctx context.Context) (map[Binding]bool, error) {
	created := map[Binding]bool{}
	err := logread.ReadTopic(ctx, s.client, s.topic, logread.Options{}, func(r *kgo.Record) bool {
		if r.Attrs.IsControl() {
			return true
		}
		b, err := ParseKey(r.Key)
		if err != nil {
			return true // not ours; compaction keeps it, nothing acts on it
		}
		if r.Value == nil {
			delete(created, b)
		} else {
			created[b] = true
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("reading ACL state topic %q: %w", s.topic, s.access.Denied(kafka.OpRead, kafka.ResTopic, s.topic, err))
	}
	return created, nil
}

// Record stores bs as created and returns once the target acknowledged
// them.
func (s *Store) Record(ctx context.Context, bs []Binding) error {
	v, _ := json.Marshal(record{CreatedMs: time.Now().UnixMilli()})
	return s.write(ctx, bs, v)
}

// Forget stores tombstones for bs.
func (s *Store) Forget(ctx context.Context, bs []Binding) error {
	return s.write(ctx, bs, nil)
}

func (s *Store) write(ctx context.Context, bs []Binding, value []byte) error {
	if len(bs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, len(bs))
	for i, b := range bs {
		recs[i] = &kgo.Record{Topic: s.topic, Partition: 0, Key: b.Key(), Value: value}
	}
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("writing to ACL state topic %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}
